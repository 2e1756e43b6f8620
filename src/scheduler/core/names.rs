//! Named values: for each key, the one task whose value the key names on the cluster. A name is
//! set by an explicit scatter, keep (`keep_results`) or persist of that key and removed by a
//! release; graphs that use a key without defining it, gathers, `who_has`, `replicate` and
//! `release` go through it. Each name pins its task (`Task::pins`) so it is never forgotten
//! while named.
//!
//! Each name also records its owners: the clients (`ConnectionId`) that scattered, kept or
//! persisted it. A shared key (two clients pin the same name) has one owner pin per client:
//! a client's release drops only its own pin, and the name (with its task pin) goes with the
//! last one; an operator's release drops every pin at once. A client that leaves (goodbye, or
//! silent past the client timeout) keeps nothing it could act on: its pins stay (the data
//! stays, as before) but are no longer its own, so only an operator may release them. After a
//! scheduler restart, a scattered name recovered from the journal is its scatterer's again
//! (kept names are not journaled; a journal written before owners gives nobody's names).

use rustc_hash::FxHashMap as HashMap;

use super::tasks::TaskId;
use super::{JournalOp, SchedulerCore};
use crate::graph::Key;
use crate::protocol::{ClientRole, ConnectionId, RequestError};

#[derive(Default)]
pub struct Names {
    by_key: HashMap<Key, Named>,
}

/// What a key names, and who pinned it.
struct Named {
    task: TaskId,
    /// The clients holding a pin on this name, each once. Empty when every owner left (or a
    /// journal without owners was recovered): only an operator may release it then.
    owners: Vec<ConnectionId>,
}

/// What `release` of a name by one client does (see `Names::release_check`).
#[derive(Debug, PartialEq)]
pub(super) enum Release {
    /// The key names nothing: nothing to do (a success, as it always was).
    Nothing,
    /// Only the caller's pin goes; the name stays for its other owners.
    OwnPin,
    /// The name goes, with every pin on it.
    Name,
}

impl Names {
    pub fn get(&self, key: &Key) -> Option<TaskId> {
        self.by_key.get(key).map(|n| n.task)
    }

    /// Names `t` by `key` with `owner` among its owners (none: recovered from a journal
    /// without owners, nobody's). A key
    /// that named another task names `t` from now on for all its owners (a new scatter or keep
    /// of a key replaces its value, as before owners existed).
    pub fn bind(&mut self, key: Key, t: TaskId, owner: Option<ConnectionId>) {
        let named = self.by_key.entry(key).or_insert(Named {
            task: t,
            owners: Vec::new(),
        });
        named.task = t;
        if let Some(owner) = owner {
            if !named.owners.contains(&owner) {
                named.owners.push(owner);
            }
        }
    }

    pub fn unbind(&mut self, key: &Key) -> Option<TaskId> {
        self.by_key.remove(key).map(|n| n.task)
    }

    pub fn clear(&mut self) {
        self.by_key.clear();
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, TaskId)> {
        self.by_key.iter().map(|(k, n)| (k, n.task))
    }

    /// The owners of `key`'s name (for tests).
    #[cfg(test)]
    pub fn owners(&self, key: &Key) -> &[ConnectionId] {
        self.by_key.get(key).map_or(&[], |n| &n.owners)
    }

    /// What releasing `key` by `client` in `role` would do, or why it may not:
    /// - an operator drops the name with every pin;
    /// - a client that owns a pin drops its own (the name too if it was the last);
    /// - a client that owns no pin on a name nobody else owns either (the key names nothing)
    ///   gets a success that changes nothing, as before roles existed;
    /// - a client that owns no pin on a name others own, or nobody owns any more (its owners
    ///   left, or it came from a journal written before owners), is refused: that is an
    ///   operator's call.
    pub(super) fn release_check(
        &self,
        key: &Key,
        client: &ConnectionId,
        role: ClientRole,
    ) -> Result<Release, RequestError> {
        let Some(named) = self.by_key.get(key) else {
            return Ok(Release::Nothing);
        };
        if role == ClientRole::Operator {
            return Ok(Release::Name);
        }
        if !named.owners.contains(client) {
            let whose = if named.owners.is_empty() {
                "its owners are gone"
            } else {
                "pinned by other clients"
            };
            return Err(RequestError::Forbidden {
                action: format!("releasing key {key:?} ({whose})"),
                needs: ClientRole::Operator,
            });
        }
        Ok(if named.owners.len() == 1 {
            Release::Name
        } else {
            Release::OwnPin
        })
    }

    /// Drops `client`'s own pin on `key` (the name stays for its other owners).
    fn drop_own_pin(&mut self, key: &Key, client: &ConnectionId) {
        if let Some(named) = self.by_key.get_mut(key) {
            named.owners.retain(|o| o != client);
        }
    }

    /// `client` left: the pins it held are nobody's any more (the data stays).
    pub(super) fn disown(&mut self, client: &ConnectionId) {
        for named in self.by_key.values_mut() {
            named.owners.retain(|o| o != client);
        }
    }
}

impl SchedulerCore {
    /// Makes `key` name `t` (an explicit scatter, keep or persist by `owner`, or a scatter
    /// recovered from the journal); the task it named before is let go once nothing else
    /// needs it.
    pub(super) fn name_value(&mut self, key: Key, t: TaskId, owner: Option<ConnectionId>) {
        let existed = self.names.get(&key);
        self.names.bind(key, t, owner);
        if existed == Some(t) {
            return;
        }
        self.tasks.pin(t);
        if let Some(old) = existed {
            self.unpin(old);
        }
    }

    /// `release` of keys by `client` in `role`: all of them, or none when one may not be
    /// released by this client (the error names the first such key).
    pub(super) fn release_names(
        &mut self,
        keys: &[Key],
        client: &ConnectionId,
        role: ClientRole,
    ) -> Result<(), RequestError> {
        let mut plan = Vec::with_capacity(keys.len());
        for k in keys {
            plan.push(self.names.release_check(k, client, role)?);
        }
        for (k, what) in keys.iter().zip(plan) {
            match what {
                Release::Nothing => {}
                Release::OwnPin => self.names.drop_own_pin(k, client),
                // A key listed twice was dropped the first time: unname finds nothing.
                Release::Name => self.unname(k),
            }
        }
        Ok(())
    }

    /// The key names nothing any more (every pin on it dropped).
    pub(super) fn unname(&mut self, key: &Key) {
        if let Some(t) = self.names.unbind(key) {
            self.unpin(t);
        }
    }

    /// One name or dataset less holds `t`.
    pub(super) fn unpin(&mut self, t: TaskId) {
        let pins = self.tasks.unpin(t);
        let task = self.tasks.get(t);
        if pins == 0 && task.spec.is_none() {
            // Scattered data the journal keeps is named data only.
            let key = task.key.clone();
            self.journal(JournalOp::DeleteScattered { key });
        }
        self.maybe_release(t);
    }
}

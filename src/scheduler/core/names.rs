//! Named values: for each key, the one task whose value the key names on the cluster. A name is
//! set by an explicit scatter, keep (`keep_results`) or persist of that key and removed by a
//! release; graphs that use a key without defining it, gathers, `who_has`, `replicate` and
//! `release` go through it. Each name pins its task (`Task::pins`) so it is never forgotten
//! while named.

use rustc_hash::FxHashMap as HashMap;

use super::tasks::TaskId;
use super::{JournalOp, SchedulerCore};
use crate::graph::Key;

#[derive(Default)]
pub struct Names {
    by_key: HashMap<Key, TaskId>,
}

impl Names {
    pub fn get(&self, key: &Key) -> Option<TaskId> {
        self.by_key.get(key).copied()
    }

    /// Names `t` by `key`; returns the task the key named before, if any.
    pub fn bind(&mut self, key: Key, t: TaskId) -> Option<TaskId> {
        self.by_key.insert(key, t)
    }

    pub fn unbind(&mut self, key: &Key) -> Option<TaskId> {
        self.by_key.remove(key)
    }

    pub fn clear(&mut self) {
        self.by_key.clear();
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, TaskId)> {
        self.by_key.iter().map(|(k, t)| (k, *t))
    }
}

impl SchedulerCore {
    /// Makes `key` name `t` (an explicit scatter, keep or persist); the task it named before
    /// is let go once nothing else needs it.
    pub(super) fn name_value(&mut self, key: Key, t: TaskId) {
        let before = self.names.bind(key, t);
        if before == Some(t) {
            return;
        }
        self.tasks.pin(t);
        if let Some(old) = before {
            self.unpin(old);
        }
    }

    /// `release` of a key: it names nothing any more.
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

//! The flaky part: which worker *identities* died unexpectedly, and when. A worker restarted
//! by its nanny is a new `WorkerId` (a new process, a new address), but it is the same
//! identity: the nanny's connection (`NannyOf` claims, kept by membership) survives the
//! restart; a worker without a nanny is known by its name. An identity whose worker died
//! within `CoreConfig::flaky_window_ms` is *flaky*: a result that finishes there and that
//! waiting tasks still need is copied at once to a stable worker (`guard_result`, through
//! replication's copies), so that the next SIGKILL of that identity loses nothing still
//! needed. Nothing is copied while nobody died: a fault-free cluster pays one emptiness test
//! per finished task.

use rustc_hash::FxHashMap as HashMap;

use log::debug;

use super::tasks::{TaskId, TaskState};
use super::violation::InvariantViolation;
use super::workers::Worker;
use super::{SchedulerCore, WorkerId};
use crate::protocol::{ConnectionId, WorkerName};

/// At most this many identities' deaths are remembered; past it the oldest death goes (and
/// deaths older than the window go first). A cluster has far fewer workers than this.
pub(super) const FLAKY_IDENTITIES_MAX: usize = 1024;

/// What stays the same when a worker process is replaced.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Identity {
    /// The connection of the nanny supervising it: the same for every process it starts.
    Nanny(ConnectionId),
    /// A worker without a (claimed) nanny: its name (one restarted under the same name is
    /// the same worker to its operator).
    Name(WorkerName),
}

#[derive(Default)]
pub(super) struct Flaky {
    /// The last unexpected death of each identity (ms of the core's clock).
    died: HashMap<Identity, u64>,
    /// Early copies started (results of flaky workers copied to stable ones), for tests and
    /// diagnostics.
    copies: u64,
}

impl Flaky {
    /// A worker of identity `who` died unexpectedly at `now_ms`. Deaths older than
    /// `window_ms` are forgotten; the table keeps at most `FLAKY_IDENTITIES_MAX` entries.
    pub(super) fn died(&mut self, who: Identity, now_ms: u64, window_ms: u64) {
        self.died
            .retain(|_, at| now_ms.saturating_sub(*at) <= window_ms);
        if self.died.len() >= FLAKY_IDENTITIES_MAX && !self.died.contains_key(&who) {
            let oldest = self
                .died
                .iter()
                .min_by_key(|(who, at)| (**at, *who))
                .map(|(who, _)| who.clone());
            if let Some(k) = oldest {
                self.died.remove(&k);
            }
        }
        self.died.insert(who, now_ms);
    }

    /// Whether no identity died (within memory): the common case, checked first.
    pub(super) fn is_empty(&self) -> bool {
        self.died.is_empty()
    }

    /// Whether `who` died within `window_ms` before `now_ms`.
    pub(super) fn is_flaky(&self, who: &Identity, now_ms: u64, window_ms: u64) -> bool {
        self.died
            .get(who)
            .is_some_and(|at| now_ms.saturating_sub(*at) <= window_ms)
    }

    /// How many early copies were started.
    #[cfg(test)]
    pub(super) fn copies(&self) -> u64 {
        self.copies
    }

    /// The part's own invariant: the table stays within its bound.
    pub(super) fn check(&self) -> Result<(), InvariantViolation> {
        if self.died.len() > FLAKY_IDENTITIES_MAX {
            return Err(InvariantViolation::new(
                "flaky",
                format!("{} identities remembered", self.died.len()),
            ));
        }
        Ok(())
    }
}

impl SchedulerCore {
    /// The identity of worker `w` that survives a restart.
    fn identity_of(&self, w: &Worker) -> Identity {
        match w.nanny_token.and_then(|t| self.membership.nanny_claim(t)) {
            Some(nanny) => Identity::Nanny(nanny.clone()),
            None => Identity::Name(w.name.clone()),
        }
    }

    /// Worker `w` (just removed from the registry) died unexpectedly: its identity is flaky
    /// for the next `flaky_window_ms`.
    pub(super) fn note_death(&mut self, w: &Worker) {
        let window = self.config.flaky_window_ms;
        if window == 0 {
            return;
        }
        let who = self.identity_of(w);
        self.flaky.died(who, self.now_ms, window);
    }

    /// Whether registered worker `w` belongs to an identity that died recently.
    pub(super) fn is_flaky(&self, w: WorkerId) -> bool {
        if self.flaky.is_empty() {
            return false;
        }
        self.workers.get(w).is_some_and(|worker| {
            let who = self.identity_of(worker);
            self.flaky
                .is_flaky(&who, self.now_ms, self.config.flaky_window_ms)
        })
    }

    /// Task `t` finished on worker `w`: if `w` is flaky, no stable worker holds the result
    /// and waiting tasks still need it, a stable worker (not flaky, not retiring, not paused
    /// for memory) is asked to copy it now, so the next death of `w` does not send it back to its lineage.
    pub(super) fn guard_result(&mut self, t: TaskId, w: WorkerId) {
        if self.flaky.is_empty() || !self.tasks.exists(t) {
            return;
        }
        let task = self.tasks.get(t);
        if task.state != TaskState::Memory || task.waiters == 0 || !self.is_flaky(w) {
            return;
        }
        if task.who_has.iter().any(|h| !self.is_flaky(*h)) {
            return; // a stable copy exists
        }
        let stable: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(id, worker)| !worker.retiring && !worker.memory.paused && !self.is_flaky(*id))
            .map(|(id, _)| id)
            .collect();
        if stable.is_empty() {
            return;
        }
        let want = task.who_has.len() + 1;
        debug!(
            "{:?} finished on a flaky worker: copying it to a stable one",
            task.name()
        );
        if self.copy_until_on(t, want, |x| stable.contains(&x)) {
            self.flaky.copies += 1;
        }
    }
}

//! The replication part: copies of values workers are asked to make (for `replicate`, and to
//! rescue a retiring worker's results), and the `replicate` requests waiting for their copies.
//! A copy is a task that evaluates to its own key, fetched from a holder: the worker's
//! ordinary fetch-then-report path, and the report adds the new holder.

use rustc_hash::FxHashMap as HashMap;

use super::tasks::{TaskId, TaskState};
use super::violation::InvariantViolation;
use super::{SchedulerCore, WorkerId};
use crate::graph::Key;
use crate::protocol::{ConnectionId, RequestError, RequestId, ToClient, WorkerAddress};

#[derive(Default)]
pub(super) struct Replication {
    /// Workers asked to fetch a copy of a task, by task.
    copying: HashMap<TaskId, Vec<WorkerId>>,
    /// `replicate` requests waiting for their copies.
    requests: Vec<PendingReplication>,
}

/// A `replicate` request waiting for its copies. Its task ids may outlive their tasks (a value
/// released meanwhile): an id that no longer exists means that value is moot.
struct PendingReplication {
    client: ConnectionId,
    request: RequestId,
    tasks: Vec<TaskId>,
}

impl Replication {
    /// Whether worker `w` was asked to copy task `t` (its report of `t` counts).
    pub(super) fn is_copying(&self, t: TaskId, w: WorkerId) -> bool {
        self.copying.get(&t).is_some_and(|ws| ws.contains(&w))
    }

    /// Worker `w` reported its copy of `t`.
    pub(super) fn copy_done(&mut self, t: TaskId, w: WorkerId) {
        if let Some(ws) = self.copying.get_mut(&t) {
            ws.retain(|x| *x != w);
            if ws.is_empty() {
                self.copying.remove(&t);
            }
        }
    }

    /// Worker `w` could not fetch its copy of `t`.
    pub(super) fn copy_failed(&mut self, t: TaskId, w: WorkerId) {
        if let Some(ws) = self.copying.get_mut(&t) {
            ws.retain(|x| *x != w);
        }
    }

    /// Copies of `t` on their way.
    fn in_flight(&self, t: TaskId) -> usize {
        self.copying.get(&t).map_or(0, Vec::len)
    }

    pub(super) fn has_requests(&self) -> bool {
        !self.requests.is_empty()
    }

    /// The client's `replicate` requests not answered yet.
    pub(super) fn requests_of<'a>(
        &'a self,
        client: &'a ConnectionId,
    ) -> impl Iterator<Item = RequestId> + 'a {
        self.requests
            .iter()
            .filter(move |r| r.client == *client)
            .map(|r| r.request)
    }

    /// Task `t` is forgotten: no copy of it is awaited.
    pub(super) fn forget(&mut self, t: TaskId) {
        self.copying.remove(&t);
    }

    /// Worker `w` is gone: the copies it was making are not coming.
    pub(super) fn worker_lost(&mut self, w: WorkerId) {
        for ws in self.copying.values_mut() {
            ws.retain(|x| *x != w);
        }
    }

    /// Everything is dropped (a restart): the requests to fail.
    pub(super) fn clear(&mut self) -> Vec<(ConnectionId, RequestId)> {
        self.copying.clear();
        std::mem::take(&mut self.requests)
            .into_iter()
            .map(|r| (r.client, r.request))
            .collect()
    }

    /// The part's own invariant: copies are awaited only of live tasks.
    pub(super) fn check(&self, exists: &dyn Fn(TaskId) -> bool) -> Result<(), InvariantViolation> {
        match self.copying.keys().find(|t| !exists(**t)) {
            Some(t) => Err(InvariantViolation::new(
                "replication",
                format!("a copy of a forgotten task {t:?} is awaited"),
            )),
            None => Ok(()),
        }
    }
}

impl SchedulerCore {
    /// Starts keeping `replicas` copies of each key; answers once they exist (or as many as
    /// there are workers).
    pub(super) fn replicate(
        &mut self,
        client: ConnectionId,
        request: RequestId,
        keys: Vec<Key>,
        replicas: u32,
    ) {
        let mut ids = Vec::with_capacity(keys.len());
        for k in &keys {
            // A named value being recomputed (its holders died) is replicated once it is back.
            match self.names.get(k) {
                Some(t) if self.tasks.get(t).state != TaskState::Erred => ids.push(t),
                _ => {
                    let error = RequestError::NotFound { key: k.clone() };
                    self.reply(&client, ToClient::Failed { request, error });
                    return;
                }
            }
        }
        for &t in &ids {
            self.tasks.set_replicas(t, replicas);
            self.top_up_replicas(t);
        }
        self.replication.requests.push(PendingReplication {
            client,
            request,
            tasks: ids,
        });
        self.check_replications();
    }

    pub(super) fn top_up_all_replicas(&mut self) {
        let mut protected: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.replicas > 1 && t.state == TaskState::Memory)
            .map(|(id, _)| id)
            .collect();
        protected.sort();
        for t in protected {
            self.top_up_replicas(t);
        }
    }

    /// Asks workers that lack a copy of `t` to fetch one, until its replica count is met.
    pub(super) fn top_up_replicas(&mut self, t: TaskId) {
        let live = self.workers.iter().filter(|(_, w)| !w.retiring).count();
        let want = (self.tasks.get(t).replicas as usize).min(live);
        self.copy_until(t, want);
    }

    /// Asks workers without a copy of `t` (and not retiring) to fetch one, until `want` copies
    /// exist or are on their way.
    pub(super) fn copy_until(&mut self, t: TaskId, want: usize) {
        self.copy_until_on(t, want, |_| true);
    }

    /// As `copy_until`, asking only workers `eligible` accepts (the least loaded first).
    /// Returns whether a copy was asked for.
    pub(super) fn copy_until_on(
        &mut self,
        t: TaskId,
        want: usize,
        eligible: impl Fn(WorkerId) -> bool,
    ) -> bool {
        let task = self.tasks.get(t);
        if task.state != TaskState::Memory {
            return false;
        }
        let in_flight = self.replication.in_flight(t);
        let have = task.who_has.len() + in_flight;
        if have >= want {
            return false;
        }
        let mut candidates: Vec<(u64, WorkerId)> = self
            .workers
            .iter()
            .filter(|(id, w)| {
                !w.retiring
                    && eligible(*id)
                    && !task.who_has.contains(id)
                    && !self.replication.is_copying(t, *id)
            })
            .map(|(id, w)| (w.nbytes, id))
            .collect();
        candidates.sort();
        let holders: Vec<WorkerAddress> = task
            .who_has
            .iter()
            .map(|w| self.workers.address(*w))
            .collect();
        let key = task.key.clone();
        // A copy is a task that evaluates to its own key, fetched from a holder: the worker's
        // ordinary fetch-then-report path, and the report adds the new holder.
        let spec = crate::protocol::codec::encode_plain(&crate::graph::Expr::Ref(key.clone()));
        let asked = !candidates.is_empty();
        for (_, w) in candidates.into_iter().take(want - have) {
            self.replication.copying.entry(t).or_default().push(w);
            let ct = crate::protocol::ComputeTask {
                key: key.clone(),
                spec: spec.clone(),
                dependencies: vec![(key.clone(), holders.clone())],
                report_value: false,
            };
            self.workers.push_compute(w, ct);
        }
        asked
    }

    /// Answers the `replicate` requests whose copies exist, or whose values are gone (released,
    /// failed) so that no copy will ever come.
    pub(super) fn check_replications(&mut self) {
        let workers = self.workers.len();
        let mut done = Vec::new();
        let tasks = &self.tasks;
        self.replication.requests.retain(|r| {
            let complete = r.tasks.iter().all(|t| {
                if !tasks.exists(*t) {
                    return true;
                }
                let task = tasks.get(*t);
                match task.state {
                    TaskState::Memory => {
                        task.who_has.len() >= (task.replicas as usize).min(workers)
                    }
                    state => !state.is_active(),
                }
            });
            if complete {
                done.push((r.client.clone(), r.request));
            }
            !complete
        });
        for (client, request) in done {
            self.reply(&client, ToClient::Done { request });
        }
    }
}

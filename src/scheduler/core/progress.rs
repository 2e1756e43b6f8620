//! The progress part: computations whose client asked for their progress (`WatchProgress`),
//! the tasks each still waits for, and when each was last reported. Progress is counted as
//! tasks reach memory or fail and sent batched: at most one `ToClient::Progress` per
//! computation every `PROGRESS_INTERVAL_MS` of the core's clock, and only when it changed, so
//! a 100,000-task graph costs a few messages a second, never one per task.

use rustc_hash::FxHashMap as HashMap;

use super::computations::CompId;
use super::tasks::{TaskId, TaskState};
use super::violation::InvariantViolation;
use super::SchedulerCore;
use crate::protocol::{ConnectionId, RequestId, ToClient, PROGRESS_INTERVAL_MS};

/// One watched computation.
struct Watch {
    client: ConnectionId,
    request: RequestId,
    total: u64,
    done: u64,
    erred: u64,
    /// The tasks not yet counted (in memory or failed), for dropping the index's entries
    /// when the computation ends.
    pending: Vec<TaskId>,
    /// When it was last sent (None: never).
    sent_ms: Option<u64>,
    /// Changed since it was last sent.
    dirty: bool,
}

#[derive(Default)]
pub(super) struct ProgressWatches {
    by_computation: HashMap<CompId, Watch>,
    /// The watched computations each pending task counts for.
    counts_for: HashMap<TaskId, Vec<CompId>>,
}

impl ProgressWatches {
    fn is_empty(&self) -> bool {
        self.by_computation.is_empty()
    }

    /// Task `t` is in memory: each computation still waiting for it counts it done.
    pub(super) fn task_done(&mut self, t: TaskId) {
        if let Some(comps) = self.counts_for.remove(&t) {
            for c in comps {
                if let Some(w) = self.by_computation.get_mut(&c) {
                    w.done += 1;
                    w.dirty = true;
                }
            }
        }
    }

    /// Task `t` failed: each computation still waiting for it counts it erred.
    pub(super) fn task_erred(&mut self, t: TaskId) {
        if let Some(comps) = self.counts_for.remove(&t) {
            for c in comps {
                if let Some(w) = self.by_computation.get_mut(&c) {
                    w.erred += 1;
                    w.dirty = true;
                }
            }
        }
    }

    /// Task `t` is forgotten: nothing counts it any more.
    pub(super) fn forget(&mut self, t: TaskId) {
        self.counts_for.remove(&t);
    }

    /// Computation `c` ended: it is no longer reported.
    pub(super) fn ended(&mut self, c: CompId) {
        let Some(watch) = self.by_computation.remove(&c) else {
            return;
        };
        for t in watch.pending {
            if let Some(comps) = self.counts_for.get_mut(&t) {
                comps.retain(|x| *x != c);
                if comps.is_empty() {
                    self.counts_for.remove(&t);
                }
            }
        }
    }

    /// Everything ends at once (a restart).
    pub(super) fn clear(&mut self) {
        self.by_computation.clear();
        self.counts_for.clear();
    }

    /// When the next batched report is due (a changed watch whose interval has not passed).
    pub(super) fn next_deadline(&self) -> Option<u64> {
        self.by_computation
            .values()
            .filter(|w| w.dirty)
            .map(|w| w.sent_ms.map_or(0, |s| s + PROGRESS_INTERVAL_MS))
            .min()
    }

    /// The reports due at `now_ms`, each marked sent.
    fn take_due(&mut self, now_ms: u64) -> Vec<(ConnectionId, ToClient)> {
        let mut due: Vec<(&CompId, &mut Watch)> = self
            .by_computation
            .iter_mut()
            .filter(|(_, w)| {
                w.dirty
                    && w.sent_ms
                        .is_none_or(|s| now_ms >= s.saturating_add(PROGRESS_INTERVAL_MS))
            })
            .collect();
        // In computation order, so a simulation replays the same messages.
        due.sort_by_key(|(c, _)| **c);
        due.into_iter()
            .map(|(_, w)| {
                w.dirty = false;
                w.sent_ms = Some(now_ms);
                let msg = ToClient::Progress {
                    request: w.request,
                    done: w.done,
                    total: w.total,
                    erred: w.erred,
                };
                (w.client.clone(), msg)
            })
            .collect()
    }

    /// The part's own invariant: each watch's counts add up, and the index names only
    /// watched computations.
    pub(super) fn check(&self) -> Result<(), InvariantViolation> {
        for (c, w) in &self.by_computation {
            if w.done + w.erred > w.total {
                return Err(InvariantViolation::new(
                    "progress",
                    format!(
                        "{c:?} counts {} done and {} erred of {} tasks",
                        w.done, w.erred, w.total
                    ),
                ));
            }
        }
        for (t, comps) in &self.counts_for {
            if let Some(c) = comps.iter().find(|c| !self.by_computation.contains_key(c)) {
                return Err(InvariantViolation::new(
                    "progress",
                    format!("task {t:?} counts for {c:?}, which is not watched"),
                ));
            }
        }
        Ok(())
    }
}

impl SchedulerCore {
    /// The client asked for the progress of its computation `request`. Its tasks are those
    /// its outputs need: walking down from the outputs, stopping at results in memory (they
    /// count as done already), since every task on the way that is not in memory will run.
    pub(super) fn watch_progress(&mut self, client: &ConnectionId, request: RequestId) {
        let Some(c) = self
            .clients
            .computations(client)
            .find(|c| self.computations.request_of(*c) == Some(request))
        else {
            return; // ended already (or never was): nothing to report
        };
        if self.progress.by_computation.contains_key(&c) {
            return;
        }
        let mut seen: rustc_hash::FxHashSet<TaskId> = Default::default();
        let mut stack: Vec<TaskId> = self.computations.outputs_of(c).to_vec();
        let (mut done, mut erred, mut pending) = (0u64, 0u64, Vec::new());
        while let Some(t) = stack.pop() {
            if !self.tasks.exists(t) || !seen.insert(t) {
                continue;
            }
            let task = self.tasks.get(t);
            match task.state {
                TaskState::Memory => done += 1,
                TaskState::Erred => erred += 1,
                _ => {
                    pending.push(t);
                    stack.extend(task.dependencies.iter().copied());
                }
            }
        }
        for &t in &pending {
            self.progress.counts_for.entry(t).or_default().push(c);
        }
        let total = done + erred + pending.len() as u64;
        self.progress.by_computation.insert(
            c,
            Watch {
                client: client.clone(),
                request,
                total,
                done,
                erred,
                pending,
                sent_ms: None,
                dirty: true,
            },
        );
    }

    /// Sends the progress reports that are due (called as time passes: `tick`).
    pub(super) fn send_progress(&mut self) {
        if self.progress.is_empty() {
            return;
        }
        for (client, msg) in self.progress.take_due(self.now_ms) {
            self.reply(&client, msg);
        }
    }
}

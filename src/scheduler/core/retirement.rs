//! Retirement: a worker asked to leave (SIGTERM) takes no new task; its results that exist
//! nowhere else and are still needed are copied to other workers (`replication`), then it is
//! closed. Whether a worker is retiring, and until when, is kept on the worker itself.

use log::{info, warn};

use super::tasks::TaskId;
use super::{SchedulerCore, WorkerId};
use crate::protocol::{Departure, EventKind, ToWorker};

impl SchedulerCore {
    /// A worker asked to leave (SIGTERM): it takes no new task, its results that exist
    /// nowhere else and are still needed are copied to other workers, then it is closed.
    pub(super) fn retire_worker(&mut self, w: WorkerId) {
        let deadline_ms = self.now_ms + self.config.retire_timeout_ms;
        if self.workers.retire(w, deadline_ms) {
            info!(
                "worker {} is retiring: moving its results",
                self.workers.address(w)
            );
            self.check_retirements();
        }
    }

    /// Closes retiring workers once nothing depends on them, copying what must survive.
    pub(super) fn check_retirements(&mut self) {
        let mut retiring: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.retiring)
            .map(|(id, _)| id)
            .collect();
        retiring.sort();
        for w in retiring {
            let Some(worker) = self.workers.get(w) else {
                continue;
            };
            let mut unique: Vec<TaskId> = worker
                .has
                .iter()
                .copied()
                .filter(|t| {
                    let task = self.tasks.get(*t);
                    task.needed()
                        && task
                            .who_has
                            .iter()
                            .all(|h| self.workers.get(*h).is_none_or(|hw| hw.retiring))
                })
                .collect();
            unique.sort();
            self.events.must_move(w, &unique);
            let Some(worker) = self.workers.get(w) else {
                continue;
            };
            let done = worker.processing.is_empty() && unique.is_empty();
            let timed_out = self.now_ms >= worker.retire_deadline_ms;
            if done || timed_out {
                if !done {
                    warn!(
                        "worker {} did not finish retiring in time: closing it anyway",
                        worker.address
                    );
                }
                // Straight to the commands: the worker's outbox goes with it.
                let identity = worker.identity.clone();
                self.record_retirement(w);
                self.remove_worker(w, Departure::Retired);
                self.outbox.send_to_connection(identity, ToWorker::Close);
                continue;
            }
            for t in unique {
                let have = self.tasks.get(t).who_has.len();
                self.copy_until(t, have + 1);
            }
        }
    }

    /// Logs and records what retiring `w` moved: the still-needed results only it held while
    /// it retired that are now held elsewhere (and those that are not, if time ran out).
    fn record_retirement(&mut self, w: WorkerId) {
        let to_move = self.events.worker_gone(w);
        let (mut moved, mut moved_bytes, mut left_behind) = (0, 0, 0);
        for t in to_move {
            if !self.tasks.exists(t) {
                continue;
            }
            let task = self.tasks.get(t);
            if task.who_has.iter().any(|h| *h != w) {
                moved += 1;
                moved_bytes += task.nbytes;
            } else if task.needed() {
                left_behind += 1;
            }
        }
        let event = EventKind::WorkerRetired {
            worker: self.workers.address(w),
            moved,
            moved_bytes,
            left_behind,
        };
        info!("{event}");
        self.events.record(self.now_ms, event);
    }
}

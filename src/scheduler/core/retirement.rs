//! Retirement: a worker asked to leave (SIGTERM) takes no new task; its results that exist
//! nowhere else and are still needed are copied to other workers (`replication`), then it is
//! closed. Whether a worker is retiring, and until when, is kept on the worker itself.

use log::{info, warn};

use super::tasks::TaskId;
use super::{SchedulerCore, WorkerId};
use crate::protocol::ToWorker;

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
                self.remove_worker(w, false);
                self.outbox.send_to_connection(identity, ToWorker::Close);
                continue;
            }
            for t in unique {
                let have = self.tasks.get(t).who_has.len();
                self.copy_until(t, have + 1);
            }
        }
    }
}

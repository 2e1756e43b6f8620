//! Retirement: a worker asked to leave (SIGTERM) takes no new task; its results that exist
//! nowhere else and are still needed are copied to other workers (`replication`), then it is
//! closed. Whether a worker is retiring, and until when, is kept on the worker itself.
//!
//! The part here, `Dismissals`: an operator's `retire_workers` requests waiting for their
//! workers to leave, the workers that are dismissed for good (`ToWorker::Dismiss`: their
//! nannies stop too) rather than closed once retired, and whether the cluster shuts down.

use rustc_hash::FxHashSet as HashSet;

use log::{info, warn};

use super::tasks::TaskId;
use super::{SchedulerCore, WorkerId};
use crate::protocol::{
    ClientRole, ConnectionId, Departure, EventKind, RequestError, RequestId, ToClient, ToWorker,
    WorkerAddress, WorkerSelector,
};

/// An operator's `retire_workers`, answered once all its workers have left.
struct RetireRequest {
    client: ConnectionId,
    request: RequestId,
    workers: Vec<(WorkerId, WorkerAddress)>,
}

#[derive(Default)]
pub(super) struct Dismissals {
    requests: Vec<RetireRequest>,
    /// Retiring workers to dismiss for good (not merely close) once their results are safe.
    for_good: HashSet<WorkerId>,
    /// An operator shut the cluster down.
    shut_down: bool,
}

impl Dismissals {
    pub(super) fn has_requests(&self) -> bool {
        !self.requests.is_empty()
    }

    /// The requests of `client` still waiting.
    pub(super) fn requests_of<'a>(
        &'a self,
        client: &'a ConnectionId,
    ) -> impl Iterator<Item = RequestId> + 'a {
        self.requests
            .iter()
            .filter(move |r| r.client == *client)
            .map(|r| r.request)
    }

    /// `client` left: nobody waits for its requests' answers (the workers still retire).
    pub(super) fn client_gone(&mut self, client: &ConnectionId) {
        self.requests.retain(|r| r.client != *client);
    }

    /// Whether worker `w`, its retirement done, is dismissed for good (and forgets it).
    fn dismiss(&mut self, w: WorkerId) -> bool {
        self.for_good.remove(&w)
    }

    pub(super) fn shut_down(&self) -> bool {
        self.shut_down
    }
}

impl SchedulerCore {
    /// An operator asks for workers to be retired (dask's `retire_workers`): each worker
    /// `selectors` match retires as after SIGTERM (no new task, its only copies of needed
    /// results moved first), then is dismissed for good; answered with `Retired` once every
    /// one has left. A selector matching no registered worker fails the request, which
    /// retires nothing.
    pub(super) fn retire_workers(
        &mut self,
        client: ConnectionId,
        role: ClientRole,
        request: RequestId,
        selectors: Vec<WorkerSelector>,
    ) {
        if role != ClientRole::Operator {
            let error = RequestError::Forbidden {
                action: "retiring workers".into(),
                needs: ClientRole::Operator,
            };
            self.reply(&client, ToClient::Failed { request, error });
            return;
        }
        let mut chosen: Vec<(WorkerId, WorkerAddress)> = Vec::new();
        for selector in selectors {
            let mut matched: Vec<(WorkerId, WorkerAddress)> = self
                .workers
                .iter()
                .filter(|(_, w)| selector.matches(&w.address, &w.name, w.runs_python))
                .map(|(id, w)| (id, w.address.clone()))
                .collect();
            if matched.is_empty() {
                let error = RequestError::NoSuchWorker { worker: selector };
                self.reply(&client, ToClient::Failed { request, error });
                return;
            }
            matched.sort();
            chosen.extend(matched);
        }
        chosen.sort();
        chosen.dedup();
        // Marked before retiring: a worker with nothing to move is closed at once.
        for (w, _) in &chosen {
            self.dismissals.for_good.insert(*w);
        }
        self.dismissals.requests.push(RetireRequest {
            client,
            request,
            workers: chosen.clone(),
        });
        for (w, _) in chosen {
            self.retire_worker(w);
        }
    }

    /// Answers the `retire_workers` requests whose workers have all left (closed, or lost on
    /// the way), and forgets dismissals of workers gone otherwise.
    pub(super) fn answer_retirements(&mut self) {
        let requests = std::mem::take(&mut self.dismissals.requests);
        for r in requests {
            if r.workers
                .iter()
                .any(|(w, _)| self.workers.get(*w).is_some())
            {
                self.dismissals.requests.push(r);
                continue;
            }
            let workers = r.workers.into_iter().map(|(_, a)| a).collect();
            self.reply(
                &r.client,
                ToClient::Retired {
                    request: r.request,
                    workers,
                },
            );
        }
        let registry = &self.workers;
        self.dismissals
            .for_good
            .retain(|w| registry.get(*w).is_some());
    }

    /// An operator shuts the cluster down: every worker is dismissed for good (their nannies
    /// stop too), the request is answered, and the IO layer stops the scheduler after this
    /// batch (`is_shut_down`). Other clients' requests are not answered: they fail as the
    /// scheduler is lost.
    pub(super) fn shut_down(&mut self, client: ConnectionId, role: ClientRole, request: RequestId) {
        if role != ClientRole::Operator {
            let error = RequestError::Forbidden {
                action: "shutting the cluster down".into(),
                needs: ClientRole::Operator,
            };
            self.reply(&client, ToClient::Failed { request, error });
            return;
        }
        let mut workers: Vec<WorkerId> = self.workers.iter().map(|(id, _)| id).collect();
        workers.sort();
        info!(
            "shutting down on an operator's request: dismissing {} worker(s)",
            workers.len()
        );
        for w in workers {
            self.workers.push(w, ToWorker::Dismiss, vec![]);
        }
        self.dismissals.shut_down = true;
        self.reply(&client, ToClient::Done { request });
    }

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
                let last = if self.dismissals.dismiss(w) {
                    ToWorker::Dismiss
                } else {
                    ToWorker::Close
                };
                self.outbox.send_to_connection(identity, last);
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

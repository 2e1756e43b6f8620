//! A worker lost (its nanny reports it dead, it misses heartbeats or a probe, it leaves, it is
//! closed after retiring). The loss is announced once to every part that keeps worker ids, and
//! each handles its own table and says what it needs done: the task table's holders and
//! assignments (rescheduling, recomputing, blaming), replication (copies not coming),
//! computations (value fetches to ask of another holder), scatters (puts to start again).

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use log::warn;

use super::stories::StepKind;
use super::tasks::{task_failure, TaskId, TaskState};
use super::workers::{Assignment, Worker};
use super::{warn_or_info, SchedulerCore, WorkerId};
use crate::protocol::{
    Departure, EventKind, LossCost, Reschedule, TaskError, TaskErrorKind, ToWorker, WorkerAddress,
};

impl SchedulerCore {
    /// How long the values a worker announced still take to arrive at the slowest expected
    /// rate (`CoreConfig::transfer_min_bytes_per_s`): its heartbeats queue behind them.
    pub(super) fn transfer_grace_ms(&self, w: &Worker) -> u64 {
        let rate = self.config.transfer_min_bytes_per_s.max(1);
        w.incoming_bytes.saturating_mul(1000) / rate
    }

    /// Until when a worker may stay silent: its heartbeat timeout after it was last heard
    /// from, plus the time the values it announced take to arrive.
    pub(super) fn silent_after_ms(&self, w: &Worker) -> u64 {
        w.last_seen_ms
            .saturating_add(self.config.heartbeat_timeout_ms)
            .saturating_add(self.transfer_grace_ms(w))
    }

    /// Workers silent for longer than the heartbeat timeout (and the time their announced
    /// values take to arrive) are lost.
    pub(super) fn drop_silent_workers(&mut self) {
        let timeout = self.config.heartbeat_timeout_ms;
        let silent: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| self.now_ms > self.silent_after_ms(w))
            .map(|(id, _)| id)
            .collect();
        for id in silent {
            warn!(
                "worker {} silent for more than {timeout} ms: considered lost",
                self.workers.address(id)
            );
            self.remove_worker(
                id,
                Departure::Silent {
                    timeout_ms: timeout,
                },
            );
        }
    }

    /// Removes a worker: reschedules what it was running, recomputes what only it held.
    /// Unexpected losses (`Departure::unexpected`) count against the tasks it was running.
    ///
    /// The loss is announced once to each part that keeps worker ids; each drops its own
    /// entries and returns what the others must do about it. The task table's consequences
    /// (copies gone, assignments back) follow, then what the parts asked for. What it cost
    /// (results lost, still needed, recomputed, rerun) is logged in one line and recorded as
    /// an event.
    pub(super) fn remove_worker(&mut self, id: WorkerId, why: Departure) {
        let Some(worker) = self.workers.remove(id) else {
            return;
        };
        let unexpected = why.unexpected();
        if unexpected {
            // Its identity (nanny, name) is flaky for a while: what it finishes is copied.
            self.note_death(&worker);
        }
        let address = worker.address.clone();
        self.metrics.worker_removed(unexpected);
        let activations_before = self.events.activations();
        // A retiring worker's tally of results to move is over (`check_retirements` read it).
        self.events.worker_gone(id);
        // Copies it was making are not coming.
        self.replication.worker_lost(id);
        // Log requests waiting only for it are answered.
        self.logs_worker_lost(id);
        // Value fetches it owed us, to ask of another holder.
        let owed_values = self.computations.worker_lost(id);
        // Puts that placed values on it, to release and scatter again.
        let failed_puts = self.scatters.worker_lost(id);
        let others: Vec<WorkerId> = self.workers.iter().map(|(id, _)| id).collect();
        for w in others {
            self.workers
                .push(w, ToWorker::PeersLost(vec![address.clone()]), vec![]);
        }
        let lost = self.lose_copies(id, worker.has);
        let mut cost = LossCost {
            results_lost: lost.len() as u64,
            ..LossCost::default()
        };
        for &t in &lost {
            let task = self.tasks.get(t);
            cost.results_lost_bytes += task.nbytes;
            if task.needed() {
                cost.still_needed += 1;
                if task.spec.is_none() {
                    cost.scattered_lost += 1;
                }
            }
        }
        let running = worker.nthreads.max(1) as u64;
        let taken_back =
            self.take_back(id, worker.processing, worker.nthreads, unexpected, &address);
        cost.running_rerun = (taken_back.len() as u64).min(running);
        cost.queued_reassigned = taken_back.len() as u64 - cost.running_rerun;
        for t in lost {
            // An earlier loss may have failed a request and forgotten this task already.
            if self.tasks.exists(t) {
                self.data_lost(t, std::slice::from_ref(&address));
            }
        }
        cost.recomputing = self.events.activations() - activations_before;
        // Copies it held need replacing.
        self.top_up_all_replicas();
        if unexpected {
            self.fail_killers(&taken_back);
        }
        for t in owed_values {
            if self.tasks.exists(t) {
                self.request_value_if_needed(t);
            }
        }
        for p in failed_puts {
            for placed in &p.placement {
                if placed.worker != id {
                    self.workers
                        .push_release(placed.worker, vec![placed.key.clone()]);
                }
            }
            // Scattering again is safe: storing a value twice overwrites it.
            self.start_scatter(p.scatter);
        }
        self.check_replications();
        let event = if unexpected {
            EventKind::WorkerLost {
                worker: address,
                why,
                cost,
            }
        } else {
            EventKind::WorkerLeft {
                worker: address,
                why,
                cost,
            }
        };
        warn_or_info(unexpected, &event.to_string());
        self.events.record(self.now_ms, event);
        if self.workers.is_empty() && self.has_pending_work() {
            warn!("no workers left: pending work waits until a worker connects");
        }
        self.needs_scheduling = true;
    }

    /// The copies a lost worker held are gone; returns the tasks left with no copy, in order.
    fn lose_copies(&mut self, id: WorkerId, held: HashSet<TaskId>) -> Vec<TaskId> {
        let mut lost = Vec::new();
        for t in held {
            if self.remove_holder(t, id) && self.tasks.get(t).state == TaskState::Memory {
                lost.push(t);
            }
        }
        lost.sort();
        lost
    }

    /// Tasks a lost worker was running or had queued go back to the others. Only the running
    /// ones (the oldest `nthreads`) can have brought it down, so only they are blamed (on an
    /// unexpected loss): a task queued behind a crashing one must not fail for it. Returns
    /// the tasks that were assigned there.
    fn take_back(
        &mut self,
        id: WorkerId,
        assigned: HashMap<TaskId, Assignment>,
        nthreads: u32,
        unexpected: bool,
        address: &WorkerAddress,
    ) -> Vec<TaskId> {
        let mut processing: Vec<(u64, TaskId)> =
            assigned.into_iter().map(|(t, a)| (a.seq, t)).collect();
        processing.sort();
        let running = nthreads.max(1) as usize;
        for (i, &(_, t)) in processing.iter().enumerate() {
            if self.tasks.get(t).state == TaskState::Processing(id) {
                if unexpected && i < running {
                    self.tasks.suspect(t);
                    self.placement.blame(t, address);
                }
                let why = Reschedule::WorkerGone;
                self.story_step(t, StepKind::Rescheduled { worker: id, why });
                if i < running {
                    let event = EventKind::TaskRescheduled {
                        key: self.tasks.get(t).name().clone(),
                        worker: address.clone(),
                        why,
                    };
                    self.events.record(self.now_ms, event);
                }
                self.back_to_waiting(t);
            }
        }
        processing.into_iter().map(|(_, t)| t).collect()
    }

    /// Tasks blamed for more unexpected losses than `allowed_failures` fail ("killed worker").
    fn fail_killers(&mut self, suspects: &[TaskId]) {
        let limit = self.config.allowed_failures;
        for &t in suspects {
            if !self.tasks.exists(t) {
                continue;
            }
            let task = self.tasks.get(t);
            if task.suspicious > limit && task.state.is_active() {
                let error = TaskError {
                    kind: TaskErrorKind::KilledWorker,
                    message: format!(
                        "task {:?} was running on {} workers that died unexpectedly (allowed_failures = {limit}): {}",
                        task.name(),
                        task.suspicious,
                        self.placement.took_down(t)
                    ),
                };
                let key = task.name().clone();
                let killed = self.placement.killed_by(t);
                let workers = killed.len() as u32;
                let event = EventKind::TaskMarkedBad {
                    key: key.clone(),
                    killed,
                };
                warn!("{event}");
                self.events.record(self.now_ms, event);
                self.story_step(t, StepKind::MarkedBad { workers });
                self.fail_task(t, task_failure(&key, error));
            }
        }
    }

    fn has_pending_work(&self) -> bool {
        !self.computations.is_empty() || self.scatters.has_waiting()
    }
}

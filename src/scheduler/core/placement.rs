//! The placement part and the decision pass: gives ready tasks to workers. Prefers the worker
//! that already holds most of a task's input bytes, otherwise the least loaded; a worker never
//! takes more than its threads plus a small queue, so no worker idles while others hoard work.
//! The part owns the ready queue, the restrictions of the few tasks that have them, which
//! workers died running a task, the task-duration average and the assignment counter.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

use super::invariants::InvariantViolation;
use super::tasks::{TaskId, TaskState};
use super::workers::Assignment;
use super::{SchedulerCore, WorkerId};
use crate::protocol::{ComputeTask, WorkerAddress, WorkerSelector};

#[derive(Default)]
pub(super) struct Placement {
    /// Tasks in state Ready, oldest first. Entries whose task left Ready (or was forgotten)
    /// are skipped lazily.
    ready: VecDeque<TaskId>,
    /// The workers a task may run on, for the few tasks that say.
    restrictions: HashMap<TaskId, Box<[WorkerSelector]>>,
    /// The workers that died while running a task, for its "killed worker" error.
    took_down: HashMap<TaskId, Vec<WorkerAddress>>,
    /// Moving average of how long a task takes from assignment to its report, in ms: short
    /// tasks get a deep queue on each worker (so it never waits for the scheduler), long ones
    /// a shallow one (so work is not hoarded, nor lost with a worker).
    task_ms_average: f64,
    /// Counts assignments, to know the order in which a worker received its tasks.
    next_assignment: u64,
}

impl Placement {
    /// Task `t` became Ready.
    pub(super) fn push_ready(&mut self, t: TaskId) {
        self.ready.push_back(t);
    }

    /// Task `t` may only run on the workers these select.
    pub(super) fn restrict(&mut self, t: TaskId, workers: Box<[WorkerSelector]>) {
        self.restrictions.insert(t, workers);
    }

    /// Worker `address` died while running `t`.
    pub(super) fn blame(&mut self, t: TaskId, address: &WorkerAddress) {
        self.took_down.entry(t).or_default().push(address.clone());
    }

    /// The workers that died while running `t`, for its error.
    pub(super) fn took_down(&self, t: TaskId) -> String {
        self.took_down
            .get(&t)
            .map(|ws| {
                ws.iter()
                    .map(WorkerAddress::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    }

    /// A task took `ms` from its assignment to its report.
    pub(super) fn task_took(&mut self, ms: u64) {
        self.task_ms_average = 0.9 * self.task_ms_average + 0.1 * ms as f64;
    }

    /// Task `t` is forgotten. (Its entries in the ready queue are skipped when reached: the
    /// id never names another task.)
    pub(super) fn forget(&mut self, t: TaskId) {
        self.restrictions.remove(&t);
        self.took_down.remove(&t);
    }

    /// Every task is gone (a restart).
    pub(super) fn clear(&mut self) {
        self.ready.clear();
        self.restrictions.clear();
        self.took_down.clear();
    }

    /// The part's own invariant: restrictions and blame are kept for live tasks only.
    pub(super) fn check(&self, exists: &dyn Fn(TaskId) -> bool) -> Result<(), InvariantViolation> {
        let stale = self
            .restrictions
            .keys()
            .chain(self.took_down.keys())
            .find(|t| !exists(**t));
        match stale {
            Some(t) => Err(InvariantViolation::new(
                "placement",
                format!("placement keeps a forgotten task {t:?}"),
            )),
            None => Ok(()),
        }
    }
}

impl SchedulerCore {
    pub(super) fn schedule(&mut self) {
        if self.workers.is_empty() {
            return;
        }
        let extra = self.queue_extra();
        // Workers with a free slot, as (id, tasks assigned, capacity); kept current as we assign.
        let mut slots: Vec<(WorkerId, usize, usize)> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.retiring)
            .map(|(id, w)| (id, w.processing.len(), w.capacity(extra)))
            .filter(|(_, used, cap)| used < cap)
            .collect();
        slots.sort();
        // Restricted tasks with no free allowed worker wait for the next pass.
        let mut deferred = Vec::new();
        while !slots.is_empty() {
            let Some(t) = self.placement.ready.pop_front() else {
                break;
            };
            if !self.tasks.exists(t) || self.tasks.get(t).state != TaskState::Ready {
                continue;
            }
            let Some(i) = self.choose_worker(t, &slots) else {
                deferred.push(t);
                continue;
            };
            let w = slots[i].0;
            self.assign(t, w);
            slots[i].1 += 1;
            if slots[i].1 >= slots[i].2 {
                slots.swap_remove(i);
            }
        }
        for t in deferred.into_iter().rev() {
            self.placement.ready.push_front(t);
        }
    }

    /// Tasks to queue on each worker beyond its threads: about 10 ms of work (measured: deeper
    /// queues help tiny tasks most), between 1 and `worker_queue_extra`.
    fn queue_extra(&self) -> u32 {
        let max = self.config.worker_queue_extra.max(1);
        if self.placement.task_ms_average <= 0.0 {
            return max;
        }
        ((10.0 / self.placement.task_ms_average).round() as u32).clamp(1, max)
    }

    /// Whether `w` may run `t` (a restriction selects workers by address or by name).
    fn allowed(&self, t: TaskId, w: WorkerId) -> bool {
        match (self.placement.restrictions.get(&t), self.workers.get(w)) {
            (None, _) => true,
            (Some(allowed), Some(worker)) => allowed
                .iter()
                .any(|s| s.matches(&worker.address, &worker.name, worker.runs_python)),
            (Some(_), None) => false,
        }
    }

    /// Index into `slots` of the best allowed worker: most input bytes held, then lowest
    /// load (tasks per thread), then lowest id for determinism. None if none is allowed.
    fn choose_worker(&self, t: TaskId, slots: &[(WorkerId, usize, usize)]) -> Option<usize> {
        let task = self.tasks.get(t);
        let mut local_bytes = vec![0u64; slots.len()];
        if !task.dependencies.is_empty() {
            for d in task.dependencies.iter() {
                let dep = self.tasks.get(*d);
                for h in &dep.who_has {
                    if let Some(i) = slots.iter().position(|(w, _, _)| w == h) {
                        local_bytes[i] += dep.nbytes.max(1);
                    }
                }
            }
        }
        let mut best: Option<usize> = None;
        for i in 0..slots.len() {
            if !self.allowed(t, slots[i].0) {
                continue;
            }
            let Some(b) = best else {
                best = Some(i);
                continue;
            };
            let better_locality = local_bytes[i] > local_bytes[b];
            let same_locality = local_bytes[i] == local_bytes[b];
            // Compare used/capacity as cross products to stay in integers.
            let load_i = slots[i].1 * slots[b].2;
            let load_best = slots[b].1 * slots[i].2;
            if better_locality
                || (same_locality
                    && (load_i < load_best || (load_i == load_best && slots[i].0 < slots[b].0)))
            {
                best = Some(i);
            }
        }
        best
    }

    fn assign(&mut self, t: TaskId, w: WorkerId) {
        self.tasks.start_processing(t, w);
        let report_value = self.tasks.get(t).wanted > 0 && self.computations.value_wanted(t);
        let task = self.tasks.get(t);
        let key = task.key.clone();
        let spec = task
            .spec
            .as_deref()
            .expect("only tasks with a spec become ready")
            .to_vec();
        let dependencies = task
            .dependencies
            .iter()
            .map(|d| {
                let dep = self.tasks.get(*d);
                let holders = dep
                    .who_has
                    .iter()
                    .map(|h| self.workers.address(*h))
                    .collect();
                (dep.key.clone(), holders)
            })
            .collect();
        let assignment = Assignment {
            seq: self.placement.next_assignment,
            at_ms: self.now_ms,
        };
        self.placement.next_assignment += 1;
        self.workers.assign(w, t, assignment);
        let ct = ComputeTask {
            key,
            spec,
            dependencies,
            report_value,
        };
        self.workers.push_compute(w, ct);
    }
}

//! The decision pass: gives ready tasks to workers. Prefers the worker that already holds most
//! of a task's input bytes, otherwise the least loaded; a worker never takes more than its
//! threads plus a small queue, so no worker idles while others hoard work.

use super::tasks::{TaskId, TaskState};
use super::workers::Assignment;
use super::{SchedulerCore, WorkerId};
use crate::protocol::{ComputeTask, ToWorker};

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
            let Some(t) = self.ready.pop_front() else {
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
            self.ready.push_front(t);
        }
    }

    /// Tasks to queue on each worker beyond its threads: about 10 ms of work (measured: deeper
    /// queues help tiny tasks most), between 1 and `worker_queue_extra`.
    fn queue_extra(&self) -> u32 {
        let max = self.config.worker_queue_extra.max(1);
        if self.task_ms_average <= 0.0 {
            return max;
        }
        ((10.0 / self.task_ms_average).round() as u32).clamp(1, max)
    }

    /// Whether `w` may run `t` (restrictions name workers by address or name).
    fn allowed(&self, t: TaskId, w: WorkerId) -> bool {
        match (self.restrictions.get(&t), self.workers.get(w)) {
            (None, _) => true,
            (Some(allowed), Some(worker)) => allowed
                .iter()
                .any(|a| *a == worker.address || *a == worker.name),
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
        self.tasks.get_mut(t).state = TaskState::Processing(w);
        let report_value = self.tasks.get(t).wanted > 0
            && self.output_of.get(&t).is_some_and(|cs| {
                cs.iter()
                    .any(|c| self.computations.get(c).is_some_and(|c| c.values_wanted))
            });
        let task = self.tasks.get(t);
        let key = task.key.clone();
        let spec = task
            .spec
            .as_deref()
            .expect("only tasks with a spec become ready")
            .to_vec();
        let deps = task.dependencies.clone();
        let dependencies = deps
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
        let worker = self.workers.get_mut(w).expect("slots hold live workers");
        worker.processing.insert(
            t,
            Assignment {
                seq: self.next_assignment,
                at_ms: self.now_ms,
            },
        );
        self.next_assignment += 1;
        let ct = ComputeTask {
            key,
            spec,
            dependencies,
            report_value,
        };
        match worker.outbox.last_mut() {
            Some((ToWorker::Compute(batch), _)) => batch.push(ct),
            _ => worker.outbox.push((ToWorker::Compute(vec![ct]), vec![])),
        }
    }
}

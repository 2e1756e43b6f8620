//! The placement part and the decision pass: gives ready tasks to workers. Prefers the worker
//! that already holds most of a task's input bytes, otherwise the least loaded; a worker never
//! takes more than its threads plus a small queue, so no worker idles while others hoard work.
//! The part owns the ready queue, the restrictions of the few tasks that have them, the
//! restricted ready tasks that no registered worker may run and since when they wait, which
//! workers died running a task, the task-duration average and the assignment counter.
//!
//! A ready task that no registered worker may run (not merely none with a free slot) is
//! *unrunnable*: a warning names it when its wait starts, and `tick` fails it with
//! `TaskErrorKind::NoWorker` once it has waited `unrunnable_timeout_ms`, unless a worker that
//! may run it connects first. Only restricted tasks can be unrunnable: an unrestricted task
//! with no worker at all waits for the first one, however long.

use std::collections::VecDeque;

use log::warn;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::tasks::{task_failure, TaskId, TaskState};
use super::violation::InvariantViolation;
use super::workers::Assignment;
use super::{SchedulerCore, WorkerId};
use crate::protocol::{
    cut_text, ComputeTask, TaskError, TaskErrorKind, WorkerAddress, WorkerSelector,
};

#[derive(Default)]
pub(super) struct Placement {
    /// Tasks in state Ready, oldest first. Entries whose task left Ready (or was forgotten)
    /// are skipped lazily.
    ready: VecDeque<TaskId>,
    /// The workers a task may run on, for the few tasks that say.
    restrictions: HashMap<TaskId, Box<[WorkerSelector]>>,
    /// Restricted tasks that may be Ready, checked against the registered workers on each
    /// decision pass (entries whose task left Ready are dropped then): only these can be
    /// unrunnable, so the check never walks the whole ready queue.
    restricted_ready: HashSet<TaskId>,
    /// Ready tasks that no registered worker may run, and since when (ms) they wait. An entry
    /// goes when its task is placed or forgotten, leaves Ready, or a worker that may run it
    /// registers.
    unrunnable_since: HashMap<TaskId, u64>,
    /// The workers that died while running a task, for its "killed worker" error.
    took_down: HashMap<TaskId, Vec<WorkerAddress>>,
    /// Moving average of how long a task takes from assignment to its report, in ms: short
    /// tasks get a deep queue on each worker (so it never waits for the scheduler), long ones
    /// a shallow one (so work is not hoarded, nor lost with a worker).
    task_ms_average: f64,
    /// Counts assignments, to know the order in which a worker received its tasks.
    next_assignment: u64,
    /// How long a task of each prefix (`key_prefix`) takes from assignment to its report, in
    /// ms: the first sample, then an average weighting the newest sample by half (as dask's
    /// task prefixes do). Read by adaptive scaling through the status. At most
    /// `PREFIXES_MAX` prefixes: a new one beyond is not recorded (it counts as unknown).
    prefix_ms_average: HashMap<Box<str>, f64>,
}

/// The most task prefixes whose durations the placement part remembers: prefixes are
/// function names in practice, but a client may name every key differently.
const PREFIXES_MAX: usize = 4096;

/// A task's prefix, the group whose durations predict its own (dask's `key_split`): a string
/// key's text up to its first '-' ("inc-3" → "inc", "x" → "x"); a tuple key's first element's
/// prefix (("sum-ab", 0) → "sum"); an integer key's decimal text.
pub(super) fn key_prefix(key: &crate::graph::Key) -> String {
    key_prefix_of(key).into_owned()
}

/// `key_prefix` borrowed from the key where it can be (a string key, or a tuple led by one):
/// nothing allocated per finished task on the hot path.
pub(super) fn key_prefix_of(key: &crate::graph::Key) -> std::borrow::Cow<'_, str> {
    use crate::graph::Key;
    use std::borrow::Cow;
    match key {
        Key::Str(s) => Cow::Borrowed(s.split('-').next().unwrap_or_default()),
        Key::Int(i) => Cow::Owned(i.to_string()),
        Key::Tuple(items) => items.first().map(key_prefix_of).unwrap_or_default(),
    }
}

impl Placement {
    /// Task `t` became Ready.
    pub(super) fn push_ready(&mut self, t: TaskId) {
        self.ready.push_back(t);
        if self.restrictions.contains_key(&t) {
            self.restricted_ready.insert(t);
        }
    }

    /// Task `t` may only run on the workers these select.
    pub(super) fn restrict(&mut self, t: TaskId, workers: Box<[WorkerSelector]>) {
        self.restrictions.insert(t, workers);
        // It may be Ready already; the next pass drops it if not.
        self.restricted_ready.insert(t);
    }

    /// The restrictions of `t` as a reader wants them ("a, b"), cut to `max` bytes (a client
    /// may send thousands).
    fn restrictions_text(&self, t: TaskId, max: usize) -> String {
        let text = self
            .restrictions
            .get(&t)
            .map(|selectors| {
                selectors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        cut_text(text, max)
    }

    /// Task `t` is unrunnable at `now_ms`: records since when, unless it already waits.
    /// Returns whether its wait starts now.
    fn unrunnable(&mut self, t: TaskId, now_ms: u64) -> bool {
        match self.unrunnable_since.entry(t) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(now_ms);
                true
            }
        }
    }

    /// Task `t` is not unrunnable (any more): a worker may run it, or it was placed.
    fn runnable(&mut self, t: TaskId) {
        if !self.unrunnable_since.is_empty() {
            self.unrunnable_since.remove(&t);
        }
    }

    /// Task `t` is not Ready (any more): it is neither a candidate nor waiting.
    fn not_ready(&mut self, t: TaskId) {
        self.restricted_ready.remove(&t);
        self.runnable(t);
    }

    /// The unrunnable tasks that have waited longer than `timeout_ms` at `now_ms`, with since
    /// when, oldest first.
    fn unrunnable_expired(&self, now_ms: u64, timeout_ms: u64) -> Vec<(TaskId, u64)> {
        let mut expired: Vec<(TaskId, u64)> = self
            .unrunnable_since
            .iter()
            .filter(|(_, since)| now_ms.saturating_sub(**since) > timeout_ms)
            .map(|(t, since)| (*t, *since))
            .collect();
        expired.sort_by_key(|(t, since)| (*since, *t));
        expired
    }

    /// When the first unrunnable task will have waited longer than `timeout_ms`.
    pub(super) fn unrunnable_deadline(&self, timeout_ms: u64) -> Option<u64> {
        self.unrunnable_since
            .values()
            .min()
            .map(|since| since.saturating_add(timeout_ms).saturating_add(1))
    }

    /// Worker `address` died while running `t`.
    pub(super) fn blame(&mut self, t: TaskId, address: &WorkerAddress) {
        self.took_down.entry(t).or_default().push(address.clone());
    }

    /// The workers that died while running `t`, oldest first.
    pub(super) fn killed_by(&self, t: TaskId) -> Vec<WorkerAddress> {
        self.took_down.get(&t).cloned().unwrap_or_default()
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
    pub(super) fn task_took(&mut self, prefix: &str, ms: u64) {
        self.task_ms_average = 0.9 * self.task_ms_average + 0.1 * ms as f64;
        if let Some(average) = self.prefix_ms_average.get_mut(prefix) {
            *average = 0.5 * *average + 0.5 * ms as f64;
        } else if self.prefix_ms_average.len() < PREFIXES_MAX {
            self.prefix_ms_average.insert(prefix.into(), ms as f64);
        }
    }

    /// The average duration of a task of `prefix` in ms, if one has finished.
    pub(super) fn prefix_ms(&self, prefix: &str) -> Option<u64> {
        self.prefix_ms_average
            .get(prefix)
            .map(|ms| ms.round() as u64)
    }

    /// Task `t` is forgotten. (Its entries in the ready queue are skipped when reached: the
    /// id never names another task.)
    pub(super) fn forget(&mut self, t: TaskId) {
        self.restrictions.remove(&t);
        self.not_ready(t);
        self.took_down.remove(&t);
    }

    /// Every task is gone (a restart).
    pub(super) fn clear(&mut self) {
        self.ready.clear();
        self.restrictions.clear();
        self.restricted_ready.clear();
        self.unrunnable_since.clear();
        self.took_down.clear();
    }

    /// The part's own invariant: restrictions, unrunnable waits and blame are kept for live
    /// tasks only.
    pub(super) fn check(&self, exists: &dyn Fn(TaskId) -> bool) -> Result<(), InvariantViolation> {
        let stale = self
            .restrictions
            .keys()
            .chain(self.restricted_ready.iter())
            .chain(self.unrunnable_since.keys())
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
    /// The decision pass: ready tasks to workers with a free slot, then the restricted ready
    /// tasks no registered worker may run are noted (with no worker at all too).
    pub(super) fn schedule(&mut self) {
        self.place_ready();
        self.note_unrunnable();
    }

    fn place_ready(&mut self) {
        if self.workers.is_empty() {
            return;
        }
        let extra = self.queue_extra();
        // Workers with a free slot, as (id, tasks assigned, capacity); kept current as we assign.
        let mut slots: Vec<(WorkerId, usize, usize)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.takes_tasks())
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

    /// Checks the restricted ready tasks against the registered workers: a wait starts (with a
    /// warning, once per wait) for each that none may run, and ends for each that one may.
    fn note_unrunnable(&mut self) {
        if self.placement.restricted_ready.is_empty() {
            return;
        }
        let mut candidates = std::mem::take(&mut self.placement.restricted_ready);
        let mut started = Vec::new();
        candidates.retain(|&t| {
            if !self.tasks.exists(t) || self.tasks.get(t).state != TaskState::Ready {
                self.placement.runnable(t);
                return false;
            }
            if self.may_run_somewhere(t) {
                self.placement.runnable(t);
            } else if self.placement.unrunnable(t, self.now_ms) {
                started.push(t);
            }
            true
        });
        self.placement.restricted_ready = candidates;
        started.sort();
        for t in started {
            warn!(
                "task {:?} waits: no connected worker can run it (restricted to: {}); it fails in {} unless one connects",
                self.tasks.get(t).name(),
                self.placement
                    .restrictions_text(t, self.config.task_error_bytes_max),
                seconds(self.config.unrunnable_timeout_ms)
            );
        }
    }

    /// Fails the ready tasks no registered worker may run that have waited longer than
    /// `unrunnable_timeout_ms` (`NoWorker`); their dependents and requests fail with them.
    pub(super) fn fail_unrunnable(&mut self) {
        let timeout = self.config.unrunnable_timeout_ms;
        for (t, since) in self.placement.unrunnable_expired(self.now_ms, timeout) {
            // Failing one may have forgotten the next (ids are never reused). A worker that
            // may run it can have registered since the last pass: the wait is over then.
            if !self.tasks.exists(t) || self.tasks.get(t).state != TaskState::Ready {
                self.placement.not_ready(t);
                continue;
            }
            if self.may_run_somewhere(t) {
                self.placement.runnable(t);
                continue;
            }
            let key = self.tasks.get(t).name().clone();
            let message = format!(
                "task {key:?} waited {} for a worker it may run on (restricted to: {}), and none connected (unrunnable_timeout_ms = {timeout})",
                seconds(self.now_ms.saturating_sub(since)),
                self.placement
                    .restrictions_text(t, self.config.task_error_bytes_max),
            );
            let error = TaskError {
                kind: TaskErrorKind::NoWorker,
                message: cut_text(message, self.config.task_error_bytes_max),
            };
            warn!("{error}");
            self.placement.not_ready(t);
            self.story_step(t, super::stories::StepKind::Failed);
            let event = crate::protocol::EventKind::TaskErred {
                key: key.clone(),
                worker: None,
                kind: TaskErrorKind::NoWorker,
            };
            self.events.record(self.now_ms, event);
            self.fail_task(t, task_failure(&key, error));
        }
    }

    /// Whether some registered worker that is not retiring may run `t`, busy or idle.
    fn may_run_somewhere(&self, t: TaskId) -> bool {
        self.workers
            .iter()
            .any(|(w, worker)| !worker.retiring && self.allowed(t, w))
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
        self.placement.runnable(t);
        self.tasks.start_processing(t, w);
        self.story_step(t, super::stories::StepKind::Assigned { worker: w });
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

/// A duration for a reader: "60 s", "1.5 s", "250 ms".
fn seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else if ms >= 1000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

//! Task transitions: activation (a task becomes needed), completion, failure, loss of data,
//! release (nobody needs it any more) and forgetting.

use log::{debug, warn};

use super::stories::StepKind;
use super::tasks::{task_failure, TaskId, TaskState};
use super::{SchedulerCore, WorkerId};
use crate::graph::Key;
use crate::protocol::{
    cut_text, EventKind, FinishedTask, Frame, RequestError, Reschedule, TaskError, ToWorker,
    WorkerAddress,
};

impl SchedulerCore {
    /// Makes `roots` and everything they need (and that is not in memory) active.
    pub(super) fn activate(&mut self, roots: &[TaskId]) {
        let mut stack: Vec<TaskId> = roots.to_vec();
        let mut newly = Vec::new();
        let mut unrecoverable = Vec::new();
        while let Some(t) = stack.pop() {
            let task = self.tasks.get_mut(t);
            if task.state != TaskState::Released {
                continue;
            }
            if task.spec.is_none() {
                unrecoverable.push(t);
                continue;
            }
            // Marked Waiting now so shared dependencies are visited once; counters follow.
            task.state = TaskState::Waiting;
            newly.push(t);
            stack.extend(task.dependencies.iter().copied());
        }
        let mut failed_inputs = Vec::new();
        for &t in &newly {
            let mut waiting_on = 0;
            // By index: the hot path of a submit allocates nothing per task.
            for i in 0..self.tasks.get(t).dependencies.len() {
                let d = self.tasks.get(t).dependencies[i];
                let dep = self.tasks.get_mut(d);
                dep.waiters += 1;
                match dep.state {
                    TaskState::Memory => {}
                    TaskState::Erred => {
                        failed_inputs.push(d);
                        waiting_on += 1;
                    }
                    _ => waiting_on += 1,
                }
            }
            let task = self.tasks.get_mut(t);
            task.waiting_on = waiting_on;
            if waiting_on == 0 {
                task.state = TaskState::Ready;
                self.placement.push_ready(t);
                self.needs_scheduling = true;
                self.story_step(t, StepKind::Ready);
            } else {
                self.story_step(t, StepKind::Waiting { inputs: waiting_on });
            }
        }
        self.events.activated(newly.len());
        // Right after a restart, scattered data may still be reported by a worker that has not
        // registered yet: its dependents wait until the grace period ends.
        let recovering = self.recovery.deadline().is_some();
        for t in unrecoverable.into_iter().filter(|_| !recovering) {
            // Failing one may have forgotten the next (nothing is created meanwhile, so an id
            // that exists is still the same task).
            if !self.tasks.exists(t) {
                continue;
            }
            let task = self.tasks.get(t);
            let error = RequestError::DataLost {
                key: task.name().clone(),
                workers: Vec::new(),
            };
            self.fail_dependents_and_wanters(t, error);
        }
        for d in failed_inputs {
            if !self.tasks.exists(d) {
                continue;
            }
            if let Some(error) = self.tasks.get(d).error.clone() {
                self.fail_dependents_and_wanters(d, *error);
            }
        }
    }

    pub(super) fn tasks_finished(
        &mut self,
        w: WorkerId,
        done: Vec<FinishedTask>,
        frames: Vec<Frame>,
    ) {
        let announced = done.iter().filter(|f| f.has_value).count();
        if announced != frames.len() {
            warn!(
                "ignoring a report from worker {}: {announced} values announced, {} sent",
                self.workers.address(w),
                frames.len()
            );
            return;
        }
        let mut values = frames.into_iter();
        for f in done {
            let value = if f.has_value { values.next() } else { None };
            let task = self.tasks.id(&f.key);
            let assigned = task.filter(|t| self.is_assigned(w, *t));
            let Some(t) = assigned else {
                // Copies it fetched are its own to report; anything else it says is not.
                self.fetched_copies(w, &f.fetched);
                // Never given to this worker (or taken back since): its word is not a result.
                if task.is_none() {
                    self.distrust(w, "a result of a task it was not given", &f.key);
                } else {
                    debug!(
                        "{:?} finished on a worker it is no longer assigned to",
                        f.key
                    );
                }
                self.workers.push_release(w, vec![f.key]);
                continue;
            };
            self.replication.copy_done(t, w);
            self.fetched_copies(w, &f.fetched);
            self.finished_at(w, t, f, value);
            self.guard_result(t, w);
        }
        if self.replication.has_requests() {
            self.check_replications();
        }
        if self.workers.any_retiring() {
            self.check_retirements();
        }
    }

    /// Copies of inputs a worker fetched from peers: it holds them now (or drops them, when
    /// they are not needed any more).
    fn fetched_copies(&mut self, w: WorkerId, fetched: &[(Key, u64)]) {
        self.metrics.fetched(fetched);
        for (dep_key, _) in fetched {
            match self.tasks.id(dep_key) {
                Some(d) if self.tasks.get(d).state == TaskState::Memory => {
                    if !self.tasks.get(d).who_has.contains(&w) {
                        self.story_step(d, StepKind::CopiedTo { worker: w });
                    }
                    self.add_holder(d, w)
                }
                // Lost meanwhile and being recomputed on this very worker: a release would
                // cancel that (the worker finishes it at once from the copy it has).
                Some(d) if self.is_assigned(w, d) => {}
                _ => self.workers.push_release(w, vec![dep_key.clone()]),
            }
        }
    }

    pub(super) fn task_finished(&mut self, w: WorkerId, f: FinishedTask, value: Option<Frame>) {
        self.fetched_copies(w, &f.fetched);
        match self.tasks.id(&f.key) {
            Some(t) => self.finished_at(w, t, f, value),
            None => self.workers.push_release(w, vec![f.key]),
        }
    }

    /// Task `t` finished on worker `w` (whose word counts for it).
    fn finished_at(&mut self, w: WorkerId, t: TaskId, f: FinishedTask, value: Option<Frame>) {
        let state = self.tasks.get(t).state;
        match state {
            TaskState::Memory => {
                // A second copy (the task ran twice after a reassignment).
                if !self.tasks.get(t).who_has.contains(&w) {
                    self.story_step(t, StepKind::CopiedTo { worker: w });
                }
                self.add_holder(t, w);
            }
            // A result from a worker we had taken the task from is still a right result.
            _ if state.is_active() => {
                let prefix = super::placement::key_prefix_of(self.tasks.get(t).name());
                let mut start_ms = self.now_ms;
                let mut step = StepKind::Found { worker: w };
                if let TaskState::Processing(p) = state {
                    let assigned = self
                        .workers
                        .get(p)
                        .and_then(|worker| worker.processing.get(&t).map(|a| a.at_ms));
                    if let Some(at) = assigned {
                        self.placement
                            .task_took(&prefix, self.now_ms.saturating_sub(at));
                        start_ms = at;
                    }
                    if p == w {
                        let took_ms = self.now_ms.saturating_sub(assigned.unwrap_or(self.now_ms));
                        step = StepKind::Finished {
                            worker: w,
                            took_ms: u32::try_from(took_ms).unwrap_or(u32::MAX),
                            fetched: u16::try_from(f.fetched.len()).unwrap_or(u16::MAX),
                        };
                    }
                }
                self.metrics.task_finished(
                    self.tasks.get(t).name(),
                    &prefix,
                    self.workers.address(w).as_str(),
                    start_ms,
                    self.now_ms,
                );
                self.leave_active(t);
                let task = self.tasks.get_mut(t);
                task.state = TaskState::Memory;
                task.nbytes = f.nbytes;
                task.error = None;
                self.story_step(t, step);
                self.add_holder(t, w);
                self.progress.task_done(t);
                self.dependents_may_proceed(t);
                if let Some(v) = value {
                    self.value_arrived(t, v);
                } else {
                    self.request_value_if_needed(t);
                }
                // Persists wait for memory, not for values.
                for c in self.computations.persists_of(t) {
                    self.maybe_complete(c);
                }
            }
            _ => {
                debug!("{:?} finished but is no longer needed", f.key);
                self.workers.push_release(w, vec![f.key]);
                return;
            }
        }
        // (Delivering the value may have ended the last computation and forgotten the task.)
        if self.tasks.exists(t) && self.tasks.get(t).replicas > 1 {
            // Back after a loss (or computed for the first time): copies again.
            self.top_up_replicas(t);
        }
        self.maybe_release(t);
    }

    /// `t` just came into memory: dependents waiting only for it become ready.
    pub(super) fn dependents_may_proceed(&mut self, t: TaskId) {
        // By index (a dependent is never `t` itself): nothing allocated per finished task.
        for i in 0..self.tasks.get(t).dependents.len() {
            let d = self.tasks.get(t).dependents[i];
            let dep = self.tasks.get_mut(d);
            if dep.state == TaskState::Waiting {
                dep.waiting_on -= 1;
                if dep.waiting_on == 0 {
                    dep.state = TaskState::Ready;
                    self.placement.push_ready(d);
                    self.needs_scheduling = true;
                    self.story_step(d, StepKind::Ready);
                }
            }
        }
    }

    pub(super) fn task_erred(&mut self, w: WorkerId, key: Key, mut error: TaskError) {
        let Some(t) = self.tasks.id(&key) else {
            self.distrust(w, "an error of a task it was not given", &key);
            return;
        };
        if self.tasks.get(t).state != TaskState::Processing(w) {
            debug!("stale error for {key:?} from a worker it is no longer assigned to");
            return;
        }
        error.message = cut_text(error.message, self.config.task_error_bytes_max);
        debug!("task {key:?} erred: {error}");
        let name = self.tasks.get(t).name().clone();
        let kind = error.kind;
        self.story_step(t, StepKind::Erred { worker: w, kind });
        let worker = Some(self.workers.address(w));
        let erred = EventKind::TaskErred {
            key: name.clone(),
            worker,
            kind,
        };
        self.events.record(self.now_ms, erred);
        self.fail_task(t, task_failure(&name, error));
    }

    /// Fails a task and, transitively, its active dependents and the computations wanting them.
    pub(super) fn fail_task(&mut self, t: TaskId, error: RequestError) {
        if self.tasks.get(t).state.is_active() {
            self.leave_active(t);
        }
        let task = self.tasks.get_mut(t);
        task.state = TaskState::Erred;
        task.error = Some(Box::new(error.clone()));
        let prefix = super::placement::key_prefix(self.tasks.get(t).name());
        self.metrics.task_erred(&prefix, true);
        self.fail_dependents_and_wanters(t, error);
    }

    /// Propagates a failure from `t` to everything that waits for it.
    pub(super) fn fail_dependents_and_wanters(&mut self, t: TaskId, error: RequestError) {
        let mut stack = vec![t];
        let mut failed = vec![t];
        while let Some(x) = stack.pop() {
            let dependents = self.tasks.get(x).dependents.clone();
            for d in dependents {
                if self.tasks.get(d).state.is_active() {
                    self.leave_active(d);
                    let dep = self.tasks.get_mut(d);
                    dep.state = TaskState::Erred;
                    dep.error = Some(Box::new(error.clone()));
                    let prefix = super::placement::key_prefix(self.tasks.get(d).name());
                    self.metrics.task_erred(&prefix, false);
                    self.story_step(d, StepKind::Failed);
                    stack.push(d);
                    failed.push(d);
                }
            }
        }
        for x in &failed {
            self.progress.task_erred(*x);
            self.fail_computations_wanting(*x, &error);
        }
        for x in failed {
            if self.tasks.exists(x) {
                self.maybe_release(x);
            }
        }
    }

    /// Takes a task out of Waiting/Ready/Processing and releases what it no longer needs.
    pub(super) fn leave_active(&mut self, t: TaskId) {
        self.leave_active_only(t);
        // Releasing an input never forgets `t` (a task is forgotten only once it has no
        // dependents, and `t` depends on each of these), so `t` is still there to read.
        for i in 0..self.tasks.get(t).dependencies.len() {
            let d = self.tasks.get(t).dependencies[i];
            self.maybe_release(d);
        }
    }

    /// Takes a task out of Waiting/Ready/Processing; the caller must offer the dependencies
    /// it no longer waits for to `maybe_release` (kept apart so release can walk long chains
    /// iteratively).
    fn leave_active_only(&mut self, t: TaskId) {
        let task = self.tasks.get_mut(t);
        debug_assert!(task.state.is_active());
        if let TaskState::Processing(w) = task.state {
            self.workers.unassign(w, t);
            // A slot freed up.
            self.needs_scheduling = true;
        }
        task.state = TaskState::Released;
        task.waiting_on = 0;
        for i in 0..self.tasks.get(t).dependencies.len() {
            let d = self.tasks.get(t).dependencies[i];
            self.tasks.get_mut(d).waiters -= 1;
        }
    }

    /// A task whose worker went away, or could not get its inputs, goes back to waiting.
    pub(super) fn back_to_waiting(&mut self, t: TaskId) {
        let task = self.tasks.get(t);
        if let TaskState::Processing(w) = task.state {
            self.workers.unassign(w, t);
        }
        let waiting_on = self
            .tasks
            .get(t)
            .dependencies
            .iter()
            .filter(|d| self.tasks.get(**d).state != TaskState::Memory)
            .count() as u32;
        let task = self.tasks.get_mut(t);
        task.waiting_on = waiting_on;
        if waiting_on == 0 {
            task.state = TaskState::Ready;
            self.placement.push_ready(t);
            self.story_step(t, StepKind::Ready);
        } else {
            task.state = TaskState::Waiting;
            self.story_step(t, StepKind::Waiting { inputs: waiting_on });
        }
        self.needs_scheduling = true;
    }

    /// The last copy of a task's data is gone: dependents wait again, and if the data is still
    /// needed it is recomputed from its lineage (or, for scattered data, reported lost).
    pub(super) fn data_lost(&mut self, t: TaskId, workers: &[WorkerAddress]) {
        let task = self.tasks.get_mut(t);
        if task.state != TaskState::Memory {
            return;
        }
        task.state = TaskState::Released;
        let dependents = task.dependents.clone();
        let with = workers.first().map_or(super::stories::UNKNOWN_WORKER, |a| {
            self.stories.worker_at(a)
        });
        self.story_step(t, StepKind::ResultLost { worker: with });
        for d in dependents {
            let state = self.tasks.get(d).state;
            match state {
                TaskState::Waiting => self.tasks.get_mut(d).waiting_on += 1,
                TaskState::Ready => {
                    let dep = self.tasks.get_mut(d);
                    dep.state = TaskState::Waiting;
                    dep.waiting_on = 1;
                    self.story_step(d, StepKind::Waiting { inputs: 1 });
                }
                TaskState::Processing(w) => {
                    // It would fail to fetch the lost input: take it back now.
                    let key = self.tasks.get(d).key.clone();
                    self.workers.push_release(w, vec![key]);
                    let why = Reschedule::InputLost;
                    self.story_step(d, StepKind::Rescheduled { worker: w, why });
                    self.back_to_waiting(d);
                }
                _ => {}
            }
        }
        let task = self.tasks.get(t);
        if !task.needed() {
            self.maybe_release(t);
            return;
        }
        if task.spec.is_none() {
            let error = RequestError::DataLost {
                key: task.name().clone(),
                workers: workers.to_vec(),
            };
            warn!("{error}");
            self.story_step(t, StepKind::Failed);
            self.fail_task(t, error);
            return;
        }
        debug!("recomputing lost {:?}", task.key);
        self.metrics.recomputed();
        self.activate(&[t]);
    }

    pub(super) fn missing_dependency(
        &mut self,
        w: WorkerId,
        key: &Key,
        dependency: &Key,
        holders: &[WorkerAddress],
    ) {
        if let Some(t) = self.tasks.id(key) {
            self.replication.copy_failed(t, w);
        }
        if let Some(d) = self.tasks.id(dependency) {
            // The reporter's word counts for its own copy only: a holder it names is asked
            // itself (`CheckHeld`), and dropped as a holder when it says it lacks the value.
            if self.tasks.get(d).who_has.contains(&w) {
                self.not_held(w, vec![dependency.clone()]);
            }
        }
        // `not_held` may have forgotten the dependency: look it up again.
        if let Some(d) = self.tasks.id(dependency) {
            let named: Vec<WorkerId> = self
                .tasks
                .get(d)
                .who_has
                .iter()
                .copied()
                .filter(|h| holders.contains(&self.workers.address(*h)))
                .collect();
            for h in named {
                self.workers.push(
                    h,
                    ToWorker::CheckHeld {
                        keys: vec![dependency.clone()],
                    },
                    vec![],
                );
            }
        }
        if self.replication.has_requests() {
            self.check_replications();
        }
        if let Some(t) = self.tasks.id(key) {
            if self.tasks.get(t).state == TaskState::Processing(w) {
                let why = Reschedule::InputMissing;
                self.story_step(t, StepKind::Rescheduled { worker: w, why });
                let event = EventKind::TaskRescheduled {
                    key: self.tasks.get(t).name().clone(),
                    worker: self.workers.address(w),
                    why,
                };
                self.events.record(self.now_ms, event);
                self.back_to_waiting(t);
            }
            if self.tasks.get(t).replicas > 1 {
                self.top_up_replicas(t);
            }
        }
    }

    /// Releases a task's data or stops its computation when nobody needs it, then forgets it
    /// when nothing refers to it. Works through the consequences iteratively.
    pub(super) fn maybe_release(&mut self, t: TaskId) {
        let mut stack = vec![t];
        while let Some(x) = stack.pop() {
            if !self.tasks.exists(x) {
                continue;
            }
            let task = self.tasks.get(x);
            if task.needed() {
                continue;
            }
            match task.state {
                TaskState::Memory => {
                    if task.spec.is_none() {
                        let key = task.key.clone();
                        self.journal(super::JournalOp::DeleteScattered { key });
                    }
                    self.drop_data(x);
                    self.tasks.get_mut(x).state = TaskState::Released;
                    self.story_step(x, StepKind::Released);
                }
                TaskState::Waiting | TaskState::Ready | TaskState::Processing(_) => {
                    if let TaskState::Processing(w) = task.state {
                        let key = task.key.clone();
                        self.workers.push_release(w, vec![key]);
                    }
                    self.leave_active_only(x);
                    self.story_step(x, StepKind::Released);
                    stack.extend(self.tasks.get(x).dependencies.iter().copied());
                }
                TaskState::Erred => {
                    if task.spec.is_none() {
                        let key = task.key.clone();
                        self.journal(super::JournalOp::DeleteScattered { key });
                    }
                    let task = self.tasks.get_mut(x);
                    task.state = TaskState::Released;
                    task.error = None;
                    self.story_step(x, StepKind::Released);
                }
                TaskState::Released => {
                    if task.spec.is_none() {
                        let key = task.key.clone();
                        self.journal(super::JournalOp::DeleteScattered { key });
                    }
                }
            }
            // Forget it once no dependent refers to it.
            let task = self.tasks.get(x);
            if task.dependents.is_empty() {
                let removed = self.forget(x);
                for d in removed.dependencies.iter() {
                    let dep = self.tasks.get_mut(*d);
                    dep.dependents.retain(|y| *y != x);
                    stack.push(*d);
                }
            }
        }
    }
}

impl SchedulerCore {
    /// Forgets task `x`, announcing it to every part that keeps task ids: each drops its own
    /// entries (the id is never reused, so one held elsewhere just stops naming anything).
    fn forget(&mut self, x: TaskId) -> super::tasks::Task {
        self.computations.forget(x);
        self.progress.forget(x);
        self.replication.forget(x);
        self.placement.forget(x);
        self.story_step(x, StepKind::Forgotten);
        self.tasks.remove(x)
    }

    /// Whether worker `w` was given the task with this (wire) key to run, or to copy.
    pub(super) fn assigned_to(&self, w: WorkerId, key: &Key) -> bool {
        self.tasks.id(key).is_some_and(|t| self.is_assigned(w, t))
    }

    /// Whether worker `w` was given task `t` to run, or to copy: its word counts for `t`.
    pub(super) fn is_assigned(&self, w: WorkerId, t: TaskId) -> bool {
        self.tasks.get(t).state == TaskState::Processing(w) || self.replication.is_copying(t, w)
    }

    /// Worker `w` holds a copy of task `t` now.
    pub(super) fn add_holder(&mut self, t: TaskId, w: WorkerId) {
        let task = self.tasks.get_mut(t);
        if !task.who_has.contains(&w) {
            task.who_has.push(w);
            let nbytes = task.nbytes;
            self.workers.holds(w, t, nbytes);
        }
    }

    /// Worker `w` no longer holds task `t`; returns whether no holder is left.
    pub(super) fn remove_holder(&mut self, t: TaskId, w: WorkerId) -> bool {
        let task = self.tasks.get_mut(t);
        task.who_has.retain(|x| *x != w);
        let (nbytes, none_left) = (task.nbytes, task.who_has.is_empty());
        self.workers.dropped(w, t, nbytes);
        none_left
    }

    /// A value of `t` (of `nbytes`) is on worker `w` without having been computed there
    /// (scattered, or found on a worker after a restart): `t` is in memory.
    pub(super) fn arrived_in_memory(&mut self, t: TaskId, w: WorkerId, nbytes: u64) {
        let task = self.tasks.get_mut(t);
        task.state = TaskState::Memory;
        task.nbytes = nbytes;
        self.story_step(t, StepKind::Found { worker: w });
        self.add_holder(t, w);
    }

    /// Drops every copy of a task's data (telling the holders).
    fn drop_data(&mut self, t: TaskId) {
        let task = self.tasks.get_mut(t);
        let holders = std::mem::take(&mut task.who_has);
        let key = task.key.clone();
        let nbytes = task.nbytes;
        for w in holders {
            self.workers.dropped(w, t, nbytes);
            self.workers.push_release(w, vec![key.clone()]);
        }
    }

    /// A worker says it does not hold these keys: it is no longer a holder (a worker may
    /// always speak for its own store, never for another's).
    pub(super) fn not_held(&mut self, w: WorkerId, keys: Vec<Key>) {
        let address = self.workers.address(w);
        for key in keys {
            let Some(d) = self.tasks.id(&key) else {
                continue;
            };
            if !self.tasks.get(d).who_has.contains(&w) {
                continue;
            }
            if self.remove_holder(d, w) {
                self.data_lost(d, std::slice::from_ref(&address));
            }
        }
        if self.replication.has_requests() {
            self.check_replications();
        }
    }
}

//! The worker registry: every connected worker, what it holds and what it is running.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::violation::InvariantViolation;
use super::{Command, TaskId};
use crate::graph::Key;
use crate::protocol::{
    ComputeTask, ConnectionId, Frame, MemoryReport, ToWorker, WorkerAddress, WorkerName,
    WorkerRegistration,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub u32);

#[derive(Debug)]
pub struct Worker {
    pub identity: ConnectionId,
    pub address: WorkerAddress,
    pub name: WorkerName,
    pub nthreads: u32,
    pub memory_limit_bytes: u64,
    pub pid: u32,
    pub store: String,
    /// The token its nanny must know to speak for it (`None`: no nanny).
    pub nanny_token: Option<u64>,
    /// It runs Python functions (the bridge of a 2015 Python worker).
    pub runs_python: bool,
    pub has: HashSet<TaskId>,
    /// Tasks assigned here (queued or running), with their assignment order: the worker runs
    /// them first come, first served, so the oldest `nthreads` are the ones running.
    pub processing: HashMap<TaskId, Assignment>,
    pub nbytes: u64,
    pub last_seen_ms: u64,
    /// Value bytes it announced (`FromWorker::Sending`) that have not arrived yet: its
    /// heartbeats wait behind them, so its silence may last that much longer.
    pub incoming_bytes: u64,
    /// Messages received from it so far (a ping is answered when this grows).
    pub messages_heard: u64,
    /// Messages not yet flushed, in order; consecutive Compute/Release messages are merged.
    pub outbox: Vec<(ToWorker, Vec<Vec<u8>>)>,
    /// Leaving on request: gets no new task, its results are being copied elsewhere.
    pub retiring: bool,
    pub retire_deadline_ms: u64,
    /// Its memory as it last reported it (`FromWorker::Memory`).
    pub memory: MemoryState,
}

/// A worker's memory as it reported it. `on_disk` only ever lists tasks in the worker's `has`.
#[derive(Debug, Default)]
pub struct MemoryState {
    /// Past its pause fraction: it starts no new task, so the decision pass gives it none.
    pub paused: bool,
    pub memory_bytes: u64,
    pub spilled_bytes: u64,
    /// The values it holds on disk.
    pub on_disk: HashSet<TaskId>,
}

/// When a task was given to its worker.
#[derive(Clone, Copy, Debug)]
pub struct Assignment {
    /// Global assignment order.
    pub seq: u64,
    pub at_ms: u64,
}

impl Worker {
    /// A worker as it registers: holding nothing known yet, running nothing.
    pub fn new(identity: ConnectionId, reg: &WorkerRegistration, now_ms: u64) -> Worker {
        Worker {
            identity,
            address: reg.address.clone(),
            name: reg.name.clone(),
            nthreads: reg.nthreads,
            memory_limit_bytes: reg.memory_limit_bytes,
            pid: reg.pid,
            store: reg.store.clone(),
            nanny_token: reg.nanny_token,
            runs_python: reg.runs_python,
            has: HashSet::default(),
            processing: HashMap::default(),
            nbytes: 0,
            last_seen_ms: now_ms,
            incoming_bytes: 0,
            messages_heard: 0,
            outbox: Vec::new(),
            retiring: false,
            retire_deadline_ms: 0,
            memory: MemoryState::default(),
        }
    }

    /// Whether the decision pass may give it a new task: not retiring, not paused.
    pub fn takes_tasks(&self) -> bool {
        !self.retiring && !self.memory.paused
    }

    /// How many tasks the worker may have queued or running: its threads plus a little queue,
    /// so it never waits for the scheduler between two tasks.
    pub fn capacity(&self, queue_extra: u32) -> usize {
        (self.nthreads.max(1) + queue_extra) as usize
    }
}

#[derive(Default)]
pub struct WorkerRegistry {
    workers: HashMap<WorkerId, Worker>,
    by_identity: HashMap<ConnectionId, WorkerId>,
    next_id: u32,
}

impl WorkerRegistry {
    pub fn add(&mut self, worker: Worker) -> WorkerId {
        let id = WorkerId(self.next_id);
        self.next_id += 1;
        self.by_identity.insert(worker.identity.clone(), id);
        self.workers.insert(id, worker);
        id
    }

    pub fn remove(&mut self, id: WorkerId) -> Option<Worker> {
        let w = self.workers.remove(&id)?;
        self.by_identity.remove(&w.identity);
        Some(w)
    }

    pub fn by_identity(&self, identity: &ConnectionId) -> Option<WorkerId> {
        self.by_identity.get(identity).copied()
    }

    pub fn by_address(&self, address: &WorkerAddress) -> Option<WorkerId> {
        self.workers
            .iter()
            .find(|(_, w)| w.address == *address)
            .map(|(id, _)| *id)
    }

    pub fn get(&self, id: WorkerId) -> Option<&Worker> {
        self.workers.get(&id)
    }

    /// A message from worker `id` with `value_bytes` in its value frames arrived at `now_ms`:
    /// those bytes are no longer on their way.
    pub fn heard_from(&mut self, id: WorkerId, now_ms: u64, value_bytes: u64) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.last_seen_ms = now_ms;
            w.messages_heard += 1;
            w.incoming_bytes = w.incoming_bytes.saturating_sub(value_bytes);
        }
    }

    /// Worker `id` is about to send `bytes` of values (`FromWorker::Sending`). Never more in
    /// all than the largest message it may send: announcements cannot buy a worker unbounded
    /// time.
    pub fn announced(&mut self, id: WorkerId, bytes: u64, max_message_bytes: u64) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.incoming_bytes = w
                .incoming_bytes
                .saturating_add(bytes)
                .min(max_message_bytes);
        }
    }

    /// Task `t` is given to worker `w` (a live worker: the decision pass only offers those).
    pub fn assign(&mut self, w: WorkerId, t: TaskId, assignment: Assignment) {
        let worker = self
            .workers
            .get_mut(&w)
            .expect("tasks are assigned to live workers");
        worker.processing.insert(t, assignment);
    }

    /// Worker `w` is leaving: it gets no new task and is closed by `deadline_ms` at the latest.
    /// False if it is not registered.
    pub fn retire(&mut self, w: WorkerId, deadline_ms: u64) -> bool {
        let Some(worker) = self.workers.get_mut(&w) else {
            return false;
        };
        worker.retiring = true;
        worker.retire_deadline_ms = deadline_ms;
        true
    }

    /// Worker `w` is emptied (a restart of a worker without a nanny): it holds and runs
    /// nothing, and its only queued message is `Reset`.
    pub fn reset(&mut self, w: WorkerId) {
        if let Some(worker) = self.workers.get_mut(&w) {
            worker.has.clear();
            worker.memory.on_disk.clear();
            worker.processing.clear();
            worker.nbytes = 0;
            worker.outbox.clear();
            worker.outbox.push((ToWorker::Reset, vec![]));
        }
    }

    /// `deaf_ms` of silence did not count (the scheduler was not listening): every worker's
    /// last sign of life moves that much later, to `now_ms` at most.
    pub fn credit_silence(&mut self, deaf_ms: u64, now_ms: u64) {
        for w in self.workers.values_mut() {
            w.last_seen_ms = w
                .last_seen_ms
                .saturating_add(deaf_ms)
                .min(now_ms)
                .max(w.last_seen_ms);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (WorkerId, &Worker)> {
        self.workers.iter().map(|(id, w)| (*id, w))
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Queues a message for worker `w` (nothing if it is gone).
    pub fn push(&mut self, w: WorkerId, msg: ToWorker, frames: Vec<Frame>) {
        if let Some(worker) = self.workers.get_mut(&w) {
            worker.outbox.push((msg, frames));
        }
    }

    /// Queues a release of `keys` on worker `w`, merged into a release queued just before.
    pub fn push_release(&mut self, w: WorkerId, mut keys: Vec<Key>) {
        if let Some(worker) = self.workers.get_mut(&w) {
            if let Some((ToWorker::Release(prev), _)) = worker.outbox.last_mut() {
                prev.append(&mut keys);
            } else {
                worker.outbox.push((ToWorker::Release(keys), vec![]));
            }
        }
    }

    /// Queues a task for worker `w`, merged into a `Compute` queued just before.
    pub fn push_compute(&mut self, w: WorkerId, ct: ComputeTask) {
        if let Some(worker) = self.workers.get_mut(&w) {
            match worker.outbox.last_mut() {
                Some((ToWorker::Compute(batch), _)) => batch.push(ct),
                _ => worker.outbox.push((ToWorker::Compute(vec![ct]), vec![])),
            }
        }
    }

    /// Every worker's queued messages, as commands.
    pub fn drain_outboxes(&mut self, into: &mut Vec<Command>) {
        for w in self.workers.values_mut() {
            for (msg, frames) in w.outbox.drain(..) {
                into.push(Command::ToWorker {
                    identity: w.identity.clone(),
                    msg,
                    frames,
                });
            }
        }
    }

    /// Worker `w` holds a copy of task `t` (of `nbytes`) now.
    pub fn holds(&mut self, w: WorkerId, t: TaskId, nbytes: u64) {
        if let Some(worker) = self.workers.get_mut(&w) {
            worker.has.insert(t);
            worker.nbytes += nbytes;
        }
    }

    /// Worker `w` no longer holds its copy of task `t` (of `nbytes`).
    pub fn dropped(&mut self, w: WorkerId, t: TaskId, nbytes: u64) {
        if let Some(worker) = self.workers.get_mut(&w) {
            worker.has.remove(&t);
            worker.memory.on_disk.remove(&t);
            worker.nbytes = worker.nbytes.saturating_sub(nbytes);
        }
    }

    /// Worker `w` reported its memory: its figures and pause are taken as said; of the keys
    /// it says moved, only those it holds (`has`) count. Returns the worker's pause before
    /// and after, or None if it is not registered.
    pub fn memory_reported(
        &mut self,
        w: WorkerId,
        report: &MemoryReport,
        to_disk: impl IntoIterator<Item = TaskId>,
        to_memory: impl IntoIterator<Item = TaskId>,
    ) -> Option<(bool, bool)> {
        let worker = self.workers.get_mut(&w)?;
        let before = worker.memory.paused;
        let m = &mut worker.memory;
        m.paused = report.paused;
        m.memory_bytes = report.memory_bytes;
        m.spilled_bytes = report.spilled_bytes;
        for t in to_disk {
            if worker.has.contains(&t) {
                m.on_disk.insert(t);
            }
        }
        for t in to_memory {
            m.on_disk.remove(&t);
        }
        Some((before, report.paused))
    }

    /// Task `t` is no longer assigned to worker `w`.
    pub fn unassign(&mut self, w: WorkerId, t: TaskId) {
        if let Some(worker) = self.workers.get_mut(&w) {
            worker.processing.remove(&t);
        }
    }

    /// Whether some worker is retiring.
    pub fn any_retiring(&self) -> bool {
        self.workers.values().any(|w| w.retiring)
    }

    /// The registry's own invariant: every worker is found by its connection, and only it.
    pub(super) fn check(&self) -> Result<(), InvariantViolation> {
        if self.by_identity.len() != self.workers.len() {
            return Err(InvariantViolation::new(
                "workers",
                format!(
                    "{} connections indexed for {} workers",
                    self.by_identity.len(),
                    self.workers.len()
                ),
            ));
        }
        for (id, w) in &self.workers {
            if self.by_identity.get(&w.identity) != Some(id) {
                return Err(InvariantViolation::new(
                    "workers",
                    format!("worker {} is not found by its connection", w.address),
                ));
            }
            if let Some(t) = w.memory.on_disk.iter().find(|t| !w.has.contains(t)) {
                return Err(InvariantViolation::new(
                    "workers",
                    format!(
                        "worker {} lists {t:?} on disk but does not hold it",
                        w.address
                    ),
                ));
            }
            if *id >= WorkerId(self.next_id) {
                return Err(InvariantViolation::new(
                    "workers",
                    format!("worker {} has an id not given yet", w.address),
                ));
            }
        }
        Ok(())
    }

    /// How many workers are registered.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn address(&self, id: WorkerId) -> WorkerAddress {
        self.workers
            .get(&id)
            .map(|w| w.address.clone())
            .unwrap_or_default()
    }
}

impl super::SchedulerCore {
    /// Worker `w` reported its memory. Keys name wire keys; one the scheduler does not know,
    /// or that it does not think `w` holds, is ignored (released meanwhile, or not to be
    /// believed). A worker that resumes may get tasks again at once.
    pub(super) fn memory_reported(&mut self, w: WorkerId, report: MemoryReport) {
        let to_disk: Vec<TaskId> = report
            .spilled
            .iter()
            .filter_map(|k| self.tasks.id(k))
            .collect();
        let to_memory: Vec<TaskId> = report
            .unspilled
            .iter()
            .filter_map(|k| self.tasks.id(k))
            .collect();
        let Some((was, is)) = self.workers.memory_reported(w, &report, to_disk, to_memory) else {
            return;
        };
        let address = self.workers.address(w);
        if is && !was {
            log::info!(
                "worker {address} paused ({} bytes in memory): no new task goes to it until \
                 it resumes",
                report.memory_bytes
            );
        } else if was && !is {
            log::info!(
                "worker {address} resumed ({} bytes in memory)",
                report.memory_bytes
            );
            self.needs_scheduling = true;
        }
    }
}

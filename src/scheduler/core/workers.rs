//! The worker registry: every connected worker, what it holds and what it is running.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::TaskId;
use crate::protocol::{FrameIdentity, ToWorker};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub u32);

#[derive(Debug)]
pub struct Worker {
    pub identity: FrameIdentity,
    pub address: String,
    pub name: String,
    pub nthreads: u32,
    pub memory_limit_bytes: u64,
    pub pid: u32,
    pub store: String,
    /// The token its nanny must know to speak for it (`None`: no nanny).
    pub nanny_token: Option<u64>,
    pub has: HashSet<TaskId>,
    /// Tasks assigned here (queued or running), with their assignment order: the worker runs
    /// them first come, first served, so the oldest `nthreads` are the ones running.
    pub processing: HashMap<TaskId, Assignment>,
    pub nbytes: u64,
    pub last_seen_ms: u64,
    /// Messages received from it so far (a ping is answered when this grows).
    pub messages_heard: u64,
    /// Messages not yet flushed, in order; consecutive Compute/Release messages are merged.
    pub outbox: Vec<(ToWorker, Vec<Vec<u8>>)>,
    /// Leaving on request: gets no new task, its results are being copied elsewhere.
    pub retiring: bool,
    pub retire_deadline_ms: u64,
}

/// When a task was given to its worker.
#[derive(Clone, Copy, Debug)]
pub struct Assignment {
    /// Global assignment order.
    pub seq: u64,
    pub at_ms: u64,
}

impl Worker {
    /// How many tasks the worker may have queued or running: its threads plus a little queue,
    /// so it never waits for the scheduler between two tasks.
    pub fn capacity(&self, queue_extra: u32) -> usize {
        (self.nthreads.max(1) + queue_extra) as usize
    }
}

#[derive(Default)]
pub struct WorkerRegistry {
    workers: HashMap<WorkerId, Worker>,
    by_identity: HashMap<FrameIdentity, WorkerId>,
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

    pub fn by_identity(&self, identity: &[u8]) -> Option<WorkerId> {
        self.by_identity.get(identity).copied()
    }

    pub fn by_address(&self, address: &str) -> Option<WorkerId> {
        self.workers
            .iter()
            .find(|(_, w)| w.address == address)
            .map(|(id, _)| *id)
    }

    pub fn get(&self, id: WorkerId) -> Option<&Worker> {
        self.workers.get(&id)
    }

    pub fn get_mut(&mut self, id: WorkerId) -> Option<&mut Worker> {
        self.workers.get_mut(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (WorkerId, &Worker)> {
        self.workers.iter().map(|(id, w)| (*id, w))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (WorkerId, &mut Worker)> {
        self.workers.iter_mut().map(|(id, w)| (*id, w))
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    pub fn address(&self, id: WorkerId) -> String {
        self.workers
            .get(&id)
            .map(|w| w.address.clone())
            .unwrap_or_default()
    }
}

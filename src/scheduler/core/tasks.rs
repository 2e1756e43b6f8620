//! The task table: every task the scheduler knows, interned to a compact integer id, with its
//! dependencies, dependents, state, holders and size.
//!
//! A task is its key *and* its definition: two graphs that give one key different definitions
//! make two tasks. Workers know a task by its wire key, `(key, token)`, where the token is a
//! hash of the key and the definition (whose references are wire keys themselves), so equal
//! definitions share one task and different ones never meet. Clients only ever see the key.

use rustc_hash::FxHashMap as HashMap;

use super::WorkerId;
use crate::graph::Key;
use crate::protocol::{RequestError, TaskError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u32);

/// Where a task is in its life. Waiting, Ready and Processing are the "active" states: an active
/// task counts once in the `waiters` of each of its dependencies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Known, no data anywhere, nobody needs it now.
    Released,
    /// Needed; some dependencies are not in memory yet.
    Waiting,
    /// Needed; every dependency is in memory; not yet given to a worker.
    Ready,
    /// Given to this worker (queued or running there).
    Processing(WorkerId),
    /// The result is held by one or more workers.
    Memory,
    /// Failed (itself or through a dependency); kept only while a computation reports it.
    Erred,
}

impl TaskState {
    pub fn is_active(self) -> bool {
        matches!(
            self,
            TaskState::Waiting | TaskState::Ready | TaskState::Processing(_)
        )
    }
}

/// Per-task bookkeeping. Kept small: a graph may have a million tasks.
#[derive(Debug)]
pub struct Task {
    /// The key as the client wrote it.
    name: Key,
    /// What workers call it: its wire key, unique to this definition (see the module comment).
    pub key: Key,
    /// The msgpack-encoded `Expr`; `None` for scattered data, which has no lineage.
    pub spec: Option<Box<[u8]>>,
    pub dependencies: Box<[TaskId]>,
    pub dependents: Vec<TaskId>,
    pub state: TaskState,
    /// Dependencies not in memory, while Waiting.
    pub waiting_on: u32,
    /// Active dependents: they still need this task's data.
    pub waiters: u32,
    /// Computations and gathers that want this task's value.
    pub wanted: u32,
    /// Held on purpose: how many names (`Names`) and published datasets hold this task.
    pub pins: u32,
    pub who_has: Vec<WorkerId>,
    pub nbytes: u64,
    /// Unexpected worker losses while this task was assigned to the lost worker.
    pub suspicious: u32,
    /// Copies to keep (from `replicate`); 0 means no policy.
    pub replicas: u32,
    pub error: Option<Box<RequestError>>,
}

impl Task {
    /// The key as the client wrote it.
    pub fn name(&self) -> &Key {
        &self.name
    }

    pub fn needed(&self) -> bool {
        self.wanted > 0 || self.waiters > 0 || self.pins > 0
    }
}

/// Tasks by id, and ids by key. Freed ids are reused so the table stays dense.
#[derive(Default)]
pub struct TaskTable {
    slots: Vec<Option<Task>>,
    free: Vec<u32>,
    index: HashMap<Key, TaskId>,
}

impl TaskTable {
    pub fn id(&self, key: &Key) -> Option<TaskId> {
        self.index.get(key).copied()
    }

    pub fn get(&self, id: TaskId) -> &Task {
        self.slots[id.0 as usize]
            .as_ref()
            .expect("task ids are only held while the task exists")
    }

    pub fn get_mut(&mut self, id: TaskId) -> &mut Task {
        self.slots[id.0 as usize]
            .as_mut()
            .expect("task ids are only held while the task exists")
    }

    pub fn exists(&self, id: TaskId) -> bool {
        matches!(self.slots.get(id.0 as usize), Some(Some(_)))
    }

    pub fn insert(&mut self, name: Key, key: Key, spec: Option<Box<[u8]>>) -> TaskId {
        debug_assert!(!self.index.contains_key(&key), "keys are interned once");
        debug_assert!(
            matches!(key, Key::Int(_)),
            "tasks are filed under wire keys"
        );
        let task = Task {
            name,
            key: key.clone(),
            spec,
            dependencies: Box::new([]),
            dependents: Vec::new(),
            state: TaskState::Released,
            waiting_on: 0,
            waiters: 0,
            wanted: 0,
            pins: 0,
            who_has: Vec::new(),
            nbytes: 0,
            suspicious: 0,
            replicas: 0,
            error: None,
        };
        let id = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(task);
                TaskId(i)
            }
            None => {
                self.slots.push(Some(task));
                TaskId(self.slots.len() as u32 - 1)
            }
        };
        self.index.insert(key, id);
        id
    }

    pub fn remove(&mut self, id: TaskId) -> Task {
        let task = self.slots[id.0 as usize]
            .take()
            .expect("removed tasks exist");
        self.index.remove(&task.key);
        self.free.push(id.0);
        task
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (TaskId, &Task)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.as_ref().map(|t| (TaskId(i as u32), t)))
    }
}

/// The wire key of a definition with this token.
pub fn wire_key(token: u64) -> Key {
    Key::Int(token as i64)
}

/// The error a task failure reports to every computation that needed it.
pub fn task_failure(key: &Key, error: TaskError) -> RequestError {
    RequestError::Task {
        key: key.clone(),
        error,
    }
}

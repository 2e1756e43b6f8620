//! The task table: every task the scheduler knows, interned to a compact integer id, with its
//! dependencies, dependents, state, holders and size.
//!
//! A task is its key *and* its definition: two graphs that give one key different definitions
//! make two tasks. Workers know a task by its wire key, `(key, token)`, where the token is a
//! hash of the key and the definition (whose references are wire keys themselves), so equal
//! definitions share one task and different ones never meet. Clients only ever see the key.

use rustc_hash::FxHashMap as HashMap;
use smallvec::SmallVec;

use super::violation::InvariantViolation;
use super::WorkerId;
use crate::graph::Key;
use crate::protocol::{RequestError, TaskError};

/// A task's id: a slot of the table and the generation of that slot. A slot is reused once its
/// task is forgotten, but never under the same generation, so an id held anywhere after its
/// task is gone never names another task (`exists` says no; `get` panics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    slot: u32,
    generation: u32,
}

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
    /// Inline for up to two holders: no allocation per task in memory.
    pub who_has: SmallVec<[WorkerId; 2]>,
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

/// One slot of the table: its current generation and its task, if any.
#[derive(Default)]
struct Slot {
    generation: u32,
    task: Option<Task>,
}

/// Tasks by id, and ids by key. Freed slots are reused so the table stays dense, each time
/// under a new generation: a stale id never finds another task.
#[derive(Default)]
pub struct TaskTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: HashMap<Key, TaskId>,
}

impl TaskTable {
    pub fn id(&self, key: &Key) -> Option<TaskId> {
        self.index.get(key).copied()
    }

    pub fn get(&self, id: TaskId) -> &Task {
        let slot = &self.slots[id.slot as usize];
        debug_assert_eq!(slot.generation, id.generation, "a stale task id");
        slot.task
            .as_ref()
            .filter(|_| slot.generation == id.generation)
            .expect("task ids are only used while the task exists (check `exists` otherwise)")
    }

    pub fn get_mut(&mut self, id: TaskId) -> &mut Task {
        let slot = &mut self.slots[id.slot as usize];
        debug_assert_eq!(slot.generation, id.generation, "a stale task id");
        slot.task
            .as_mut()
            .filter(|_| slot.generation == id.generation)
            .expect("task ids are only used while the task exists (check `exists` otherwise)")
    }

    /// Whether the task this id was given to still exists (false once it is forgotten, even
    /// if its slot holds another task now).
    pub fn exists(&self, id: TaskId) -> bool {
        self.slots
            .get(id.slot as usize)
            .is_some_and(|s| s.generation == id.generation && s.task.is_some())
    }

    /// Room for `n` more tasks, so a big graph grows the table once (freed slots are used
    /// first).
    pub fn reserve(&mut self, n: usize) {
        self.slots.reserve(n.saturating_sub(self.free.len()));
        self.index.reserve(n);
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
            who_has: SmallVec::new(),
            nbytes: 0,
            suspicious: 0,
            replicas: 0,
            error: None,
        };
        let id = match self.free.pop() {
            Some(i) => {
                let slot = &mut self.slots[i as usize];
                slot.task = Some(task);
                TaskId {
                    slot: i,
                    generation: slot.generation,
                }
            }
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    task: Some(task),
                });
                TaskId {
                    slot: self.slots.len() as u32 - 1,
                    generation: 0,
                }
            }
        };
        self.index.insert(key, id);
        id
    }

    /// Links a new task to its dependencies (each lists it as a dependent).
    pub fn set_dependencies(&mut self, t: TaskId, dependencies: Box<[TaskId]>) {
        for d in dependencies.iter() {
            self.get_mut(*d).dependents.push(t);
        }
        self.get_mut(t).dependencies = dependencies;
    }

    /// One more name or dataset holds `t`.
    pub fn pin(&mut self, t: TaskId) {
        self.get_mut(t).pins += 1;
    }

    /// One name or dataset less holds `t`; returns how many still do.
    pub fn unpin(&mut self, t: TaskId) -> u32 {
        let task = self.get_mut(t);
        task.pins -= 1;
        task.pins
    }

    /// One more computation wants `t`'s value.
    pub fn want(&mut self, t: TaskId) {
        self.get_mut(t).wanted += 1;
    }

    /// One computation less wants `t`'s value.
    pub fn unwant(&mut self, t: TaskId) {
        self.get_mut(t).wanted -= 1;
    }

    /// `t` was assigned to a worker that died unexpectedly.
    pub fn suspect(&mut self, t: TaskId) {
        self.get_mut(t).suspicious += 1;
    }

    /// Keep `replicas` copies of `t` from now on.
    pub fn set_replicas(&mut self, t: TaskId, replicas: u32) {
        self.get_mut(t).replicas = replicas;
    }

    /// The size of `t`'s value, as its holder reported it.
    pub fn set_nbytes(&mut self, t: TaskId, nbytes: u64) {
        self.get_mut(t).nbytes = nbytes;
    }

    /// A ready task is given to worker `w`.
    pub fn start_processing(&mut self, t: TaskId, w: WorkerId) {
        let task = self.get_mut(t);
        debug_assert_eq!(
            task.state,
            TaskState::Ready,
            "only ready tasks are assigned"
        );
        task.state = TaskState::Processing(w);
    }

    /// Forgets a task. Its slot is reused under the next generation, so `id` stays stale.
    pub fn remove(&mut self, id: TaskId) -> Task {
        let slot = &mut self.slots[id.slot as usize];
        debug_assert_eq!(slot.generation, id.generation, "removing a stale task id");
        let task = slot.task.take().expect("removed tasks exist");
        self.index.remove(&task.key);
        // A slot whose generations are used up is retired rather than reused.
        if let Some(next) = slot.generation.checked_add(1) {
            slot.generation = next;
            self.free.push(id.slot);
        }
        task
    }

    /// Forgets every task (a restart); ids given so far stay stale.
    pub fn clear(&mut self) {
        let ids: Vec<TaskId> = self.iter().map(|(id, _)| id).collect();
        for id in ids {
            self.remove(id);
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (TaskId, &Task)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            let id = TaskId {
                slot: i as u32,
                generation: s.generation,
            };
            s.task.as_ref().map(|t| (id, t))
        })
    }
}

impl TaskTable {
    /// The table's own invariants: the counters agree with the graph (an active task counts
    /// once in the waiters of each input; a waiting task waits on exactly the inputs not in
    /// memory; a ready task has all of them) and every active task is needed.
    pub(super) fn check(&self) -> Result<(), InvariantViolation> {
        for (id, t) in self.iter() {
            if self.id(&t.key) != Some(id) {
                return Err(InvariantViolation::new(
                    "tasks",
                    format!("task {:?} is not filed under its wire key", t.key),
                ));
            }
            if let Some(d) = t
                .dependencies
                .iter()
                .chain(&t.dependents)
                .find(|d| !self.exists(**d))
            {
                return Err(InvariantViolation::new(
                    "tasks",
                    format!("task {:?} refers to a forgotten task {d:?}", t.key),
                ));
            }
            let active_dependents = t
                .dependents
                .iter()
                .filter(|d| self.get(**d).state.is_active())
                .count() as u32;
            if active_dependents != t.waiters {
                return Err(InvariantViolation::new(
                    "tasks",
                    format!(
                        "task {:?}: waiters {} but {} active dependents",
                        t.key, t.waiters, active_dependents
                    ),
                ));
            }
            let not_in_memory = t
                .dependencies
                .iter()
                .filter(|d| self.get(**d).state != TaskState::Memory)
                .count() as u32;
            match t.state {
                TaskState::Waiting if not_in_memory != t.waiting_on || not_in_memory == 0 => {
                    return Err(InvariantViolation::new(
                        "tasks",
                        format!(
                            "task {:?} waiting on {} but {} dependencies are not in memory",
                            t.key, t.waiting_on, not_in_memory
                        ),
                    ));
                }
                TaskState::Ready if not_in_memory > 0 => {
                    return Err(InvariantViolation::new(
                        "tasks",
                        format!("task {:?} ready with missing inputs", t.key),
                    ));
                }
                _ => {}
            }
            if t.state.is_active() && !t.needed() {
                return Err(InvariantViolation::new(
                    "tasks",
                    format!("task {:?} is {:?} but nobody needs it", t.key, t.state),
                ));
            }
        }
        Ok(())
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

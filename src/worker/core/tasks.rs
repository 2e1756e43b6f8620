//! Part: the task table. The tasks this worker was given and has not finished, each waiting
//! for its inputs, ready (in the ready queue) or executing, and how many tasks the executor
//! holds. Only this file changes a task's phase; the others ask through its methods and get a
//! task back only once it has left the table.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

use super::InvariantViolation;
use crate::graph::Key;

#[derive(Debug, PartialEq)]
enum Phase {
    Fetching { missing: usize },
    Ready,
    Executing,
}

/// A task here. The table hands out no `&mut Task`: a task changes only through the
/// table's methods, and leaves it whole (`remove`, `executed`) to be reported or dropped.
#[derive(Debug)]
pub(super) struct Task {
    spec: Vec<u8>,
    /// `spec_hash` of the spec: stored with the result so a restarted scheduler can tell it
    /// is the value of the definition it knows.
    pub(super) origin: u64,
    pub(super) dependencies: Vec<Key>,
    pub(super) report_value: bool,
    phase: Phase,
    /// The inputs fetched for it from peers, with their sizes (reported when it finishes).
    pub(super) fetched: Vec<(Key, u64)>,
    /// Released by the scheduler while executing: drop the result.
    pub(super) released: bool,
}

/// What `start_next` hands to the executor.
pub(super) struct Start {
    pub(super) key: Key,
    pub(super) spec: Vec<u8>,
    pub(super) dependencies: Vec<Key>,
}

pub(super) struct TaskTable {
    tasks: HashMap<Key, Task>,
    ready: VecDeque<Key>,
    /// Tasks handed to the executor and not yet back (forgotten ones included: they still hold
    /// a thread until they end).
    executing: usize,
    /// The executor's threads: never more tasks than this are handed to it.
    nthreads: usize,
}

impl TaskTable {
    pub(super) fn new(nthreads: usize) -> TaskTable {
        TaskTable {
            tasks: HashMap::default(),
            ready: VecDeque::new(),
            executing: 0,
            nthreads: nthreads.max(1),
        }
    }

    pub(super) fn contains(&self, key: &Key) -> bool {
        self.tasks.contains_key(key)
    }

    pub(super) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// A task assigned again while still here (released, then wanted again): it keeps going,
    /// now wanted. False if it is not here.
    pub(super) fn assigned_again(&mut self, key: &Key, report_value: bool) -> bool {
        match self.tasks.get_mut(key) {
            Some(existing) => {
                existing.released = false;
                existing.report_value |= report_value;
                true
            }
            None => false,
        }
    }

    /// Takes a new task waiting for `missing` inputs (queued at once when none is missing).
    pub(super) fn accept(
        &mut self,
        key: Key,
        spec: Vec<u8>,
        origin: u64,
        dependencies: Vec<Key>,
        report_value: bool,
        missing: usize,
    ) {
        let phase = if missing == 0 {
            self.ready.push_back(key.clone());
            Phase::Ready
        } else {
            Phase::Fetching { missing }
        };
        self.tasks.insert(
            key,
            Task {
                spec,
                origin,
                dependencies,
                report_value,
                phase,
                fetched: Vec::new(),
                released: false,
            },
        );
    }

    /// An input of `task` arrived from a peer (`nbytes`): one fewer to wait for, queued when it
    /// was the last. False if the task is not here (nobody wants the value for it).
    pub(super) fn input_arrived(&mut self, task: &Key, input: &Key, nbytes: u64) -> bool {
        let Some(t) = self.tasks.get_mut(task) else {
            return false;
        };
        t.fetched.push((input.clone(), nbytes));
        if let Phase::Fetching { missing } = &mut t.phase {
            *missing -= 1;
            if *missing == 0 {
                t.phase = Phase::Ready;
                self.ready.push_back(task.clone());
            }
        }
        true
    }

    /// The next ready task to hand to the executor, if it has a free thread. The pool gets no
    /// more tasks than it has threads: a task queued in the pool would start before the
    /// report of the one before it leaves, and a crash would then blame (and lose) the
    /// finished task.
    pub(super) fn start_next(&mut self) -> Option<Start> {
        while self.executing < self.nthreads {
            let key = self.ready.pop_front()?;
            let Some(task) = self.tasks.get_mut(&key) else {
                continue;
            };
            if task.phase != Phase::Ready {
                continue;
            }
            task.phase = Phase::Executing;
            self.executing += 1;
            return Some(Start {
                key,
                spec: task.spec.clone(),
                dependencies: task.dependencies.clone(),
            });
        }
        None
    }

    /// The executor ended a task: its thread is free, and the task (unless forgotten while it
    /// ran) leaves the table.
    pub(super) fn executed(&mut self, key: &Key) -> Option<Task> {
        self.executing = self.executing.saturating_sub(1);
        self.tasks.remove(key)
    }

    /// Forgets a task (it will not run here, or not be reported).
    pub(super) fn remove(&mut self, key: &Key) -> Option<Task> {
        self.tasks.remove(key)
    }

    /// The scheduler released `key`: an executing task is marked so its result is dropped
    /// (running tasks cannot be stopped). True if it was executing; any other task is for
    /// the caller to forget.
    pub(super) fn release_executing(&mut self, key: &Key) -> bool {
        match self.tasks.get_mut(key) {
            Some(task) if task.phase == Phase::Executing => {
                task.released = true;
                true
            }
            _ => false,
        }
    }

    /// The cluster restarted: every task not executing is forgotten, executing ones are
    /// released (their results are dropped when they finish).
    pub(super) fn reset(&mut self) {
        for task in self.tasks.values_mut() {
            task.released = true;
        }
        self.tasks.retain(|_, t| t.phase == Phase::Executing);
        self.ready.clear();
    }

    /// Whether a task here has `input` among its dependencies.
    pub(super) fn needs(&self, input: &Key) -> bool {
        self.tasks.values().any(|t| t.dependencies.contains(input))
    }

    /// The tasks here that have `input` among their dependencies.
    pub(super) fn dependents_of(&self, input: &Key) -> Vec<Key> {
        self.tasks
            .iter()
            .filter(|(_, t)| t.dependencies.contains(input))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether `task` is waiting for `input` to be fetched.
    pub(super) fn waits_for(&self, task: &Key, input: &Key) -> bool {
        self.tasks.get(task).is_some_and(|t| {
            matches!(t.phase, Phase::Fetching { .. }) && t.dependencies.contains(input)
        })
    }

    /// The tasks waiting for inputs: each with how many it misses and its distinct inputs.
    pub(super) fn waiting(&self) -> impl Iterator<Item = (&Key, usize, Vec<&Key>)> {
        self.tasks
            .iter()
            .filter_map(|(key, task)| match task.phase {
                Phase::Fetching { missing } => {
                    let mut inputs: Vec<&Key> = Vec::new();
                    for d in &task.dependencies {
                        if !inputs.contains(&d) {
                            inputs.push(d);
                        }
                    }
                    Some((key, missing, inputs))
                }
                _ => None,
            })
    }

    /// The table's own invariants: every executing task was handed to the executor (which may
    /// also run tasks forgotten meanwhile) and never more than the pool takes; a ready task is
    /// queued. (What a waiting task misses is checked against the fetches, in `invariants.rs`.)
    pub(super) fn check(&self) -> Result<(), InvariantViolation> {
        let tasks_executing = self
            .tasks
            .values()
            .filter(|t| t.phase == Phase::Executing)
            .count();
        if tasks_executing > self.executing || self.executing > self.nthreads {
            return Err(InvariantViolation::Executing {
                tasks_executing,
                executing: self.executing,
                max: self.nthreads,
            });
        }
        for (key, task) in &self.tasks {
            if task.phase == Phase::Ready && !self.ready.contains(key) {
                return Err(InvariantViolation::ReadyNotQueued { task: key.clone() });
            }
        }
        Ok(())
    }

    /// Tests only: pretends the executor holds `n` tasks, to show the check catching it.
    #[cfg(test)]
    pub(super) fn corrupt_executing(&mut self, n: usize) {
        self.executing = n;
    }
}

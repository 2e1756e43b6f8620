//! The worker core's own consistency check: recounts what it tracks (tasks executing, tasks
//! waiting for inputs and the fetches they wait on, the fetches in flight, the ready queue)
//! and says what disagrees. The unit tests call it after every step.

use std::fmt;

use super::{Phase, WorkerCore};
use crate::graph::Key;

/// What `WorkerCore::check_invariants` found wrong: a bug in the worker core, never something a
/// peer or the scheduler can cause (so retrying never helps).
#[derive(Clone, Debug, PartialEq)]
pub enum InvariantViolation {
    /// More tasks are executing than the executor was handed, or the executor was handed more
    /// than its threads.
    Executing {
        tasks_executing: usize,
        executing: usize,
        max: usize,
    },
    /// A task waiting for inputs counts `missing` of them, but `counted` fetches list it.
    MissingInputs {
        task: Key,
        missing: usize,
        counted: usize,
    },
    /// A fetch lists a waiting task that is not waiting for that input.
    StrayWaiter { input: Key, task: Key },
    /// A fetch has no request in flight to any holder: its tasks would wait forever.
    FetchNotInFlight { input: Key },
    /// A request in flight asks for no key.
    EmptyRequest { request: u64 },
    /// A request in flight has an id not handed out yet.
    FutureRequest { request: u64, next: u64 },
    /// A task ready to run is not in the ready queue: it would never run.
    ReadyNotQueued { task: Key },
}

impl InvariantViolation {
    /// Whether doing the same again can help: never, it is a bug.
    pub fn retry_may_help(&self) -> bool {
        false
    }
}

impl fmt::Display for InvariantViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvariantViolation::Executing {
                tasks_executing,
                executing,
                max,
            } => write!(
                f,
                "{tasks_executing} tasks executing, {executing} handed to the executor, at most \
                 {max} allowed"
            ),
            InvariantViolation::MissingInputs {
                task,
                missing,
                counted,
            } => write!(
                f,
                "task {task:?} waits for {missing} inputs, {counted} fetches list it"
            ),
            InvariantViolation::StrayWaiter { input, task } => write!(
                f,
                "the fetch of {input:?} lists {task:?}, which does not wait for it"
            ),
            InvariantViolation::FetchNotInFlight { input } => {
                write!(f, "the fetch of {input:?} has no request in flight")
            }
            InvariantViolation::EmptyRequest { request } => {
                write!(f, "request {request} in flight asks for nothing")
            }
            InvariantViolation::FutureRequest { request, next } => write!(
                f,
                "request {request} in flight, but the next id to hand out is {next}"
            ),
            InvariantViolation::ReadyNotQueued { task } => {
                write!(f, "task {task:?} is ready but not queued")
            }
        }
    }
}

impl std::error::Error for InvariantViolation {}

impl WorkerCore {
    /// Recounts what the core tracks and returns the first disagreement. Cheap enough for
    /// tests to call after every step; the IO layer does not call it.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        // Executing: every task in that phase was handed to the executor (which may also run
        // tasks forgotten meanwhile), and never more than the pool takes.
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
        // Waiting tasks: their count of missing inputs is the number of fetches listing them.
        for (key, task) in &self.tasks {
            match task.phase {
                Phase::Fetching { missing } => {
                    let mut inputs: Vec<&Key> = Vec::new();
                    for d in &task.dependencies {
                        if !inputs.contains(&d) {
                            inputs.push(d);
                        }
                    }
                    let counted = inputs
                        .iter()
                        .filter(|d| {
                            self.fetches
                                .get(**d)
                                .is_some_and(|f| f.waiting.contains(key))
                        })
                        .count();
                    if missing == 0 || missing != counted {
                        return Err(InvariantViolation::MissingInputs {
                            task: key.clone(),
                            missing,
                            counted,
                        });
                    }
                }
                Phase::Ready if !self.ready.contains(key) => {
                    return Err(InvariantViolation::ReadyNotQueued { task: key.clone() });
                }
                _ => {}
            }
        }
        // Fetches: each waiter waits for that input, and a request for it is in flight.
        for (input, fetch) in &self.fetches {
            for waiter in &fetch.waiting {
                let waits = self.tasks.get(waiter).is_some_and(|t| {
                    matches!(t.phase, Phase::Fetching { .. }) && t.dependencies.contains(input)
                });
                if !waits {
                    return Err(InvariantViolation::StrayWaiter {
                        input: input.clone(),
                        task: waiter.clone(),
                    });
                }
            }
            if !self.peer_fetches.values().any(|p| p.keys.contains(input)) {
                return Err(InvariantViolation::FetchNotInFlight {
                    input: input.clone(),
                });
            }
        }
        // Requests in flight: each asks for something, under an id already handed out.
        for (request, fetch) in &self.peer_fetches {
            if fetch.keys.is_empty() {
                return Err(InvariantViolation::EmptyRequest { request: *request });
            }
            if *request >= self.next_request {
                return Err(InvariantViolation::FutureRequest {
                    request: *request,
                    next: self.next_request,
                });
            }
        }
        Ok(())
    }
}

//! The worker core's consistency check: each part's own (`check` on the task table: tasks
//! executing, the ready queue; on fetches: requests in flight; on held data: the total of the
//! sizes) and those that tie parts together (tasks waiting for inputs and the fetches they
//! wait on), saying what disagrees. The link, the memory limit and the outbox have no check of
//! their own: each is a plain record (timestamps, a flag, a queue) that any sequence of their
//! methods leaves consistent.
//! The unit tests and the simulator call it after every step.

use std::fmt;

use super::WorkerCore;
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
    /// Held data's running total (`total`) is not the sum of the sizes it holds (`counted`):
    /// the memory limit would be measured wrong.
    HeldBytes { counted: u64, total: u64 },
    /// Held data's running total in memory (`total`) is not the sum of the sizes of the
    /// values it holds in memory (`counted`).
    MemoryBytes { counted: u64, total: u64 },
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
            InvariantViolation::HeldBytes { counted, total } => write!(
                f,
                "held data totals {total} bytes, but its values add up to {counted}"
            ),
            InvariantViolation::MemoryBytes { counted, total } => write!(
                f,
                "held data counts {total} bytes in memory, but its values in memory add up \
                 to {counted}"
            ),
        }
    }
}

impl std::error::Error for InvariantViolation {}

/// Each part's own check, then those between parts: a task waiting for inputs is listed by
/// as many fetches as it misses inputs, and a fetch lists only tasks waiting for that input.
pub(super) fn check(core: &WorkerCore) -> Result<(), InvariantViolation> {
    core.tasks.check()?;
    core.fetches.check()?;
    core.held.check()?;
    for (task, missing, inputs) in core.tasks.waiting() {
        let counted = inputs
            .iter()
            .filter(|input| core.fetches.lists(input, task))
            .count();
        if missing == 0 || missing != counted {
            return Err(InvariantViolation::MissingInputs {
                task: task.clone(),
                missing,
                counted,
            });
        }
    }
    for (input, waiting) in core.fetches.waiters() {
        for task in waiting {
            if !core.tasks.waits_for(task, input) {
                return Err(InvariantViolation::StrayWaiter {
                    input: input.clone(),
                    task: task.clone(),
                });
            }
        }
    }
    Ok(())
}

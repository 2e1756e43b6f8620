//! What the scheduler remembers of what happened, as clients read it: recent cluster events
//! with their typed reasons (`ClusterEvent`, `Client::events`, `zask events`) and the story of
//! one key (`Story`, `Client::story`, `zask story KEY`). Times are milliseconds on the
//! scheduler's clock (since it started): the core is pure, so it only ever has the time the
//! IO layer passed with each event.
//!
//! The `Display` impls are the one place these read as text: the scheduler's log lines about
//! lost work, `zask events` and `zask story` all use them.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{TaskErrorKind, WorkerAddress, WorkerName};
use crate::graph::Key;

/// Something that happened on the cluster, and when (ms since the scheduler started).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterEvent {
    pub at_ms: u64,
    pub what: EventKind,
}

/// What happened, with its reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    WorkerJoined {
        worker: WorkerAddress,
        name: WorkerName,
        nthreads: u32,
    },
    /// A worker left on purpose (goodbye, closed after retiring, ended on request by its
    /// nanny, registered again): no task is blamed. What it took along is still counted.
    WorkerLeft {
        worker: WorkerAddress,
        why: Departure,
        cost: LossCost,
    },
    /// A worker was lost (died, silent, unanswered ping), with what that cost.
    WorkerLost {
        worker: WorkerAddress,
        why: Departure,
        cost: LossCost,
    },
    /// A task running on `worker` was taken back to run elsewhere.
    TaskRescheduled {
        key: Key,
        worker: WorkerAddress,
        why: Reschedule,
    },
    /// A task took down more workers than `allowed_failures`: it failed (`KilledWorker`).
    TaskMarkedBad {
        key: Key,
        /// The workers that died while running it, oldest first.
        killed: Vec<WorkerAddress>,
    },
    /// A retiring worker was closed: the still-needed results only it held were copied first.
    WorkerRetired {
        worker: WorkerAddress,
        /// Results copied elsewhere before it was closed, and their bytes.
        moved: u64,
        moved_bytes: u64,
        /// Still-needed results that were not copied in time (`retire_timeout_ms`).
        left_behind: u64,
    },
    /// A task failed: on `worker` (its function's error), or on none (no worker may run it).
    TaskErred {
        key: Key,
        worker: Option<WorkerAddress>,
        kind: TaskErrorKind,
    },
}

/// Why a worker is gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Departure {
    /// It said goodbye.
    Goodbye,
    /// It retired (SIGTERM) and was closed once its results were safe (or the time was up).
    Retired,
    /// The same connection registered again: its old registration ends.
    Reregistered,
    /// Its nanny reported the process dead; `expected` when the nanny ended it on request.
    Died { reason: String, expected: bool },
    /// No message from it for longer than the heartbeat timeout.
    Silent { timeout_ms: u64 },
    /// It did not answer the ping sent when a worker connection dropped.
    NoPingAnswer,
    /// It did not answer the ping sent when a new worker claimed its name or address.
    Superseded,
}

impl Departure {
    /// Whether the loss was not asked for: the tasks it was running are blamed.
    pub fn unexpected(&self) -> bool {
        match self {
            Departure::Goodbye | Departure::Retired | Departure::Reregistered => false,
            Departure::Died { expected, .. } => !expected,
            Departure::Silent { .. } | Departure::NoPingAnswer | Departure::Superseded => true,
        }
    }
}

/// What losing a worker cost.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossCost {
    /// Results only it held (gone with it), and their bytes.
    pub results_lost: u64,
    pub results_lost_bytes: u64,
    /// Of those, the ones still needed (by a computation, a waiting task or a name).
    pub still_needed: u64,
    /// Tasks that must run again: the lost results still needed and whatever of their
    /// lineage was released meanwhile.
    pub recomputing: u64,
    /// Still-needed scattered values among the lost results: they have no lineage, so their
    /// requests fail (`RequestError::DataLost`).
    pub scattered_lost: u64,
    /// Tasks it was running (rerun elsewhere) and tasks queued there (given to others).
    pub running_rerun: u64,
    pub queued_reassigned: u64,
}

/// Why a task was taken back from the worker it was given to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reschedule {
    /// The worker was lost (or left).
    WorkerGone,
    /// The worker could not fetch one of the task's inputs from any holder.
    InputMissing,
    /// The last copy of one of its inputs was lost: it waits for it to be recomputed.
    InputLost,
}

/// The recorded transitions of one key (`Client::story`), oldest first. Empty when the
/// scheduler has none: never submitted, or forgotten (it keeps the stories of its most recent
/// keys only, and a bounded number of steps per key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Story {
    pub key: Key,
    pub steps: Vec<StoryStep>,
    /// Older steps of this key that were forgotten (the bound on steps per key).
    pub forgotten: u64,
    /// How many definitions of the key the steps speak of: a key redefined by another graph
    /// is another task (`StoryStep::definition` tells them apart).
    pub definitions: u32,
}

/// One transition of a key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoryStep {
    /// When (ms since the scheduler started).
    pub at_ms: u64,
    /// Which definition of the key (0 for the first seen).
    pub definition: u32,
    pub what: StoryEvent,
}

/// A transition of a key, with its cause. Workers are named by their address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StoryEvent {
    /// A graph defining it was submitted (or persisted) by this client.
    Submitted { client: String },
    /// A client scattered a value under it.
    Scattered { client: String },
    /// Needed; waiting on this many inputs.
    Waiting { inputs: u32 },
    /// Every input in memory: waiting for a worker.
    Ready,
    /// Given to a worker.
    Assigned { worker: WorkerAddress },
    /// Finished on the worker it was given to, `took_ms` after being given to it, having
    /// fetched `fetched_inputs` inputs from other workers.
    Finished {
        worker: WorkerAddress,
        took_ms: u64,
        fetched_inputs: u32,
    },
    /// Its value was found on a worker without being computed there (scattered, adopted
    /// after a scheduler restart).
    Found { worker: WorkerAddress },
    /// A worker fetched a copy of its value (to run a dependent), or a replica was made.
    CopiedTo { worker: WorkerAddress },
    /// Taken back from the worker it was given to.
    Rescheduled {
        worker: WorkerAddress,
        why: Reschedule,
    },
    /// The last copy of its value was lost with this worker.
    ResultLost { worker: WorkerAddress },
    /// Its function failed on this worker.
    Erred {
        worker: WorkerAddress,
        kind: TaskErrorKind,
    },
    /// It failed without running: an input failed, no worker may run it, or its scattered
    /// value was lost.
    Failed,
    /// It took down too many workers (`KilledWorker`).
    MarkedBad { workers_killed: u32 },
    /// Nobody needs it any more: its value (if any) is dropped.
    Released,
    /// The scheduler forgot the task (nothing refers to it).
    Forgotten,
    /// The cluster was restarted: every task was forgotten.
    Restarted,
}

/// Bytes for a reader: "512 B", "12.0 kB", "3.4 MB", "1.2 GB".
pub fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl fmt::Display for Departure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Departure::Goodbye => write!(f, "said goodbye"),
            Departure::Retired => write!(f, "retired"),
            Departure::Reregistered => write!(f, "registered again"),
            Departure::Died {
                reason,
                expected: true,
            } => write!(f, "ended on request by its nanny: {reason}"),
            Departure::Died { reason, .. } => write!(f, "died, says its nanny: {reason}"),
            Departure::Silent { timeout_ms } => write!(f, "silent for more than {timeout_ms} ms"),
            Departure::NoPingAnswer => write!(f, "did not answer a ping"),
            Departure::Superseded => write!(
                f,
                "did not answer a ping when a new worker claimed its name or address"
            ),
        }
    }
}

impl fmt::Display for LossCost {
    /// "3 results lost (1.2 MB), 2 still needed, recomputing 2 tasks (1 running there
    /// rerun, 4 queued there reassigned)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} lost ({}), {} still needed, recomputing {} ({} running there rerun, {} queued there reassigned)",
            plural(self.results_lost, "result", "results"),
            bytes_text(self.results_lost_bytes),
            self.still_needed,
            plural(self.recomputing, "task", "tasks"),
            self.running_rerun,
            self.queued_reassigned,
        )?;
        if self.scattered_lost > 0 {
            write!(
                f,
                "; {} with no lineage lost for good",
                plural(self.scattered_lost, "scattered value", "scattered values")
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Reschedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reschedule::WorkerGone => "the worker is gone",
            Reschedule::InputMissing => "the worker could not fetch an input",
            Reschedule::InputLost => "an input was lost",
        })
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventKind::WorkerJoined {
                worker,
                name,
                nthreads,
            } => write!(
                f,
                "worker {worker} joined (name {name}, {})",
                plural(u64::from(*nthreads), "thread", "threads")
            ),
            EventKind::WorkerLeft { worker, why, cost } => {
                write!(f, "worker {worker} left ({why}): {cost}")
            }
            EventKind::WorkerLost { worker, why, cost } => {
                write!(f, "worker {worker} lost ({why}): {cost}")
            }
            EventKind::TaskRescheduled { key, worker, why } => {
                write!(f, "task {key:?} taken back from {worker} ({why})")
            }
            EventKind::TaskMarkedBad { key, killed } => write!(
                f,
                "task {key:?} marked bad: {} died while running it ({}); it fails with KilledWorker",
                plural(killed.len() as u64, "worker", "workers"),
                killed
                    .iter()
                    .map(WorkerAddress::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            EventKind::WorkerRetired {
                worker,
                moved,
                moved_bytes,
                left_behind,
            } => {
                write!(
                    f,
                    "worker {worker} retired: moved {} ({})",
                    plural(*moved, "result", "results"),
                    bytes_text(*moved_bytes)
                )?;
                if *left_behind > 0 {
                    write!(f, ", {left_behind} not moved in time")?;
                }
                Ok(())
            }
            EventKind::TaskErred { key, worker, kind } => match worker {
                Some(w) => write!(f, "task {key:?} erred on {w} ({kind:?})"),
                None => write!(f, "task {key:?} failed ({kind:?})"),
            },
        }
    }
}

impl fmt::Display for ClusterEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", ms_text(self.at_ms), self.what)
    }
}

/// A time on the scheduler's clock: "12.345 s".
fn ms_text(ms: u64) -> String {
    format!("{}.{:03} s", ms / 1000, ms % 1000)
}

impl Story {
    /// A story with no steps.
    pub fn empty(key: Key) -> Story {
        Story {
            key,
            steps: Vec::new(),
            forgotten: 0,
            definitions: 0,
        }
    }

    /// The transitions as one line: "submitted by client c → waiting on 2 inputs → ready →
    /// assigned tcp://a → tcp://a lost, rescheduled → ready → reassigned tcp://b → done on
    /// tcp://b (12 ms)".
    pub fn summary(&self) -> String {
        let mut assigned_before = false;
        let mut parts = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            let mut text = step.what.text(assigned_before);
            if let StoryEvent::Assigned { .. } = step.what {
                assigned_before = true;
            }
            if self.definitions > 1 {
                text = format!("[definition {}] {text}", step.definition + 1);
            }
            parts.push(text);
        }
        parts.join(" → ")
    }
}

impl StoryEvent {
    /// The step as words; `reassigned` when it was assigned before.
    fn text(&self, assigned_before: bool) -> String {
        match self {
            StoryEvent::Submitted { client } => format!("submitted by client {client}"),
            StoryEvent::Scattered { client } => format!("scattered by client {client}"),
            StoryEvent::Waiting { inputs } => format!(
                "waiting on {}",
                plural(u64::from(*inputs), "input", "inputs")
            ),
            StoryEvent::Ready => "ready".into(),
            StoryEvent::Assigned { worker } if assigned_before => format!("reassigned {worker}"),
            StoryEvent::Assigned { worker } => format!("assigned {worker}"),
            StoryEvent::Finished {
                worker,
                took_ms,
                fetched_inputs: 0,
            } => format!("done on {worker} ({took_ms} ms)"),
            StoryEvent::Finished {
                worker,
                took_ms,
                fetched_inputs,
            } => format!(
                "done on {worker} ({took_ms} ms, fetched {} from peers)",
                plural(u64::from(*fetched_inputs), "input", "inputs")
            ),
            StoryEvent::Found { worker } => format!("found on {worker}"),
            StoryEvent::CopiedTo { worker } => format!("copied to {worker}"),
            StoryEvent::Rescheduled {
                worker,
                why: Reschedule::WorkerGone,
            } => format!("{worker} lost: rescheduled"),
            StoryEvent::Rescheduled { worker, why } => {
                format!("taken back from {worker}: rescheduled ({why})")
            }
            StoryEvent::ResultLost { worker } => format!("result lost with {worker}"),
            StoryEvent::Erred { worker, kind } => format!("erred on {worker} ({kind:?})"),
            StoryEvent::Failed => "failed".into(),
            StoryEvent::MarkedBad { workers_killed } => format!(
                "marked bad: killed {}",
                plural(u64::from(*workers_killed), "worker", "workers")
            ),
            StoryEvent::Released => "released".into(),
            StoryEvent::Forgotten => "forgotten".into(),
            StoryEvent::Restarted => "cluster restarted".into(),
        }
    }
}

impl fmt::Display for Story {
    /// The summary line, then one line per step with its time.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:?}: {}", self.key, self.summary())?;
        if self.forgotten > 0 {
            writeln!(
                f,
                "  ({} earlier forgotten)",
                plural(self.forgotten, "step", "steps")
            )?;
        }
        let mut assigned_before = false;
        for step in &self.steps {
            let text = step.what.text(assigned_before);
            if let StoryEvent::Assigned { .. } = step.what {
                assigned_before = true;
            }
            if self.definitions > 1 {
                writeln!(
                    f,
                    "  {:>12}  [definition {}] {text}",
                    ms_text(step.at_ms),
                    step.definition + 1
                )?;
            } else {
                writeln!(f, "  {:>12}  {text}", ms_text(step.at_ms))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_reads_as_its_cost() {
        let event = EventKind::WorkerLost {
            worker: WorkerAddress::from("tcp://w1"),
            why: Departure::NoPingAnswer,
            cost: LossCost {
                results_lost: 3,
                results_lost_bytes: 12_000_000,
                still_needed: 2,
                recomputing: 2,
                scattered_lost: 0,
                running_rerun: 1,
                queued_reassigned: 0,
            },
        };
        assert_eq!(
            event.to_string(),
            "worker tcp://w1 lost (did not answer a ping): 3 results lost (12.0 MB), 2 still \
             needed, recomputing 2 tasks (1 running there rerun, 0 queued there reassigned)"
        );
    }

    #[test]
    fn a_story_reads_as_one_line_with_reassignments() {
        let w1 = WorkerAddress::from("w1");
        let w2 = WorkerAddress::from("w2");
        let step = |at_ms, what| StoryStep {
            at_ms,
            definition: 0,
            what,
        };
        let story = Story {
            key: Key::from("y"),
            steps: vec![
                step(1, StoryEvent::Submitted { client: "c".into() }),
                step(1, StoryEvent::Waiting { inputs: 2 }),
                step(2, StoryEvent::Ready),
                step(2, StoryEvent::Assigned { worker: w1.clone() }),
                step(
                    3,
                    StoryEvent::Rescheduled {
                        worker: w1,
                        why: Reschedule::WorkerGone,
                    },
                ),
                step(3, StoryEvent::Ready),
                step(4, StoryEvent::Assigned { worker: w2.clone() }),
                step(
                    16,
                    StoryEvent::Finished {
                        worker: w2,
                        took_ms: 12,
                        fetched_inputs: 0,
                    },
                ),
            ],
            forgotten: 0,
            definitions: 1,
        };
        assert_eq!(
            story.summary(),
            "submitted by client c → waiting on 2 inputs → ready → assigned w1 → w1 lost: \
             rescheduled → ready → reassigned w2 → done on w2 (12 ms)"
        );
        assert!(story.to_string().contains("0.016 s  done on w2 (12 ms)"));
    }

    #[test]
    fn sizes_read_in_decimal_units() {
        assert_eq!(bytes_text(0), "0 B");
        assert_eq!(bytes_text(999), "999 B");
        assert_eq!(bytes_text(12_000), "12.0 kB");
        assert_eq!(bytes_text(5_400_000), "5.4 MB");
    }
}

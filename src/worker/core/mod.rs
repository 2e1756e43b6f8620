//! The worker's logic as a pure state machine: messages from the scheduler and peers, and
//! completions from the executor, in; instructions (execute, fetch, store, send) out. No socket,
//! thread, channel, disk or clock: the runner does the effects and passes `now` in.
//!
//! The core is a composition of parts, each a type in its own file owning its table (private
//! fields, a few methods): the task table (`tasks.rs`), held data (`held.rs`), fetches
//! (`fetch.rs`), the link to the scheduler (`link.rs`), the memory limit (`memory.rs`) and
//! the outbox (`outbox.rs`).
//! `WorkerCore` (this file: the events, commands and config, and the routing of the
//! scheduler's messages) holds the parts; a happening that concerns several of them is
//! announced to each (`lifecycle.rs`: a task's life, release, reset; `inputs.rs`: values
//! arriving, fetches timing out, peers lost), and no part edits another's table.
//! `invariants.rs`: each part's own check and the checks between parts.

use std::fmt;

use serde::{Deserialize, Serialize};

use log::warn;

use crate::graph::Key;
use crate::protocol::codec::SCATTERED;
use crate::protocol::{
    ConnectionId, FinishedTask, Frame, FromWorker, PeerReply, PeerRequest, RejectReason, TaskError,
    ToWorker, WorkerAddress, WorkerRegistration,
};

/// Why the worker stops on its own. A nanny decides from this (told through a channel of its
/// own, never from an exit code a task could also choose) whether starting the worker again
/// can help.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ShutdownReason {
    /// The scheduler sent `Close`: the worker's retirement is complete.
    Closed,
    /// The scheduler sent `Dismiss`: an operator retired this worker (`retire_workers`) or
    /// shut the cluster down. Its nanny stops too (exit code 0) instead of starting a new one.
    Dismissed,
    /// The scheduler refused the registration; the same worker would be refused again.
    Rejected(RejectReason),
    /// No word from the scheduler for longer than the death timeout.
    SchedulerGone {
        silent_ms: u64,
        death_timeout_ms: u64,
    },
}

impl ShutdownReason {
    /// The exit code of a `zask-worker` that stopped for this reason: 0 closed, 3 scheduler
    /// gone, 4 rejected (1 is any other failure). For scripts; no nanny looks at it.
    pub fn exit_code(&self) -> i32 {
        match self {
            ShutdownReason::Closed | ShutdownReason::Dismissed => 0,
            ShutdownReason::SchedulerGone { .. } => 3,
            ShutdownReason::Rejected(_) => 4,
        }
    }
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShutdownReason::Closed => write!(f, "closed by the scheduler"),
            ShutdownReason::Dismissed => write!(f, "dismissed for good by the scheduler"),
            ShutdownReason::Rejected(reason) => {
                write!(f, "the scheduler rejected this worker: {reason}")
            }
            ShutdownReason::SchedulerGone {
                silent_ms,
                death_timeout_ms,
            } => write!(
                f,
                "the scheduler is gone: no word from it for {silent_ms} ms \
                 (death timeout {death_timeout_ms} ms)"
            ),
        }
    }
}

/// Settings of the worker's logic.
#[derive(Clone, Debug)]
pub struct WorkerCoreConfig {
    /// What the worker tells the scheduler when it registers (keys are filled in each time).
    /// The worker server builds it from its `WorkerConfig` and its bound peer address. Its
    /// `memory_limit_bytes` is also the limit the core enforces (`memory.rs`; 0: none).
    pub registration: WorkerRegistration,
    /// How often to tell the scheduler we are alive. The worker server passes
    /// `WorkerConfig::heartbeat_interval_ms` (default 500 ms).
    pub heartbeat_interval_ms: u64,
    /// A peer that has not answered a fetch within this long is given up on (the next holder is
    /// tried). ZeroMQ queues messages to a dead peer silently, so only a deadline notices.
    /// The worker server passes `WorkerConfig::fetch_timeout_ms` (default 5 s).
    pub fetch_timeout_ms: u64,
    /// With no word from the scheduler for this long, the worker stops (it keeps trying to
    /// reach it until then, and registers again when it answers). The worker server passes
    /// `WorkerConfig::death_timeout_ms` (default 60 s).
    pub death_timeout_ms: u64,
    /// The largest message part this worker's sockets accept (`--max-message-bytes`). A result
    /// bigger than this, or than the scheduler's limit (`Registered`), fails its task: it
    /// could never travel to the scheduler, to a client or to a peer. The worker server passes
    /// `WorkerConfig::max_message_bytes` (default `net::DEFAULT_MAX_MESSAGE_BYTES`; "no limit"
    /// is `u64::MAX`).
    pub max_message_bytes: u64,
}

/// `keys` without repeats, in first-seen order: a request listing a key many times is
/// answered with it once.
fn distinct(keys: Vec<Key>) -> Vec<Key> {
    let mut seen = rustc_hash::FxHashSet::default();
    keys.into_iter()
        .filter(|k| seen.insert(k.clone()))
        .collect()
}

#[derive(Debug)]
pub enum WorkerEvent {
    FromScheduler {
        msg: ToWorker,
        frames: Vec<Frame>,
    },
    FromPeer {
        peer: ConnectionId,
        msg: PeerRequest,
    },
    PeerAnswered {
        address: WorkerAddress,
        msg: PeerReply,
        frames: Vec<Frame>,
    },
    /// The executor ran a task; on success the runner already stored the result of `nbytes`.
    Executed {
        key: Key,
        result: Result<u64, TaskError>,
    },
    /// A `Store` command failed: the value is not in the store, whatever the core believed.
    StoreFailed {
        key: Key,
        error: String,
    },
    /// A `Spill` command failed for `keys` (the first that failed and those after it): they
    /// are still in memory. `retry_may_help` is the store error's.
    SpillFailed {
        keys: Vec<Key>,
        error: String,
        retry_may_help: bool,
    },
}

/// Effects for the runner to carry out, in order.
#[derive(Debug, PartialEq)]
pub enum WorkerCommand {
    ToScheduler {
        msg: FromWorker,
        frames: Vec<Frame>,
    },
    /// Send finished-task reports, attaching from the store the values of those with `has_value`.
    ReportFinished(Vec<FinishedTask>),
    /// Answer the scheduler's `GetData` from the store.
    SendDataToScheduler {
        request: u64,
        keys: Vec<Key>,
    },
    FetchFromPeer {
        address: WorkerAddress,
        request: u64,
        keys: Vec<Key>,
    },
    /// Answer a peer's `GetData` from the store.
    SendDataToPeer {
        peer: ConnectionId,
        request: u64,
        keys: Vec<Key>,
    },
    Store {
        key: Key,
        frame: Frame,
    },
    Delete(Vec<Key>),
    /// Move these values from memory to disk, in order (least recently used first); a
    /// failure is fed back as `SpillFailed`.
    Spill(Vec<Key>),
    /// Load the dependencies from the store, run the task on the pool, store the result and
    /// feed `Executed` back.
    Execute {
        key: Key,
        spec: Vec<u8>,
        dependencies: Vec<Key>,
    },
    /// Stop the worker (closed or rejected by the scheduler, or the scheduler is gone).
    Shutdown {
        reason: ShutdownReason,
    },
    /// Answer the scheduler's `GetLogs` with this process's recent log lines (the runner
    /// reads them: the core keeps none).
    SendLogs {
        request: u64,
    },
}

/// The worker's state machine: the config and the parts, each owning its table; the methods
/// here and in `lifecycle.rs` and `inputs.rs` route each event to the parts it concerns.
pub struct WorkerCore {
    /// Only the registration is read from it after `new`: the parts keep their own settings.
    config: WorkerCoreConfig,
    /// The latest `now_ms` passed in.
    now_ms: u64,
    tasks: TaskTable,
    held: HeldData,
    fetches: Fetches,
    link: SchedulerLink,
    memory: MemoryLimit,
    outbox: Outbox,
}

impl WorkerCore {
    pub fn new(config: WorkerCoreConfig) -> WorkerCore {
        WorkerCore {
            now_ms: 0,
            tasks: TaskTable::new(config.registration.nthreads as usize),
            held: HeldData::default(),
            fetches: Fetches::new(config.registration.address.clone(), config.fetch_timeout_ms),
            link: SchedulerLink::new(
                config.heartbeat_interval_ms,
                config.death_timeout_ms,
                config.max_message_bytes,
            ),
            memory: MemoryLimit::new(config.registration.memory_limit_bytes),
            outbox: Outbox::default(),
            config,
        }
    }

    /// Where the store puts values (the runtime says, from its store; default `Memory`): a
    /// store that can spill is spilled past the target fraction of the memory limit; values
    /// in a store on disk do not count against it.
    pub fn set_storage(&mut self, storage: Storage) {
        self.memory.set_storage(storage);
    }

    /// The largest result this worker accepts now (see `WorkerCoreConfig::max_message_bytes`).
    pub fn result_bytes_max(&self) -> u64 {
        self.link.result_bytes_max()
    }

    /// The registration message, with the keys the store holds now.
    pub fn register(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        let mut reg = self.config.registration.clone();
        reg.keys = self.held.listing();
        self.outbox.send(FromWorker::Register(reg));
        self.link.registering(now_ms);
        // A new registration knows nothing of what is on disk: the next report says it all.
        self.memory.report_all_again(self.held.on_disk());
    }

    pub fn handle(&mut self, now_ms: u64, event: WorkerEvent) {
        self.now_ms = self.now_ms.max(now_ms);
        match event {
            WorkerEvent::FromScheduler { msg, frames } => self.on_scheduler_message(msg, frames),
            WorkerEvent::FromPeer { peer, msg } => match msg {
                PeerRequest::GetData { request, keys } => {
                    let keys = self.used(distinct(keys));
                    self.outbox.push(WorkerCommand::SendDataToPeer {
                        peer,
                        request,
                        keys,
                    });
                }
            },
            WorkerEvent::PeerAnswered {
                address,
                msg,
                frames,
            } => self.peer_answered(address, msg, frames),
            WorkerEvent::Executed { key, result } => self.executed(key, result),
            WorkerEvent::StoreFailed { key, error } => self.store_failed(key, error),
            WorkerEvent::SpillFailed {
                keys,
                error,
                retry_may_help,
            } => self.spill_failed(keys, error, retry_may_help),
        }
        // Releases may have brought held data back under the pause fraction.
        self.memory_changed();
    }

    /// Lets time pass: the death timeout, heartbeats and fetch deadlines.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        if let Some(reason) = self.link.gone(self.now_ms) {
            self.outbox.push(WorkerCommand::Shutdown { reason });
            return;
        }
        if self.link.heartbeat_due(self.now_ms) {
            self.report_memory(true);
            self.outbox.send(FromWorker::Heartbeat);
        }
        self.fetches_timed_out();
        self.start_ready();
    }

    pub fn next_deadline(&self) -> u64 {
        let heartbeat = self.link.next_heartbeat_ms();
        self.fetches
            .next_deadline()
            .map_or(heartbeat, |fetch| fetch.min(heartbeat))
    }

    /// Everything to do, with completions batched into one report each.
    pub fn take_commands(&mut self) -> Vec<WorkerCommand> {
        self.outbox.take()
    }

    pub fn holds(&self, key: &Key) -> bool {
        self.held.contains(key)
    }

    pub fn stored_keys(&self) -> usize {
        self.held.len()
    }

    /// The sizes of the values held, added up (in memory and on disk).
    pub fn held_bytes(&self) -> u64 {
        self.held.total_bytes()
    }

    /// The sizes of the values held in memory, added up: what the memory limit is measured
    /// against.
    pub fn memory_bytes(&self) -> u64 {
        self.held.memory_bytes()
    }

    /// Whether the value of `key` is held on disk.
    pub fn on_disk(&self, key: &Key) -> bool {
        self.held.is_on_disk(key)
    }

    /// Whether held data is past `PAUSE_FRACTION` of the memory limit: no new task starts.
    pub fn paused(&self) -> bool {
        self.memory.paused()
    }

    /// Tasks received and not yet finished.
    pub fn pending_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Recounts what the core tracks and returns the first disagreement: each part's own
    /// `check`, then the checks between parts. Cheap enough for tests to call after every
    /// step; the IO layer does not call it.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        invariants::check(self)
    }

    /// A message of the scheduler, routed to the part it concerns.
    fn on_scheduler_message(&mut self, msg: ToWorker, frames: Vec<Frame>) {
        self.link.heard(self.now_ms);
        match msg {
            ToWorker::HeartbeatAck => {}
            ToWorker::Registered { max_message_bytes } => self.link.registered(max_message_bytes),
            ToWorker::Rejected { reason } => self.outbox.push(WorkerCommand::Shutdown {
                reason: ShutdownReason::Rejected(reason),
            }),
            ToWorker::Malformed { message } => {
                warn!("the scheduler could not read a message of this worker: {message}");
            }
            ToWorker::UnknownWorker => {
                if self.link.register_again(self.now_ms) {
                    warn!("the scheduler does not know this worker: registering again");
                    self.register(self.now_ms);
                }
            }
            ToWorker::Close => self.outbox.push(WorkerCommand::Shutdown {
                reason: ShutdownReason::Closed,
            }),
            ToWorker::Dismiss => self.outbox.push(WorkerCommand::Shutdown {
                reason: ShutdownReason::Dismissed,
            }),
            ToWorker::Compute(tasks) => {
                for t in tasks {
                    self.compute(t);
                }
                self.start_ready();
            }
            ToWorker::Release(keys) => self.release(keys),
            ToWorker::Ping => self.outbox.send(FromWorker::Heartbeat),
            ToWorker::PeersLost(addresses) => self.peers_lost(&addresses),
            ToWorker::Reset => self.reset(),
            ToWorker::Restart => warn!("a restart request reached a worker, not its nanny"),
            ToWorker::GetData { request, keys } => {
                let keys = self.used(distinct(keys));
                self.outbox
                    .push(WorkerCommand::SendDataToScheduler { request, keys });
            }
            ToWorker::CheckHeld { keys } => {
                let keys: Vec<Key> = keys
                    .into_iter()
                    .filter(|k| !self.held.contains(k))
                    .collect();
                self.outbox.send(FromWorker::NotHeld { keys });
            }
            ToWorker::PutData { request, keys } => {
                for (key, frame) in keys.into_iter().zip(frames) {
                    self.hold(key.clone(), frame.len() as u64, SCATTERED);
                    self.outbox.push(WorkerCommand::Store { key, frame });
                }
                self.outbox.send(FromWorker::Stored { request });
            }
            ToWorker::GetLogs { request } => self.outbox.push(WorkerCommand::SendLogs { request }),
        }
    }
}

mod fetch;
mod held;
mod inputs;
mod invariants;
mod lifecycle;
mod link;
mod memory;
mod outbox;
mod tasks;
#[cfg(test)]
mod tests;

use fetch::Fetches;
use held::HeldData;
pub use invariants::InvariantViolation;
use link::SchedulerLink;
use memory::MemoryLimit;
pub use memory::{Storage, PAUSE_FRACTION, SPILL_RETRY_MS, TARGET_FRACTION, TERMINATE_FRACTION};
use outbox::Outbox;
use tasks::TaskTable;

//! The worker's logic as a pure state machine: messages from the scheduler and peers, and
//! completions from the executor, in; instructions (execute, fetch, store, send) out. No socket,
//! thread, channel, disk or clock: the runner does the effects and passes `now` in.
//!
//! This file: the events, commands and config, and the messages of the scheduler;
//! `tasks.rs`: a task's life here (accepted, run, finished, failed, forgotten); `fetch.rs`:
//! fetching inputs from peers; `invariants.rs`: the core's own recount (`check_invariants`).

use std::collections::VecDeque;
use std::fmt;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use log::{debug, warn};

use crate::graph::Key;
use crate::protocol::codec::SCATTERED;
use crate::protocol::{
    ConnectionId, ErredTask, FinishedTask, Frame, FromWorker, HeldKey, PeerReply, PeerRequest,
    RejectReason, TaskError, ToWorker, WorkerAddress, WorkerRegistration,
};

/// Why the worker stops on its own. A nanny decides from this (told through a channel of its
/// own, never from an exit code a task could also choose) whether starting the worker again
/// can help.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ShutdownReason {
    /// The scheduler sent `Close`: the worker's retirement is complete.
    Closed,
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
            ShutdownReason::Closed => 0,
            ShutdownReason::SchedulerGone { .. } => 3,
            ShutdownReason::Rejected(_) => 4,
        }
    }
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShutdownReason::Closed => write!(f, "closed by the scheduler"),
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
    /// The worker server builds it from its `WorkerConfig` and its bound peer address.
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
}

#[derive(Debug, PartialEq)]
enum Phase {
    Fetching { missing: usize },
    Ready,
    Executing,
}

#[derive(Debug)]
struct Task {
    spec: Vec<u8>,
    /// `spec_hash` of the spec: stored with the result so a restarted scheduler can tell it
    /// is the value of the definition it knows.
    origin: u64,
    dependencies: Vec<Key>,
    report_value: bool,
    phase: Phase,
    fetched: Vec<(Key, u64)>,
    /// Released by the scheduler while executing: drop the result.
    released: bool,
}

#[derive(Clone, Copy, Debug)]
struct Held {
    nbytes: u64,
    origin: u64,
}

impl Held {
    fn new(nbytes: u64, origin: u64) -> Held {
        Held { nbytes, origin }
    }
}

#[derive(Debug)]
struct Fetch {
    holders: Vec<WorkerAddress>,
    tried: usize,
    waiting: Vec<Key>,
    /// Holders that did not answer in time (as opposed to answering that they lack it).
    unresponsive: Vec<WorkerAddress>,
}

#[derive(Debug)]
struct PeerFetch {
    address: WorkerAddress,
    keys: Vec<Key>,
    deadline_ms: u64,
}

pub struct WorkerCore {
    config: WorkerCoreConfig,
    nthreads: usize,
    tasks: HashMap<Key, Task>,
    ready: VecDeque<Key>,
    executing: usize,
    /// What the store holds: size and origin of each value.
    data: HashMap<Key, Held>,
    fetches: HashMap<Key, Fetch>,
    peer_fetches: HashMap<u64, PeerFetch>,
    finished: Vec<FinishedTask>,
    erred: Vec<ErredTask>,
    commands: Vec<WorkerCommand>,
    next_request: u64,
    next_heartbeat_ms: u64,
    registering_since: Option<u64>,
    last_heard_ms: u64,
    now_ms: u64,
    /// The largest result that can travel: the smaller of our own and the scheduler's limit.
    result_bytes_max: u64,
}

impl WorkerCore {
    pub fn new(config: WorkerCoreConfig) -> WorkerCore {
        let nthreads = config.registration.nthreads.max(1) as usize;
        WorkerCore {
            nthreads,
            tasks: HashMap::default(),
            ready: VecDeque::new(),
            executing: 0,
            data: HashMap::default(),
            fetches: HashMap::default(),
            peer_fetches: HashMap::default(),
            finished: Vec::new(),
            erred: Vec::new(),
            commands: Vec::new(),
            next_request: 1,
            next_heartbeat_ms: 0,
            registering_since: None,
            last_heard_ms: 0,
            now_ms: 0,
            result_bytes_max: config.max_message_bytes,
            config,
        }
    }

    /// The largest result this worker accepts now (see `WorkerCoreConfig::max_message_bytes`).
    pub fn result_bytes_max(&self) -> u64 {
        self.result_bytes_max
    }

    /// The registration message, with the keys the store holds now.
    pub fn register(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        if self.last_heard_ms == 0 {
            self.last_heard_ms = now_ms;
        }
        let mut reg = self.config.registration.clone();
        reg.keys = self
            .data
            .iter()
            .map(|(key, held)| HeldKey {
                key: key.clone(),
                origin: held.origin,
                nbytes: held.nbytes,
            })
            .collect();
        self.commands.push(WorkerCommand::ToScheduler {
            msg: FromWorker::Register(reg),
            frames: vec![],
        });
        self.next_heartbeat_ms = now_ms + self.config.heartbeat_interval_ms;
    }

    pub fn handle(&mut self, now_ms: u64, event: WorkerEvent) {
        self.now_ms = self.now_ms.max(now_ms);
        match event {
            WorkerEvent::FromScheduler { msg, frames } => self.on_scheduler_message(msg, frames),
            WorkerEvent::FromPeer { peer, msg } => match msg {
                PeerRequest::GetData { request, keys } => {
                    self.commands.push(WorkerCommand::SendDataToPeer {
                        peer,
                        request,
                        keys: distinct(keys),
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
        }
    }

    /// Lets time pass: heartbeats and fetch deadlines.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let silent = self.now_ms.saturating_sub(self.last_heard_ms);
        if silent > self.config.death_timeout_ms {
            self.commands.push(WorkerCommand::Shutdown {
                reason: ShutdownReason::SchedulerGone {
                    silent_ms: silent,
                    death_timeout_ms: self.config.death_timeout_ms,
                },
            });
            return;
        }
        if self.now_ms >= self.next_heartbeat_ms {
            self.commands.push(WorkerCommand::ToScheduler {
                msg: FromWorker::Heartbeat,
                frames: vec![],
            });
            self.next_heartbeat_ms = self.now_ms + self.config.heartbeat_interval_ms;
        }
        let expired: Vec<u64> = self
            .peer_fetches
            .iter()
            .filter(|(_, f)| f.deadline_ms <= self.now_ms)
            .map(|(r, _)| *r)
            .collect();
        for r in expired {
            if let Some(f) = self.peer_fetches.remove(&r) {
                warn!(
                    "peer {} did not answer a fetch of {} key(s) in time",
                    f.address,
                    f.keys.len()
                );
                for k in f.keys {
                    if let Some(fetch) = self.fetches.get_mut(&k) {
                        fetch.unresponsive.push(f.address.clone());
                    }
                    self.try_next_holder(k);
                }
            }
        }
        self.start_ready();
    }

    pub fn next_deadline(&self) -> u64 {
        self.peer_fetches
            .values()
            .map(|f| f.deadline_ms)
            .chain(std::iter::once(self.next_heartbeat_ms))
            .min()
            .unwrap_or(self.next_heartbeat_ms)
    }

    /// Everything to do, with completions batched into one report each.
    pub fn take_commands(&mut self) -> Vec<WorkerCommand> {
        if !self.finished.is_empty() {
            let finished = std::mem::take(&mut self.finished);
            self.commands.push(WorkerCommand::ReportFinished(finished));
        }
        if !self.erred.is_empty() {
            let erred = std::mem::take(&mut self.erred);
            self.commands.push(WorkerCommand::ToScheduler {
                msg: FromWorker::Erred(erred),
                frames: vec![],
            });
        }
        std::mem::take(&mut self.commands)
    }

    pub fn holds(&self, key: &Key) -> bool {
        self.data.contains_key(key)
    }

    pub fn stored_keys(&self) -> usize {
        self.data.len()
    }

    /// Tasks received and not yet finished.
    pub fn pending_tasks(&self) -> usize {
        self.tasks.len()
    }

    fn on_scheduler_message(&mut self, msg: ToWorker, frames: Vec<Frame>) {
        self.last_heard_ms = self.now_ms;
        match msg {
            ToWorker::HeartbeatAck => {}
            ToWorker::Registered { max_message_bytes } => {
                self.registering_since = None;
                // 0: a scheduler that states no limit.
                let theirs = if max_message_bytes == 0 {
                    u64::MAX
                } else {
                    max_message_bytes
                };
                self.result_bytes_max = self.config.max_message_bytes.min(theirs);
                debug!(
                    "registered with the scheduler; results up to {} bytes",
                    self.result_bytes_max
                )
            }
            ToWorker::Rejected { reason } => {
                self.commands.push(WorkerCommand::Shutdown {
                    reason: ShutdownReason::Rejected(reason),
                });
            }
            ToWorker::Malformed { message } => {
                warn!("the scheduler could not read a message of this worker: {message}");
            }
            ToWorker::UnknownWorker => {
                if self
                    .registering_since
                    .is_none_or(|t| self.now_ms >= t + 1000)
                {
                    warn!("the scheduler does not know this worker: registering again");
                    self.register(self.now_ms);
                    self.registering_since = Some(self.now_ms);
                }
            }
            ToWorker::Close => self.commands.push(WorkerCommand::Shutdown {
                reason: ShutdownReason::Closed,
            }),
            ToWorker::Compute(tasks) => {
                for t in tasks {
                    self.compute(t);
                }
                self.start_ready();
            }
            ToWorker::Release(keys) => self.release(keys),
            ToWorker::Ping => self.commands.push(WorkerCommand::ToScheduler {
                msg: FromWorker::Heartbeat,
                frames: vec![],
            }),
            ToWorker::PeersLost(addresses) => self.peers_lost(&addresses),
            ToWorker::Reset => self.reset(),
            ToWorker::Restart => warn!("a restart request reached a worker, not its nanny"),
            ToWorker::GetData { request, keys } => {
                self.commands.push(WorkerCommand::SendDataToScheduler {
                    request,
                    keys: distinct(keys),
                });
            }
            ToWorker::CheckHeld { keys } => {
                let keys: Vec<Key> = keys
                    .into_iter()
                    .filter(|k| !self.data.contains_key(k))
                    .collect();
                self.commands.push(WorkerCommand::ToScheduler {
                    msg: FromWorker::NotHeld { keys },
                    frames: vec![],
                });
            }
            ToWorker::PutData { request, keys } => {
                for (key, frame) in keys.into_iter().zip(frames) {
                    self.data
                        .insert(key.clone(), Held::new(frame.len() as u64, SCATTERED));
                    self.commands.push(WorkerCommand::Store { key, frame });
                }
                self.commands.push(WorkerCommand::ToScheduler {
                    msg: FromWorker::Stored { request },
                    frames: vec![],
                });
            }
        }
    }

    /// Drops every task and every stored value: the cluster restarted.
    fn reset(&mut self) {
        for task in self.tasks.values_mut() {
            // Running tasks cannot be stopped; their results are dropped when they finish.
            task.released = true;
        }
        self.tasks.retain(|_, t| t.phase == Phase::Executing);
        self.ready.clear();
        self.fetches.clear();
        self.peer_fetches.clear();
        self.finished.clear();
        self.erred.clear();
        let keys: Vec<Key> = self.data.drain().map(|(k, _)| k).collect();
        if !keys.is_empty() {
            self.commands.push(WorkerCommand::Delete(keys));
        }
    }

    fn release(&mut self, keys: Vec<Key>) {
        let mut delete = Vec::new();
        for key in keys {
            if self.data.remove(&key).is_some() {
                delete.push(key.clone());
            }
            match self.tasks.get_mut(&key) {
                Some(task) if task.phase == Phase::Executing => task.released = true,
                Some(_) => self.drop_task(&key),
                None => {}
            }
        }
        if !delete.is_empty() {
            self.commands.push(WorkerCommand::Delete(delete));
        }
    }
}

mod fetch;
mod invariants;
mod tasks;
#[cfg(test)]
mod tests;

pub use invariants::InvariantViolation;

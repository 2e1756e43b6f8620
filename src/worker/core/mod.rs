//! The worker's logic as a pure state machine: messages from the scheduler and peers, and
//! completions from the executor, in; instructions (execute, fetch, store, send) out. No socket,
//! thread, channel, disk or clock: the runner does the effects and passes `now` in.

use std::collections::VecDeque;
use std::fmt;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use log::{debug, warn};

use crate::graph::Key;
use crate::protocol::codec::{spec_hash, SCATTERED, UNKNOWN_ORIGIN};
use crate::protocol::{
    ComputeTask, ErredTask, FinishedTask, Frame, FrameIdentity, FromWorker, HeldKey, PeerReply,
    PeerRequest, RejectReason, TaskError, ToWorker, WorkerRegistration,
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
    pub registration: WorkerRegistration,
    /// How often to tell the scheduler we are alive.
    pub heartbeat_interval_ms: u64,
    /// A peer that has not answered a fetch within this long is given up on (the next holder is
    /// tried). ZeroMQ queues messages to a dead peer silently, so only a deadline notices.
    pub fetch_timeout_ms: u64,
    /// With no word from the scheduler for this long, the worker stops (it keeps trying to
    /// reach it until then, and registers again when it answers).
    pub death_timeout_ms: u64,
    /// Tasks handed to the thread pool beyond its thread count, so a thread finishing a short
    /// task finds the next one queued instead of waiting for this loop to send it. The worker
    /// server uses 0: a queued task would start before the report of the one before it
    /// leaves, and a crash would then blame (and lose) the finished task. (Kept as a setting:
    /// the simulation runs its workers with 1.)
    pub pool_queue: usize,
    /// The largest message part this worker's sockets accept (`--max-message-bytes`). A result
    /// bigger than this, or than the scheduler's limit (`Registered`), fails its task: it
    /// could never travel to the scheduler, to a client or to a peer.
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
        peer: FrameIdentity,
        msg: PeerRequest,
    },
    PeerAnswered {
        address: String,
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
        address: String,
        request: u64,
        keys: Vec<Key>,
    },
    /// Answer a peer's `GetData` from the store.
    SendDataToPeer {
        peer: FrameIdentity,
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
    holders: Vec<String>,
    tried: usize,
    waiting: Vec<Key>,
    /// Holders that did not answer in time (as opposed to answering that they lack it).
    unresponsive: Vec<String>,
}

#[derive(Debug)]
struct PeerFetch {
    address: String,
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

    fn compute(&mut self, t: ComputeTask) {
        debug!("compute {:?}", t.key);
        if let Some(existing) = self.tasks.get_mut(&t.key) {
            // Assigned again while still here (released, then wanted again): keep going.
            existing.released = false;
            existing.report_value |= t.report_value;
            return;
        }
        if let Some(nbytes) = self.data.get(&t.key).map(|h| h.nbytes) {
            self.finished.push(FinishedTask {
                key: t.key,
                nbytes,
                fetched: vec![],
                has_value: t.report_value,
            });
            return;
        }
        let missing: Vec<(Key, Vec<String>)> = t
            .dependencies
            .iter()
            .filter(|(dep, _)| !self.data.contains_key(dep))
            .cloned()
            .collect();
        let phase = if missing.is_empty() {
            self.ready.push_back(t.key.clone());
            Phase::Ready
        } else {
            Phase::Fetching {
                missing: missing.len(),
            }
        };
        // The task goes in first: starting a fetch checks that someone still waits for it.
        self.tasks.insert(
            t.key.clone(),
            Task {
                origin: spec_hash(&t.spec),
                spec: t.spec,
                dependencies: t.dependencies.into_iter().map(|(k, _)| k).collect(),
                report_value: t.report_value,
                phase,
                fetched: Vec::new(),
                released: false,
            },
        );
        for (dep, holders) in missing {
            match self.fetches.get_mut(&dep) {
                Some(f) => {
                    if !f.waiting.contains(&t.key) {
                        f.waiting.push(t.key.clone());
                    }
                    let own = &self.config.registration.address;
                    for h in holders {
                        if h != *own && !f.holders.contains(&h) {
                            f.holders.push(h);
                        }
                    }
                }
                None => {
                    let own = &self.config.registration.address;
                    let holders = holders.into_iter().filter(|h| h != own).collect();
                    self.fetches.insert(
                        dep.clone(),
                        Fetch {
                            holders,
                            tried: 0,
                            waiting: vec![t.key.clone()],
                            unresponsive: Vec::new(),
                        },
                    );
                    self.try_next_holder(dep);
                }
            }
        }
    }

    /// Asks the next holder of `dep` for it, or gives up on the tasks that need it.
    fn try_next_holder(&mut self, dep: Key) {
        let Some(f) = self.fetches.get_mut(&dep) else {
            return;
        };
        f.waiting.retain(|k| self.tasks.contains_key(k));
        if f.waiting.is_empty() {
            self.fetches.remove(&dep);
            return;
        }
        if f.tried < f.holders.len() {
            let address = f.holders[f.tried].clone();
            f.tried += 1;
            let request = self.next_request;
            self.next_request += 1;
            self.peer_fetches.insert(
                request,
                PeerFetch {
                    address: address.clone(),
                    keys: vec![dep.clone()],
                    deadline_ms: self.now_ms + self.config.fetch_timeout_ms,
                },
            );
            debug!("fetching {dep:?} from {address}");
            self.commands.push(WorkerCommand::FetchFromPeer {
                address,
                request,
                keys: vec![dep],
            });
            return;
        }
        let f = self.fetches.remove(&dep).expect("present above");
        for key in f.waiting {
            if self.tasks.contains_key(&key) {
                self.drop_task(&key);
                debug!("giving up on {key:?}: no holder of {dep:?} answered");
                self.commands.push(WorkerCommand::ToScheduler {
                    msg: FromWorker::MissingDependency {
                        key,
                        dependency: dep.clone(),
                        holders: f
                            .holders
                            .iter()
                            .filter(|h| !f.unresponsive.contains(h))
                            .cloned()
                            .collect(),
                        unresponsive: f.unresponsive.clone(),
                    },
                    frames: vec![],
                });
            }
        }
    }

    fn peer_answered(&mut self, address: String, msg: PeerReply, frames: Vec<Frame>) {
        debug!("peer {address} answered {msg:?}");
        let (request, found, missing) = match msg {
            PeerReply::Data {
                request,
                found,
                missing,
            } => (request, found, missing),
            PeerReply::Error { message } => {
                warn!("peer {address} answered with an error: {message}");
                return;
            }
        };
        let Some(pf) = self.peer_fetches.remove(&request) else {
            return; // timed out already, or an answer to nothing we asked
        };
        for (key, frame) in found.into_iter().zip(frames) {
            if !pf.keys.contains(&key) {
                continue;
            }
            let Some(f) = self.fetches.remove(&key) else {
                continue;
            };
            let nbytes = frame.len() as u64;
            let mut wanted = false;
            for t in f.waiting {
                if let Some(task) = self.tasks.get_mut(&t) {
                    wanted = true;
                    task.fetched.push((key.clone(), nbytes));
                    if let Phase::Fetching { missing } = &mut task.phase {
                        *missing -= 1;
                        if *missing == 0 {
                            task.phase = Phase::Ready;
                            self.ready.push_back(t);
                        }
                    }
                }
            }
            if wanted {
                self.data
                    .insert(key.clone(), Held::new(nbytes, UNKNOWN_ORIGIN));
                self.commands.push(WorkerCommand::Store { key, frame });
            }
        }
        // A key the peer neither sent nor reported missing counts as missing too, or the
        // task would wait for it forever.
        let undelivered: Vec<Key> = pf
            .keys
            .into_iter()
            .filter(|k| self.fetches.contains_key(k) && !missing.contains(k))
            .collect();
        for key in missing.into_iter().chain(undelivered) {
            self.try_next_holder(key);
        }
        self.start_ready();
    }

    fn start_ready(&mut self) {
        while self.executing < self.nthreads + self.config.pool_queue {
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            let Some(task) = self.tasks.get_mut(&key) else {
                continue;
            };
            if task.phase != Phase::Ready {
                continue;
            }
            task.phase = Phase::Executing;
            self.executing += 1;
            self.commands.push(WorkerCommand::Execute {
                key,
                spec: task.spec.clone(),
                dependencies: task.dependencies.clone(),
            });
        }
    }

    fn executed(&mut self, key: Key, result: Result<u64, TaskError>) {
        debug!("executed {key:?}: {result:?}");
        self.executing = self.executing.saturating_sub(1);
        let Some(task) = self.tasks.remove(&key) else {
            // Forgotten while it ran (its input could not be stored): its thread is free.
            self.start_ready();
            return;
        };
        let result = match result {
            Ok(nbytes) if nbytes > self.result_bytes_max => {
                // Stored already by the runner: it must go, and the task fails now rather
                // than its value being dropped on the way (which would leave a client or a
                // peer waiting for it).
                self.commands.push(WorkerCommand::Delete(vec![key.clone()]));
                Err(TaskError {
                    kind: crate::protocol::TaskErrorKind::Failed,
                    message: format!(
                        "the result is {nbytes} bytes, more than the message limit of {} \
                         bytes (max_message_bytes of the worker or the scheduler): it could \
                         not be sent anywhere",
                        self.result_bytes_max
                    ),
                })
            }
            Err(mut error) => {
                error.message =
                    crate::protocol::cut_text(error.message, crate::protocol::TASK_ERROR_BYTES_MAX);
                Err(error)
            }
            ok => ok,
        };
        match result {
            Ok(nbytes) if task.released => {
                self.commands.push(WorkerCommand::Delete(vec![key]));
                let _ = nbytes;
                self.drop_orphans(task.fetched);
            }
            Ok(nbytes) => {
                self.data
                    .insert(key.clone(), Held::new(nbytes, task.origin));
                self.finished.push(FinishedTask {
                    key,
                    nbytes,
                    fetched: task.fetched,
                    has_value: task.report_value,
                });
            }
            Err(_) if task.released => self.drop_orphans(task.fetched),
            Err(error) => {
                self.erred.push(ErredTask { key, error });
                self.drop_orphans(task.fetched);
            }
        }
        self.start_ready();
    }

    /// A value could not be written to the store: nobody is told it is here. Scattered data
    /// was (or is about to be) confirmed with `Stored`; `NotHeld` follows, so the scheduler
    /// counts it lost (and fails whoever needs it, naming it) rather than sending readers here.
    /// A copy fetched from a peer: the tasks waiting for it fail, naming the store's error.
    fn store_failed(&mut self, key: Key, error: String) {
        warn!("store write of {key:?} failed: {error}");
        let Some(held) = self.data.remove(&key) else {
            return;
        };
        if held.origin == SCATTERED {
            self.commands.push(WorkerCommand::ToScheduler {
                msg: FromWorker::NotHeld { keys: vec![key] },
                frames: vec![],
            });
            return;
        }
        // Dependents may be executing already: their `Execute` left in the same batch as the
        // failed write. They are forgotten here and fail with this error; their own failure
        // ("not in the store"), which follows, then only frees their thread.
        let dependents: Vec<Key> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.dependencies.contains(&key))
            .map(|(k, _)| k.clone())
            .collect();
        for t in dependents {
            self.drop_task(&t);
            self.erred.push(ErredTask {
                key: t,
                error: TaskError {
                    kind: crate::protocol::TaskErrorKind::Failed,
                    message: format!("could not store input {key:?} fetched from a peer: {error}"),
                },
            });
        }
        self.start_ready();
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

    /// Stops waiting on lost peers: their fetches move to the next holder now.
    fn peers_lost(&mut self, addresses: &[String]) {
        for f in self.fetches.values_mut() {
            // Keep the tried prefix intact so `tried` still indexes the next holder.
            let (tried, untried) = f.holders.split_at(f.tried);
            let untried: Vec<String> = untried
                .iter()
                .filter(|h| !addresses.contains(h))
                .cloned()
                .collect();
            let mut holders = tried.to_vec();
            holders.extend(untried);
            f.holders = holders;
        }
        let stuck: Vec<u64> = self
            .peer_fetches
            .iter()
            .filter(|(_, f)| addresses.contains(&f.address))
            .map(|(r, _)| *r)
            .collect();
        for r in stuck {
            if let Some(f) = self.peer_fetches.remove(&r) {
                for k in f.keys {
                    self.try_next_holder(k);
                }
            }
        }
        self.start_ready();
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

    /// Deletes the copies fetched for a task that will not report them (released or failed)
    /// unless another task here needs them: the scheduler learns of fetched copies only from a
    /// finished report, so nobody else would ever release them.
    fn drop_orphans(&mut self, fetched: Vec<(Key, u64)>) {
        let orphans: Vec<Key> = fetched
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !self.tasks.values().any(|t| t.dependencies.contains(k)))
            .collect();
        for k in &orphans {
            self.data.remove(k);
        }
        if !orphans.is_empty() {
            self.commands.push(WorkerCommand::Delete(orphans));
        }
    }

    /// Forgets a task that will not run here: it stops waiting on fetches, and the copies
    /// fetched for it alone are deleted.
    fn drop_task(&mut self, key: &Key) {
        let Some(task) = self.tasks.remove(key) else {
            return;
        };
        for dep in &task.dependencies {
            if let Some(f) = self.fetches.get_mut(dep) {
                f.waiting.retain(|k| k != key);
            }
        }
        self.drop_orphans(task.fetched);
    }
}

#[cfg(test)]
mod tests;

//! The scheduler's logic as a pure state machine: events (messages from workers and clients, the
//! passing of time) in, commands (messages to send) out. No socket, thread, channel, disk or
//! clock in here: `now` is always passed in, which makes every fault deterministic to test.
//!
//! Bookkeeping (a task finished, a worker was lost) is kept apart from the decision pass
//! (`schedule`, in `placement`), which the IO layer runs once per batch of events.

mod collections;
mod computations;
mod lifecycle;
mod names;
mod placement;
mod recovery;
mod tasks;
mod workers;

use std::collections::VecDeque;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use log::{debug, info, warn};

use crate::graph::Key;
use crate::protocol::{
    ClusterStatus, Frame, FrameIdentity, FromClient, FromWorker, RejectReason, RequestError,
    ToClient, ToWorker, WorkerInfo, WorkerRegistration, PROTOCOL_VERSION,
};

pub use recovery::{JournalOp, Recovered, Submission};
pub use tasks::{TaskId, TaskState};
pub use workers::WorkerId;

use computations::{CompId, Computation, PendingScatter, PutRequest};
use tasks::TaskTable;
use workers::{Worker, WorkerRegistry};

/// Settings of the scheduler's logic. Times are in milliseconds of the `now` the IO layer passes.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// A worker silent for this long is considered lost (a stopped process: its connection
    /// stays open). Six heartbeats at the default worker interval, so one delayed heartbeat
    /// never loses a worker.
    pub heartbeat_timeout_ms: u64,
    /// When a worker connection drops, every worker is pinged; those that do not answer within
    /// this long are lost. This is how a killed worker is noticed well before the heartbeat
    /// timeout.
    pub probe_timeout_ms: u64,
    /// A client silent this long (no request, no ping) is considered gone and its requests are
    /// cancelled. Clients ping every second.
    pub client_timeout_ms: u64,
    /// At most this many tasks queued on a worker beyond its thread count, so it never waits
    /// for the scheduler; fewer when tasks are long (about 10 ms of queued work per worker).
    pub worker_queue_extra: u32,
    /// How many unexpected worker losses a task may be blamed for before it fails.
    pub allowed_failures: u32,
    /// Describe durable state changes as `Command::Journal` (the scheduler has a state dir).
    pub journal: bool,
    /// After a restart, how long to wait for workers to report what they hold before the
    /// journaled graphs are resubmitted (workers register again within a heartbeat or two).
    pub recovery_grace_ms: u64,
    /// How long a retiring worker (SIGTERM) may take to hand its results over before it is
    /// closed anyway.
    pub retire_timeout_ms: u64,
    /// How long `restart` waits for restarted workers to register again.
    pub restart_timeout_ms: u64,
    /// The largest message the scheduler's sockets accept (`--max-message-bytes`); told to
    /// workers at registration, so a result too big to report fails its task instead of
    /// vanishing. Default 2 GiB − 1, libzmq's own practical limit.
    pub max_message_bytes: u64,
    /// Distinguishes this scheduler process's scattered data from an earlier one's (whose
    /// workers may still hold values): the IO layer passes something unpredictable.
    pub instance_token: u64,
    /// Task error texts longer than this (in bytes) are cut, with the cut marked, before they
    /// are kept or sent to clients: a worker cannot make the scheduler hold or forward
    /// megabytes of error text. Default 4 KiB.
    pub task_error_bytes_max: usize,
    /// Reported to clients in `Welcome` and `status` (filled in by the IO layer from its
    /// sockets; empty by default).
    pub address_to_workers: String,
    /// As `address_to_workers`, for the client port.
    pub address_to_clients: String,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            heartbeat_timeout_ms: 3_000,
            probe_timeout_ms: 500,
            client_timeout_ms: 30_000,
            worker_queue_extra: 64,
            allowed_failures: 3,
            restart_timeout_ms: 30_000,
            retire_timeout_ms: 2_000,
            journal: false,
            recovery_grace_ms: 1_500,
            max_message_bytes: (2u64 << 30) - 1,
            task_error_bytes_max: crate::protocol::TASK_ERROR_BYTES_MAX,
            instance_token: 0,
            address_to_workers: String::new(),
            address_to_clients: String::new(),
        }
    }
}

/// Something that happened, as the IO layer decoded it.
#[derive(Debug)]
pub enum Event {
    FromWorker {
        identity: FrameIdentity,
        msg: FromWorker,
        frames: Vec<Frame>,
    },
    FromClient {
        identity: FrameIdentity,
        msg: FromClient,
        frames: Vec<Frame>,
    },
    /// A connection on the worker port dropped (which worker's, ZeroMQ does not say).
    WorkerConnectionLost,
}

/// Something to send, for the IO layer to encode.
#[derive(Debug, PartialEq)]
pub enum Command {
    ToWorker {
        identity: FrameIdentity,
        msg: ToWorker,
        frames: Vec<Frame>,
    },
    ToClient {
        identity: FrameIdentity,
        msg: ToClient,
        frames: Vec<Frame>,
    },
    /// Make this durable before sending anything that follows it.
    Journal(JournalOp),
}

struct ClientState {
    last_seen_ms: u64,
    computations: HashSet<CompId>,
}

pub struct SchedulerCore {
    config: CoreConfig,
    tasks: TaskTable,
    workers: WorkerRegistry,
    /// Tasks in state Ready, oldest first. Entries whose task left Ready are skipped lazily.
    ready: VecDeque<TaskId>,
    computations: HashMap<CompId, Computation>,
    /// The computations each output task reports to.
    output_of: HashMap<TaskId, Vec<CompId>>,
    /// Value fetches sent to workers (for computations), by request id.
    value_requests: HashMap<u64, (WorkerId, Vec<TaskId>)>,
    /// Output tasks whose value is being fetched.
    fetching_value: HashSet<TaskId>,
    puts: HashMap<u64, PutRequest>,
    /// Scatters that arrived while no worker was connected.
    pending_scatters: VecDeque<PendingScatter>,
    clients: HashMap<FrameIdentity, ClientState>,
    next_request: u64,
    next_computation: u64,
    /// Counts scatters, for their wire keys.
    next_scatter: u64,
    /// What each key names on the cluster (scattered, kept, persisted).
    names: names::Names,
    commands: Vec<Command>,
    now_ms: u64,
    /// A worker was lost or scheduling is needed: run `schedule` before flushing.
    needs_scheduling: bool,
    /// A liveness probe in flight: (sent at, deadline).
    probe: Option<(u64, u64)>,
    /// Registrations waiting for a probe of the live worker they clash with (name or address).
    held_registrations: Vec<HeldRegistration>,
    /// Nanny tokens of worker processes that died or that a restart is ending, until when: a
    /// registration of such a process may still be on the way, and is ignored.
    dead_tokens: HashMap<u64, u64>,
    /// Nanny connections by the token they handed their worker (`NannyOf`). A nanny speaks
    /// for the worker that registered with its token; a token nobody registered with is inert.
    nanny_claims: HashMap<u64, FrameIdentity>,
    restart: Option<PendingRestart>,
    /// The workers that died while running a task, for its "killed worker" error.
    took_down: HashMap<TaskId, Vec<String>>,
    /// Moving average of how long a task takes from assignment to its report, in ms: short
    /// tasks get a deep queue on each worker (so it never waits for the scheduler), long ones
    /// a shallow one (so work is not hoarded, nor lost with a worker).
    task_ms_average: f64,
    /// Counts assignments, to know the order in which a worker received its tasks.
    next_assignment: u64,
    /// Workers asked to fetch a copy of a task, by task.
    replicating: HashMap<TaskId, Vec<WorkerId>>,
    replications: Vec<PendingReplication>,
    /// Journaled graphs to resubmit after a restart.
    replay: Option<recovery::Replay>,
    /// Stored collections by name (graphs, not data).
    collections: std::collections::BTreeMap<String, crate::collection::Collection>,
    /// Published datasets: the collection and the tasks holding its results.
    datasets: HashMap<String, (crate::collection::Collection, Vec<TaskId>)>,
    /// Workers (addresses or names) a task may run on, for the few tasks that say.
    restrictions: HashMap<TaskId, Box<[String]>>,
    /// Held results to adopt while journaled graphs are resubmitted.
    pending_adoptions: HashMap<Key, Vec<(WorkerId, u64, u64)>>,
}

/// At most this many unmatched `NannyOf` claims are remembered (a stranger cannot grow the
/// table without bound; a real nanny's claim is matched within moments).
const MAX_NANNY_CLAIMS: usize = 1024;

/// At most this many clashing registrations wait for a probe; more are refused at once.
const MAX_HELD_REGISTRATIONS: usize = 64;

/// A registration that clashes with live workers (name or address), waiting for them to
/// answer a ping sent when it arrived.
struct HeldRegistration {
    identity: FrameIdentity,
    reg: WorkerRegistration,
    deadline_ms: u64,
    /// The clashing workers and how many messages each had sent when they were pinged: one
    /// that sends nothing more before the deadline is gone.
    clashing: Vec<(WorkerId, u64)>,
}

/// A `replicate` request waiting for its copies.
struct PendingReplication {
    client: FrameIdentity,
    request: u64,
    /// With their wire keys: an id may be reused once its task is forgotten.
    tasks: Vec<(TaskId, Key)>,
}

/// A `restart` waiting for the restarted workers to register again, with every request that
/// asked for it (a restart asked for while one is under way joins it).
struct PendingRestart {
    requests: Vec<(FrameIdentity, u64)>,
    workers_expected: u32,
    deadline_ms: u64,
}

impl SchedulerCore {
    pub fn new(config: CoreConfig) -> SchedulerCore {
        SchedulerCore {
            config,
            tasks: TaskTable::default(),
            workers: WorkerRegistry::default(),
            ready: VecDeque::new(),
            computations: HashMap::default(),
            output_of: HashMap::default(),
            value_requests: HashMap::default(),
            fetching_value: HashSet::default(),
            puts: HashMap::default(),
            pending_scatters: VecDeque::new(),
            clients: HashMap::default(),
            next_request: 1,
            next_computation: 1,
            next_scatter: 0,
            names: names::Names::default(),
            commands: Vec::new(),
            now_ms: 0,
            needs_scheduling: false,
            probe: None,
            nanny_claims: HashMap::default(),
            held_registrations: Vec::new(),
            dead_tokens: HashMap::default(),
            restart: None,
            took_down: HashMap::default(),
            task_ms_average: 0.0,
            next_assignment: 0,
            replicating: HashMap::default(),
            replications: Vec::new(),
            replay: None,
            collections: Default::default(),
            datasets: HashMap::default(),
            restrictions: HashMap::default(),
            pending_adoptions: HashMap::default(),
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Feeds one event. Call `take_commands` after a batch of events.
    pub fn handle(&mut self, now_ms: u64, event: Event) {
        self.now_ms = self.now_ms.max(now_ms);
        match event {
            Event::FromWorker {
                identity,
                msg,
                frames,
            } => self.handle_worker(identity, msg, frames),
            Event::FromClient {
                identity,
                msg,
                frames,
            } => self.handle_client(identity, msg, frames),
            Event::WorkerConnectionLost => self.probe_workers(),
        }
    }

    fn probe_workers(&mut self) {
        if self.probe.is_some() {
            return; // the probe in flight covers this loss too
        }
        debug!("a worker connection dropped: pinging every worker");
        self.probe = Some((self.now_ms, self.now_ms + self.config.probe_timeout_ms));
        let ids: Vec<WorkerId> = self.workers.iter().map(|(id, _)| id).collect();
        for w in ids {
            self.push_to_worker(w, ToWorker::Ping, vec![]);
        }
    }

    /// Lets time pass: detects silent workers and clients.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.check_restart();
        self.replay_if_due();
        if self.workers.iter().any(|(_, w)| w.retiring) {
            self.check_retirements();
        }
        if let Some((sent, deadline)) = self.probe {
            if self.now_ms >= deadline {
                self.probe = None;
                let silent: Vec<WorkerId> = self
                    .workers
                    .iter()
                    .filter(|(_, w)| w.last_seen_ms < sent)
                    .map(|(id, _)| id)
                    .collect();
                for id in silent {
                    warn!(
                        "worker {} did not answer a ping: considered lost",
                        self.workers.address(id)
                    );
                    self.remove_worker(id, true);
                }
            }
        }
        self.retry_held_registrations();
        let timeout = self.config.heartbeat_timeout_ms;
        let silent: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| self.now_ms.saturating_sub(w.last_seen_ms) > timeout)
            .map(|(id, _)| id)
            .collect();
        for id in silent {
            warn!(
                "worker {} silent for more than {timeout} ms: considered lost",
                self.workers.address(id)
            );
            self.remove_worker(id, true);
        }
        let client_timeout = self.config.client_timeout_ms;
        let gone: Vec<FrameIdentity> = self
            .clients
            .iter()
            .filter(|(_, c)| self.now_ms.saturating_sub(c.last_seen_ms) > client_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for identity in gone {
            info!(
                "client {} silent for more than {client_timeout} ms: dropping its requests",
                String::from_utf8_lossy(&identity)
            );
            self.remove_client(&identity);
        }
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        let workers = self
            .workers
            .iter()
            .map(|(_, w)| w.last_seen_ms + self.config.heartbeat_timeout_ms + 1);
        let clients = self
            .clients
            .values()
            .map(|c| c.last_seen_ms + self.config.client_timeout_ms + 1);
        let probe = self.probe.map(|(_, deadline)| deadline);
        let restart = self.restart.as_ref().map(|r| r.deadline_ms);
        let retire = self
            .workers
            .iter()
            .filter(|(_, w)| w.retiring)
            .map(|(_, w)| w.retire_deadline_ms)
            .min();
        let replay = self.replay_deadline();
        let held = self.held_registrations.iter().map(|h| h.deadline_ms).min();
        workers
            .chain(held)
            .chain(clients)
            .chain(probe)
            .chain(restart)
            .chain(replay)
            .chain(retire)
            .min()
    }

    /// Runs the decision pass if needed and returns everything to send, in order.
    pub fn take_commands(&mut self) -> Vec<Command> {
        if !self.replications.is_empty() {
            // Values can be released or fail anywhere in a batch: answer what became moot.
            self.check_replications();
        }
        if self.needs_scheduling {
            self.needs_scheduling = false;
            self.schedule();
        }
        for (_, w) in self.workers.iter_mut() {
            for (msg, frames) in w.outbox.drain(..) {
                self.commands.push(Command::ToWorker {
                    identity: w.identity.clone(),
                    msg,
                    frames,
                });
            }
        }
        std::mem::take(&mut self.commands)
    }

    // ---- workers ----

    fn handle_worker(&mut self, identity: FrameIdentity, msg: FromWorker, frames: Vec<Frame>) {
        let id = self.workers.by_identity(&identity);
        if let Some(id) = id {
            if let Some(w) = self.workers.get_mut(id) {
                w.last_seen_ms = self.now_ms;
                w.messages_heard += 1;
            }
        }
        match (msg, id) {
            (FromWorker::Register(reg), _) => self.register_worker(identity, reg),
            (
                FromWorker::NannyOf {
                    worker_address,
                    token,
                },
                _,
            ) => self.nanny_of(identity, worker_address, token),
            (
                FromWorker::WorkerDied {
                    worker_address,
                    token,
                    expected,
                    reason,
                },
                _,
            ) => self.worker_died(identity, worker_address, token, expected, reason),
            (_, None) => {
                debug!(
                    "message from unregistered worker {}: asking it to register",
                    String::from_utf8_lossy(&identity)
                );
                self.commands.push(Command::ToWorker {
                    identity,
                    msg: ToWorker::UnknownWorker,
                    frames: vec![],
                });
            }
            (FromWorker::Heartbeat, Some(w)) => {
                self.push_to_worker(w, ToWorker::HeartbeatAck, vec![])
            }
            (FromWorker::Finished(done), Some(w)) => self.tasks_finished(w, done, frames),
            (FromWorker::Erred(erred), Some(w)) => {
                for e in erred {
                    self.task_erred(w, e.key, e.error);
                }
            }
            (
                FromWorker::MissingDependency {
                    key,
                    dependency,
                    holders,
                    unresponsive,
                },
                Some(w),
            ) => {
                if !self.assigned_to(w, &key) {
                    self.distrust(w, "a missing dependency of a task it was not given", &key);
                    return;
                }
                if !unresponsive.is_empty() {
                    // Slow or dead? A ping tells; their data is not given up on meanwhile.
                    self.probe_workers();
                }
                self.missing_dependency(w, &key, &dependency, &holders);
            }
            (
                FromWorker::Data {
                    request,
                    found,
                    missing,
                },
                Some(w),
            ) => self.data_arrived(w, request, found, missing, frames),
            (FromWorker::NotHeld { keys }, Some(w)) => self.not_held(w, keys),
            (FromWorker::Stored { request }, Some(w)) => self.put_stored(w, request),
            (FromWorker::Retire, Some(w)) => self.retire_worker(w),
            (FromWorker::Goodbye, Some(w)) => {
                info!("worker {} is leaving", self.workers.address(w));
                self.remove_worker(w, false);
            }
        }
    }

    /// Whether worker `w` was given the task with this (wire) key to run, or to copy.
    pub(super) fn assigned_to(&self, w: WorkerId, key: &Key) -> bool {
        self.tasks.id(key).is_some_and(|t| self.is_assigned(w, t))
    }

    /// Whether worker `w` was given task `t` to run, or to copy: its word counts for `t`.
    pub(super) fn is_assigned(&self, w: WorkerId, t: TaskId) -> bool {
        self.tasks.get(t).state == TaskState::Processing(w)
            || self.replicating.get(&t).is_some_and(|ws| ws.contains(&w))
    }

    /// Logs a message a worker had no standing to send; it changes nothing.
    pub(super) fn distrust(&self, w: WorkerId, what: &str, key: &Key) {
        warn!(
            "ignoring {what} ({key:?}) from worker {}",
            self.workers.address(w)
        );
    }

    /// A nanny says it supervises the worker at `address` and gave it `token`. Kept by
    /// token: it counts for whichever worker registers (or registered) with that token, in
    /// any order, and for none otherwise.
    fn nanny_of(&mut self, identity: FrameIdentity, address: String, token: u64) {
        debug!(
            "{} says it is the nanny of {address}",
            String::from_utf8_lossy(&identity)
        );
        if self.nanny_claims.len() >= MAX_NANNY_CLAIMS {
            // Keep the claims registered workers use; a flood of made-up ones goes.
            let used: HashSet<u64> = self
                .workers
                .iter()
                .filter_map(|(_, w)| w.nanny_token)
                .collect();
            self.nanny_claims.retain(|t, _| used.contains(t));
            if self.nanny_claims.len() >= MAX_NANNY_CLAIMS {
                warn!("too many nanny claims: ignoring the one for {address}");
                return;
            }
        }
        self.nanny_claims.insert(token, identity);
    }

    /// A nanny reports that the process it gave `token` ended. Believed only from the nanny
    /// that claimed that token. The process is gone for good: its registration (if any) is
    /// removed, one still held is dropped, and a stale one still on the way is ignored later.
    fn worker_died(
        &mut self,
        identity: FrameIdentity,
        address: String,
        token: u64,
        expected: bool,
        reason: String,
    ) {
        if self.nanny_claims.get(&token) != Some(&identity) {
            warn!(
                "ignoring a death report about {address} from {}: not that worker's nanny",
                String::from_utf8_lossy(&identity)
            );
            return;
        }
        self.dead_tokens
            .insert(token, self.now_ms + self.config.restart_timeout_ms);
        self.held_registrations
            .retain(|h| h.reg.nanny_token != Some(token));
        let w = self
            .workers
            .iter()
            .find(|(_, w)| w.nanny_token == Some(token))
            .map(|(id, _)| id);
        match w {
            Some(w) => {
                warn_or_info(
                    !expected,
                    &format!("worker {address} died ({reason}), says its nanny"),
                );
                self.remove_worker(w, !expected);
            }
            None => debug!("death report about {address}, which is not registered"),
        }
    }

    /// The connection of the nanny of the worker registered at `address`, if it has one.
    fn nanny_at(&self, address: &str) -> Option<&FrameIdentity> {
        let w = self.workers.by_address(address)?;
        let token = self.workers.get(w)?.nanny_token?;
        self.nanny_claims.get(&token)
    }

    /// Held registrations whose ping deadline passed: the clashing workers that stayed silent
    /// are lost; then the registration is tried again, and refused if a clash remains.
    fn retry_held_registrations(&mut self) {
        let now = self.now_ms;
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held_registrations)
            .into_iter()
            .partition(|h| now >= h.deadline_ms);
        self.held_registrations = waiting;
        for held in due {
            let pinged: Vec<WorkerId> = held.clashing.iter().map(|(w, _)| *w).collect();
            for (w, heard) in held.clashing {
                let silent = self
                    .workers
                    .get(w)
                    .is_some_and(|x| x.messages_heard == heard);
                if silent {
                    warn!(
                        "worker {} did not answer a ping (a new worker claims its name or address): considered lost",
                        self.workers.address(w)
                    );
                    self.remove_worker(w, true);
                }
            }
            // A worker that registered meanwhile under the same name or address was not asked
            // yet: ask it too before refusing anyone.
            let reg = &held.reg;
            let unasked = self.workers.iter().any(|(id, w)| {
                w.identity != held.identity
                    && (w.name == reg.name || w.address == reg.address)
                    && !pinged.contains(&id)
            });
            self.register_worker_after(held.identity, held.reg, !unasked);
        }
    }

    /// A registration. One that clashes with a live worker's name or address waits for a
    /// probe first (`held_registrations`): a worker restarted under the same name after a
    /// crash gets in as soon as its dead predecessor fails to answer; a second live worker of
    /// that name or address is refused.
    fn register_worker(&mut self, identity: FrameIdentity, reg: WorkerRegistration) {
        self.register_worker_after(identity, reg, false)
    }

    fn register_worker_after(
        &mut self,
        identity: FrameIdentity,
        reg: WorkerRegistration,
        probed: bool,
    ) {
        let now = self.now_ms;
        self.dead_tokens.retain(|_, until| *until > now);
        if reg
            .nanny_token
            .is_some_and(|t| self.dead_tokens.contains_key(&t))
        {
            debug!(
                "ignoring the registration of {}: its nanny ended (or is ending) that process",
                reg.address
            );
            return;
        }
        let clash =
            |w: &Worker| w.identity != identity && (w.name == reg.name || w.address == reg.address);
        let clashing = self.workers.iter().find(|(_, w)| clash(w)).map(|(_, w)| w);
        let rejection = if reg.protocol_version != PROTOCOL_VERSION {
            Some(RejectReason::ProtocolVersion {
                scheduler: PROTOCOL_VERSION,
                worker: reg.protocol_version,
            })
        } else if let Some(other) = clashing {
            if !probed && self.held_registrations.len() < MAX_HELD_REGISTRATIONS {
                info!(
                    "worker {} (name {}) clashes with a registered worker: checking that one is alive",
                    reg.address, reg.name
                );
                let clashing: Vec<(WorkerId, u64)> = self
                    .workers
                    .iter()
                    .filter(|(_, w)| clash(w))
                    .map(|(id, w)| (id, w.messages_heard))
                    .collect();
                for &(w, _) in &clashing {
                    self.push_to_worker(w, ToWorker::Ping, vec![]);
                }
                self.held_registrations.retain(|h| h.identity != identity);
                self.held_registrations.push(HeldRegistration {
                    identity,
                    reg,
                    deadline_ms: self.now_ms + self.config.probe_timeout_ms,
                    clashing,
                });
                return;
            }
            Some(if other.name == reg.name {
                RejectReason::NameTaken {
                    name: reg.name.clone(),
                }
            } else {
                RejectReason::AddressTaken {
                    address: reg.address.clone(),
                }
            })
        } else {
            None
        };
        if let Some(reason) = rejection {
            warn!(
                "rejecting worker {} from {}: {reason}",
                reg.address,
                String::from_utf8_lossy(&identity)
            );
            self.commands.push(Command::ToWorker {
                identity,
                msg: ToWorker::Rejected { reason },
                frames: vec![],
            });
            return;
        }
        if let Some(old) = self.workers.by_identity(&identity) {
            // The same process registering again (it lost the scheduler for a while): start
            // from what it reports now.
            self.remove_worker(old, false);
        }
        info!(
            "worker {} registered: name {}, {} threads, store {}, pid {}",
            reg.address, reg.name, reg.nthreads, reg.store, reg.pid
        );
        let id = self.workers.add(Worker {
            identity: identity.clone(),
            address: reg.address,
            name: reg.name,
            nthreads: reg.nthreads,
            memory_limit_bytes: reg.memory_limit_bytes,
            pid: reg.pid,
            store: reg.store,
            nanny_token: reg.nanny_token,
            has: HashSet::default(),
            processing: HashMap::default(),
            nbytes: 0,
            last_seen_ms: self.now_ms,
            messages_heard: 0,
            outbox: Vec::new(),
            retiring: false,
            retire_deadline_ms: 0,
        });
        let max_message_bytes = self.config.max_message_bytes;
        self.push_to_worker(id, ToWorker::Registered { max_message_bytes }, vec![]);
        self.adopt_held_keys(id, reg.keys);
        while let Some(s) = self.pending_scatters.pop_front() {
            self.start_scatter(s);
        }
        self.top_up_all_replicas();
        self.needs_scheduling = true;
        self.check_restart();
    }

    /// Starts keeping `replicas` copies of each key; answers once they exist (or as many as
    /// there are workers).
    fn replicate(&mut self, client: FrameIdentity, request: u64, keys: Vec<Key>, replicas: u32) {
        let mut ids = Vec::with_capacity(keys.len());
        for k in &keys {
            // A named value being recomputed (its holders died) is replicated once it is back.
            match self.names.get(k) {
                Some(t) if self.tasks.get(t).state != TaskState::Erred => ids.push(t),
                _ => {
                    let error = RequestError::NotFound { key: k.clone() };
                    self.reply(&client, ToClient::Failed { request, error });
                    return;
                }
            }
        }
        for &t in &ids {
            self.tasks.get_mut(t).replicas = replicas;
            self.top_up_replicas(t);
        }
        let tasks = ids
            .into_iter()
            .map(|t| (t, self.tasks.get(t).key.clone()))
            .collect();
        self.replications.push(PendingReplication {
            client,
            request,
            tasks,
        });
        self.check_replications();
    }

    /// A worker asked to leave (SIGTERM): it takes no new task, its results that exist
    /// nowhere else and are still needed are copied to other workers, then it is closed.
    fn retire_worker(&mut self, w: WorkerId) {
        let Some(worker) = self.workers.get_mut(w) else {
            return;
        };
        info!("worker {} is retiring: moving its results", worker.address);
        worker.retiring = true;
        worker.retire_deadline_ms = self.now_ms + self.config.retire_timeout_ms;
        self.check_retirements();
    }

    /// Closes retiring workers once nothing depends on them, copying what must survive.
    fn check_retirements(&mut self) {
        let mut retiring: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.retiring)
            .map(|(id, _)| id)
            .collect();
        retiring.sort();
        for w in retiring {
            let Some(worker) = self.workers.get(w) else {
                continue;
            };
            let mut unique: Vec<TaskId> = worker
                .has
                .iter()
                .copied()
                .filter(|t| {
                    let task = self.tasks.get(*t);
                    task.needed()
                        && task
                            .who_has
                            .iter()
                            .all(|h| self.workers.get(*h).is_none_or(|hw| hw.retiring))
                })
                .collect();
            unique.sort();
            let done = worker.processing.is_empty() && unique.is_empty();
            let timed_out = self.now_ms >= worker.retire_deadline_ms;
            if done || timed_out {
                if !done {
                    warn!(
                        "worker {} did not finish retiring in time: closing it anyway",
                        worker.address
                    );
                }
                // Straight to the commands: the worker's outbox goes with it.
                let identity = worker.identity.clone();
                self.remove_worker(w, false);
                self.commands.push(Command::ToWorker {
                    identity,
                    msg: ToWorker::Close,
                    frames: vec![],
                });
                continue;
            }
            for t in unique {
                let have = self.tasks.get(t).who_has.len();
                self.copy_until(t, have + 1);
            }
        }
    }

    fn top_up_all_replicas(&mut self) {
        let mut protected: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.replicas > 1 && t.state == TaskState::Memory)
            .map(|(id, _)| id)
            .collect();
        protected.sort();
        for t in protected {
            self.top_up_replicas(t);
        }
    }

    /// Asks workers that lack a copy of `t` to fetch one, until its replica count is met.
    pub(super) fn top_up_replicas(&mut self, t: TaskId) {
        let live = self.workers.iter().filter(|(_, w)| !w.retiring).count();
        let want = (self.tasks.get(t).replicas as usize).min(live);
        self.copy_until(t, want);
    }

    /// Asks workers without a copy of `t` (and not retiring) to fetch one, until `want` copies
    /// exist or are on their way.
    fn copy_until(&mut self, t: TaskId, want: usize) {
        let task = self.tasks.get(t);
        if task.state != TaskState::Memory {
            return;
        }
        let in_flight = self.replicating.get(&t).map_or(0, Vec::len);
        let have = task.who_has.len() + in_flight;
        if have >= want {
            return;
        }
        let mut candidates: Vec<(u64, WorkerId)> = self
            .workers
            .iter()
            .filter(|(id, w)| {
                !w.retiring
                    && !task.who_has.contains(id)
                    && !self.replicating.get(&t).is_some_and(|ws| ws.contains(id))
            })
            .map(|(id, w)| (w.nbytes, id))
            .collect();
        candidates.sort();
        let holders: Vec<String> = task
            .who_has
            .iter()
            .map(|w| self.workers.address(*w))
            .collect();
        let key = task.key.clone();
        // A copy is a task that evaluates to its own key, fetched from a holder: the worker's
        // ordinary fetch-then-report path, and the report adds the new holder.
        let spec = crate::protocol::codec::encode_plain(&crate::graph::Expr::Ref(key.clone()));
        for (_, w) in candidates.into_iter().take(want - have) {
            self.replicating.entry(t).or_default().push(w);
            let ct = crate::protocol::ComputeTask {
                key: key.clone(),
                spec: spec.clone(),
                dependencies: vec![(key.clone(), holders.clone())],
                report_value: false,
            };
            if let Some(worker) = self.workers.get_mut(w) {
                match worker.outbox.last_mut() {
                    Some((ToWorker::Compute(batch), _)) => batch.push(ct),
                    _ => worker.outbox.push((ToWorker::Compute(vec![ct]), vec![])),
                }
            }
        }
    }

    /// Answers the `replicate` requests whose copies exist, or whose values are gone (released,
    /// failed) so that no copy will ever come.
    pub(super) fn check_replications(&mut self) {
        let workers = self.workers.iter().count();
        let mut done = Vec::new();
        self.replications.retain(|r| {
            let complete = r.tasks.iter().all(|(t, key)| {
                if !self.tasks.exists(*t) || self.tasks.get(*t).key != *key {
                    return true;
                }
                let task = self.tasks.get(*t);
                match task.state {
                    TaskState::Memory => {
                        task.who_has.len() >= (task.replicas as usize).min(workers)
                    }
                    state => !state.is_active(),
                }
            });
            if complete {
                done.push((r.client.clone(), r.request));
            }
            !complete
        });
        for (client, request) in done {
            self.reply(&client, ToClient::Done { request });
        }
    }

    /// Restarts the cluster: every request pending fails, every task and value is dropped,
    /// workers with a nanny get a fresh process and the others are emptied. Answers once the
    /// restarted workers are back (or the restart timeout passes).
    fn restart(&mut self, client: FrameIdentity, request: u64) {
        // A restart asked for while one is under way restarts again (what happened in between
        // is dropped too) and is answered with the first, when the workers are back.
        info!("restarting the cluster");
        let mut comps: Vec<CompId> = self.computations.keys().copied().collect();
        comps.sort();
        for c in comps {
            let comp = &self.computations[&c];
            let (who, req) = (comp.client.clone(), comp.request);
            self.reply(
                &who,
                ToClient::Failed {
                    request: req,
                    error: RequestError::Restarted,
                },
            );
            self.computations.remove(&c);
        }
        for cl in self.clients.values_mut() {
            cl.computations.clear();
        }
        let scatters: Vec<PendingScatter> = self
            .pending_scatters
            .drain(..)
            .chain(self.puts.drain().map(|(_, p)| p.scatter))
            .collect();
        for sc in scatters {
            self.reply(
                &sc.client,
                ToClient::Failed {
                    request: sc.request,
                    error: RequestError::Restarted,
                },
            );
        }
        self.journal(JournalOp::Clear);
        self.tasks = TaskTable::default();
        self.names.clear();
        self.ready.clear();
        self.output_of.clear();
        self.value_requests.clear();
        self.fetching_value.clear();
        self.replicating.clear();
        self.restrictions.clear();
        self.took_down.clear();
        // Published results are data, gone with the workers; stored collections are graphs
        // and stay.
        self.datasets.clear();
        for r in std::mem::take(&mut self.replications) {
            self.reply(
                &r.client,
                ToClient::Failed {
                    request: r.request,
                    error: RequestError::Restarted,
                },
            );
        }
        let expected = self.workers.iter().count() as u32;
        let ids: Vec<WorkerId> = self.workers.iter().map(|(id, _)| id).collect();
        for id in ids {
            let address = self.workers.address(id);
            match self.nanny_at(&address).cloned() {
                Some(nanny) => {
                    if let Some(w) = self.workers.remove(id) {
                        // Until its nanny has killed it, the old process may still try to
                        // register: it must not be given work or data that would die with it.
                        if let Some(token) = w.nanny_token {
                            let until = self.now_ms + self.config.restart_timeout_ms;
                            self.dead_tokens.insert(token, until);
                        }
                    }
                    self.commands.push(Command::ToWorker {
                        identity: nanny,
                        msg: ToWorker::Restart,
                        frames: vec![],
                    });
                }
                None => {
                    let w = self.workers.get_mut(id).expect("listed above");
                    w.has.clear();
                    w.processing.clear();
                    w.nbytes = 0;
                    w.outbox.clear();
                    w.outbox.push((ToWorker::Reset, vec![]));
                }
            }
        }
        let deadline_ms = self.now_ms + self.config.restart_timeout_ms;
        match &mut self.restart {
            Some(pending) => {
                pending.requests.push((client, request));
                pending.workers_expected = pending.workers_expected.max(expected);
                pending.deadline_ms = deadline_ms;
            }
            None => {
                self.restart = Some(PendingRestart {
                    requests: vec![(client, request)],
                    workers_expected: expected,
                    deadline_ms,
                })
            }
        }
        self.check_restart();
    }

    fn check_restart(&mut self) {
        let Some(r) = &self.restart else {
            return;
        };
        let back = self.workers.iter().count() as u32;
        let outcome = if back >= r.workers_expected {
            info!("restart done: {back} workers");
            None
        } else if self.now_ms >= r.deadline_ms {
            Some(RequestError::RestartIncomplete {
                expected: r.workers_expected,
                back,
            })
        } else {
            return;
        };
        let requests = self.restart.take().expect("checked above").requests;
        for (client, request) in requests {
            let reply = match &outcome {
                None => ToClient::Done { request },
                Some(error) => ToClient::Failed {
                    request,
                    error: error.clone(),
                },
            };
            self.reply(&client, reply);
        }
    }

    /// Removes a worker: reschedules what it was running, recomputes what only it held.
    /// `unexpected` losses count against the tasks it was running.
    fn remove_worker(&mut self, id: WorkerId, unexpected: bool) {
        let Some(worker) = self.workers.remove(id) else {
            return;
        };
        let address = worker.address.clone();
        warn_or_info(unexpected, &format!("removing worker {address}"));
        let others: Vec<WorkerId> = self.workers.iter().map(|(id, _)| id).collect();
        for w in others {
            self.push_to_worker(w, ToWorker::PeersLost(vec![address.clone()]), vec![]);
        }
        // Data it held: gone.
        let mut lost = Vec::new();
        for t in worker.has {
            let task = self.tasks.get_mut(t);
            task.who_has.retain(|w| *w != id);
            if task.who_has.is_empty() && task.state == TaskState::Memory {
                lost.push(t);
            }
        }
        // Tasks it was running or had queued: back to the others. Only the running ones (the
        // oldest `nthreads`) can have brought it down, so only they are blamed: a task queued
        // behind a crashing one must not fail for it.
        let mut processing: Vec<(u64, TaskId)> = worker
            .processing
            .into_iter()
            .map(|(t, a)| (a.seq, t))
            .collect();
        processing.sort();
        let running = worker.nthreads.max(1) as usize;
        for (i, &(_, t)) in processing.iter().enumerate() {
            if self.tasks.get(t).state == TaskState::Processing(id) {
                if unexpected && i < running {
                    self.tasks.get_mut(t).suspicious += 1;
                    self.took_down.entry(t).or_default().push(address.clone());
                }
                self.back_to_waiting(t);
            }
        }
        let processing: Vec<TaskId> = processing.into_iter().map(|(_, t)| t).collect();
        lost.sort();
        for t in lost {
            // An earlier loss may have failed a request and forgotten this task already.
            if self.tasks.exists(t) {
                self.data_lost(t, std::slice::from_ref(&address));
            }
        }
        // Copies it was making are not coming; copies it held need replacing.
        for ws in self.replicating.values_mut() {
            ws.retain(|w| *w != id);
        }
        self.top_up_all_replicas();
        if unexpected {
            let limit = self.config.allowed_failures;
            for t in processing {
                if !self.tasks.exists(t) {
                    continue;
                }
                let task = self.tasks.get(t);
                if task.suspicious > limit && task.state.is_active() {
                    let error = crate::protocol::TaskError {
                        kind: crate::protocol::TaskErrorKind::KilledWorker,
                        message: format!(
                            "task {:?} was running on {} workers that died unexpectedly (allowed_failures = {limit}): {}",
                            task.name(),
                            task.suspicious,
                            self.took_down.get(&t).map(|ws| ws.join(", ")).unwrap_or_default()
                        ),
                    };
                    let key = task.name().clone();
                    self.fail_task(t, tasks::task_failure(&key, error));
                }
            }
        }
        // Value fetches it owed us: ask someone else.
        let owed: Vec<u64> = self
            .value_requests
            .iter()
            .filter(|(_, (w, _))| *w == id)
            .map(|(r, _)| *r)
            .collect();
        for r in owed {
            if let Some((_, ts)) = self.value_requests.remove(&r) {
                for t in ts {
                    self.fetching_value.remove(&t);
                    if self.tasks.exists(t) {
                        self.request_value_if_needed(t);
                    }
                }
            }
        }
        let failed_puts: Vec<u64> = self
            .puts
            .iter()
            .filter(|(_, p)| {
                p.pending_workers.contains(&id) || p.placement.iter().any(|x| x.worker == id)
            })
            .map(|(r, _)| *r)
            .collect();
        for r in failed_puts {
            if let Some(p) = self.puts.remove(&r) {
                for placed in &p.placement {
                    if placed.worker != id {
                        self.push_release(placed.worker, vec![placed.key.clone()]);
                    }
                }
                // Scattering again is safe: storing a value twice overwrites it.
                self.start_scatter(p.scatter);
            }
        }
        self.check_replications();
        if self.workers.is_empty() && self.has_pending_work() {
            warn!("no workers left: pending work waits until a worker connects");
        }
        self.needs_scheduling = true;
    }

    fn has_pending_work(&self) -> bool {
        !self.computations.is_empty() || !self.pending_scatters.is_empty()
    }

    pub(crate) fn push_to_worker(&mut self, w: WorkerId, msg: ToWorker, frames: Vec<Frame>) {
        if let Some(worker) = self.workers.get_mut(w) {
            worker.outbox.push((msg, frames));
        }
    }

    pub(crate) fn push_release(&mut self, w: WorkerId, mut keys: Vec<crate::graph::Key>) {
        if let Some(worker) = self.workers.get_mut(w) {
            if let Some((ToWorker::Release(prev), _)) = worker.outbox.last_mut() {
                prev.append(&mut keys);
            } else {
                worker.outbox.push((ToWorker::Release(keys), vec![]));
            }
        }
    }

    fn add_holder(&mut self, t: TaskId, w: WorkerId) {
        let task = self.tasks.get_mut(t);
        if !task.who_has.contains(&w) {
            task.who_has.push(w);
            let nbytes = task.nbytes;
            if let Some(worker) = self.workers.get_mut(w) {
                worker.has.insert(t);
                worker.nbytes += nbytes;
            }
        }
    }

    /// Drops every copy of a task's data (telling the holders).
    fn drop_data(&mut self, t: TaskId) {
        let task = self.tasks.get_mut(t);
        let holders = std::mem::take(&mut task.who_has);
        let key = task.key.clone();
        let nbytes = task.nbytes;
        for w in holders {
            if let Some(worker) = self.workers.get_mut(w) {
                worker.has.remove(&t);
                worker.nbytes = worker.nbytes.saturating_sub(nbytes);
            }
            self.push_release(w, vec![key.clone()]);
        }
    }

    // ---- clients ----

    fn handle_client(&mut self, identity: FrameIdentity, msg: FromClient, frames: Vec<Frame>) {
        if !matches!(msg, FromClient::Goodbye) {
            self.clients
                .entry(identity.clone())
                .or_insert_with(|| ClientState {
                    last_seen_ms: 0,
                    computations: HashSet::default(),
                })
                .last_seen_ms = self.now_ms;
        }
        match msg {
            FromClient::Hello { protocol_version } => {
                if protocol_version != PROTOCOL_VERSION {
                    self.reply(
                        &identity,
                        ToClient::Failed {
                            request: 0,
                            error: RequestError::Protocol {
                                message: format!(
                                    "protocol version {protocol_version} is not supported; this scheduler speaks {PROTOCOL_VERSION}"
                                ),
                            },
                        },
                    );
                    return;
                }
                self.reply(
                    &identity,
                    ToClient::Welcome {
                        protocol_version: PROTOCOL_VERSION,
                        address_to_workers: self.config.address_to_workers.clone(),
                        address_to_clients: self.config.address_to_clients.clone(),
                    },
                );
            }
            FromClient::Ping { pending } => {
                // Requests travel before pings on the same connection, so anything pending that
                // is not known here was lost with a previous scheduler process.
                let known = self.requests_in_progress(&identity);
                for request in pending {
                    if !known.contains(&request) {
                        self.reply(
                            &identity,
                            ToClient::Failed {
                                request,
                                error: RequestError::SchedulerRestarted,
                            },
                        );
                    }
                }
                self.reply(&identity, ToClient::Pong);
            }
            FromClient::Submit {
                request,
                graph,
                outputs,
                keep_results,
                restrictions,
            } => self.submit(
                identity,
                request,
                Submission {
                    graph,
                    outputs,
                    keep_results,
                    restrictions,
                },
            ),
            FromClient::Gather { request, keys } => self.gather(identity, request, keys),
            FromClient::Scatter { request, keys } => {
                self.start_scatter(PendingScatter {
                    client: identity,
                    request,
                    keys,
                    values: frames,
                });
            }
            FromClient::WhoHas { request, keys } => {
                let who_has = self.who_has(keys);
                self.reply(&identity, ToClient::WhoHas { request, who_has });
            }
            FromClient::Status { request } => {
                let status = self.status();
                self.reply(&identity, ToClient::Status { request, status });
            }
            FromClient::Release { request, keys } => {
                for k in keys {
                    self.unname(&k);
                }
                self.reply(&identity, ToClient::Done { request });
            }
            FromClient::Cancel { request } => {
                let comp = self
                    .clients
                    .get(&identity)
                    .into_iter()
                    .flat_map(|c| c.computations.iter())
                    .find(|c| self.computations.get(c).map(|c| c.request) == Some(request))
                    .copied();
                if let Some(c) = comp {
                    self.end_computation(c);
                }
                self.cancel_replay(&identity, request);
            }
            FromClient::Goodbye => self.remove_client(&identity),
            FromClient::Restart { request } => self.restart(identity, request),
            FromClient::SetCollection {
                request,
                name,
                collection,
            } => self.set_collection(&identity, request, name, collection),
            FromClient::GetCollection { request, name } => {
                self.get_collection(&identity, request, name)
            }
            FromClient::ListCollections { request } => self.list_collections(&identity, request),
            FromClient::DeleteCollection { request, name } => {
                self.delete_collection(&identity, request, name)
            }
            FromClient::Persist {
                request,
                graph,
                outputs,
            } => self.persist(identity, request, graph, outputs),
            FromClient::Publish {
                request,
                name,
                collection,
            } => self.publish(&identity, request, name, collection),
            FromClient::GetDataset { request, name } => self.get_dataset(&identity, request, name),
            FromClient::Unpublish { request, name } => self.unpublish(&identity, request, name),
            FromClient::Replicate {
                request,
                keys,
                replicas,
            } => self.replicate(identity, request, keys, replicas),
        }
    }

    /// The client's requests that will be answered later.
    fn requests_in_progress(&self, client: &FrameIdentity) -> HashSet<u64> {
        let mut known: HashSet<u64> = self
            .clients
            .get(client)
            .into_iter()
            .flat_map(|c| c.computations.iter())
            .filter_map(|c| self.computations.get(c).map(|c| c.request))
            .collect();
        let mine = |c: &FrameIdentity| c == client;
        known.extend(
            self.pending_scatters
                .iter()
                .chain(self.puts.values().map(|p| &p.scatter))
                .filter(|s| mine(&s.client))
                .map(|s| s.request),
        );
        known.extend(
            self.replications
                .iter()
                .filter(|r| mine(&r.client))
                .map(|r| r.request),
        );
        known.extend(
            self.restart
                .iter()
                .flat_map(|r| r.requests.iter())
                .filter(|(c, _)| mine(c))
                .map(|(_, r)| *r),
        );
        known.extend(self.replay_requests(client));
        known
    }

    fn remove_client(&mut self, identity: &FrameIdentity) {
        if let Some(client) = self.clients.remove(identity) {
            let mut comps: Vec<CompId> = client.computations.into_iter().collect();
            comps.sort();
            for c in comps {
                self.end_computation(c);
            }
        }
    }

    fn reply(&mut self, identity: &FrameIdentity, msg: ToClient) {
        self.commands.push(Command::ToClient {
            identity: identity.clone(),
            msg,
            frames: vec![],
        });
    }

    /// Where the values of `keys` are: the named value of a key, else every definition of it
    /// the scheduler tracks (one pass over the tasks for all such keys).
    fn who_has(&self, keys: Vec<Key>) -> Vec<(Key, Vec<String>)> {
        let unnamed: HashSet<&Key> = keys
            .iter()
            .filter(|k| self.names.get(k).is_none())
            .collect();
        let mut by_name: HashMap<&Key, Vec<WorkerId>> = HashMap::default();
        if !unnamed.is_empty() {
            for (_, t) in self.tasks.iter() {
                if let Some(k) = unnamed.get(t.name()) {
                    by_name
                        .entry(k)
                        .or_default()
                        .extend(t.who_has.iter().copied());
                }
            }
        }
        keys.iter()
            .map(|k| {
                let mut holders: Vec<WorkerId> = match self.names.get(k) {
                    Some(t) => self.tasks.get(t).who_has.clone(),
                    None => by_name.get(k).cloned().unwrap_or_default(),
                };
                holders.sort();
                holders.dedup();
                let addresses = holders.iter().map(|w| self.workers.address(*w)).collect();
                (k.clone(), addresses)
            })
            .collect()
    }

    pub fn status(&self) -> ClusterStatus {
        let mut workers: Vec<WorkerInfo> = self
            .workers
            .iter()
            .map(|(_, w)| WorkerInfo {
                address: w.address.clone(),
                name: w.name.clone(),
                pid: w.pid,
                nthreads: w.nthreads,
                memory_limit_bytes: w.memory_limit_bytes,
                store: w.store.clone(),
                keys: {
                    let mut keys: Vec<_> = w
                        .has
                        .iter()
                        .map(|t| self.tasks.get(*t).name().clone())
                        .collect();
                    keys.sort();
                    keys.dedup();
                    keys
                },
                processing: w.processing.len() as u64,
            })
            .collect();
        workers.sort_by(|a, b| a.address.cmp(&b.address));
        let (mut processing, mut in_memory) = (0, 0);
        for (_, t) in self.tasks.iter() {
            match t.state {
                TaskState::Processing(_) => processing += 1,
                TaskState::Memory => in_memory += 1,
                _ => {}
            }
        }
        ClusterStatus {
            address_to_workers: self.config.address_to_workers.clone(),
            address_to_clients: self.config.address_to_clients.clone(),
            workers,
            tasks: self.tasks.len() as u64,
            processing,
            in_memory,
            clients: self.clients.len() as u64,
        }
    }

    fn next_request_id(&mut self) -> u64 {
        let r = self.next_request;
        self.next_request += 1;
        r
    }

    /// Checks the internal invariants; used by tests and the simulator after every step.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (id, t) in self.tasks.iter() {
            let active_dependents = t
                .dependents
                .iter()
                .filter(|d| self.tasks.get(**d).state.is_active())
                .count() as u32;
            if active_dependents != t.waiters {
                return Err(format!(
                    "task {:?}: waiters {} but {} active dependents",
                    t.key, t.waiters, active_dependents
                ));
            }
            for w in &t.who_has {
                match self.workers.get(*w) {
                    None => return Err(format!("task {:?} held by a removed worker", t.key)),
                    Some(worker) if !worker.has.contains(&id) => {
                        return Err(format!("task {:?}: holder does not list it", t.key))
                    }
                    _ => {}
                }
            }
            match t.state {
                TaskState::Memory if t.who_has.is_empty() => {
                    return Err(format!("task {:?} in memory with no holder", t.key))
                }
                TaskState::Memory => {}
                _ if !t.who_has.is_empty() => {
                    return Err(format!("task {:?} is {:?} but has holders", t.key, t.state))
                }
                TaskState::Processing(w) => match self.workers.get(w) {
                    Some(worker) if worker.processing.contains_key(&id) => {}
                    _ => return Err(format!("task {:?} processing on an unknown worker", t.key)),
                },
                TaskState::Waiting => {
                    let not_in_memory = t
                        .dependencies
                        .iter()
                        .filter(|d| self.tasks.get(**d).state != TaskState::Memory)
                        .count() as u32;
                    if not_in_memory != t.waiting_on || not_in_memory == 0 {
                        return Err(format!(
                            "task {:?} waiting on {} but {} dependencies are not in memory",
                            t.key, t.waiting_on, not_in_memory
                        ));
                    }
                }
                TaskState::Ready
                    if t.dependencies
                        .iter()
                        .any(|d| self.tasks.get(*d).state != TaskState::Memory) =>
                {
                    return Err(format!("task {:?} ready with missing inputs", t.key));
                }
                _ => {}
            }
            if t.state.is_active() && !t.needed() {
                return Err(format!(
                    "task {:?} is {:?} but nobody needs it",
                    t.key, t.state
                ));
            }
        }
        let mut pins: HashMap<TaskId, u32> = HashMap::default();
        for (key, t) in self.names.iter() {
            if !self.tasks.exists(t) {
                return Err(format!("{key:?} names a forgotten task"));
            }
            if self.tasks.get(t).name() != key {
                return Err(format!("{key:?} names a task of another key"));
            }
            *pins.entry(t).or_default() += 1;
        }
        for (name, (_, ids)) in &self.datasets {
            for t in ids {
                if !self.tasks.exists(*t) {
                    return Err(format!("dataset {name:?} holds a forgotten task"));
                }
                *pins.entry(*t).or_default() += 1;
            }
        }
        for (id, t) in self.tasks.iter() {
            let expected = pins.get(&id).copied().unwrap_or(0);
            if t.pins != expected {
                return Err(format!(
                    "task {:?}: {} pins but {expected} names and datasets hold it",
                    t.key, t.pins
                ));
            }
        }
        for (wid, w) in self.workers.iter() {
            for t in w.processing.keys() {
                if self.tasks.get(*t).state != TaskState::Processing(wid) {
                    return Err(format!(
                        "worker {} lists a task not processing there",
                        w.address
                    ));
                }
            }
        }
        Ok(())
    }

    /// The key (as clients write it) of the task workers know by `wire_key` (for tests and
    /// diagnostics).
    pub fn key_of(&self, wire_key: &Key) -> Option<Key> {
        self.tasks
            .id(wire_key)
            .map(|t| self.tasks.get(t).name().clone())
    }

    /// The state of the task `key` names, else of some task of that key (for tests).
    pub fn task_state(&self, key: &crate::graph::Key) -> Option<TaskState> {
        match self.names.get(key) {
            Some(t) => Some(self.tasks.get(t).state),
            None => self
                .tasks
                .iter()
                .filter(|(_, t)| t.name() == key)
                .map(|(_, t)| t.state)
                .next(),
        }
    }

    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }
}

fn warn_or_info(warn: bool, msg: &str) {
    if warn {
        log::warn!("{msg}");
    } else {
        log::info!("{msg}");
    }
}

#[cfg(test)]
mod tests;

//! The worker's IO layer: one thread owns the state machine, the store, a DEALER to the
//! scheduler, a ROUTER that peers fetch data from, and one DEALER per peer it fetches from.
//! Executor threads hand results back through a channel and a waker. What each of the core's
//! commands does is `runtime.rs`'s job (shared with the simulation); this file only moves
//! bytes and reads the clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use log::{debug, error, info, warn};
use zask_storage::{Bytes, SpillingStore, Store, StoreSpec};

use super::core::{ShutdownReason, WorkerCore, WorkerCoreConfig, WorkerEvent};
use super::executor::{Executor, JobResult};
use super::registry::Registry;
use super::runtime::{Transport, WorkerRuntime};
use crate::net::{self, Clock, Endpoint, Waker};
use crate::protocol::codec::{encode, split, split_peer_reply};
use crate::protocol::{
    ConnectionId, Frame, FromWorker, PeerReply, PeerRequest, ToWorker, WorkerAddress, WorkerName,
    WorkerRegistration, PROTOCOL_VERSION,
};
use crate::security::{self, Access, Role, SecurityError, ZapHandler, ZapPolicy, PEERS_DOMAIN};

/// How to run a worker.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The scheduler's worker port, e.g. tcp://127.0.0.1:4444.
    pub scheduler: String,
    /// Threads running tasks; defaults to the machine's cores.
    pub nthreads: u32,
    /// A name for logs, `status` and restrictions; defaults to the peer address's text.
    pub name: Option<WorkerName>,
    /// Where the peer port listens; None: loopback when the scheduler is on loopback, else
    /// every interface (advertised by hostname).
    pub host: Option<String>,
    /// Peer port; 0 picks a free one.
    pub peer_port: u16,
    /// Where results live: memory (the default) or a sled database on disk.
    pub store: StoreSpec,
    /// The most data the worker holds in memory, by the sizes its store reports; reported to
    /// the scheduler and enforced by the core (`worker/core/memory.rs`: past `TARGET_FRACTION`
    /// the least recently used values spill to disk (see `spill`), past `PAUSE_FRACTION` no
    /// new task starts; a result that cannot fit fails with `TaskErrorKind::MemoryLimit`).
    /// 0 (the default) means no limit: a worker started from code sizes nothing by itself.
    pub memory_limit_bytes: u64,
    /// Where a worker with a memory limit and a memory store spills values to. Default
    /// `SpillTo::TempDir`: a fresh directory under the system's temporary directory, removed
    /// when the worker stops. Ignored without a memory limit and with a store on disk (sled:
    /// nothing to spill).
    pub spill: SpillTo,
    /// How often the worker tells the scheduler it is alive. Default 500 ms: the scheduler's
    /// heartbeat timeout (3 s) is six of these, so one late heartbeat never loses a worker.
    pub heartbeat_interval_ms: u64,
    /// How long to wait for a peer's data before asking another holder. Default 5 s.
    pub fetch_timeout_ms: u64,
    /// Stop after this long without word from the scheduler. Default 60 s: long enough for a
    /// scheduler restarted from its state directory to come back.
    pub death_timeout_ms: u64,
    /// The largest message part the worker's sockets accept (ZeroMQ drops bigger ones; -1: no
    /// limit). A result bigger than this or than the scheduler's limit fails its task.
    /// Default: `net::DEFAULT_MAX_MESSAGE_BYTES`, as the scheduler's.
    pub max_message_bytes: i64,
    /// The secret of the nanny supervising this process (`ZASK_NANNY_TOKEN`, set by the
    /// nanny); sent at registration so the scheduler believes that nanny's reports about it.
    /// Default `None`: no nanny, so nobody may speak for this worker.
    pub nanny_token: Option<u64>,
    /// ZeroMQ high-water mark of each of the worker's connections (scheduler, peers), in
    /// messages, each way (default 10,000). Never reached while the other side reads: the
    /// scheduler gives a worker at most threads + `worker_queue_extra` tasks at a time and a
    /// worker sends a few messages per task plus two heartbeats a second. If the scheduler
    /// stops reading that long, a message to it is dropped and logged as an error (the
    /// scheduler's own bounds remove a worker that does not read). A peer that does not read
    /// its replies loses them (ROUTER at its high-water mark): its fetch times out after
    /// `fetch_timeout_ms` and it asks another holder.
    pub queue_max_messages: i32,
    /// A "zero worker" for measuring the scheduler: every task is reported done at once with a
    /// null result, without running it. Default false: tasks run.
    pub zero: bool,
    /// Registers as a worker that runs Python functions (`WorkerSelector::Python`). Only the
    /// scheduler's bridge to a 2015 Python worker sets it; its registry has `python`.
    pub runs_python: bool,
    /// The process id to report instead of this process's: a bridge reports its Python
    /// worker's, so `status` never names the scheduler's process as a worker's.
    pub reported_pid: Option<u32>,
    /// The worker's access (a worker's access file): it connects to the scheduler and to
    /// peers with CURVE, presenting the worker key, and serves its peer port with CURVE to
    /// the worker key only. `None` (the default of this struct; `zask-worker` reads an access
    /// file unless told `--insecure`): plaintext, for a scheduler without security.
    pub security: Option<Access>,
}

impl WorkerConfig {
    pub fn new(scheduler: impl Into<String>) -> WorkerConfig {
        WorkerConfig {
            scheduler: scheduler.into(),
            nthreads: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            name: None,
            host: None,
            peer_port: 0,
            store: StoreSpec::Memory,
            memory_limit_bytes: 0,
            spill: SpillTo::TempDir,
            heartbeat_interval_ms: 500,
            fetch_timeout_ms: 5000,
            death_timeout_ms: 60_000,
            max_message_bytes: net::DEFAULT_MAX_MESSAGE_BYTES,
            nanny_token: None,
            queue_max_messages: 10_000,
            zero: false,
            runs_python: false,
            reported_pid: None,
            security: None,
        }
    }
}

/// Where a worker spills values past the target fraction of its memory limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpillTo {
    /// A fresh directory under the system's temporary directory (`std::env::temp_dir`).
    TempDir,
    /// A fresh directory inside this one (created if missing), so workers may share it.
    Dir(std::path::PathBuf),
    /// Nowhere: values stay in memory, and a result that does not fit fails its task.
    Off,
}

/// The store a worker with `config` runs over: its store spec's, or, for a memory store with
/// a memory limit, a store that spills where `config.spill` says. A spill directory that
/// cannot be made fails the start (naming it), never silently turns spilling off.
pub fn open_store(config: &WorkerConfig) -> Result<Box<dyn Store>, zask_storage::StoreError> {
    let parent = match (&config.store, config.memory_limit_bytes, &config.spill) {
        (StoreSpec::Memory, limit, SpillTo::TempDir) if limit > 0 => std::env::temp_dir(),
        (StoreSpec::Memory, limit, SpillTo::Dir(dir)) if limit > 0 => dir.clone(),
        _ => return config.store.open(),
    };
    Ok(Box::new(SpillingStore::open(parent)?))
}

/// Why a worker stopped other than by its owner's wish or the scheduler's `Close`.
#[derive(Clone, Debug, PartialEq)]
pub enum WorkerError {
    /// It stopped on its own: rejected by the scheduler, or the scheduler is gone.
    Shutdown(ShutdownReason),
    /// Its IO failed (a poll error, a panic): a crash, which a restart may cure.
    Failed(String),
}

impl WorkerError {
    /// The exit code of a `zask-worker` that stopped with this error (see
    /// `ShutdownReason::exit_code`; 1 for a failure).
    pub fn exit_code(&self) -> i32 {
        match self {
            WorkerError::Shutdown(reason) => reason.exit_code(),
            WorkerError::Failed(_) => 1,
        }
    }
}

impl std::fmt::Display for WorkerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerError::Shutdown(reason) => write!(f, "{reason}"),
            WorkerError::Failed(message) => write!(f, "the worker failed: {message}"),
        }
    }
}

impl std::error::Error for WorkerError {}

/// A running worker. Dropping it stops it (gracefully: the scheduler is told).
pub struct Worker {
    address: WorkerAddress,
    stop: Arc<AtomicBool>,
    retire: Arc<AtomicBool>,
    waker: Waker,
    thread: Option<JoinHandle<Result<(), WorkerError>>>,
    /// Answers its peer port's CURVE handshakes (dropped after the thread stops).
    _zap: Option<ZapHandler>,
}

impl Worker {
    pub fn start(config: WorkerConfig, registry: Registry) -> Result<Worker, net::StartError> {
        let store = open_store(&config)?;
        Worker::start_with_store(config, registry, store)
    }

    /// Starts a worker keeping its results in `store` (any `Store`; `config.store` is then
    /// not used).
    pub fn start_with_store(
        config: WorkerConfig,
        registry: Registry,
        store: Box<dyn Store>,
    ) -> Result<Worker, net::StartError> {
        // A panic in one of the worker's threads, outside a task, ends the process.
        crate::fatal::install();
        let scheduler = Endpoint::parse(&config.scheduler)?;
        let ctx = zmq::Context::new();
        let socket_error = |what| move |e| net::StartError::socket(what, e);
        // Two ZeroMQ IO threads, the connection to the scheduler alone on the first: a big
        // value going to or coming from a peer (seconds of CurveZMQ) never holds up the
        // heartbeats the scheduler judges this worker by.
        ctx.set_io_threads(2)
            .map_err(socket_error("setting the IO threads"))?;
        let to_scheduler = ctx
            .socket(zmq::DEALER)
            .map_err(socket_error("making the scheduler socket"))?;
        to_scheduler
            .set_affinity(SCHEDULER_IO_THREAD)
            .map_err(socket_error("setting the scheduler socket's IO thread"))?;
        let peers = ctx
            .socket(zmq::ROUTER)
            .map_err(socket_error("making the peer socket"))?;
        peers
            .set_affinity(PEERS_IO_THREAD)
            .map_err(socket_error("setting the peer socket's IO thread"))?;
        let hwm = config.queue_max_messages;
        for s in [&to_scheduler, &peers] {
            net::configure_bounded(s, config.max_message_bytes, hwm)
                .map_err(socket_error("setting socket options"))?;
        }
        let secure = net::StartError::Security;
        let zap = match &config.security {
            Some(access) => {
                let peer_keys = access.peers.clone().ok_or_else(|| {
                    secure(SecurityError::WrongRole {
                        path: Default::default(),
                        got: access.role,
                        expected: vec![Role::Worker],
                    })
                })?;
                let mut policy = ZapPolicy::default();
                policy.allow(PEERS_DOMAIN, &access.key.public, Role::Worker);
                let zap = ZapHandler::start(&ctx, policy).map_err(secure)?;
                security::serve(&peers, &peer_keys, PEERS_DOMAIN).map_err(secure)?;
                security::connect_as(&to_scheduler, &access.scheduler_public, &access.key)
                    .map_err(secure)?;
                Some(zap)
            }
            None => None,
        };
        let host = config.host.clone().unwrap_or_else(|| {
            if scheduler.is_loopback() {
                "127.0.0.1".into()
            } else {
                "0.0.0.0".into()
            }
        });
        let address = WorkerAddress::from(net::bind(&peers, &host, config.peer_port)?);
        to_scheduler
            .set_identity(&net::unique_identity("worker"))
            .map_err(socket_error("setting the socket identity"))?;
        to_scheduler
            .connect(&config.scheduler)
            .map_err(|error| net::StartError::Connect {
                address: config.scheduler.clone(),
                error,
            })?;
        let nthreads = config.nthreads.max(1);
        let registration = WorkerRegistration {
            protocol_version: PROTOCOL_VERSION,
            address: address.clone(),
            name: config
                .name
                .clone()
                .unwrap_or_else(|| WorkerName::from(address.as_str())),
            nthreads,
            memory_limit_bytes: config.memory_limit_bytes,
            pid: config.reported_pid.unwrap_or_else(std::process::id),
            store: store.kind(),
            keys: vec![],
            nanny_token: config.nanny_token,
            runs_python: config.runs_python,
        };
        let core = WorkerCore::new(WorkerCoreConfig {
            registration,
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            fetch_timeout_ms: config.fetch_timeout_ms,
            death_timeout_ms: config.death_timeout_ms,
            // Negative: ZeroMQ's "no limit".
            max_message_bytes: u64::try_from(config.max_message_bytes).unwrap_or(u64::MAX),
        });
        let (waker, wake_rx) =
            net::waker().map_err(|e| net::StartError::resource("making a waker", e))?;
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let notify = {
            let waker = waker.clone();
            move || waker.wake()
        };
        let executor = Executor::start(nthreads as usize, registry, done_tx, notify);
        let stop = Arc::new(AtomicBool::new(false));
        let retire = Arc::new(AtomicBool::new(false));
        info!(
            "worker {address} connecting to {} with {nthreads} threads, store {}",
            config.scheduler,
            store.kind()
        );
        let transport = ZmqTransport {
            ctx,
            to_scheduler,
            peers,
            peer_sockets: HashMap::new(),
            max_message_bytes: config.max_message_bytes,
            queue_max_messages: config.queue_max_messages,
            security: config.security.clone(),
        };
        let io = WorkerIo {
            runtime: WorkerRuntime::new(core, store, transport, executor, config.zero),
            done: done_rx,
            clock: Clock::start(),
        };
        let thread = {
            let stop = stop.clone();
            let retire = retire.clone();
            crate::fatal::spawn_service("zask-worker", move || io.run(wake_rx, stop, retire))
                .map_err(|e| net::StartError::resource("starting the worker thread", e))?
        };
        Ok(Worker {
            address,
            stop,
            retire,
            waker,
            thread: Some(thread),
            _zap: zap,
        })
    }

    /// Whether the worker is still running (not closed, rejected or failed).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Where peers fetch data from; also the worker's address in `status`.
    pub fn address(&self) -> &WorkerAddress {
        &self.address
    }

    /// Blocks until the worker stops: `Ok` when the scheduler closed it, else why it stopped.
    pub fn wait(mut self) -> Result<(), WorkerError> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(WorkerError::Failed("worker thread panicked".into()))),
            None => Ok(()),
        }
    }

    /// Leaves the scheduler gracefully and stops.
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    /// Leaves gracefully after the scheduler has moved this worker's results elsewhere (what
    /// SIGTERM does), or after a few seconds if it does not answer.
    pub fn retire(mut self) {
        self.retire.store(true, Ordering::SeqCst);
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// The end of the IO thread when the core says stop: closed is a normal end.
fn stopped(reason: ShutdownReason) -> Result<(), WorkerError> {
    info!("worker stopping: {reason}");
    match reason {
        ShutdownReason::Closed => Ok(()),
        // Still an `Err`: `zask-worker` tells its nanny why (so it stops too) and exits 0.
        other => Err(WorkerError::Shutdown(other)),
    }
}

/// How long a retiring worker waits for the scheduler's `Close` before leaving anyway (longer
/// than the scheduler's own retire timeout).
const RETIRE_WAIT_MS: u64 = 3_000;

/// The worker's sockets: the DEALER to the scheduler, the ROUTER peers fetch from, and one
/// DEALER per peer this worker fetches from.
struct ZmqTransport {
    ctx: zmq::Context,
    to_scheduler: zmq::Socket,
    peers: zmq::Socket,
    /// DEALERs to peers we fetch from, by address.
    peer_sockets: HashMap<WorkerAddress, zmq::Socket>,
    max_message_bytes: i64,
    queue_max_messages: i32,
    /// How to reach peers' CURVE peer ports (None: plaintext).
    security: Option<Access>,
}

/// The ZeroMQ IO thread (as an affinity mask) of the connection to the scheduler, and of the
/// peer sockets.
const SCHEDULER_IO_THREAD: u64 = 1;
const PEERS_IO_THREAD: u64 = 2;

impl ZmqTransport {
    fn peer_socket(&mut self, address: &WorkerAddress) -> Result<&zmq::Socket, String> {
        if !self.peer_sockets.contains_key(address) {
            Endpoint::parse(address.as_str()).map_err(|e| e.to_string())?;
            let s = self.ctx.socket(zmq::DEALER).map_err(|e| e.to_string())?;
            s.set_affinity(PEERS_IO_THREAD).map_err(|e| e.to_string())?;
            net::configure_bounded(&s, self.max_message_bytes, self.queue_max_messages)
                .map_err(|e| e.to_string())?;
            if let Some(access) = &self.security {
                let peers = access
                    .peers
                    .as_ref()
                    .ok_or("a worker access without peer keys")?;
                security::connect_as(&s, &peers.public, &access.key).map_err(|e| e.to_string())?;
            }
            s.connect(address.as_str()).map_err(|e| e.to_string())?;
            self.peer_sockets.insert(address.clone(), s);
        }
        Ok(&self.peer_sockets[address])
    }
}

impl Transport for ZmqTransport {
    fn to_scheduler(&mut self, msg: &FromWorker, frames: Vec<Frame>) {
        match net::send(&self.to_scheduler, None, encode(msg), frames) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => error!(
                "the queue to the scheduler is full (it has not read {} messages): message dropped",
                self.queue_max_messages
            ),
            Err(e) => warn!("could not send to the scheduler: {e}"),
        }
    }

    fn to_peer(&mut self, address: &WorkerAddress, msg: &PeerRequest) {
        let msg = encode(msg);
        match self.peer_socket(address) {
            Ok(s) => {
                if let Err(e) = net::send(s, None, msg, vec![]) {
                    warn!("could not send a fetch to {address}: {e}");
                }
            }
            Err(e) => warn!("cannot reach peer {address}: {e}"),
        }
    }

    fn reply_to_peer(&mut self, peer: &ConnectionId, msg: &PeerReply, frames: Vec<Bytes>) {
        let header = encode(msg);
        if let Err(e) = net::send_shared(&mut self.peers, Some(peer.as_bytes()), header, frames) {
            debug!("could not answer a peer: {e}");
        }
    }
}

/// The IO thread: polls the sockets and the executor's waker, and hands everything to the
/// shared runtime (`runtime.rs`), which owns the core and the store.
struct WorkerIo {
    runtime: WorkerRuntime<ZmqTransport, Executor>,
    done: Receiver<JobResult>,
    clock: Clock,
}

impl WorkerIo {
    fn run(
        mut self,
        wake: net::WakeReceiver,
        stop: Arc<AtomicBool>,
        retire: Arc<AtomicBool>,
    ) -> Result<(), WorkerError> {
        self.runtime.register(self.clock.now_ms());
        if let Some(reason) = self.runtime.run_commands(self.clock.now_ms()) {
            return stopped(reason);
        }
        // Set once the worker asked to retire: it leaves by then even without an answer.
        let mut retire_by: Option<u64> = None;
        loop {
            let now = self.clock.now_ms();
            if retire_by.is_none() && retire.load(Ordering::SeqCst) {
                info!("retiring: asking the scheduler to move this worker's results");
                self.runtime.to_scheduler(&FromWorker::Retire);
                retire_by = Some(now + RETIRE_WAIT_MS);
            }
            if stop.load(Ordering::SeqCst) || retire_by.is_some_and(|t| now >= t) {
                let _ = net::send(
                    &self.runtime.transport().to_scheduler,
                    None,
                    encode(&FromWorker::Goodbye),
                    vec![],
                );
                // Give the goodbye a moment to leave before the socket closes.
                std::thread::sleep(std::time::Duration::from_millis(20));
                return Ok(());
            }
            let timeout = self
                .runtime
                .core()
                .next_deadline()
                .min(retire_by.unwrap_or(u64::MAX))
                .saturating_sub(self.clock.now_ms())
                .clamp(1, 1000) as i64;
            let transport = self.runtime.transport();
            let peer_addresses: Vec<WorkerAddress> =
                transport.peer_sockets.keys().cloned().collect();
            let readable = {
                let mut items = vec![
                    transport.to_scheduler.as_poll_item(zmq::POLLIN),
                    transport.peers.as_poll_item(zmq::POLLIN),
                    zmq::PollItem::from_fd(wake.fd(), zmq::POLLIN),
                ];
                for a in &peer_addresses {
                    items.push(transport.peer_sockets[a].as_poll_item(zmq::POLLIN));
                }
                if let Err(e) = net::poll(&mut items, timeout) {
                    return Err(WorkerError::Failed(format!("poll failed: {e}")));
                }
                items.iter().map(|i| i.is_readable()).collect::<Vec<bool>>()
            };
            let now = self.clock.now_ms();
            if readable[0] {
                while let Some(frames) = net::try_recv(&self.runtime.transport().to_scheduler) {
                    self.on_scheduler_message(now, frames);
                }
            }
            if readable[1] {
                while let Some(frames) = net::try_recv(&self.runtime.transport().peers) {
                    self.on_peer_request(now, frames);
                }
            }
            if readable[2] {
                wake.reset();
            }
            for r in self.done.try_iter().collect::<Vec<_>>() {
                self.runtime.job_done(now, r);
            }
            for (i, address) in peer_addresses.iter().enumerate() {
                if readable[3 + i] {
                    while let Some(parts) =
                        net::try_recv_parts(&self.runtime.transport().peer_sockets[address])
                    {
                        self.on_peer_reply(now, address, parts);
                    }
                }
            }
            self.runtime.tick(now);
            if let Some(reason) = self.runtime.run_commands(now) {
                return stopped(reason);
            }
        }
    }

    fn on_scheduler_message(&mut self, now: u64, frames: Vec<Frame>) {
        let counted = |m: &ToWorker| match m {
            ToWorker::PutData { keys, .. } => keys.len(),
            _ => 0,
        };
        match split(frames, counted) {
            Ok((msg, frames)) => self
                .runtime
                .handle(now, WorkerEvent::FromScheduler { msg, frames }),
            Err(e) => warn!("dropping malformed message from the scheduler: {e}"),
        }
    }

    fn on_peer_request(&mut self, now: u64, mut frames: Vec<Frame>) {
        if frames.len() < 2 {
            warn!("dropping a peer message with no identity or body");
            return;
        }
        let peer = ConnectionId::from(frames.remove(0));
        match split::<PeerRequest>(frames, |_| 0) {
            Ok((msg, _)) => self
                .runtime
                .handle(now, WorkerEvent::FromPeer { peer, msg }),
            Err(e) => {
                warn!("dropping malformed peer request: {e}");
                let reply = PeerReply::Error {
                    message: format!("malformed request: {e}"),
                };
                self.runtime
                    .transport_mut()
                    .reply_to_peer(&peer, &reply, vec![]);
            }
        }
    }

    /// A peer's reply, its values joined from their chunks straight out of ZeroMQ's buffers
    /// (one copy), none larger than this worker's `max_message_bytes`.
    fn on_peer_reply(&mut self, now: u64, address: &WorkerAddress, parts: Vec<zmq::Message>) {
        let value_bytes_max =
            u64::try_from(self.runtime.transport().max_message_bytes).unwrap_or(u64::MAX);
        match split_peer_reply(parts, value_bytes_max) {
            Ok((msg, frames)) => self.runtime.handle(
                now,
                WorkerEvent::PeerAnswered {
                    address: address.clone(),
                    msg,
                    frames,
                },
            ),
            Err(e) => warn!("dropping malformed reply from peer {address}: {e}"),
        }
    }
}

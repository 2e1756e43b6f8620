//! The scheduler's IO layer: two ROUTER sockets (workers, clients), each owned by its own thread
//! that turns bytes into events and commands into bytes, and one thread that owns the state
//! machine. Crossbeam channels connect them; malformed input is answered or logged and dropped
//! right at the socket thread. This file: the config, starting and stopping, and the core
//! thread (batching, journal before messages); `sockets.rs`: the socket threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use log::{info, warn};

use super::core::{Command, CoreConfig, Event, Recovered, SchedulerCore};
use super::dashboard::{Dashboard, DashboardConfig, DashboardError, Publisher, SnapshotCell};
use super::journal::{Journal, JournalError, JournalWrite};
use crate::net::{self, Clock, StartError, Waker};
use crate::protocol::{ClientRole, ConnectionId, Frame, ToClient, ToWorker};
use crate::security::{
    self, ClusterKeys, Role, SecurityError, ZapHandler, CLIENTS_DOMAIN, WORKERS_DOMAIN,
};

mod legacy;
mod legacy_graph;
mod legacy_workers;
mod rate;
mod sockets;
#[cfg(test)]
mod tests;

use legacy::LegacyRequest;
use legacy_workers::{BridgeSettings, LegacyWorkers};
use sockets::{
    decode_client, decode_legacy_client, decode_legacy_worker, decode_worker, socket_loop, Decoded,
    Peer,
};

/// Which port a socket thread owns: says what a peer that stopped reading means, and where a
/// legacy request came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Port {
    Workers,
    Clients,
}

impl Port {
    fn name(self) -> &'static str {
        match self {
            Port::Workers => "worker",
            Port::Clients => "client",
        }
    }
}

/// What the socket threads hand to the core thread: an event for the core, or a 2015-protocol
/// request, which the core thread answers itself (`legacy.rs`) from the core's read-only views;
/// the core never sees it.
#[derive(Debug)]
pub(crate) enum Input {
    Core(Event),
    Legacy(LegacyRequest),
}

/// How to run a scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Interface to listen on; 0.0.0.0 listens everywhere and advertises the hostname.
    /// Default 127.0.0.1: nothing is reachable from other machines unless asked for.
    pub host: String,
    /// Port for workers; 0 (the default) picks a free one.
    pub worker_port: u16,
    /// Port for clients; 0 (the default) picks a free one.
    pub client_port: u16,
    /// Messages larger than this are dropped by ZeroMQ (ZMQ_MAXMSGSIZE); workers are told at
    /// registration, so a result too big to report fails its task. Default 2 GiB − 1
    /// (`net::DEFAULT_MAX_MESSAGE_BYTES`), libzmq's practical limit.
    pub max_message_bytes: i64,
    /// Keep a journal here so a restarted scheduler resumes the graphs clients wait for.
    /// Default None: no journal (nothing on disk; a restarted scheduler starts empty).
    pub state_dir: Option<std::path::PathBuf>,
    /// ZeroMQ high-water mark of each client connection, in messages, each way (default
    /// 1,000). A client has one reply in flight per waiting call (plus a pong per ping), so a
    /// client that reads never comes near it. A client whose queue is full is not reading its
    /// replies: the scheduler does not wait for it (that would stall every other client) nor
    /// drop its replies silently; it treats it as gone — logs a warning, drops the reply and
    /// all of that client's pending requests, as if it had said goodbye. If it comes back,
    /// its next ping fails the requests it still waits for. On the way in, a full queue makes
    /// ZeroMQ stop reading that connection: a client that floods slows only itself.
    pub client_queue_max_messages: i32,
    /// ZeroMQ high-water mark of each worker connection, in messages, each way (default
    /// 10,000: a worker gets one message per batch of tasks and a few per result, at most
    /// threads + `worker_queue_extra` tasks at a time). A worker whose queue is full is not
    /// reading: the message is dropped with a warning and every worker is probed, as when a
    /// connection drops, so one that does not answer is removed and its work rescheduled.
    pub worker_queue_max_messages: i32,
    /// Events (decoded messages) waiting for the core thread, from both ports (default
    /// 8,192: two of the core's batches). When full, the socket threads stop reading their
    /// sockets — ZeroMQ then queues per connection up to the high-water marks above, and TCP
    /// pushes back on the senders — but go on sending what the core wants sent.
    pub event_queue_max: usize,
    /// Encoded-message commands waiting for each socket thread (default 16,384). The core
    /// waits (after waking the socket thread) when it is full; socket threads never wait on
    /// anything but their poll, so this cannot deadlock.
    pub command_queue_max: usize,
    /// Messages per second each client connection may send (default 10,000, with bursts of
    /// twice that). A client has one request in flight per calling thread (the API waits for
    /// each answer) and a round trip takes at least a few hundred microseconds (BENCHMARKS.md:
    /// latency), so a calling thread sends at most a few thousand a second, plus a ping every
    /// few seconds; 10,000 leaves room for a busy multi-threaded client while keeping one
    /// flooding connection well below what the core handles (about 75,000 events/s), so the
    /// others are still served. Past it the message is dropped unread: a request is failed
    /// with `RequestError::RateLimited` (its call ends at once; retrying more slowly helps),
    /// a hello or ping rejected with it; at most one warning per connection per second.
    pub client_max_messages_per_second: u32,
    /// Messages per second each worker connection may send (default 100,000, with bursts of
    /// twice that). A worker sends at most a few messages per task it runs (finished reports
    /// are batched) and one per data request, so it can never send faster than the core
    /// hands out work; 100,000 is above the most the core has been measured to process from
    /// all connections together (about 75,000 tasks/s), so only a broken or hostile worker
    /// reaches it. Past it the message is dropped (the worker protocol has no error to
    /// answer with), with at most one warning per connection per second.
    pub worker_max_messages_per_second: u32,
    /// A 2015 Python worker that sends nothing (not even its heartbeat, every 5 s by default)
    /// for this long is removed and its tasks run elsewhere (default 20 s, the 2015
    /// scheduler's `worker_timeout`).
    pub python_worker_timeout_ms: u64,
    /// The cluster's keys: both ports are CURVE servers and a ZAP handler lets in only the
    /// worker key on the worker port and the client and operator keys on the client port
    /// (`crate::security`). `None` (the default of this struct, for embedding and tests;
    /// `zask-scheduler` and `LocalCluster` make keys unless told `--insecure`): no encryption
    /// and no authentication, with a warning at start.
    pub security: Option<ClusterKeys>,
    /// With security on, the 2015 protocol's peers (which cannot do CURVE) connect to these
    /// extra plaintext ports, which serve only the 2015 protocol; `None` (the default): no
    /// such port. Without security the main ports serve the 2015 protocol themselves.
    pub legacy_worker_port: Option<u16>,
    pub legacy_client_port: Option<u16>,
    /// Where the plaintext 2015 ports listen (default 127.0.0.1: this machine only).
    pub legacy_host: String,
    /// The settings of the scheduler's logic (`CoreConfig::default()`; the addresses and the
    /// message limit are filled in from the sockets and the settings above).
    pub core: CoreConfig,
    /// The web dashboard, `/metrics` and `/api/status` (`crate::scheduler::dashboard`).
    /// Default None here (embedding and tests: no HTTP port unless asked for);
    /// `zask-scheduler` starts it unless told `--no-dashboard`.
    pub dashboard: Option<DashboardConfig>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            host: "127.0.0.1".into(),
            worker_port: 0,
            client_port: 0,
            max_message_bytes: net::DEFAULT_MAX_MESSAGE_BYTES,
            state_dir: None,
            client_queue_max_messages: 1_000,
            worker_queue_max_messages: 10_000,
            event_queue_max: 8_192,
            command_queue_max: 16_384,
            python_worker_timeout_ms: 20_000,
            security: None,
            legacy_worker_port: None,
            legacy_client_port: None,
            legacy_host: "127.0.0.1".into(),
            client_max_messages_per_second: 10_000,
            worker_max_messages_per_second: 100_000,
            core: CoreConfig::default(),
            dashboard: None,
        }
    }
}

/// Why a scheduler could not start. `retry_may_help` says whether starting it again, unchanged,
/// can succeed.
#[derive(Debug)]
pub enum SchedulerStartError {
    /// Its addresses, sockets or threads (that error's own `retry_may_help` decides: a port in
    /// use may pass, a bad address will not).
    Start(StartError),
    /// The journal in `dir` (`--state-dir`) could not be opened or read (the journal's error
    /// decides: another scheduler holding it may exit, a damaged one needs a person).
    Journal {
        dir: std::path::PathBuf,
        error: JournalError,
    },
    /// The ports could not be secured (no CURVE in this libzmq, a socket option refused).
    Security(SecurityError),
    /// Plaintext 2015 ports were asked for without security, where the main ports already
    /// serve the 2015 protocol.
    LegacyPortsNeedSecurity,
    /// The dashboard's HTTP port could not be opened (its error decides).
    Dashboard(DashboardError),
}

impl SchedulerStartError {
    /// Whether starting the scheduler again, unchanged, can succeed later.
    pub fn retry_may_help(&self) -> bool {
        match self {
            SchedulerStartError::Start(e) => e.retry_may_help(),
            SchedulerStartError::Journal { error, .. } => error.retry_may_help(),
            SchedulerStartError::Security(e) => e.retry_may_help(),
            SchedulerStartError::LegacyPortsNeedSecurity => false,
            SchedulerStartError::Dashboard(e) => e.retry_may_help(),
        }
    }
}

impl std::fmt::Display for SchedulerStartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchedulerStartError::Start(e) => write!(f, "{e}"),
            SchedulerStartError::Journal { dir, error } => {
                write!(f, "{error} ({})", dir.display())
            }
            SchedulerStartError::Security(e) => write!(f, "securing the ports: {e}"),
            SchedulerStartError::LegacyPortsNeedSecurity => write!(
                f,
                "the plaintext 2015 ports are for a secure scheduler; without security \
                 (--insecure) the main ports serve 2015 peers themselves"
            ),
            SchedulerStartError::Dashboard(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SchedulerStartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SchedulerStartError::Start(e) => Some(e),
            SchedulerStartError::Journal { error, .. } => Some(error),
            SchedulerStartError::Security(e) => Some(e),
            SchedulerStartError::LegacyPortsNeedSecurity => None,
            SchedulerStartError::Dashboard(e) => Some(e),
        }
    }
}

impl From<SecurityError> for SchedulerStartError {
    fn from(e: SecurityError) -> Self {
        SchedulerStartError::Security(e)
    }
}

impl From<StartError> for SchedulerStartError {
    fn from(e: StartError) -> Self {
        SchedulerStartError::Start(e)
    }
}

/// A running scheduler. Dropping it stops it.
pub struct Scheduler {
    address_to_workers: String,
    address_to_clients: String,
    legacy_address_to_workers: Option<String>,
    legacy_address_to_clients: Option<String>,
    stop: Arc<AtomicBool>,
    wakers: Vec<Waker>,
    threads: Vec<JoinHandle<()>>,
    /// Answers the CURVE handshakes while the ports are open (dropped after the threads).
    _zap: Option<ZapHandler>,
    /// The HTTP dashboard, when asked for (stopped before the other threads).
    dashboard: Option<Dashboard>,
}

/// The ZeroMQ IO thread (as an affinity mask) of the worker port, and of the client port.
const WORKER_IO_THREAD: u64 = 1;
const OTHER_IO_THREAD: u64 = 2;

impl Scheduler {
    pub fn start(config: SchedulerConfig) -> Result<Scheduler, SchedulerStartError> {
        // A panic in one of the scheduler's threads ends the process (see `crate::fatal`).
        crate::fatal::install();
        let ctx = zmq::Context::new();
        let socket_error = |what| move |e| StartError::socket(what, e);
        // Two ZeroMQ IO threads, the worker port alone on the first: encrypting a big value
        // for a client (hundreds of MB over CurveZMQ take seconds) never holds up the workers'
        // heartbeats, which the heartbeat timeout judges.
        ctx.set_io_threads(2)
            .map_err(socket_error("setting the IO threads"))?;
        let worker_socket = ctx
            .socket(zmq::ROUTER)
            .map_err(socket_error("making the worker port"))?;
        worker_socket
            .set_affinity(WORKER_IO_THREAD)
            .map_err(socket_error("setting the worker port's IO thread"))?;
        let client_socket = ctx
            .socket(zmq::ROUTER)
            .map_err(socket_error("making the client port"))?;
        client_socket
            .set_affinity(OTHER_IO_THREAD)
            .map_err(socket_error("setting the client port's IO thread"))?;
        for (s, hwm) in [
            (&worker_socket, config.worker_queue_max_messages),
            (&client_socket, config.client_queue_max_messages),
        ] {
            net::configure_bounded(s, config.max_message_bytes, hwm)
                .map_err(socket_error("setting socket options"))?;
            // A process that reconnects with the same identity takes over its old route.
            s.set_router_handover(true)
                .map_err(socket_error("setting ROUTER_HANDOVER"))?;
            // A full queue is an error (EAGAIN) we act on, not a silent drop.
            s.set_router_mandatory(true)
                .map_err(socket_error("setting ROUTER_MANDATORY"))?;
        }
        // Dropped worker connections (a killed worker) are reported on this monitor socket.
        worker_socket
            .monitor(
                "inproc://zask-worker-port-monitor",
                zmq::SocketEvent::DISCONNECTED as i32,
            )
            .map_err(socket_error("monitoring the worker port"))?;
        let monitor = ctx
            .socket(zmq::PAIR)
            .map_err(socket_error("making the monitor socket"))?;
        monitor
            .connect("inproc://zask-worker-port-monitor")
            .map_err(socket_error("connecting the monitor socket"))?;
        let legacy_ports =
            config.legacy_worker_port.is_some() || config.legacy_client_port.is_some();
        let zap = match &config.security {
            Some(keys) => {
                // Up before the ports, so no handshake finds nobody to ask.
                let zap = ZapHandler::start(&ctx, keys.scheduler_zap())?;
                security::serve(&worker_socket, &keys.scheduler, WORKERS_DOMAIN)?;
                security::serve(&client_socket, &keys.scheduler, CLIENTS_DOMAIN)?;
                Some(zap)
            }
            None if legacy_ports => return Err(SchedulerStartError::LegacyPortsNeedSecurity),
            None => {
                warn!(
                    "running WITHOUT security (--insecure): anyone who can reach these ports \
                     can run code on the workers, read every result and restart the cluster; \
                     nothing is encrypted"
                );
                None
            }
        };
        let address_to_workers = net::bind(&worker_socket, &config.host, config.worker_port)?;
        let address_to_clients = net::bind(&client_socket, &config.host, config.client_port)?;
        info!("address_to_workers {address_to_workers}");
        info!("address_to_clients {address_to_clients}");
        // The 2015 protocol's plaintext ports (security on only): 2015 peers cannot do CURVE.
        let legacy_socket = |port: Option<u16>, what: &'static str| -> Result<_, StartError> {
            let Some(port) = port else {
                return Ok(None);
            };
            let s = ctx.socket(zmq::ROUTER).map_err(socket_error(what))?;
            s.set_affinity(OTHER_IO_THREAD)
                .map_err(socket_error("setting a 2015 port's IO thread"))?;
            net::configure_bounded(
                &s,
                config.max_message_bytes,
                config.worker_queue_max_messages,
            )
            .map_err(socket_error("setting socket options"))?;
            s.set_router_handover(true)
                .map_err(socket_error("setting ROUTER_HANDOVER"))?;
            let address = net::bind(&s, &config.legacy_host, port)?;
            Ok(Some((s, address)))
        };
        let legacy_workers =
            legacy_socket(config.legacy_worker_port, "making the 2015 worker port")?;
        let legacy_clients =
            legacy_socket(config.legacy_client_port, "making the 2015 client port")?;
        for (what, s) in [("workers", &legacy_workers), ("clients", &legacy_clients)] {
            if let Some((_, address)) = s {
                warn!(
                    "legacy_address_to_{what} {address}: a PLAINTEXT port for 2015 (dask 0.7) \
                     peers, unauthenticated; anyone who reaches it can run code on the \
                     Python workers"
                );
            }
        }
        let legacy_address_to_workers = legacy_workers.as_ref().map(|(_, a)| a.clone());
        let legacy_address_to_clients = legacy_clients.as_ref().map(|(_, a)| a.clone());

        let stop = Arc::new(AtomicBool::new(false));
        let (in_tx, in_rx) = crossbeam_channel::bounded::<Input>(config.event_queue_max.max(1));
        // Legacy replies are few (one per legacy request, bounded by the event queue).
        let (legacy_workers_tx, legacy_workers_rx) =
            crossbeam_channel::bounded(config.command_queue_max.max(1));
        let (legacy_clients_tx, legacy_clients_rx) =
            crossbeam_channel::bounded(config.command_queue_max.max(1));
        let (to_workers_tx, to_workers_rx) =
            crossbeam_channel::bounded(config.command_queue_max.max(1));
        let (to_clients_tx, to_clients_rx) =
            crossbeam_channel::bounded(config.command_queue_max.max(1));
        let waker_error = |e| StartError::resource("making a waker", e);
        let (worker_waker, worker_wake_rx) = net::waker().map_err(waker_error)?;
        let (client_waker, client_wake_rx) = net::waker().map_err(waker_error)?;

        let clock = Clock::start();
        let mut core_config = config.core.clone();
        core_config.address_to_workers = address_to_workers.clone();
        core_config.address_to_clients = address_to_clients.clone();
        core_config.max_message_bytes = config.max_message_bytes.max(0) as u64;
        core_config.instance_token = net::unpredictable_token();
        let journal_error = |error| SchedulerStartError::Journal {
            dir: config.state_dir.clone().unwrap_or_default(),
            error,
        };
        let journal = match &config.state_dir {
            Some(dir) => Some(Journal::open(dir).map_err(journal_error)?),
            None => None,
        };
        core_config.journal = journal.is_some();
        // The dashboard serves what the core thread publishes (an empty snapshot until the
        // first one); if a later step fails, dropping it closes its port again.
        let dashboard = match &config.dashboard {
            Some(d) => {
                let cell = Arc::new(SnapshotCell::default());
                let server = Dashboard::start(d.clone(), cell.clone())
                    .map_err(SchedulerStartError::Dashboard)?;
                super::dashboard::log_address(server.address(), d.token.is_some());
                let publisher = Publisher::new(
                    cell,
                    d.publish_interval_ms,
                    address_to_workers.clone(),
                    address_to_clients.clone(),
                );
                Some((server, publisher))
            }
            None => None,
        };
        let (dashboard, publisher) = dashboard.unzip();
        let mut core = SchedulerCore::new(core_config);
        if let Some(j) = &journal {
            let recovered = j.load().map_err(journal_error)?;
            if recovered != Recovered::default() {
                core.recover(clock.now_ms(), recovered);
            }
        }

        let worker_rate = rate::RateLimit::per_second(config.worker_max_messages_per_second);
        let client_rate = rate::RateLimit::per_second(config.client_max_messages_per_second);
        let mut threads = Vec::new();
        // The 2015 replies go out where 2015 peers connect: their own plaintext port when
        // there is one, else the main port.
        // A plaintext 2015 port's socket thread: it sends only 2015 replies (no native ones).
        let mut spawn_legacy_port = |name: &'static str,
                                     port: Port,
                                     socket: zmq::Socket,
                                     replies: Receiver<(ConnectionId, Vec<Frame>)>,
                                     decode: fn(Peer, Vec<Frame>) -> Decoded,
                                     rate: rate::RateLimit|
         -> Result<Waker, StartError> {
            let (waker, wake_rx) = net::waker().map_err(waker_error)?;
            let (in_tx, stop) = (in_tx.clone(), stop.clone());
            threads.push(spawn(name, move || {
                socket_loop::<ToWorker>(
                    port,
                    socket,
                    wake_rx,
                    crossbeam_channel::never(),
                    replies,
                    in_tx,
                    stop,
                    decode,
                    None,
                    rate,
                )
            })?);
            Ok(waker)
        };
        let (legacy_workers_waker, main_workers_legacy) = match legacy_workers {
            Some((socket, _)) => {
                let waker = spawn_legacy_port(
                    "zask-sched-legacy-workers",
                    Port::Workers,
                    socket,
                    legacy_workers_rx,
                    decode_legacy_worker,
                    worker_rate,
                )?;
                (waker, crossbeam_channel::never())
            }
            None => (worker_waker.clone(), legacy_workers_rx),
        };
        let (legacy_clients_waker, main_clients_legacy) = match legacy_clients {
            Some((socket, _)) => {
                let waker = spawn_legacy_port(
                    "zask-sched-legacy-clients",
                    Port::Clients,
                    socket,
                    legacy_clients_rx,
                    decode_legacy_client,
                    client_rate,
                )?;
                (waker, crossbeam_channel::never())
            }
            None => (client_waker.clone(), legacy_clients_rx),
        };
        let wakers = vec![
            worker_waker.clone(),
            client_waker.clone(),
            legacy_workers_waker.clone(),
            legacy_clients_waker.clone(),
        ];
        {
            let in_tx = in_tx.clone();
            let stop = stop.clone();
            threads.push(spawn("zask-sched-workers", move || {
                socket_loop(
                    Port::Workers,
                    worker_socket,
                    worker_wake_rx,
                    to_workers_rx,
                    main_workers_legacy,
                    in_tx,
                    stop,
                    decode_worker,
                    Some(monitor),
                    worker_rate,
                )
            })?);
        }
        {
            let in_tx = in_tx.clone();
            let stop = stop.clone();
            threads.push(spawn("zask-sched-clients", move || {
                socket_loop(
                    Port::Clients,
                    client_socket,
                    client_wake_rx,
                    to_clients_rx,
                    main_clients_legacy,
                    in_tx,
                    stop,
                    decode_client,
                    None,
                    client_rate,
                )
            })?);
        }
        drop(in_tx);
        {
            let stop = stop.clone();
            let outs = Outputs {
                to_workers: to_workers_tx,
                worker_waker: worker_waker.clone(),
                to_clients: to_clients_tx,
                client_waker: client_waker.clone(),
                legacy: LegacyOutputs {
                    bridges: BridgeSettings {
                        address_to_workers: address_to_workers.clone(),
                        host: config.host.clone(),
                        timeout_ms: config.python_worker_timeout_ms,
                        to_socket: legacy_workers_tx.clone(),
                        waker: legacy_workers_waker.clone(),
                        access: config.security.as_ref().map(|k| k.access(Role::Worker)),
                    },
                    to_workers: legacy_workers_tx,
                    workers_waker: legacy_workers_waker,
                    to_clients: legacy_clients_tx,
                    clients_waker: legacy_clients_waker,
                    address_to_workers: address_to_workers.clone(),
                    address_to_clients: address_to_clients.clone(),
                },
            };
            threads.push(spawn("zask-sched-core", move || {
                if let Err(e) = core_loop(core, journal, in_rx, outs, clock, stop, publisher) {
                    // Nothing of the failed batch has left; a restart with the same state dir
                    // resumes from what was durable.
                    crate::fatal::stop_process(&e.to_string());
                }
            })?);
        }
        Ok(Scheduler {
            address_to_workers,
            address_to_clients,
            legacy_address_to_workers,
            legacy_address_to_clients,
            stop,
            wakers,
            threads,
            _zap: zap,
            dashboard,
        })
    }

    /// Where the dashboard listens (`http://` + this), when it runs.
    pub fn dashboard_address(&self) -> Option<std::net::SocketAddr> {
        self.dashboard.as_ref().map(|d| d.address())
    }

    /// Where workers connect (the legacy `address_to_workers`).
    pub fn address_to_workers(&self) -> &str {
        &self.address_to_workers
    }

    /// Where clients connect (the legacy `address_to_clients`).
    pub fn address_to_clients(&self) -> &str {
        &self.address_to_clients
    }

    /// The plaintext port 2015 Python workers connect to, when there is one.
    pub fn legacy_address_to_workers(&self) -> Option<&str> {
        self.legacy_address_to_workers.as_deref()
    }

    /// The plaintext port 2015 clients connect to, when there is one.
    pub fn legacy_address_to_clients(&self) -> Option<&str> {
        self.legacy_address_to_clients.as_deref()
    }

    /// Whether the scheduler has stopped by itself: an operator shut the cluster down
    /// (`Client::shutdown`); `wait` then returns.
    pub fn has_stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Stops the threads and closes the sockets.
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    /// Blocks until the scheduler stops (it only stops when shut down).
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    fn stop_threads(&mut self) {
        // Its threads only read snapshots: stopped first, nothing waits on them.
        self.dashboard = None;
        self.stop.store(true, Ordering::SeqCst);
        for w in &self.wakers {
            w.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// Starts the scheduler thread `name` (its failure names the thread).
fn spawn(
    name: &'static str,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, StartError> {
    crate::fatal::spawn_service(name, f).map_err(|e| StartError::resource(name, e))
}

struct Outputs {
    to_workers: Sender<(ConnectionId, ToWorker, Vec<Frame>)>,
    worker_waker: Waker,
    to_clients: Sender<(ConnectionId, ToClient, Vec<Frame>)>,
    client_waker: Waker,
    legacy: LegacyOutputs,
}

/// Where the core thread's legacy (2015) replies go (the socket thread of the port 2015 peers
/// use, and its waker), the addresses they carry, and what the bridges to 2015 Python workers
/// need (`legacy_workers.rs`).
struct LegacyOutputs {
    to_workers: Sender<(ConnectionId, Vec<Frame>)>,
    workers_waker: Waker,
    to_clients: Sender<(ConnectionId, Vec<Frame>)>,
    clients_waker: Waker,
    address_to_workers: String,
    address_to_clients: String,
    /// What the bridges to 2015 Python workers are started with.
    bridges: BridgeSettings,
}

/// Answers a legacy request (the core only lends its read-only status view) and hands the
/// reply, if any, to the port's socket thread. A legacy graph is submitted to the core as a
/// native request from the legacy connection (`legacy::Sessions`).
fn answer_legacy(
    core: &mut SchedulerCore,
    now_ms: u64,
    outs: &Outputs,
    sessions: &mut legacy::Sessions,
    python_workers: &mut LegacyWorkers,
    req: LegacyRequest,
) {
    if req.port == Port::Workers && req.msg.function != "status" {
        python_workers.heard(now_ms, req);
        return;
    }
    let now = zask_compat::pickle::helpers::DateTime::now_utc();
    let (address, tx, waker) = match req.port {
        Port::Workers => (
            &outs.legacy.address_to_workers,
            &outs.legacy.to_workers,
            &outs.legacy.workers_waker,
        ),
        Port::Clients => (
            &outs.legacy.address_to_clients,
            &outs.legacy.to_clients,
            &outs.legacy.clients_waker,
        ),
    };
    let f = req.msg.function.as_str();
    if req.port == Port::Clients && matches!(f, "schedule" | "set-collection" | "get-collection") {
        let identity = req.identity.clone();
        let handled = if f == "schedule" {
            sessions.schedule(req, address, now)
        } else {
            sessions.collection(req, address, now)
        };
        match handled {
            Some(legacy::Schedule::Submit(msg)) => core.handle(
                now_ms,
                Event::FromClient {
                    identity,
                    // A 2015 client has no key: never more than a client.
                    role: ClientRole::Client,
                    msg,
                    frames: vec![],
                },
            ),
            Some(legacy::Schedule::Reply(frames)) => {
                send_command(tx, waker, (identity, frames));
                waker.wake();
            }
            None => {}
        }
        return;
    }
    let workers = || legacy::legacy_workers(&core.status().workers, now);
    if let Some(frames) = legacy::answer(&req, address, now, workers) {
        send_command(tx, waker, (req.identity, frames));
        waker.wake();
    }
}

/// How often the core thread pings the core for each legacy connection waiting for a graph
/// (the 2015 client never pings; well under `CoreConfig::client_timeout_ms`).
const LEGACY_PING_INTERVAL_MS: u64 = 1_000;

/// Most events handled before commands are flushed: batches messages under load without
/// delaying them when idle.
const MAX_BATCH: usize = 4096;

/// Why the core thread stopped the scheduler.
#[derive(Debug, PartialEq)]
pub(crate) struct JournalFailed {
    pub location: String,
    pub error: JournalError,
}

impl std::fmt::Display for JournalFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the journal in state dir {} cannot be written: {}; stopping without sending the \
             batch's messages (restart with the same --state-dir to resume from what is durable)",
            self.location, self.error
        )
    }
}

/// A batch may keep the core loop from reading this long before the excess is taken off the
/// workers' silence (`SchedulerCore::was_deaf`): ordinary batches never are, so under a steady
/// load a worker really gone is found on time; only a long stall (one huge request) is.
const DEAF_FREE_MS: u64 = 500;

/// Runs the core until stopped (Ok) or until the journal fails (Err: nothing of that batch
/// was sent).
fn core_loop<J: JournalWrite>(
    mut core: SchedulerCore,
    journal: Option<J>,
    inputs: Receiver<Input>,
    outs: Outputs,
    clock: Clock,
    stop: Arc<AtomicBool>,
    mut publisher: Option<Publisher>,
) -> Result<(), JournalFailed> {
    let mut sessions = legacy::Sessions::default();
    let mut python_workers = LegacyWorkers::new(outs.legacy.bridges.clone());
    let mut legacy_pinged_ms = 0;
    // How long the last batch kept the loop from reading, beyond `DEAF_FREE_MS`.
    let mut deaf_ms = 0;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let now = clock.now_ms();
        let deadline = match &publisher {
            // The dashboard's next snapshot is a deadline too.
            Some(p) => Some(
                core.next_deadline()
                    .map_or(p.next_due_ms(), |d| d.min(p.next_due_ms())),
            ),
            None => core.next_deadline(),
        };
        let wait_ms = deadline
            .map(|d| d.saturating_sub(now))
            .unwrap_or(1000)
            .clamp(1, 1000);
        let first = match net::recv_spinning(&inputs, Duration::from_millis(wait_ms)) {
            Ok(i) => Some(i),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        let now = clock.now_ms();
        if deaf_ms > 0 {
            // Before the workers' queued messages are read: a huge request (a million-task
            // submit) kept the core busy for seconds, which is not their silence.
            core.was_deaf(now, std::mem::take(&mut deaf_ms));
        }
        // Before the batch: every request pinged is one the core has not answered yet (the
        // answers of the previous batch were taken below), so the core never fails it as
        // unknown.
        if now.saturating_sub(legacy_pinged_ms) >= LEGACY_PING_INTERVAL_MS {
            legacy_pinged_ms = now;
            for (identity, msg) in sessions.pings() {
                core.handle(
                    now,
                    Event::FromClient {
                        identity,
                        role: ClientRole::Client,
                        msg,
                        frames: vec![],
                    },
                );
            }
        }
        if let Some(input) = first {
            for input in std::iter::once(input).chain(inputs.try_iter().take(MAX_BATCH)) {
                match input {
                    Input::Core(e) => core.handle(now, e),
                    Input::Legacy(req) => answer_legacy(
                        &mut core,
                        now,
                        &outs,
                        &mut sessions,
                        &mut python_workers,
                        req,
                    ),
                }
            }
        }
        python_workers.check(now);
        core.tick(now);
        let (mut to_workers, mut to_clients) = (false, false);
        let commands = core.take_commands();
        if let Some(p) = &mut publisher {
            // After the decision pass, so the page sees this batch's assignments.
            p.maybe_publish(now, &core);
        }
        if let Some(j) = &journal {
            make_durable(j, &commands)?;
        }
        for cmd in commands {
            match cmd {
                Command::Journal(_) => {}
                Command::ToWorker {
                    identity,
                    msg,
                    frames,
                } => {
                    to_workers = true;
                    send_command(
                        &outs.to_workers,
                        &outs.worker_waker,
                        (identity, msg, frames),
                    );
                }
                Command::ToClient {
                    identity,
                    msg,
                    frames,
                } if sessions.is_legacy(&identity) => {
                    // Never sent raw: a legacy peer gets its graph's answer as a
                    // `schedule-ack`, and nothing else.
                    let now = zask_compat::pickle::helpers::DateTime::now_utc();
                    let address = &outs.legacy.address_to_clients;
                    if let Some(frames) = sessions.reply(&identity, &msg, frames, address, now) {
                        send_command(
                            &outs.legacy.to_clients,
                            &outs.legacy.clients_waker,
                            (identity, frames),
                        );
                        outs.legacy.clients_waker.wake();
                    }
                }
                Command::ToClient {
                    identity,
                    mut msg,
                    frames,
                } => {
                    to_clients = true;
                    if let ToClient::Logs { scheduler, .. } = &mut msg {
                        // The core does no IO: this process's own lines are added here.
                        *scheduler = crate::logs::recent_lines();
                    }
                    send_command(
                        &outs.to_clients,
                        &outs.client_waker,
                        (identity, msg, frames),
                    );
                }
            }
        }
        if to_workers {
            outs.worker_waker.wake();
        }
        if to_clients {
            outs.client_waker.wake();
        }
        deaf_ms = clock
            .now_ms()
            .saturating_sub(now)
            .saturating_sub(DEAF_FREE_MS);
        if core.is_shut_down() {
            // An operator shut the cluster down: the socket threads send what this batch
            // queued (the workers' dismissals, the operator's answer) as they stop.
            info!("shut down on an operator's request: stopping");
            stop.store(true, Ordering::SeqCst);
            outs.worker_waker.wake();
            outs.client_waker.wake();
            outs.legacy.workers_waker.wake();
            outs.legacy.clients_waker.wake();
            return Ok(());
        }
    }
}

/// Applies and flushes a batch's journal operations. The journal is durable before anything
/// of the batch leaves, so a crash never loses a submission whose work has started or been
/// answered.
///
/// When the journal cannot be written the scheduler stops (the caller exits the process)
/// rather than failing the batch's requests and going on: the core has already moved to the
/// state these operations describe (a computation accepted, a collection stored or dropped),
/// and it cannot be rolled back, so going on would leave the journal and the core disagreeing
/// — a later restart would resume graphs nobody waits for, or lose ones clients were told
/// about. Stopping keeps the rule simple: every message that left matches the durable
/// journal, and a restart with the same state dir resumes from it (clients and workers
/// reconnect by themselves).
fn make_durable<J: JournalWrite>(journal: &J, commands: &[Command]) -> Result<(), JournalFailed> {
    let failed = |error| JournalFailed {
        location: journal.location(),
        error,
    };
    let mut wrote = false;
    for cmd in commands {
        if let Command::Journal(op) = cmd {
            wrote = true;
            journal.apply(op).map_err(failed)?;
        }
    }
    if wrote {
        journal.flush().map_err(failed)?;
    }
    Ok(())
}

/// Hands a command to a socket thread. When its queue is full the socket thread is woken
/// first (it may be asleep in its poll, and it only sleeps there), then the core waits for
/// room: socket threads never wait on the core, so the wait is short.
fn send_command<M>(tx: &Sender<M>, waker: &Waker, item: M) {
    match tx.try_send(item) {
        Ok(()) => {}
        Err(TrySendError::Full(item)) => {
            waker.wake();
            // Disconnected only at shutdown, when nothing needs sending.
            let _ = tx.send(item);
        }
        Err(TrySendError::Disconnected(_)) => {}
    }
}

//! The scheduler's IO layer: two ROUTER sockets (workers, clients), each owned by its own thread
//! that turns bytes into events and commands into bytes, and one thread that owns the state
//! machine. Crossbeam channels connect them; malformed input is answered or logged and dropped
//! right at the socket thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, error, info, warn};

use super::core::{Command, CoreConfig, Event, Recovered, SchedulerCore};
use super::journal::Journal;
use crate::net::{self, Clock, WakeReceiver, Waker};
use crate::protocol::codec::{encode, split, DecodeError};
use crate::protocol::{
    Frame, FrameIdentity, FromClient, FromWorker, RequestError, ToClient, ToWorker,
};

/// How to run a scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Interface to listen on; 0.0.0.0 listens everywhere and advertises the hostname.
    pub host: String,
    /// Port for workers; 0 picks a free one.
    pub worker_port: u16,
    /// Port for clients; 0 picks a free one.
    pub client_port: u16,
    /// Messages larger than this are dropped by ZeroMQ (ZMQ_MAXMSGSIZE).
    pub max_message_bytes: i64,
    /// Keep a journal here so a restarted scheduler resumes the graphs clients wait for.
    pub state_dir: Option<std::path::PathBuf>,
    pub core: CoreConfig,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            host: "127.0.0.1".into(),
            worker_port: 0,
            client_port: 0,
            max_message_bytes: net::DEFAULT_MAX_MESSAGE_BYTES,
            state_dir: None,
            core: CoreConfig::default(),
        }
    }
}

/// A running scheduler. Dropping it stops it.
pub struct Scheduler {
    address_to_workers: String,
    address_to_clients: String,
    stop: Arc<AtomicBool>,
    wakers: Vec<Waker>,
    threads: Vec<JoinHandle<()>>,
}

impl Scheduler {
    pub fn start(config: SchedulerConfig) -> Result<Scheduler, String> {
        let ctx = zmq::Context::new();
        let worker_socket = ctx.socket(zmq::ROUTER).map_err(|e| e.to_string())?;
        let client_socket = ctx.socket(zmq::ROUTER).map_err(|e| e.to_string())?;
        for s in [&worker_socket, &client_socket] {
            net::configure(s, config.max_message_bytes).map_err(|e| e.to_string())?;
            // A process that reconnects with the same identity takes over its old route.
            s.set_router_handover(true).map_err(|e| e.to_string())?;
        }
        // Dropped worker connections (a killed worker) are reported on this monitor socket.
        worker_socket
            .monitor(
                "inproc://zask-worker-port-monitor",
                zmq::SocketEvent::DISCONNECTED as i32,
            )
            .map_err(|e| e.to_string())?;
        let monitor = ctx.socket(zmq::PAIR).map_err(|e| e.to_string())?;
        monitor
            .connect("inproc://zask-worker-port-monitor")
            .map_err(|e| e.to_string())?;
        let address_to_workers = net::bind(&worker_socket, &config.host, config.worker_port)?;
        let address_to_clients = net::bind(&client_socket, &config.host, config.client_port)?;
        info!("address_to_workers {address_to_workers}");
        info!("address_to_clients {address_to_clients}");

        let stop = Arc::new(AtomicBool::new(false));
        let (in_tx, in_rx) = crossbeam_channel::unbounded::<Event>();
        let (to_workers_tx, to_workers_rx) = crossbeam_channel::unbounded();
        let (to_clients_tx, to_clients_rx) = crossbeam_channel::unbounded();
        let (worker_waker, worker_wake_rx) = net::waker().map_err(|e| e.to_string())?;
        let (client_waker, client_wake_rx) = net::waker().map_err(|e| e.to_string())?;

        let clock = Clock::start();
        let mut core_config = config.core.clone();
        core_config.address_to_workers = address_to_workers.clone();
        core_config.address_to_clients = address_to_clients.clone();
        core_config.max_message_bytes = config.max_message_bytes.max(0) as u64;
        core_config.instance_token = instance_token();
        let journal = match &config.state_dir {
            Some(dir) => Some(Journal::open(dir)?),
            None => None,
        };
        core_config.journal = journal.is_some();
        let mut core = SchedulerCore::new(core_config);
        if let Some(j) = &journal {
            let recovered = j.load()?;
            if recovered != Recovered::default() {
                core.recover(clock.now_ms(), recovered);
            }
        }

        let mut threads = Vec::new();
        {
            let in_tx = in_tx.clone();
            let stop = stop.clone();
            threads.push(spawn("zask-sched-workers", move || {
                let lost_tx = in_tx.clone();
                socket_loop(
                    worker_socket,
                    worker_wake_rx,
                    to_workers_rx,
                    stop,
                    |identity, frames| decode_worker(identity, frames, &in_tx),
                    Some((monitor, move || {
                        let _ = lost_tx.send(Event::WorkerConnectionLost);
                    })),
                )
            })?);
        }
        {
            let in_tx = in_tx.clone();
            let stop = stop.clone();
            threads.push(spawn("zask-sched-clients", move || {
                socket_loop(
                    client_socket,
                    client_wake_rx,
                    to_clients_rx,
                    stop,
                    |identity, frames| decode_client(identity, frames, &in_tx),
                    None::<(zmq::Socket, fn())>,
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
            };
            threads.push(spawn("zask-sched-core", move || {
                core_loop(core, journal, in_rx, outs, clock, stop)
            })?);
        }
        Ok(Scheduler {
            address_to_workers,
            address_to_clients,
            stop,
            wakers: vec![worker_waker, client_waker],
            threads,
        })
    }

    /// Where workers connect (the legacy `address_to_workers`).
    pub fn address_to_workers(&self) -> &str {
        &self.address_to_workers
    }

    /// Where clients connect (the legacy `address_to_clients`).
    pub fn address_to_clients(&self) -> &str {
        &self.address_to_clients
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

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| format!("cannot start thread {name}: {e}"))
}

struct Outputs {
    to_workers: Sender<(FrameIdentity, ToWorker, Vec<Frame>)>,
    worker_waker: Waker,
    to_clients: Sender<(FrameIdentity, ToClient, Vec<Frame>)>,
    client_waker: Waker,
}

/// Most events handled before commands are flushed: batches messages under load without
/// delaying them when idle.
const MAX_BATCH: usize = 4096;

fn core_loop(
    mut core: SchedulerCore,
    journal: Option<Journal>,
    inputs: Receiver<Event>,
    outs: Outputs,
    clock: Clock,
    stop: Arc<AtomicBool>,
) {
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let now = clock.now_ms();
        let wait_ms = core
            .next_deadline()
            .map(|d| d.saturating_sub(now))
            .unwrap_or(1000)
            .clamp(1, 1000);
        let first = match inputs.recv_timeout(Duration::from_millis(wait_ms)) {
            Ok(i) => Some(i),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let now = clock.now_ms();
        if let Some(e) = first {
            core.handle(now, e);
            for e in inputs.try_iter().take(MAX_BATCH) {
                core.handle(now, e);
            }
        }
        core.tick(now);
        let (mut to_workers, mut to_clients) = (false, false);
        let commands = core.take_commands();
        // The journal is durable before anything of this batch leaves: a crash never loses
        // a submission whose work has started or been answered.
        if let Some(j) = &journal {
            let mut wrote = false;
            for cmd in &commands {
                if let Command::Journal(op) = cmd {
                    wrote = true;
                    if let Err(e) = j.apply(op) {
                        error!("journal write failed: {e}");
                    }
                }
            }
            if wrote {
                if let Err(e) = j.flush() {
                    error!("journal flush failed: {e}");
                }
            }
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
                    let _ = outs.to_workers.send((identity, msg, frames));
                }
                Command::ToClient {
                    identity,
                    msg,
                    frames,
                } => {
                    to_clients = true;
                    let _ = outs.to_clients.send((identity, msg, frames));
                }
            }
        }
        if to_workers {
            outs.worker_waker.wake();
        }
        if to_clients {
            outs.client_waker.wake();
        }
    }
}

/// What a socket thread does with a message it could not decode: optionally answer it.
type Reply = Option<Frame>;

/// Owns one ROUTER socket: decodes what arrives, encodes and sends what the core wants sent.
/// With a monitor, `on_disconnect` runs whenever a peer connection drops.
fn socket_loop<M: serde::Serialize>(
    socket: zmq::Socket,
    wake: WakeReceiver,
    outgoing: Receiver<(FrameIdentity, M, Vec<Frame>)>,
    stop: Arc<AtomicBool>,
    mut on_message: impl FnMut(FrameIdentity, Vec<Frame>) -> Reply,
    monitor: Option<(zmq::Socket, impl Fn())>,
) {
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let (socket_ready, wake_ready, monitor_ready) = {
            let mut items = vec![
                socket.as_poll_item(zmq::POLLIN),
                zmq::PollItem::from_fd(wake.fd(), zmq::POLLIN),
            ];
            if let Some((m, _)) = &monitor {
                items.push(m.as_poll_item(zmq::POLLIN));
            }
            if let Err(e) = net::poll(&mut items, 1000) {
                error!("poll failed: {e}");
                return;
            }
            (
                items[0].is_readable(),
                items[1].is_readable(),
                items.get(2).is_some_and(|i| i.is_readable()),
            )
        };
        if monitor_ready {
            if let Some((m, on_disconnect)) = &monitor {
                while net::try_recv(m).is_some() {
                    on_disconnect();
                }
            }
        }
        if socket_ready {
            while let Some(mut frames) = net::try_recv(&socket) {
                if frames.len() < 2 {
                    warn!("dropping a message with no routing identity or no body");
                    continue;
                }
                let identity = frames.remove(0);
                if let Some(reply) = on_message(identity.clone(), frames) {
                    let _ = net::send(&socket, Some(&identity), reply, vec![]);
                }
            }
        }
        if wake_ready {
            wake.reset();
        }
        // Drained on every pass, not only after a wake: a message is never stranded.
        {
            for (identity, msg, frames) in outgoing.try_iter() {
                if let Err(e) = net::send(&socket, Some(&identity), encode(&msg), frames) {
                    // EHOSTUNREACH: the peer is gone; loss detection deals with it.
                    debug!(
                        "could not send to {}: {e}",
                        String::from_utf8_lossy(&identity)
                    );
                }
            }
        }
    }
}

fn describe(identity: &[u8]) -> String {
    String::from_utf8_lossy(identity).into_owned()
}

fn decode_worker(identity: FrameIdentity, frames: Vec<Frame>, tx: &Sender<Event>) -> Reply {
    let counted = |m: &FromWorker| match m {
        FromWorker::Finished(done) => done.iter().filter(|f| f.has_value).count(),
        FromWorker::Data { found, .. } => found.len(),
        _ => 0,
    };
    match split(frames, counted) {
        Ok((msg, frames)) => {
            let _ = tx.send(Event::FromWorker {
                identity,
                msg,
                frames,
            });
            None
        }
        Err(DecodeError::Legacy) => {
            warn!(
                "legacy (2015) worker message from {} dropped: the compat layer is not part of this build",
                describe(&identity)
            );
            None
        }
        Err(e) => {
            warn!(
                "dropping malformed message on the worker port from {}: {e}",
                describe(&identity)
            );
            Some(encode(&ToWorker::Error {
                message: format!("malformed message: {e}"),
            }))
        }
    }
}

fn decode_client(identity: FrameIdentity, frames: Vec<Frame>, tx: &Sender<Event>) -> Reply {
    let counted = |m: &FromClient| match m {
        FromClient::Scatter { keys, .. } => keys.len(),
        _ => 0,
    };
    match split(frames, counted) {
        Ok((msg, frames)) => {
            let _ = tx.send(Event::FromClient {
                identity,
                msg,
                frames,
            });
            None
        }
        Err(e) => {
            warn!(
                "dropping malformed message on the client port from {}: {e}",
                describe(&identity)
            );
            // Request 0 is never used by clients: it marks an answer to an unreadable request.
            Some(encode(&ToClient::Failed {
                request: 0,
                error: RequestError::Protocol {
                    message: format!("malformed message: {e}"),
                },
            }))
        }
    }
}

/// Something no earlier scheduler process used: std's per-process random hash keys mixed with
/// the clock and the pid (it keeps this process's scattered values apart from an earlier one's).
fn instance_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

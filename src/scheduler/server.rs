//! The scheduler's IO layer: two ROUTER sockets (workers, clients), each owned by its own thread
//! that turns bytes into events and commands into bytes, and one thread that owns the state
//! machine. Crossbeam channels connect them; malformed input is answered or logged and dropped
//! right at the socket thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use log::{debug, error, info, warn};

use super::core::{Command, CoreConfig, Event, Recovered, SchedulerCore};
use super::journal::{Journal, JournalError, JournalWrite};
use crate::net::{self, Clock, WakeReceiver, Waker};
use crate::protocol::codec::{encode, split, DecodeError};
use crate::protocol::{
    Frame, FrameIdentity, FromClient, FromWorker, RequestError, ToClient, ToWorker,
};

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
    /// The settings of the scheduler's logic (`CoreConfig::default()`; the addresses and the
    /// message limit are filled in from the sockets and the settings above).
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
            client_queue_max_messages: 1_000,
            worker_queue_max_messages: 10_000,
            event_queue_max: 8_192,
            command_queue_max: 16_384,
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
        // A panic in one of the scheduler's threads ends the process (see `crate::fatal`).
        crate::fatal::install();
        let ctx = zmq::Context::new();
        let worker_socket = ctx.socket(zmq::ROUTER).map_err(|e| e.to_string())?;
        let client_socket = ctx.socket(zmq::ROUTER).map_err(|e| e.to_string())?;
        for (s, hwm) in [
            (&worker_socket, config.worker_queue_max_messages),
            (&client_socket, config.client_queue_max_messages),
        ] {
            net::configure_bounded(s, config.max_message_bytes, hwm).map_err(|e| e.to_string())?;
            // A process that reconnects with the same identity takes over its old route.
            s.set_router_handover(true).map_err(|e| e.to_string())?;
            // A full queue is an error (EAGAIN) we act on, not a silent drop.
            s.set_router_mandatory(true).map_err(|e| e.to_string())?;
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
        let (in_tx, in_rx) = crossbeam_channel::bounded::<Event>(config.event_queue_max.max(1));
        let (to_workers_tx, to_workers_rx) =
            crossbeam_channel::bounded(config.command_queue_max.max(1));
        let (to_clients_tx, to_clients_rx) =
            crossbeam_channel::bounded(config.command_queue_max.max(1));
        let (worker_waker, worker_wake_rx) = net::waker().map_err(|e| e.to_string())?;
        let (client_waker, client_wake_rx) = net::waker().map_err(|e| e.to_string())?;

        let clock = Clock::start();
        let mut core_config = config.core.clone();
        core_config.address_to_workers = address_to_workers.clone();
        core_config.address_to_clients = address_to_clients.clone();
        core_config.max_message_bytes = config.max_message_bytes.max(0) as u64;
        core_config.instance_token = net::unpredictable_token();
        let journal = match &config.state_dir {
            Some(dir) => Some(Journal::open(dir).map_err(|e| e.to_string())?),
            None => None,
        };
        core_config.journal = journal.is_some();
        let mut core = SchedulerCore::new(core_config);
        if let Some(j) = &journal {
            let recovered = j.load().map_err(|e| e.to_string())?;
            if recovered != Recovered::default() {
                core.recover(clock.now_ms(), recovered);
            }
        }

        let mut threads = Vec::new();
        {
            let in_tx = in_tx.clone();
            let stop = stop.clone();
            threads.push(spawn("zask-sched-workers", move || {
                socket_loop(
                    Port::Workers,
                    worker_socket,
                    worker_wake_rx,
                    to_workers_rx,
                    in_tx,
                    stop,
                    decode_worker,
                    Some(monitor),
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
                    in_tx,
                    stop,
                    decode_client,
                    None,
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
                if let Err(e) = core_loop(core, journal, in_rx, outs, clock, stop) {
                    // Nothing of the failed batch has left; a restart with the same state dir
                    // resumes from what was durable.
                    crate::fatal::stop_process(&e.to_string());
                }
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
    crate::fatal::spawn_service(name, f).map_err(|e| format!("cannot start thread {name}: {e}"))
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

/// Runs the core until stopped (Ok) or until the journal fails (Err: nothing of that batch
/// was sent).
fn core_loop<J: JournalWrite>(
    mut core: SchedulerCore,
    journal: Option<J>,
    inputs: Receiver<Event>,
    outs: Outputs,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> Result<(), JournalFailed> {
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
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
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
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
                } => {
                    to_clients = true;
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

/// What a socket thread makes of one incoming message.
enum Decoded {
    /// For the core.
    Event(Event),
    /// Answer it right here (it could not be decoded), or drop it (`None`).
    Answer(Option<Frame>),
}

/// Which port a socket thread owns: says what a peer that stopped reading means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Port {
    Workers,
    Clients,
}

/// Peers whose queue was found full, so the warning and the event come once per stall. A
/// send that succeeds again clears the mark; the set is emptied if strangers ever fill it.
const FULL_PEERS_MAX: usize = 1024;

/// Owns one ROUTER socket: decodes what arrives, encodes and sends what the core wants sent.
/// Never blocks on anything but its poll: when the core's event queue is full it keeps the
/// one event it could not hand over and stops reading (ZeroMQ and TCP push back on the
/// senders) while it goes on sending. With a monitor, every dropped peer connection becomes a
/// `WorkerConnectionLost` event.
#[allow(clippy::too_many_arguments)]
fn socket_loop<M: serde::Serialize>(
    port: Port,
    socket: zmq::Socket,
    wake: WakeReceiver,
    outgoing: Receiver<(FrameIdentity, M, Vec<Frame>)>,
    events: Sender<Event>,
    stop: Arc<AtomicBool>,
    decode: fn(FrameIdentity, Vec<Frame>) -> Decoded,
    monitor: Option<zmq::Socket>,
) {
    // Events the core's queue had no room for, oldest first; nothing is read while any wait.
    let mut backlog: std::collections::VecDeque<Event> = Default::default();
    let mut full_peers: std::collections::HashSet<FrameIdentity> = Default::default();
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        while let Some(e) = backlog.pop_front() {
            match events.try_send(e) {
                Ok(()) => {}
                Err(TrySendError::Full(e)) => {
                    backlog.push_front(e);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        let reading = backlog.is_empty();
        let (socket_ready, wake_ready, monitor_ready) = {
            let interest = if reading {
                zmq::POLLIN
            } else {
                zmq::PollEvents::empty()
            };
            let mut items = vec![
                socket.as_poll_item(interest),
                zmq::PollItem::from_fd(wake.fd(), zmq::POLLIN),
            ];
            if let Some(m) = &monitor {
                items.push(m.as_poll_item(interest));
            }
            // While the core's queue is full nothing says when it has room again: look often.
            let timeout_ms = if reading { 1000 } else { 1 };
            if let Err(e) = net::poll(&mut items, timeout_ms) {
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
            if let Some(m) = &monitor {
                while backlog.is_empty() && net::try_recv(m).is_some() {
                    hand_over(&events, &mut backlog, Event::WorkerConnectionLost);
                }
            }
        }
        if socket_ready {
            while backlog.is_empty() {
                let Some(mut frames) = net::try_recv(&socket) else {
                    break;
                };
                if frames.len() < 2 {
                    warn!("dropping a message with no routing identity or no body");
                    continue;
                }
                let identity = frames.remove(0);
                match decode(identity.clone(), frames) {
                    Decoded::Event(e) => hand_over(&events, &mut backlog, e),
                    Decoded::Answer(Some(reply)) => {
                        let _ = net::send(&socket, Some(&identity), reply, vec![]);
                    }
                    Decoded::Answer(None) => {}
                }
            }
        }
        if wake_ready {
            wake.reset();
        }
        // Drained on every pass, not only after a wake: a message is never stranded.
        for (identity, msg, frames) in outgoing.try_iter() {
            match net::send(&socket, Some(&identity), encode(&msg), frames) {
                Ok(()) => {
                    if !full_peers.is_empty() {
                        full_peers.remove(&identity);
                    }
                }
                Err(zmq::Error::EAGAIN) => {
                    if full_peers.len() >= FULL_PEERS_MAX {
                        full_peers.clear();
                    }
                    if full_peers.insert(identity.clone()) {
                        backlog.push_back(peer_not_reading(port, identity));
                    }
                }
                // EHOSTUNREACH: the peer is gone; loss detection deals with it.
                Err(e) => debug!("could not send to {}: {e}", describe(&identity)),
            }
        }
    }
}

/// Hands an event to the core, or keeps it (and stops reading) if the core's queue is full.
fn hand_over(
    events: &Sender<Event>,
    backlog: &mut std::collections::VecDeque<Event>,
    event: Event,
) {
    if let Err(TrySendError::Full(e)) = events.try_send(event) {
        backlog.push_back(e);
    }
}

/// What a peer whose ZeroMQ queue is full means (see `client_queue_max_messages` and
/// `worker_queue_max_messages`).
fn peer_not_reading(port: Port, identity: FrameIdentity) -> Event {
    match port {
        Port::Clients => {
            warn!(
                "client {} is not reading its replies (its queue is full): dropping the reply \
                 and the client's pending requests",
                describe(&identity)
            );
            Event::FromClient {
                identity,
                msg: FromClient::Goodbye,
                frames: vec![],
            }
        }
        Port::Workers => {
            warn!(
                "worker {} is not reading (its queue is full): a message to it was dropped; \
                 probing the workers",
                describe(&identity)
            );
            Event::WorkerConnectionLost
        }
    }
}

fn describe(identity: &[u8]) -> String {
    String::from_utf8_lossy(identity).into_owned()
}

fn decode_worker(identity: FrameIdentity, frames: Vec<Frame>) -> Decoded {
    let counted = |m: &FromWorker| match m {
        FromWorker::Finished(done) => done.iter().filter(|f| f.has_value).count(),
        FromWorker::Data { found, .. } => found.len(),
        _ => 0,
    };
    match split(frames, counted) {
        Ok((msg, frames)) => Decoded::Event(Event::FromWorker {
            identity,
            msg,
            frames,
        }),
        Err(DecodeError::Legacy) => {
            warn!(
                "legacy (2015) worker message from {} dropped: the compat layer is not part of this build",
                describe(&identity)
            );
            Decoded::Answer(None)
        }
        Err(e) => {
            warn!(
                "dropping malformed message on the worker port from {}: {e}",
                describe(&identity)
            );
            Decoded::Answer(Some(encode(&ToWorker::Malformed {
                message: e.to_string(),
            })))
        }
    }
}

fn decode_client(identity: FrameIdentity, frames: Vec<Frame>) -> Decoded {
    let counted = |m: &FromClient| match m {
        FromClient::Scatter { keys, .. } => keys.len(),
        _ => 0,
    };
    match split(frames, counted) {
        Ok((msg, frames)) => Decoded::Event(Event::FromClient {
            identity,
            msg,
            frames,
        }),
        Err(e) => {
            warn!(
                "dropping malformed message on the client port from {}: {e}",
                describe(&identity)
            );
            // Request 0 is never used by clients: it marks an answer to an unreadable request.
            Decoded::Answer(Some(encode(&ToClient::Failed {
                request: 0,
                error: RequestError::Protocol {
                    message: format!("malformed message: {e}"),
                },
            })))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::collection::Collection;
    use crate::scheduler::core::JournalOp;

    /// A journal in memory whose flush fails when told to.
    struct TestJournal {
        fail_flush: bool,
        applied: RefCell<Vec<JournalOp>>,
    }

    impl JournalWrite for TestJournal {
        fn apply(&self, op: &JournalOp) -> Result<(), JournalError> {
            self.applied.borrow_mut().push(op.clone());
            Ok(())
        }
        fn flush(&self) -> Result<(), JournalError> {
            if self.fail_flush {
                Err(JournalError::Io(
                    "No space left on device (os error 28)".into(),
                ))
            } else {
                Ok(())
            }
        }
        fn location(&self) -> String {
            "/test/state".into()
        }
    }

    type Sent<M> = Receiver<(FrameIdentity, M, Vec<Frame>)>;

    /// Runs the shipped core loop over a batch (hello, then store a collection: one journal
    /// operation and two replies) until its inputs end; returns how it ended and what it sent.
    fn run_batch(
        journal: TestJournal,
    ) -> (
        Result<(), JournalFailed>,
        TestJournal,
        Sent<ToClient>,
        Sent<ToWorker>,
    ) {
        let core = SchedulerCore::new(CoreConfig {
            journal: true,
            ..CoreConfig::default()
        });
        let (in_tx, in_rx) = crossbeam_channel::unbounded();
        let (to_workers, to_workers_rx) = crossbeam_channel::unbounded();
        let (to_clients, to_clients_rx) = crossbeam_channel::unbounded();
        let (worker_waker, _w) = net::waker().unwrap();
        let (client_waker, _c) = net::waker().unwrap();
        let client = b"client-1".to_vec();
        let collection = Collection {
            kind: crate::collection::CollectionKind::Graph,
            graph: vec![("x".into(), crate::graph::Expr::Lit(1.into()))],
            keys: vec!["x".into()],
            npartitions: 1,
            name: "c".into(),
        };
        for msg in [
            FromClient::Hello {
                protocol_version: crate::protocol::PROTOCOL_VERSION,
            },
            FromClient::SetCollection {
                request: 1,
                name: "c".into(),
                collection,
            },
        ] {
            in_tx
                .send(Event::FromClient {
                    identity: client.clone(),
                    msg,
                    frames: vec![],
                })
                .unwrap();
        }
        // Ends the loop once the batch is handled.
        drop(in_tx);
        let outs = Outputs {
            to_workers,
            worker_waker,
            to_clients,
            client_waker,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let ended = core_loop(core, Some(&journal), in_rx, outs, Clock::start(), stop);
        (ended, journal, to_clients_rx, to_workers_rx)
    }

    #[test]
    fn journal_flush_failure_stops_the_loop_and_sends_nothing_of_the_batch() {
        let (ended, journal, to_clients, to_workers) = run_batch(TestJournal {
            fail_flush: true,
            applied: RefCell::new(vec![]),
        });
        let err = ended.unwrap_err();
        assert_eq!(err.location, "/test/state");
        assert!(err.to_string().contains("/test/state"), "{err}");
        assert!(err.to_string().contains("No space left"), "{err}");
        assert_eq!(journal.applied.borrow().len(), 1, "the operation was tried");
        // Neither the welcome nor the collection's "done" left.
        assert_eq!(to_clients.try_iter().count(), 0);
        assert_eq!(to_workers.try_iter().count(), 0);
    }

    #[test]
    fn a_durable_batch_is_sent_after_its_journal() {
        let (ended, journal, to_clients, _) = run_batch(TestJournal {
            fail_flush: false,
            applied: RefCell::new(vec![]),
        });
        assert_eq!(ended, Ok(()));
        assert!(matches!(
            journal.applied.borrow()[..],
            [JournalOp::PutCollection { .. }]
        ));
        let sent: Vec<ToClient> = to_clients.try_iter().map(|(_, m, _)| m).collect();
        assert!(
            matches!(
                sent[..],
                [ToClient::Welcome { .. }, ToClient::Done { request: 1 }]
            ),
            "{sent:?}"
        );
    }

    /// The socket thread, with the core's queue full (room for one event, nobody reading):
    /// it stops reading its socket but keeps sending; once the core reads, the waiting
    /// requests arrive in order, none lost.
    #[test]
    fn a_full_core_queue_stops_reading_but_never_sending() {
        let deadline = Duration::from_secs(20);
        let ctx = zmq::Context::new();
        let router = ctx.socket(zmq::ROUTER).unwrap();
        net::configure_bounded(&router, net::DEFAULT_MAX_MESSAGE_BYTES, 100).unwrap();
        router.set_router_mandatory(true).unwrap();
        let address = net::bind(&router, "127.0.0.1", 0).unwrap();
        let client = ctx.socket(zmq::DEALER).unwrap();
        client.set_identity(b"c1").unwrap();
        client.set_linger(0).unwrap();
        client.set_rcvtimeo(deadline.as_millis() as i32).unwrap();
        client.connect(&address).unwrap();
        let (events_tx, events_rx) = crossbeam_channel::bounded(1);
        let (out_tx, out_rx) = crossbeam_channel::unbounded::<(FrameIdentity, ToClient, _)>();
        let (waker, wake_rx) = net::waker().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                socket_loop(
                    Port::Clients,
                    router,
                    wake_rx,
                    out_rx,
                    events_tx,
                    stop,
                    decode_client,
                    None,
                )
            })
        };
        for request in 1..=5 {
            client
                .send(encode(&FromClient::Status { request }), 0)
                .unwrap();
        }
        // The core's queue fills with the first request...
        let started = std::time::Instant::now();
        while !events_rx.is_full() {
            assert!(
                started.elapsed() < deadline,
                "the first request never arrived"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        // ...and the socket thread still sends what the core wants sent.
        out_tx
            .send((b"c1".to_vec(), ToClient::Done { request: 7 }, vec![]))
            .unwrap();
        waker.wake();
        let reply = client
            .recv_multipart(0)
            .expect("a reply while the core is busy");
        let reply: ToClient = crate::protocol::codec::decode(&reply[0]).unwrap();
        assert_eq!(reply, ToClient::Done { request: 7 });
        // The core reads: every request arrives, in order.
        for expected in 1..=5 {
            match events_rx.recv_timeout(deadline) {
                Ok(Event::FromClient {
                    msg: FromClient::Status { request },
                    ..
                }) => assert_eq!(request, expected),
                Ok(other) => panic!("unexpected event {other:?}"),
                Err(e) => panic!("request {expected} never reached the core: {e}"),
            }
        }
        stop.store(true, Ordering::SeqCst);
        waker.wake();
        thread.join().unwrap();
    }
}

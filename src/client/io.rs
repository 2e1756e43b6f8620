//! The client's IO thread: owns the DEALER to the scheduler, takes requests from calling
//! threads through a channel, and hands everything else to `ClientState` (`state.rs`): this
//! file only moves bytes and reads the clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use log::{debug, warn};

use super::state::{Awaited, ClientState, Progress, Reply};
use super::ClientConfig;
use crate::net::{self, Clock};
use crate::protocol::codec::encode;
use crate::protocol::{Frame, FromClient};

/// A message from a calling thread to the IO thread.
pub(super) enum Outgoing {
    /// A request (or the hello) whose reply goes to `reply`.
    Request {
        awaited: Awaited,
        msg: FromClient,
        frames: Vec<Frame>,
        reply: Sender<Reply>,
        /// Fail the request with `Timeout` (and cancel it) after this long.
        timeout_ms: Option<u64>,
        /// Where its progress reports go, if it asked for them (`WatchProgress`).
        progress: Option<Sender<Progress>>,
    },
    /// A message no reply is expected to (goodbye): it carries no request id.
    Notice(FromClient),
}

/// How a waiting call is reached: its reply, and its progress reports if it wants them.
struct Waiter {
    reply: Sender<Reply>,
    progress: Option<Sender<Progress>>,
}

/// How long the socket may take to deliver the goodbye (and anything else still queued) when
/// the client closes; ZeroMQ would drop it otherwise (sockets close at once, see
/// `net::configure_bounded`) and the scheduler would keep the client until its timeout.
const CLOSE_LINGER_MS: i32 = 1_000;

pub(super) fn io_loop(
    socket: zmq::Socket,
    wake: net::WakeReceiver,
    outgoing: Receiver<Outgoing>,
    closed: Arc<AtomicBool>,
    address: String,
    config: ClientConfig,
) {
    let clock = Clock::start();
    let mut state: ClientState<Waiter> = ClientState::new(
        address,
        config.ping_interval_ms,
        config.scheduler_timeout_ms,
        clock.now_ms(),
    );
    // A connection the scheduler refuses (no scheduler there, or a key it does not accept)
    // fails every send until the connect timeout says so: one warning every few seconds,
    // with how many sends failed meanwhile, not one per ping.
    let mut unsent = SendFailures::default();
    let mut send_all = |state: &mut ClientState<Waiter>| {
        for (msg, frames) in state.take_outgoing() {
            if let Err(e) = net::send(&socket, None, encode(&msg), frames) {
                unsent.failed(clock.now_ms(), &e);
            }
        }
        state.sent(clock.now_ms());
    };
    loop {
        let timeout = state
            .next_deadline()
            .map_or(config.ping_interval_ms, |d| {
                d.saturating_sub(clock.now_ms())
            })
            .min(config.ping_interval_ms);
        let readable = {
            let mut items = [
                socket.as_poll_item(zmq::POLLIN),
                zmq::PollItem::from_fd(wake.fd(), zmq::POLLIN),
            ];
            if net::poll(&mut items, timeout as i64).is_err() {
                break;
            }
            (items[0].is_readable(), items[1].is_readable())
        };
        if readable.1 {
            wake.reset();
        }
        let now = clock.now_ms();
        for o in outgoing.try_iter() {
            match o {
                Outgoing::Request {
                    awaited,
                    msg,
                    frames,
                    reply,
                    timeout_ms,
                    progress,
                } => {
                    let waiter = Waiter { reply, progress };
                    state.request(now, awaited, msg, frames, waiter, timeout_ms)
                }
                Outgoing::Notice(msg) => state.send(msg, vec![]),
            }
        }
        send_all(&mut state);
        if closed.load(Ordering::SeqCst) {
            break;
        }
        if readable.0 {
            while let Some(frames) = net::try_recv(&socket) {
                if let Err(e) = state.receive(now, frames) {
                    warn!("dropping an unreadable message from the scheduler: {e}");
                }
            }
        }
        // At `now`, when the socket was last read: whatever arrived since is not counted yet.
        state.tick(now);
        for (request, progress) in state.take_progress() {
            let waiter = state.waiter(Awaited::Reply(request));
            if let Some(tx) = waiter.and_then(|w| w.progress.as_ref()) {
                let _ = tx.send(progress);
            }
        }
        for (waiter, reply) in state.take_replies() {
            let _ = waiter.reply.send(reply);
        }
        for u in state.take_unsolicited() {
            match u.answers {
                Some(awaited) => {
                    debug!("answer to {awaited:?}, which nobody waits for: {:?}", u.msg)
                }
                None => warn!("the scheduler refused a message: {:?}", u.msg),
            }
        }
        send_all(&mut state);
    }
    for (waiter, reply) in state.close() {
        let _ = waiter.reply.send(reply);
    }
    if let Err(e) = socket.set_linger(CLOSE_LINGER_MS) {
        debug!("could not set the socket's linger: {e}");
    }
    debug!("client IO thread stopped");
}

/// Failed sends to the scheduler, warned about at most every `SEND_WARNING_INTERVAL_MS`.
#[derive(Default)]
struct SendFailures {
    warned_at_ms: Option<u64>,
    since_warning: u64,
}

const SEND_WARNING_INTERVAL_MS: u64 = 5_000;

impl SendFailures {
    fn failed(&mut self, now_ms: u64, error: &zmq::Error) {
        let due = self
            .warned_at_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= SEND_WARNING_INTERVAL_MS);
        if !due {
            self.since_warning += 1;
            return;
        }
        let more = match self.since_warning {
            0 => String::new(),
            n => format!(" ({n} more since the last warning)"),
        };
        warn!("could not send to the scheduler: {error}{more}");
        self.warned_at_ms = Some(now_ms);
        self.since_warning = 0;
    }
}

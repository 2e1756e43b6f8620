//! The client's IO thread: owns the DEALER to the scheduler, takes requests from calling
//! threads through a channel, and hands everything else to `ClientState` (`state.rs`): this
//! file only moves bytes and reads the clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use log::{debug, warn};

use super::state::{Awaited, ClientState, Reply};
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
    },
    /// A message no reply is expected to (goodbye): it carries no request id.
    Notice(FromClient),
}

pub(super) fn io_loop(
    socket: zmq::Socket,
    wake: net::WakeReceiver,
    outgoing: Receiver<Outgoing>,
    closed: Arc<AtomicBool>,
    address: String,
    config: ClientConfig,
) {
    let clock = Clock::start();
    let mut state: ClientState<Sender<Reply>> = ClientState::new(
        address,
        config.ping_interval_ms,
        config.scheduler_timeout_ms,
        clock.now_ms(),
    );
    let send_all = |state: &mut ClientState<Sender<Reply>>| {
        for (msg, frames) in state.take_outgoing() {
            if let Err(e) = net::send(&socket, None, encode(&msg), frames) {
                warn!("could not send to the scheduler: {e}");
            }
        }
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
                } => state.request(now, awaited, msg, frames, reply, timeout_ms),
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
        state.tick(now);
        for (tx, reply) in state.take_replies() {
            let _ = tx.send(reply);
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
    for (tx, reply) in state.close() {
        let _ = tx.send(reply);
    }
    debug!("client IO thread stopped");
}

//! The client's IO thread: owns the DEALER to the scheduler, takes requests from calling
//! threads through a channel, and hands everything else to `ClientState` (`state.rs`): this
//! file only moves bytes and reads the clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use log::{debug, warn};

use super::state::{ClientState, Reply};
use super::ClientConfig;
use crate::net::{self, Clock};
use crate::protocol::codec::encode;
use crate::protocol::{Frame, FromClient};

/// A message from a calling thread to the IO thread.
pub(super) struct Outgoing {
    pub request: u64,
    pub msg: FromClient,
    pub frames: Vec<Frame>,
    /// Where the reply goes; None when none is expected.
    pub reply: Option<Sender<Reply>>,
    /// Fail the request with `Timeout` (and cancel it) after this long.
    pub timeout_ms: Option<u64>,
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
            match o.reply {
                Some(reply) => state.request(now, o.request, o.msg, o.frames, reply, o.timeout_ms),
                None => state.send(o.msg, o.frames),
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
            debug!(
                "reply to request {}, which nobody waits for: {:?}",
                u.request, u.msg
            );
        }
        send_all(&mut state);
    }
    for (tx, reply) in state.close() {
        let _ = tx.send(reply);
    }
    debug!("client IO thread stopped");
}

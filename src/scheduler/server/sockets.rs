//! The scheduler's socket threads: each owns one ROUTER socket, decodes what arrives into
//! events for the core and encodes what the core wants sent, never blocking on the core.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use log::{debug, error, warn};

use crate::net::{self, Clock, WakeReceiver};
use crate::protocol::codec::{classify, decode, encode, split, DecodeError};
use crate::protocol::{
    ClientRole, ConnectionId, Frame, FromClient, FromWorker, RequestError, RequestId, ToClient,
    ToWorker,
};
use crate::scheduler::core::Event;
use crate::security::Role;

use super::legacy::{self, LegacyRequest};
use super::rate::{RateLimit, RateTable, Verdict, TRACKED_CONNECTIONS_MAX};
use super::{Input, Port};

/// What a socket thread makes of one incoming message.
pub(super) enum Decoded {
    /// For the core.
    Event(Event),
    /// A 2015-protocol message, for the core thread's legacy handler.
    Legacy(LegacyRequest),
    /// Answer it right here (it could not be decoded), or drop it (`None`).
    Answer(Option<Frame>),
    /// It could not be decoded (`error`): warn (at most once per connection per second, see
    /// `rate.rs`) and answer with `reply` if there is one.
    Malformed {
        error: DecodeError,
        reply: Option<Frame>,
    },
}

/// Peers whose queue was found full, so the warning and the event come once per stall. A
/// send that succeeds again clears the mark; the set is emptied if strangers ever fill it.
const FULL_PEERS_MAX: usize = 1024;

/// Owns one ROUTER socket: decodes what arrives, encodes and sends what the core wants sent.
/// Never blocks on anything but its poll: when the core's event queue is full it keeps the
/// one event it could not hand over and stops reading (ZeroMQ and TCP push back on the
/// senders) while it goes on sending. With a monitor, every dropped peer connection becomes a
/// `WorkerConnectionLost` event. Each connection's messages past `rate` are dropped here and
/// never reach the core (`rate.rs`; see `rate_limited`).
#[allow(clippy::too_many_arguments)]
pub(super) fn socket_loop<M: serde::Serialize>(
    port: Port,
    socket: zmq::Socket,
    wake: WakeReceiver,
    outgoing: Receiver<(ConnectionId, M, Vec<Frame>)>,
    legacy_outgoing: Receiver<(ConnectionId, Vec<Frame>)>,
    events: Sender<Input>,
    stop: Arc<AtomicBool>,
    decode: fn(Peer, Vec<Frame>) -> Decoded,
    monitor: Option<zmq::Socket>,
    rate: RateLimit,
) {
    // Events the core's queue had no room for, oldest first; nothing is read while any wait.
    let mut backlog: std::collections::VecDeque<Input> = Default::default();
    let mut full_peers: std::collections::HashSet<ConnectionId> = Default::default();
    let clock = Clock::start();
    let mut rates = RateTable::new(rate, TRACKED_CONNECTIONS_MAX);
    loop {
        if stop.load(Ordering::SeqCst) {
            flush_before_stop(&socket, &outgoing);
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
                    hand_over(
                        &events,
                        &mut backlog,
                        Input::Core(Event::WorkerConnectionLost),
                    );
                }
            }
        }
        if socket_ready {
            while backlog.is_empty() {
                // Only the client port acts on a role; the worker port lets in one key only.
                let received = match port {
                    Port::Clients => net::try_recv_with_user(&socket),
                    Port::Workers => net::try_recv(&socket).map(|frames| (frames, None)),
                };
                let Some((mut frames, user)) = received else {
                    break;
                };
                if frames.len() < 2 {
                    warn!("dropping a message with no routing identity or no body");
                    continue;
                }
                let identity = frames.remove(0);
                let now_ms = clock.now_ms();
                if let Verdict::Drop { log } = rates.admit(&identity, now_ms) {
                    let reply = rate_limited(port, &identity, &frames, log, rates.limit());
                    if let Some(reply) = reply {
                        let _ = net::send(&socket, Some(&identity), reply, vec![]);
                    }
                    continue;
                }
                let peer = Peer {
                    identity: ConnectionId::from(identity.clone()),
                    role: role_of(user.as_deref()),
                };
                let reply = match decode(peer, frames) {
                    Decoded::Event(e) => {
                        // A ping is answered here, at once, as well as by the core (which
                        // checks its list of pending requests): a scheduler busy on a big
                        // request does not look dead to its clients (see `pong_now`).
                        let pong = pong_now(&e);
                        hand_over(&events, &mut backlog, Input::Core(e));
                        pong
                    }
                    Decoded::Legacy(r) => {
                        hand_over(&events, &mut backlog, Input::Legacy(r));
                        None
                    }
                    Decoded::Answer(reply) => reply,
                    Decoded::Malformed { error, reply } => {
                        if let Some(unlogged) = rates.may_log(&identity, now_ms) {
                            let more = match unlogged {
                                0 => String::new(),
                                n => format!(" ({n} more since the last warning)"),
                            };
                            warn!(
                                "dropping malformed message on the {} port from {}: \
                                 {error}{more}",
                                port.name(),
                                ConnectionId::from(identity.clone())
                            );
                        }
                        reply
                    }
                };
                if let Some(reply) = reply {
                    let _ = net::send(&socket, Some(&identity), reply, vec![]);
                }
            }
        }
        if wake_ready {
            wake.reset();
        }
        // Drained on every pass, not only after a wake: a message is never stranded.
        for (identity, msg, frames) in outgoing.try_iter() {
            match net::send(&socket, Some(identity.as_bytes()), encode(&msg), frames) {
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
                        backlog.push_back(Input::Core(peer_not_reading(port, identity)));
                    }
                }
                // EHOSTUNREACH: the peer is gone; loss detection deals with it.
                Err(e) => debug!("could not send to {}: {e}", identity),
            }
        }
        // Legacy (2015) replies: a peer that does not read them only loses them.
        for (identity, mut frames) in legacy_outgoing.try_iter() {
            if frames.is_empty() {
                continue;
            }
            let header = frames.remove(0);
            if let Err(e) = net::send(&socket, Some(identity.as_bytes()), header, frames) {
                warn!("could not send a legacy reply to {identity}: {e}");
            }
        }
    }
}

/// How long a stopping socket thread lets ZeroMQ deliver what it still holds (the last
/// batch's messages: a shutdown's dismissals and answer) before the socket is closed.
const STOP_LINGER_MS: i32 = 2_000;

/// The scheduler stops: sends what the core queued last, then lets ZeroMQ deliver it for up
/// to `STOP_LINGER_MS` as the socket closes (sockets close at once otherwise: see
/// `net::configure_bounded`), so a shutdown's last messages are not lost.
fn flush_before_stop<M: serde::Serialize>(
    socket: &zmq::Socket,
    outgoing: &Receiver<(ConnectionId, M, Vec<Frame>)>,
) {
    let mut sent = false;
    for (identity, msg, frames) in outgoing.try_iter() {
        sent |= net::send(socket, Some(identity.as_bytes()), encode(&msg), frames).is_ok();
    }
    if sent {
        if let Err(e) = socket.set_linger(STOP_LINGER_MS) {
            debug!("could not set the linger of a stopping socket: {e}");
        }
    }
}

/// A message past its connection's rate limit: logs the warning if one is due (`log`: the
/// messages dropped since the last one) and returns the answer, if any. A client's request is
/// failed as `RateLimited` (so its call ends at once, and may be retried), its hello or ping
/// rejected with that error; a cancel or goodbye, a 2015-protocol message and anything
/// unreadable only dropped. Nothing is answered on the worker port: a worker that floods the
/// scheduler is broken or hostile, and the protocol has no error for it to act on.
fn rate_limited(
    port: Port,
    identity: &[u8],
    frames: &[Frame],
    log: Option<u64>,
    limit: RateLimit,
) -> Option<Frame> {
    if let Some(dropped) = log {
        warn!(
            "{} {} sends more than {} messages per second (burst {}): dropped {dropped} \
             message(s) since the last warning",
            port.name(),
            ConnectionId::from(identity.to_vec()),
            limit.max_messages_per_second,
            limit.burst_messages
        );
    }
    if port == Port::Workers || legacy_message(frames) {
        return None;
    }
    let error = RequestError::RateLimited {
        max_messages_per_second: limit.max_messages_per_second,
    };
    let msg: FromClient = decode(frames.first()?).ok()?;
    match client_request(&msg) {
        Some(request) => Some(encode(&ToClient::Failed { request, error })),
        None => match msg {
            FromClient::Hello { .. } | FromClient::Ping { .. } => {
                Some(encode(&ToClient::Rejected { error }))
            }
            _ => None,
        },
    }
}

/// The request a client message asks a reply to, if any (a cancel names a request but waits
/// for nothing).
fn client_request(msg: &FromClient) -> Option<RequestId> {
    match msg {
        FromClient::Hello { .. }
        | FromClient::Ping { .. }
        | FromClient::Cancel { .. }
        | FromClient::WatchProgress { .. }
        | FromClient::Goodbye => None,
        FromClient::Submit { request, .. }
        | FromClient::Gather { request, .. }
        | FromClient::Scatter { request, .. }
        | FromClient::WhoHas { request, .. }
        | FromClient::Status { request, .. }
        | FromClient::Release { request, .. }
        | FromClient::Replicate { request, .. }
        | FromClient::SetCollection { request, .. }
        | FromClient::GetCollection { request, .. }
        | FromClient::ListCollections { request, .. }
        | FromClient::SetLegacyCollection { request, .. }
        | FromClient::GetLegacyCollection { request, .. }
        | FromClient::DeleteCollection { request, .. }
        | FromClient::Persist { request, .. }
        | FromClient::Publish { request, .. }
        | FromClient::GetDataset { request, .. }
        | FromClient::Unpublish { request, .. }
        | FromClient::Restart { request, .. }
        | FromClient::GetLogs { request, .. }
        | FromClient::ListDatasets { request }
        | FromClient::RetireWorkers { request, .. }
        | FromClient::Shutdown { request }
        | FromClient::SetScaling { request, .. }
        | FromClient::GetScaling { request }
        | FromClient::GetStory { request, .. }
        | FromClient::GetEvents { request } => Some(*request),
    }
}

/// The answer the socket thread gives a client's ping itself: the client's proof that the
/// scheduler process is alive while its core is busy (one Submit of a million tasks takes the
/// core seconds, longer than a client waits for a sign of life). The process answers only
/// while it runs: a scheduler killed or stopped (SIGKILL, SIGSTOP) answers nothing and is
/// found gone as before. The core's own `Pong` follows when it gets to the ping; the client
/// takes either as a sign of life and ignores the rest.
fn pong_now(event: &Event) -> Option<Frame> {
    match event {
        Event::FromClient {
            msg: FromClient::Ping { .. },
            ..
        } => Some(encode(&ToClient::Pong)),
        _ => None,
    }
}

/// Hands an event to the core, or keeps it (and stops reading) if the core's queue is full.
fn hand_over(
    events: &Sender<Input>,
    backlog: &mut std::collections::VecDeque<Input>,
    event: Input,
) {
    if let Err(TrySendError::Full(e)) = events.try_send(event) {
        backlog.push_back(e);
    }
}

/// What a peer whose ZeroMQ queue is full means (see `client_queue_max_messages` and
/// `worker_queue_max_messages`).
fn peer_not_reading(port: Port, identity: ConnectionId) -> Event {
    match port {
        Port::Clients => {
            warn!(
                "client {} is not reading its replies (its queue is full): dropping the reply \
                 and the client's pending requests",
                identity
            );
            Event::FromClient {
                // A goodbye needs no rights.
                role: ClientRole::Client,
                identity,
                msg: FromClient::Goodbye,
                frames: vec![],
            }
        }
        Port::Workers => {
            warn!(
                "worker {} is not reading (its queue is full): a message to it was dropped; \
                 probing the workers",
                identity
            );
            Event::WorkerConnectionLost
        }
    }
}

/// A message in the 2015 protocol (its first frame is a pickle): decoded for the core thread's
/// legacy handler, or logged and dropped when it does not decode.
fn legacy_message(frames: &[Frame]) -> bool {
    frames
        .first()
        .is_some_and(|f| classify(f) == Err(DecodeError::Legacy))
}

/// On a plaintext 2015 port only the 2015 protocol is served: a native message there (which
/// must come through the secure ports) is logged and dropped.
fn legacy_only(port: Port, identity: ConnectionId, frames: Vec<Frame>) -> Decoded {
    if legacy_message(&frames) {
        if let Some(r) = legacy::decode(port, identity, &frames) {
            return Decoded::Legacy(r);
        }
    } else {
        warn!(
            "dropping a native message on the plaintext 2015 {} port from {identity}: Zask's own \
             peers use the secure ports",
            port.name()
        );
    }
    Decoded::Answer(None)
}

pub(super) fn decode_legacy_worker(peer: Peer, frames: Vec<Frame>) -> Decoded {
    legacy_only(Port::Workers, peer.identity, frames)
}

pub(super) fn decode_legacy_client(peer: Peer, frames: Vec<Frame>) -> Decoded {
    legacy_only(Port::Clients, peer.identity, frames)
}

pub(super) fn decode_worker(peer: Peer, frames: Vec<Frame>) -> Decoded {
    let identity = peer.identity;
    if legacy_message(&frames) {
        return match legacy::decode(Port::Workers, identity, &frames) {
            Some(r) => Decoded::Legacy(r),
            None => Decoded::Answer(None),
        };
    }
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
        Err(e) => Decoded::Malformed {
            reply: Some(encode(&ToWorker::Malformed {
                message: e.to_string(),
            })),
            error: e,
        },
    }
}

/// Who sent a message: its connection, and what it may do.
pub(super) struct Peer {
    pub identity: ConnectionId,
    pub role: ClientRole,
}

/// What a client connection may do, from the user id the ZAP handler gave it (the role of
/// the key it presented: `crate::security`): the one place the client port decides it.
/// Without security there is no user id and no authentication, so everyone may do
/// everything (`--insecure`).
fn role_of(user: Option<&str>) -> ClientRole {
    let Some(user) = user else {
        return ClientRole::Operator;
    };
    match Role::from_user_id(user) {
        Some(Role::Operator) => ClientRole::Operator,
        // The client port lets in no worker key, so a worker's role is never a client's;
        // the least rights for anything but the operator's.
        _ => ClientRole::Client,
    }
}

pub(super) fn decode_client(peer: Peer, frames: Vec<Frame>) -> Decoded {
    let Peer { identity, role } = peer;
    if legacy_message(&frames) {
        return match legacy::decode(Port::Clients, identity, &frames) {
            Some(r) => Decoded::Legacy(r),
            None => Decoded::Answer(None),
        };
    }
    let counted = |m: &FromClient| match m {
        FromClient::Scatter { keys, .. } => keys.len(),
        _ => 0,
    };
    match split(frames, counted) {
        Ok((msg, frames)) => Decoded::Event(Event::FromClient {
            role,
            identity,
            msg,
            frames,
        }),
        // Its request id (if any) is unreadable: the answer belongs to no request.
        Err(e) => Decoded::Malformed {
            reply: Some(encode(&ToClient::Rejected {
                error: RequestError::Protocol {
                    message: format!("malformed message: {e}"),
                },
            })),
            error: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_is_answered_by_the_socket_thread_and_nothing_else_is() {
        let ping = Event::FromClient {
            role: ClientRole::Client,
            identity: ConnectionId::from(b"c".to_vec()),
            msg: FromClient::Ping {
                pending: vec![RequestId(1)],
            },
            frames: vec![],
        };
        let pong = pong_now(&ping).expect("a ping is answered");
        assert_eq!(decode::<ToClient>(&pong).unwrap(), ToClient::Pong);
        let status = Event::FromClient {
            role: ClientRole::Client,
            identity: ConnectionId::from(b"c".to_vec()),
            msg: FromClient::Status {
                request: RequestId(2),
            },
            frames: vec![],
        };
        assert!(pong_now(&status).is_none());
    }

    #[test]
    fn only_the_operators_key_gets_the_operator_role() {
        // No ZAP user id: a scheduler without security, where everyone may do everything.
        assert_eq!(role_of(None), ClientRole::Operator);
        assert_eq!(role_of(Some("operator")), ClientRole::Operator);
        assert_eq!(role_of(Some("client")), ClientRole::Client);
        // Anything else the least rights.
        assert_eq!(role_of(Some("worker")), ClientRole::Client);
        assert_eq!(role_of(Some("Operator ")), ClientRole::Client);
    }
}

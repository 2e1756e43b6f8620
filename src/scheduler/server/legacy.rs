//! The 2015 protocol on the scheduler's two ports (legacy-protocol.md §3.1, §6): a legacy
//! client connects, registers, asks `status` and the workers, runs graphs whose functions the
//! Rust workers have (`schedule`), stores and reads back collections (their payloads kept
//! verbatim by the core's collections part, in one namespace with native ones), and gets a
//! prompt, well-formed error for everything this build cannot do yet (Python-only functions). The scheduler core knows nothing
//! of this: the socket threads decode a legacy message (`zask_compat::legacy`) and hand it to
//! the core thread, which answers it here, with the workers from the core's read-only status
//! view, and sends the reply frames back through the port's socket thread. A graph becomes an
//! ordinary native `Submit` from the legacy connection ([`Sessions`]); the core's answer to it
//! is turned back into the legacy `schedule-ack` here, never sent raw to the legacy peer.

use std::collections::{HashMap, HashSet, VecDeque};

use log::{debug, info, warn};
use zask_compat::legacy::{
    empty_payload, graft, ok_payload, raising_key_error_payload, reply_frames,
    schedule_error_payload, workers_payload, Frame, LegacyError, LegacyMessage, LegacyWorker,
    ReplyHeader,
};
use zask_compat::pickle::helpers::DateTime;
use zask_compat::pickle::{Node, NodeId, Pickle};

use super::legacy_graph::{self, Translated};
use super::Port;
use crate::graph::KeySpec;
use crate::protocol::codec::decode_value;
use crate::protocol::{ConnectionId, FromClient, RequestError, RequestId, ToClient, WorkerInfo};

/// A decoded legacy message on its way from a socket thread to the core thread.
#[derive(Debug)]
pub(crate) struct LegacyRequest {
    pub port: Port,
    pub identity: ConnectionId,
    pub msg: LegacyMessage,
    /// The payload frame as it arrived, kept for `set-collection` only (stored verbatim).
    pub raw_payload: Option<Frame>,
}

/// Decodes frames that the framing layer recognised as legacy (`DecodeError::Legacy`). Garbage
/// that looks legacy but does not decode is logged and gets no reply: nothing is known about
/// what the sender expects.
pub(super) fn decode(
    port: Port,
    identity: ConnectionId,
    frames: &[Frame],
) -> Option<LegacyRequest> {
    match LegacyMessage::decode(frames) {
        Ok(msg) => Some(LegacyRequest {
            raw_payload: (msg.function == "set-collection")
                .then(|| frames.get(1).cloned())
                .flatten(),
            port,
            identity,
            msg,
        }),
        Err(e) => {
            warn!(
                "dropping an unreadable legacy (2015) message on the {} port from {identity}: {e}",
                port.name()
            );
            None
        }
    }
}

/// The workers as the legacy `register` / `get_workers` replies list them: their address
/// bytes (a 2015 Python worker's own, which names its bridge), pid, and `now` as last seen
/// (the core lists only live workers).
pub(super) fn legacy_workers(workers: &[WorkerInfo], now: DateTime) -> Vec<LegacyWorker> {
    workers
        .iter()
        .map(|w| LegacyWorker {
            address: if w.runs_python {
                w.name.as_ref().as_bytes().to_vec()
            } else {
                w.address.as_ref().as_bytes().to_vec()
            },
            pid: w.pid,
            last_seen: now,
        })
        .collect()
}

/// The reply frames (`[header, payload]`, the socket adds the identity) to one legacy request,
/// or None when the 2015 scheduler sent none. `address` is this port's advertised address;
/// `workers` is asked only by the requests that list them. A `schedule` goes to
/// [`Sessions::schedule`] instead (it needs the core).
pub(super) fn answer(
    req: &LegacyRequest,
    address: &str,
    now: DateTime,
    workers: impl FnOnce() -> Vec<LegacyWorker>,
) -> Option<Vec<Frame>> {
    let msg = &req.msg;
    let who = &req.identity;
    let header = || ReplyHeader::new(address.as_bytes(), now);
    let reply = match (req.port, msg.function.as_str()) {
        (_, "status") => reply_frames(header().jobid_of(msg), &ok_payload()),
        (Port::Clients, "register") => {
            info!(
                "legacy (2015) client {who} registered (pid {})",
                msg.payload_int("pid").unwrap_or(-1)
            );
            reply_frames(header(), &workers_payload(&workers()))
        }
        (Port::Clients, "get_workers") => {
            reply_frames(header().status("OK"), &workers_payload(&workers()))
        }
        (Port::Clients, "close") => {
            // The 2015 scheduler shut itself down on this; anyone can send it, so Zask does not.
            warn!(
                "legacy (2015) client {who} asked the scheduler to close (close_scheduler=True): \
                 ignored, an unauthenticated request never shuts Zask down"
            );
            return None;
        }
        (Port::Workers, "heartbeat") => {
            info!(
                "legacy (2015) worker {who} (pid {}) ignored: legacy workers are not supported yet",
                msg.payload_int("pid").unwrap_or(-1)
            );
            return None;
        }
        (port, f) => {
            warn!(
                "legacy (2015) message '{f}' on the {} port from {who} is not one Zask answers: dropped",
                port.name()
            );
            return None;
        }
    };
    match reply {
        Ok(frames) => Some(frames),
        Err(e) => {
            warn!("could not answer legacy '{}' from {who}: {e}", msg.function);
            None
        }
    }
}

/// Legacy connections are served one graph at a time (the 2015 client is synchronous:
/// replies are matched by order), and at most this many connections that ever sent a graph
/// are remembered as legacy (the oldest forgotten first); a forgotten one that sends a graph
/// again is remembered again.
const LEGACY_CONNECTIONS_MAX: usize = 65_536;

/// The legacy connections that sent graphs, and the graph each waits for: the core sees each
/// graph as a native `Submit` from that connection's identity, and every native message the
/// core addresses to such an identity comes back here ([`Sessions::reply`]) instead of going
/// to the peer, which would not understand it.
#[derive(Default)]
pub(super) struct Sessions {
    pending: HashMap<ConnectionId, Pending>,
    legacy: HashSet<ConnectionId>,
    order: VecDeque<ConnectionId>,
    next_request: u64,
}

/// A legacy graph under way: its native request, and what its reply needs (the request's
/// header for the `jobid`, its `keys` to echo, their shape).
struct Pending {
    request: RequestId,
    msg: LegacyMessage,
    kind: PendingKind,
}

/// What a legacy request waits for.
enum PendingKind {
    /// A graph's results, shaped like its `keys`.
    Graph { shape: KeySpec },
    /// A collection stored (`set-collection`).
    SetCollection { name: String },
    /// A collection's payload (`get-collection`).
    GetCollection { name: String },
}

/// What to do with a legacy `schedule`.
#[derive(Debug)]
pub(super) enum Schedule {
    /// Hand this native request to the core, from the legacy connection's identity.
    Submit(FromClient),
    /// Refused at once: send these frames back.
    Reply(Vec<Frame>),
}

/// The `schedule-ack` reply: `{'keys': <echo>, 'result': ...}` with status OK or Error.
fn schedule_ack(
    msg: &LegacyMessage,
    address: &str,
    now: DateTime,
    ok: bool,
    result: impl FnOnce(&mut Pickle) -> NodeId,
) -> Result<Vec<Frame>, LegacyError> {
    let header = ReplyHeader::new(address.as_bytes(), now)
        .jobid_of(msg)
        .function("schedule-ack")
        .status(if ok { "OK" } else { "Error" });
    let mut p = Pickle::new();
    let kk = p.add(Node::Str("keys".into()));
    let keys = match msg.payload_get("keys") {
        Some(id) => graft(&mut p, &msg.payload, id),
        None => p.add(Node::None),
    };
    let kr = p.add(Node::Str("result".into()));
    let result = result(&mut p);
    p.root = p.add(Node::Dict(vec![(kk, keys), (kr, result)]));
    reply_frames(header, &p)
}

/// A `schedule-ack` with status Error raising `module.class(message)`.
fn schedule_error(
    msg: &LegacyMessage,
    address: &str,
    now: DateTime,
    (module, class, message): (&str, &str, String),
) -> Result<Vec<Frame>, LegacyError> {
    reply_frames(
        ReplyHeader::new(address.as_bytes(), now)
            .jobid_of(msg)
            .function("schedule-ack")
            .status("Error"),
        &schedule_error_payload(msg, module, class, &message),
    )
}

/// The legacy reply to the core's answer about a collection: `{'status': 'OK'}` for a store,
/// the stored payload verbatim under a `loads` = dill header for a read, and otherwise a
/// payload that raises `KeyError(message)` in the client (its collection calls read no error
/// status; a missing name is answered at once, never left to hang).
fn collection_reply(
    request: &LegacyMessage,
    name: &str,
    msg: &ToClient,
    address: &str,
    now: DateTime,
) -> Option<Vec<Frame>> {
    let header = || ReplyHeader::new(address.as_bytes(), now).jobid_of(request);
    let reply = match msg {
        ToClient::Done { .. } => reply_frames(header().status("OK"), &empty_payload()),
        ToClient::LegacyCollection { payload, .. } => header()
            .status("OK")
            .loads_dill()
            .encode()
            .map(|h| vec![h, payload.clone()]),
        ToClient::Failed { error, .. } => {
            let message = match error {
                RequestError::NoSuchCollection { .. } => format!("no collection named {name:?}"),
                other => other.to_string(),
            };
            info!(
                "legacy (2015) '{}' of collection {name:?}: {message}",
                request.function
            );
            reply_frames(
                header().status("Error"),
                &raising_key_error_payload(&message),
            )
        }
        other => reply_frames(
            header().status("Error"),
            &raising_key_error_payload(&format!("unexpected answer: {other:?}")),
        ),
    };
    match reply {
        Ok(frames) => Some(frames),
        Err(e) => {
            warn!("could not answer legacy '{}': {e}", request.function);
            None
        }
    }
}

impl Sessions {
    /// Whether native messages to `identity` must come back here (it is a legacy peer).
    pub(super) fn is_legacy(&self, identity: &ConnectionId) -> bool {
        self.legacy.contains(identity)
    }

    fn remember(&mut self, identity: &ConnectionId) {
        if self.legacy.insert(identity.clone()) {
            self.order.push_back(identity.clone());
        }
        while self.order.len() > LEGACY_CONNECTIONS_MAX {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if self.pending.contains_key(&old) {
                self.order.push_back(old);
                break;
            }
            self.legacy.remove(&old);
        }
    }

    /// A legacy `schedule` (legacy-protocol.md §3.1): translated into a native `Submit` when
    /// every callable is one the Rust workers have, refused at once otherwise, and refused
    /// while the same connection still waits for another graph.
    pub(super) fn schedule(
        &mut self,
        req: LegacyRequest,
        address: &str,
        now: DateTime,
    ) -> Option<Schedule> {
        let who = &req.identity;
        let refuse = |error| match schedule_error(&req.msg, address, now, error) {
            Ok(frames) => Some(Schedule::Reply(frames)),
            Err(e) => {
                warn!("could not answer legacy 'schedule' from {who}: {e}");
                None
            }
        };
        if self.pending.contains_key(who) {
            warn!("legacy (2015) client {who} sent a graph while its previous one runs: refused");
            return refuse((
                "builtins",
                "RuntimeError",
                "this connection already waits for a graph; the 2015 client sends one at a time (use one Client per thread)"
                    .to_owned(),
            ));
        }
        let Translated {
            graph,
            outputs,
            shape,
            keep_results,
            restrictions,
        } = match legacy_graph::translate(&req.msg.payload) {
            Ok(t) => t,
            Err(refused) => {
                let error = refused.exception();
                warn!(
                    "legacy (2015) client {who} sent a graph Zask cannot run: {}: {}",
                    error.1, error.2
                );
                return refuse(error);
            }
        };
        self.next_request += 1;
        let request = RequestId(self.next_request);
        info!(
            "legacy (2015) client {who} sent a graph of {} keys ({} wanted): submitted as {request}",
            graph.len(),
            outputs.len()
        );
        self.remember(who);
        self.pending.insert(
            who.clone(),
            Pending {
                request,
                msg: req.msg,
                kind: PendingKind::Graph { shape },
            },
        );
        Some(Schedule::Submit(FromClient::Submit {
            request,
            graph,
            outputs,
            keep_results,
            restrictions,
        }))
    }

    /// A legacy `set-collection` or `get-collection` (legacy-protocol.md §5): the native
    /// request that stores the payload verbatim under its name, or reads it back. Only the
    /// name is read; the rest of the payload is never decoded further nor executed.
    pub(super) fn collection(
        &mut self,
        req: LegacyRequest,
        address: &str,
        now: DateTime,
    ) -> Option<Schedule> {
        let who = req.identity.clone();
        let f = req.msg.function.clone();
        let refuse = |message: &str| match reply_frames(
            ReplyHeader::new(address.as_bytes(), now).status("Error"),
            &raising_key_error_payload(message),
        ) {
            Ok(frames) => Some(Schedule::Reply(frames)),
            Err(e) => {
                warn!("could not answer legacy '{f}' from {who}: {e}");
                None
            }
        };
        if self.pending.contains_key(&who) {
            warn!("legacy (2015) client {who} sent {f} while its previous request runs: refused");
            return refuse(
                "this connection already waits for an answer; use one Client per thread",
            );
        }
        let Some(name) = req.msg.payload_str("name").map(str::to_owned) else {
            warn!("legacy (2015) client {who} sent {f} without a name: refused");
            return refuse("a collection request needs a 'name' (a str)");
        };
        self.next_request += 1;
        let request = RequestId(self.next_request);
        let (kind, native) = if f == "set-collection" {
            let Some(payload) = req.raw_payload else {
                return refuse("the collection's payload did not arrive");
            };
            info!(
                "legacy (2015) client {who} stores collection {name:?} ({} bytes, kept verbatim)",
                payload.len()
            );
            (
                PendingKind::SetCollection { name: name.clone() },
                FromClient::SetLegacyCollection {
                    request,
                    name,
                    payload,
                },
            )
        } else {
            debug!("legacy (2015) client {who} asks for collection {name:?}");
            (
                PendingKind::GetCollection { name: name.clone() },
                FromClient::GetLegacyCollection { request, name },
            )
        };
        self.remember(&who);
        self.pending.insert(
            who,
            Pending {
                request,
                msg: req.msg,
                kind,
            },
        );
        Some(Schedule::Submit(native))
    }

    /// A native message the core addressed to a legacy connection: the answer to its graph
    /// becomes the legacy `schedule-ack` (these frames); anything else is dropped (the peer
    /// would not understand it).
    pub(super) fn reply(
        &mut self,
        identity: &ConnectionId,
        msg: &ToClient,
        frames: Vec<Frame>,
        address: &str,
        now: DateTime,
    ) -> Option<Vec<Frame>> {
        let answered = msg.request();
        let Some(pending) = self
            .pending
            .get(identity)
            .filter(|p| answered == Some(p.request))
        else {
            debug!("dropping {msg:?} to legacy (2015) client {identity}: not its graph's answer");
            return None;
        };
        let shape = match &pending.kind {
            PendingKind::Graph { shape } => shape,
            PendingKind::SetCollection { name } | PendingKind::GetCollection { name } => {
                let reply = collection_reply(&pending.msg, name, msg, address, now);
                self.pending.remove(identity);
                return reply;
            }
        };
        let reply = match msg {
            ToClient::Values { positions, .. } => {
                let wanted = shape.flatten().len();
                // `positions` empty: one frame per key asked for, in order.
                let frame_of = |i: usize| {
                    if positions.is_empty() {
                        frames.get(i)
                    } else {
                        positions.get(i).and_then(|&pos| frames.get(pos as usize))
                    }
                };
                let values = (0..wanted)
                    .map(|i| {
                        frame_of(i)
                            .ok_or_else(|| format!("no value for result {i}"))
                            .and_then(|f| decode_value(f).map_err(|e| e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>();
                match values {
                    Ok(values) => schedule_ack(&pending.msg, address, now, true, |p| {
                        legacy_graph::add_shaped(p, shape, &mut values.into_iter())
                    }),
                    Err(e) => schedule_error(
                        &pending.msg,
                        address,
                        now,
                        (
                            "builtins",
                            "RuntimeError",
                            format!("unreadable result: {e}"),
                        ),
                    ),
                }
            }
            ToClient::Failed { error, .. } => schedule_error(
                &pending.msg,
                address,
                now,
                legacy_graph::exception_of(error),
            ),
            other => schedule_error(
                &pending.msg,
                address,
                now,
                (
                    "builtins",
                    "RuntimeError",
                    format!("unexpected answer to a graph: {other:?}"),
                ),
            ),
        };
        self.pending.remove(identity);
        match reply {
            Ok(frames) => Some(frames),
            Err(e) => {
                warn!("could not answer legacy 'schedule' from {identity}: {e}");
                None
            }
        }
    }

    /// Pings on behalf of the legacy connections that wait for a graph: the 2015 client does
    /// not ping, and the core drops a client silent for `client_timeout_ms` with its requests.
    pub(super) fn pings(&self) -> Vec<(ConnectionId, FromClient)> {
        self.pending
            .iter()
            .map(|(id, p)| {
                (
                    id.clone(),
                    FromClient::Ping {
                        pending: vec![p.request],
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;

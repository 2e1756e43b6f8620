//! The 2015 protocol on the scheduler's two ports (legacy-protocol.md §3.1, §6), first slice:
//! a legacy client connects, registers, asks `status` and the workers, and gets a prompt,
//! well-formed error for everything this build cannot do yet (graphs, collections). The
//! scheduler core knows nothing of this: the socket threads decode a legacy message
//! (`zask_compat::legacy`) and hand it to the core thread, which answers it here, with the
//! workers from the core's read-only status view, and sends the reply frames back through the
//! port's socket thread.

use log::{info, warn};
use zask_compat::legacy::{
    ok_payload, raising_key_error_payload, reply_frames, schedule_error_payload, workers_payload,
    Frame, LegacyMessage, LegacyWorker, ReplyHeader,
};
use zask_compat::pickle::helpers::DateTime;

use super::sockets::Port;
use crate::protocol::{ConnectionId, WorkerInfo};

/// A decoded legacy message on its way from a socket thread to the core thread.
#[derive(Debug)]
pub(crate) struct LegacyRequest {
    pub port: Port,
    pub identity: ConnectionId,
    pub msg: LegacyMessage,
}

/// What the error of a legacy graph says (the 2015 client raises it as `NotImplementedError`).
pub(crate) const GRAPHS_NOT_SUPPORTED: &str =
    "legacy graphs are not supported yet by Zask: this scheduler answers the 2015 client's \
     register, status and get_workers; use Zask's own client to run graphs";

/// What the error of a legacy collection operation says (raised as `KeyError` by the client,
/// the only exception its collection calls can surface).
pub(crate) const COLLECTIONS_NOT_SUPPORTED: &str =
    "legacy collections are not supported yet by Zask (set_collection/get_collection); use \
     Zask's own client";

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
/// bytes, pid, and `now` as last seen (the core lists only live workers).
pub(super) fn legacy_workers(workers: &[WorkerInfo], now: DateTime) -> Vec<LegacyWorker> {
    workers
        .iter()
        .map(|w| LegacyWorker {
            address: w.address.as_ref().as_bytes().to_vec(),
            pid: w.pid,
            last_seen: now,
        })
        .collect()
}

/// The reply frames (`[header, payload]`, the socket adds the identity) to one legacy request,
/// or None when the 2015 scheduler sent none. `address` is this port's advertised address;
/// `workers` is asked only by the requests that list them.
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
        (Port::Clients, "schedule") => {
            warn!("legacy (2015) client {who} sent a graph: answered NotImplementedError (not supported yet)");
            reply_frames(
                header()
                    .jobid_of(msg)
                    .function("schedule-ack")
                    .status("Error"),
                &schedule_error_payload(
                    msg,
                    "builtins",
                    "NotImplementedError",
                    GRAPHS_NOT_SUPPORTED,
                ),
            )
        }
        (Port::Clients, f @ ("set-collection" | "get-collection")) => {
            warn!(
                "legacy (2015) client {who} sent {f}: answered with an error (not supported yet)"
            );
            // set_collection asserts the status, get_collection calls what the payload names:
            // the payload itself raises, with the message, when the client unpickles it.
            reply_frames(
                header().status("Error"),
                &raising_key_error_payload(COLLECTIONS_NOT_SUPPORTED),
            )
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

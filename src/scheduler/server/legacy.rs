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

use super::Port;
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

#[cfg(test)]
mod tests {
    use super::*;
    use zask_compat::pickle::{decode, Node, Pickle};

    /// Frames the unmodified 2015 client sends (compat/tests/fixtures/legacy/make.py).
    fn request(port: Port, name: &str) -> LegacyRequest {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/compat/tests/fixtures/legacy/");
        let read = |part: &str| std::fs::read(format!("{dir}{name}.{part}.pkl")).unwrap();
        let frames = vec![read("header"), read("payload")];
        // What the socket threads see: the framing layer calls it legacy.
        assert_eq!(
            crate::protocol::codec::classify(&frames[0]),
            Err(crate::protocol::codec::DecodeError::Legacy)
        );
        decode_frames(port, &frames).expect("the 2015 client's frames decode")
    }

    fn decode_frames(port: Port, frames: &[Frame]) -> Option<LegacyRequest> {
        super::decode(port, ConnectionId::from("client-1"), frames)
    }

    const NOW: DateTime = DateTime {
        year: 2026,
        month: 11,
        day: 29,
        hour: 12,
        minute: 0,
        second: 1,
        microsecond: 2,
    };

    const ADDRESS: &str = "tcp://127.0.0.1:5555";

    fn workers() -> Vec<LegacyWorker> {
        vec![LegacyWorker {
            address: b"tcp://127.0.0.1:7000".to_vec(),
            pid: 77,
            last_seen: NOW,
        }]
    }

    /// Answers, and decodes the reply's two frames.
    fn reply(req: &LegacyRequest) -> Option<(Pickle, Pickle)> {
        let frames = answer(req, ADDRESS, NOW, workers)?;
        assert_eq!(frames.len(), 2, "a reply is [header, payload]");
        Some((decode(&frames[0]).unwrap(), decode(&frames[1]).unwrap()))
    }

    fn field<'a>(p: &'a Pickle, key: &str) -> &'a Node {
        p.get(
            p.dict_get(p.root, key)
                .unwrap_or_else(|| panic!("no {key}")),
        )
        .unwrap()
    }

    fn assert_common_header(h: &Pickle) {
        assert_eq!(
            field(h, "address"),
            &Node::Bytes(ADDRESS.as_bytes().to_vec())
        );
        assert_eq!(
            h.datetime_of(h.dict_get(h.root, "timestamp").unwrap()),
            Some(NOW)
        );
    }

    #[test]
    fn the_captured_status_request_is_answered_ok_echoing_its_jobid() {
        let req = request(Port::Clients, "status");
        // legacy-protocol.md §1: the captured status request's payload frame, byte for byte.
        assert_eq!(req.msg.payload, decode(b"\x80\x03}q\x00.").unwrap());
        assert_eq!(req.msg.function, "status");
        assert!(req.msg.has_loads);
        assert_eq!(req.msg.timestamp.map(|t| t.year), Some(2026));
        assert_eq!(
            req.msg.address.as_deref(),
            Some(&b"client-0d5e0b2a-cb2a-11f1-9a63-0242ac110002"[..])
        );
        let (h, p) = reply(&req).unwrap();
        assert_common_header(&h);
        // The client sent no jobid: None is echoed, as the 2015 scheduler did.
        assert_eq!(field(&h, "jobid"), &Node::None);
        assert_eq!(p.render(p.root), r#""OK""#);
        // The worker port answers status the same way.
        let req = request(Port::Workers, "status");
        let (h, p) = reply(&req).unwrap();
        assert_eq!(field(&h, "jobid"), &Node::None);
        assert_eq!(p.render(p.root), r#""OK""#);
    }

    #[test]
    fn register_and_get_workers_list_the_workers() {
        for name in ["register", "get_workers"] {
            let (h, p) = reply(&request(Port::Clients, name)).unwrap();
            assert_common_header(&h);
            let ws = p.dict_get(p.root, "workers").unwrap();
            let Some(Node::Dict(entries)) = p.get(ws) else {
                panic!("workers is a dict: {}", p.render(p.root))
            };
            assert_eq!(entries.len(), 1);
            let (addr, info) = entries[0];
            assert_eq!(
                p.get(addr),
                Some(&Node::Bytes(b"tcp://127.0.0.1:7000".to_vec()))
            );
            assert_eq!(
                p.get(p.dict_get(info, "pid").unwrap()),
                Some(&Node::Int(77))
            );
            assert_eq!(
                p.datetime_of(p.dict_get(info, "last-seen").unwrap()),
                Some(NOW)
            );
        }
        let (h, _) = reply(&request(Port::Clients, "get_workers")).unwrap();
        assert_eq!(field(&h, "status"), &Node::Str("OK".into()));
    }

    #[test]
    fn a_graph_gets_a_schedule_ack_with_a_not_implemented_error() {
        let req = request(Port::Clients, "schedule");
        let (h, p) = reply(&req).unwrap();
        assert_common_header(&h);
        assert_eq!(field(&h, "function"), &Node::Str("schedule-ack".into()));
        assert_eq!(field(&h, "status"), &Node::Str("Error".into()));
        assert_eq!(field(&h, "jobid"), &Node::Str("schedule-0".into()));
        assert_eq!(
            p.render(p.root),
            format!(
                r#"{{"keys": "y", "result": Reduce(Global(builtins NotImplementedError), ("{GRAPHS_NOT_SUPPORTED}",))}}"#
            )
        );
    }

    #[test]
    fn collections_get_a_payload_that_raises_key_error() {
        let (h, p) = reply(&request(Port::Clients, "get_collection")).unwrap();
        assert_eq!(field(&h, "status"), &Node::Str("Error".into()));
        assert_eq!(
            p.render(p.root),
            format!(r#"Reduce(Global(operator getitem), ({{}}, "{COLLECTIONS_NOT_SUPPORTED}"))"#)
        );
    }

    #[test]
    fn close_and_legacy_heartbeats_get_no_reply() {
        assert!(reply(&request(Port::Clients, "close")).is_none());
        // A legacy worker's registration: the worker port ignores it in this slice.
        let mut hb = request(Port::Workers, "register");
        hb.msg.function = "heartbeat".into();
        assert!(reply(&hb).is_none());
        // Client operations on the worker port are not answered.
        assert!(reply(&request(Port::Workers, "register")).is_none());
    }

    #[test]
    fn garbage_that_looks_legacy_is_dropped() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/compat/tests/fixtures/legacy/");
        let header = std::fs::read(format!("{dir}status.header.pkl")).unwrap();
        for frames in [
            vec![header.clone()],
            vec![
                header[..header.len() - 3].to_vec(),
                b"\x80\x03}q\x00.".to_vec(),
            ],
            vec![header.clone(), b"\x80\x03garbage".to_vec()],
            vec![b"\x80\x03K\x01.".to_vec(), b"\x80\x03}q\x00.".to_vec()],
        ] {
            assert!(decode_frames(Port::Clients, &frames).is_none());
        }
    }
}

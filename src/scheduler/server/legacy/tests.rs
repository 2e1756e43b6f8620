//! Tests of the legacy (2015) handler: replies to frames the real 2015 client sent, and the
//! sessions that carry a legacy graph or collection request through the core.

use super::*;
use crate::graph::{Expr, Key};
use crate::protocol::{RequestError, TaskError, TaskErrorKind};
use crate::value::Value;
use zask_compat::pickle::decode;

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
fn the_seed_graph_is_submitted_natively_and_its_values_become_a_schedule_ack() {
    let req = request(Port::Clients, "schedule");
    let who = req.identity.clone();
    let mut sessions = Sessions::default();
    let Some(Schedule::Submit(FromClient::Submit {
        request,
        graph,
        outputs,
        keep_results,
        restrictions,
    })) = sessions.schedule(req, ADDRESS, NOW)
    else {
        panic!("the seed graph is submitted")
    };
    assert_eq!(
        graph,
        vec![
            (Key::from("x"), Expr::Lit(Value::Int(1))),
            (
                Key::from("y"),
                Expr::Call(
                    "add".into(),
                    vec![Expr::Ref(Key::from("x")), Expr::Lit(Value::Int(2))]
                )
            ),
        ]
    );
    assert_eq!(outputs, vec![Key::from("y")]);
    assert!(!keep_results && restrictions.is_empty());
    assert!(sessions.is_legacy(&who));
    // The core keeps the connection alive by pings sent on its behalf.
    assert_eq!(
        sessions.pings(),
        vec![(
            who.clone(),
            FromClient::Ping {
                pending: vec![request]
            }
        )]
    );
    // Another graph on the same connection while this one runs is refused clearly.
    let Some(Schedule::Reply(frames)) =
        sessions.schedule(self::request(Port::Clients, "schedule"), ADDRESS, NOW)
    else {
        panic!("a second graph is refused")
    };
    let p = decode(&frames[1]).unwrap();
    assert!(
        p.render(p.root).contains("RuntimeError"),
        "{}",
        p.render(p.root)
    );
    // Anything but the answer is dropped, never sent raw.
    assert!(sessions
        .reply(&who, &ToClient::Pong, vec![], ADDRESS, NOW)
        .is_none());
    let values = ToClient::Values {
        request,
        positions: vec![],
    };
    let frames = vec![crate::protocol::codec::encode_value(&Value::Int(3))];
    let frames = sessions.reply(&who, &values, frames, ADDRESS, NOW).unwrap();
    let (h, p) = (decode(&frames[0]).unwrap(), decode(&frames[1]).unwrap());
    assert_common_header(&h);
    assert_eq!(field(&h, "function"), &Node::Str("schedule-ack".into()));
    assert_eq!(field(&h, "status"), &Node::Str("OK".into()));
    assert_eq!(field(&h, "jobid"), &Node::Str("schedule-0".into()));
    assert_eq!(p.render(p.root), r#"{"keys": "y", "result": 3}"#);
    assert!(sessions.pings().is_empty());
}

#[test]
fn a_failed_graph_raises_the_python_class_of_its_error() {
    let mut sessions = Sessions::default();
    let req = request(Port::Clients, "schedule");
    let who = req.identity.clone();
    let Some(Schedule::Submit(FromClient::Submit { request, .. })) =
        sessions.schedule(req, ADDRESS, NOW)
    else {
        panic!("submitted")
    };
    let failed = ToClient::Failed {
        request,
        error: RequestError::Task {
            key: Key::from("y"),
            error: TaskError {
                kind: TaskErrorKind::Failed,
                message: "ZeroDivisionError: division by zero".into(),
            },
        },
    };
    let frames = sessions.reply(&who, &failed, vec![], ADDRESS, NOW).unwrap();
    let (h, p) = (decode(&frames[0]).unwrap(), decode(&frames[1]).unwrap());
    assert_eq!(field(&h, "status"), &Node::Str("Error".into()));
    assert_eq!(
        p.render(p.root),
        r#"{"keys": "y", "result": Reduce(Global(builtins ZeroDivisionError), ("division by zero",))}"#
    );
}

#[test]
fn set_collection_stores_the_payload_frame_verbatim_and_answers_ok() {
    let mut sessions = Sessions::default();
    let req = request(Port::Clients, "set_collection");
    let who = req.identity.clone();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/compat/tests/fixtures/legacy/");
    let sent = std::fs::read(format!("{dir}set_collection.payload.pkl")).unwrap();
    let Some(Schedule::Submit(FromClient::SetLegacyCollection {
        request: id,
        name,
        payload,
    })) = sessions.collection(req, ADDRESS, NOW)
    else {
        panic!("a set-collection becomes a native SetLegacyCollection");
    };
    assert_eq!((name.as_str(), &payload), ("mybag", &sent));
    let frames = sessions
        .reply(&who, &ToClient::Done { request: id }, vec![], ADDRESS, NOW)
        .unwrap();
    let (h, p) = (decode(&frames[0]).unwrap(), decode(&frames[1]).unwrap());
    assert_eq!(field(&h, "status"), &Node::Str("OK".into()));
    assert_eq!(p.render(p.root), "{}");
}

#[test]
fn get_collection_reads_the_stored_payload_verbatim_or_raises_key_error() {
    let mut sessions = Sessions::default();
    let req = request(Port::Clients, "get_collection");
    let who = req.identity.clone();
    let Some(Schedule::Submit(FromClient::GetLegacyCollection { request: id, name })) =
        sessions.collection(req, ADDRESS, NOW)
    else {
        panic!("a get-collection becomes a native GetLegacyCollection");
    };
    assert_eq!(name, "mybag");
    assert!(sessions.is_legacy(&who));
    // The stored payload goes back byte for byte, under a loads = dill header.
    let payload = b"\x80\x03}q\x00.".to_vec();
    let found = ToClient::LegacyCollection {
        request: id,
        payload: payload.clone(),
    };
    let frames = sessions.reply(&who, &found, vec![], ADDRESS, NOW).unwrap();
    assert_eq!(frames[1], payload);
    let h = decode(&frames[0]).unwrap();
    assert_eq!(field(&h, "status"), &Node::Str("OK".into()));
    assert_eq!(
        h.render(h.dict_get(h.root, "loads").unwrap()),
        "Global(dill loads)"
    );

    // A missing name: answered at once with a payload raising KeyError.
    let again = request(Port::Clients, "get_collection");
    let Some(Schedule::Submit(FromClient::GetLegacyCollection { request: asked, .. })) =
        sessions.collection(again, ADDRESS, NOW)
    else {
        panic!("a get-collection becomes a native GetLegacyCollection");
    };
    let missing = ToClient::Failed {
        request: asked,
        error: RequestError::NoSuchCollection {
            name: "mybag".into(),
        },
    };
    let frames = sessions
        .reply(&who, &missing, vec![], ADDRESS, NOW)
        .unwrap();
    let (h, p) = (decode(&frames[0]).unwrap(), decode(&frames[1]).unwrap());
    assert_eq!(field(&h, "status"), &Node::Str("Error".into()));
    assert_eq!(
        p.render(p.root),
        r#"Reduce(Global(operator getitem), ({}, "no collection named \"mybag\""))"#
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

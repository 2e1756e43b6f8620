//! What must hold for every input of every decoder, one check per fuzz target. Shared by the
//! libFuzzer targets (`fuzz/fuzz_targets/`, through this crate) and by the seeded property
//! tests of `cargo test` (`tests/decoders_fuzz.rs` includes this very file), so both layers
//! assert the same things:
//!
//! - no input panics: anything a peer or a user can send decodes to a value or a typed error
//!   (whose message renders);
//! - what decodes re-encodes to something that decodes to the same value, and encoding that
//!   again gives the same bytes (values are compared by their `Debug` text, so a NaN float
//!   equals itself);
//! - frame counts: a native message is accepted only with as many value frames as it announces,
//!   counted the way the receiving socket counts them.
//!
//! Multipart inputs (ZeroMQ messages) are spelled as bytes by `frames`/`join_frames`.

use std::collections::HashMap;
use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;

use zask::client::state::{Awaited, ClientState};
use zask::graph::json::{graph_to_json, key_from_json, key_to_json, parse_graph, parse_key_arg};
use zask::graph::{cull, Expr, Key};
use zask::protocol::codec::{
    decode, decode_plain, decode_value, decode_value_owned, encode, encode_plain, encode_value,
    split, split_peer_reply, validate_value, Frame,
};
use zask::protocol::{
    FromClient, FromWorker, PeerReply, PeerRequest, RequestId, ToClient, ToWorker, PROTOCOL_VERSION,
};
use zask_compat::legacy::{LegacyError, LegacyMessage};
use zask_compat::pickle::{
    decode_with, encode_with, to_value_with, Limit, Limits, Opaque, PickleError,
};

/// A target's check: panics on a broken property, else says whether the input decoded.
pub type Check = fn(&[u8]) -> bool;

/// The targets, by name: each has `fuzz/fuzz_targets/<name>.rs` and seeds in
/// `fuzz/corpus/<name>/`. Each check returns whether the input decoded (for the property
/// tests' count of how much of the round-trip side they reached).
pub const TARGETS: &[(&str, Check)] = &[
    ("from_worker", from_worker),
    ("from_client", from_client),
    ("to_worker", to_worker),
    ("peer_request", peer_request),
    ("peer_reply", peer_reply),
    ("to_client", to_client),
    ("value", value),
    ("json_graph", json_graph),
    ("pickle", pickle),
    ("legacy_message", legacy_message),
];

/// The frames of a multipart message spelled as bytes: each frame is a 2-byte little-endian
/// length then that many bytes; a length running past the end takes what is left, and a last
/// lone byte is a frame of its own. Every byte string is some list of frames.
pub fn frames(mut data: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 2 {
            out.push(data.to_vec());
            break;
        }
        let len = usize::from(u16::from_le_bytes([data[0], data[1]]));
        let body = &data[2..];
        let take = len.min(body.len());
        out.push(body[..take].to_vec());
        data = &body[take..];
    }
    out
}

/// The bytes `frames` reads back as these frames (each under 64 KiB).
pub fn join_frames(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        let len = u16::try_from(f.len()).expect("a seed frame is under 64 KiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn same<T: Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// A decoded native message re-encodes to a header that decodes to the same message, and
/// encoding is a fixed point from there.
fn message_round_trips<M: Serialize + DeserializeOwned + Debug>(msg: &M) {
    let bytes = encode(msg);
    let again: M = decode(&bytes)
        .unwrap_or_else(|e| panic!("a re-encoded message does not decode: {e}: {msg:?}"));
    assert!(same(msg, &again), "{msg:?} came back as {again:?}");
    assert_eq!(encode(&again), bytes, "encoding {msg:?} is not stable");
}

/// A value frame: decoded the three ways the receivers decode it, consistently; what decodes
/// round-trips.
fn value_frame(frame: &[u8]) -> bool {
    let decoded = decode_value(frame);
    assert_eq!(
        validate_value(frame).is_ok(),
        decoded.is_ok(),
        "validate_value and decode_value disagree on {frame:02x?}"
    );
    let owned = decode_value_owned(frame.to_vec());
    assert!(
        same(&owned, &decoded),
        "decode_value_owned gave {owned:?}, decode_value {decoded:?}"
    );
    match decoded {
        Ok(v) => {
            let f = encode_value(&v);
            let again = decode_value(&f)
                .unwrap_or_else(|e| panic!("a re-encoded value does not decode: {e}: {v:?}"));
            assert!(same(&v, &again), "{v:?} came back as {again:?}");
            assert_eq!(encode_value(&again), f, "encoding {v:?} is not stable");
            true
        }
        Err(e) => {
            let _ = e.to_string();
            false
        }
    }
}

/// A task spec as the worker decodes it from `ComputeTask::spec`.
fn spec(bytes: &[u8]) {
    match decode_plain::<Expr>(bytes) {
        Ok(expr) => {
            let b = encode_plain(&expr);
            let again: Expr = decode_plain(&b)
                .unwrap_or_else(|e| panic!("a re-encoded spec does not decode: {e}: {expr:?}"));
            assert!(same(&expr, &again), "{expr:?} came back as {again:?}");
            assert_eq!(encode_plain(&again), b, "encoding {expr:?} is not stable");
            let _ = expr.dependencies();
        }
        Err(e) => drop(e.to_string()),
    }
}

/// `codec::split` as a receiving socket calls it, then the properties above. Returns the
/// message when the frames make one.
fn native<M: Serialize + DeserializeOwned + Debug>(
    data: &[u8],
    counted: impl Fn(&M) -> usize,
) -> Option<M> {
    match split::<M>(frames(data), &counted) {
        Ok((msg, values)) => {
            assert_eq!(
                values.len(),
                counted(&msg),
                "split let a wrong frame count in"
            );
            message_round_trips(&msg);
            for v in &values {
                value_frame(v);
            }
            Some(msg)
        }
        Err(e) => {
            let _ = e.to_string();
            None
        }
    }
}

/// The scheduler's worker port (`scheduler/server/sockets.rs`: `decode_worker`).
pub fn from_worker(data: &[u8]) -> bool {
    native(data, |m: &FromWorker| match m {
        FromWorker::Finished(done) => done.iter().filter(|f| f.has_value).count(),
        FromWorker::Data { found, .. } => found.len(),
        _ => 0,
    })
    .is_some()
}

/// The scheduler's client port (`scheduler/server/sockets.rs`: `decode_client`).
pub fn from_client(data: &[u8]) -> bool {
    let msg = native(data, |m: &FromClient| match m {
        FromClient::Scatter { keys, .. } => keys.len(),
        _ => 0,
    });
    if let Some(FromClient::Submit { graph, .. } | FromClient::Persist { graph, .. }) = &msg {
        // What the scheduler does first with a graph: order it, or name a missing key / cycle.
        let table: HashMap<&Key, &Expr> = graph.iter().map(|(k, e)| (k, e)).collect();
        let outputs: Vec<Key> = graph.iter().map(|(k, _)| k.clone()).collect();
        if let Err(e) = cull(&table, &outputs, &|_| false) {
            let _ = e.to_string();
        }
    }
    msg.is_some()
}

/// A worker's messages from the scheduler (`worker/server.rs`: `on_scheduler_message`), and
/// the task specs inside `Compute`, which the worker decodes before running them.
pub fn to_worker(data: &[u8]) -> bool {
    let counted = |m: &ToWorker| match m {
        ToWorker::PutData { keys, .. } => keys.len(),
        _ => 0,
    };
    let msg = native(data, counted);
    if let Some(ToWorker::Compute(tasks)) = &msg {
        for t in tasks {
            spec(&t.spec);
        }
    }
    msg.is_some()
}

/// A worker's peer port (`worker/server.rs`: `on_peer_request`): requests carry no frames.
pub fn peer_request(data: &[u8]) -> bool {
    native(data, |_: &PeerRequest| 0).is_some()
}

/// A peer's answer to a fetch (`worker/server.rs`: `on_peer_reply`): its values joined from
/// their chunks, never more of them than it names, none over the limit given.
pub fn peer_reply(data: &[u8]) -> bool {
    const VALUE_BYTES_MAX: u64 = 1 << 16;
    match split_peer_reply(frames(data), VALUE_BYTES_MAX) {
        Ok((msg, values)) => {
            let found = match &msg {
                PeerReply::Data { found, .. } => found.len(),
                PeerReply::Error { .. } => 0,
            };
            assert_eq!(values.len(), found, "split_peer_reply let a wrong count in");
            message_round_trips(&msg);
            for v in &values {
                assert!(v.len() as u64 <= VALUE_BYTES_MAX, "a value over the limit");
                value_frame(v);
            }
            true
        }
        Err(e) => {
            let _ = e.to_string();
            false
        }
    }
}

/// A client's messages from the scheduler: the header, every value frame, and the client's
/// state machine receiving the whole message (`client/state.rs`: `receive`) with a hello and
/// a few requests waiting.
pub fn to_client(data: &[u8]) -> bool {
    let all = frames(data);
    let mut decoded = false;
    if let Some(header) = all.first() {
        match decode::<ToClient>(header) {
            Ok(msg) => {
                decoded = true;
                message_round_trips(&msg);
                let _ = msg.request();
                if let ToClient::Failed { error, .. } | ToClient::Rejected { error } = &msg {
                    let _ = error.to_string();
                }
                for v in &all[1..] {
                    value_frame(v);
                }
            }
            Err(e) => drop(e.to_string()),
        }
    }
    let mut state: ClientState<u32> = ClientState::new("tcp://127.0.0.1:1", 1_000, 10_000, 0);
    let hello = FromClient::Hello {
        protocol_version: PROTOCOL_VERSION,
    };
    state.request(0, Awaited::Hello, hello, vec![], 0, None);
    for r in 0..4 {
        let msg = FromClient::Status {
            request: RequestId(r),
        };
        state.request(0, Awaited::Reply(RequestId(r)), msg, vec![], 1, Some(1_000));
    }
    if let Err(e) = state.receive(1, all) {
        let _ = e.to_string();
    }
    state.tick(2);
    decoded
}

/// A value frame on its own: what workers store and clients read (`codec::decode_value`).
pub fn value(data: &[u8]) -> bool {
    value_frame(data)
}

/// The JSON graph format (`graph/json/read.rs`: `parse_graph`), and a `KEY` argument
/// (`parse_key_arg`). A graph read from JSON written back reads as the same graph; resolving
/// and ordering it (what `zask get` does next) names errors, never panics.
pub fn json_graph(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let key = parse_key_arg(&text);
    let json = key_to_json(&key);
    let again = key_from_json(&json)
        .unwrap_or_else(|e| panic!("key {key:?} written as {json} does not read back: {e}"));
    assert_eq!(
        again, key,
        "key {key:?} written as {json} read back as {again:?}"
    );
    let graph = match parse_graph(&text) {
        Ok(g) => g,
        Err(e) => {
            let _ = e.to_string();
            return false;
        }
    };
    let written = graph_to_json(&graph).to_string();
    let again = parse_graph(&written)
        .unwrap_or_else(|e| panic!("graph {graph:?} written as {written} does not read: {e}"));
    // JSON has no NaN, so plain equality holds (a graph's `Debug` shows its hash index).
    assert!(
        graph == again,
        "graph {graph:?} written as {written} read back as {again:?}"
    );
    let resolved = graph.resolve(&|_| false);
    for (_, expr) in &resolved {
        spec(&encode_plain(expr));
    }
    let table: HashMap<&Key, &Expr> = resolved.iter().map(|(k, e)| (k, e)).collect();
    let outputs: Vec<Key> = resolved.iter().map(|(k, _)| k.clone()).collect();
    if let Err(e) = cull(&table, &outputs, &|_| false) {
        let _ = e.to_string();
    }
    true
}

/// The limits the pickle checks decode under: small enough that the fuzzer hits them.
fn pickle_limits() -> Limits {
    Limits {
        max_input_bytes: 1 << 20,
        max_nodes: 50_000,
        max_depth: 100,
        max_memo: 10_000,
        max_alloc: 1 << 16,
        max_int_digits: 300,
    }
}

/// The legacy pickle decoder (`zask_compat::pickle::decode_with`): a value or a typed error
/// that no retry can help; whatever decodes converts and renders, and re-encodes to a pickle
/// that decodes to the same graph (the property `compat/tests/pickle_fuzz.rs` checks too).
pub fn pickle(data: &[u8]) -> bool {
    let limits = pickle_limits();
    let (p, used) = match decode_with(data, &limits) {
        Ok(r) => r,
        Err(e) => {
            let _ = e.to_string();
            assert!(!e.retry_may_help(), "{e} says a retry may help");
            return false;
        }
    };
    assert!(used <= data.len());
    assert!(p.nodes.len() <= limits.max_nodes);
    assert!(p.get(p.root).is_some(), "the root is not a node");
    let _ = to_value_with(&p, p.root, Opaque::AsNone, &limits);
    let _ = p.render(p.root);
    match encode_with(&p, p.root, &limits) {
        Ok(bytes) => {
            let deep = Limits {
                max_depth: 10_000,
                ..limits
            };
            let (q, _) = decode_with(&bytes, &deep)
                .unwrap_or_else(|e| panic!("a re-encoded pickle does not decode: {e}"));
            assert!(
                p.isomorphic(p.root, &q, q.root),
                "re-encoding changed the graph: {} vs {}",
                p.render(p.root),
                q.render(q.root)
            );
        }
        Err(PickleError::TooDeep { .. }) | Err(PickleError::UnencodableCycle { .. }) => {}
        Err(e) => panic!("unexpected encode error {e}"),
    }
    true
}

/// The legacy message layer (`zask_compat::legacy::LegacyMessage::decode`): the frames
/// `[header, payload]` give a message or a typed error; a decoded message's header and payload
/// re-encode to frames that decode to the same message.
pub fn legacy_message(data: &[u8]) -> bool {
    let m = match LegacyMessage::decode(&frames(data)) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.to_string();
            assert!(!e.retry_may_help(), "{e} says a retry may help");
            return false;
        }
    };
    let _ = (
        m.payload_str("keys"),
        m.payload_int("n"),
        m.payload_get("dask"),
    );
    let encode = |p: &zask_compat::pickle::Pickle| zask_compat::pickle::encode(p, p.root);
    let (Ok(header), Ok(payload)) = (encode(&m.header), encode(&m.payload)) else {
        // A tree too deep for the encoder, or a cycle no pickle can write: typed errors.
        return true;
    };
    match LegacyMessage::decode(&[header, payload]) {
        Ok(again) => {
            assert_eq!(again.function, m.function);
            assert_eq!(again.address, m.address);
            assert_eq!(again.timestamp, m.timestamp);
            assert_eq!(again.status, m.status);
            assert_eq!(again.jobid.is_some(), m.jobid.is_some());
            assert_eq!(
                (again.has_loads, again.has_dumps),
                (m.has_loads, m.has_dumps)
            );
            assert!(m
                .header
                .isomorphic(m.header.root, &again.header, again.header.root));
            assert!(m
                .payload
                .isomorphic(m.payload.root, &again.payload, again.payload.root));
        }
        // The encoder may nest deeper than the input did (the limit is on the decoder's
        // stack); any other error is a bug.
        Err(
            LegacyError::Header(PickleError::LimitExceeded {
                limit: Limit::Depth,
                ..
            })
            | LegacyError::Payload(PickleError::LimitExceeded {
                limit: Limit::Depth,
                ..
            }),
        ) => {}
        Err(e) => panic!("a re-encoded legacy message does not decode: {e}"),
    }
    true
}

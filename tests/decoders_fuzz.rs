//! Seeded property tests of every decoder, the `cargo test` layer of fuzzing (the libFuzzer
//! layer is `fuzz/`, run by `fuzz/run.sh`): random and mutated inputs, the mutations made from
//! the committed seeds in `fuzz/corpus/<target>/`, each checked by the very checks the fuzz
//! targets run (`fuzz/src/checks.rs`, included here). Fixed seed and count; `ZASK_FUZZ_SEED`
//! and `ZASK_FUZZ_ITERS` (inputs per target and kind) override them for a longer local run.
//!
//! This file also makes the seeds: every `seed-*` file of the corpus is a real message encoded
//! here (`seeds()`). `committed_seeds_are_the_generated_ones` fails when they drift apart (a
//! message changed shape, the protocol version moved); then write them again with
//! `ZASK_FUZZ_WRITE_SEEDS=1 cargo test --test decoders_fuzz committed_seeds`. Other files
//! there (`regression-*`: inputs that once crashed a decoder) are kept as they are.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use checks::{join_frames, TARGETS};
use zask::graph::json::graph_to_json;
use zask::protocol::codec::{encode, encode_plain, encode_value, Frame, SCATTERED};
use zask::protocol::{
    ClusterStatus, ComputeTask, ErredTask, FinishedTask, FromClient, FromWorker, HeldKey,
    MemoryReport, PeerReply, PeerRequest, RejectReason, RequestError, RequestId, TaskError,
    TaskErrorKind, TaskPrefixInfo, ToClient, ToWorker, WorkerInfo, WorkerMemory,
    WorkerRegistration, MAGIC, PROTOCOL_VERSION,
};
use zask::{
    graph, Collection, CollectionKind, Expr, Graph, GraphError, Key, Node, Value, WorkerAddress,
    WorkerName, WorkerSelector,
};

/// A target's seeds: `(file name, bytes)`.
type Seeds = Vec<(String, Vec<u8>)>;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

// ---- the seeds: real messages, encoded ----

fn keys() -> Vec<Key> {
    vec![
        Key::from("x"),
        Key::Int(-3),
        Key::from(("inc-3f2a", 0)),
        Key::Tuple(vec![
            Key::from("bag"),
            Key::Tuple(vec![Key::Int(1), Key::from("b")]),
        ]),
    ]
}

fn values() -> Vec<Value> {
    vec![
        Value::Null,
        Value::Bool(true),
        Value::Int(i64::MIN),
        Value::Int(42),
        Value::Float(-0.5),
        Value::Float(f64::NAN),
        Value::Str("hello, wörld".into()),
        Value::Bytes(vec![0, 1, 2, 0xff]),
        Value::from(vec![1, 2, 3]),
        Value::List(vec![
            Value::Str("a".into()),
            Value::Bytes(vec![9; 3]),
            Value::List(vec![Value::Null]),
        ]),
        Value::Map(vec![
            (Value::Str("count".into()), Value::Int(2)),
            (Value::Int(7), Value::List(vec![])),
        ]),
    ]
}

fn addr(n: u32) -> WorkerAddress {
    WorkerAddress::new(format!("tcp://127.0.0.1:{}", 7000 + n))
}

fn graph_exprs() -> Vec<(Key, Expr)> {
    let dsk = graph! {
        "x" => 1,
        "y" => ("add", "x", 2),
        "z" => ("sum", vec![Node::from("x"), Node::from("y"), Node::from(3)]),
    };
    let mut out = dsk.resolve(&|_| false);
    out.push((
        Key::from(("part", 1)),
        Expr::Call(
            "map".into(),
            vec![
                Expr::Lit(Value::Str("inc".into())),
                Expr::List(vec![
                    Expr::Ref(Key::from("x")),
                    Expr::Lit(Value::Float(1.5)),
                ]),
            ],
        ),
    ));
    out
}

fn collection() -> Collection {
    let dsk = graph! { "a" => 1, "b" => ("inc", "a") };
    Collection::from_graph(&dsk, vec![Key::from("b")])
}

fn header_and_values<M: serde::Serialize>(msg: &M, vals: &[Value]) -> Vec<u8> {
    let mut frames: Vec<Frame> = vec![encode(msg)];
    frames.extend(vals.iter().map(encode_value));
    join_frames(&frames)
}

fn task_error(kind: TaskErrorKind) -> TaskError {
    TaskError {
        kind,
        message: format!("{kind:?}: division by zero"),
    }
}

fn from_worker_seeds() -> Seeds {
    let registration = |keys: Vec<HeldKey>, nanny_token, runs_python| {
        FromWorker::Register(WorkerRegistration {
            protocol_version: PROTOCOL_VERSION,
            address: addr(1),
            name: WorkerName::new("worker-1"),
            nthreads: 4,
            memory_limit_bytes: 1 << 30,
            pid: 4242,
            store: "memory".into(),
            keys,
            nanny_token,
            runs_python,
        })
    };
    let held = vec![
        HeldKey {
            key: Key::from("x"),
            origin: SCATTERED,
            nbytes: 8,
        },
        HeldKey {
            key: Key::from(("y", 2)),
            origin: 0x1234_5678_9abc,
            nbytes: 1 << 20,
        },
    ];
    let finished = |key: Key, has_value| FinishedTask {
        key,
        nbytes: 16,
        fetched: vec![(Key::from("x"), 8)],
        has_value,
    };
    let mut seeds = vec![
        (
            "register".into(),
            header_and_values(&registration(vec![], None, false), &[]),
        ),
        (
            "register-held".into(),
            header_and_values(&registration(held, Some(77), true), &[]),
        ),
        (
            "heartbeat".into(),
            header_and_values(&FromWorker::Heartbeat, &[]),
        ),
        (
            "sending".into(),
            header_and_values(&FromWorker::Sending { bytes: 250_000_000 }, &[]),
        ),
        (
            "goodbye".into(),
            header_and_values(&FromWorker::Goodbye, &[]),
        ),
        ("retire".into(), header_and_values(&FromWorker::Retire, &[])),
        (
            "memory".into(),
            header_and_values(
                &FromWorker::Memory(MemoryReport {
                    paused: true,
                    memory_bytes: 1 << 28,
                    spilled_bytes: 1 << 30,
                    spilled: keys(),
                    unspilled: vec![Key::from("x")],
                }),
                &[],
            ),
        ),
        (
            "finished-no-value".into(),
            header_and_values(
                &FromWorker::Finished(vec![finished(Key::from("y"), false)]),
                &[],
            ),
        ),
        (
            "not-held".into(),
            header_and_values(&FromWorker::NotHeld { keys: keys() }, &[]),
        ),
        (
            "stored".into(),
            header_and_values(&FromWorker::Stored { request: 3 }, &[]),
        ),
        (
            "missing-dependency".into(),
            header_and_values(
                &FromWorker::MissingDependency {
                    key: Key::from("z"),
                    dependency: Key::from("y"),
                    holders: vec![addr(2)],
                    unresponsive: vec![addr(3)],
                },
                &[],
            ),
        ),
        (
            "nanny-of".into(),
            header_and_values(
                &FromWorker::NannyOf {
                    worker_address: addr(1),
                    token: u64::MAX,
                },
                &[],
            ),
        ),
        (
            "worker-died".into(),
            header_and_values(
                &FromWorker::WorkerDied {
                    worker_address: addr(1),
                    token: 77,
                    expected: false,
                    reason: "killed by signal 9".into(),
                },
                &[],
            ),
        ),
        (
            "data".into(),
            header_and_values(
                &FromWorker::Data {
                    request: 9,
                    found: vec![Key::from("x"), Key::from(("y", 2))],
                    missing: vec![Key::Int(5)],
                },
                &[Value::Int(1), Value::Bytes(b"raw".to_vec())],
            ),
        ),
    ];
    for (i, v) in values().into_iter().enumerate() {
        let msg = FromWorker::Finished(vec![
            finished(keys()[i % 4].clone(), true),
            finished(Key::from("quiet"), false),
        ]);
        seeds.push((format!("finished-value-{i}"), header_and_values(&msg, &[v])));
    }
    for kind in [
        TaskErrorKind::Failed,
        TaskErrorKind::Panicked,
        TaskErrorKind::UnknownFunction,
        TaskErrorKind::BadArguments,
        TaskErrorKind::BadInput,
        TaskErrorKind::KilledWorker,
        TaskErrorKind::NoWorker,
    ] {
        let msg = FromWorker::Erred(vec![ErredTask {
            key: Key::from(("div", 0)),
            error: task_error(kind),
        }]);
        seeds.push((format!("erred-{kind:?}"), header_and_values(&msg, &[])));
    }
    seeds
}

fn from_client_seeds() -> Seeds {
    let r = RequestId(1);
    let name = || "my-bag".to_string();
    let mut bag = collection();
    bag.kind = CollectionKind::Bag;
    bag.keys = vec![Key::from(("b", 0)), Key::from(("b", 1))];
    bag.npartitions = 2;
    let cycle: Vec<(Key, Expr)> = vec![
        (
            Key::from("a"),
            Expr::Call("inc".into(), vec![Expr::Ref(Key::from("b"))]),
        ),
        (
            Key::from("b"),
            Expr::Call("inc".into(), vec![Expr::Ref(Key::from("a"))]),
        ),
    ];
    let msgs: Vec<(&str, FromClient)> = vec![
        (
            "hello",
            FromClient::Hello {
                protocol_version: PROTOCOL_VERSION,
            },
        ),
        (
            "ping",
            FromClient::Ping {
                pending: vec![RequestId(1), RequestId(u64::MAX)],
            },
        ),
        (
            "submit",
            FromClient::Submit {
                request: r,
                graph: graph_exprs(),
                outputs: vec![Key::from("z"), Key::from(("part", 1))],
                keep_results: false,
                restrictions: vec![],
            },
        ),
        (
            "submit-restricted",
            FromClient::Submit {
                request: r,
                graph: graph_exprs(),
                outputs: vec![Key::from("y")],
                keep_results: true,
                restrictions: vec![
                    (Key::from("y"), vec![WorkerSelector::Address(addr(1))]),
                    (
                        Key::from("z"),
                        vec![
                            WorkerSelector::Name(WorkerName::new("gpu")),
                            WorkerSelector::Python,
                        ],
                    ),
                ],
            },
        ),
        (
            "submit-cycle",
            FromClient::Submit {
                request: r,
                graph: cycle,
                outputs: vec![Key::from("a")],
                keep_results: false,
                restrictions: vec![],
            },
        ),
        (
            "gather",
            FromClient::Gather {
                request: r,
                keys: keys(),
            },
        ),
        (
            "who-has",
            FromClient::WhoHas {
                request: r,
                keys: keys(),
            },
        ),
        ("status", FromClient::Status { request: r }),
        (
            "release",
            FromClient::Release {
                request: r,
                keys: keys(),
            },
        ),
        (
            "replicate",
            FromClient::Replicate {
                request: r,
                keys: vec![Key::from("x")],
                replicas: 3,
            },
        ),
        (
            "set-collection",
            FromClient::SetCollection {
                request: r,
                name: name(),
                collection: collection(),
            },
        ),
        (
            "set-collection-bag",
            FromClient::SetCollection {
                request: r,
                name: name(),
                collection: bag.clone(),
            },
        ),
        (
            "get-collection",
            FromClient::GetCollection {
                request: r,
                name: name(),
            },
        ),
        (
            "list-collections",
            FromClient::ListCollections { request: r },
        ),
        ("watch-progress", FromClient::WatchProgress { request: r }),
        ("list-datasets", FromClient::ListDatasets { request: r }),
        (
            "retire-workers",
            FromClient::RetireWorkers {
                request: r,
                workers: vec![
                    zask::WorkerSelector::Name("w1".into()),
                    zask::WorkerSelector::Address("tcp://127.0.0.1:4000".into()),
                ],
            },
        ),
        ("shutdown", FromClient::Shutdown { request: r }),
        (
            "set-legacy-collection",
            FromClient::SetLegacyCollection {
                request: r,
                name: name(),
                payload: b"\x80\x03}q\x00X\x01\x00\x00\x00aq\x01K\x01s.".to_vec(),
            },
        ),
        (
            "get-legacy-collection",
            FromClient::GetLegacyCollection {
                request: r,
                name: name(),
            },
        ),
        (
            "delete-collection",
            FromClient::DeleteCollection {
                request: r,
                name: name(),
            },
        ),
        (
            "persist",
            FromClient::Persist {
                request: r,
                graph: graph_exprs(),
                outputs: vec![Key::from("y")],
            },
        ),
        (
            "publish",
            FromClient::Publish {
                request: r,
                name: name(),
                collection: bag,
            },
        ),
        (
            "get-dataset",
            FromClient::GetDataset {
                request: r,
                name: name(),
            },
        ),
        (
            "unpublish",
            FromClient::Unpublish {
                request: r,
                name: name(),
            },
        ),
        ("restart", FromClient::Restart { request: r }),
        ("cancel", FromClient::Cancel { request: r }),
        ("goodbye", FromClient::Goodbye),
    ];
    let mut seeds: Seeds = msgs
        .into_iter()
        .map(|(n, m)| (n.to_string(), header_and_values(&m, &[])))
        .collect();
    let all = values();
    let scatter = FromClient::Scatter {
        request: r,
        keys: (0..all.len()).map(|i| Key::from(("s", i))).collect(),
    };
    seeds.push(("scatter".into(), header_and_values(&scatter, &all)));
    seeds
}

fn to_worker_seeds() -> Seeds {
    let compute: Vec<ComputeTask> = graph_exprs()
        .into_iter()
        .enumerate()
        .map(|(i, (key, expr))| ComputeTask {
            key,
            spec: encode_plain(&expr),
            dependencies: vec![(Key::from("x"), vec![addr(1), addr(2)])],
            report_value: i % 2 == 0,
        })
        .collect();
    let msgs: Vec<(&str, ToWorker)> = vec![
        (
            "registered",
            ToWorker::Registered {
                max_message_bytes: 1 << 30,
            },
        ),
        (
            "rejected-version",
            ToWorker::Rejected {
                reason: RejectReason::ProtocolVersion {
                    scheduler: PROTOCOL_VERSION,
                    worker: 2,
                },
            },
        ),
        (
            "rejected-name",
            ToWorker::Rejected {
                reason: RejectReason::NameTaken {
                    name: WorkerName::new("worker-1"),
                },
            },
        ),
        (
            "rejected-address",
            ToWorker::Rejected {
                reason: RejectReason::AddressTaken { address: addr(1) },
            },
        ),
        ("compute", ToWorker::Compute(compute)),
        ("release", ToWorker::Release(keys())),
        ("peers-lost", ToWorker::PeersLost(vec![addr(2), addr(3)])),
        ("ping", ToWorker::Ping),
        ("heartbeat-ack", ToWorker::HeartbeatAck),
        ("reset", ToWorker::Reset),
        ("restart", ToWorker::Restart),
        (
            "get-data",
            ToWorker::GetData {
                request: 4,
                keys: keys(),
            },
        ),
        ("check-held", ToWorker::CheckHeld { keys: keys() }),
        ("unknown-worker", ToWorker::UnknownWorker),
        (
            "malformed",
            ToWorker::Malformed {
                message: "malformed message: expected 1 value frames, got 0".into(),
            },
        ),
        ("close", ToWorker::Close),
        ("dismiss", ToWorker::Dismiss),
    ];
    let mut seeds: Seeds = msgs
        .into_iter()
        .map(|(n, m)| (n.to_string(), header_and_values(&m, &[])))
        .collect();
    let all = values();
    let put = ToWorker::PutData {
        request: 5,
        keys: (0..all.len()).map(|i| Key::from(("s", i))).collect(),
    };
    seeds.push(("put-data".into(), header_and_values(&put, &all)));
    seeds
}

fn peer_request_seeds() -> Seeds {
    let mut seeds = vec![];
    for (i, k) in keys().into_iter().enumerate() {
        let msg = PeerRequest::GetData {
            request: i as u64,
            keys: vec![k],
        };
        seeds.push((format!("get-data-{i}"), header_and_values(&msg, &[])));
    }
    let msg = PeerRequest::GetData {
        request: u64::MAX,
        keys: keys(),
    };
    seeds.push(("get-data-many".into(), header_and_values(&msg, &[])));
    let msg = PeerRequest::GetData {
        request: 0,
        keys: vec![],
    };
    seeds.push(("get-data-none".into(), header_and_values(&msg, &[])));
    let msg = PeerRequest::GetData {
        request: 1 << 40,
        keys: vec![Key::from(("bag-3f2a9c0d1e", 1023)); 3],
    };
    seeds.push(("get-data-repeated".into(), header_and_values(&msg, &[])));
    seeds
}

fn peer_reply_seeds() -> Seeds {
    let mut seeds = vec![(
        "error".to_string(),
        header_and_values(
            &PeerReply::Error {
                message: "malformed request: empty message".into(),
            },
            &[],
        ),
    )];
    for (i, v) in values().into_iter().enumerate() {
        let msg = PeerReply::Data {
            request: i as u64,
            found: vec![keys()[i % 4].clone()],
            missing: vec![Key::from("gone")],
            chunks: vec![1],
        };
        seeds.push((format!("data-{i}"), header_and_values(&msg, &[v])));
    }
    let msg = PeerReply::Data {
        request: 1,
        found: vec![],
        missing: keys(),
        chunks: vec![],
    };
    seeds.push(("data-missing".into(), header_and_values(&msg, &[])));
    // Two values, the first in three chunks (a large value is sent so), the second in one.
    let msg = PeerReply::Data {
        request: 2,
        found: vec![keys()[0].clone(), keys()[1].clone()],
        missing: vec![],
        chunks: vec![3, 1],
    };
    let big = encode_value(&Value::Bytes((0..=255).collect()));
    let mut frames: Vec<Frame> = vec![encode(&msg)];
    frames.extend(big.chunks(100).map(<[u8]>::to_vec));
    frames.push(encode_value(&Value::from(7)));
    seeds.push(("data-chunked".into(), join_frames(&frames)));
    seeds
}

fn to_client_seeds() -> Seeds {
    let r = RequestId(1);
    let status = ClusterStatus {
        address_to_workers: "tcp://127.0.0.1:5556".into(),
        address_to_clients: "tcp://127.0.0.1:5555".into(),
        workers: vec![WorkerInfo {
            address: addr(1),
            name: WorkerName::new("worker-1"),
            pid: 4242,
            nthreads: 4,
            memory_limit_bytes: 1 << 30,
            store: "sled:/tmp/w".into(),
            keys: keys(),
            processing: 2,
            runs_python: true,
            nbytes: 1 << 20,
            idle: false,
            memory: WorkerMemory {
                paused: true,
                memory_bytes: 1 << 19,
                spilled_bytes: 1 << 19,
                spilled_keys: vec![Key::from("x")],
            },
        }],
        tasks: 10,
        processing: 2,
        in_memory: 5,
        clients: 1,
        ready: 1,
        waiting: 2,
        prefixes: vec![TaskPrefixInfo {
            prefix: "inc".into(),
            pending: 3,
            average_ms: Some(250),
        }],
    };
    let errors: Vec<(&str, RequestError)> = vec![
        (
            "graph-missing",
            RequestError::Graph(GraphError::MissingKey {
                key: Key::from("q"),
                needed_by: Some(Key::from("y")),
            }),
        ),
        (
            "graph-cycle",
            RequestError::Graph(GraphError::Cycle {
                cycle: vec![Key::from("a"), Key::from("b")],
            }),
        ),
        (
            "task",
            RequestError::Task {
                key: Key::from("y"),
                error: task_error(TaskErrorKind::Failed),
            },
        ),
        (
            "data-lost",
            RequestError::DataLost {
                key: Key::from("x"),
                workers: vec![addr(1)],
            },
        ),
        (
            "not-found",
            RequestError::NotFound {
                key: Key::from("x"),
            },
        ),
        (
            "no-such-collection",
            RequestError::NoSuchCollection { name: "c".into() },
        ),
        (
            "legacy-collection",
            RequestError::LegacyCollection { name: "c".into() },
        ),
        (
            "native-collection",
            RequestError::NativeCollection { name: "c".into() },
        ),
        ("restarted", RequestError::Restarted),
        (
            "no-such-worker",
            RequestError::NoSuchWorker {
                worker: zask::WorkerSelector::Name("w9".into()),
            },
        ),
        ("scheduler-restarted", RequestError::SchedulerRestarted),
        (
            "restart-incomplete",
            RequestError::RestartIncomplete {
                expected: 3,
                back: 2,
            },
        ),
        (
            "protocol",
            RequestError::Protocol {
                message: "malformed message: bad magic".into(),
            },
        ),
    ];
    let mut msgs: Vec<(String, ToClient)> = vec![
        (
            "welcome".into(),
            ToClient::Welcome {
                protocol_version: PROTOCOL_VERSION,
                address_to_workers: "tcp://127.0.0.1:5556".into(),
                address_to_clients: "tcp://127.0.0.1:5555".into(),
            },
        ),
        ("pong".into(), ToClient::Pong),
        (
            "scattered".into(),
            ToClient::Scattered {
                request: r,
                keys: keys(),
            },
        ),
        (
            "who-has".into(),
            ToClient::WhoHas {
                request: r,
                who_has: vec![(Key::from("x"), vec![addr(1), addr(2)])],
            },
        ),
        ("status".into(), ToClient::Status { request: r, status }),
        ("done".into(), ToClient::Done { request: r }),
        (
            "collection".into(),
            ToClient::Collection {
                request: r,
                collection: collection(),
            },
        ),
        (
            "names".into(),
            ToClient::Names {
                request: r,
                names: vec!["a".into(), "my-bag".into()],
            },
        ),
        (
            "legacy-collection".into(),
            ToClient::LegacyCollection {
                request: RequestId(2),
                payload: b"\x80\x03}q\x00.".to_vec(),
            },
        ),
        (
            "progress".into(),
            ToClient::Progress {
                request: r,
                done: 40_000,
                total: 100_000,
                erred: 1,
            },
        ),
        (
            "retired".into(),
            ToClient::Retired {
                request: r,
                workers: vec![addr(1)],
            },
        ),
    ];
    for (n, error) in errors {
        msgs.push((
            format!("failed-{n}"),
            ToClient::Failed {
                request: RequestId(3),
                error: error.clone(),
            },
        ));
        if n == "protocol" {
            msgs.push((format!("rejected-{n}"), ToClient::Rejected { error }));
        }
    }
    let mut seeds: Seeds = msgs
        .into_iter()
        .map(|(n, m)| (n, header_and_values(&m, &[])))
        .collect();
    let all = values();
    let in_order = ToClient::Values {
        request: r,
        positions: vec![],
    };
    seeds.push(("values".into(), header_and_values(&in_order, &all)));
    let repeated = ToClient::Values {
        request: RequestId(0),
        positions: vec![0, 1, 0],
    };
    seeds.push((
        "values-repeated".into(),
        header_and_values(&repeated, &all[..2]),
    ));
    seeds
}

fn value_seeds() -> Seeds {
    let mut seeds: Seeds = values()
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("value-{i}"), encode_value(v)))
        .collect();
    // A list holding bytes: msgpack `bin` inside, not the raw form.
    let nested = Value::List(vec![Value::Bytes(vec![1; 40]), Value::Float(f64::INFINITY)]);
    seeds.push(("nested-bytes".into(), encode_value(&nested)));
    seeds.push(("empty-bytes".into(), encode_value(&Value::Bytes(vec![]))));
    seeds
}

fn json_graph_seeds() -> Seeds {
    let files: Vec<(&str, &str)> = vec![
        ("readme", r#"{"x": 1, "y": {"task": ["add", "x", 2]}}"#),
        (
            "sum-list",
            r#"{"a": 1, "b": 2, "total": {"task": ["sum", ["a", "b", 3]]}}"#,
        ),
        (
            "tuple-keys",
            r#"[[["x", 1], 1], [["x", 2], 2], ["y", {"task": ["add", {"key": ["x", 1]}, {"key": ["x", 2]}]}]]"#,
        ),
        (
            "int-keys",
            r#"[[1, 10], [2, {"task": ["inc", {"key": 1}]}]]"#,
        ),
        (
            "markers",
            r#"{"x": 1, "s": {"str": "x"}, "b": {"bytes": "AAEC/w=="}, "m": {"map": {"x": "x", "n": null}}}"#,
        ),
        (
            "map-pairs",
            r#"{"m": {"map": [[1, "one"], [[2, 3], {"bytes": ""}], [{"str": "k"}, 1.5]]}}"#,
        ),
        (
            "nested-tasks",
            r#"{"x": 2, "y": {"task": ["mul", {"task": ["inc", "x"]}, [true, false, null, -7, 2.5e-3]]}}"#,
        ),
        (
            "cycle",
            r#"{"a": {"task": ["inc", "b"]}, "b": {"task": ["inc", "a"]}}"#,
        ),
        ("missing", r#"{"a": {"task": ["inc", {"key": "nowhere"}]}}"#),
        (
            "unicode",
            "{\"\u{e9}t\u{e9}\": \"\\u00e9\\n\", \"k\": {\"str\": \"\u{1f600}\"}}",
        ),
        (
            "bag-like",
            r#"[[["b", 0], [1, 2, 3]], [["b", 1], [4, 5]], [["c", 0], {"task": ["map", "inc", {"key": ["b", 0]}]}], [["c", 1], {"task": ["map", "inc", {"key": ["b", 1]}]}], ["n", {"task": ["sum", [{"task": ["length", {"key": ["c", 0]}]}, {"task": ["length", {"key": ["c", 1]}]}]]}]]"#,
        ),
        (
            "big-ints",
            r#"{"min": -9223372036854775808, "max": 9223372036854775807}"#,
        ),
        ("empty", "{}"),
    ];
    let mut seeds: Seeds = files
        .into_iter()
        .map(|(n, t)| (n.to_string(), t.as_bytes().to_vec()))
        .collect();
    // Graphs built in Rust, as `graph_to_json` writes them.
    let built: Vec<(&str, Graph)> = vec![
        (
            "written",
            graph! { "x" => 1, "y" => ("add", "x", 2), "z" => ("sum", vec!["x", "y"]) },
        ),
        (
            "written-tuple-keys",
            graph! { ("a", 0) => 1, ("a", 1) => ("inc", ("a", 0)), "s" => "text" },
        ),
    ];
    for (n, g) in built {
        seeds.push((n.into(), graph_to_json(&g).to_string().into_bytes()));
    }
    seeds
}

/// The captured 2015 messages (`compat/tests/fixtures/legacy/`): `(name, [header, payload])`.
fn captured_legacy() -> Vec<(String, [Frame; 2])> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/tests/fixtures/legacy");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".header.pkl").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let read = |part: &str| fs::read(dir.join(format!("{n}.{part}.pkl"))).unwrap();
            let frames = [read("header"), read("payload")];
            (n, frames)
        })
        .collect()
}

fn legacy_message_seeds() -> Seeds {
    captured_legacy()
        .into_iter()
        .map(|(n, frames)| (n.replace('_', "-"), join_frames(&frames)))
        .collect()
}

fn pickle_seeds() -> Seeds {
    let mut seeds = vec![];
    for (n, [header, payload]) in captured_legacy() {
        let n = n.replace('_', "-");
        seeds.push((format!("{n}-header"), header));
        seeds.push((format!("{n}-payload"), payload));
    }
    // The decoder's fixtures (compat/tests/fixtures), protocols 0 and 4 (text and binary opcodes), the small ones
    // (the rest use the same opcodes).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/tests/fixtures");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| [".p0.pkl", ".p4.pkl"].iter().any(|s| n.ends_with(s)))
        .collect();
    names.sort();
    for n in names {
        let data = fs::read(dir.join(&n)).unwrap();
        if data.len() <= 300 {
            let name = n.strip_suffix(".pkl").unwrap().replace(['_', '.'], "-");
            seeds.push((name, data));
        }
    }
    seeds
}

/// Every target's seeds, by target: `(file name, bytes)`, names starting with `seed-`.
fn seeds() -> BTreeMap<&'static str, Seeds> {
    let made: Vec<(&str, Seeds)> = vec![
        ("from_worker", from_worker_seeds()),
        ("from_client", from_client_seeds()),
        ("to_worker", to_worker_seeds()),
        ("peer_request", peer_request_seeds()),
        ("peer_reply", peer_reply_seeds()),
        ("to_client", to_client_seeds()),
        ("value", value_seeds()),
        ("json_graph", json_graph_seeds()),
        ("pickle", pickle_seeds()),
        ("legacy_message", legacy_message_seeds()),
    ];
    made.into_iter()
        .map(|(t, s)| {
            let named = s
                .into_iter()
                .map(|(n, d)| (format!("seed-{n}"), d))
                .collect();
            (t, named)
        })
        .collect()
}

#[test]
fn committed_seeds_are_the_generated_ones() {
    let write = std::env::var_os("ZASK_FUZZ_WRITE_SEEDS").is_some();
    let all = seeds();
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(all.keys().copied().collect::<Vec<_>>(), {
        let mut sorted = names.clone();
        sorted.sort();
        sorted
    });
    let mut stale = vec![];
    for (target, seeds) in &all {
        let dir = corpus_dir().join(target);
        if write {
            fs::create_dir_all(&dir).unwrap();
            for e in fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("seed-")
                {
                    fs::remove_file(p).unwrap();
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (name, data) in seeds {
            assert!(
                names.insert(name.clone()),
                "seed {target}/{name} made twice"
            );
            let path = dir.join(name);
            if write {
                fs::write(&path, data).unwrap();
            } else if fs::read(&path).ok().as_ref() != Some(data) {
                stale.push(format!("{target}/{name}"));
            }
        }
        for e in fs::read_dir(&dir).into_iter().flatten() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name.starts_with("seed-") && !names.contains(&name) {
                stale.push(format!("{target}/{name} (no longer made)"));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "the committed fuzz seeds differ from the generated ones: {stale:?}; write them again \
         with `ZASK_FUZZ_WRITE_SEEDS=1 cargo test --test decoders_fuzz committed_seeds` and \
         commit fuzz/corpus"
    );
}

#[test]
fn every_seed_decodes_and_every_target_has_a_fuzz_binary() {
    let all = seeds();
    for (target, check) in TARGETS {
        let seeds = &all[target];
        assert!(seeds.len() >= 6, "{target} has only {} seeds", seeds.len());
        for (name, data) in seeds {
            assert!(check(data), "seed {target}/{name} does not decode");
        }
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/fuzz_targets")
            .join(format!("{target}.rs"));
        let text =
            fs::read_to_string(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        assert!(text.contains(&format!("zask_fuzz::checks::{target}(data)")));
    }
    let binaries = fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets"))
        .unwrap()
        .count();
    assert_eq!(binaries, TARGETS.len(), "a fuzz target without a check");
}

// ---- the property tests ----

/// xorshift64*: a small, seeded, dependency-free generator.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// The seed and the number of inputs per kind: fixed for CI; `ZASK_FUZZ_SEED` /
/// `ZASK_FUZZ_ITERS` override them.
fn seed_and_count(seed: u64, count: usize) -> (u64, usize) {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
    (
        env("ZASK_FUZZ_SEED").unwrap_or(seed),
        env("ZASK_FUZZ_ITERS").map_or(count, |n: u64| n as usize),
    )
}

/// Every file of a target's corpus: the seeds and any regression inputs.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = fs::read_dir(corpus_dir().join(target))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.into_iter().map(|p| fs::read(p).unwrap()).collect()
}

/// Byte strings that mean something to msgpack (huge lengths, wide integers, floats, nil),
/// JSON (markers, extreme numbers, escapes) and the frame spelling (a frame length), spliced
/// into inputs so mutations reach past the first check.
const TOKENS: &[&[u8]] = &[
    b"\xdc\xff\xff",
    b"\xdd\xff\xff\xff\xff",
    b"\xde\xff\xff",
    b"\xdf\x7f\xff\xff\xff",
    b"\xc6\xff\xff\xff\xff",
    b"\xc5\xff\xff",
    b"\xdb\x7f\xff\xff\xff",
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",
    b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",
    b"\xc0",
    b"\xc3",
    b"\x91",
    b"\x81",
    b"\xa1x",
    b"\xd4\x01\x00",
    b"ZASK\x05",
    b"\x00\x00",
    b"\xff\xff",
    b"{\"task\": [",
    b"{\"key\": ",
    b"{\"map\": [[",
    b"{\"bytes\": \"",
    b"{\"str\": ",
    b"[[",
    b"]]",
    b"1e400",
    b"-9223372036854775809",
    b"\"\\ud800\"",
    b"\x80\x03",
];

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut d = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(d.len() + 1);
        match rng.below(9) {
            0 | 1 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            2 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = rng.byte();
            }
            3 => d.truncate(at),
            4 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                d.splice(at..at, t.iter().copied());
            }
            5 if !d.is_empty() => {
                // Overwrite with a token (changes a length or a type in place).
                let t = TOKENS[rng.below(TOKENS.len())];
                let end = (at + t.len()).min(d.len());
                d.splice(at..end, t.iter().copied());
            }
            6 => {
                let o = &corpus[rng.below(corpus.len())];
                let s = rng.below(o.len());
                let e = s + rng.below(o.len() - s + 1);
                d.splice(at..at, o[s..e].iter().copied());
            }
            7 if !d.is_empty() => {
                let s = rng.below(d.len());
                let e = (s + 1 + rng.below(16)).min(d.len());
                d.drain(s..e);
            }
            _ => {
                let n = rng.below(d.len() + 1).min(64);
                let i = rng.below(d.len().saturating_sub(n) + 1);
                let dup = d[i..i + n].to_vec();
                d.splice(at..at, dup);
            }
        }
    }
    d
}

/// Random bytes; for the native targets, half of them behind a valid frame length and the
/// native prefix, so they reach the msgpack decoder.
fn random_input(rng: &mut Rng, native: bool) -> Vec<u8> {
    let len = rng.below(64);
    let body: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
    if native && rng.below(2) == 0 {
        let mut header = MAGIC.to_vec();
        header.push(PROTOCOL_VERSION);
        header.extend(body);
        join_frames(&[header])
    } else {
        body
    }
}

fn fuzz_target(name: &str, check: checks::Check, seed: u64) {
    let corpus = corpus(name);
    assert!(!corpus.is_empty(), "no corpus for {name}");
    let (seed, n) = seed_and_count(seed, 30_000);
    let mut rng = Rng::new(seed);
    let native = !matches!(name, "json_graph" | "pickle" | "legacy_message" | "value");
    let mut decoded = 0;
    for _ in 0..n {
        let d = mutate(&mut rng, &corpus);
        decoded += usize::from(check(&d));
    }
    let mut random_decoded = 0;
    for _ in 0..n / 3 {
        let d = random_input(&mut rng, native);
        random_decoded += usize::from(check(&d));
    }
    eprintln!("{name}: {decoded} of {n} mutated inputs decoded, {random_decoded} random ones");
    // Mutations must leave a fair share decodable, or the round-trip side is not exercised.
    assert!(
        decoded > n / 50,
        "{name}: only {decoded} of {n} mutated inputs decoded"
    );
}

#[test]
fn mutated_and_random_worker_port_messages() {
    fuzz_target("from_worker", checks::from_worker, 0x5eed_0001);
}

#[test]
fn mutated_and_random_client_port_messages() {
    fuzz_target("from_client", checks::from_client, 0x5eed_0002);
}

#[test]
fn mutated_and_random_scheduler_to_worker_messages() {
    fuzz_target("to_worker", checks::to_worker, 0x5eed_0003);
}

#[test]
fn mutated_and_random_peer_requests() {
    fuzz_target("peer_request", checks::peer_request, 0x5eed_0004);
}

#[test]
fn mutated_and_random_peer_replies() {
    fuzz_target("peer_reply", checks::peer_reply, 0x5eed_0005);
}

#[test]
fn mutated_and_random_scheduler_to_client_messages() {
    fuzz_target("to_client", checks::to_client, 0x5eed_0006);
}

#[test]
fn mutated_and_random_value_frames() {
    fuzz_target("value", checks::value, 0x5eed_0007);
}

#[test]
fn mutated_and_random_json_graphs() {
    fuzz_target("json_graph", checks::json_graph, 0x5eed_0008);
}

#[test]
fn mutated_and_random_pickles() {
    fuzz_target("pickle", checks::pickle, 0x5eed_0009);
}

#[test]
fn mutated_and_random_legacy_messages() {
    fuzz_target("legacy_message", checks::legacy_message, 0x5eed_000a);
}

/// The frame spelling reads back what it wrote, and any bytes are some frames.
#[test]
fn frames_spelling_round_trips() {
    let frames: Vec<Frame> = vec![b"ZASK".to_vec(), vec![], vec![7; 300], vec![1]];
    assert_eq!(checks::frames(&join_frames(&frames)), frames);
    assert_eq!(checks::frames(b""), Vec::<Frame>::new());
    assert_eq!(checks::frames(b"\x05\x00ab"), vec![b"ab".to_vec()]);
    assert_eq!(
        checks::frames(b"\x01\x00ab"),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
}

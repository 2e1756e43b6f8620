//! The Rust client against real processes: a `zask-scheduler` and (unless said otherwise) two
//! one-thread `zask-worker`s on 127.0.0.1, started fresh for each test.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use common::{wait_until, ClusterOptions, TestCluster, DEADLINE};
use zask::graph::{key, literal};
use zask::protocol::codec::{decode, encode, encode_value};
use zask::protocol::{
    FinishedTask, FromClient, FromWorker, RequestError, RequestId, TaskErrorKind, ToClient,
    WorkerAddress, PROTOCOL_VERSION,
};
use zask::security::Role;
use zask::{graph, Client, ClientConfig, ClientError, GetOptions, Graph, GraphError, Key};
use zask::{KeySpec, Node, Value};

/// `client.get` with a deadline, so a hang fails the test instead of blocking it.
fn get(client: &Client, dsk: &Graph, keys: impl Into<KeySpec>) -> Result<Value, ClientError> {
    let options = GetOptions {
        timeout: Some(DEADLINE),
        ..GetOptions::default()
    };
    client.get_with(dsk, keys, options)
}

fn seed() -> Graph {
    graph! { "x" => 1, "y" => ("add", "x", 2) }
}

fn assert_seed_works(client: &Client) {
    assert_eq!(get(client, &seed(), "y"), Ok(Value::from(3)));
}

fn ints(xs: &[i64]) -> Value {
    Value::from(xs.to_vec())
}

/// The task error of a failed get, or a panic saying what came instead.
fn task_error(result: Result<Value, ClientError>) -> (Key, zask::protocol::TaskError) {
    match result {
        Err(ClientError::Request(RequestError::Task { key, error })) => (key, error),
        other => panic!("expected a task error, got {other:?}"),
    }
}

/// Number of keys each worker holds, by address.
fn keys_per_worker(client: &Client) -> HashMap<WorkerAddress, Vec<Key>> {
    client
        .workers()
        .expect("status")
        .into_iter()
        .map(|w| (w.address, w.keys))
        .collect()
}

#[test]
fn seed_example_gives_three() {
    let cluster = TestCluster::new();
    let client = cluster.client();
    let dsk = graph! { "x" => 1, "y" => ("add", "x", 2) };
    assert_eq!(client.get(&dsk, "y"), Ok(Value::from(3)));
}

#[test]
fn dependencies_across_several_levels_and_nested_tasks() {
    let cluster = TestCluster::new();
    let client = cluster.client();
    let dsk = graph! {
        "a" => 1,
        "b" => ("inc", "a"),
        "c" => ("add", "a", "b"),
        "d" => ("mul", "c", "b"),
        "e" => ("add", "d", "c"),
        "nested" => ("inc", ("add", 1, 2)),
        "nested_refs" => ("add", ("inc", "a"), ("double", ("inc", "b"))),
    };
    assert_eq!(
        get(&client, &dsk, vec!["a", "b", "c", "d", "e"]),
        Ok(ints(&[1, 2, 3, 6, 9]))
    );
    assert_eq!(get(&client, &dsk, "nested"), Ok(Value::from(4)));
    assert_eq!(get(&client, &dsk, "nested_refs"), Ok(Value::from(2 + 6)));
}

#[test]
fn lists_in_arguments_are_resolved_element_by_element() {
    let cluster = TestCluster::new();
    let client = cluster.client();
    let dsk = graph! {
        "a" => 1,
        "b" => 2,
        "c" => 3,
        "s" => ("sum", vec!["a", "b", "c"]),
        "with_tasks" => ("sum", vec![Node::from(("inc", "a")), Node::from("b"), Node::from(10)]),
        "list" => vec!["a", "c"],
        "nested_list" => vec![Node::from(vec!["a", "b"]), Node::from(("double", "c"))],
    };
    assert_eq!(get(&client, &dsk, "s"), Ok(Value::from(6)));
    assert_eq!(
        get(&client, &dsk, "with_tasks"),
        Ok(Value::from(2 + 2 + 10))
    );
    assert_eq!(get(&client, &dsk, "list"), Ok(ints(&[1, 3])));
    assert_eq!(
        get(&client, &dsk, "nested_list"),
        Ok(Value::List(vec![ints(&[1, 2]), Value::from(6)]))
    );
}

#[test]
fn an_alias_has_the_value_of_the_key_it_names() {
    let cluster = TestCluster::new();
    let client = cluster.client();
    let dsk = graph! { "x" => 1, "y" => ("inc", "x"), "z" => "y", "zz" => "z" };
    let got = get(&client, &dsk, vec!["y", "z", "zz"]).unwrap();
    assert_eq!(got, ints(&[2, 2, 2]));
    assert_eq!(get(&client, &dsk, "zz"), Ok(Value::from(2)));
}

#[test]
fn tuple_keys_are_computed_and_fetched() {
    let cluster = TestCluster::new();
    let client = cluster.client();
    let dsk = graph! {
        ("x", 1) => 1,
        ("x", 2) => ("inc", ("x", 1)),
        ("x", 3) => ("add", ("x", 2), key(("x", 1))),
    };
    assert_eq!(get(&client, &dsk, ("x", 2)), Ok(Value::from(2)));
    assert_eq!(get(&client, &dsk, ("x", 3)), Ok(Value::from(3)));
}

#[test]
fn nested_output_shapes_are_kept() {
    let cluster = TestCluster::new();
    let client = cluster.client();
    let dsk = graph! { "a" => 1, "b" => ("inc", "a"), "c" => ("add", "a", "b") };
    let spec = vec![KeySpec::from(vec!["a", "b"]), KeySpec::from("c")];
    assert_eq!(
        get(&client, &dsk, spec),
        Ok(Value::List(vec![ints(&[1, 2]), Value::from(3)]))
    );
    // The same key twice, and a one-element list, keep their shape too.
    let spec = vec![
        KeySpec::from(vec!["c"]),
        KeySpec::from("c"),
        KeySpec::from(vec![KeySpec::from(vec!["a"])]),
    ];
    assert_eq!(
        get(&client, &dsk, spec),
        Ok(Value::List(vec![
            ints(&[3]),
            Value::from(3),
            Value::List(vec![ints(&[1])])
        ]))
    );
}

#[test]
fn a_string_that_names_no_key_stays_a_literal() {
    let cluster = TestCluster::new();
    let client = cluster.client();
    let dsk = graph! {
        "x" => 1,
        "s" => "not-a-key",
        "len" => ("length", "abcd"),
        "id" => ("identity", vec!["x", "y"]),
        "quoted" => ("identity", literal("x")),
    };
    assert_eq!(get(&client, &dsk, "s"), Ok(Value::from("not-a-key")));
    assert_eq!(get(&client, &dsk, "len"), Ok(Value::from(4)));
    // "x" names a key, "y" does not.
    assert_eq!(
        get(&client, &dsk, "id"),
        Ok(Value::List(vec![Value::from(1), Value::from("y")]))
    );
    assert_eq!(get(&client, &dsk, "quoted"), Ok(Value::from("x")));
}

#[test]
fn a_ten_thousand_task_graph_gives_the_right_sum() {
    let cluster = TestCluster::new();
    let client = cluster.client();
    let mut dsk = Graph::new();
    let mut partials = Vec::new();
    for j in 0..100i64 {
        let mut parts = Vec::new();
        for k in 0..100i64 {
            let i = j * 100 + k;
            dsk.insert(("x", i), ("inc", i));
            parts.push(key(("x", i)));
        }
        dsk.insert(("s", j), ("sum", parts));
        partials.push(key(("s", j)));
    }
    dsk.insert("total", ("sum", partials));
    assert_eq!(dsk.len(), 10_101);
    assert_eq!(
        get(&client, &dsk, "total"),
        Ok(Value::from((1..=10_000i64).sum::<i64>()))
    );
    // Read back as a list, the 10,000 leaves come in order.
    let leaves: Vec<KeySpec> = (0..10_000i64).map(|i| KeySpec::from(("x", i))).collect();
    let got = get(&client, &dsk, leaves).expect("the leaves");
    let got = got.as_list().expect("a list");
    assert_eq!(got.len(), 10_000);
    if let Some(i) = (0..10_000).find(|&i| got[i] != Value::from(i as i64 + 1)) {
        panic!("leaf {i} is {:?}, expected {}", got[i], i + 1);
    }
}

#[test]
fn a_ten_thousand_link_chain_gives_ten_thousand() {
    let cluster = TestCluster::new();
    let client = cluster.client();
    let mut dsk = Graph::new();
    dsk.insert("k0", 0);
    for i in 1..=10_000 {
        dsk.insert(format!("k{i}"), ("inc", format!("k{}", i - 1)));
    }
    assert_eq!(get(&client, &dsk, "k10000"), Ok(Value::from(10_000)));
}

#[test]
fn a_missing_key_is_an_error_naming_it() {
    let cluster = TestCluster::new();
    let client = cluster.client();
    // A key asked for that is not in the graph.
    match get(&client, &seed(), "nope") {
        Err(ClientError::Request(RequestError::Graph(e @ GraphError::MissingKey { .. }))) => {
            assert!(
                matches!(&e, GraphError::MissingKey { key, needed_by: None } if key == &Key::from("nope")),
                "{e:?}"
            );
            assert!(e.to_string().contains("\"nope\""), "{e}");
        }
        other => panic!("expected a missing key error, got {other:?}"),
    }
    // A key a task refers to explicitly that is nowhere.
    let dsk = graph! { "a" => 1, "b" => ("add", "a", key("ghost")) };
    match get(&client, &dsk, "b") {
        Err(ClientError::Request(RequestError::Graph(e))) => {
            assert_eq!(
                e,
                GraphError::MissingKey {
                    key: "ghost".into(),
                    needed_by: Some("b".into())
                }
            );
            let message = ClientError::Request(RequestError::Graph(e)).to_string();
            assert!(
                message.contains("\"ghost\"") && message.contains("\"b\""),
                "{message}"
            );
        }
        other => panic!("expected a missing key error, got {other:?}"),
    }
    assert_seed_works(&client);
}

#[test]
fn a_cycle_is_an_error_naming_its_keys() {
    let cluster = TestCluster::new();
    let client = cluster.client();
    let dsk = graph! {
        "a" => ("inc", "b"),
        "b" => ("inc", "c"),
        "c" => ("inc", "a"),
        "d" => ("inc", "a"),
    };
    match get(&client, &dsk, "d") {
        Err(ClientError::Request(RequestError::Graph(GraphError::Cycle { cycle }))) => {
            let got: BTreeSet<Key> = cycle.iter().cloned().collect();
            let want: BTreeSet<Key> = ["a", "b", "c"].into_iter().map(Key::from).collect();
            assert_eq!(got, want, "cycle {cycle:?}");
            let message = GraphError::Cycle { cycle }.to_string();
            for k in ["\"a\"", "\"b\"", "\"c\""] {
                assert!(message.contains(k), "{message}");
            }
        }
        other => panic!("expected a cycle error, got {other:?}"),
    }
    // A key that depends on itself.
    let dsk = graph! { "self" => ("inc", "self") };
    assert!(
        matches!(
            get(&client, &dsk, "self"),
            Err(ClientError::Request(RequestError::Graph(
                GraphError::Cycle { .. }
            )))
        ),
        "a self-reference is a cycle"
    );
    assert_seed_works(&client);
}

#[test]
fn a_failing_task_fails_its_get_and_its_dependents_then_the_cluster_serves_on() {
    let cluster = TestCluster::new();
    let client = cluster.client();
    let dsk = graph! {
        "x" => ("fail", "boom: the input was bad"),
        "y" => ("inc", "x"),
        "z" => ("add", "y", 1),
    };
    let result = get(&client, &dsk, "x");
    let message = result.clone().unwrap_err().to_string();
    let (key, error) = task_error(result);
    assert_eq!(key, Key::from("x"));
    assert_eq!(error.kind, TaskErrorKind::Failed);
    assert_eq!(error.message, "boom: the input was bad");
    assert!(
        message.contains("\"x\"") && message.contains("boom"),
        "{message}"
    );

    // Dependents fail with the very same error, naming the task that failed.
    for dependent in ["y", "z"] {
        let (k, e) = task_error(get(&client, &dsk, dependent));
        assert_eq!((k, e), (key.clone(), error.clone()), "getting {dependent}");
    }
    assert_seed_works(&client);
}

#[test]
fn an_unknown_function_is_a_clear_task_error_and_the_cluster_serves_on() {
    let cluster = TestCluster::new();
    let client = cluster.client();
    let dsk = graph! { "a" => 1, "b" => ("no_such_function", "a") };
    let (key, error) = task_error(get(&client, &dsk, "b"));
    assert_eq!(key, Key::from("b"));
    assert_eq!(error.kind, TaskErrorKind::UnknownFunction);
    assert!(error.message.contains("no_such_function"), "{error}");
    assert_seed_works(&client);
    assert_eq!(client.workers().unwrap().len(), 2);
}

#[test]
fn data_moves_from_worker_to_worker() {
    let cluster = TestCluster::new();
    let client = cluster.client();
    let keys = client
        .scatter([("left", Value::from(40)), ("right", Value::from(2))])
        .expect("scatter");
    assert_eq!(keys, vec![Key::from("left"), Key::from("right")]);
    let who_has = client.who_has(vec!["left", "right"]).unwrap();
    let left = who_has[&Key::from("left")].clone();
    let right = who_has[&Key::from("right")].clone();
    assert_eq!(left.len(), 1, "left held by {left:?}");
    assert_eq!(right.len(), 1, "right held by {right:?}");
    assert_ne!(
        left, right,
        "the two values should land on different workers"
    );
    for holder in left.iter().chain(&right) {
        assert!(
            cluster
                .worker_addresses()
                .iter()
                .any(|a| a.as_str() == holder.as_str()),
            "{holder}"
        );
    }

    // The add runs on one worker, so one input had to travel from the other.
    let dsk = graph! { "total" => ("add", "left", "right") };
    assert_eq!(get(&client, &dsk, "total"), Ok(Value::from(42)));

    // The worker that ran it fetched a copy of the other's input; the scheduler knows.
    let after = client.who_has(vec!["left", "right"]).unwrap();
    let copies: usize = after.values().map(Vec::len).sum();
    assert!(
        copies >= 3,
        "after the add one input should be on both workers: {after:?}"
    );
    // Both scattered values are still readable.
    assert_eq!(client.gather(vec!["left", "right"]), Ok(ints(&[40, 2])));
}

#[test]
fn memory_and_sled_stores_give_identical_results() {
    let dsk = graph! {
        "a" => 1,
        "b" => 2.5,
        "s" => "text",
        "raw" => Value::Bytes(vec![0, 1, 2, 255]),
        "big" => ("alloc", 100_000),
        "l" => ("range_list", 0, 100),
        "c" => ("add", "a", "b"),
        "d" => ("sum", "l"),
        "e" => ("concat", vec![Node::from("l"), Node::from(vec![Node::from("s"), Node::from("a")])]),
        "f" => ("length", "big"),
        "m" => literal(Value::map([("k", Value::from(1)), ("j", Value::Null)])),
        "g" => ("identity", "m"),
    };
    let keys = vec!["a", "b", "s", "raw", "c", "d", "e", "f", "g"];
    let mut results = Vec::new();
    for (options, store) in [
        (TestCluster::options().with_test_functions(), "memory"),
        (
            TestCluster::options().with_test_functions().sled_store(),
            "sled",
        ),
    ] {
        let cluster = options.start();
        let client = cluster.client();
        for w in client.workers().unwrap() {
            assert!(w.store.starts_with(store), "{w:?} should use {store}");
        }
        results.push(get(&client, &dsk, keys.clone()).expect("get"));
    }
    assert_eq!(results[0], results[1]);
    let Value::List(items) = &results[1] else {
        panic!("{:?}", results[1])
    };
    assert_eq!(items[4], Value::from(3.5));
    assert_eq!(items[5], Value::from((0..100i64).sum::<i64>()));
    assert_eq!(items[7], Value::from(100_000));
}

#[test]
fn sled_workers_report_their_store() {
    let cluster = ClusterOptions::default().sled_store().start();
    let client = cluster.client();
    for w in client.workers().unwrap() {
        assert!(w.store.contains("sled"), "{w:?}");
    }
    assert_seed_works(&client);
    // Each worker got its own database under the cluster's directory.
    for i in 0..2 {
        assert!(cluster.dir().join(format!("w{i}")).exists(), "w{i} missing");
    }
}

#[test]
fn intermediate_results_are_released_and_kept_results_stay_until_released() {
    let cluster = TestCluster::new();
    let client = cluster.client();
    let dsk = graph! {
        "a" => 1,
        "b" => ("inc", "a"),
        "c" => ("double", "b"),
        "d" => ("add", "b", "c"),
        "e" => ("sum", vec!["a", "b", "c", "d"]),
    };
    assert_eq!(get(&client, &dsk, "e"), Ok(Value::from(1 + 2 + 4 + 6)));
    wait_until("every worker to hold 0 keys", DEADLINE, || {
        let held = keys_per_worker(&client);
        held.values().all(Vec::is_empty).then_some(())
    });

    let options = GetOptions {
        keep_results: true,
        timeout: Some(DEADLINE),
        ..GetOptions::default()
    };
    assert_eq!(client.get_with(&dsk, "e", options), Ok(Value::from(13)));
    // The output stays; its intermediates go.
    let holders = client.who_has("e").unwrap()[&Key::from("e")].clone();
    assert_eq!(holders.len(), 1, "{holders:?}");
    wait_until("only the kept key to stay", DEADLINE, || {
        let held: Vec<Key> = keys_per_worker(&client).into_values().flatten().collect();
        (held == vec![Key::from("e")]).then_some(())
    });
    // Another client can read it.
    assert_eq!(cluster.client().gather("e"), Ok(Value::from(13)));

    client.release("e").unwrap();
    wait_until("the released key to go", DEADLINE, || {
        let gone = client.who_has("e").unwrap()[&Key::from("e")].is_empty();
        let held = keys_per_worker(&client);
        (gone && held.values().all(Vec::is_empty)).then_some(())
    });
    assert!(matches!(
        client.gather("e"),
        Err(ClientError::Request(RequestError::NotFound { .. }))
    ));
}

/// Messages no well-behaved peer sends. `port` says which port they are meant to confuse.
fn garbage(port: &str) -> Vec<Vec<Vec<u8>>> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    let header = |body: &[u8]| {
        let mut h = b"ZASK".to_vec();
        h.push(PROTOCOL_VERSION);
        h.extend_from_slice(body);
        h
    };
    let submit = encode(&FromClient::Submit {
        request: RequestId(5),
        graph: seed().resolve(&|_| false).into_iter().collect::<Vec<_>>(),
        outputs: vec!["y".into()],
        keep_results: false,
        restrictions: vec![],
    });
    let mut msgs: Vec<Vec<Vec<u8>>> = vec![
        // Random bytes, short and long, one frame and several.
        vec![random(1)],
        vec![random(64)],
        vec![random(10_000)],
        vec![random(16), random(16), random(16)],
        // An empty frame, and an empty header followed by data.
        vec![vec![]],
        vec![vec![], random(8)],
        // The magic alone, another version, a valid prefix with a random body.
        vec![b"ZASK".to_vec()],
        vec![b"ZASK\x09\x80".to_vec()],
        vec![header(&random(40))],
        // Huge announced lengths (array32, str32, bin32) with nothing behind them.
        vec![header(&[0xdd, 0xff, 0xff, 0xff, 0xff])],
        vec![header(&[0xdb, 0xff, 0xff, 0xff, 0xff])],
        vec![header(&[0xc6, 0xff, 0xff, 0xff, 0xff])],
        // Deep nesting: a parser must not recurse itself to death.
        vec![header(&vec![0x91; 100_000])],
        vec![header(&[0x81, 0xa1, b'a'].repeat(30_000))],
        // A truncated valid header.
        vec![submit[..submit.len() / 2].to_vec()],
        vec![submit[..6].to_vec()],
        // A pickle-looking frame (a 2015 message).
        vec![b"\x80\x03}q\x00(X\x02\x00\x00\x00opq\x01X\x08\x00\x00\x00registerq\x02u.".to_vec()],
        vec![b"\x80\x02".to_vec(), random(20)],
    ];
    match port {
        "clients" => {
            // Wrong frame counts: values announced but missing, or unannounced values.
            msgs.push(vec![encode(&FromClient::Scatter {
                request: RequestId(6),
                keys: vec!["g1".into(), "g2".into()],
            })]);
            msgs.push(vec![
                encode(&FromClient::Scatter {
                    request: RequestId(7),
                    keys: vec!["g1".into()],
                }),
                encode_value(&Value::from(1)),
                encode_value(&Value::from(2)),
            ]);
            // A scatter whose value frame is not a value.
            msgs.push(vec![
                encode(&FromClient::Scatter {
                    request: RequestId(8),
                    keys: vec!["g3".into()],
                }),
                random(33),
            ]);
            msgs.push(vec![submit.clone(), random(10)]);
            // A worker's message on the client port.
            msgs.push(vec![encode(&FromWorker::Heartbeat)]);
        }
        _ => {
            // Client messages on the worker port.
            msgs.push(vec![encode(&FromClient::Hello {
                protocol_version: PROTOCOL_VERSION,
            })]);
            msgs.push(vec![submit.clone()]);
            msgs.push(vec![encode(&FromClient::Status {
                request: RequestId(1),
            })]);
            // Worker messages from a peer that never registered.
            msgs.push(vec![encode(&FromWorker::Heartbeat)]);
            msgs.push(vec![
                encode(&FromWorker::Finished(vec![FinishedTask {
                    key: "y".into(),
                    nbytes: 1,
                    fetched: vec![],
                    has_value: true,
                }])),
                encode_value(&Value::from(666)),
            ]);
            msgs.push(vec![encode(&FromWorker::Data {
                request: 999,
                found: vec![],
                missing: vec!["y".into()],
            })]);
            // Values announced but missing.
            msgs.push(vec![encode(&FromWorker::Finished(vec![FinishedTask {
                key: "q".into(),
                nbytes: 1,
                fetched: vec![],
                has_value: true,
            }]))]);
        }
    }
    msgs
}

#[test]
fn garbage_on_both_ports_does_not_stop_the_next_get() {
    let mut cluster = TestCluster::new();
    let client = cluster.client();
    let ctx = zmq::Context::new();
    let mut sockets = Vec::new();
    // Authenticated peers sending garbage: what reaches the decoders.
    for (port, address, role) in [
        (
            "clients",
            cluster.address_to_clients().to_owned(),
            Role::Client,
        ),
        (
            "workers",
            cluster.address_to_workers().to_owned(),
            Role::Worker,
        ),
    ] {
        let socket = ctx.socket(zmq::DEALER).unwrap();
        socket.set_linger(0).unwrap();
        cluster.authenticate(&socket, role);
        socket.connect(&address).unwrap();
        for msg in garbage(port) {
            socket.send_multipart(msg, 0).unwrap();
        }
        sockets.push((port, socket));
    }
    // A scheduler that survived all that still computes, with both workers.
    assert_seed_works(&client);
    assert_eq!(client.workers().unwrap().len(), 2);
    for i in 0..2 {
        assert!(cluster.worker_running(i), "worker {i} died");
    }
    // The forged completion of "y" from an unknown peer changed nothing.
    assert_eq!(get(&client, &seed(), "y"), Ok(Value::from(3)));

    // Whatever the client port answered to garbage is a readable protocol error: unreadable
    // messages are rejected (no request to answer), readable but invalid requests fail.
    let (_, client_socket) = &sockets[0];
    let mut answers = 0;
    while client_socket.poll(zmq::POLLIN, 200).unwrap() > 0 {
        let frames = client_socket.recv_multipart(0).unwrap();
        let answer: ToClient = decode(&frames[0]).expect("a readable answer");
        assert!(
            matches!(
                answer,
                ToClient::Rejected {
                    error: RequestError::Protocol { .. }
                } | ToClient::Failed {
                    error: RequestError::Protocol { .. },
                    ..
                }
            ),
            "{answer:?}"
        );
        answers += 1;
    }
    assert!(answers > 0, "malformed requests should be answered");

    // A fresh client after the storm works too.
    drop(sockets);
    let other = cluster.client();
    let dsk = graph! { "p" => 20, "q" => ("double", "p"), "r" => ("add", "q", 2) };
    assert_eq!(get(&other, &dsk, "r"), Ok(Value::from(42)));
}

#[test]
fn many_clients_at_once_all_get_correct_results() {
    let cluster = TestCluster::new();
    let address = cluster.address_to_clients().to_owned();
    let threads: Vec<_> = (0..4i64)
        .map(|t| {
            let address = address.clone();
            let config = ClientConfig {
                security: cluster.client_security(Role::Client),
                ..ClientConfig::default()
            };
            std::thread::spawn(move || {
                let client = Client::connect_with(&address, config).expect("connect");
                for round in 0..5i64 {
                    let base = t * 100 + round;
                    let own_a = format!("a-{t}-{round}");
                    let own_b = format!("b-{t}-{round}");
                    let mut dsk = graph! {
                        own_a.clone() => base,
                        own_b.clone() => ("inc", own_a.clone()),
                        // A key every client shares, defined the same way by all.
                        "shared" => ("add", 20, 22),
                    };
                    let mine = format!("mine-{t}-{round}");
                    dsk.insert(mine.clone(), ("add", own_b.clone(), "shared"));
                    let got = get(&client, &dsk, vec![mine, "shared".into()]).expect("get");
                    assert_eq!(got, ints(&[base + 1 + 42, 42]), "client {t} round {round}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread failed");
    }
}

#[test]
fn concurrent_gets_from_one_client_all_get_correct_results() {
    let cluster = TestCluster::new();
    let client = Arc::new(cluster.client());
    let threads: Vec<_> = (0..4i64)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                for round in 0..5i64 {
                    let n = t * 10 + round;
                    let mut dsk = Graph::new();
                    let mut parts = Vec::new();
                    for i in 0..20i64 {
                        dsk.insert((format!("t{t}r{round}"), i), ("inc", n + i));
                        parts.push(key((format!("t{t}r{round}"), i)));
                    }
                    dsk.insert(format!("total-{t}-{round}"), ("sum", parts));
                    let expected: i64 = (0..20).map(|i| n + i + 1).sum();
                    let got = get(&client, &dsk, format!("total-{t}-{round}"));
                    assert_eq!(got, Ok(Value::from(expected)), "thread {t} round {round}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a get thread failed");
    }
    assert_seed_works(&client);
}

#[test]
fn a_get_returns_an_error_when_the_scheduler_is_killed() {
    let mut cluster = TestCluster::new();
    let config = ClientConfig {
        connect_timeout_ms: 10_000,
        ping_interval_ms: 100,
        scheduler_timeout_ms: 1_000,
        ..ClientConfig::default()
    };
    let client = cluster.client_with(config);
    let observer = cluster.client();
    let (tx, rx) = std::sync::mpsc::channel();
    let getter = std::thread::spawn(move || {
        let dsk = graph! { "nap" => ("sleep", 5), "after" => ("inc", 1), "z" => ("identity", vec!["nap", "after"]) };
        let _ = tx.send(client.get(&dsk, "z"));
    });
    wait_until("the sleep task to run", DEADLINE, || {
        let status = observer.status().expect("status");
        (status.processing > 0).then_some(())
    });
    drop(observer);
    let scheduler = cluster.address_to_clients().to_owned();
    cluster.kill_scheduler();
    let result = rx
        .recv_timeout(DEADLINE)
        .expect("the get must return after the scheduler dies");
    match result {
        Err(ClientError::SchedulerLost { address, .. }) => assert_eq!(address, scheduler),
        other => panic!("expected SchedulerLost, got {other:?}"),
    }
    getter.join().unwrap();
}

#[test]
fn erroring_tasks_do_not_kill_workers() {
    let mut cluster = TestCluster::new();
    let client = cluster.client();
    let pids_before: BTreeSet<u32> = client.workers().unwrap().iter().map(|w| w.pid).collect();
    assert_eq!(
        pids_before,
        cluster.worker_pids().into_iter().collect::<BTreeSet<_>>()
    );
    let dsk = graph! {
        "fails" => ("fail", "on purpose"),
        "div0" => ("div", 1, 0),
        "bad_args" => ("inc", "not-a-number"),
        "too_many" => ("inc", 1, 2),
        "unknown" => ("nobody_registered_this", 1),
        "overflow" => ("add", i64::MAX, 1),
        "empty_max" => ("max", Vec::<i64>::new()),
        "negative_sleep" => ("sleep", -1),
    };
    let expected = [
        ("fails", TaskErrorKind::Failed),
        ("div0", TaskErrorKind::Failed),
        ("bad_args", TaskErrorKind::BadArguments),
        ("too_many", TaskErrorKind::BadArguments),
        ("unknown", TaskErrorKind::UnknownFunction),
        ("overflow", TaskErrorKind::Failed),
        ("empty_max", TaskErrorKind::Failed),
        ("negative_sleep", TaskErrorKind::BadArguments),
    ];
    // Twice each, so both workers are likely to run some of them.
    for _ in 0..2 {
        for (k, kind) in expected {
            let (key, error) = task_error(get(&client, &dsk, k));
            assert_eq!(key, Key::from(k));
            assert_eq!(error.kind, kind, "{k}: {error}");
        }
    }
    let workers = client.workers().unwrap();
    assert_eq!(workers.len(), 2);
    let pids_after: BTreeSet<u32> = workers.iter().map(|w| w.pid).collect();
    assert_eq!(pids_after, pids_before);
    for i in 0..2 {
        assert!(cluster.worker_running(i), "worker {i} exited");
    }
    assert_seed_works(&client);
}

#[test]
fn a_get_survives_a_worker_killed_mid_computation() {
    let mut options = ClusterOptions::default().worker_args(&["--heartbeat-interval-ms", "100"]);
    options.scheduler_args = vec!["--heartbeat-timeout-ms".into(), "1500".into()];
    let mut cluster = options.start();
    let client = Arc::new(cluster.client());
    let mut dsk = Graph::new();
    let mut parts = Vec::new();
    for i in 0..12i64 {
        dsk.insert(("slow", i), ("slow_inc", i, 0.2));
        parts.push(key(("slow", i)));
    }
    dsk.insert("total", ("sum", parts));
    let (tx, rx) = std::sync::mpsc::channel();
    let getter = {
        let client = client.clone();
        std::thread::spawn(move || {
            let _ = tx.send(get(&client, &dsk, "total"));
        })
    };
    wait_until("both workers to be busy", DEADLINE, || {
        let workers = client.workers().expect("status");
        (workers.len() == 2 && workers.iter().all(|w| w.processing > 0)).then_some(())
    });
    cluster.kill_worker(0);
    let result = rx.recv_timeout(DEADLINE).expect("the get must finish");
    assert_eq!(result, Ok(Value::from((1..=12i64).sum::<i64>())));
    getter.join().unwrap();
    // The dead worker is gone from the cluster; the other one serves on.
    wait_until("the dead worker to be removed", DEADLINE, || {
        (client.workers().expect("status").len() == 1).then_some(())
    });
    assert_eq!(client.workers().unwrap()[0].pid, cluster.worker_pids()[0]);
    assert_seed_works(&client);
}

/// The test functions are opt-in (`zask-worker --test-functions`): on a stock worker,
/// `exit_process` is an unknown function, so a graph cannot end the worker process.
#[test]
fn exit_process_on_a_stock_worker_is_an_unknown_function_and_the_worker_lives() {
    let mut cluster = TestCluster::options().workers(1).start();
    let client = cluster.client();
    let pid = client.workers().expect("status")[0].pid;
    for (name, args) in [
        ("exit_process", vec![Node::from(3)]),
        ("counted_inc", vec![literal("/tmp/x"), Node::from(1)]),
        ("wait_for_file", vec![literal("/nonexistent")]),
        ("alloc", vec![Node::from(1_000_000_000)]),
    ] {
        let mut dsk = Graph::new();
        dsk.insert("x", zask::graph::task(name, args));
        let (key, error) = task_error(get(&client, &dsk, "x"));
        assert_eq!(key, Key::from("x"));
        assert_eq!(
            error.kind,
            TaskErrorKind::UnknownFunction,
            "{name}: {error}"
        );
        assert!(error.message.contains(name), "{error}");
    }
    assert!(cluster.worker_running(0), "the worker process must live on");
    assert_seed_works(&client);
    assert_eq!(client.workers().expect("status")[0].pid, pid);
}

/// A result bigger than the message limit fails its task at once with an error naming its
/// size and the limit, instead of being dropped by ZeroMQ on the way (which left the get
/// waiting forever).
#[test]
fn a_result_over_the_message_limit_fails_its_get_promptly_naming_its_size() {
    let limit = "100000";
    let cluster = TestCluster::options()
        .workers(1)
        .with_test_functions()
        .scheduler_args(&["--max-message-bytes", limit])
        .worker_args(&["--max-message-bytes", limit])
        .start();
    let client = cluster.client();
    let started = std::time::Instant::now();
    let (key, error) = task_error(get(&client, &graph! { "big" => ("alloc", 200_000) }, "big"));
    let took = started.elapsed();
    assert_eq!(key, Key::from("big"));
    // "the result is N bytes, more than the message limit of 100000 bytes ..."
    let size: u64 = error
        .message
        .strip_prefix("the result is ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in {error}"));
    assert!(size >= 200_000, "{error}");
    assert!(error.message.contains("limit of 100000 bytes"), "{error}");
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    // Under the limit all is well, on the same worker.
    let (ok, n) = (graph! { "small" => ("alloc", 50_000) }, 50_000);
    assert_eq!(get(&client, &ok, "small"), Ok(Value::Bytes(vec![0; n])));
    assert_seed_works(&client);
}

/// A task error of 100,000 characters reaches the client cut to the documented limit, the cut
/// marked.
#[test]
fn a_very_long_task_error_arrives_cut() {
    let cluster = TestCluster::options()
        .workers(1)
        .with_test_functions()
        .start();
    let client = cluster.client();
    let dsk = graph! { "x" => ("fail_with_length", 100_000) };
    let (_, error) = task_error(get(&client, &dsk, "x"));
    let max = zask::protocol::TASK_ERROR_BYTES_MAX;
    assert!(error.message.len() <= max, "{} bytes", error.message.len());
    // Cut once, at the worker: the marker counts what was left out of the original.
    let kept = error.message.find('…').expect("a marked cut");
    assert!(kept > max - 100, "kept {kept} bytes");
    assert_eq!(error.message[..kept], "e".repeat(kept));
    assert_eq!(
        error.message[kept..],
        format!("… [cut: {} more bytes]", 100_000 - kept)
    );
}

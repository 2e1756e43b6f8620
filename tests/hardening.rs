//! Real processes against the things that used to knock a cluster over: users who reuse key
//! names, collections replaced while others compute them, and a stranger on the worker port
//! that speaks the protocol and lies.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{run, wait_until, TestCluster, DEADLINE, ZASK};
use zask::graph::key;
use zask::protocol::codec::{decode, encode, encode_value};
use zask::protocol::{
    ComputeTask, ErredTask, FinishedTask, FromWorker, TaskError, TaskErrorKind, ToWorker,
    WorkerAddress, WorkerRegistration, WorkerSelector, PROTOCOL_VERSION,
};
use zask::security::Role;
use zask::{graph, Collection, GetOptions, Key, Value};

/// The user report behind the hardening issue, as the user ran it: a kept `y`, then a graph
/// that defines `y` and `x` again. The scheduler used to panic on the second command.
#[test]
fn kept_key_redefined_by_the_next_graph_does_not_crash_the_scheduler() {
    let mut cluster = TestCluster::new();
    let dir = cluster.dir().to_owned();
    let first = dir.join("first.json");
    let second = dir.join("second.json");
    std::fs::write(&first, r#"{"x": 1, "y": {"task": ["inc", "x"]}}"#).unwrap();
    std::fs::write(
        &second,
        r#"{"y": {"task": ["inc", 5]}, "x": 3, "z": {"task": ["add", "y", "x"]}}"#,
    )
    .unwrap();
    let scheduler = cluster.address_to_clients().to_owned();
    let security = cluster.zask_security_args();
    let zask_get = |args: &[&str]| {
        let mut all = vec!["get", "--scheduler", scheduler.as_str()];
        all.extend(security.iter().map(String::as_str));
        all.extend_from_slice(args);
        let out = run(ZASK, &all);
        assert_eq!(out.code(), Some(0), "zask {all:?}: {}", out.stderr);
        out.stdout.trim().to_owned()
    };
    assert_eq!(
        zask_get(&["--keep-results", first.to_str().unwrap(), "y"]),
        "2"
    );
    assert_eq!(zask_get(&[second.to_str().unwrap(), "z"]), "9");
    // And the next one works too: the scheduler is alive and the kept y is untouched.
    assert_eq!(zask_get(&[second.to_str().unwrap(), "z"]), "9");
    let client = cluster.client();
    assert_eq!(client.gather("y").unwrap(), Value::from(2));
    assert!(cluster.worker_running(0));
}

/// Two clients keep replacing a stored collection (same key names, other definitions) while
/// two others fetch it and compute it: every reader gets one of the writers' values, and no
/// request fails.
#[test]
fn collection_replaced_while_others_compute_it() {
    let cluster = TestCluster::new();
    let writer_graph = |base: i64| {
        let g = graph! { "x" => base, "y" => ("inc", "x"), "total" => ("add", "y", "x") };
        Collection::from_graph(&g, vec![Key::from("total")])
    };
    let totals = [2 * 10 + 1, 2 * 1000 + 1];
    // The writers replace each other's collection: an operator's right (see "Who owns what"
    // in the README). These clients are operators: without authentication every connection
    // is; with keys they need the operator's.
    let first = cluster.client();
    first.set_collection("shared", &writer_graph(10)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (i, base) in [10i64, 1000].into_iter().enumerate() {
        let client = cluster.client();
        let stop = stop.clone();
        let collection = writer_graph(base);
        threads.push(std::thread::spawn(move || {
            let mut writes = 0u32;
            while !stop.load(Ordering::SeqCst) {
                client.set_collection("shared", &collection).unwrap();
                writes += 1;
                std::thread::sleep(Duration::from_millis(1 + i as u64));
            }
            (writes, 0u32)
        }));
    }
    for _ in 0..2 {
        let client = cluster.client();
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let c = client.get_collection("shared").unwrap();
                let value = client
                    .get_with(
                        &c.to_graph(),
                        c.keys.clone(),
                        GetOptions {
                            timeout: Some(DEADLINE),
                            ..GetOptions::default()
                        },
                    )
                    .unwrap_or_else(|e| panic!("a reader's get failed: {e}"));
                let total = value.as_list().unwrap()[0].as_i64().unwrap();
                assert!(totals.contains(&total), "a value no writer wrote: {total}");
                reads += 1;
            }
            (0, reads)
        }));
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    let (mut writes, mut reads) = (0, 0);
    for t in threads {
        let (w, r) = t.join().expect("no client thread failed");
        writes += w;
        reads += r;
    }
    assert!(writes > 10 && reads > 10, "writes {writes}, reads {reads}");
}

/// A stranger connects to the worker port, registers as a worker (nothing stops that before
/// authentication exists) and lies: it reports a result for a task it was never given, says
/// the real holder of a kept value lacks it, claims to be the real worker's nanny and reports
/// it dead. None of it changes anything.
#[test]
fn a_fake_worker_cannot_forge_results_drop_copies_or_remove_workers() {
    let cluster = TestCluster::with_workers(1);
    let client = cluster.client();
    let real = WorkerAddress::from(cluster.worker_addresses()[0].clone());
    let kept = GetOptions {
        keep_results: true,
        ..GetOptions::default()
    };
    let dsk = graph! { "x" => 41, "y" => ("inc", "x") };
    assert_eq!(client.get_with(&dsk, "y", kept).unwrap(), Value::from(42));

    let ctx = zmq::Context::new();
    let fake = ctx.socket(zmq::DEALER).unwrap();
    fake.set_linger(0).unwrap();
    // A peer with the worker key (authentication says who may register, not who is honest).
    cluster.authenticate(&fake, Role::Worker);
    fake.connect(cluster.address_to_workers()).unwrap();
    let send = |msg: FromWorker, frames: Vec<Vec<u8>>| {
        let mut parts = vec![encode(&msg)];
        parts.extend(frames);
        fake.send_multipart(parts, 0).unwrap();
    };
    // Waits for the next Compute sent to the fake; answers pings meanwhile.
    let next_compute = || -> Vec<ComputeTask> {
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            if fake.poll(zmq::POLLIN, 100).unwrap() == 0 {
                continue;
            }
            let frames = fake.recv_multipart(0).unwrap();
            match decode::<ToWorker>(&frames[0]).unwrap() {
                ToWorker::Compute(tasks) => return tasks,
                ToWorker::Ping => send(FromWorker::Heartbeat, vec![]),
                _ => {}
            }
        }
        panic!("the fake worker was given no task within {DEADLINE:?}");
    };
    send(
        FromWorker::Register(WorkerRegistration {
            protocol_version: PROTOCOL_VERSION,
            address: "tcp://127.0.0.1:1".into(),
            name: "fake".into(),
            nthreads: 1,
            memory_limit_bytes: 0,
            pid: 1,
            store: "memory".into(),
            keys: vec![],
            nanny_token: None,
            runs_python: false,
        }),
        vec![],
    );
    wait_until("the fake worker to register", DEADLINE, || {
        (client.workers().unwrap().len() == 2).then_some(())
    });
    // A task that may only run on the fake, using the kept y: the fake learns y's wire key.
    let other = Arc::new(cluster.client());
    let getter = {
        let other = other.clone();
        std::thread::spawn(move || {
            let mut g = zask::Graph::new();
            g.insert("w", zask::Node::Task("inc".into(), vec![key("y")]));
            let options = GetOptions {
                restrictions: vec![(Key::from("w"), vec![WorkerSelector::Name("fake".into())])],
                timeout: Some(DEADLINE),
                ..GetOptions::default()
            };
            other.get_with(&g, "w", options)
        })
    };
    let w = next_compute().remove(0);
    let y_key = w.dependencies[0].0.clone();
    assert_eq!(w.dependencies[0].1, vec![real.clone()]);
    // A forged result for y, which the fake was never given.
    send(
        FromWorker::Finished(vec![FinishedTask {
            key: y_key.clone(),
            nbytes: 3,
            fetched: vec![],
            has_value: true,
        }]),
        vec![encode_value(&Value::from(666))],
    );
    // "The real worker does not have y": the scheduler asks the real worker, which has it.
    send(
        FromWorker::MissingDependency {
            key: w.key.clone(),
            dependency: y_key.clone(),
            holders: vec![real.clone()],
            unresponsive: vec![],
        },
        vec![],
    );
    let again = next_compute().remove(0);
    assert_eq!(
        again.dependencies,
        vec![(y_key, vec![real.clone()])],
        "the real holder is still the holder"
    );
    send(
        FromWorker::NannyOf {
            worker_address: real.clone(),
            token: 12345,
        },
        vec![],
    );
    send(
        FromWorker::WorkerDied {
            worker_address: real.clone(),
            token: 12345,
            expected: false,
            reason: "forged".into(),
        },
        vec![],
    );
    send(
        FromWorker::Erred(vec![ErredTask {
            key: again.key,
            error: TaskError {
                kind: TaskErrorKind::Failed,
                message: "the fake gives up".into(),
            },
        }]),
        vec![],
    );
    let result = getter.join().unwrap();
    assert!(result.is_err(), "{result:?}");
    send(FromWorker::Goodbye, vec![]);
    wait_until("the fake worker to leave", DEADLINE, || {
        (client.workers().unwrap().len() == 1).then_some(())
    });
    let workers = client.workers().unwrap();
    assert_eq!(workers[0].address, real, "the real worker was not removed");
    let who_has = client.who_has(vec![Key::from("y")]).unwrap();
    assert_eq!(
        who_has[&Key::from("y")],
        vec![real],
        "its copy was not dropped"
    );
    assert_eq!(client.gather("y").unwrap(), Value::from(42));
    assert_eq!(
        client.get(&graph! { "v" => ("inc", 1) }, "v").unwrap(),
        Value::from(2)
    );
}

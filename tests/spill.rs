//! Spilling on real processes: a worker limited to 300 MB asked for 600 MB of results keeps
//! every one of them readable (they spill to its spill directory), is never restarted, and
//! says where each value is; a spill directory that cannot be written fails loudly and loses
//! nothing.

mod common;

use common::{run, TestCluster, DEADLINE, ZASK};
use zask::graph::key;
use zask::protocol::{RequestError, TaskErrorKind};
use zask::protocol::{WorkerName, WorkerSelector};
use zask::{ClientError, Collection, GetOptions, Graph, Key, Node, Value};

/// The tests here move hundreds of MB each (through CurveZMQ, in a debug build, on machines
/// with few cores): run at once, they can starve a scheduler past the client's 5 s ping
/// timeout. Each takes this lock, so they run one after the other.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding it does not stop the others.
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const MB_50: usize = 50_000_000;

/// What the test function `pattern(nbytes, seed)` makes.
fn pattern(nbytes: usize, seed: u64) -> Vec<u8> {
    // One period, copied over and over: fast even in an unoptimised build.
    let period: Vec<u8> = (0..251u64)
        .map(|j| ((j + seed % 251) % 251) as u8)
        .collect();
    let mut bytes = Vec::with_capacity(nbytes);
    while bytes.len() + period.len() <= nbytes {
        bytes.extend_from_slice(&period);
    }
    bytes.extend_from_slice(&period[..nbytes - bytes.len()]);
    bytes
}

/// `n` tasks `p-0` .. `p-{n-1}`, each making 50 MB of its own pattern.
fn patterns(n: u64) -> (Graph, Vec<Key>) {
    let mut g = Graph::new();
    let mut keys = Vec::new();
    for i in 0..n {
        let name = format!("p-{i}");
        g.insert(
            name.as_str(),
            Node::Task(
                "pattern".into(),
                vec![Node::from(MB_50 as i64), Node::from(i as i64)],
            ),
        );
        keys.push(Key::from(name.as_str()));
    }
    (g, keys)
}

/// The done-when of memory limits that hold: under its nanny, which restarts it past 95% of
/// its limit in resident memory, the worker keeps all 600 MB and gives every byte back.
/// Plaintext (`insecure`): CurveZMQ encrypts a message in copies of its own (up to three
/// of a 50 MB value while it is sent), which this limit has no room for beside 180 MB in
/// memory; README's memory section says so.
#[test]
fn a_worker_limited_to_300mb_asked_for_600mb_spills_and_gives_every_value_back() {
    let _one_at_a_time = one_at_a_time();
    let mut cluster = TestCluster::options()
        .workers(1)
        .nthreads(1)
        .insecure()
        .with_nanny()
        .with_test_functions()
        .worker_args(&["--memory-limit", "300MB", "--spill-dir", "{dir}/spill"])
        .start();
    let client = cluster.client();
    let first_pid = client.workers().unwrap()[0].pid;

    // 12 results of 50 MB, kept on the worker.
    let (g, keys) = patterns(12);
    client
        .persist(&Collection::from_graph(&g, keys.clone()))
        .unwrap();

    // In memory at most the target (60% of 300 MB); the rest on disk, in the spill directory.
    // (The worker reports what moved with its next heartbeat.)
    let w = common::wait_until("the worker to report 600 MB held", DEADLINE, || {
        let w = client.workers().unwrap().remove(0);
        (w.memory.memory_bytes + w.memory.spilled_bytes >= 600_000_000).then_some(w)
    });
    assert_eq!(w.pid, first_pid, "the worker was never restarted");
    assert!(!w.memory.paused);
    assert!(w.memory.memory_bytes <= 180_000_000, "{:?}", w.memory);
    assert!(w.memory.spilled_bytes >= 420_000_000, "{:?}", w.memory);
    let on_disk = &w.memory.spilled_keys;
    assert!(on_disk.len() >= 9, "{:?}", w.memory);
    let in_memory: Vec<&Key> = keys.iter().filter(|k| !on_disk.contains(k)).collect();
    assert_eq!(in_memory.len() + on_disk.len(), 12, "{:?}", w.memory);
    let spill_dir = cluster.dir().join("spill");
    let files: usize = std::fs::read_dir(&spill_dir)
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(files, on_disk.len());
    let log = cluster.worker_proc(0).stderr();
    let decision = log
        .lines()
        .find(|l| {
            l.contains("spilling ") && l.contains("in memory") && l.contains("> target 180 MB")
        })
        .unwrap_or_else(|| panic!("no spill decision logged:\n{log}"));
    assert!(decision.contains(" result"), "{decision}");

    // `zask who-has --where` says where each copy is.
    let mut args = vec![
        "who-has",
        "--where",
        "--scheduler",
        cluster.address_to_clients(),
    ];
    let security = cluster.zask_security_args();
    args.extend(security.iter().map(String::as_str));
    let (spilled, kept) = (on_disk[0].to_string(), in_memory[0].to_string());
    args.extend([spilled.as_str(), kept.as_str()]);
    let out = run(ZASK, &args);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let where_: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let address = &w.address.to_string();
    assert_eq!(where_[&spilled][address], "disk", "{where_}");
    assert_eq!(where_[&kept][address], "memory", "{where_}");

    // Every value comes back whole: gathered one by one, each checked byte for byte.
    for (i, k) in keys.iter().enumerate() {
        match client.gather(k.clone()) {
            Ok(Value::Bytes(b)) => {
                assert!(b == pattern(MB_50, i as u64), "{k:?} came back different")
            }
            other => panic!("{k:?}: {other:?}"),
        }
    }
    // A task reads spilled inputs too.
    let mut lengths = Graph::new();
    lengths.insert(
        "len-0",
        Node::Task("length".into(), vec![key(on_disk[0].clone())]),
    );
    lengths.insert(
        "len-1",
        Node::Task("length".into(), vec![key(on_disk[1].clone())]),
    );
    let options = GetOptions {
        timeout: Some(DEADLINE),
        ..GetOptions::default()
    };
    assert_eq!(
        client.get_with(&lengths, vec!["len-0", "len-1"], options),
        Ok(Value::from(vec![MB_50 as i64, MB_50 as i64]))
    );
    let w = client.workers().unwrap().remove(0);
    assert_eq!(w.pid, first_pid, "the worker was never restarted");
    assert!(!log.contains("restarting"), "{log}");

    // Released values leave the disk too.
    client.release(keys).unwrap();
    common::wait_until("the spill files to be removed", DEADLINE, || {
        let left: usize = std::fs::read_dir(&spill_dir)
            .unwrap()
            .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
            .sum();
        (left == 0).then_some(())
    });
}

#[test]
fn a_spill_directory_that_cannot_be_made_stops_the_worker_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let spill = file.join("spill");
    let out = run(
        common::WORKER,
        &[
            "tcp://127.0.0.1:1",
            "--insecure",
            "--no-nanny",
            "--memory-limit",
            "300MB",
            "--spill-dir",
            spill.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("spill disk error at"), "{}", out.stderr);
    assert!(out.stderr.contains("a-file"), "{}", out.stderr);
}

/// The spill directory turns unwritable while the worker runs (it is replaced by a regular
/// file, which stops root too): the first spill fails with an error in the log, what is in
/// memory stays readable, and a result that cannot fit then fails its task with an error
/// naming the spill failure. 110 MB results: the second passes the target (180 MB) and fails
/// to spill, the third cannot fit beside the two (330 MB > 300 MB).
#[test]
fn a_spill_disk_that_fails_is_logged_and_loses_nothing_in_memory() {
    let _one_at_a_time = one_at_a_time();
    const MB_110: usize = 110_000_000;
    let mut cluster = TestCluster::options()
        .workers(1)
        .nthreads(1)
        .with_test_functions()
        .worker_args(&["--memory-limit", "300MB", "--spill-dir", "{dir}/spill"])
        .start();
    let client = cluster.client();
    // Break the worker's own spill directory.
    let spill = cluster.dir().join("spill");
    let own = std::fs::read_dir(&spill)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_dir_all(&own).unwrap();
    std::fs::write(&own, b"not a directory any more").unwrap();

    let kept = GetOptions {
        keep_results: true,
        timeout: Some(DEADLINE),
        ..GetOptions::default()
    };
    let one = |i: u64| {
        let mut g = Graph::new();
        g.insert(
            format!("p-{i}").as_str(),
            Node::Task(
                "pattern".into(),
                vec![Node::from(MB_110 as i64), Node::from(i as i64)],
            ),
        );
        g
    };
    for i in 0..2u64 {
        let name = format!("p-{i}");
        match client.get_with(&one(i), name.as_str(), kept.clone()) {
            Ok(Value::Bytes(b)) => assert!(b == pattern(MB_110, i), "{name} came back different"),
            other => panic!("{name}: {other:?}"),
        }
    }
    match client.get_with(&one(2), "p-2", kept) {
        Err(ClientError::Request(RequestError::Task { key, error })) => {
            assert_eq!(key, Key::from("p-2"));
            assert_eq!(error.kind, TaskErrorKind::MemoryLimit, "{error}");
            assert!(
                error
                    .message
                    .contains("spilling to disk failed: spill disk error at"),
                "{error}"
            );
            assert!(error.message.contains("holds 220000"), "{error}");
        }
        other => panic!("p-2: expected a memory limit error, got {other:?}"),
    }
    let log = cluster.worker_proc(0).stderr();
    assert!(
        log.contains("spilling to disk failed: spill disk error at"),
        "{log}"
    );
    assert!(log.contains("keeping 1 result in memory"), "{log}");
    // Everything kept is still readable, from memory.
    for i in 0..2u64 {
        let name = format!("p-{i}");
        match client.gather(name.as_str()) {
            Ok(Value::Bytes(b)) => assert!(b == pattern(MB_110, i), "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(cluster.worker_running(0));
    let w = client.workers().unwrap().remove(0);
    assert!(w.memory.spilled_keys.is_empty(), "{:?}", w.memory);
    assert_eq!(w.memory.spilled_bytes, 0, "{:?}", w.memory);
    std::fs::remove_file(&own).unwrap();
}

/// A peer fetches a spilled value like any other: values spilled on one worker are inputs of
/// tasks restricted to another.
#[test]
fn a_peer_fetches_a_spilled_value() {
    let _one_at_a_time = one_at_a_time();
    let cluster = TestCluster::options()
        .workers(2)
        .nthreads(1)
        .with_test_functions()
        .worker_args(&[
            "--memory-limit",
            "300MB",
            "--spill-dir",
            "{dir}/spill-{i}",
            "--name",
            "w{i}",
        ])
        .start();
    let client = cluster.client();
    let on = |name: &str| vec![WorkerSelector::Name(WorkerName::from(name))];
    // Five 50 MB values on w0: past its 180 MB target, the oldest spill.
    let (g, keys) = patterns(5);
    let kept = GetOptions {
        keep_results: true,
        timeout: Some(DEADLINE),
        restrictions: keys.iter().map(|k| (k.clone(), on("w0"))).collect(),
    };
    client
        .get_with(
            &g,
            keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            kept,
        )
        .unwrap();
    let w0 = common::wait_until("w0 to report what it spilled", DEADLINE, || {
        let workers = client.workers().unwrap();
        let w0 = workers.into_iter().find(|w| w.name == "w0")?;
        (!w0.memory.spilled_keys.is_empty()).then_some(w0)
    });
    let spilled = w0.memory.spilled_keys[0].clone();
    // A task on w1 reads it: w1 holds no copy, so it fetches it from w0, which reads it from
    // disk.
    let mut g = Graph::new();
    g.insert(
        "len",
        Node::Task("length".into(), vec![key(spilled.clone())]),
    );
    let options = GetOptions {
        timeout: Some(DEADLINE),
        restrictions: vec![(Key::from("len"), on("w1"))],
        ..GetOptions::default()
    };
    assert_eq!(
        client.get_with(&g, "len", options),
        Ok(Value::from(MB_50 as i64))
    );
    let holders = client.who_has(spilled.clone()).unwrap();
    assert_eq!(
        holders[&spilled].len(),
        2,
        "w1 holds a copy now: {holders:?}"
    );
}

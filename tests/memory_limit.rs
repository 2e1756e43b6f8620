//! `zask-worker --memory-limit` on real processes: a worker that may not spill (`--no-spill`)
//! asked for more than its limit keeps every value it holds readable, fails the results that
//! do not fit with a clear `MemoryLimit` error, and stays alive; a worker whose resident memory
//! passes 95% of its limit is restarted by its nanny, saying why, and the scheduler reruns its
//! work. Spilling is `tests/spill.rs`.

mod common;

use std::sync::Arc;

use common::{run, wait_until, TestCluster, DEADLINE, WORKER};
use zask::graph::key;
use zask::protocol::{RequestError, TaskErrorKind};
use zask::{graph, ClientError, GetOptions, Graph, Key, Node, Value};

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

const MB_100: i64 = 100_000_000;

#[test]
fn a_worker_asked_for_600mb_past_its_300mb_limit_fails_what_does_not_fit_and_keeps_the_rest() {
    let _one_at_a_time = one_at_a_time();
    let mut cluster = TestCluster::options()
        .workers(1)
        .with_test_functions()
        .worker_args(&["--memory-limit", "300MB", "--no-spill"])
        .start();
    let client = cluster.client();
    let workers = client.workers().unwrap();
    assert_eq!(workers[0].memory_limit_bytes, 300_000_000);

    let kept = GetOptions {
        keep_results: true,
        timeout: Some(DEADLINE),
        ..GetOptions::default()
    };
    let mut stored = Vec::new();
    let mut failed = Vec::new();
    for i in 0..6 {
        let name = format!("a{i}");
        let dsk = graph! { name.as_str() => ("alloc", MB_100) };
        match client.get_with(&dsk, name.as_str(), kept.clone()) {
            Ok(Value::Bytes(b)) => {
                assert_eq!(b.len(), MB_100 as usize);
                assert!(failed.is_empty(), "{name} fitted after a failure");
                stored.push(name);
            }
            Err(ClientError::Request(RequestError::Task { key, error })) => {
                assert_eq!(key, Key::from(name.as_str()));
                assert_eq!(error.kind, TaskErrorKind::MemoryLimit, "{error}");
                // The message names the limit, what the worker holds and the result's size.
                assert!(
                    error.message.contains("limit of 300000000 bytes"),
                    "{error}"
                );
                assert!(error.message.contains("holds 2000000"), "{error}");
                assert!(error.message.contains("is 1000000"), "{error}");
                failed.push(name);
            }
            other => panic!("{name}: expected 100 MB or a memory limit error, got {other:?}"),
        }
    }
    // Each value is a little over 100 MB once encoded: two fit in 300 MB, the rest fail.
    assert_eq!(stored, ["a0", "a1"]);
    assert_eq!(failed.len(), 4);
    assert!(cluster.worker_running(0), "the worker was killed");

    // Every kept value is still readable, by a task on the worker.
    let mut lengths = Graph::new();
    for name in &stored {
        lengths.insert(
            format!("len-{name}").as_str(),
            Node::Task("length".into(), vec![key(name.as_str())]),
        );
    }
    let keys: Vec<String> = stored.iter().map(|n| format!("len-{n}")).collect();
    let options = GetOptions {
        timeout: Some(DEADLINE),
        ..GetOptions::default()
    };
    assert_eq!(
        client.get_with(&lengths, keys, options),
        Ok(Value::from(vec![MB_100, MB_100]))
    );
    // What did not fit was not kept.
    for name in &failed {
        let holders = client.who_has(name.as_str()).unwrap();
        assert!(
            holders.values().all(Vec::is_empty),
            "{name} is held: {holders:?}"
        );
    }
    assert!(cluster.worker_running(0));
}

/// A worker paused past 80% of its limit tells the scheduler, which gives it no new task (the
/// task waits, ready, and status shows the pause) until the client releases what it keeps and
/// the worker resumes: nobody waits forever on a paused worker.
#[test]
fn a_paused_worker_is_given_the_task_once_a_release_brings_it_under_the_pause_fraction() {
    let _one_at_a_time = one_at_a_time();
    let cluster = TestCluster::options()
        .workers(1)
        .with_test_functions()
        .worker_args(&["--memory-limit", "300MB", "--no-spill"])
        .start();
    let client = Arc::new(cluster.client());
    let kept = GetOptions {
        keep_results: true,
        timeout: Some(DEADLINE),
        ..GetOptions::default()
    };
    // 250 MB held: past 240 MB (80% of 300 MB), so the worker pauses.
    let big = graph! { "big" => ("alloc", 250_000_000i64) };
    let b = match client.get_with(&big, "big", kept) {
        Ok(Value::Bytes(b)) => b,
        other => panic!("the 250 MB value did not come back: {other:?}"),
    };
    assert_eq!(b.len(), 250_000_000);
    drop(b);

    let getter = {
        let client = client.clone();
        std::thread::spawn(move || {
            let options = GetOptions {
                timeout: Some(DEADLINE),
                ..GetOptions::default()
            };
            client.get_with(&graph! { "small" => ("inc", 1) }, "small", options)
        })
    };
    wait_until(
        "the small task to wait, ready, while the worker is paused",
        DEADLINE,
        || {
            let status = client.status().unwrap();
            let w = &status.workers[0];
            (w.memory.paused && status.ready == 1 && w.processing == 0).then_some(())
        },
    );
    let w = client.workers().unwrap().remove(0);
    assert!(w.memory.memory_bytes >= 250_000_000, "{:?}", w.memory);
    client.release("big").unwrap();
    assert_eq!(getter.join().unwrap(), Ok(Value::from(2)));
}

/// Every spelling the flag refuses is one line on stderr and exit code 2; a fraction is of
/// the machine's memory as /proc/meminfo says.
#[test]
fn memory_limit_spellings_are_checked_and_a_fraction_is_of_the_machine() {
    for bad in ["300XB", "1.5", "abc", "-1", ""] {
        let out = run(
            WORKER,
            &["tcp://127.0.0.1:1", "--insecure", "--memory-limit", bad],
        );
        assert_eq!(out.code(), Some(2), "{bad:?}: {}", out.stderr);
        assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "{bad:?}: {}",
            out.stderr
        );
        assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    }
    let cluster = TestCluster::options()
        .workers(1)
        .worker_args(&["--memory-limit", "0.25"])
        .start();
    let machine = zask::worker::memory::machine_memory_bytes().unwrap();
    let workers = cluster.client().workers().unwrap();
    assert_eq!(
        workers[0].memory_limit_bytes,
        (machine as f64 * 0.25) as u64
    );
}

/// The nanny watches its worker's resident memory: a task holding 200 MB inside a worker
/// limited to 100 MB gets its worker restarted (logged, with the figures), the scheduler
/// treats that as a lost worker and reruns the task elsewhere until it is blamed, and the new
/// worker process runs the next graph.
#[test]
fn a_worker_past_95_percent_of_its_limit_in_resident_memory_is_restarted_by_its_nanny() {
    let _one_at_a_time = one_at_a_time();
    let mut cluster = TestCluster::options()
        .workers(1)
        .nthreads(1)
        .with_nanny()
        .with_test_functions()
        .scheduler_args(&["--allowed-failures", "1"])
        .worker_args(&["--memory-limit", "100MB"])
        .start();
    let client = cluster.client();
    let first_pid = client.workers().unwrap()[0].pid;
    let options = GetOptions {
        timeout: Some(DEADLINE),
        ..GetOptions::default()
    };
    let hog = graph! { "hog" => ("hold", 200_000_000i64, 30) };
    match client.get_with(&hog, "hog", options.clone()) {
        Err(ClientError::Request(RequestError::Task { key, error })) => {
            assert_eq!(key, Key::from("hog"));
            assert_eq!(error.kind, TaskErrorKind::KilledWorker, "{error}");
        }
        other => panic!("expected the task to be blamed for its workers' deaths, got {other:?}"),
    }
    let log = cluster.worker_proc(0).stderr();
    let restarts = log
        .lines()
        .filter(|l| l.contains("MB of its 100 MB limit (more than 95%): restarting"))
        .count();
    assert_eq!(
        restarts, 2,
        "one restart per loss (allowed failures 1):\n{log}"
    );
    assert!(log.contains("worker used "), "{log}");
    assert!(cluster.worker_running(0), "the nanny lives on");

    // A new worker process took over and runs what comes next.
    let pid = wait_until("a new worker process to register", DEADLINE, || {
        let workers = client.workers().unwrap();
        (workers.len() == 1 && workers[0].pid != first_pid).then(|| workers[0].pid)
    });
    assert_ne!(pid, first_pid);
    assert_eq!(
        client.get_with(&graph! { "small" => ("inc", 1) }, "small", options),
        Ok(Value::from(2))
    );
}

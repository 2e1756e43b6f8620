//! `zask-worker --memory-limit` on real processes: a worker asked for more than its limit
//! keeps every value it holds readable, fails the results that do not fit with a clear
//! `MemoryLimit` error, and stays alive.

mod common;

use std::sync::Arc;

use common::{run, wait_until, TestCluster, DEADLINE, WORKER};
use zask::graph::key;
use zask::protocol::{RequestError, TaskErrorKind};
use zask::{graph, ClientError, GetOptions, Graph, Key, Node, Value};

const MB_100: i64 = 100_000_000;

#[test]
fn a_worker_asked_for_600mb_past_its_300mb_limit_fails_what_does_not_fit_and_keeps_the_rest() {
    let mut cluster = TestCluster::options()
        .workers(1)
        .with_test_functions()
        .worker_args(&["--memory-limit", "300MB"])
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

/// A worker paused past 80% of its limit, with a task queued, starts it once the client
/// releases what it keeps: the scheduler does not wait forever on a paused worker.
#[test]
fn a_paused_worker_runs_its_queued_task_once_a_release_brings_it_under_the_pause_fraction() {
    let cluster = TestCluster::options()
        .workers(1)
        .with_test_functions()
        .worker_args(&["--memory-limit", "300MB"])
        .start();
    let client = Arc::new(cluster.client());
    let kept = GetOptions {
        keep_results: true,
        timeout: Some(DEADLINE),
        ..GetOptions::default()
    };
    // 250 MB held: past 240 MB (80% of 300 MB), so the worker pauses.
    let big = graph! { "big" => ("alloc", 250_000_000i64) };
    let Ok(Value::Bytes(b)) = client.get_with(&big, "big", kept) else {
        panic!("the 250 MB value did not come back");
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
        "the small task to be queued on the worker",
        DEADLINE,
        || {
            let workers = client.workers().unwrap();
            (workers[0].processing == 1).then_some(())
        },
    );
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

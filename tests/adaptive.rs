//! Adaptive scaling end to end on a LocalCluster (worker threads, and worker processes under
//! nannies, real sockets): a burst of slow tasks scales the cluster up to its maximum, idle
//! time scales it down to its minimum, and no task runs twice because a worker was retired
//! (its kept results move first).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zask::{AdaptConfig, Cluster, GetOptions, Graph, Key, LocalCluster, Registry, Value};

const TASKS: usize = 24;

/// Polls `done` every 50 ms until it holds or `limit` passes; returns whether it held.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

#[test]
fn a_burst_scales_up_to_maximum_idle_time_down_to_minimum_and_nothing_runs_twice() {
    let runs = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::with_builtins();
    let counter = runs.clone();
    registry.register("slow", move |x: i64| {
        counter.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        x + 1
    });
    let cluster = LocalCluster::builder()
        .workers(1)
        .registry(registry)
        .start()
        .unwrap();
    cluster
        .adapt(AdaptConfig {
            interval_ms: 200,
            target_duration_ms: 1000,
            ..AdaptConfig::new(1, 4)
        })
        .unwrap();

    let mut graph = Graph::new();
    let keys: Vec<Key> = (0..TASKS).map(|i| Key::from(format!("slow-{i}"))).collect();
    for (i, k) in keys.iter().enumerate() {
        graph.insert(k.clone(), ("slow", i as i64));
    }
    let client = cluster.client().unwrap();
    let burst = {
        let keys = keys.clone();
        std::thread::spawn(move || {
            let options = GetOptions {
                keep_results: true,
                ..GetOptions::default()
            };
            let value = client.get_with(&graph, keys, options);
            (client, value)
        })
    };

    let mut max_workers = 0;
    let grew = wait_for(Duration::from_secs(30), || {
        max_workers = max_workers.max(cluster.workers().unwrap().len());
        max_workers >= 4
    });
    assert!(
        grew,
        "the burst grew the cluster to {max_workers} workers, not 4"
    );
    let (client, value) = burst.join().unwrap();
    let expected: Vec<Value> = (1..=TASKS as i64).map(Value::from).collect();
    assert_eq!(value.unwrap(), Value::from(expected.clone()));
    assert_eq!(runs.load(Ordering::SeqCst), TASKS);

    let shrank = wait_for(Duration::from_secs(30), || {
        cluster.workers().unwrap().len() == 1 && cluster.started().len() == 1
    });
    assert!(
        shrank,
        "idle, the cluster kept {} workers",
        cluster.workers().unwrap().len()
    );
    // The kept results moved off the retired workers: all still there, none computed again.
    assert_eq!(client.gather(keys).unwrap(), Value::from(expected));
    assert_eq!(runs.load(Ordering::SeqCst), TASKS, "a task ran twice");

    // Stopped, it changes nothing; started again with new bounds, it grows to the minimum.
    cluster.stop_adapt();
    cluster
        .adapt(AdaptConfig {
            interval_ms: 200,
            ..AdaptConfig::new(2, 3)
        })
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || cluster.workers().unwrap().len()
            == 2),
        "the new minimum was not reached"
    );
}

#[test]
fn scale_starts_and_retires_workers() {
    let cluster = LocalCluster::builder().workers(1).start().unwrap();
    cluster.scale(3).unwrap();
    assert_eq!(cluster.started().len(), 3);
    assert!(wait_for(Duration::from_secs(30), || {
        cluster.workers().unwrap().len() == 3
    }));
    let client = cluster.client().unwrap();
    let mut graph = Graph::new();
    graph.insert("x", 41);
    graph.insert("y", ("inc", "x"));
    let options = GetOptions {
        keep_results: true,
        ..GetOptions::default()
    };
    assert_eq!(
        client.get_with(&graph, "y", options).unwrap(),
        Value::from(42)
    );
    cluster.scale(1).unwrap();
    assert_eq!(cluster.started().len(), 1);
    assert!(wait_for(Duration::from_secs(30), || {
        cluster.workers().unwrap().len() == 1
    }));
    assert_eq!(client.gather("y").unwrap(), Value::from(42));
}

#[test]
fn worker_processes_scale_up_under_a_burst_and_down_when_idle_and_nothing_runs_twice() {
    let cluster = LocalCluster::builder()
        .workers(1)
        .test_functions()
        .start()
        .unwrap();
    assert!(cluster.uses_processes());
    cluster
        .adapt(AdaptConfig {
            interval_ms: 200,
            target_duration_ms: 1000,
            ..AdaptConfig::new(1, 3)
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("runs");
    let counter = counter.to_str().unwrap();
    // Each counted task runs once (a line in the file); each slow one waits 0.3 s after it.
    let mut graph = Graph::new();
    let keys: Vec<Key> = (0..TASKS).map(|i| Key::from(format!("slow-{i}"))).collect();
    for (i, k) in keys.iter().enumerate() {
        let count = format!("count-{i}");
        graph.insert(count.as_str(), ("counted_inc", counter, i as i64));
        graph.insert(k.clone(), ("slow_inc", count.as_str(), 0.3));
    }
    let client = cluster.client().unwrap();
    let burst = {
        let keys = keys.clone();
        std::thread::spawn(move || {
            let options = GetOptions {
                keep_results: true,
                ..GetOptions::default()
            };
            let value = client.get_with(&graph, keys, options);
            (client, value)
        })
    };
    let mut max_workers = 0;
    let grew = wait_for(Duration::from_secs(30), || {
        max_workers = max_workers.max(cluster.workers().unwrap().len());
        max_workers >= 3
    });
    assert!(
        grew,
        "the burst grew the cluster to {max_workers} workers, not 3"
    );
    let (client, value) = burst.join().unwrap();
    let expected: Vec<Value> = (2..=TASKS as i64 + 1).map(Value::from).collect();
    assert_eq!(value.unwrap(), Value::from(expected.clone()));
    let shrank = wait_for(Duration::from_secs(30), || {
        cluster.workers().unwrap().len() == 1 && cluster.nanny_pids().len() == 1
    });
    assert!(shrank, "idle, the cluster kept {:?}", cluster.nanny_pids());
    assert_eq!(client.gather(keys).unwrap(), Value::from(expected));
    let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap();
    assert_eq!(runs.lines().count(), TASKS, "a task ran twice: {runs}");
}

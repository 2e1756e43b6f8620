//! A LocalCluster with worker processes (the default): each worker a `zask-worker` process
//! under its nanny, reading its access from a private file (never its command line); scaling
//! down retires a worker (its results move first) and stops its processes; dropping the
//! cluster leaves no process behind.

use std::time::{Duration, Instant};

use zask::processes::pid_alive;
use zask::{Cluster, GetOptions, Graph, Key, LocalCluster, Value};

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

/// A builder as a program uses it: the test binary is in target/debug/deps, and the search
/// finds zask-worker in target/debug, the parent of its directory.
fn builder() -> zask::local_cluster::LocalClusterBuilder {
    LocalCluster::builder()
}

/// The command line of a process, its arguments joined by spaces.
fn command_line(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn workers_are_processes_under_nannies_and_none_is_left_after_drop() {
    let cluster = builder().workers(2).threads_per_worker(2).start().unwrap();
    assert!(cluster.uses_processes());
    let nannies = cluster.nanny_pids();
    assert_eq!(nannies.len(), 2);
    let client = cluster.client().unwrap();
    let workers = client.workers().unwrap();
    assert_eq!(workers.len(), 2);
    let me = std::process::id();
    let worker_pids: Vec<u32> = workers.iter().map(|w| w.pid).collect();
    for w in &workers {
        assert_ne!(w.pid, me, "a worker in this process: {w:?}");
        assert!(!nannies.contains(&w.pid), "the worker is the nanny's child");
        assert_eq!(w.nthreads, 2, "{w:?}");
        assert!(w.name.as_str().starts_with("local-"), "{w:?}");
    }
    // The access is in a file, not on the command line.
    let secret = cluster
        .access(zask::security::Role::Worker)
        .expect("secure by default")
        .key
        .secret;
    for pid in nannies.iter().chain(&worker_pids) {
        let line = command_line(*pid);
        assert!(line.contains("--access-file"), "{line}");
        assert!(
            !line.contains(&secret),
            "the secret key is on the command line"
        );
    }
    let mut graph = Graph::new();
    graph.insert("x", 41);
    graph.insert("y", ("inc", "x"));
    assert_eq!(client.get(&graph, "y").unwrap(), Value::from(42));
    // Each worker process keeps its recent log lines (the manager's get_logs).
    let logs = cluster.get_logs().unwrap();
    assert_eq!(logs.workers.len(), 2, "{logs:?}");
    for (address, lines) in &logs.workers {
        assert!(
            lines.iter().any(|l| l.contains("connecting to")),
            "{address}: {lines:?}"
        );
    }
    drop(client);
    drop(cluster);
    for pid in nannies.iter().chain(&worker_pids) {
        assert!(!pid_alive(*pid), "process {pid} outlived the cluster");
    }
}

#[test]
fn scaling_down_moves_results_off_the_worker_process_then_stops_it() {
    let cluster = builder().workers(1).test_functions().start().unwrap();
    cluster.scale(3).unwrap();
    assert_eq!(cluster.started().len(), 3);
    assert!(wait_for(Duration::from_secs(30), || {
        cluster.workers().unwrap().len() == 3
    }));
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("runs");
    let counter = counter.to_str().unwrap();
    let mut graph = Graph::new();
    let keys: Vec<Key> = (0..12).map(|i| Key::from(format!("c-{i}"))).collect();
    for (i, k) in keys.iter().enumerate() {
        graph.insert(k.clone(), ("counted_inc", counter, i as i64));
    }
    let client = cluster.client().unwrap();
    let options = GetOptions {
        keep_results: true,
        ..GetOptions::default()
    };
    let expected: Vec<Value> = (1..=12).map(Value::from).collect();
    assert_eq!(
        client.get_with(&graph, keys.clone(), options).unwrap(),
        Value::from(expected.clone())
    );
    let before: Vec<u32> = client.workers().unwrap().iter().map(|w| w.pid).collect();
    cluster.scale(1).unwrap();
    assert_eq!(cluster.started().len(), 1);
    assert_eq!(cluster.nanny_pids().len(), 1);
    assert!(wait_for(Duration::from_secs(30), || {
        cluster.workers().unwrap().len() == 1
    }));
    let left = client.workers().unwrap()[0].pid;
    for pid in before.iter().filter(|p| **p != left) {
        assert!(!pid_alive(*pid), "retired worker process {pid} still runs");
    }
    // Every kept result moved to the worker left: none is computed again.
    assert_eq!(client.gather(keys).unwrap(), Value::from(expected));
    let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 12, "a task ran twice: {runs}");
}

#[test]
fn no_worker_program_is_a_clear_error() {
    let missing = tempfile::tempdir().unwrap();
    let path = missing.path().join("zask-worker");
    // A child process: the variable is this process's, shared by the tests running beside.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "no_worker_program_child",
            "--nocapture",
            "--ignored",
        ])
        .env("ZASK_WORKER_BIN", &path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ZASK_WORKER_BIN"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
}

/// Run by `no_worker_program_is_a_clear_error` in a process of its own.
#[test]
#[ignore = "run by no_worker_program_is_a_clear_error"]
fn no_worker_program_child() {
    let err = LocalCluster::builder()
        .workers(1)
        .start()
        .err()
        .expect("no program");
    assert!(
        matches!(err, zask::LocalClusterError::NoWorkerProgram(_)),
        "{err:?}"
    );
    assert!(!err.retry_may_help());
    println!("error: {err}");
}

#[test]
fn worker_processes_die_with_a_killed_owner() {
    use std::io::BufRead;
    let mut owner = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "cluster_owner_child", "--nocapture", "--ignored"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(owner.stdout.take().unwrap());
    let mut pids: Vec<u32> = Vec::new();
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("pids ") {
            pids = rest.split(' ').map(|p| p.parse().unwrap()).collect();
            break;
        }
    }
    assert_eq!(pids.len(), 4, "two nannies and two workers: {pids:?}");
    // SIGKILL: no destructor runs; the kernel's parent-death signal must do the work.
    owner.kill().unwrap();
    owner.wait().unwrap();
    for pid in pids {
        assert!(
            wait_for(Duration::from_secs(30), || !pid_alive(pid)),
            "process {pid} outlived its killed owner"
        );
    }
}

/// Run by `worker_processes_die_with_a_killed_owner` in a process of its own: starts two
/// worker processes, prints their nannies' and workers' pids, and waits to be killed.
#[test]
#[ignore = "run by worker_processes_die_with_a_killed_owner"]
fn cluster_owner_child() {
    let cluster = LocalCluster::builder().workers(2).start().unwrap();
    let mut pids = cluster.nanny_pids();
    pids.extend(cluster.workers().unwrap().iter().map(|w| w.pid));
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    println!("pids {}", pids.join(" "));
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn worker_processes_keep_results_in_their_own_sled_stores() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = builder()
        .workers(2)
        .store(zask::StoreSpec::Sled(dir.path().to_path_buf()))
        .start()
        .unwrap();
    let client = cluster.client().unwrap();
    let mut stores: Vec<String> = client
        .workers()
        .unwrap()
        .into_iter()
        .map(|w| w.store)
        .collect();
    stores.sort();
    let expected: Vec<String> = cluster
        .worker_addresses()
        .iter()
        .enumerate()
        .map(|(i, _)| format!("sled:{}", dir.path().join(format!("worker-{i}")).display()))
        .collect();
    assert_eq!(stores, expected);
    let mut graph = Graph::new();
    graph.insert("x", 1);
    graph.insert("y", ("inc", "x"));
    assert_eq!(client.get(&graph, "y").unwrap(), Value::from(2));
}

//! `zask local` as a real process: it prints its addresses and access files as one JSON line,
//! a client connects with the operator's access file and computes, `--adapt` is accepted, and
//! SIGTERM or SIGINT ends it with exit code 0, leaving no worker process behind.

mod common;

use std::path::{Path, PathBuf};

use common::{wait_until, Proc, DEADLINE, ZASK};
use serde_json::Value as Json;
use zask::client::ClientSecurity;
use zask::graph::json::parse_graph;
use zask::security::{Access, Role};
use zask::{Client, ClientConfig, KeySpec, Value};

const SEED: &str = r#"{"x": 1, "y": {"task": ["add", "x", 2]}}"#;

/// Starts `zask local ARGS` and returns it with the JSON line it printed.
fn start_local(dir: &Path, args: &[&str]) -> (Proc, Json) {
    let mut argv = vec!["local".to_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let mut proc = Proc::spawn("zask local", ZASK, &argv, dir.join("local.log"));
    let line = proc.read_line_after("");
    let json: Json = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("zask local printed no JSON ({e}): {line:?}"));
    (proc, json)
}

/// A client connected with the operator's access file the line names.
fn operator_client(line: &Json) -> Client {
    let path = PathBuf::from(
        line["access"]["operator"]
            .as_str()
            .expect("an operator path"),
    );
    let access = Access::read_for(&path, &[Role::Operator]).expect("the operator's access");
    let config = ClientConfig {
        security: ClientSecurity::Access(access),
        ..ClientConfig::default()
    };
    let address = line["address_to_clients"]
        .as_str()
        .expect("a client address");
    Client::connect_with(address, config).expect("connect")
}

/// Waits (bounded) until the scheduler knows at least `n` workers and returns how many.
fn wait_for_workers(client: &Client, n: usize) -> usize {
    wait_until(&format!("{n} workers"), DEADLINE, || {
        let count = client.workers().ok()?.len();
        (count >= n).then_some(count)
    })
}

/// SIGTERM, then the exit status within a bounded wait.
fn terminate(proc: &mut Proc) -> std::process::ExitStatus {
    let r = unsafe { libc::kill(proc.pid() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
    proc.wait_exit(DEADLINE)
}

#[test]
fn local_runs_the_seed_graph_on_the_workers_asked_for_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let security = dir.path().join("security");
    let (mut proc, line) = start_local(
        dir.path(),
        &[
            "--workers",
            "2",
            "--threads",
            "2",
            "--memory-limit",
            "300MB",
            "--security-dir",
            security.to_str().unwrap(),
        ],
    );
    assert_eq!(line["workers"], 2, "{line}");
    assert!(line["address_to_workers"].as_str().is_some(), "{line}");
    for role in ["client", "operator", "worker"] {
        let path = PathBuf::from(line["access"][role].as_str().expect("a path"));
        assert_eq!(path.parent(), Some(security.as_path()), "{line}");
        assert_eq!(
            path.file_name().and_then(|n| n.to_str()),
            Some(format!("{role}.access").as_str())
        );
    }
    let client = operator_client(&line);
    let graph = parse_graph(SEED).expect("the seed graph");
    let value = client.get(&graph, KeySpec::One("y".into())).expect("get y");
    assert_eq!(value, Value::Int(3));
    let workers = client.workers().expect("workers");
    assert_eq!(workers.len(), 2);
    for w in &workers {
        assert_eq!(
            (w.nthreads, w.memory_limit_bytes),
            (2, 300_000_000),
            "{w:?}"
        );
        assert_ne!(w.pid, proc.pid(), "workers are processes by default: {w:?}");
    }
    assert_eq!(line["processes"], true, "{line}");
    // Its dashboard, on this machine only.
    assert!(
        line["dashboard"]
            .as_str()
            .is_some_and(|d| d.starts_with("http://127.0.0.1:")),
        "{line}"
    );
    drop(client);
    let status = terminate(&mut proc);
    assert_eq!(status.code(), Some(0), "{}", proc.log_text());
    for w in &workers {
        assert!(
            !zask::processes::pid_alive(w.pid),
            "worker process {} outlived zask local",
            w.pid
        );
    }
}

#[test]
fn local_stops_on_sigint_leaving_no_worker_process() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut proc, line) = start_local(dir.path(), &["--insecure", "--workers", "2"]);
    let config = ClientConfig {
        security: ClientSecurity::Insecure,
        ..ClientConfig::default()
    };
    let client = Client::connect_with(line["address_to_clients"].as_str().unwrap(), config)
        .expect("connect");
    assert_eq!(wait_for_workers(&client, 2), 2);
    let pids: Vec<u32> = client.workers().unwrap().iter().map(|w| w.pid).collect();
    drop(client);
    let r = unsafe { libc::kill(proc.pid() as libc::pid_t, libc::SIGINT) };
    assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
    assert_eq!(
        proc.wait_exit(DEADLINE).code(),
        Some(0),
        "{}",
        proc.log_text()
    );
    for pid in pids {
        assert!(
            !zask::processes::pid_alive(pid),
            "worker process {pid} outlived zask local"
        );
    }
}

#[test]
fn local_threads_only_runs_workers_in_its_own_process() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut proc, line) = start_local(
        dir.path(),
        &["--insecure", "--workers", "1", "--no-processes"],
    );
    assert_eq!(line["processes"], false, "{line}");
    let config = ClientConfig {
        security: ClientSecurity::Insecure,
        ..ClientConfig::default()
    };
    let client = Client::connect_with(line["address_to_clients"].as_str().unwrap(), config)
        .expect("connect");
    assert_eq!(wait_for_workers(&client, 1), 1);
    assert_eq!(client.workers().unwrap()[0].pid, proc.pid());
    drop(client);
    assert_eq!(terminate(&mut proc).code(), Some(0));
}

#[test]
fn local_accepts_adapt_and_starts_with_its_minimum() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // No --security-dir: the access files go into a new private directory of the temp dir.
    let (mut proc, line) = start_local(dir.path(), &["--adapt", "1:3", "--target-duration", "2"]);
    let operator = PathBuf::from(line["access"]["operator"].as_str().expect("a path"));
    let security = operator.parent().expect("a directory").to_owned();
    let cleanup = Cleanup(security.clone());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&security)
            .expect("the directory")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{}", security.display());
    }
    assert_eq!(line["workers"], 1, "{line}");
    let client = operator_client(&line);
    assert!(wait_for_workers(&client, 1) >= 1);
    let graph = parse_graph(SEED).expect("the seed graph");
    assert_eq!(
        client.get(&graph, KeySpec::One("y".into())).expect("get y"),
        Value::Int(3)
    );
    drop(client);
    let status = terminate(&mut proc);
    assert_eq!(status.code(), Some(0), "{}", proc.log_text());
    drop(cleanup);
}

#[test]
fn local_insecure_prints_no_access() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut proc, line) = start_local(dir.path(), &["--insecure", "--workers", "1"]);
    assert!(line.get("access").is_none(), "{line}");
    let config = ClientConfig {
        security: ClientSecurity::Insecure,
        ..ClientConfig::default()
    };
    let client = Client::connect_with(line["address_to_clients"].as_str().unwrap(), config)
        .expect("connect");
    assert_eq!(wait_for_workers(&client, 1), 1);
    drop(client);
    assert_eq!(terminate(&mut proc).code(), Some(0));
}

#[test]
fn local_refuses_bad_adapt_bounds_with_a_usage_error() {
    for bad in ["3", "3:1", "a:b"] {
        let out = common::run(ZASK, &["local", "--adapt", bad]);
        assert_eq!(out.code(), Some(2), "{bad}: {out:?}");
        assert!(out.stderr.starts_with("error: "), "{bad}: {out:?}");
    }
    let out = common::run(ZASK, &["local", "--target-duration", "2"]);
    assert_eq!(
        out.code(),
        Some(2),
        "--target-duration without --adapt: {out:?}"
    );
}

/// Removes the access directory `zask local` made, also when the test fails.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn scale_and_adapt_change_a_running_local_cluster() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let security = dir.path().join("security");
    let (mut proc, line) = start_local(
        dir.path(),
        &[
            "--workers",
            "1",
            "--security-dir",
            security.to_str().unwrap(),
        ],
    );
    let address = line["address_to_clients"].as_str().unwrap().to_owned();
    let operator = line["access"]["operator"].as_str().unwrap().to_owned();
    let plain = line["access"]["client"].as_str().unwrap().to_owned();
    let zask = |access: &str, args: &[&str]| {
        let mut argv = vec!["--access-file", access];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--scheduler", &address]);
        common::run(ZASK, &argv)
    };
    let client = operator_client(&line);
    assert_eq!(wait_for_workers(&client, 1), 1);

    // A plain client may not resize the cluster.
    let out = zask(&plain, &["scale", "3"]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("operator"), "{out:?}");

    let out = zask(&operator, &["scale", "3"]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    wait_until("3 workers", DEADLINE, || {
        (client.workers().ok()?.len() == 3).then_some(())
    });
    let out = zask(&operator, &["status"]);
    let status: Json = serde_json::from_str(&out.stdout).expect("status JSON");
    assert_eq!(
        status["scaling"]["request"]["Scale"]["workers"], 3,
        "{status}"
    );

    // Adapting between 1 and 2 on an idle cluster: down to 2 at once, to 1 after the
    // retirement suggestions repeat; never below 1.
    let out = zask(&operator, &["adapt", "1", "2", "--target-duration", "1"]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    wait_until("at most 2 workers", DEADLINE, || {
        (client.workers().ok()?.len() <= 2).then_some(())
    });
    wait_until("1 worker", DEADLINE, || {
        (client.workers().ok()?.len() == 1).then_some(())
    });
    let out = zask(&operator, &["adapt", "--stop"]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    wait_until("adapting stopped", DEADLINE, || {
        proc.log_text()
            .contains("scaling: an operator asked to stop adapting")
            .then_some(())
    });
    let out = zask(&operator, &["adapt", "2", "1"]);
    assert_eq!(out.code(), Some(2), "MAX below MIN: {out:?}");
    assert_eq!(client.workers().unwrap().len(), 1);
    drop(client);
    let status = terminate(&mut proc);
    assert_eq!(status.code(), Some(0), "{}", proc.log_text());
    let log = proc.log_text();
    for said in [
        "scaling: from 1 to 3 workers, as an operator asked",
        "scaling: an operator asked to adapt between 1 and 2 workers",
        "adaptive: ",
        "scaling: an operator asked to stop adapting",
    ] {
        assert!(log.contains(said), "no {said:?} in the log:\n{log}");
    }
}

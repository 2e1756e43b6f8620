//! The command line: `zask get`, `zask status` and `zask who-has` against a real scheduler and
//! workers, and how every binary reacts to bad arguments and `--help`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{run, ClusterOptions, Output, TestCluster, SCHEDULER, WORKER, ZASK};
use serde_json::{json, Value as Json};

const SEED: &str = r#"{"x": 1, "y": {"task": ["add", "x", 2]}}"#;

/// Writes a graph file into the cluster's directory.
fn graph_file(cluster: &TestCluster, name: &str, text: &str) -> PathBuf {
    let path = cluster.dir().join(name);
    std::fs::write(&path, text).expect("write the graph file");
    path
}

/// `zask get --scheduler ADDR [extra...] FILE KEYS...`
fn zask_get(cluster: &TestCluster, extra: &[&str], file: &Path, keys: &[&str]) -> Output {
    let file = file.to_str().expect("a UTF-8 path");
    let security = cluster.zask_security_args();
    let mut args = vec!["get", "--scheduler", cluster.address_to_clients()];
    args.extend(security.iter().map(String::as_str));
    args.extend_from_slice(extra);
    args.push(file);
    args.extend_from_slice(keys);
    run(ZASK, &args)
}

fn assert_success(out: &Output) {
    assert_eq!(out.code(), Some(0), "{out:?}");
}

/// A failure with `code` and exactly one line on stderr, which is returned.
fn one_line_failure(out: &Output, code: i32) -> String {
    assert_eq!(out.code(), Some(code), "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected a single line on stderr: {out:?}");
    assert!(lines[0].starts_with("error: "), "{out:?}");
    lines[0].to_owned()
}

fn json_stdout(out: &Output) -> Json {
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out:?}"))
}

#[test]
fn get_prints_the_value_of_one_key() {
    let cluster = TestCluster::new();
    let file = graph_file(&cluster, "seed.json", SEED);
    let out = zask_get(&cluster, &[], &file, &["y"]);
    assert_success(&out);
    assert_eq!(out.stdout, "3\n");
}

#[test]
fn get_prints_several_keys_as_a_json_list() {
    let cluster = TestCluster::new();
    let file = graph_file(
        &cluster,
        "g.json",
        r#"[
            ["x", 1],
            ["y", {"task": ["add", "x", 2]}],
            [["t", 1], {"task": ["range_list", 0, 3]}],
            ["s", "x y"]
        ]"#,
    );
    let out = zask_get(&cluster, &[], &file, &["x", "y", r#"["t", 1]"#, "s"]);
    assert_success(&out);
    assert_eq!(json_stdout(&out), json!([1, 3, [0, 1, 2], "x y"]));
}

#[test]
fn a_failing_task_exits_1_naming_the_key_on_stderr() {
    let cluster = TestCluster::new();
    let file = graph_file(
        &cluster,
        "fail.json",
        r#"{"x": {"task": ["fail", "boom"]}, "y": {"task": ["inc", "x"]}}"#,
    );
    for key in ["x", "y"] {
        let out = zask_get(&cluster, &[], &file, &[key]);
        let line = one_line_failure(&out, 1);
        assert!(line.contains("\"x\"") && line.contains("boom"), "{line}");
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    // The cluster serves on.
    let seed = graph_file(&cluster, "seed.json", SEED);
    assert_eq!(zask_get(&cluster, &[], &seed, &["y"]).stdout, "3\n");
}

#[test]
fn a_missing_key_exits_1_naming_it() {
    let cluster = TestCluster::new();
    let file = graph_file(&cluster, "seed.json", SEED);
    let out = zask_get(&cluster, &[], &file, &["nope"]);
    let line = one_line_failure(&out, 1);
    assert!(line.contains("\"nope\""), "{line}");

    let file = graph_file(
        &cluster,
        "ref.json",
        r#"{"a": {"task": ["inc", {"key": "ghost"}]}}"#,
    );
    let line = one_line_failure(&zask_get(&cluster, &[], &file, &["a"]), 1);
    assert!(
        line.contains("\"ghost\"") && line.contains("\"a\""),
        "{line}"
    );
}

#[test]
fn a_json_graph_error_exits_1_saying_where() {
    let cluster = TestCluster::new();
    let file = graph_file(
        &cluster,
        "bad.json",
        r#"{"x": 1, "y": {"task": ["add", "x", {"foo": 2}]}}"#,
    );
    let line = one_line_failure(&zask_get(&cluster, &[], &file, &["y"]), 1);
    assert!(line.contains("bad.json"), "{line}");
    assert!(line.contains("graph entry \"y\": argument 2"), "{line}");
    assert!(line.contains("unknown object marker \"foo\""), "{line}");

    let file = graph_file(&cluster, "broken.json", "{\"x\": 1,\n \"y\": }");
    let line = one_line_failure(&zask_get(&cluster, &[], &file, &["y"]), 1);
    assert!(line.contains("line 2, column 7"), "{line}");

    let missing = cluster.dir().join("absent.json");
    let line = one_line_failure(&zask_get(&cluster, &[], &missing, &["y"]), 1);
    assert!(line.contains("absent.json"), "{line}");
}

#[test]
fn status_prints_both_addresses_and_every_worker() {
    let cluster = ClusterOptions::default().nthreads(2).start();
    let security = cluster.zask_security_args();
    let mut args = vec!["status", "--scheduler", cluster.address_to_clients()];
    args.extend(security.iter().map(String::as_str));
    let out = run(ZASK, &args);
    assert_success(&out);
    let status = json_stdout(&out);
    assert_eq!(
        status["address_to_clients"],
        json!(cluster.address_to_clients())
    );
    assert_eq!(
        status["address_to_workers"],
        json!(cluster.address_to_workers())
    );
    let workers = status["workers"].as_array().expect("a list of workers");
    assert_eq!(workers.len(), 2, "{status}");
    let mut addresses = BTreeSet::new();
    let mut pids = BTreeSet::new();
    for w in workers {
        addresses.insert(w["address"].as_str().expect("an address").to_owned());
        assert!(w["name"].as_str().is_some_and(|n| !n.is_empty()), "{w}");
        pids.insert(w["pid"].as_u64().expect("a pid") as u32);
        assert_eq!(w["nthreads"], json!(2), "{w}");
    }
    let expected: BTreeSet<String> = cluster.worker_addresses().iter().cloned().collect();
    assert_eq!(addresses, expected);
    assert_eq!(pids, cluster.worker_pids().into_iter().collect());
}

#[test]
fn who_has_shows_the_holder_of_a_kept_result() {
    let cluster = TestCluster::new();
    let file = graph_file(&cluster, "seed.json", SEED);
    let out = zask_get(&cluster, &["--keep-results"], &file, &["y"]);
    assert_success(&out);
    assert_eq!(out.stdout, "3\n");
    let security = cluster.zask_security_args();
    let mut args = vec!["who-has", "--scheduler", cluster.address_to_clients()];
    args.extend(security.iter().map(String::as_str));
    args.extend(["y", "unknown"]);
    let out = run(ZASK, &args);
    assert_success(&out);
    let who_has = json_stdout(&out);
    let holders = who_has["y"].as_array().expect("holders of y");
    assert_eq!(holders.len(), 1, "{who_has}");
    let holder = holders[0].as_str().unwrap().to_owned();
    assert!(cluster.worker_addresses().contains(&holder), "{holder}");
    assert_eq!(who_has["unknown"], json!([]));
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    let cases: &[(&str, &[&str], &str)] = &[
        (SCHEDULER, &["--worker-port", "abc"], "--worker-port"),
        (SCHEDULER, &["--no-such-flag"], "--no-such-flag"),
        (WORKER, &["not-an-address"], "not-an-address"),
        (WORKER, &["tcp://127.0.0.1:1", "--store", "bogus"], "bogus"),
        (
            WORKER,
            &["tcp://127.0.0.1:1", "--nthreads", "many"],
            "--nthreads",
        ),
        (
            ZASK,
            &["get", "--scheduler", "127.0.0.1:1", "g.json", "y"],
            "127.0.0.1:1",
        ),
        (ZASK, &["status", "--scheduler", "tcp://:1"], "tcp://:1"),
        (ZASK, &["frobnicate"], "frobnicate"),
        (ZASK, &["shutdown", "--scheduler", "nowhere"], "nowhere"),
        (
            ZASK,
            &[
                "replicate",
                "--scheduler",
                "tcp://127.0.0.1:1",
                "--n",
                "0",
                "x",
            ],
            "--n",
        ),
        (
            ZASK,
            &[
                "get",
                "--scheduler",
                "tcp://127.0.0.1:1",
                "--keys-json",
                "[true]",
                "g.json",
            ],
            "--keys-json",
        ),
        (
            ZASK,
            &[
                "scatter",
                "--scheduler",
                "tcp://127.0.0.1:1",
                "no-equals-sign",
            ],
            "no-equals-sign",
        ),
    ];
    for (program, args, named) in cases {
        let out = run(program, args);
        let line = one_line_failure(&out, 2);
        assert!(line.contains(named), "{program} {args:?}: {line}");
    }
}

#[test]
fn missing_required_arguments_are_named_on_the_one_line() {
    let cases: &[(&str, &[&str], &str)] = &[
        (WORKER, &[], "SCHEDULER"),
        (
            ZASK,
            &["get", "--scheduler", "tcp://127.0.0.1:1", "g.json"],
            "KEYS",
        ),
        (
            ZASK,
            &["who-has", "--scheduler", "tcp://127.0.0.1:1"],
            "KEYS",
        ),
        (
            ZASK,
            &["retire", "--scheduler", "tcp://127.0.0.1:1"],
            "NAME_OR_ADDRESS",
        ),
        (
            ZASK,
            &["release", "--scheduler", "tcp://127.0.0.1:1"],
            "KEYS",
        ),
        (
            ZASK,
            &["scatter", "--scheduler", "tcp://127.0.0.1:1"],
            "KEY=VALUE",
        ),
        (
            ZASK,
            &["replicate", "--scheduler", "tcp://127.0.0.1:1", "x"],
            "--n",
        ),
        (
            ZASK,
            &["unpublish", "--scheduler", "tcp://127.0.0.1:1"],
            "NAME",
        ),
    ];
    for (program, args, named) in cases {
        let out = run(program, args);
        let line = one_line_failure(&out, 2);
        assert!(line.contains(named), "{program} {args:?}: {line}");
    }
}

#[test]
fn help_exits_0_for_every_binary() {
    let cases: &[(&str, &[&str])] = &[
        (SCHEDULER, &["--help"]),
        (WORKER, &["--help"]),
        (ZASK, &["--help"]),
        (ZASK, &["get", "--help"]),
        (ZASK, &["status", "--help"]),
        (ZASK, &["who-has", "--help"]),
        (ZASK, &["scatter", "--help"]),
        (ZASK, &["gather", "--help"]),
        (ZASK, &["release", "--help"]),
        (ZASK, &["replicate", "--help"]),
        (ZASK, &["persist", "--help"]),
        (ZASK, &["publish", "--help"]),
        (ZASK, &["datasets", "--help"]),
        (ZASK, &["unpublish", "--help"]),
        (ZASK, &["workers", "--help"]),
        (ZASK, &["restart", "--help"]),
        (ZASK, &["retire", "--help"]),
        (ZASK, &["shutdown", "--help"]),
    ];
    for (program, args) in cases {
        let out = run(program, args);
        assert_eq!(out.code(), Some(0), "{program} {args:?}: {out:?}");
        assert!(out.stdout.contains("Usage"), "{program} {args:?}: {out:?}");
    }
}

#[test]
fn get_without_a_scheduler_exits_1_saying_so() {
    // Nothing listens on port 1: the connect gives up after its timeout.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("seed.json");
    std::fs::write(&file, SEED).unwrap();
    let out = run(
        ZASK,
        &[
            "get",
            "--scheduler",
            "tcp://127.0.0.1:1",
            file.to_str().unwrap(),
            "y",
        ],
    );
    let line = one_line_failure(&out, 1);
    assert!(line.contains("tcp://127.0.0.1:1"), "{line}");
}

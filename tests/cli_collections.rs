//! `zask collection set|get|compute|list|delete` against a real scheduler and workers: each
//! command is its own process, so one process stores a collection and another computes it.

mod common;

use std::path::{Path, PathBuf};

use common::{run, run_with_env, Output, TestCluster, ZASK};
use serde_json::{json, Value as Json};
use zask::graph::json::{graph_from_json, key_from_json, parse_graph};
use zask::security::Role;
use zask::{Bag, Collection, Key};

const SEED: &str = r#"{"x": 1, "y": {"task": ["add", "x", 2]}}"#;

/// Writes a file into the cluster's directory.
fn file(cluster: &TestCluster, name: &str, text: &str) -> PathBuf {
    let path = cluster.dir().join(name);
    std::fs::write(&path, text).expect("write the file");
    path
}

/// `zask collection ACTION --scheduler ADDR ARGS...`
fn zask(cluster: &TestCluster, action: &str, args: &[&str]) -> Output {
    let security = cluster.zask_security_args();
    let mut all = vec![
        "collection",
        action,
        "--scheduler",
        cluster.address_to_clients(),
    ];
    all.extend(security.iter().map(String::as_str));
    all.extend_from_slice(args);
    run(ZASK, &all)
}

/// `zask collection set` of a graph file with its keys; must succeed and print nothing.
fn set(cluster: &TestCluster, name: &str, graph: &Path, keys: &[&str]) {
    let mut args = vec![name, graph.to_str().expect("a UTF-8 path")];
    args.extend_from_slice(keys);
    let out = zask(cluster, "set", &args);
    assert_success(&out);
    assert_eq!(out.stdout, "", "{out:?}");
}

/// `zask ARGS...` with the scheduler's address in `ZASK_SCHEDULER` instead of `--scheduler`,
/// and the access file in `ZASK_ACCESS_FILE` instead of `--access-file`.
fn zask_with_env(cluster: &TestCluster, args: &[&str]) -> Output {
    let access = cluster.access_file(Role::Operator).display().to_string();
    run_with_env(
        ZASK,
        args,
        &[
            ("ZASK_SCHEDULER", cluster.address_to_clients()),
            (zask::security::ACCESS_FILE_ENV, &access),
        ],
    )
}

fn assert_success(out: &Output) {
    assert_eq!(out.code(), Some(0), "{out:?}");
}

/// A failure with exit code 1 and exactly one line on stderr, which is returned.
fn one_line_failure(out: &Output) -> String {
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(out.stdout, "", "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected a single line on stderr: {out:?}");
    assert!(lines[0].starts_with("error: "), "{out:?}");
    lines[0].to_owned()
}

fn json_stdout(out: &Output) -> Json {
    assert_success(out);
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out:?}"))
}

fn names(cluster: &TestCluster) -> Vec<String> {
    let listed = json_stdout(&zask(cluster, "list", &[]));
    let mut names: Vec<String> = serde_json::from_value(listed.clone())
        .unwrap_or_else(|e| panic!("not a list of names ({e}): {listed}"));
    names.sort();
    names
}

/// What `zask collection get` printed, read back as a collection.
fn printed_collection(printed: &Json) -> Collection {
    let keys: Vec<Key> = printed["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys array: {printed}"))
        .iter()
        .map(|k| key_from_json(k).unwrap())
        .collect();
    let graph = graph_from_json(&printed["graph"]).unwrap();
    Collection::from_graph(&graph, keys)
}

#[test]
fn set_get_compute_list_and_delete_a_collection() {
    let cluster = TestCluster::new();
    let seed = file(&cluster, "seed.json", SEED);
    assert_eq!(names(&cluster), Vec::<String>::new());
    set(&cluster, "seed", &seed, &["y"]);

    // `get` prints it back: its kind, its keys and a graph that reads back to the same tasks.
    let printed = json_stdout(&zask(&cluster, "get", &["seed"]));
    assert_eq!(printed["kind"], json!("graph"), "{printed}");
    assert_eq!(printed["keys"], json!(["y"]), "{printed}");
    let stored = Collection::from_graph(&parse_graph(SEED).unwrap(), vec!["y".into()]);
    assert_eq!(printed_collection(&printed), stored, "{printed}");
    // The same as what a client reads.
    assert_eq!(cluster.client().get_collection("seed").unwrap(), stored);

    let out = zask(&cluster, "compute", &["seed"]);
    assert_success(&out);
    assert_eq!(out.stdout, "3\n");
    assert_eq!(names(&cluster), vec!["seed"]);

    let out = zask(&cluster, "delete", &["seed"]);
    assert_success(&out);
    assert_eq!(out.stdout, "");
    assert_eq!(names(&cluster), Vec::<String>::new());
    let line = one_line_failure(&zask(&cluster, "get", &["seed"]));
    assert!(line.contains("\"seed\""), "{line}");
}

#[test]
fn a_missing_name_is_a_clear_error_with_exit_code_1() {
    let cluster = TestCluster::new();
    for action in ["get", "compute", "delete"] {
        let line = one_line_failure(&zask(&cluster, action, &["no-such-name"]));
        assert!(
            line.contains("no-such-name") && line.contains("collection"),
            "{action}: {line}"
        );
    }
}

#[test]
fn one_process_stores_and_another_computes() {
    let cluster = TestCluster::new();
    let seed = file(&cluster, "seed.json", SEED);
    // Through the environment as well as `--scheduler`.
    let out = zask_with_env(
        &cluster,
        &[
            "collection",
            "set",
            "shared",
            seed.to_str().unwrap(),
            "y",
            "x",
        ],
    );
    assert_success(&out);
    let out = zask_with_env(&cluster, &["collection", "compute", "shared"]);
    assert_success(&out);
    assert_eq!(out.stdout, "[3,1]\n", "several keys: a list, in order");

    // Overwritten by a third process: the next computation sees the new graph.
    let other = file(
        &cluster,
        "other.json",
        r#"[[["p", 0], 10], ["q", {"task": ["mul", {"key": ["p", 0]}, 4]}]]"#,
    );
    set(&cluster, "shared", &other, &["q"]);
    let out = zask(&cluster, "compute", &["shared"]);
    assert_success(&out);
    assert_eq!(out.stdout, "40\n");
    // A tuple key on the command line.
    set(&cluster, "tuple", &other, &[r#"["p", 0]"#]);
    let printed = json_stdout(&zask(&cluster, "get", &["tuple"]));
    assert_eq!(printed["keys"], json!([["p", 0]]), "{printed}");
    let out = zask(&cluster, "compute", &["tuple"]);
    assert_success(&out);
    assert_eq!(out.stdout, "10\n");
    assert_eq!(names(&cluster), vec!["shared", "tuple"]);
}

#[test]
fn what_get_prints_stores_back_as_the_same_collection() {
    let cluster = TestCluster::new();
    let seed = file(&cluster, "seed.json", SEED);
    set(&cluster, "seed", &seed, &["y"]);
    let printed = json_stdout(&zask(&cluster, "get", &["seed"]));
    let copy = file(&cluster, "copy.json", &printed["graph"].to_string());
    set(&cluster, "copy", &copy, &["y"]);
    assert_eq!(json_stdout(&zask(&cluster, "get", &["copy"])), printed);
    let out = zask(&cluster, "compute", &["copy"]);
    assert_success(&out);
    assert_eq!(out.stdout, "3\n");
}

#[test]
fn a_bag_stored_by_a_client_is_printed_and_computed_by_the_command() {
    let cluster = TestCluster::new();
    let bag = Bag::from_sequence(0..5, 2).map("inc", vec![]);
    cluster.client().set_collection("mybag", &bag).unwrap();
    let printed = json_stdout(&zask(&cluster, "get", &["mybag"]));
    assert_eq!(printed["kind"], json!("bag"), "{printed}");
    assert_eq!(
        printed["keys"],
        json!([[bag.name(), 0], [bag.name(), 1]]),
        "{printed}"
    );
    let out = zask(&cluster, "compute", &["mybag"]);
    assert_success(&out);
    assert_eq!(out.stdout, "[1,2,3,4,5]\n", "a bag prints its elements");
    // An item (one key) prints its value.
    cluster
        .client()
        .set_collection("total", &bag.sum())
        .unwrap();
    let printed = json_stdout(&zask(&cluster, "get", &["total"]));
    assert_eq!(printed["kind"], json!("item"), "{printed}");
    let out = zask(&cluster, "compute", &["total"]);
    assert_success(&out);
    assert_eq!(out.stdout, "15\n");
    assert_success(&zask(&cluster, "delete", &["total"]));
    let out = zask(&cluster, "delete", &["mybag"]);
    assert_success(&out);
    assert!(cluster.client().list_collections().unwrap().is_empty());
}

#[test]
fn an_unreadable_graph_file_is_a_clear_error_and_stores_nothing() {
    let cluster = TestCluster::new();
    let missing = cluster.dir().join("missing.json");
    let line = one_line_failure(&zask(
        &cluster,
        "set",
        &["name", missing.to_str().unwrap(), "y"],
    ));
    assert!(line.contains("missing.json"), "{line}");
    let broken = file(&cluster, "broken.json", r#"{"x": "#);
    let line = one_line_failure(&zask(
        &cluster,
        "set",
        &["name", broken.to_str().unwrap(), "y"],
    ));
    assert!(line.contains("broken.json"), "{line}");
    assert_eq!(names(&cluster), Vec::<String>::new());
}

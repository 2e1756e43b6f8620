//! The shell does what the client does: `zask scatter`, `gather`, `release`, `replicate`,
//! `persist`, `publish`, `datasets`, `unpublish`, `workers`, `restart`, `retire`,
//! `shutdown` and `get --keys-json`, each run as the real `zask` binary against real
//! scheduler and worker processes; a `zask` process says goodbye when it exits (errors
//! included), and a vanished one is forgotten after the scheduler's client timeout.
//! The JSON each command prints is checked field by field, as the README's tables say.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{run, wait_until, Output, Proc, TestCluster, DEADLINE, ZASK};
use serde_json::{json, Value as Json};
use zask::security::Role;

/// `zask SUBCOMMAND --scheduler ADDR [security] ARGS...` against the cluster, as an operator.
fn zask(cluster: &TestCluster, subcommand: &[&str], args: &[&str]) -> Output {
    zask_as(cluster, None, subcommand, args)
}

/// The same with `role`'s access file (None: the operator's).
fn zask_as(
    cluster: &TestCluster,
    role: Option<Role>,
    subcommand: &[&str],
    args: &[&str],
) -> Output {
    let mut all: Vec<String> = subcommand.iter().map(|s| s.to_string()).collect();
    all.push("--scheduler".into());
    all.push(cluster.address_to_clients().into());
    match role {
        None => all.extend(cluster.zask_security_args()),
        Some(role) => {
            all.push("--access-file".into());
            all.push(cluster.access_file(role).display().to_string());
        }
    }
    all.extend(args.iter().map(|s| s.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    run(ZASK, &all)
}

fn ok(out: &Output) -> &Output {
    assert_eq!(out.code(), Some(0), "{out:?}");
    out
}

fn json_out(out: &Output) -> Json {
    let out = ok(out);
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out:?}"))
}

/// A failure with exit code `code` and one `error: ` line on stderr, returned.
fn one_line_failure(out: &Output, code: i32) -> String {
    assert_eq!(out.code(), Some(code), "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected a single line on stderr: {out:?}");
    assert!(lines[0].starts_with("error: "), "{out:?}");
    lines[0].to_owned()
}

fn graph_file(cluster: &TestCluster, name: &str, text: &str) -> PathBuf {
    let path = cluster.dir().join(name);
    std::fs::write(&path, text).expect("write the graph file");
    path
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// The kind of a JSON value, to pin an output's field types.
#[derive(Debug, PartialEq, Clone, Copy)]
enum Kind {
    Str,
    UInt,
    Bool,
    Array,
    Object,
    Null,
}

fn kind_of(v: &Json) -> Option<Kind> {
    match v {
        Json::String(_) => Some(Kind::Str),
        Json::Null => Some(Kind::Null),
        Json::Number(n) if n.is_u64() => Some(Kind::UInt),
        Json::Bool(_) => Some(Kind::Bool),
        Json::Array(_) => Some(Kind::Array),
        Json::Object(_) => Some(Kind::Object),
        _ => None,
    }
}

/// `object` has exactly these fields, of these kinds.
fn assert_fields(what: &str, object: &Json, fields: &[(&str, Kind)]) {
    let map = object
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object: {object}"));
    let mut names: Vec<&str> = map.keys().map(String::as_str).collect();
    names.sort();
    let mut expected: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
    expected.sort();
    assert_eq!(names, expected, "{what}'s fields: {object}");
    for (name, kind) in fields {
        assert_eq!(
            kind_of(&map[*name]),
            Some(*kind),
            "{what}.{name} should be {kind:?}: {object}"
        );
    }
}

/// How many clients the scheduler knows (`zask status`, which counts itself).
fn clients_known(cluster: &TestCluster) -> u64 {
    json_out(&zask(cluster, &["status"], &[]))["clients"]
        .as_u64()
        .expect("clients is a number")
}

#[test]
fn scatter_then_get_using_the_scattered_key_then_gather_then_release() {
    let cluster = TestCluster::new();
    let scattered = json_out(&zask(
        &cluster,
        &["scatter"],
        &["data=[1, 2, 3]", "n=5", "name=alice"],
    ));
    assert_eq!(scattered, json!(["data", "n", "name"]));
    // --json: strings stay strings (they name no key), markers as in a graph.
    let more = json_out(&zask(
        &cluster,
        &["scatter"],
        &["--json", r#"{"word": "data", "raw": {"bytes": "aGk="}}"#],
    ));
    assert_eq!(more, json!(["raw", "word"]));
    // A later graph uses the scattered values by reference.
    let file = graph_file(
        &cluster,
        "uses.json",
        r#"{"s": {"task": ["sum", {"key": "data"}]}, "t": {"task": ["add", {"key": "s"}, {"key": "n"}]}}"#,
    );
    let out = zask(&cluster, &["get"], &[path_str(&file), "t"]);
    assert_eq!(ok(&out).stdout, "11\n");
    // gather: one key alone, several as a list, any shape with --keys-json.
    assert_eq!(json_out(&zask(&cluster, &["gather"], &["n"])), json!(5));
    assert_eq!(
        json_out(&zask(
            &cluster,
            &["gather"],
            &["data", "name", "word", "raw"]
        )),
        json!([[1, 2, 3], "alice", "data", {"bytes": "aGk="}])
    );
    assert_eq!(
        json_out(&zask(
            &cluster,
            &["gather"],
            &["--keys-json", r#"[["n"], [["data"], "name"]]"#]
        )),
        json!([[5], [[[1, 2, 3]], "alice"]])
    );
    // release: gone from the cluster; gathering it is an error naming the key.
    ok(&zask(&cluster, &["release"], &["data", "n"]));
    let line = one_line_failure(&zask(&cluster, &["gather"], &["data"]), 1);
    assert!(
        line.contains("\"data\"") && line.contains("not on the cluster"),
        "{line}"
    );
    assert_eq!(
        json_out(&zask(&cluster, &["gather"], &["name"])),
        json!("alice")
    );
    // Bad arguments are usage errors (exit 2).
    one_line_failure(&zask(&cluster, &["scatter"], &["novalue"]), 2);
    one_line_failure(
        &zask(&cluster, &["gather"], &["--keys-json", r#"{"nokey": 1}"#]),
        2,
    );
}

#[test]
fn get_keys_json_takes_any_shape_integer_and_tuple_keys_included() {
    let cluster = TestCluster::new();
    let file = graph_file(
        &cluster,
        "shapes.json",
        r#"[[1, 10], [["x", 1], {"task": ["inc", {"key": 1}]}], ["a", "hello"], [7, {"task": ["add", {"key": 1}, {"key": ["x", 1]}]}]]"#,
    );
    let get = |keys: &str| {
        json_out(&zask(
            &cluster,
            &["get"],
            &["--keys-json", keys, path_str(&file)],
        ))
    };
    // A one-element list stays a list; nested lists keep their shape.
    assert_eq!(get(r#"["a"]"#), json!(["hello"]));
    assert_eq!(
        get(r#"[["a"], [{"key": ["x", 1]}, 1]]"#),
        json!([["hello"], [11, 10]])
    );
    // A bare key is its value alone; integer keys as integers.
    assert_eq!(get("7"), json!(21));
    assert_eq!(get(r#"{"key": ["x", 1]}"#), json!(11));
    assert_eq!(get(r#"[[], [[7]]]"#), json!([[], [[21]]]));
    // Something that is no key is a usage error naming the rule.
    let out = zask(
        &cluster,
        &["get"],
        &["--keys-json", "[1.5]", path_str(&file)],
    );
    let line = one_line_failure(&out, 2);
    assert!(line.contains("--keys-json"), "{line}");
    // --keys-json and positional keys do not mix.
    let out = zask(
        &cluster,
        &["get"],
        &["--keys-json", "[\"a\"]", path_str(&file), "a"],
    );
    assert_eq!(out.code(), Some(2), "{out:?}");
}

#[test]
fn replicate_keeps_copies_on_distinct_workers() {
    let cluster = TestCluster::with_workers(2);
    ok(&zask(&cluster, &["scatter"], &["x=42"]));
    ok(&zask(&cluster, &["replicate"], &["--n", "2", "x"]));
    let who_has = json_out(&zask(&cluster, &["who-has"], &["x"]));
    let holders = who_has["x"].as_array().expect("a list of holders");
    assert_eq!(holders.len(), 2, "{who_has}");
    let out = zask(&cluster, &["replicate"], &["--n", "0", "x"]);
    assert_eq!(out.code(), Some(2), "{out:?}");
}

#[test]
fn persist_publish_list_and_unpublish_datasets() {
    let cluster = TestCluster::new();
    let file = graph_file(
        &cluster,
        "p.json",
        r#"{"a": 1, "b": {"task": ["inc", "a"]}, "c": {"task": ["add", "a", "b"]}}"#,
    );
    let persisted = json_out(&zask(&cluster, &["persist"], &[path_str(&file), "b", "c"]));
    assert_eq!(persisted, json!(["b", "c"]));
    // Kept on the workers: gather reads them without computing.
    assert_eq!(
        json_out(&zask(&cluster, &["gather"], &["b", "c"])),
        json!([2, 3])
    );
    assert_eq!(json_out(&zask(&cluster, &["datasets"], &[])), json!([]));
    ok(&zask(
        &cluster,
        &["publish"],
        &["numbers", path_str(&file), "c"],
    ));
    ok(&zask(
        &cluster,
        &["publish"],
        &["alpha", path_str(&file), "b"],
    ));
    assert_eq!(
        json_out(&zask(&cluster, &["datasets"], &[])),
        json!(["alpha", "numbers"])
    );
    // The dataset outlives the process that published it: another client reads it.
    let client = cluster.client();
    let dataset = client.get_dataset("numbers").expect("the dataset");
    assert_eq!(
        client
            .get(&dataset.to_graph(), dataset.keys.clone())
            .unwrap(),
        zask::Value::from(vec![3])
    );
    ok(&zask(&cluster, &["unpublish"], &["numbers"]));
    assert_eq!(
        json_out(&zask(&cluster, &["datasets"], &[])),
        json!(["alpha"])
    );
    let line = one_line_failure(&zask(&cluster, &["unpublish"], &["numbers"]), 1);
    assert!(line.contains("numbers"), "{line}");
}

#[test]
fn restart_empties_the_cluster_and_needs_an_operator() {
    let cluster = TestCluster::options().with_nanny().start();
    ok(&zask(&cluster, &["scatter"], &["x=1"]));
    let line = one_line_failure(&zask_as(&cluster, Some(Role::Client), &["restart"], &[]), 1);
    assert!(
        line.contains("forbidden") && line.contains("operator"),
        "{line}"
    );
    ok(&zask(&cluster, &["restart"], &[]));
    one_line_failure(&zask(&cluster, &["gather"], &["x"]), 1);
    cluster.wait_for_workers(2);
}

#[test]
fn retire_moves_the_workers_data_first_and_its_nanny_stops_for_good() {
    let mut cluster = TestCluster::options().workers(2).with_nanny().start();
    ok(&zask(&cluster, &["scatter"], &["data=[1, 2, 3]"]));
    let who_has = json_out(&zask(&cluster, &["who-has"], &["data"]));
    let holder = who_has["data"][0].as_str().expect("one holder").to_owned();
    let index = cluster
        .worker_index(&holder)
        .expect("a worker of the cluster");
    let other = cluster.worker_addresses()[1 - index].clone();
    // A client may not; a worker that is not there is an error naming it.
    let line = one_line_failure(
        &zask_as(&cluster, Some(Role::Client), &["retire"], &[&holder]),
        1,
    );
    assert!(line.contains("forbidden"), "{line}");
    let line = one_line_failure(&zask(&cluster, &["retire"], &["no-such-worker"]), 1);
    assert!(line.contains("no-such-worker"), "{line}");
    let retired = json_out(&zask(&cluster, &["retire"], &[&holder]));
    assert_eq!(retired, json!([holder]));
    // The only copy moved before the worker left: the value is still there, on the other.
    assert_eq!(
        json_out(&zask(&cluster, &["who-has"], &["data"])),
        json!({"data": [other]})
    );
    assert_eq!(
        json_out(&zask(&cluster, &["gather"], &["data"])),
        json!([1, 2, 3])
    );
    // Its nanny stopped too, cleanly, instead of starting a new worker.
    let status = cluster.worker_proc(index).wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "the nanny exits 0");
    let workers = json_out(&zask(&cluster, &["workers"], &[]));
    assert_eq!(workers.as_array().map(Vec::len), Some(1), "{workers}");
    assert_eq!(workers[0]["address"], json!(other));
}

#[test]
fn shutdown_stops_the_workers_their_nannies_and_the_scheduler() {
    let mut cluster = TestCluster::options().workers(2).with_nanny().start();
    let line = one_line_failure(
        &zask_as(&cluster, Some(Role::Client), &["shutdown"], &[]),
        1,
    );
    assert!(line.contains("forbidden"), "{line}");
    ok(&zask(&cluster, &["shutdown"], &[]));
    assert_eq!(cluster.wait_scheduler_exit(DEADLINE).code(), Some(0));
    for i in 0..2 {
        let status = cluster.worker_proc(i).wait_exit(DEADLINE);
        assert_eq!(
            status.code(),
            Some(0),
            "nanny {i} exits 0 and starts no new worker"
        );
    }
}

#[test]
fn a_zask_process_says_goodbye_when_it_exits_errors_included() {
    let cluster = TestCluster::new();
    // Every `zask status` counts itself; the ones before it said goodbye, so the count does
    // not grow (without the goodbye it would, for the scheduler's 30 s client timeout).
    // (Polled briefly, as the goodbye and the next hello travel on different connections;
    // far below the 30 s a client without a goodbye stays.)
    let only_the_asker = Duration::from_secs(10);
    clients_known(&cluster);
    wait_until(
        "the first zask status to be forgotten",
        only_the_asker,
        || (clients_known(&cluster) == 1).then_some(()),
    );
    // An error exit says goodbye too.
    one_line_failure(&zask(&cluster, &["gather"], &["nothing-here"]), 1);
    one_line_failure(&zask(&cluster, &["unpublish"], &["nothing-here"]), 1);
    wait_until(
        "the failed commands to be forgotten",
        only_the_asker,
        || (clients_known(&cluster) == 1).then_some(()),
    );
}

#[test]
fn a_vanished_zask_process_is_forgotten_after_the_client_timeout() {
    let cluster = TestCluster::options()
        .scheduler_args(&["--client-timeout-ms", "1000"])
        .start();
    let file = graph_file(&cluster, "slow.json", r#"{"z": {"task": ["sleep", 60]}}"#);
    let mut args: Vec<String> = vec![
        "get".into(),
        "--scheduler".into(),
        cluster.address_to_clients().into(),
    ];
    args.extend(cluster.zask_security_args());
    args.extend([path_str(&file).to_owned(), "z".to_owned()]);
    let mut waiting = Proc::spawn("zask get", ZASK, &args, cluster.dir().join("get.log"));
    wait_until("the waiting zask get to be known", DEADLINE, || {
        (clients_known(&cluster) == 2).then_some(())
    });
    // Its task is pending: `zask status` lists its prefix (fields as the README says).
    let status = wait_until("the task's prefix in zask status", DEADLINE, || {
        let status = json_out(&zask(&cluster, &["status"], &[]));
        (status["prefixes"].as_array()?.len() == 1).then_some(status)
    });
    assert_eq!(
        status["prefixes"],
        json!([{"prefix": "z", "pending": 1, "average_ms": null}])
    );
    waiting.kill(); // SIGKILL: no goodbye
    let within = Duration::from_secs(15);
    wait_until("the killed client to be forgotten", within, || {
        (clients_known(&cluster) == 1).then_some(())
    });
}

#[test]
fn every_json_output_has_its_documented_fields() {
    let cluster = TestCluster::new();
    let file = graph_file(
        &cluster,
        "g.json",
        r#"{"x": 1, "y": {"task": ["inc", "x"]}}"#,
    );
    ok(&zask(&cluster, &["persist"], &[path_str(&file), "y"]));

    let status = json_out(&zask(&cluster, &["status"], &[]));
    use Kind::*;
    assert_fields(
        "status",
        &status,
        &[
            ("address_to_workers", Str),
            ("address_to_clients", Str),
            ("workers", Array),
            ("tasks", UInt),
            ("processing", UInt),
            ("in_memory", UInt),
            ("ready", UInt),
            ("waiting", UInt),
            ("prefixes", Array),
            ("clients", UInt),
            ("scaling", Null),
        ],
    );
    let worker_fields = [
        ("address", Str),
        ("name", Str),
        ("pid", UInt),
        ("nthreads", UInt),
        ("memory_limit", UInt),
        ("store", Str),
        ("keys", UInt),
        ("nbytes", UInt),
        ("processing", UInt),
        ("idle", Bool),
        ("runs_python", Bool),
        ("paused", Bool),
        ("memory_bytes", UInt),
        ("spilled_bytes", UInt),
        ("spilled_keys", UInt),
    ];
    for w in status["workers"].as_array().unwrap() {
        assert_fields("status.workers[]", w, &worker_fields);
    }
    let workers = json_out(&zask(&cluster, &["workers"], &[]));
    assert_eq!(workers.as_array().map(Vec::len), Some(2));
    for w in workers.as_array().unwrap() {
        assert_fields("workers[]", w, &worker_fields);
    }

    let who_has = json_out(&zask(&cluster, &["who-has"], &["y", "nothing"]));
    assert_eq!(who_has["nothing"], json!([]));
    assert_eq!(who_has["y"].as_array().map(Vec::len), Some(1));
    assert_eq!(kind_of(&who_has["y"][0]), Some(Str));
    // Tuple keys make it a list of [key, holders] pairs.
    let pairs = json_out(&zask(&cluster, &["who-has"], &["y", r#"["t", 1]"#]));
    assert_eq!(pairs, json!([["y", who_has["y"]], [["t", 1], []]]));

    let logs = json_out(&zask(&cluster, &["logs"], &[]));
    assert_fields("logs", &logs, &[("scheduler", Array), ("workers", Object)]);
    for lines in logs["workers"].as_object().unwrap().values() {
        assert!(
            lines.as_array().unwrap().iter().all(Json::is_string),
            "{logs}"
        );
    }
    assert!(logs["scheduler"]
        .as_array()
        .unwrap()
        .iter()
        .all(Json::is_string));

    let scattered = json_out(&zask(&cluster, &["scatter"], &["s=1"]));
    assert_eq!(scattered, json!(["s"]));
    ok(&zask(&cluster, &["publish"], &["d", path_str(&file), "y"]));
    assert_eq!(json_out(&zask(&cluster, &["datasets"], &[])), json!(["d"]));
    let address = workers[0]["address"].as_str().unwrap().to_owned();
    assert_eq!(
        json_out(&zask(&cluster, &["retire"], &[&address])),
        json!([address])
    );
    // Commands that change something and answer nothing print nothing.
    for (sub, args) in [
        ("release", vec!["s"]),
        ("unpublish", vec!["d"]),
        ("replicate", vec!["--n", "1", "y"]),
    ] {
        let out = zask(&cluster, &[sub], &args);
        assert_eq!(ok(&out).stdout, "", "{sub}");
    }
}

#[test]
fn shutdown_ends_a_zask_local_with_exit_code_0() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let security = dir.path().join("security");
    let args: Vec<String> = ["local", "--workers", "2", "--security-dir"]
        .iter()
        .map(|s| s.to_string())
        .chain([security.display().to_string()])
        .collect();
    let mut local = Proc::spawn("zask local", ZASK, &args, dir.path().join("local.log"));
    let line: Json = serde_json::from_str(&local.read_line_after("")).expect("its JSON line");
    let address = line["address_to_clients"].as_str().expect("an address");
    let operator = line["access"]["operator"].as_str().expect("an access file");
    let client = line["access"]["client"].as_str().expect("an access file");
    let shutdown = |access: &str| {
        run(
            ZASK,
            &["shutdown", "--scheduler", address, "--access-file", access],
        )
    };
    let line = one_line_failure(&shutdown(client), 1);
    assert!(line.contains("forbidden"), "{line}");
    ok(&shutdown(operator));
    assert_eq!(local.wait_exit(DEADLINE).code(), Some(0));
}

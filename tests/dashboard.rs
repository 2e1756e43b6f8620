//! The scheduler's dashboard over HTTP, against real processes: after a graph runs,
//! `/metrics` (Prometheus text: names, types, values) and `/api/status` (JSON) say what
//! happened; `/health` answers; bad requests get 400/404; a secure cluster's dashboard off
//! loopback needs its token; `--no-dashboard` opens no port.

mod common;
mod dashboard_support;

use std::collections::BTreeSet;

use common::{wait_until, TestCluster, DEADLINE};
use dashboard_support::{dashboard_address, exchange, get, parse_metrics};
use zask::graph::{task, Graph, Node};
use zask::value::Value;

/// `inc-0` … `inc-{n-1}` and their sum, `total`: n + 1 tasks, prefixes `inc` and `total`.
fn sum_of_incs(n: i64) -> Graph {
    let mut g = Graph::new();
    let keys: Vec<Value> = (0..n).map(|i| Value::from(format!("inc-{i}"))).collect();
    for i in 0..n {
        g.insert(format!("inc-{i}"), task("inc", [Node::from(i)]));
    }
    g.insert("total", task("sum", [Node::Value(Value::List(keys))]));
    g
}

#[test]
fn metrics_and_status_describe_the_graph_that_ran() {
    let cluster = TestCluster::options()
        .workers(2)
        .scheduler_args(&["--dashboard-port", "0"])
        .start();
    let address = dashboard_address(&cluster);
    let client = cluster.client();
    let n = 20;
    assert_eq!(
        client.get(&sum_of_incs(n), "total"),
        Ok(Value::from((1..=n).sum::<i64>()))
    );
    let tasks = (n + 1) as f64;

    // Snapshots are published a few times a second: poll until this one has the whole run.
    let (samples, types) = wait_until("/metrics to count the graph's tasks", DEADLINE, || {
        let answer = get(&address, "/metrics", &[]);
        assert_eq!(answer.status, 200);
        assert!(answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
        let (samples, types) = parse_metrics(&answer.body);
        (samples.get("zask_tasks_finished_total") == Some(&tasks)).then_some((samples, types))
    });
    for (family, kind) in [
        ("zask_tasks", "gauge"),
        ("zask_workers", "gauge"),
        ("zask_bytes_held", "gauge"),
        ("zask_tasks_finished_total", "counter"),
        ("zask_task_failures_total", "counter"),
        ("zask_transfers_total", "counter"),
        ("zask_recomputations_total", "counter"),
        ("zask_journal_writes_total", "counter"),
        ("zask_messages_received_total", "counter"),
        ("zask_prefix_tasks_done_total", "counter"),
        ("zask_worker_bytes_held", "gauge"),
    ] {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    assert_eq!(samples["zask_workers"], 2.0);
    assert_eq!(samples["zask_worker_threads"], 2.0);
    assert_eq!(
        samples["zask_prefix_tasks_done_total{prefix=\"inc\"}"],
        n as f64
    );
    assert_eq!(
        samples["zask_prefix_tasks_done_total{prefix=\"total\"}"],
        1.0
    );
    assert_eq!(samples["zask_prefix_tasks_pending{prefix=\"inc\"}"], 0.0);
    assert_eq!(samples["zask_task_failures_total"], 0.0);
    assert_eq!(samples["zask_recomputations_total"], 0.0);
    assert_eq!(samples["zask_workers_lost_total"], 0.0);
    assert_eq!(samples["zask_journal_writes_total"], 0.0, "no --state-dir");
    // The incs ran on both workers; wherever `total` ran, it fetched the others' results.
    assert!(samples["zask_transfers_total"] >= 1.0);
    assert!(samples["zask_transfers_total"] < n as f64);
    assert!(samples["zask_transfer_bytes_total"] >= samples["zask_transfers_total"]);
    // The client did not keep its results: everything was released.
    assert_eq!(samples["zask_tasks{state=\"processing\"}"], 0.0);
    assert_eq!(samples["zask_tasks{state=\"erred\"}"], 0.0);
    // At least: two registrations, the client's hello and its submit.
    assert!(samples["zask_messages_received_total"] >= 4.0);
    for w in cluster.worker_addresses() {
        assert!(
            samples.contains_key(&format!("zask_worker_keys{{worker=\"{w}\"}}")),
            "{w}"
        );
    }

    let answer = get(&address, "/api/status", &[]);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let status: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(status["address_to_clients"], cluster.address_to_clients());
    assert_eq!(status["address_to_workers"], cluster.address_to_workers());
    let workers: BTreeSet<&str> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["address"].as_str().unwrap())
        .collect();
    let expected: BTreeSet<&str> = cluster
        .worker_addresses()
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(workers, expected);
    for w in status["workers"].as_array().unwrap() {
        assert_eq!(w["nthreads"], 1);
        assert_eq!(w["processing"], 0);
    }
    assert_eq!(status["counters"]["tasks_finished_total"], n + 1);
    let stream = status["task_stream"].as_array().unwrap();
    assert_eq!(stream.len(), (n + 1) as usize, "every run of the graph");
    for run in stream {
        assert!(expected.contains(run["worker"].as_str().unwrap()), "{run}");
        assert!(run["start_ms"].as_u64() <= run["end_ms"].as_u64(), "{run}");
        let prefix = run["prefix"].as_str().unwrap();
        assert!(prefix == "inc" || prefix == "total", "{run}");
    }
    let inc = status["prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["prefix"] == "inc")
        .expect("the inc prefix");
    assert_eq!(
        (&inc["done"], &inc["erred"], &inc["pending"]),
        (&n.into(), &0.into(), &0.into())
    );
    // The cluster events: each worker's joining, as `zask events` prints it.
    let joined = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.as_str().unwrap().contains(" joined (name "))
        .count();
    assert_eq!(
        joined,
        status["workers"].as_array().unwrap().len(),
        "{status}"
    );
    assert!(status["logs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l.as_str().unwrap().contains("address_to_clients")));

    let health = get(&address, "/health", &[]);
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let page = get(&address, "/", &[]);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<table id=\"workers\">"));
    assert_eq!(get(&address, "/app.js", &[]).status, 200);
    assert_eq!(get(&address, "/no/such/page", &[]).status, 404);
    assert_eq!(
        exchange(&address, b"\x16\x03\x01 not http\r\n\r\n").status,
        400
    );
    assert_eq!(exchange(&address, b"PUT / HTTP/1.1\r\n\r\n").status, 405);
    // Still serving after all that.
    assert_eq!(get(&address, "/health", &[]).status, 200);
}

#[test]
fn failures_are_counted_per_prefix() {
    let cluster = TestCluster::options()
        .workers(1)
        .scheduler_args(&["--dashboard-port", "0"])
        .start();
    let address = dashboard_address(&cluster);
    let client = cluster.client();
    let g = zask::graph! { "boom" => ("fail", "on purpose"), "after" => ("inc", "boom") };
    assert!(client.get(&g, "after").is_err());
    let samples = wait_until("/metrics to count the failure", DEADLINE, || {
        let (samples, _) = parse_metrics(&get(&address, "/metrics", &[]).body);
        (samples.get("zask_task_failures_total") == Some(&1.0)).then_some(samples)
    });
    assert_eq!(
        samples["zask_prefix_tasks_erred_total{prefix=\"boom\"}"],
        1.0
    );
    assert_eq!(
        samples["zask_prefix_tasks_erred_total{prefix=\"after\"}"],
        1.0
    );
    assert_eq!(samples["zask_tasks_finished_total"], 0.0);
}

#[test]
fn a_secure_dashboard_off_loopback_needs_its_token() {
    // Secure (the test cluster's default) and listening everywhere: a token is required.
    let cluster = TestCluster::options()
        .workers(1)
        .scheduler_args(&["--dashboard-port", "0", "--dashboard-host", "0.0.0.0"])
        .start();
    let port = dashboard_address(&cluster)
        .rsplit_once(':')
        .map(|(_, p)| p.to_owned())
        .unwrap();
    let address = format!("127.0.0.1:{port}");
    let token_file = cluster.dir().join("dashboard.token");
    let token = std::fs::read_to_string(&token_file).expect("the token beside the access files");
    let token = token.trim();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "readable by its owner only");
    assert!(
        !cluster
            .client()
            .get_logs(None)
            .map(|l| format!("{l:?}"))
            .unwrap_or_default()
            .contains(token),
        "the token is never logged"
    );

    assert_eq!(get(&address, "/health", &[]).status, 200, "health is open");
    for path in [
        "/",
        "/metrics",
        "/api/status",
        "/events",
        "/metrics?token=wrong",
    ] {
        assert_eq!(get(&address, path, &[]).status, 401, "{path}");
    }
    let opened = get(&address, &format!("/?token={token}"), &[]);
    assert_eq!(opened.status, 200);
    let cookie = opened
        .header("set-cookie")
        .expect("a cookie for the page's requests");
    assert!(cookie.starts_with(&format!("zask_dashboard_token={token};")));
    assert!(cookie.contains("HttpOnly"));
    let with_cookie = get(
        &address,
        "/metrics",
        &[&format!("Cookie: zask_dashboard_token={token}")],
    );
    assert_eq!(with_cookie.status, 200);
    assert!(with_cookie.body.contains("# TYPE zask_workers gauge\n"));
}

#[test]
fn no_dashboard_means_no_http_port() {
    let cluster = TestCluster::options()
        .workers(1)
        .scheduler_args(&["--no-dashboard"])
        .start();
    // The dashboard would have been logged before the first worker registered.
    let log = std::fs::read_to_string(cluster.dir().join("scheduler.log")).unwrap();
    assert!(log.contains("address_to_clients"));
    assert!(!log.contains("dashboard at"), "{log}");
}

#[test]
fn journal_writes_are_counted_with_a_state_dir() {
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().display().to_string();
    let cluster = TestCluster::options()
        .workers(1)
        .scheduler_args(&["--dashboard-port", "0", "--state-dir", &state_dir])
        .start();
    let address = dashboard_address(&cluster);
    let client = cluster.client();
    assert_eq!(client.get(&sum_of_incs(3), "total"), Ok(Value::from(6)));
    let samples = wait_until("/metrics to count the run", DEADLINE, || {
        let (samples, _) = parse_metrics(&get(&address, "/metrics", &[]).body);
        (samples.get("zask_tasks_finished_total") == Some(&4.0)).then_some(samples)
    });
    // At least the submission and its end were journaled.
    assert!(samples["zask_journal_writes_total"] >= 2.0, "{samples:?}");
}

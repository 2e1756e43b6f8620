//! Stories, events and the cost of lost work against real processes: a worker SIGKILLed
//! mid-graph shows up in `zask story KEY` (its result lost with the worker, recomputed
//! elsewhere), in `zask events` and in the scheduler's log (`zask logs`) as one line saying
//! what the loss cost; and `zask logs --worker` selects one worker by name or by address.

mod common;

use std::sync::{mpsc, Arc};

use common::{run, wait_until, TestCluster, DEADLINE, ZASK};
use serde_json::Value as Json;
use zask::graph::key;
use zask::protocol::{EventKind, StoryEvent};
use zask::{graph, GetOptions, Graph, Key, Node, Value};

/// Runs `zask ARGS --scheduler ... (security)` and returns its standard output; it must
/// succeed.
fn zask(cluster: &TestCluster, args: &[&str]) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--scheduler", cluster.address_to_clients()]);
    let security = cluster.zask_security_args();
    all.extend(security.iter().map(String::as_str));
    let out = run(ZASK, &all);
    assert_eq!(out.code(), Some(0), "zask {args:?}: {out:?}");
    out.stdout
}

#[test]
fn a_worker_killed_mid_graph_shows_in_the_story_the_events_and_the_log() {
    // Two threads each: the gate holds one while x is recomputed on the other.
    let mut cluster = TestCluster::options()
        .with_test_functions()
        .nthreads(2)
        .start();
    let client = Arc::new(cluster.client());
    let gate = cluster.dir().join("gate");
    // x is computed first; y needs it and a gate that opens only once the test says so.
    let mut dsk = Graph::new();
    dsk.insert("x", ("inc", 1));
    dsk.insert(
        "gate",
        (
            "wait_for_file",
            gate.to_str().expect("a UTF-8 path").to_owned(),
        ),
    );
    dsk.insert(
        "y",
        ("add", key("x"), Node::from(("length", vec![key("gate")]))),
    );
    let (tx, result) = mpsc::channel();
    let getter = {
        let client = client.clone();
        std::thread::spawn(move || {
            let options = GetOptions {
                timeout: Some(DEADLINE),
                ..GetOptions::default()
            };
            let _ = tx.send(client.get_with(&dsk, "y", options));
        })
    };

    // x is held by one worker (the victim) while y waits for the gate.
    let victim = wait_until("x to be computed", DEADLINE, || {
        let who_has = client.who_has(vec!["x"]).expect("who_has");
        who_has[&Key::from("x")].first().cloned()
    });
    wait_until("the gate to run", DEADLINE, || {
        (client.status().expect("status").processing > 0).then_some(())
    });
    let survivor = cluster
        .worker_addresses()
        .iter()
        .find(|a| a.as_str() != victim.as_str())
        .expect("two workers")
        .clone();
    cluster.kill_worker(cluster.worker_index(&victim).expect("a test worker"));
    wait_until("x to be recomputed on the survivor", DEADLINE, || {
        let who_has = client.who_has(vec!["x"]).expect("who_has");
        (who_has[&Key::from("x")]
            .iter()
            .any(|w| w.as_str() == survivor))
        .then_some(())
    });
    std::fs::write(&gate, b"open").expect("the gate file");
    let answer = result
        .recv_timeout(DEADLINE + DEADLINE / 2)
        .expect("the get ends");
    getter.join().expect("the get thread");
    assert_eq!(answer, Ok(Value::from(3)));

    // The story of x: done on the victim, lost with it, recomputed on the survivor.
    let story = client.story("x").expect("story");
    let at = |wanted: &dyn Fn(&StoryEvent) -> bool| {
        story
            .steps
            .iter()
            .position(|s| wanted(&s.what))
            .unwrap_or_else(|| panic!("{story}"))
    };
    let done_first = at(&|e| matches!(e, StoryEvent::Finished { worker, .. } if *worker == victim));
    let lost = at(&|e| matches!(e, StoryEvent::ResultLost { worker } if *worker == victim));
    let done_again = story
        .steps
        .iter()
        .rposition(|s| matches!(&s.what, StoryEvent::Finished { worker, .. } if worker.as_str() == survivor))
        .unwrap_or_else(|| panic!("{story}"));
    assert!(done_first < lost && lost < done_again, "{story}");

    // The same through `zask story`, as text and as JSON.
    let text = zask(&cluster, &["story", "x"]);
    eprintln!("zask story x:\n{text}");
    let lost_at = text
        .find(&format!("result lost with {victim}"))
        .unwrap_or_else(|| panic!("{text}"));
    let redone_at = text
        .rfind(&format!("done on {survivor}"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(lost_at < redone_at, "{text}");
    let json: Json =
        serde_json::from_str(zask(&cluster, &["story", "x", "--json"]).trim()).expect("story JSON");
    assert_eq!(json["key"], "x", "{json}");
    let steps = json["steps"].as_array().expect("steps");
    assert!(
        steps
            .iter()
            .any(|s| s["event"] == "result_lost" && s["worker"] == victim.as_str()),
        "{json}"
    );

    // The events: one loss of the victim, with what it cost.
    let events = client.events().expect("events");
    let losses: Vec<&EventKind> = events
        .iter()
        .map(|e| &e.what)
        .filter(|e| matches!(e, EventKind::WorkerLost { worker, .. } if *worker == victim))
        .collect();
    assert_eq!(losses.len(), 1, "{events:?}");
    let EventKind::WorkerLost { cost, .. } = losses[0] else {
        unreachable!("filtered above")
    };
    assert!(
        cost.results_lost >= 1 && cost.still_needed >= 1 && cost.recomputing >= 1,
        "{}",
        losses[0]
    );
    let json: Json =
        serde_json::from_str(zask(&cluster, &["events", "--json"]).trim()).expect("events JSON");
    assert!(
        json.as_array()
            .expect("a list")
            .iter()
            .any(|e| e["event"] == "worker_lost"
                && e["worker"] == victim.as_str()
                && e["cost"]["results_lost"].as_u64() >= Some(1)),
        "{json}"
    );

    // The scheduler's log says what the loss cost, in one line.
    let logs: Json = serde_json::from_str(zask(&cluster, &["logs"]).trim()).expect("logs JSON");
    let lines = logs["scheduler"].as_array().expect("scheduler lines");
    let cost_line = lines
        .iter()
        .filter_map(Json::as_str)
        .find(|l| l.contains(&format!("worker {victim} lost (")))
        .unwrap_or_else(|| panic!("no loss line for {victim}: {lines:?}"));
    eprintln!("the loss in the scheduler's log: {cost_line}");
    assert!(
        cost_line.contains("still needed, recomputing")
            && cost_line.contains("running there rerun"),
        "{cost_line}"
    );
    assert!(cost_line.contains(&losses[0].to_string()), "{cost_line}");
}

#[test]
fn zask_logs_worker_selects_one_worker_by_name_or_by_address() {
    let cluster = TestCluster::options()
        .worker_args(&["--name", "story-w{i}"])
        .start();
    let client = cluster.client();
    let options = GetOptions {
        timeout: Some(DEADLINE),
        ..GetOptions::default()
    };
    let seed = graph! { "x" => 1, "y" => ("add", "x", 2) };
    assert_eq!(client.get_with(&seed, "y", options), Ok(Value::from(3)));
    let addresses = cluster.worker_addresses().to_vec();
    for (i, selector) in [(1, "story-w1".to_owned()), (0, addresses[0].clone())] {
        let out = zask(&cluster, &["logs", "--worker", &selector]);
        let json: Json = serde_json::from_str(out.trim()).expect("logs JSON");
        let workers = json["workers"].as_object().expect("workers by address");
        assert_eq!(
            workers.keys().collect::<Vec<_>>(),
            vec![&addresses[i]],
            "--worker {selector}: {json}"
        );
        assert!(
            !workers[&addresses[i]].as_array().expect("lines").is_empty(),
            "{json}"
        );
        assert!(json["scheduler"].as_array().is_some(), "{json}");
    }
}

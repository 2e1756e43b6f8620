//! `Client::get_logs()` and `zask logs` against real processes: the scheduler's and each
//! worker's recent log lines.

mod common;

use common::{run, TestCluster, DEADLINE, ZASK};
use serde_json::Value as Json;
use zask::{graph, GetOptions, Value, WorkerAddress, WorkerSelector};

#[test]
fn the_scheduler_and_every_worker_return_their_recent_lines() {
    let cluster = TestCluster::with_workers(2);
    let client = cluster.client();
    let options = GetOptions {
        timeout: Some(DEADLINE),
        ..GetOptions::default()
    };
    let seed = graph! { "x" => 1, "y" => ("add", "x", 2) };
    assert_eq!(client.get_with(&seed, "y", options), Ok(Value::from(3)));

    let logs = client.get_logs(None).expect("get_logs");
    assert!(
        logs.scheduler.iter().any(|l| l.contains("registered")),
        "the scheduler's lines name the registrations: {:?}",
        logs.scheduler
    );
    let addresses: Vec<WorkerAddress> = cluster
        .worker_addresses()
        .iter()
        .map(|a| WorkerAddress::from(a.as_str()))
        .collect();
    assert_eq!(
        logs.workers.keys().cloned().collect::<Vec<_>>(),
        {
            let mut sorted = addresses.clone();
            sorted.sort();
            sorted
        },
        "every worker answered"
    );
    for (address, lines) in &logs.workers {
        assert!(!lines.is_empty(), "worker {address} has lines");
    }

    // One worker only.
    let one = client
        .get_logs(Some(WorkerSelector::Address(addresses[0].clone())))
        .expect("get_logs of one worker");
    assert_eq!(
        one.workers.keys().collect::<Vec<_>>(),
        vec![&addresses[0]],
        "only the selected worker"
    );

    // The command line prints the same as JSON.
    let mut args = vec!["logs", "--scheduler", cluster.address_to_clients()];
    let security = cluster.zask_security_args();
    args.extend(security.iter().map(String::as_str));
    let out = run(ZASK, &args);
    assert_eq!(out.code(), Some(0), "{out:?}");
    let json: Json = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out:?}"));
    let scheduler = json["scheduler"].as_array().expect("scheduler lines");
    assert!(
        scheduler
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("registered"))),
        "{json}"
    );
    let workers = json["workers"].as_object().expect("workers by address");
    assert_eq!(workers.len(), 2, "{json}");
    for address in &addresses {
        let lines = workers[address.as_str()]
            .as_array()
            .expect("a worker's lines");
        assert!(!lines.is_empty(), "{json}");
    }
}

//! Slow but healthy is not lost, on real processes: a worker whose heartbeats wait behind a big
//! value on its one connection to the scheduler is not taken for lost while the value is on
//! its way (it announces it: `FromWorker::Sending`).

mod common;

use common::{TestCluster, DEADLINE};
use zask::protocol::EventKind;
use zask::{graph, GetOptions, Value};

/// 250 MB through the scheduler (worker → scheduler → client, over CurveZMQ, in a debug build)
/// takes far longer than the 1 s heartbeat timeout here, and the worker's heartbeats (every
/// 50 ms) queue behind the value. Without the announcement the worker was lost while sending
/// it, its value with it, again and again.
#[test]
fn a_worker_sending_a_250mb_value_is_not_lost_with_a_1s_heartbeat_timeout() {
    let mut cluster = TestCluster::options()
        .workers(1)
        .with_test_functions()
        .scheduler_args(&["--heartbeat-timeout-ms", "1000"])
        .worker_args(&["--heartbeat-interval-ms", "50"])
        .start();
    let client = cluster.client();
    let big = graph! { "big" => ("alloc", 250_000_000i64) };
    let options = GetOptions {
        timeout: Some(DEADLINE),
        ..GetOptions::default()
    };
    match client.get_with(&big, "big", options) {
        Ok(Value::Bytes(b)) => assert_eq!(b.len(), 250_000_000),
        other => panic!("the 250 MB value did not come back: {other:?}"),
    }
    let lost: Vec<_> = client
        .events()
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.what, EventKind::WorkerLost { .. }))
        .collect();
    assert!(lost.is_empty(), "a worker was taken for lost: {lost:?}");
    assert_eq!(client.workers().unwrap().len(), 1);
    assert!(cluster.worker_running(0));
}

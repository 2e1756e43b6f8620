//! Slow but healthy is not lost, on real processes: a worker whose heartbeats wait behind a big
//! value on its one connection to the scheduler is not taken for lost while the value is on
//! its way (it announces it: `FromWorker::Sending`).

mod common;

use common::{TestCluster, DEADLINE};
use zask::{graph, GetOptions, Value};

/// 250 MB through the scheduler (worker → scheduler → client, over CurveZMQ, in a debug build)
/// takes longer than the 1 s heartbeat timeout here (1 to 1.5 s measured), and the worker's heartbeats (every
/// 50 ms) queue behind the value. Without the announcement the worker is lost while sending
/// it, its value with it, again and again, and the value never comes back (seen: the 30 s
/// `DEADLINE` passes). A loss before the value leaves (on a loaded machine a debug-build
/// worker can stall that long storing 250 MB) costs one rerun and is not what this is about.
#[test]
fn a_250mb_value_a_worker_sends_comes_back_with_a_1s_heartbeat_timeout() {
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
    assert_eq!(client.workers().unwrap().len(), 1);
    assert!(cluster.worker_running(0));
}

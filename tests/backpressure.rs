//! Bounded queues on real processes: a client that sends and never reads its replies slows
//! only itself. The scheduler never waits for it and never grows without bound: when its
//! queue of replies is full it is treated as gone (logged), while a normal client keeps
//! getting its answers.

mod common;

use std::time::{Duration, Instant};

use common::{wait_until, TestCluster, DEADLINE};
use zask::protocol::codec::encode;
use zask::protocol::{FromClient, RequestId};
use zask::security::Role;
use zask::{graph, ClientConfig, Value};

/// Scheduler queue per client connection in this test: small, so the stall shows quickly.
const CLIENT_QUEUE_MAX: &str = "16";
/// Requests the stuck client sends: far more replies than its queue, its kernel buffers and
/// the scheduler's queue for it can hold together.
const FLOOD: u64 = 20_000;

#[test]
fn a_client_that_never_reads_is_dropped_and_others_keep_their_answers() {
    let cluster = TestCluster::start(
        TestCluster::options()
            .workers(1)
            .scheduler_args(&["--client-queue-max", CLIENT_QUEUE_MAX]),
    );
    cluster.wait_for_workers(1);
    let ctx = zmq::Context::new();
    let stuck = ctx.socket(zmq::DEALER).unwrap();
    stuck.set_identity(b"stuck-client").unwrap();
    // Read as little as possible: one message queued, a small kernel buffer.
    stuck.set_rcvhwm(1).unwrap();
    stuck.set_rcvbuf(4096).unwrap();
    stuck.set_sndhwm(0).unwrap();
    stuck.set_sndtimeo(DEADLINE.as_millis() as i32).unwrap();
    stuck.set_linger(0).unwrap();
    cluster.authenticate(&stuck, Role::Client);
    stuck.connect(cluster.address_to_clients()).unwrap();
    for request in 1..=FLOOD {
        // Status replies are a few hundred bytes each: megabytes that are never read.
        stuck
            .send(
                encode(&FromClient::Status {
                    request: RequestId(request),
                }),
                0,
            )
            .expect("the scheduler keeps reading requests");
    }

    // Meanwhile, a normal client is served, each answer within a bounded wait.
    let config = ClientConfig {
        scheduler_timeout_ms: 20_000,
        ..ClientConfig::default()
    };
    let client = cluster.client_with(config);
    let log = cluster.dir().join("scheduler.log");
    let started = Instant::now();
    let mut answered = 0;
    loop {
        let options = zask::GetOptions {
            timeout: Some(DEADLINE),
            ..Default::default()
        };
        let i = answered as i64;
        let v = client
            .get_with(&graph! { "x" => ("inc", i) }, "x", options)
            .expect("the normal client is answered");
        assert_eq!(v, Value::from(i + 1));
        answered += 1;
        let dropped = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("client stuck-client is not reading its replies");
        if dropped && answered >= 20 {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the scheduler never gave up on the client that does not read; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Once dropped, nothing more is queued for it: the scheduler still answers quickly.
    wait_until(
        "a status after the stuck client was dropped",
        DEADLINE,
        || client.status().ok(),
    );
    // The stuck client, reading at last, gets what was queued before it was dropped and
    // nothing like its 20,000 replies.
    stuck.set_rcvtimeo(200).unwrap();
    let mut received = 0u64;
    while stuck.recv_multipart(0).is_ok() {
        received += 1;
        assert!(
            received < FLOOD,
            "every reply was kept for the stuck client"
        );
    }
}

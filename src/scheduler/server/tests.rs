//! Tests of the scheduler's IO layer: the shipped core loop and socket loop, driven directly.

use std::cell::RefCell;

use super::*;
use crate::collection::Collection;
use crate::protocol::codec::encode;
use crate::protocol::{ClientRole, FromClient, RequestId};
use crate::scheduler::core::JournalOp;

/// A journal in memory whose flush fails when told to.
struct TestJournal {
    fail_flush: bool,
    applied: RefCell<Vec<JournalOp>>,
}

impl JournalWrite for TestJournal {
    fn apply(&self, op: &JournalOp) -> Result<(), JournalError> {
        self.applied.borrow_mut().push(op.clone());
        Ok(())
    }
    fn flush(&self) -> Result<(), JournalError> {
        if self.fail_flush {
            Err(JournalError::Io(
                "No space left on device (os error 28)".into(),
            ))
        } else {
            Ok(())
        }
    }
    fn location(&self) -> String {
        "/test/state".into()
    }
}

type Sent<M> = Receiver<(ConnectionId, M, Vec<Frame>)>;

/// Runs the shipped core loop over a batch (hello, then store a collection: one journal
/// operation and two replies) until its inputs end; returns how it ended and what it sent.
fn run_batch(
    journal: TestJournal,
) -> (
    Result<(), JournalFailed>,
    TestJournal,
    Sent<ToClient>,
    Sent<ToWorker>,
) {
    let core = SchedulerCore::new(CoreConfig {
        journal: true,
        ..CoreConfig::default()
    });
    let (in_tx, in_rx) = crossbeam_channel::unbounded();
    let (to_workers, to_workers_rx) = crossbeam_channel::unbounded();
    let (to_clients, to_clients_rx) = crossbeam_channel::unbounded();
    let (worker_waker, _w) = net::waker().unwrap();
    let (client_waker, _c) = net::waker().unwrap();
    let client = ConnectionId::from("client-1");
    let collection = Collection {
        kind: crate::collection::CollectionKind::Graph,
        graph: vec![("x".into(), crate::graph::Expr::Lit(1.into()))],
        keys: vec!["x".into()],
        npartitions: 1,
        name: "c".into(),
    };
    for msg in [
        FromClient::Hello {
            protocol_version: crate::protocol::PROTOCOL_VERSION,
        },
        FromClient::SetCollection {
            request: RequestId(1),
            name: "c".into(),
            collection,
        },
    ] {
        in_tx
            .send(Input::Core(Event::FromClient {
                identity: client.clone(),
                role: ClientRole::Operator,
                msg,
                frames: vec![],
            }))
            .unwrap();
    }
    // Ends the loop once the batch is handled.
    drop(in_tx);
    let outs = Outputs {
        to_workers,
        worker_waker,
        to_clients,
        client_waker,
        legacy: LegacyOutputs {
            to_workers: crossbeam_channel::unbounded().0,
            workers_waker: net::waker().unwrap().0,
            to_clients: crossbeam_channel::unbounded().0,
            clients_waker: net::waker().unwrap().0,
            address_to_workers: "tcp://127.0.0.1:1".into(),
            address_to_clients: "tcp://127.0.0.1:2".into(),
            bridges: BridgeSettings {
                address_to_workers: "tcp://127.0.0.1:1".into(),
                host: "127.0.0.1".into(),
                timeout_ms: 20_000,
                to_socket: crossbeam_channel::unbounded().0,
                waker: net::waker().unwrap().0,
                access: None,
            },
        },
    };
    let stop = Arc::new(AtomicBool::new(false));
    let ended = core_loop(
        core,
        Some(&journal),
        in_rx,
        outs,
        Clock::start(),
        stop,
        None,
    );
    (ended, journal, to_clients_rx, to_workers_rx)
}

#[test]
fn journal_flush_failure_stops_the_loop_and_sends_nothing_of_the_batch() {
    let (ended, journal, to_clients, to_workers) = run_batch(TestJournal {
        fail_flush: true,
        applied: RefCell::new(vec![]),
    });
    let err = ended.unwrap_err();
    assert_eq!(err.location, "/test/state");
    assert!(err.to_string().contains("/test/state"), "{err}");
    assert!(err.to_string().contains("No space left"), "{err}");
    assert_eq!(journal.applied.borrow().len(), 1, "the operation was tried");
    // Neither the welcome nor the collection's "done" left.
    assert_eq!(to_clients.try_iter().count(), 0);
    assert_eq!(to_workers.try_iter().count(), 0);
}

#[test]
fn a_durable_batch_is_sent_after_its_journal() {
    let (ended, journal, to_clients, _) = run_batch(TestJournal {
        fail_flush: false,
        applied: RefCell::new(vec![]),
    });
    assert_eq!(ended, Ok(()));
    assert!(matches!(
        journal.applied.borrow()[..],
        [JournalOp::PutCollection { .. }]
    ));
    let sent: Vec<ToClient> = to_clients.try_iter().map(|(_, m, _)| m).collect();
    assert!(
        matches!(
            sent[..],
            [
                ToClient::Welcome { .. },
                ToClient::Done {
                    request: RequestId(1)
                }
            ]
        ),
        "{sent:?}"
    );
}

/// The socket thread, with the core's queue full (room for one event, nobody reading):
/// it stops reading its socket but keeps sending; once the core reads, the waiting
/// requests arrive in order, none lost.
#[test]
fn a_full_core_queue_stops_reading_but_never_sending() {
    let deadline = Duration::from_secs(20);
    let ctx = zmq::Context::new();
    let router = ctx.socket(zmq::ROUTER).unwrap();
    net::configure_bounded(&router, net::DEFAULT_MAX_MESSAGE_BYTES, 100).unwrap();
    router.set_router_mandatory(true).unwrap();
    let address = net::bind(&router, "127.0.0.1", 0).unwrap();
    let client = ctx.socket(zmq::DEALER).unwrap();
    client.set_identity(b"c1").unwrap();
    client.set_linger(0).unwrap();
    client.set_rcvtimeo(deadline.as_millis() as i32).unwrap();
    client.connect(&address).unwrap();
    let (events_tx, events_rx) = crossbeam_channel::bounded(1);
    let (out_tx, out_rx) = crossbeam_channel::unbounded::<(ConnectionId, ToClient, _)>();
    let (waker, wake_rx) = net::waker().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            socket_loop(
                Port::Clients,
                router,
                wake_rx,
                out_rx,
                crossbeam_channel::never(),
                events_tx,
                stop,
                decode_client,
                None,
                super::rate::RateLimit::per_second(
                    SchedulerConfig::default().client_max_messages_per_second,
                ),
            )
        })
    };
    for request in 1..=5 {
        client
            .send(
                encode(&FromClient::Status {
                    request: RequestId(request),
                }),
                0,
            )
            .unwrap();
    }
    // The core's queue fills with the first request...
    let started = std::time::Instant::now();
    while !events_rx.is_full() {
        assert!(
            started.elapsed() < deadline,
            "the first request never arrived"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // ...and the socket thread still sends what the core wants sent.
    out_tx
        .send((
            ConnectionId::from("c1"),
            ToClient::Done {
                request: RequestId(7),
            },
            vec![],
        ))
        .unwrap();
    waker.wake();
    let reply = client
        .recv_multipart(0)
        .expect("a reply while the core is busy");
    let reply: ToClient = crate::protocol::codec::decode(&reply[0]).unwrap();
    assert_eq!(
        reply,
        ToClient::Done {
            request: RequestId(7)
        }
    );
    // The core reads: every request arrives, in order.
    for expected in 1..=5 {
        match events_rx.recv_timeout(deadline) {
            Ok(Input::Core(Event::FromClient {
                msg: FromClient::Status { request },
                ..
            })) => assert_eq!(request, RequestId(expected)),
            Ok(other) => panic!("unexpected event {other:?}"),
            Err(e) => panic!("request {expected} never reached the core: {e}"),
        }
    }
    stop.store(true, Ordering::SeqCst);
    waker.wake();
    thread.join().unwrap();
}

/// A legacy `schedule` from the unmodified client's frames, with `payload` as its payload.
fn legacy_schedule(identity: &str, payload: &zask_compat::pickle::Pickle) -> Input {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/compat/tests/fixtures/legacy/");
    let header = std::fs::read(format!("{dir}schedule.header.pkl")).unwrap();
    let payload = zask_compat::pickle::encode(payload, payload.root).unwrap();
    Input::Legacy(
        legacy::decode(
            Port::Clients,
            ConnectionId::from(identity),
            &[header, payload],
        )
        .unwrap(),
    )
}

/// The core's answer to a legacy graph is turned into a `schedule-ack` on the legacy channel
/// and never sent raw to the legacy peer; a native client in the same batch is unaffected.
#[test]
fn the_cores_answer_to_a_legacy_graph_becomes_a_schedule_ack_never_a_native_message() {
    use zask_compat::pickle::{decode, Node, Pickle};
    // {'dask': {'a': (add, 'b', 1), 'b': (add, 'a', 1)}, 'keys': 'a', 'keep_results': False}:
    // a cycle, which the core refuses at once (no worker needed).
    let mut p = Pickle::new();
    let add = p.add(Node::Global {
        module: "_operator".into(),
        name: "add".into(),
    });
    let (a, b, one) = (
        p.add(Node::Str("a".into())),
        p.add(Node::Str("b".into())),
        p.add(Node::Int(1)),
    );
    let ta = p.add(Node::Tuple(vec![add, b, one]));
    let tb = p.add(Node::Tuple(vec![add, a, one]));
    let dask = p.add(Node::Dict(vec![(a, ta), (b, tb)]));
    let (kd, kk, kr) = (
        p.add(Node::Str("dask".into())),
        p.add(Node::Str("keys".into())),
        p.add(Node::Str("keep_results".into())),
    );
    let no = p.add(Node::Bool(false));
    p.root = p.add(Node::Dict(vec![(kd, dask), (kk, a), (kr, no)]));

    let (in_tx, in_rx) = crossbeam_channel::unbounded();
    in_tx.send(legacy_schedule("legacy-1", &p)).unwrap();
    in_tx
        .send(Input::Core(Event::FromClient {
            identity: ConnectionId::from("native-1"),
            role: ClientRole::Operator,
            msg: FromClient::Hello {
                protocol_version: crate::protocol::PROTOCOL_VERSION,
            },
            frames: vec![],
        }))
        .unwrap();
    drop(in_tx);
    let (to_clients, to_clients_rx) = crossbeam_channel::unbounded();
    let (legacy_to_clients, legacy_rx) = crossbeam_channel::unbounded();
    let outs = Outputs {
        to_workers: crossbeam_channel::unbounded().0,
        worker_waker: net::waker().unwrap().0,
        to_clients,
        client_waker: net::waker().unwrap().0,
        legacy: LegacyOutputs {
            to_workers: crossbeam_channel::unbounded().0,
            workers_waker: net::waker().unwrap().0,
            to_clients: legacy_to_clients,
            clients_waker: net::waker().unwrap().0,
            address_to_workers: "tcp://127.0.0.1:1".into(),
            address_to_clients: "tcp://127.0.0.1:2".into(),
            bridges: BridgeSettings {
                address_to_workers: "tcp://127.0.0.1:1".into(),
                host: "127.0.0.1".into(),
                timeout_ms: 20_000,
                to_socket: crossbeam_channel::unbounded().0,
                waker: net::waker().unwrap().0,
                access: None,
            },
        },
    };
    let core = SchedulerCore::new(CoreConfig::default());
    let stop = Arc::new(AtomicBool::new(false));
    let ended = core_loop(
        core,
        None::<TestJournal>,
        in_rx,
        outs,
        Clock::start(),
        stop,
        None,
    );
    assert_eq!(ended, Ok(()));
    let native: Vec<_> = to_clients_rx.try_iter().collect();
    assert!(
        matches!(&native[..], [(id, ToClient::Welcome { .. }, _)] if *id == ConnectionId::from("native-1")),
        "only the native client gets native messages: {native:?}"
    );
    let legacy: Vec<_> = legacy_rx.try_iter().collect();
    let [(id, frames)] = &legacy[..] else {
        panic!("one legacy reply: {legacy:?}")
    };
    assert_eq!(*id, ConnectionId::from("legacy-1"));
    let (h, p) = (decode(&frames[0]).unwrap(), decode(&frames[1]).unwrap());
    let field = |name| h.get(h.dict_get(h.root, name).unwrap()).unwrap().clone();
    assert_eq!(field("function"), Node::Str("schedule-ack".into()));
    assert_eq!(field("status"), Node::Str("Error".into()));
    assert_eq!(field("jobid"), Node::Str("schedule-0".into()));
    let result = p.render(p.dict_get(p.root, "result").unwrap());
    assert!(
        result.starts_with("Reduce(Global(builtins RuntimeError)") && result.contains("cycle"),
        "{result}"
    );
}

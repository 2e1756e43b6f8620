//! Unit tests of the worker state machine, driven directly with no sockets, threads or store.
//! Every message from the scheduler or a peer passes through the real codec before it is fed
//! in, every message to the scheduler is checked to round-trip too, and every test ends by
//! checking that nothing unexpected is left to do.

// Tests pick commands out of a list with `Result<Wanted, Command>`: the size of the
// `Err` (the command handed back) does not matter here.
#![allow(clippy::result_large_err)]

use super::*;
use crate::graph::Expr;
use crate::protocol::codec::{decode, encode, encode_plain, encode_value};
use crate::protocol::{
    cut_text, ComputeTask, ErredTask, MemoryReport, TaskErrorKind, WorkerAddress, PROTOCOL_VERSION,
    TASK_ERROR_BYTES_MAX,
};
use crate::value::Value;

const ME: &str = "tcp://me:1";
const P1: &str = "tcp://p1:1";
const P2: &str = "tcp://p2:1";
const P3: &str = "tcp://p3:1";

fn config(nthreads: u32) -> WorkerCoreConfig {
    WorkerCoreConfig {
        registration: WorkerRegistration {
            protocol_version: PROTOCOL_VERSION,
            address: ME.into(),
            name: "me".into(),
            nthreads,
            memory_limit_bytes: 0,
            pid: 42,
            store: "memory".into(),
            keys: vec![],
            nanny_token: None,
            runs_python: false,
        },
        heartbeat_interval_ms: 1000,
        fetch_timeout_ms: 5000,
        death_timeout_ms: 60_000,
        max_message_bytes: 1000,
    }
}

fn k(s: &str) -> Key {
    Key::from(s)
}

fn keys(ks: &[&str]) -> Vec<Key> {
    ks.iter().map(|s| k(s)).collect()
}

/// A value frame as a peer or the scheduler would send it.
fn frame(v: i64) -> Frame {
    encode_value(&Value::from(v))
}

/// A compute message: `key` adds up its dependencies, each fetchable from the given holders.
fn task(key: &str, deps: &[(&str, &[&str])], report_value: bool) -> ComputeTask {
    let args = deps.iter().map(|(d, _)| Expr::Ref(k(d))).collect();
    ComputeTask {
        key: k(key),
        spec: encode_plain(&Expr::Call("add".into(), args)),
        dependencies: deps
            .iter()
            .map(|(d, holders)| {
                (
                    k(d),
                    holders.iter().map(|h| WorkerAddress::from(*h)).collect(),
                )
            })
            .collect(),
        report_value,
    }
}

fn failure(message: &str) -> TaskError {
    TaskError {
        kind: TaskErrorKind::Failed,
        message: message.into(),
    }
}

fn finished(key: &str, nbytes: u64, fetched: &[(&str, u64)], has_value: bool) -> FinishedTask {
    FinishedTask {
        key: k(key),
        nbytes,
        fetched: fetched.iter().map(|(d, n)| (k(d), *n)).collect(),
        has_value,
    }
}

fn execute(t: &ComputeTask) -> WorkerCommand {
    WorkerCommand::Execute {
        key: t.key.clone(),
        spec: t.spec.clone(),
        dependencies: t.dependencies.iter().map(|(d, _)| d.clone()).collect(),
    }
}

#[derive(Debug, PartialEq)]
struct FetchSent {
    address: WorkerAddress,
    request: u64,
    keys: Vec<Key>,
}

struct Harness {
    core: WorkerCore,
    now: u64,
    /// Commands taken but not yet examined, in order.
    inbox: Vec<WorkerCommand>,
}

impl Harness {
    /// A worker that has registered at time 0 (the `Register` is checked and consumed).
    fn new(nthreads: u32) -> Harness {
        let mut h = Harness::unregistered(config(nthreads));
        h.core.register(0);
        h.flush();
        let sent = h.take_sent();
        assert!(
            matches!(&sent[..], [FromWorker::Register(r)] if r.keys.is_empty()),
            "{sent:?}"
        );
        h.assert_quiet();
        h
    }

    fn unregistered(config: WorkerCoreConfig) -> Harness {
        Harness {
            core: WorkerCore::new(config),
            now: 0,
            inbox: Vec::new(),
        }
    }

    fn flush(&mut self) {
        self.check();
        let cmds = self.core.take_commands();
        self.inbox.extend(cmds);
        self.check();
    }

    /// The core's own recount (`check_invariants`), after every step.
    fn check(&self) {
        if let Err(e) = self.core.check_invariants() {
            panic!("worker core invariant broken: {e} ({e:?})");
        }
    }

    /// Feeds an event without taking the commands (to see what gets batched).
    fn feed(&mut self, event: WorkerEvent) {
        // Round-trip through the codec, as the IO layer would.
        let event = match event {
            WorkerEvent::FromScheduler { msg, frames } => WorkerEvent::FromScheduler {
                msg: decode(&encode(&msg)).unwrap(),
                frames,
            },
            WorkerEvent::FromPeer { peer, msg } => WorkerEvent::FromPeer {
                peer,
                msg: decode(&encode(&msg)).unwrap(),
            },
            WorkerEvent::PeerAnswered {
                address,
                msg,
                frames,
            } => WorkerEvent::PeerAnswered {
                address,
                msg: decode(&encode(&msg)).unwrap(),
                frames,
            },
            local @ (WorkerEvent::Executed { .. }
            | WorkerEvent::StoreFailed { .. }
            | WorkerEvent::SpillFailed { .. }) => local,
        };
        self.core.handle(self.now, event);
        self.check();
    }

    fn step(&mut self, event: WorkerEvent) {
        self.feed(event);
        self.flush();
    }

    fn scheduler_sends(&mut self, msg: ToWorker, frames: Vec<Frame>) {
        self.step(WorkerEvent::FromScheduler { msg, frames });
    }

    fn compute(&mut self, tasks: Vec<ComputeTask>) {
        self.scheduler_sends(ToWorker::Compute(tasks), vec![]);
    }

    fn release(&mut self, ks: &[&str]) {
        self.scheduler_sends(ToWorker::Release(keys(ks)), vec![]);
    }

    fn put_data(&mut self, request: u64, values: &[(&str, Frame)]) {
        self.scheduler_sends(
            ToWorker::PutData {
                request,
                keys: values.iter().map(|(key, _)| k(key)).collect(),
            },
            values.iter().map(|(_, f)| f.clone()).collect(),
        );
    }

    fn peer_answers(&mut self, address: &str, msg: PeerReply, frames: Vec<Frame>) {
        self.step(WorkerEvent::PeerAnswered {
            address: address.into(),
            msg,
            frames,
        });
    }

    /// The peer at `address` answers request `request` with the value of `key`.
    fn peer_has(&mut self, address: &str, request: u64, key: &str, value: Frame) {
        self.peer_answers(
            address,
            PeerReply::Data {
                request,
                found: vec![k(key)],
                missing: vec![],
                chunks: vec![1],
            },
            vec![value],
        );
    }

    /// The peer at `address` answers request `request`: it does not hold `key`.
    fn peer_lacks(&mut self, address: &str, request: u64, key: &str) {
        self.peer_answers(
            address,
            PeerReply::Data {
                request,
                found: vec![],
                missing: vec![k(key)],
                chunks: vec![],
            },
            vec![],
        );
    }

    /// The runner reports that `key` ran.
    fn executed(&mut self, key: &str, result: Result<u64, TaskError>) {
        self.step(WorkerEvent::Executed {
            key: k(key),
            result,
        });
    }

    fn tick(&mut self, now: u64) {
        self.now = now;
        self.core.tick(now);
        self.flush();
    }

    /// Removes and returns the commands `f` accepts, keeping the others in order.
    fn take<T>(&mut self, mut f: impl FnMut(WorkerCommand) -> Result<T, WorkerCommand>) -> Vec<T> {
        let mut out = Vec::new();
        let mut rest = Vec::new();
        for c in std::mem::take(&mut self.inbox) {
            match f(c) {
                Ok(t) => out.push(t),
                Err(c) => rest.push(c),
            }
        }
        self.inbox = rest;
        out
    }

    /// Removes and returns every command, in order.
    fn take_all(&mut self) -> Vec<WorkerCommand> {
        std::mem::take(&mut self.inbox)
    }

    /// Keys of the `Execute` commands, in order.
    fn take_executes(&mut self) -> Vec<Key> {
        self.take(|c| match c {
            WorkerCommand::Execute { key, .. } => Ok(key),
            c => Err(c),
        })
    }

    fn take_fetches(&mut self) -> Vec<FetchSent> {
        self.take(|c| match c {
            WorkerCommand::FetchFromPeer {
                address,
                request,
                keys,
            } => Ok(FetchSent {
                address,
                request,
                keys,
            }),
            c => Err(c),
        })
    }

    /// The one fetch sent since the last look; returns its request id.
    fn take_one_fetch(&mut self, address: &str, key: &str) -> u64 {
        let fetches = self.take_fetches();
        match &fetches[..] {
            [f] if f.address.as_str() == address && f.keys == vec![k(key)] => f.request,
            other => panic!("expected one fetch of {key} from {address}, got {other:?}"),
        }
    }

    /// Each `ReportFinished` command, in order.
    fn take_reports(&mut self) -> Vec<Vec<FinishedTask>> {
        self.take(|c| match c {
            WorkerCommand::ReportFinished(done) => Ok(done),
            c => Err(c),
        })
    }

    /// Messages to the scheduler other than heartbeats, checked to round-trip through the
    /// codec and to carry no frames.
    fn take_sent(&mut self) -> Vec<FromWorker> {
        self.take(|c| match c {
            WorkerCommand::ToScheduler { msg, frames } if msg != FromWorker::Heartbeat => {
                assert!(frames.is_empty(), "{msg:?} carries frames");
                let back: FromWorker = decode(&encode(&msg)).unwrap();
                assert_eq!(back, msg);
                Ok(msg)
            }
            c => Err(c),
        })
    }

    /// The memory reports sent since the last look, checked to round-trip.
    fn take_memory_reports(&mut self) -> Vec<MemoryReport> {
        self.take(|c| match c {
            WorkerCommand::ToScheduler {
                msg: FromWorker::Memory(report),
                frames,
            } => {
                assert!(frames.is_empty());
                let msg = FromWorker::Memory(report.clone());
                assert_eq!(decode::<FromWorker>(&encode(&msg)).unwrap(), msg);
                Ok(report)
            }
            c => Err(c),
        })
    }

    /// The keys spilled since the last look, one list per `Spill` command.
    fn take_spills(&mut self) -> Vec<Vec<Key>> {
        self.take(|c| match c {
            WorkerCommand::Spill(keys) => Ok(keys),
            c => Err(c),
        })
    }

    fn take_heartbeats(&mut self) -> usize {
        self.take(|c| match c {
            WorkerCommand::ToScheduler {
                msg: FromWorker::Heartbeat,
                frames,
            } => {
                assert!(frames.is_empty());
                Ok(())
            }
            c => Err(c),
        })
        .len()
    }

    fn take_stores(&mut self) -> Vec<(Key, Frame)> {
        self.take(|c| match c {
            WorkerCommand::Store { key, frame } => Ok((key, frame)),
            c => Err(c),
        })
    }

    fn take_deletes(&mut self) -> Vec<Vec<Key>> {
        self.take(|c| match c {
            WorkerCommand::Delete(ks) => Ok(ks),
            c => Err(c),
        })
    }

    /// Nothing examined is left over, and the core has nothing more to say.
    fn assert_quiet(&mut self) {
        self.flush();
        assert!(
            self.inbox.is_empty(),
            "unexpected commands: {:#?}",
            self.inbox
        );
    }

    /// Runs `key` to completion with a result of `nbytes` and returns the one report it makes.
    fn run(&mut self, key: &str, nbytes: u64) -> Vec<FinishedTask> {
        self.executed(key, Ok(nbytes));
        let reports = self.take_reports();
        assert_eq!(reports.len(), 1, "one report for {key}: {reports:?}");
        reports.into_iter().next().unwrap()
    }
}

// --- Registration and heartbeats -------------------------------------------------------------

#[test]
fn register_sends_the_registration_with_the_keys_the_store_holds() {
    let mut h = Harness::unregistered(config(3));
    h.put_data(1, &[("a", frame(1)), ("b", frame(2))]);
    h.take_stores();
    h.take_sent();
    h.core.register(50);
    h.flush();
    let sent = h.take_sent();
    let [FromWorker::Register(reg)] = &sent[..] else {
        panic!("{sent:?}");
    };
    assert_eq!(reg.protocol_version, PROTOCOL_VERSION);
    assert_eq!(reg.address.as_str(), ME);
    assert_eq!(reg.nthreads, 3);
    let mut held: Vec<Key> = reg.keys.iter().map(|h| h.key.clone()).collect();
    held.sort();
    assert_eq!(held, keys(&["a", "b"]));
    // Scattered values say so: a restarted scheduler adopts them as scattered data.
    assert!(reg
        .keys
        .iter()
        .all(|h| h.origin == crate::protocol::codec::SCATTERED));
    h.assert_quiet();
}

#[test]
fn heartbeat_goes_out_once_the_interval_has_passed_and_not_before() {
    let mut h = Harness::new(1);
    assert_eq!(h.core.next_deadline(), 1000);
    h.tick(999);
    h.assert_quiet();
    h.tick(1000);
    assert_eq!(h.take_heartbeats(), 1);
    h.assert_quiet();
    assert_eq!(h.core.next_deadline(), 2000);
    h.tick(1500);
    h.assert_quiet();
    // A late tick sends one heartbeat, not one per missed interval, and counts from now.
    h.tick(4200);
    assert_eq!(h.take_heartbeats(), 1);
    assert_eq!(h.core.next_deadline(), 5200);
    h.assert_quiet();
}

#[test]
fn next_deadline_is_the_earliest_of_heartbeat_and_fetch_deadlines() {
    let mut cfg = config(1);
    cfg.heartbeat_interval_ms = 60_000;
    let mut h = Harness::unregistered(cfg);
    h.core.register(0);
    h.flush();
    h.take_sent();
    assert_eq!(h.core.next_deadline(), 60_000);
    h.now = 100;
    h.compute(vec![task("y", &[("d", &[P1])], false)]);
    let r = h.take_one_fetch(P1, "d");
    assert_eq!(
        h.core.next_deadline(),
        5100,
        "the fetch deadline comes first"
    );
    h.peer_has(P1, r, "d", frame(1));
    h.take_stores();
    h.take_executes();
    assert_eq!(
        h.core.next_deadline(),
        60_000,
        "answered: no fetch deadline left"
    );
    h.assert_quiet();
}

#[test]
fn the_invariant_check_catches_what_it_should() {
    // The check itself, on states no event sequence should reach: an honest failure must be
    // possible.
    let mut h = Harness::new(1);
    h.compute(vec![task("y", &[("d", &[P1]), ("e", &[P2])], false)]);
    let fetches = h.take_fetches();
    assert_eq!(fetches.len(), 2, "{fetches:?}");
    assert_eq!(h.core.check_invariants(), Ok(()));

    let mut core = h.core;
    core.tasks.corrupt_executing(2);
    assert!(matches!(
        core.check_invariants(),
        Err(InvariantViolation::Executing {
            executing: 2,
            max: 1,
            ..
        })
    ));
    core.tasks.corrupt_executing(0);

    let request = fetches[1].request;
    let in_flight = core.fetches.take_request(request).unwrap();
    let err = core.check_invariants().unwrap_err();
    assert_eq!(
        err,
        InvariantViolation::FetchNotInFlight {
            input: in_flight.keys[0].clone()
        }
    );
    assert!(!err.retry_may_help());
    core.fetches.put_back_request(request, in_flight);

    core.fetches.corrupt_waiting(&k("e"), vec![]);
    assert_eq!(
        core.check_invariants(),
        Err(InvariantViolation::MissingInputs {
            task: k("y"),
            missing: 2,
            counted: 1
        })
    );
    core.fetches.corrupt_waiting(&k("e"), keys(&["y", "z"]));
    assert_eq!(
        core.check_invariants(),
        Err(InvariantViolation::StrayWaiter {
            input: k("e"),
            task: k("z")
        })
    );
    core.fetches.corrupt_waiting(&k("e"), keys(&["y"]));
    assert_eq!(core.check_invariants(), Ok(()));

    core.held.corrupt_total(7);
    assert_eq!(
        core.check_invariants(),
        Err(InvariantViolation::HeldBytes {
            counted: 0,
            total: 7
        })
    );
}

// --- Running tasks ---------------------------------------------------------------------------

#[test]
fn compute_without_dependencies_executes_and_its_completion_is_reported_once() {
    let mut h = Harness::new(1);
    let x = task("x", &[], true);
    h.compute(vec![x.clone()]);
    assert_eq!(h.take_all(), vec![execute(&x)]);
    assert_eq!(h.core.pending_tasks(), 1);
    h.executed("x", Ok(42));
    assert_eq!(
        h.take_all(),
        vec![WorkerCommand::ReportFinished(vec![finished(
            "x",
            42,
            &[],
            true
        )])]
    );
    assert!(h.core.holds(&k("x")));
    assert_eq!(h.core.pending_tasks(), 0);
    h.assert_quiet();
}

#[test]
fn report_value_false_is_reported_without_a_value() {
    let mut h = Harness::new(1);
    h.compute(vec![task("x", &[], false)]);
    assert_eq!(h.take_executes(), keys(&["x"]));
    assert_eq!(h.run("x", 7), vec![finished("x", 7, &[], false)]);
    h.assert_quiet();
}

#[test]
fn completions_between_two_takes_are_batched_into_one_report() {
    let mut h = Harness::new(2);
    h.compute(vec![task("a", &[], true), task("b", &[], false)]);
    assert_eq!(h.take_executes(), keys(&["a", "b"]));
    h.feed(WorkerEvent::Executed {
        key: k("a"),
        result: Ok(3),
    });
    h.feed(WorkerEvent::Executed {
        key: k("b"),
        result: Ok(4),
    });
    h.flush();
    assert_eq!(
        h.take_all(),
        vec![WorkerCommand::ReportFinished(vec![
            finished("a", 3, &[], true),
            finished("b", 4, &[], false),
        ])]
    );
    h.assert_quiet();
}

#[test]
fn at_most_nthreads_tasks_execute_and_the_rest_start_in_arrival_order() {
    let mut h = Harness::new(2);
    h.compute(vec![
        task("a", &[], false),
        task("b", &[], false),
        task("c", &[], false),
    ]);
    h.compute(vec![task("d", &[], false), task("e", &[], false)]);
    assert_eq!(h.take_executes(), keys(&["a", "b"]));
    h.assert_quiet();
    assert_eq!(h.core.pending_tasks(), 5);
    // b finishes first: one slot frees, and c (queued before d) takes it.
    assert_eq!(h.run("b", 1), vec![finished("b", 1, &[], false)]);
    assert_eq!(h.take_executes(), keys(&["c"]));
    h.assert_quiet();
    h.run("a", 1);
    assert_eq!(h.take_executes(), keys(&["d"]));
    h.run("c", 1);
    assert_eq!(h.take_executes(), keys(&["e"]));
    h.run("d", 1);
    h.run("e", 1);
    h.assert_quiet();
    assert_eq!(h.core.pending_tasks(), 0);
}

#[test]
fn a_failed_task_frees_its_thread_too() {
    let mut h = Harness::new(1);
    h.compute(vec![task("a", &[], false), task("b", &[], false)]);
    assert_eq!(h.take_executes(), keys(&["a"]));
    h.executed("a", Err(failure("boom")));
    h.take_sent();
    assert_eq!(h.take_executes(), keys(&["b"]));
    h.run("b", 1);
    h.assert_quiet();
}

#[test]
fn a_task_error_is_reported_as_erred_with_the_error() {
    let mut h = Harness::new(1);
    h.compute(vec![task("a", &[], true)]);
    h.take_executes();
    let error = TaskError {
        kind: TaskErrorKind::Panicked,
        message: "index out of bounds".into(),
    };
    h.executed("a", Err(error.clone()));
    assert_eq!(
        h.take_sent(),
        vec![FromWorker::Erred(vec![ErredTask { key: k("a"), error }])]
    );
    assert!(!h.core.holds(&k("a")));
    assert_eq!(h.core.pending_tasks(), 0);
    h.assert_quiet();
}

#[test]
fn errors_between_two_takes_are_batched_into_one_message() {
    let mut h = Harness::new(2);
    h.compute(vec![task("a", &[], false), task("b", &[], false)]);
    h.take_executes();
    h.feed(WorkerEvent::Executed {
        key: k("a"),
        result: Err(failure("one")),
    });
    h.feed(WorkerEvent::Executed {
        key: k("b"),
        result: Err(failure("two")),
    });
    h.flush();
    assert_eq!(
        h.take_sent(),
        vec![FromWorker::Erred(vec![
            ErredTask {
                key: k("a"),
                error: failure("one"),
            },
            ErredTask {
                key: k("b"),
                error: failure("two"),
            },
        ])]
    );
    h.assert_quiet();
}

#[test]
fn a_compute_for_a_key_already_held_is_reported_finished_at_once() {
    let mut h = Harness::new(1);
    let value = frame(5);
    h.put_data(1, &[("x", value.clone())]);
    h.take_stores();
    h.take_sent();
    h.compute(vec![task("x", &[], true)]);
    assert_eq!(
        h.take_all(),
        vec![WorkerCommand::ReportFinished(vec![finished(
            "x",
            value.len() as u64,
            &[],
            true
        )])]
    );
    assert_eq!(h.core.pending_tasks(), 0);
    h.assert_quiet();
}

#[test]
fn a_result_computed_here_counts_as_held_for_later_computes() {
    let mut h = Harness::new(1);
    h.compute(vec![task("x", &[], false)]);
    h.take_executes();
    h.run("x", 9);
    h.compute(vec![task("x", &[], true)]);
    assert_eq!(h.take_reports(), vec![vec![finished("x", 9, &[], true)]]);
    h.assert_quiet();
}

// --- Dependencies ----------------------------------------------------------------------------

#[test]
fn a_dependency_held_locally_is_used_at_once_without_a_fetch() {
    let mut h = Harness::new(1);
    h.compute(vec![task("d", &[], false)]);
    h.take_executes();
    h.run("d", 8);
    let y = task("y", &[("d", &[ME, P1])], true);
    h.compute(vec![y.clone()]);
    assert_eq!(h.take_all(), vec![execute(&y)]);
    assert_eq!(h.run("y", 3), vec![finished("y", 3, &[], true)]);
    h.assert_quiet();
}

#[test]
fn a_dependency_on_a_peer_is_fetched_from_the_first_holder_then_stored_then_used() {
    let mut h = Harness::new(1);
    let y = task("y", &[("d", &[ME, P1, P2])], true);
    h.compute(vec![y.clone()]);
    // Never from itself, even listed first: from the first other holder.
    let r = h.take_one_fetch(P1, "d");
    h.assert_quiet();
    assert!(!h.core.holds(&k("d")));
    let value = frame(123);
    h.peer_has(P1, r, "d", value.clone());
    assert_eq!(
        h.take_all(),
        vec![
            WorkerCommand::Store {
                key: k("d"),
                frame: value.clone(),
            },
            execute(&y),
        ]
    );
    assert!(h.core.holds(&k("d")));
    assert_eq!(
        h.run("y", 9),
        vec![finished("y", 9, &[("d", value.len() as u64)], true)]
    );
    h.assert_quiet();
}

#[test]
fn a_task_waits_for_all_its_remote_dependencies() {
    let mut h = Harness::new(1);
    h.compute(vec![task("y", &[("d1", &[P1]), ("d2", &[P2])], false)]);
    let mut fetches = h.take_fetches();
    fetches.sort_by(|a, b| a.address.cmp(&b.address));
    assert_eq!(fetches.len(), 2);
    assert_eq!(
        (fetches[0].address.as_str(), &fetches[0].keys),
        (P1, &keys(&["d1"]))
    );
    assert_eq!(
        (fetches[1].address.as_str(), &fetches[1].keys),
        (P2, &keys(&["d2"]))
    );
    assert_ne!(fetches[0].request, fetches[1].request);
    h.peer_has(P1, fetches[0].request, "d1", frame(1));
    assert_eq!(h.take_stores().len(), 1);
    h.assert_quiet();
    h.peer_has(P2, fetches[1].request, "d2", frame(22));
    assert_eq!(h.take_stores().len(), 1);
    assert_eq!(h.take_executes(), keys(&["y"]));
    let n1 = frame(1).len() as u64;
    let n2 = frame(22).len() as u64;
    assert_eq!(
        h.run("y", 2),
        vec![finished("y", 2, &[("d1", n1), ("d2", n2)], false)]
    );
    h.assert_quiet();
}

#[test]
fn two_tasks_needing_the_same_remote_dependency_share_one_fetch() {
    let mut h = Harness::new(2);
    h.compute(vec![task("y1", &[("d", &[P1])], false)]);
    h.compute(vec![task("y2", &[("d", &[P1, P2])], false)]);
    let r = h.take_one_fetch(P1, "d");
    h.assert_quiet();
    let value = frame(77);
    h.peer_has(P1, r, "d", value.clone());
    assert_eq!(h.take_stores(), vec![(k("d"), value.clone())]);
    assert_eq!(h.take_executes(), keys(&["y1", "y2"]));
    let n = value.len() as u64;
    assert_eq!(h.run("y1", 1), vec![finished("y1", 1, &[("d", n)], false)]);
    assert_eq!(h.run("y2", 1), vec![finished("y2", 1, &[("d", n)], false)]);
    h.assert_quiet();
}

#[test]
fn a_peer_missing_the_dependency_sends_the_fetch_to_the_next_holder() {
    let mut h = Harness::new(1);
    h.compute(vec![task("y", &[("d", &[P1, P2])], false)]);
    let r1 = h.take_one_fetch(P1, "d");
    h.peer_lacks(P1, r1, "d");
    let r2 = h.take_one_fetch(P2, "d");
    assert_ne!(r1, r2);
    h.assert_quiet();
    h.peer_has(P2, r2, "d", frame(1));
    h.take_stores();
    assert_eq!(h.take_executes(), keys(&["y"]));
    h.run("y", 1);
    h.assert_quiet();
}

#[test]
fn when_no_holder_has_a_dependency_the_waiting_tasks_are_given_back_and_dropped() {
    let mut h = Harness::new(2);
    h.compute(vec![
        task("y1", &[("d", &[P1, P2])], false),
        task("y2", &[("d", &[P1])], false),
    ]);
    let r1 = h.take_one_fetch(P1, "d");
    h.peer_lacks(P1, r1, "d");
    let r2 = h.take_one_fetch(P2, "d");
    h.peer_lacks(P2, r2, "d");
    let mut sent = h.take_sent();
    sent.sort_by_key(|m| format!("{m:?}"));
    let holders = vec![WorkerAddress::from(P1), WorkerAddress::from(P2)];
    assert_eq!(
        sent,
        vec![
            FromWorker::MissingDependency {
                key: k("y1"),
                dependency: k("d"),
                holders: holders.clone(),
                unresponsive: vec![],
            },
            FromWorker::MissingDependency {
                key: k("y2"),
                dependency: k("d"),
                holders,
                unresponsive: vec![],
            },
        ]
    );
    assert_eq!(h.core.pending_tasks(), 0);
    h.assert_quiet();
    // Placed here again with a new holder, a task starts afresh.
    h.compute(vec![task("y1", &[("d", &[P3])], false)]);
    let r3 = h.take_one_fetch(P3, "d");
    h.peer_has(P3, r3, "d", frame(1));
    h.take_stores();
    assert_eq!(h.take_executes(), keys(&["y1"]));
    h.run("y1", 1);
    h.assert_quiet();
}

#[test]
fn a_dependency_with_no_holder_but_this_worker_is_given_back_at_once() {
    let mut h = Harness::new(1);
    h.compute(vec![task("y", &[("d", &[ME])], false)]);
    assert_eq!(
        h.take_sent(),
        vec![FromWorker::MissingDependency {
            key: k("y"),
            dependency: k("d"),
            holders: vec![],
            unresponsive: vec![],
        }]
    );
    assert_eq!(h.core.pending_tasks(), 0);
    h.assert_quiet();
}

#[test]
fn a_task_given_back_for_one_dependency_does_not_keep_fetching_the_others() {
    let mut h = Harness::new(1);
    h.compute(vec![task("y", &[("d1", &[P1]), ("d2", &[P2, P3])], false)]);
    let fetches = h.take_fetches();
    let r1 = fetches
        .iter()
        .find(|f| f.address.as_str() == P1)
        .unwrap()
        .request;
    let r2 = fetches
        .iter()
        .find(|f| f.address.as_str() == P2)
        .unwrap()
        .request;
    h.peer_lacks(P1, r1, "d1");
    assert!(matches!(
        &h.take_sent()[..],
        [FromWorker::MissingDependency { key, .. }] if *key == k("y")
    ));
    // d2's holder then says no: nobody waits any more, so P3 is not asked.
    h.peer_lacks(P2, r2, "d2");
    h.assert_quiet();
    assert_eq!(h.core.pending_tasks(), 0);
}

#[test]
fn a_fetch_that_times_out_goes_to_the_next_holder_and_the_late_answer_is_ignored() {
    let mut h = Harness::new(1);
    h.now = 100;
    h.compute(vec![task("y", &[("d", &[P1, P2])], false)]);
    let r1 = h.take_one_fetch(P1, "d");
    h.tick(5099);
    h.take_heartbeats();
    h.assert_quiet();
    h.tick(5100);
    h.take_heartbeats();
    let r2 = h.take_one_fetch(P2, "d");
    assert_ne!(r1, r2);
    h.assert_quiet();
    // The first peer answers after all: too late, nothing is stored or run.
    h.peer_has(P1, r1, "d", frame(1));
    h.assert_quiet();
    assert!(!h.core.holds(&k("d")));
    let value = frame(2);
    h.peer_has(P2, r2, "d", value.clone());
    assert_eq!(h.take_stores(), vec![(k("d"), value.clone())]);
    assert_eq!(h.take_executes(), keys(&["y"]));
    assert_eq!(
        h.run("y", 1),
        vec![finished("y", 1, &[("d", value.len() as u64)], false)]
    );
    h.assert_quiet();
}

#[test]
fn a_fetch_that_times_out_at_the_last_holder_gives_the_task_back() {
    let mut h = Harness::new(1);
    h.compute(vec![task("y", &[("d", &[P1])], false)]);
    let r = h.take_one_fetch(P1, "d");
    h.tick(5000);
    h.take_heartbeats();
    assert_eq!(
        h.take_sent(),
        vec![FromWorker::MissingDependency {
            key: k("y"),
            dependency: k("d"),
            // It did not say it lacks the value: it may only be slow.
            holders: vec![],
            unresponsive: vec![WorkerAddress::from(P1)],
        }]
    );
    assert_eq!(h.core.pending_tasks(), 0);
    h.peer_has(P1, r, "d", frame(1));
    h.assert_quiet();
    assert!(!h.core.holds(&k("d")));
}

#[test]
fn a_peer_error_reply_is_survived_and_the_deadline_moves_on() {
    let mut h = Harness::new(1);
    h.compute(vec![task("y", &[("d", &[P1, P2])], false)]);
    h.take_one_fetch(P1, "d");
    h.peer_answers(
        P1,
        PeerReply::Error {
            message: "bad request".into(),
        },
        vec![],
    );
    h.assert_quiet();
    h.tick(5000);
    h.take_heartbeats();
    h.take_one_fetch(P2, "d");
    h.assert_quiet();
}

// --- Release ---------------------------------------------------------------------------------

#[test]
fn release_of_a_stored_key_deletes_it() {
    let mut h = Harness::new(1);
    h.put_data(1, &[("a", frame(1)), ("b", frame(2))]);
    h.take_stores();
    h.take_sent();
    h.release(&["a", "unknown"]);
    assert_eq!(h.take_all(), vec![WorkerCommand::Delete(keys(&["a"]))]);
    assert!(!h.core.holds(&k("a")));
    assert!(h.core.holds(&k("b")));
    assert_eq!(h.core.stored_keys(), 1);
    h.release(&["unknown"]);
    h.assert_quiet();
}

#[test]
fn a_released_queued_task_never_executes() {
    let mut h = Harness::new(1);
    h.compute(vec![task("a", &[], false), task("b", &[], false)]);
    assert_eq!(h.take_executes(), keys(&["a"]));
    h.release(&["b"]);
    h.assert_quiet();
    assert_eq!(h.core.pending_tasks(), 1);
    h.run("a", 1);
    h.assert_quiet();
    assert_eq!(h.core.pending_tasks(), 0);
}

#[test]
fn a_task_released_while_fetching_never_runs_and_its_dependency_is_not_kept() {
    let mut h = Harness::new(1);
    h.compute(vec![task("y", &[("d", &[P1])], false)]);
    let r = h.take_one_fetch(P1, "d");
    h.release(&["y"]);
    h.assert_quiet();
    h.peer_has(P1, r, "d", frame(1));
    h.assert_quiet();
    assert!(!h.core.holds(&k("d")));
    assert_eq!(h.core.pending_tasks(), 0);
}

#[test]
fn a_released_executing_task_has_its_result_deleted_not_reported() {
    let mut h = Harness::new(1);
    h.compute(vec![task("a", &[], true), task("b", &[], false)]);
    assert_eq!(h.take_executes(), keys(&["a"]));
    h.release(&["a"]);
    h.assert_quiet();
    h.executed("a", Ok(10));
    assert_eq!(h.take_deletes(), vec![keys(&["a"])]);
    assert!(!h.core.holds(&k("a")));
    // Its thread is free again.
    assert_eq!(h.take_executes(), keys(&["b"]));
    h.assert_quiet();
    h.run("b", 1);
    h.assert_quiet();
}

#[test]
fn a_released_executing_task_that_fails_is_not_reported() {
    let mut h = Harness::new(1);
    h.compute(vec![task("a", &[], false)]);
    h.take_executes();
    h.release(&["a"]);
    h.executed("a", Err(failure("boom")));
    h.assert_quiet();
    assert_eq!(h.core.pending_tasks(), 0);
}

#[test]
fn a_released_executing_task_computed_again_is_kept_and_reported() {
    let mut h = Harness::new(1);
    h.compute(vec![task("a", &[], false)]);
    assert_eq!(h.take_executes(), keys(&["a"]));
    h.release(&["a"]);
    h.assert_quiet();
    // Wanted again while it still runs: no second execution, and the value goes back.
    h.compute(vec![task("a", &[], true)]);
    h.assert_quiet();
    assert_eq!(h.run("a", 4), vec![finished("a", 4, &[], true)]);
    assert!(h.core.holds(&k("a")));
    h.assert_quiet();
}

// --- Data requests ---------------------------------------------------------------------------

#[test]
fn get_data_from_the_scheduler_is_answered_from_the_store() {
    let mut h = Harness::new(1);
    h.scheduler_sends(
        ToWorker::GetData {
            request: 7,
            keys: keys(&["a", "b"]),
        },
        vec![],
    );
    assert_eq!(
        h.take_all(),
        vec![WorkerCommand::SendDataToScheduler {
            request: 7,
            keys: keys(&["a", "b"]),
        }]
    );
    h.assert_quiet();
}

#[test]
fn get_data_from_a_peer_is_answered_to_that_peer_from_the_store() {
    let mut h = Harness::new(1);
    h.step(WorkerEvent::FromPeer {
        peer: ConnectionId::from("peer-9"),
        msg: PeerRequest::GetData {
            request: 3,
            keys: keys(&["a"]),
        },
    });
    assert_eq!(
        h.take_all(),
        vec![WorkerCommand::SendDataToPeer {
            peer: ConnectionId::from("peer-9"),
            request: 3,
            keys: keys(&["a"]),
        }]
    );
    h.assert_quiet();
}

#[test]
fn put_data_stores_each_value_then_confirms_it() {
    let mut h = Harness::new(1);
    let (fa, fb) = (frame(1), encode_value(&Value::Bytes(vec![9; 100])));
    h.put_data(5, &[("a", fa.clone()), ("b", fb.clone())]);
    assert_eq!(
        h.take_all(),
        vec![
            WorkerCommand::Store {
                key: k("a"),
                frame: fa.clone(),
            },
            WorkerCommand::Store {
                key: k("b"),
                frame: fb.clone(),
            },
            WorkerCommand::ToScheduler {
                msg: FromWorker::Stored { request: 5 },
                frames: vec![],
            },
        ]
    );
    assert!(h.core.holds(&k("a")));
    assert!(h.core.holds(&k("b")));
    assert_eq!(h.core.stored_keys(), 2);
    // Scattered data then counts as held: a task depending on it runs without a fetch.
    h.compute(vec![task("y", &[("b", &[P1])], false)]);
    assert_eq!(h.take_executes(), keys(&["y"]));
    h.run("y", 1);
    h.assert_quiet();
}

// --- The scheduler's verdicts ----------------------------------------------------------------

#[test]
fn rejected_shuts_the_worker_down_with_the_reason() {
    let mut h = Harness::new(1);
    h.scheduler_sends(
        ToWorker::Rejected {
            reason: crate::protocol::RejectReason::ProtocolVersion {
                scheduler: 2,
                worker: 9,
            },
        },
        vec![],
    );
    let shutdowns = h.take(|c| match c {
        WorkerCommand::Shutdown { reason } => Ok(reason),
        c => Err(c),
    });
    assert_eq!(
        shutdowns,
        vec![ShutdownReason::Rejected(
            crate::protocol::RejectReason::ProtocolVersion {
                scheduler: 2,
                worker: 9
            }
        )]
    );
    assert!(shutdowns[0].to_string().contains("protocol version 9"));
    assert_eq!(shutdowns[0].exit_code(), 4);
    h.assert_quiet();
}

#[test]
fn dismiss_shuts_the_worker_down_for_good_with_exit_code_0() {
    let mut h = Harness::new(1);
    h.scheduler_sends(ToWorker::Dismiss, vec![]);
    assert_eq!(
        h.take_all(),
        vec![WorkerCommand::Shutdown {
            reason: ShutdownReason::Dismissed
        }]
    );
    assert_eq!(ShutdownReason::Dismissed.exit_code(), 0);
    h.assert_quiet();
}

#[test]
fn close_shuts_the_worker_down() {
    let mut h = Harness::new(1);
    h.scheduler_sends(ToWorker::Close, vec![]);
    assert_eq!(
        h.take_all(),
        vec![WorkerCommand::Shutdown {
            reason: ShutdownReason::Closed
        }]
    );
    h.assert_quiet();
}

#[test]
fn registered_needs_no_answer() {
    let mut h = Harness::new(1);
    h.scheduler_sends(
        ToWorker::Registered {
            max_message_bytes: 1 << 30,
        },
        vec![],
    );
    h.assert_quiet();
}

#[test]
fn a_malformed_message_report_changes_nothing() {
    let mut h = Harness::new(1);
    h.put_data(1, &[("a", frame(1))]);
    h.take_stores();
    h.take_sent();
    h.scheduler_sends(
        ToWorker::Malformed {
            message: "bad magic".into(),
        },
        vec![],
    );
    assert!(h.take_sent().is_empty(), "no registration, no report");
    assert!(h.core.holds(&Key::from("a")));
    h.assert_quiet();
}

#[test]
fn unknown_worker_makes_the_worker_register_again_with_its_keys() {
    let mut h = Harness::new(1);
    h.put_data(1, &[("a", frame(1))]);
    h.take_stores();
    h.take_sent();
    h.now = 300;
    h.scheduler_sends(ToWorker::UnknownWorker, vec![]);
    let sent = h.take_sent();
    assert!(
        matches!(&sent[..], [FromWorker::Register(r)] if r.keys.iter().map(|h| h.key.clone()).collect::<Vec<_>>() == keys(&["a"]) && r.address.as_str() == ME),
        "{sent:?}"
    );
    assert_eq!(
        h.core.next_deadline(),
        1300,
        "heartbeats count from the new registration"
    );
    h.assert_quiet();
}

// --- Bugs found (ignored until fixed in mod.rs) ----------------------------------------------

#[test]

fn a_later_holder_list_never_makes_the_worker_fetch_from_itself() {
    let mut h = Harness::new(2);
    h.compute(vec![task("y1", &[("d", &[P1])], false)]);
    let r1 = h.take_one_fetch(P1, "d");
    // A second task needs the same dependency; the scheduler (wrongly) lists this worker too.
    h.compute(vec![task("y2", &[("d", &[ME, P2])], false)]);
    h.assert_quiet();
    h.peer_lacks(P1, r1, "d");
    // Expected: P2 is asked next. Actual: a FetchFromPeer to "tcp://me:1".
    let r2 = h.take_one_fetch(P2, "d");
    h.peer_has(P2, r2, "d", frame(1));
    h.take_stores();
    assert_eq!(h.take_executes(), keys(&["y1", "y2"]));
    h.run("y1", 1);
    h.run("y2", 1);
    h.assert_quiet();
}

#[test]

fn a_task_released_while_fetching_and_computed_again_waits_for_all_its_dependencies() {
    let mut h = Harness::new(1);
    let y = task("y", &[("d1", &[P1]), ("d2", &[P2])], false);
    h.compute(vec![y.clone()]);
    let fetches = h.take_fetches();
    let r1 = fetches
        .iter()
        .find(|f| f.address.as_str() == P1)
        .unwrap()
        .request;
    let r2 = fetches
        .iter()
        .find(|f| f.address.as_str() == P2)
        .unwrap()
        .request;
    h.release(&["y"]);
    h.compute(vec![y.clone()]);
    // The fetches already in flight serve the new assignment.
    h.assert_quiet();
    h.peer_has(P1, r1, "d1", frame(1));
    assert_eq!(h.take_stores().len(), 1);
    // Expected: y still waits for d2. Actual: Execute y, with d2 not in the store.
    h.assert_quiet();
    h.peer_has(P2, r2, "d2", frame(2));
    assert_eq!(h.take_stores().len(), 1);
    assert_eq!(h.take_executes(), keys(&["y"]));
    let n1 = frame(1).len() as u64;
    let n2 = frame(2).len() as u64;
    // Each fetched dependency listed once.
    assert_eq!(
        h.run("y", 1),
        vec![finished("y", 1, &[("d1", n1), ("d2", n2)], false)]
    );
    h.assert_quiet();
}

#[test]

fn dependencies_fetched_for_a_task_given_back_are_not_kept_unknown_to_the_scheduler() {
    let mut h = Harness::new(1);
    h.compute(vec![task("y", &[("d1", &[P1]), ("d2", &[P2])], false)]);
    let fetches = h.take_fetches();
    let r1 = fetches
        .iter()
        .find(|f| f.address.as_str() == P1)
        .unwrap()
        .request;
    let r2 = fetches
        .iter()
        .find(|f| f.address.as_str() == P2)
        .unwrap()
        .request;
    h.peer_has(P1, r1, "d1", frame(1));
    assert_eq!(h.take_stores().len(), 1);
    h.peer_lacks(P2, r2, "d2");
    assert!(matches!(
        &h.take_sent()[..],
        [FromWorker::MissingDependency { key, .. }] if *key == k("y")
    ));
    // The scheduler only learns of fetched copies through `Finished.fetched`, which will never
    // come: it will never release d1 here. Expected: d1 deleted. Actual: kept for good.
    assert_eq!(h.take_deletes(), vec![keys(&["d1"])]);
    assert!(!h.core.holds(&k("d1")));
    h.assert_quiet();
}

#[test]

fn a_peer_reply_that_forgets_a_requested_key_does_not_leave_the_task_waiting_forever() {
    let mut h = Harness::new(1);
    h.compute(vec![task("y", &[("d", &[P1, P2])], false)]);
    let r1 = h.take_one_fetch(P1, "d");
    h.peer_answers(
        P1,
        PeerReply::Data {
            request: r1,
            found: vec![],
            missing: vec![],
            chunks: vec![],
        },
        vec![],
    );
    // The key counts as missing at P1: P2 is asked at once.
    let r2 = h.take_one_fetch(P2, "d");
    h.peer_has(P2, r2, "d", frame(1));
    h.take_stores();
    assert_eq!(h.take_executes(), keys(&["y"]));
    h.run("y", 1);
    h.assert_quiet();
}

#[test]
fn a_ping_is_answered_with_a_heartbeat_at_once() {
    let mut h = Harness::new(1);
    h.scheduler_sends(ToWorker::Ping, vec![]);
    assert_eq!(h.take_heartbeats(), 1);
    h.assert_quiet();
}

#[test]
fn the_worker_stops_after_the_death_timeout_without_word_from_the_scheduler() {
    let mut h = Harness::new(1);
    // Heartbeats are acknowledged: the scheduler is there.
    for t in (500..=59_500).step_by(500) {
        h.tick(t);
        h.take_heartbeats();
        h.scheduler_sends(ToWorker::HeartbeatAck, vec![]);
    }
    h.assert_quiet();
    // Then silence, for longer than the death timeout (60 s in this harness).
    for t in (60_000..=119_500).step_by(500) {
        h.tick(t);
        h.take_heartbeats();
    }
    h.assert_quiet();
    h.tick(119_600);
    let stop = h.take_all();
    assert!(
        matches!(
            &stop[..],
            [WorkerCommand::Shutdown {
                reason: ShutdownReason::SchedulerGone {
                    death_timeout_ms: 60_000,
                    ..
                }
            }]
        ),
        "{stop:?}"
    );
}

// --- Bounds ----------------------------------------------------------------------------------

#[test]
fn a_result_over_the_message_limit_fails_its_task_naming_its_size_and_the_limit() {
    // Our own limit is 1000 bytes (see `config`); the scheduler's is smaller.
    let mut h = Harness::new(1);
    assert_eq!(h.core.result_bytes_max(), 1000);
    h.scheduler_sends(
        ToWorker::Registered {
            max_message_bytes: 500,
        },
        vec![],
    );
    assert_eq!(h.core.result_bytes_max(), 500);
    h.compute(vec![task("big", &[], true), task("fits", &[], true)]);
    assert_eq!(h.take_executes(), keys(&["big"]));
    h.executed("big", Ok(501));
    // The stored value goes, and the task fails at once.
    assert_eq!(h.take_deletes(), vec![keys(&["big"])]);
    let sent = h.take_sent();
    let [FromWorker::Erred(erred)] = &sent[..] else {
        panic!("expected one Erred, got {sent:?}");
    };
    assert_eq!(erred.len(), 1);
    assert_eq!(erred[0].key, k("big"));
    let message = &erred[0].error.message;
    assert!(message.contains("501 bytes"), "{message}");
    assert!(message.contains("limit of 500 bytes"), "{message}");
    assert!(!h.core.holds(&k("big")));
    // Exactly at the limit is fine.
    assert_eq!(h.take_executes(), keys(&["fits"]));
    assert_eq!(h.run("fits", 500), vec![finished("fits", 500, &[], true)]);
    h.assert_quiet();
    // A scheduler that states no limit (0) leaves ours.
    h.scheduler_sends(
        ToWorker::Registered {
            max_message_bytes: 0,
        },
        vec![],
    );
    assert_eq!(h.core.result_bytes_max(), 1000);
    h.assert_quiet();
}

#[test]
fn a_very_long_task_error_is_cut_before_it_leaves_the_worker() {
    let mut h = Harness::new(1);
    h.compute(vec![task("a", &[], true)]);
    h.take_executes();
    h.executed("a", Err(failure(&"é".repeat(50_000))));
    let sent = h.take_sent();
    let [FromWorker::Erred(erred)] = &sent[..] else {
        panic!("expected one Erred, got {sent:?}");
    };
    let message = &erred[0].error.message;
    // The marker "… [cut: N more bytes]" is 27 bytes here; what is kept of the two-byte
    // characters fills the rest of the 4096 bytes: 2034 of them (4068 bytes).
    assert_eq!(
        *message,
        format!("{}… [cut: 95932 more bytes]", "é".repeat(2034))
    );
    assert!(message.len() <= TASK_ERROR_BYTES_MAX);
    // A short one is untouched.
    assert_eq!(cut_text("short".into(), TASK_ERROR_BYTES_MAX), "short");
    h.assert_quiet();
}

#[test]
fn a_key_listed_many_times_in_a_data_request_is_served_once() {
    let mut h = Harness::new(1);
    h.scheduler_sends(
        ToWorker::GetData {
            request: 7,
            keys: keys(&["a", "b", "a", "a", "b"]),
        },
        vec![],
    );
    assert_eq!(
        h.take_all(),
        vec![WorkerCommand::SendDataToScheduler {
            request: 7,
            keys: keys(&["a", "b"]),
        }]
    );
    let mut many = vec![k("x"); 10_000];
    many.push(k("y"));
    h.step(WorkerEvent::FromPeer {
        peer: ConnectionId::from("peer-9"),
        msg: PeerRequest::GetData {
            request: 3,
            keys: many,
        },
    });
    assert_eq!(
        h.take_all(),
        vec![WorkerCommand::SendDataToPeer {
            peer: ConnectionId::from("peer-9"),
            request: 3,
            keys: keys(&["x", "y"]),
        }]
    );
    h.assert_quiet();
}

// --- Store failures --------------------------------------------------------------------------

#[test]
fn a_scattered_value_the_store_failed_to_write_is_reported_not_held() {
    let mut h = Harness::new(1);
    h.put_data(5, &[("a", frame(1)), ("b", frame(2))]);
    assert_eq!(h.take_stores().len(), 2);
    assert_eq!(h.take_sent(), vec![FromWorker::Stored { request: 5 }]);
    // The runner's write of "a" failed.
    h.step(WorkerEvent::StoreFailed {
        key: k("a"),
        error: "disk full".into(),
    });
    assert_eq!(
        h.take_sent(),
        vec![FromWorker::NotHeld { keys: keys(&["a"]) }]
    );
    assert!(!h.core.holds(&k("a")));
    assert!(h.core.holds(&k("b")));
    // Asked later, it says so again.
    h.scheduler_sends(
        ToWorker::CheckHeld {
            keys: keys(&["a", "b"]),
        },
        vec![],
    );
    assert_eq!(
        h.take_sent(),
        vec![FromWorker::NotHeld { keys: keys(&["a"]) }]
    );
    h.assert_quiet();
}

#[test]
fn a_fetched_input_the_store_failed_to_write_fails_the_tasks_waiting_for_it() {
    let mut h = Harness::new(1);
    h.compute(vec![
        task("t", &[("d", &[P1]), ("e", &[P2])], true),
        task("u", &[], true),
    ]);
    let fd = h
        .take_fetches()
        .into_iter()
        .find(|f| f.keys == keys(&["d"]))
        .expect("a fetch of d");
    assert_eq!(h.take_executes(), keys(&["u"]));
    h.peer_has(P1, fd.request, "d", frame(1));
    assert_eq!(h.take_stores(), vec![(k("d"), frame(1))]);
    h.step(WorkerEvent::StoreFailed {
        key: k("d"),
        error: "disk full".into(),
    });
    let sent = h.take_sent();
    let [FromWorker::Erred(erred)] = &sent[..] else {
        panic!("expected one Erred, got {sent:?}");
    };
    assert_eq!(erred[0].key, k("t"));
    assert_eq!(
        erred[0].error.message,
        "could not store input \"d\" fetched from a peer: disk full"
    );
    assert!(!h.core.holds(&k("d")));
    // The deletion of the fetched copy (a no-op) is all that is left of "t".
    assert_eq!(h.take_deletes(), vec![keys(&["d"])]);
    assert_eq!(h.core.pending_tasks(), 1);
    // The other task is untouched.
    h.run("u", 1);
    h.assert_quiet();
}

#[test]
fn a_task_started_in_the_batch_whose_input_write_failed_fails_with_the_store_error() {
    let mut h = Harness::new(1);
    h.compute(vec![task("t", &[("d", &[P1])], true)]);
    let request = h.take_one_fetch(P1, "d");
    h.peer_has(P1, request, "d", frame(1));
    // The write and the execution leave in one batch; the runner then finds the write failed.
    assert_eq!(h.take_stores(), vec![(k("d"), frame(1))]);
    assert_eq!(h.take_executes(), keys(&["t"]));
    h.step(WorkerEvent::StoreFailed {
        key: k("d"),
        error: "disk full".into(),
    });
    let sent = h.take_sent();
    let [FromWorker::Erred(erred)] = &sent[..] else {
        panic!("expected one Erred, got {sent:?}");
    };
    assert_eq!(erred[0].key, k("t"));
    assert!(erred[0].error.message.contains("disk full"));
    h.take_deletes();
    // Its thread is still busy until its own failure to find the input comes back, which
    // frees the thread and says nothing more.
    h.compute(vec![task("u", &[], true)]);
    assert_eq!(h.take_executes(), Vec::<Key>::new());
    h.executed("t", Err(failure("input \"d\" is not in the store")));
    assert_eq!(h.take_executes(), keys(&["u"]));
    h.run("u", 1);
    h.assert_quiet();
}

// --- Memory limit ----------------------------------------------------------------------------

/// A registered worker with `nthreads` threads and a memory limit of `limit` bytes (results
/// up to 1000 bytes can travel: see `config`).
fn with_memory_limit(nthreads: u32, limit: u64) -> Harness {
    let mut cfg = config(nthreads);
    cfg.registration.memory_limit_bytes = limit;
    let mut h = Harness::unregistered(cfg);
    h.core.register(0);
    h.flush();
    let sent = h.take_sent();
    assert!(
        matches!(&sent[..], [FromWorker::Register(r)] if r.memory_limit_bytes == limit),
        "{sent:?}"
    );
    h.assert_quiet();
    h
}

/// The one `Erred` sent since the last look, as (key, error).
fn take_one_erred(h: &mut Harness) -> (Key, TaskError) {
    let sent = h.take_sent();
    match &sent[..] {
        [FromWorker::Erred(erred)] if erred.len() == 1 => {
            (erred[0].key.clone(), erred[0].error.clone())
        }
        other => panic!("expected one Erred task, got {other:?}"),
    }
}

#[test]
fn a_result_past_the_memory_limit_fails_its_task_and_is_not_kept_while_held_values_stay() {
    let mut h = with_memory_limit(1, 1000);
    h.compute(vec![
        task("a", &[], true),
        task("b", &[], true),
        task("c", &[], true),
        task("d", &[], true),
    ]);
    assert_eq!(h.take_executes(), keys(&["a"]));
    assert_eq!(h.run("a", 400), vec![finished("a", 400, &[], true)]);
    assert_eq!(h.take_executes(), keys(&["b"]));
    // 800 bytes held: exactly the pause fraction (80%), not past it.
    assert_eq!(h.run("b", 400), vec![finished("b", 400, &[], true)]);
    assert!(!h.core.paused());
    assert_eq!(h.core.held_bytes(), 800);
    assert_eq!(h.take_executes(), keys(&["c"]));

    // 800 + 300 > 1000: the stored value goes and the task fails, naming the numbers.
    h.executed("c", Ok(300));
    assert_eq!(h.take_deletes(), vec![keys(&["c"])]);
    let (key, error) = take_one_erred(&mut h);
    assert_eq!(key, k("c"));
    assert_eq!(error.kind, TaskErrorKind::MemoryLimit);
    for part in ["300 bytes", "holds 800 bytes", "limit of 1000 bytes"] {
        assert!(error.message.contains(part), "{part}: {}", error.message);
    }
    assert!(error.to_string().starts_with("memory limit: "), "{error}");
    assert!(!h.core.holds(&k("c")));
    assert!(h.core.holds(&k("a")) && h.core.holds(&k("b")));
    assert_eq!(h.core.held_bytes(), 800);

    // The worker goes on: exactly up to the limit is fine.
    assert_eq!(h.take_executes(), keys(&["d"]));
    assert_eq!(h.run("d", 200), vec![finished("d", 200, &[], true)]);
    assert_eq!(h.core.held_bytes(), 1000);
    assert!(h.core.paused());
    // The pause is reported to the scheduler at once.
    assert_eq!(
        h.take_memory_reports(),
        vec![report(true, 1000, 0, &[], &[])]
    );
    h.assert_quiet();
}

/// A memory report as the worker sends it.
fn report(
    paused: bool,
    memory: u64,
    disk: u64,
    spilled: &[&str],
    unspilled: &[&str],
) -> MemoryReport {
    MemoryReport {
        paused,
        memory_bytes: memory,
        spilled_bytes: disk,
        spilled: keys(spilled),
        unspilled: keys(unspilled),
    }
}

#[test]
fn past_the_pause_fraction_no_task_starts_until_releases_bring_it_under() {
    let mut h = with_memory_limit(1, 1000);
    h.compute(vec![
        task("a", &[], true),
        task("b", &[], true),
        task("c", &[], true),
    ]);
    assert_eq!(h.take_executes(), keys(&["a"]));
    // 801 bytes: past 80% of 1000.
    assert_eq!(h.run("a", 801), vec![finished("a", 801, &[], true)]);
    assert!(h.core.paused());
    assert!(h.take_executes().is_empty());
    assert_eq!(h.core.pending_tasks(), 2);
    assert_eq!(
        h.take_memory_reports(),
        vec![report(true, 801, 0, &[], &[])]
    );

    // Paused, it still heartbeats and serves data, and more tasks only queue.
    h.tick(1000);
    assert_eq!(h.take_heartbeats(), 1);
    h.step(WorkerEvent::FromPeer {
        peer: ConnectionId::from("peer-1"),
        msg: PeerRequest::GetData {
            request: 1,
            keys: keys(&["a"]),
        },
    });
    assert_eq!(
        h.take_all(),
        vec![WorkerCommand::SendDataToPeer {
            peer: ConnectionId::from("peer-1"),
            request: 1,
            keys: keys(&["a"]),
        }]
    );
    h.compute(vec![task("d", &[], true)]);
    assert!(h.take_executes().is_empty());
    h.tick(1500);
    assert!(h.take_executes().is_empty());
    h.assert_quiet();

    // A release that leaves it past the fraction changes nothing; one that brings it under
    // starts the queued tasks in order.
    h.put_data(1, &[("s", encode_value(&Value::Bytes(vec![1; 100])))]);
    h.take_stores();
    h.take_sent();
    assert!(h.core.paused());
    h.release(&["s"]);
    assert_eq!(h.take_deletes(), vec![keys(&["s"])]);
    assert!(h.take_executes().is_empty());
    h.release(&["a"]);
    assert_eq!(h.take_deletes(), vec![keys(&["a"])]);
    assert!(!h.core.paused());
    assert_eq!(h.take_memory_reports(), vec![report(false, 0, 0, &[], &[])]);
    assert_eq!(h.take_executes(), keys(&["b"]));
    assert_eq!(h.run("b", 10), vec![finished("b", 10, &[], true)]);
    assert_eq!(h.take_executes(), keys(&["c"]));
    h.assert_quiet();
}

#[test]
fn without_a_memory_limit_nothing_pauses_or_fails_for_its_size() {
    let mut h = Harness::new(1);
    h.compute(vec![task("a", &[], true), task("b", &[], true)]);
    assert_eq!(h.take_executes(), keys(&["a"]));
    assert_eq!(h.run("a", 1000), vec![finished("a", 1000, &[], true)]);
    assert!(!h.core.paused());
    assert_eq!(h.take_executes(), keys(&["b"]));
    h.assert_quiet();
}

#[test]
fn a_logs_request_is_handed_to_the_runner_which_holds_the_lines() {
    let mut h = Harness::new(1);
    h.scheduler_sends(ToWorker::GetLogs { request: 9 }, vec![]);
    let asked = h.take(|c| match c {
        WorkerCommand::SendLogs { request } => Ok(request),
        other => Err(other),
    });
    assert_eq!(asked, vec![9]);
    h.assert_quiet();
}

// --- Spilling --------------------------------------------------------------------------------

/// A registered worker over a store that can spill, with a memory limit of `limit` bytes.
fn spilling(nthreads: u32, limit: u64) -> Harness {
    let mut cfg = config(nthreads);
    cfg.registration.memory_limit_bytes = limit;
    let mut h = Harness::unregistered(cfg);
    h.core.set_storage(Storage::Spilling);
    h.core.register(0);
    h.flush();
    assert!(matches!(&h.take_sent()[..], [FromWorker::Register(_)]));
    h.assert_quiet();
    h
}

#[test]
fn past_the_target_the_least_recently_used_values_spill_before_the_next_task_starts() {
    // Target 600 bytes (60%), pause 800 bytes (80%).
    let mut h = spilling(1, 1000);
    h.compute(vec![
        task("a", &[], true),
        task("b", &[], true),
        task("c", &[], true),
        task("d", &[], true),
    ]);
    assert_eq!(h.take_executes(), keys(&["a"]));
    assert_eq!(h.run("a", 300), vec![finished("a", 300, &[], true)]);
    assert_eq!(h.take_executes(), keys(&["b"]));
    assert_eq!(h.run("b", 300), vec![finished("b", 300, &[], true)]);
    assert!(
        h.take_spills().is_empty(),
        "600 bytes: at the target, not past it"
    );
    // "a" is read by a peer: "b" is now the least recently used.
    h.step(WorkerEvent::FromPeer {
        peer: ConnectionId::from("peer-1"),
        msg: PeerRequest::GetData {
            request: 1,
            keys: keys(&["a"]),
        },
    });
    h.take_all();
    h.executed("c", Ok(300));
    // The spill comes before the next task is handed to the executor.
    let cmds = h.take_all();
    let spill = cmds
        .iter()
        .position(|c| c == &WorkerCommand::Spill(keys(&["b"])))
        .expect("b spills");
    let execute = cmds
        .iter()
        .position(|c| matches!(c, WorkerCommand::Execute { key, .. } if key == &k("d")))
        .expect("d starts");
    assert!(spill < execute, "{cmds:?}");
    assert_eq!((h.core.memory_bytes(), h.core.held_bytes()), (600, 900));
    assert!(h.core.on_disk(&k("b")) && !h.core.on_disk(&k("a")));
    assert!(!h.core.paused());

    // A result that does not fit beside what is in memory is kept: older values spill.
    assert_eq!(h.run("d", 700), vec![finished("d", 700, &[], true)]);
    assert_eq!(h.take_spills(), vec![keys(&["a", "c", "d"])]);
    assert_eq!(h.core.memory_bytes(), 0);
    assert_eq!(h.core.held_bytes(), 1600, "more than the limit, on disk");

    // The next heartbeat tells the scheduler what moved, in one report.
    h.tick(1000);
    assert_eq!(h.take_heartbeats(), 1);
    assert_eq!(
        h.take_memory_reports(),
        vec![report(false, 0, 1600, &["b", "a", "c", "d"], &[])]
    );
    // Nothing changed since: no report with the next heartbeat.
    h.tick(2000);
    assert_eq!(h.take_heartbeats(), 1);
    assert!(h.take_memory_reports().is_empty());
    // A spilled value is still read like any other.
    h.scheduler_sends(
        ToWorker::GetData {
            request: 7,
            keys: keys(&["b"]),
        },
        vec![],
    );
    assert_eq!(
        h.take_all(),
        vec![WorkerCommand::SendDataToScheduler {
            request: 7,
            keys: keys(&["b"]),
        }]
    );
    h.assert_quiet();
}

#[test]
fn a_result_bigger_than_the_whole_limit_fails_even_with_spilling() {
    // Results up to 1000 bytes may travel (see `config`); the limit is 500.
    let mut h = spilling(1, 500);
    h.compute(vec![task("big", &[], true)]);
    assert_eq!(h.take_executes(), keys(&["big"]));
    h.executed("big", Ok(501));
    assert_eq!(h.take_deletes(), vec![keys(&["big"])]);
    let (key, error) = take_one_erred(&mut h);
    assert_eq!(key, k("big"));
    assert_eq!(error.kind, TaskErrorKind::MemoryLimit);
    assert!(
        error.message.contains("whole memory limit of 500 bytes"),
        "{error}"
    );
    h.assert_quiet();
}

#[test]
fn a_spill_that_fails_keeps_the_values_in_memory_and_says_so_in_the_next_memory_error() {
    let mut h = spilling(1, 1000);
    h.compute(vec![
        task("a", &[], true),
        task("b", &[], true),
        task("c", &[], true),
        task("d", &[], true),
        task("e", &[], true),
    ]);
    h.take_executes();
    h.run("a", 400);
    h.take_executes();
    h.run("b", 400);
    assert_eq!(h.take_spills(), vec![keys(&["a"])]);
    assert_eq!(h.core.memory_bytes(), 400);
    // The disk is read-only: "a" stays in memory; spilling stops for good.
    h.step(WorkerEvent::SpillFailed {
        keys: keys(&["a"]),
        error: "spill disk error at /x: read-only".into(),
        retry_may_help: false,
    });
    assert!(!h.core.on_disk(&k("a")));
    assert_eq!(h.core.memory_bytes(), 800);
    assert!(
        !h.core.paused(),
        "800 bytes: at the pause fraction, not past it"
    );
    // With spilling off, the memory limit works as without a disk, and its error names the
    // spill failure.
    assert_eq!(h.take_executes(), keys(&["c"]));
    h.executed("c", Ok(300));
    assert_eq!(h.take_deletes(), vec![keys(&["c"])]);
    let (_, error) = take_one_erred(&mut h);
    assert_eq!(error.kind, TaskErrorKind::MemoryLimit);
    assert!(
        error
            .message
            .contains("spilling to disk failed: spill disk error at /x: read-only"),
        "{error}"
    );
    assert!(h.take_spills().is_empty(), "no spill is tried again");
    // Nothing was lost: the scheduler hears "a" is in memory (it never heard otherwise).
    h.tick(1000);
    h.take_heartbeats();
    assert_eq!(
        h.take_memory_reports(),
        vec![report(false, 800, 0, &[], &["a"])]
    );
    h.take_executes();
    h.assert_quiet();
}

#[test]
fn a_spill_that_may_succeed_later_is_tried_again_after_a_while() {
    let mut h = spilling(1, 1000);
    h.compute(vec![
        task("a", &[], true),
        task("b", &[], true),
        task("c", &[], true),
    ]);
    h.take_executes();
    h.run("a", 400);
    h.take_executes();
    h.run("b", 400);
    assert_eq!(h.take_spills(), vec![keys(&["a"])]);
    h.step(WorkerEvent::SpillFailed {
        keys: keys(&["a"]),
        error: "disk full".into(),
        retry_may_help: true,
    });
    h.take_executes();
    // Within SPILL_RETRY_MS nothing spills; after it, the next change spills again.
    h.now = SPILL_RETRY_MS - 1;
    h.run("c", 100);
    assert!(h.take_spills().is_empty());
    assert!(h.core.paused(), "900 bytes in memory");
    h.now = SPILL_RETRY_MS;
    h.release(&["c"]);
    h.take_deletes();
    assert_eq!(h.take_spills(), vec![keys(&["a"])]);
    assert_eq!(h.core.memory_bytes(), 400);
    assert!(!h.core.paused());
    // The pause and the resume are told at once, with the figures only; what moved goes with
    // the next heartbeat (its finished report might not have reached the scheduler yet).
    assert_eq!(
        h.take_memory_reports(),
        vec![
            report(true, 900, 0, &[], &[]),
            report(false, 400, 400, &[], &[])
        ]
    );
    h.tick(SPILL_RETRY_MS + 1000);
    h.take_heartbeats();
    // "a" failed to spill, then spilled: on disk, once.
    assert_eq!(
        h.take_memory_reports(),
        vec![report(false, 400, 400, &["a"], &[])]
    );
    h.assert_quiet();
}

#[test]
fn values_in_a_store_on_disk_never_count_against_the_limit_and_are_reported_on_disk() {
    let mut cfg = config(1);
    cfg.registration.memory_limit_bytes = 1000;
    let mut h = Harness::unregistered(cfg);
    h.core.set_storage(Storage::Disk);
    h.core.register(0);
    h.flush();
    h.take_sent();
    h.compute(vec![task("a", &[], true), task("b", &[], true)]);
    h.take_executes();
    assert_eq!(h.run("a", 900), vec![finished("a", 900, &[], true)]);
    assert_eq!(h.take_executes(), keys(&["b"]), "not paused");
    assert_eq!(h.run("b", 900), vec![finished("b", 900, &[], true)]);
    assert_eq!((h.core.memory_bytes(), h.core.held_bytes()), (0, 1800));
    assert!(h.take_spills().is_empty(), "nothing to spill");
    h.tick(1000);
    h.take_heartbeats();
    assert_eq!(
        h.take_memory_reports(),
        vec![report(false, 0, 1800, &["a", "b"], &[])]
    );
    // Registering again (the scheduler restarted) reports every value on disk again.
    h.core.register(1000);
    h.flush();
    assert!(matches!(&h.take_sent()[..], [FromWorker::Register(_)]));
    h.tick(2000);
    h.take_heartbeats();
    let reports = h.take_memory_reports();
    assert_eq!(reports.len(), 1);
    let mut again = reports[0].spilled.clone();
    again.sort();
    assert_eq!(again, keys(&["a", "b"]));
    h.assert_quiet();
}

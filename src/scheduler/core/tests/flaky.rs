//! Flaky workers: a result finished on a worker whose identity (its nanny) died recently is
//! copied at once to a stable worker, so the next death loses nothing still needed; a
//! fault-free cluster, an expected death or one past the window copies nothing.

use super::*;
use crate::scheduler::core::flaky::{Flaky, Identity, FLAKY_IDENTITIES_MAX};

const NANNY: &str = "nanny-a";

impl Harness {
    /// Worker `n` registers as `address(n)`, a process its nanny `NANNY` gave `token`.
    fn register_under_nanny(&mut self, n: u32, token: u64) {
        self.step(Event::FromWorker {
            identity: ConnectionId::from(NANNY),
            msg: FromWorker::NannyOf {
                worker_address: address(n),
                token,
            },
            frames: vec![],
        });
        self.step(Event::FromWorker {
            identity: worker_id(n),
            msg: FromWorker::Register(registration(address(n), format!("w{n}"), 1, n, Some(token))),
            frames: vec![],
        });
        assert!(h_registered(&self.take_worker_msgs(n)));
    }

    /// `NANNY` reports that its process of worker `n` (given `token`) ended.
    fn nanny_says_died(&mut self, n: u32, token: u64, expected: bool) {
        self.step(Event::FromWorker {
            identity: ConnectionId::from(NANNY),
            msg: FromWorker::WorkerDied {
                worker_address: address(n),
                token,
                expected,
                reason: "SIGKILL".into(),
            },
            frames: vec![],
        });
    }
}

fn h_registered(msgs: &[ToWorker]) -> bool {
    msgs.iter()
        .any(|m| matches!(m, ToWorker::Registered { .. }))
}

/// Whether `c` is a copy of `key` (a task evaluating to its own key, fetched from a holder)
/// rather than a run of its definition.
fn is_copy_of(c: &ComputeTask, key: &str) -> bool {
    name(&c.key) == Key::from(key) && c.dependencies.iter().any(|(d, _)| *d == c.key)
}

/// Worker 1 (under `NANNY`) dies as `expected` says, and the nanny's next process, worker 3,
/// registers; the graph a → b is submitted while only worker 3 is there (so a runs on it),
/// then the stable worker 2 (no nanny) joins. Returns a's task as worker 3 got it.
fn restarted_worker_runs_a(h: &mut Harness, expected: bool) -> ComputeTask {
    h.register_under_nanny(1, 5);
    h.now += 100;
    h.nanny_says_died(1, 5, expected);
    h.now += 100;
    h.register_under_nanny(3, 6);
    h.inbox.clear();
    let g = crate::graph! { "a" => ("inc", 1), "b" => ("inc", "a") };
    h.submit(1, 1, &g, &["b"]);
    let a = h.take_computes(3).pop().expect("a runs on the only worker");
    assert_eq!(name(&a.key), Key::from("a"));
    h.add_worker(2, 1);
    h.inbox.retain(|c| !matches!(c, Command::ToWorker { .. }));
    a
}

#[test]
fn a_result_finished_on_a_worker_whose_nanny_saw_it_die_is_copied_to_a_stable_worker() {
    let mut h = Harness::new();
    let a = restarted_worker_runs_a(&mut h, false);
    h.now += 100;
    h.finish(3, &a, Value::from(2));
    // b waits for a: a's only copy is on a flaky worker, so the stable worker fetches one.
    let on2 = h.take_computes(2);
    let copy = on2
        .iter()
        .find(|c| is_copy_of(c, "a"))
        .unwrap_or_else(|| panic!("a is copied to worker 2: {on2:?}"));
    assert_eq!(copy.dependencies[0].1, vec![address(3)], "from worker 3");
    assert_eq!(h.core.flaky.copies(), 1);
    h.finish(2, copy, Value::from(2));
    // b went where a was (locality); then that process is SIGKILLed too.
    let b = h.take_computes(3);
    assert!(b.iter().any(|c| name(&c.key) == Key::from("b")), "{b:?}");
    h.nanny_says_died(3, 6, false);
    // a survived on worker 2: b runs there on it, and a is not run again.
    assert_eq!(h.core.task_state(&Key::from("a")), Some(TaskState::Memory));
    let again = h.take_computes(2);
    assert!(
        again.iter().all(|c| name(&c.key) != Key::from("a")),
        "{again:?}"
    );
    let b = again
        .iter()
        .find(|c| name(&c.key) == Key::from("b"))
        .expect("b is rescheduled on worker 2");
    assert_eq!(b.dependencies[0].1, vec![address(2)]);
    h.finish(2, b, Value::from(3));
    let replies = h.take_client_msgs(1);
    assert_eq!(replies.last().unwrap().1, vec![Value::from(3)]);
}

#[test]
fn a_fault_free_cluster_copies_nothing() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    let g = crate::graph! { "a" => ("inc", 1), "b" => ("inc", "a") };
    h.submit(1, 1, &g, &["b"]);
    let a = h.take_computes(1).pop().unwrap();
    h.add_worker(2, 1);
    h.finish(1, &a, Value::from(2));
    let on2 = h.take_computes(2);
    assert!(on2.iter().all(|c| !is_copy_of(c, "a")), "{on2:?}");
    assert_eq!(h.core.flaky.copies(), 0);
}

#[test]
fn an_expected_death_does_not_make_a_worker_flaky() {
    let mut h = Harness::new();
    let a = restarted_worker_runs_a(&mut h, true);
    h.finish(3, &a, Value::from(2));
    let on2 = h.take_computes(2);
    assert!(on2.iter().all(|c| !is_copy_of(c, "a")), "{on2:?}");
}

#[test]
fn a_death_older_than_the_window_no_longer_counts() {
    let mut h = Harness::new();
    let a = restarted_worker_runs_a(&mut h, false);
    // The window passes (workers keep heartbeating meanwhile).
    h.now += h.core.config().flaky_window_ms + 1;
    for n in [2, 3] {
        h.step(Event::FromWorker {
            identity: worker_id(n),
            msg: FromWorker::Heartbeat,
            frames: vec![],
        });
    }
    h.finish(3, &a, Value::from(2));
    let on2 = h.take_computes(2);
    assert!(on2.iter().all(|c| !is_copy_of(c, "a")), "{on2:?}");
}

#[test]
fn a_zero_window_turns_early_copies_off() {
    let mut h = Harness::with_config(CoreConfig {
        worker_queue_extra: 1,
        flaky_window_ms: 0,
        ..CoreConfig::default()
    });
    let a = restarted_worker_runs_a(&mut h, false);
    h.finish(3, &a, Value::from(2));
    let on2 = h.take_computes(2);
    assert!(on2.iter().all(|c| !is_copy_of(c, "a")), "{on2:?}");
}

#[test]
fn a_result_nobody_waits_for_is_not_copied() {
    // The output itself: its value goes to the client with the report, nobody waits on it.
    let mut h = Harness::new();
    h.register_under_nanny(1, 5);
    h.nanny_says_died(1, 5, false);
    h.register_under_nanny(3, 6);
    h.inbox.clear();
    h.submit(1, 1, &crate::graph! { "a" => ("inc", 1) }, &["a"]);
    let a = h.take_computes(3).pop().unwrap();
    h.add_worker(2, 1);
    h.finish(3, &a, Value::from(2));
    assert!(h.take_computes(2).is_empty());
    assert_eq!(
        h.take_client_msgs(1).last().unwrap().1,
        vec![Value::from(2)]
    );
}

#[test]
fn the_table_of_deaths_is_bounded_and_forgets_the_oldest_first() {
    let mut flaky = Flaky::default();
    let window = u64::MAX;
    for i in 0..FLAKY_IDENTITIES_MAX as u64 + 10 {
        flaky.died(Identity::Name(WorkerName::from(format!("w{i}"))), i, window);
        flaky.check().unwrap();
    }
    let now = FLAKY_IDENTITIES_MAX as u64 + 10;
    let w = |i: u64| Identity::Name(WorkerName::from(format!("w{i}")));
    assert!(!flaky.is_flaky(&w(0), now, window), "the oldest went first");
    assert!(flaky.is_flaky(&w(now - 1), now, window));
    // Deaths past the window go when the next one is noted.
    flaky.died(w(0), now + 1_000, 10);
    assert!(flaky.is_flaky(&w(0), now + 1_000, 10));
    assert!(!flaky.is_flaky(&w(now - 1), now + 1_000, 10));
}

#[test]
fn a_worker_paused_for_memory_is_not_asked_for_a_copy() {
    let mut h = Harness::new();
    let a = restarted_worker_runs_a(&mut h, false);
    h.step(Event::FromWorker {
        identity: worker_id(2),
        msg: FromWorker::Memory(crate::protocol::MemoryReport {
            paused: true,
            memory_bytes: 1 << 30,
            spilled_bytes: 0,
            spilled: vec![],
            unspilled: vec![],
        }),
        frames: vec![],
    });
    h.finish(3, &a, Value::from(2));
    let on2 = h.take_computes(2);
    assert!(on2.iter().all(|c| !is_copy_of(c, "a")), "{on2:?}");
    assert_eq!(h.core.flaky.copies(), 0);
}

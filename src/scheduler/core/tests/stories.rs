//! Stories and cluster events driven through the core: a worker lost with held results (the
//! event and its counts), a key's story through a loss and a reassignment, a retirement with
//! what it moved, a task marked bad with the workers it killed.

use super::*;
use crate::protocol::{Departure, EventKind, LossCost, Reschedule, StoryEvent};

/// The events recorded so far, without the joins.
fn events(h: &Harness) -> Vec<EventKind> {
    h.core
        .recent_events()
        .into_iter()
        .map(|e| e.what)
        .filter(|e| !matches!(e, EventKind::WorkerJoined { .. }))
        .collect()
}

fn story_of(h: &Harness, key: &str) -> Vec<StoryEvent> {
    h.core
        .story(&Key::from(key))
        .steps
        .into_iter()
        .map(|s| s.what)
        .collect()
}

#[test]
fn a_worker_lost_with_held_results_is_recorded_with_what_it_cost() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    let g = crate::graph! { "a" => ("inc", 1), "b" => ("inc", 2), "c" => ("add", "a", "b") };
    h.submit(1, 1, &g, &["c"]);
    let on1 = h.take_computes(1);
    let on2 = h.take_computes(2);
    h.finish(1, &on1[0], Value::from(2));
    h.finish(2, &on2[0], Value::from(3));
    // c runs where one of its inputs is; the worker running it dies, taking that input along.
    let (victim, c) = match h.take_computes(1).pop() {
        Some(c) => (1, c),
        None => (2, h.take_computes(2).pop().expect("c is placed")),
    };
    let survivor = 3 - victim;
    let lost_input = if victim == 1 { &on1[0] } else { &on2[0] };
    let lost_name = name(&lost_input.key);
    let lost_bytes = encode_value(&Value::from(if victim == 1 { 2 } else { 3 })).len() as u64;
    h.kill_worker(victim);

    let lost = events(&h);
    assert_eq!(
        lost,
        vec![
            EventKind::TaskRescheduled {
                key: Key::from("c"),
                worker: address(victim),
                why: Reschedule::WorkerGone,
            },
            EventKind::WorkerLost {
                worker: address(victim),
                why: Departure::Silent {
                    timeout_ms: h.core.config().heartbeat_timeout_ms
                },
                cost: LossCost {
                    results_lost: 1,
                    results_lost_bytes: lost_bytes,
                    still_needed: 1,
                    recomputing: 1,
                    scattered_lost: 0,
                    running_rerun: 1,
                    queued_reassigned: 0,
                },
            },
        ]
    );
    let line = format!(
        "1 result lost ({}), 1 still needed, recomputing 1 task (1 running there rerun, 0 \
         queued there reassigned)",
        crate::protocol::bytes_text(lost_bytes)
    );
    assert!(lost[1].to_string().ends_with(&line), "{}", lost[1]);

    // The lost input runs again on the survivor, then c.
    let redo = h.take_computes(survivor);
    assert_eq!(redo.len(), 1);
    assert_eq!(name(&redo[0].key), lost_name);
    h.finish(survivor, &redo[0], Value::from(9));
    let c_again = h.take_computes(survivor);
    assert_eq!(c_again.len(), 1);
    assert_eq!(c_again[0].key, c.key);
    h.finish(survivor, &c_again[0], Value::from(5));

    let (v, s) = (address(victim), address(survivor));
    let client = client_id(1).to_string();
    assert_eq!(
        story_of(&h, "c"),
        vec![
            StoryEvent::Submitted {
                client: client.clone()
            },
            StoryEvent::Waiting { inputs: 2 },
            StoryEvent::Ready,
            StoryEvent::Assigned { worker: v.clone() },
            StoryEvent::Rescheduled {
                worker: v.clone(),
                why: Reschedule::WorkerGone
            },
            // Its inputs were both in memory when it was taken back; the loss of one of them
            // follows at once.
            StoryEvent::Ready,
            StoryEvent::Waiting { inputs: 1 },
            StoryEvent::Ready,
            StoryEvent::Assigned { worker: s.clone() },
            StoryEvent::Finished {
                worker: s.clone(),
                took_ms: 0,
                fetched_inputs: 0,
            },
            StoryEvent::Released,
            StoryEvent::Forgotten,
        ]
    );
    let lost_story = story_of(&h, lost_name.as_str().expect("a string key"));
    assert_eq!(
        &lost_story[3..7],
        &[
            StoryEvent::Finished {
                worker: v.clone(),
                took_ms: 0,
                fetched_inputs: 0,
            },
            StoryEvent::ResultLost { worker: v.clone() },
            StoryEvent::Ready,
            StoryEvent::Assigned { worker: s.clone() },
        ],
        "{lost_story:?}"
    );
    let text = h.core.story(&Key::from("c")).summary();
    assert!(
        text.contains(&format!("assigned {v} → {v} lost: rescheduled"))
            && text.contains(&format!("reassigned {s} → done on {s}")),
        "{text}"
    );
}

#[test]
fn a_graceful_goodbye_is_a_worker_left_not_lost() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    h.step(Event::FromWorker {
        identity: worker_id(2),
        msg: FromWorker::Goodbye,
        frames: vec![],
    });
    assert_eq!(
        events(&h),
        vec![EventKind::WorkerLeft {
            worker: address(2),
            why: Departure::Goodbye,
            cost: LossCost::default(),
        }]
    );
}

#[test]
fn a_retired_worker_is_recorded_with_the_results_it_moved() {
    let mut h = Harness::new();
    h.add_worker(1, 1);
    h.add_worker(2, 1);
    // a is kept (the client wants it); it lands on one worker, which then retires.
    h.submit(
        1,
        1,
        &crate::graph! { "a" => ("inc", 1), "gate" => ("inc", 0), "b" => ("add", "a", "gate") },
        &["b"],
    );
    let on1 = h.take_computes(1);
    let on2 = h.take_computes(2);
    let (w_a, a) = match on1.iter().find(|t| name(&t.key) == Key::from("a")) {
        Some(a) => (1, a.clone()),
        None => (
            2,
            on2.iter()
                .find(|t| name(&t.key) == Key::from("a"))
                .unwrap()
                .clone(),
        ),
    };
    let other = 3 - w_a;
    h.finish(w_a, &a, Value::from(2));
    let a_bytes = encode_value(&Value::from(2)).len() as u64;
    h.step(Event::FromWorker {
        identity: worker_id(w_a),
        msg: FromWorker::Retire,
        frames: vec![],
    });
    let copies = h.take_computes(other);
    let copy = copies
        .iter()
        .find(|t| name(&t.key) == Key::from("a"))
        .expect("a is copied before its holder leaves");
    h.finish(other, copy, Value::from(2));
    let retired: Vec<EventKind> = events(&h)
        .into_iter()
        .filter(|e| matches!(e, EventKind::WorkerRetired { .. }))
        .collect();
    assert_eq!(
        retired,
        vec![EventKind::WorkerRetired {
            worker: address(w_a),
            moved: 1,
            moved_bytes: a_bytes,
            left_behind: 0,
        }]
    );
    assert_eq!(
        retired[0].to_string(),
        format!(
            "worker {} retired: moved 1 result ({a_bytes} B)",
            address(w_a)
        )
    );
    assert!(story_of(&h, "a").contains(&StoryEvent::CopiedTo {
        worker: address(other)
    }));
}

#[test]
fn a_task_that_kills_its_workers_is_marked_bad_naming_them() {
    let mut h = Harness::with_config(CoreConfig {
        worker_queue_extra: 1,
        allowed_failures: 1,
        ..CoreConfig::default()
    });
    h.submit(1, 1, &crate::graph! { "bad" => ("inc", 1) }, &["bad"]);
    for n in 1..=2 {
        h.add_worker(n, 1);
        assert_eq!(h.take_computes(n).len(), 1, "bad runs on worker {n}");
        h.kill_worker(n);
    }
    let bad: Vec<EventKind> = events(&h)
        .into_iter()
        .filter(|e| matches!(e, EventKind::TaskMarkedBad { .. }))
        .collect();
    assert_eq!(
        bad,
        vec![EventKind::TaskMarkedBad {
            key: Key::from("bad"),
            killed: vec![address(1), address(2)],
        }]
    );
    assert!(story_of(&h, "bad").contains(&StoryEvent::MarkedBad { workers_killed: 2 }));
}

#[test]
fn stories_are_bounded_in_keys() {
    let mut h = Harness::with_config(CoreConfig {
        worker_queue_extra: 1,
        story_keys_max: 2,
        ..CoreConfig::default()
    });
    h.submit(
        1,
        1,
        &crate::graph! { "x" => 1, "y" => 2, "z" => ("add", "x", "y") },
        &["z"],
    );
    let kept = ["x", "y", "z"]
        .iter()
        .filter(|k| !story_of(&h, k).is_empty())
        .count();
    assert_eq!(kept, 2);
    assert!(h.core.story(&Key::from("never")).steps.is_empty());
}

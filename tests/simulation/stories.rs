//! Stories and events in the simulator: every key's story is checked as a valid sequence after
//! every step (the core's invariants include it); here, a crash mid-graph must show up as a
//! loss event and in the stories of the keys it cost.

use zask::protocol::{EventKind, StoryEvent};
use zask::Key;

use crate::clients::Step;
use crate::scenarios::{chain_graph, expect_ok, scenario};

#[test]
pub(crate) fn a_crash_mid_graph_is_told_by_the_events_and_the_stories() {
    let mut sim = scenario(11, 10_000);
    for _ in 0..3 {
        sim.add_worker(1);
    }
    let (graph, outputs) = chain_graph("chain", 30);
    let keys: Vec<Key> = graph.iter().map(|(k, _)| k.clone()).collect();
    let ntasks = graph.len() as u64;
    sim.add_client(
        vec![
            Step::Hello,
            Step::Submit {
                graph,
                outputs,
                keep: false,
                restrictions: vec![],
            },
            Step::WaitAll,
        ],
        0,
    );
    let r = sim.run_until(10_000, |s| {
        s.workers.iter().any(|w| w.rt.store().len() >= 2) && s.stats.executions >= ntasks / 2
    });
    assert_eq!(r, Ok(true), "no worker ever held two results");
    let holder = (0..3)
        .find(|&w| sim.workers[w].rt.store().len() >= 2)
        .expect("a holder");
    let victim = sim.workers[holder].address.clone();
    sim.crash(holder, true, true);
    let r = sim.finish();
    expect_ok(&mut sim, r);

    let lost: Vec<EventKind> = sim
        .sched
        .recent_events()
        .into_iter()
        .map(|e| e.what)
        .filter(|e| matches!(e, EventKind::WorkerLost { worker, .. } if *worker == victim))
        .collect();
    assert_eq!(lost.len(), 1, "one loss of {victim}: {lost:?}");
    let EventKind::WorkerLost { cost, .. } = &lost[0] else {
        unreachable!("filtered above")
    };
    assert!(cost.results_lost >= 1, "{}", lost[0]);

    // Some key lost its result with the victim (or was taken back from it) and finished
    // elsewhere afterwards.
    let told = keys.iter().any(|k| {
        let steps = sim.sched.story(k).steps;
        let hit = steps.iter().position(|s| match &s.what {
            StoryEvent::ResultLost { worker } | StoryEvent::Rescheduled { worker, .. } => {
                *worker == victim
            }
            _ => false,
        });
        hit.is_some_and(|i| {
            steps[i..].iter().any(
                |s| matches!(&s.what, StoryEvent::Finished { worker, .. } if *worker != victim),
            )
        })
    });
    assert!(told, "no story tells of the loss of {victim}");
}

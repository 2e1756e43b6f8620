//! Named scenarios: each fault, and each bug the random runs found, as a test of its own.

use std::collections::VecDeque;

use zask::graph::{Expr, Graph, Key, Node};
use zask::protocol::{WorkerAddress, WorkerSelector};
use zask::Value;

use crate::clients::{ReqKind, Step};
use crate::rng::Rng;
use crate::sim::Sim;
use crate::workload::{call, lit, name, random_graph};
use crate::{HEARTBEAT_TIMEOUT_MS, R};

/// A chain `p.0 -> p.1 -> ... -> p.(n-1)`, plus a sum over every fifth link.
pub(crate) fn chain_graph(prefix: &str, n: usize) -> (Vec<(Key, Expr)>, Vec<Key>) {
    let mut g = Graph::new();
    g.insert(format!("{prefix}.0"), lit(1));
    for i in 1..n {
        g.insert(
            format!("{prefix}.{i}"),
            call("inc", vec![name(&format!("{prefix}.{}", i - 1))]),
        );
    }
    let picks: Vec<Node> = (0..n)
        .step_by(5)
        .map(|i| name(&format!("{prefix}.{i}")))
        .collect();
    g.insert(
        format!("{prefix}.sum"),
        call("sum", vec![Node::List(picks)]),
    );
    let outputs = vec![
        Key::from(format!("{prefix}.{}", n - 1)),
        Key::from(format!("{prefix}.sum")),
    ];
    (g.resolve(&|_| false), outputs)
}

pub(crate) fn scenario(seed: u64, fault_end: u64) -> Sim {
    let mut sim = Sim::new(seed, Sim::config(HEARTBEAT_TIMEOUT_MS, 1, false), fault_end);
    if std::env::var("ZASK_SIM_TRACE").is_ok() {
        sim.trace = Some(VecDeque::new());
    }
    sim
}

pub(crate) fn expect_ok(sim: &mut Sim, r: R) {
    if let Err(e) = r {
        if let Some(t) = &sim.trace {
            for line in t {
                eprintln!("{line}");
            }
        }
        panic!("{e}");
    }
}

pub(crate) fn answered(sim: &Sim, c: usize) -> bool {
    !sim.clients[c].waiting()
}

#[test]
pub(crate) fn worker_crash_mid_graph_recomputes_lost_results() {
    let mut sim = scenario(11, 10_000);
    for _ in 0..3 {
        sim.add_worker(1);
    }
    let (graph, outputs) = chain_graph("chain", 30);
    let ntasks = graph.len() as u64;
    let c = sim.add_client(
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
    // Wait until a worker holds part of the chain, then crash it.
    let r = sim.run_until(10_000, |s| {
        s.workers.iter().any(|w| w.rt.store().len() >= 2) && s.stats.executions >= ntasks / 2
    });
    let holder = (0..3).find(|&w| sim.workers[w].rt.store().len() >= 2);
    assert_eq!(r, Ok(true), "no worker ever held two results");
    assert!(!answered(&sim, c));
    let holder = holder.unwrap();
    let executions_before = sim.stats.executions;
    sim.crash(holder, true, true);
    let r = sim.finish();
    expect_ok(&mut sim, r);
    assert!(
        sim.stats.executions > ntasks,
        "{} executions for {ntasks} tasks: nothing was recomputed after the crash (crashed after {executions_before})",
        sim.stats.executions
    );
}

#[test]
pub(crate) fn every_worker_lost_then_one_joins_finishes_the_work() {
    let mut sim = scenario(12, 0);
    sim.add_worker(2);
    sim.add_worker(1);
    let (graph, outputs) = chain_graph("all", 25);
    let mut rng = Rng::derive(12, &[9]);
    let (graph2, outputs2) = random_graph(&mut rng, "rnd", None, &[]);
    let c = sim.add_client(
        vec![
            Step::Hello,
            Step::Submit {
                graph,
                outputs,
                keep: false,
                restrictions: vec![],
            },
            Step::Submit {
                graph: graph2,
                outputs: outputs2,
                keep: true,
                restrictions: vec![],
            },
            Step::WaitAll,
            Step::GatherKept,
            Step::WaitAll,
            Step::ReleaseKept,
            Step::WaitAll,
        ],
        0,
    );
    let r = sim.run_until(10_000, |s| s.stats.executions >= 5);
    assert_eq!(r, Ok(true));
    for w in 0..2 {
        sim.crash(w, rng.chance(50), rng.chance(50));
    }
    // Long enough for the scheduler to give up on both; nothing can be answered meanwhile.
    let until = sim.now + 5 * HEARTBEAT_TIMEOUT_MS;
    let r = sim.run_until(until, |_| false);
    expect_ok(&mut sim, r.map(drop));
    assert!(!answered(&sim, c), "answered with no worker alive");
    assert_eq!(sim.sched.status().workers.len(), 0);
    sim.add_worker(1);
    sim.fault_end = sim.now;
    let r = sim.finish();
    expect_ok(&mut sim, r);
}

#[test]
pub(crate) fn partitioned_worker_is_replaced_then_rejoins_without_leaks() {
    let mut sim = scenario(13, 0);
    sim.add_worker(1);
    sim.add_worker(1);
    let (graph, outputs) = chain_graph("part", 30);
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
    let r = sim.run_until(10_000, |s| s.stats.executions >= 8);
    assert_eq!(r, Ok(true));
    let busiest = (0..2).max_by_key(|&w| sim.workers[w].executions).unwrap();
    sim.partition(busiest, 3 * HEARTBEAT_TIMEOUT_MS, 0);
    sim.fault_end = sim.now + 3 * HEARTBEAT_TIMEOUT_MS;
    let r = sim.finish();
    expect_ok(&mut sim, r);
}

#[test]
pub(crate) fn scattered_data_lost_with_its_worker_fails_dependents_with_data_lost() {
    let mut sim = scenario(14, 0);
    sim.add_worker(1);
    let key = Key::from("sc.lost");
    let mut g = Graph::new();
    g.insert("uses", call("inc", vec![name("sc.lost")]));
    let graph = g.resolve(&|k| *k == key);
    let c = sim.add_client(
        vec![
            Step::Hello,
            Step::Scatter(vec![(key.clone(), Value::Int(41))]),
            Step::WaitAll,
            // Wait here while the only holder is lost and another worker joins.
            Step::Sleep(3_000),
            Step::Submit {
                graph,
                outputs: vec![Key::from("uses")],
                keep: false,
                restrictions: vec![],
            },
            Step::WaitAll,
            Step::ReleaseScattered,
            Step::WaitAll,
        ],
        0,
    );
    let r = sim.run_until(5_000, |s| s.stores(0, key.as_str().unwrap()));
    assert_eq!(r, Ok(true), "the scattered key never reached the worker");
    sim.crash(0, false, true);
    sim.add_worker(1);
    sim.fault_end = sim.now;
    let r = sim.finish();
    expect_ok(&mut sim, r);
    // The submit must have failed (the sim accepts only DataLost or MissingKey for it).
    let submit = &sim.clients[c].requests[&2];
    assert!(matches!(submit.kind, ReqKind::Submit { .. }));
    let answer = submit.answer.clone().unwrap_or_default();
    assert!(answer.starts_with("DataLost"), "{answer}");
}

// ---- regressions: each of these failed on the cores as first simulated ----

impl Sim {
    /// Adds steps to a client's script (learning their graphs) and lets it act at once.
    pub(crate) fn inject(&mut self, c: usize, steps: Vec<Step>) -> R {
        for step in &steps {
            if let Step::Submit { graph, .. } = step {
                self.refs.learn(graph);
            }
        }
        let cl = &mut self.clients[c];
        cl.script.extend(steps);
        cl.finished = false;
        self.client_poll(c)
    }

    /// Whether worker `w` stores a value of `key` that the scheduler knows (under any
    /// definition: workers know tasks by their wire keys).
    pub(crate) fn stores(&self, w: usize, key: &str) -> bool {
        let key = Key::from(key);
        self.workers[w]
            .stored()
            .iter()
            .any(|k| self.sched.key_of(k).as_ref() == Some(&key))
    }

    pub(crate) fn answer(&self, c: usize, request: u64) -> String {
        self.clients[c].requests[&request]
            .answer
            .clone()
            .unwrap_or_else(|| "no answer".into())
    }
}

/// A submission; each task of `restrictions` may run only on the workers at these addresses.
pub(crate) fn submit(graph: Graph, outputs: &[&str], restrictions: &[(&str, &[&str])]) -> Step {
    Step::Submit {
        graph: graph.resolve(&|_| false),
        outputs: outputs.iter().map(|k| Key::from(*k)).collect(),
        keep: false,
        restrictions: restrictions
            .iter()
            .map(|(k, ws)| {
                let selectors = ws
                    .iter()
                    .map(|w| WorkerSelector::Address(WorkerAddress::from(*w)))
                    .collect();
                (Key::from(*k), selectors)
            })
            .collect(),
    }
}

pub(crate) fn run_ok(sim: &mut Sim, limit: u64, done: impl Fn(&Sim) -> bool) {
    let r = sim.run_until(limit, done);
    match r {
        Ok(true) => {}
        Ok(false) => {
            let e = format!("the scenario's trigger never came (by {limit} ms)");
            expect_ok(sim, Err(e));
        }
        Err(e) => expect_ok(sim, Err(e)),
    }
}

/// The only copy of a scattered input and a computed input are lost together: the scattered
/// one fails the request, which releases the computed one while `remove_worker` still walks
/// its list of lost tasks (it panicked on the forgotten task id).
#[test]

pub(crate) fn losing_the_scattered_and_computed_inputs_of_a_request_together() {
    let mut sim = scenario(21, 0);
    sim.exec_ms = Some(50);
    sim.add_worker(1);
    let mut g = Graph::new();
    g.insert("x", lit(1));
    g.insert("z", lit(2));
    g.insert("y", call("inc", vec![name("z")]));
    g.insert(
        "o",
        call(
            "sum",
            vec![Node::List(vec![name("sc.in"), name("x"), name("y")])],
        ),
    );
    let graph = g.resolve(&|k| *k == Key::from("sc.in"));
    let c = sim.add_client(
        vec![
            Step::Hello,
            Step::Scatter(vec![(Key::from("sc.in"), Value::Int(5))]),
            Step::WaitAll,
            Step::Submit {
                graph,
                outputs: vec![Key::from("o")],
                keep: false,
                restrictions: vec![],
            },
            Step::WaitAll,
            Step::ReleaseScattered,
            Step::WaitAll,
        ],
        0,
    );
    run_ok(&mut sim, 5_000, |s| {
        s.stores(0, "x") && s.stores(0, "sc.in")
    });
    assert!(!sim.stores(0, "o"));
    sim.crash(0, true, true);
    sim.add_worker(1);
    sim.fault_end = sim.now;
    let r = sim.finish();
    expect_ok(&mut sim, r);
    let answer = sim.answer(c, 2);
    assert!(answer.starts_with("DataLost"), "{answer}");
}

/// A scatter split over two workers: one stores its part and dies before the other (slow to
/// reach) has stored its own. The scheduler must not record the dead worker as a holder (it
/// did, breaking its invariants and answering `Scattered` for lost data), nor leave the
/// copies of an abandoned put behind.
#[test]

pub(crate) fn worker_lost_during_a_scatter_neither_leaks_nor_claims_lost_data() {
    let mut sim = scenario(22, 0);
    sim.add_worker(1);
    sim.add_worker(1);
    let mut g = Graph::new();
    g.insert(
        "s",
        call("sum", vec![Node::List(vec![name("sc.a"), name("sc.b")])]),
    );
    let scattered = [Key::from("sc.a"), Key::from("sc.b")];
    let graph = g.resolve(&|k| scattered.contains(k));
    sim.add_client(
        vec![
            Step::Hello,
            Step::Sleep(50),
            Step::Scatter(vec![
                (scattered[0].clone(), Value::Int(1)),
                (scattered[1].clone(), Value::Int(2)),
            ]),
            Step::WaitAll,
            Step::Submit {
                graph,
                outputs: vec![Key::from("s")],
                keep: false,
                restrictions: vec![],
            },
            Step::WaitAll,
            Step::ReleaseScattered,
            Step::WaitAll,
        ],
        0,
    );
    run_ok(&mut sim, 1_000, |s| s.now >= 20);
    // w1 hears nothing from the scheduler for a while: its part of the put is late.
    sim.partition(1, 1_500, 2);
    run_ok(&mut sim, 1_000, |s| !s.workers[0].rt.store().is_empty());
    sim.crash(0, false, true);
    sim.add_worker(1);
    sim.fault_end = sim.now + 1_500;
    let r = sim.finish();
    expect_ok(&mut sim, r);
}

/// A task is released (its request cancelled) while it runs, after fetching an input from a
/// peer. The worker dropped the result but kept the fetched copy, which the scheduler never
/// heard of: a leak.
#[test]

pub(crate) fn task_released_while_running_leaves_no_fetched_copy_behind() {
    let mut sim = scenario(23, 0);
    sim.exec_ms = Some(100);
    let a = sim.add_worker(1);
    let b = sim.add_worker(1);
    let mut g = Graph::new();
    g.insert("a", lit(1));
    g.insert("b", lit(2));
    g.insert("c", call("add", vec![name("a"), name("b")]));
    let (wa, wb) = (format!("sim://w{a}"), format!("sim://w{b}"));
    let c = sim.add_client(
        vec![
            Step::Hello,
            submit(
                g,
                &["c"],
                &[
                    ("a", &[wa.as_str()]),
                    ("b", &[wb.as_str()]),
                    ("c", &[wa.as_str()]),
                ],
            ),
        ],
        0,
    );
    // `c` runs on w0 once it fetched `b` from w1.
    run_ok(&mut sim, 5_000, |s| s.stores(a, "b"));
    let r = sim.inject(c, vec![Step::Cancel, Step::WaitAll]);
    expect_ok(&mut sim, r);
    let r = sim.finish();
    expect_ok(&mut sim, r);
}

/// A worker finishes a task, then its input's only holder leaves: the scheduler takes the
/// task back and tells the worker to release it, while the worker's report of the result is
/// on its way. The scheduler accepted the crossing report, listing as a holder a worker that
/// had just deleted the value; the next task there found nothing, reported the dependency
/// missing with no holder to blame (it leaves its own address out), and was given the same
/// task again, forever.
#[test]

pub(crate) fn finished_report_crossing_a_release_leaves_no_phantom_holder() {
    let mut sim = scenario(24, 0);
    sim.exec_ms = Some(50);
    let a = sim.add_worker(1);
    let b = sim.add_worker(1);
    let mut g = Graph::new();
    g.insert("i", lit(7));
    g.insert("t", call("inc", vec![name("i")]));
    g.insert("u", call("inc", vec![name("t")]));
    let (wa, wb, wc) = (
        format!("sim://w{a}"),
        format!("sim://w{b}"),
        format!("sim://w{}", b + 1),
    );
    sim.add_client(
        vec![
            Step::Hello,
            submit(
                g,
                &["u"],
                &[("i", &[wb.as_str(), wc.as_str()]), ("t", &[wa.as_str()])],
            ),
            Step::WaitAll,
        ],
        0,
    );
    // `t` runs on w0 with `i` fetched from w1; w0's reports are held up for a while.
    run_ok(&mut sim, 5_000, |s| s.stores(a, "i"));
    sim.partition(a, 300, 1);
    run_ok(&mut sim, 5_000, |s| s.stores(a, "t"));
    sim.leave(b);
    // The worker that may recompute `i` comes only after the crossing report arrived.
    let later = sim.now + 400;
    let r = sim.run_until(later, |_| false);
    expect_ok(&mut sim, r.map(drop));
    sim.add_worker(1);
    sim.fault_end = sim.now;
    let r = sim.finish();
    expect_ok(&mut sim, r);
}

/// The only holder of scattered data is slow to answer one fetch (longer than the fetch
/// timeout) but alive. The fetching worker reports the dependency missing and the scheduler
/// declares the data lost, releases the live copy and fails the request with `DataLost`:
/// a transient delay destroys data that has no lineage.
#[test]

pub(crate) fn slow_peer_does_not_destroy_scattered_data() {
    let mut sim = scenario(25, 0);
    sim.add_worker(1);
    sim.add_worker(1);
    let key = Key::from("sc.slow");
    let c = sim.add_client(
        vec![
            Step::Hello,
            Step::Scatter(vec![(key.clone(), Value::Int(41))]),
            Step::WaitAll,
        ],
        0,
    );
    run_ok(&mut sim, 5_000, |s| s.clients[c].finished);
    let holder = (0..2).find(|&w| sim.stores(w, "sc.slow")).unwrap();
    let other = format!("sim://w{}", 1 - holder);
    sim.peer_slow_until.insert(holder, sim.now + 1_000);
    let mut g = Graph::new();
    g.insert("o", call("inc", vec![name("sc.slow")]));
    let graph = g.resolve(&|k| *k == key);
    let r = sim.inject(
        c,
        vec![
            Step::Submit {
                graph,
                outputs: vec![Key::from("o")],
                keep: false,
                restrictions: vec![(Key::from("o"), vec![WorkerSelector::Address(other.into())])],
            },
            Step::WaitAll,
            Step::ReleaseScattered,
            Step::WaitAll,
        ],
    );
    expect_ok(&mut sim, r);
    sim.fault_end = sim.now + 1_000;
    let r = sim.finish();
    expect_ok(&mut sim, r);
    assert_eq!(sim.answer(c, 2), "values");
}

//! The workload: random graphs (over shared and scattered keys), random client scripts, and
//! the whole random run of one seed (workers, clients, faults).

use std::collections::{BTreeMap, BTreeSet};

use zask::graph::{Expr, Graph, Key, Node};
use zask::Value;

use crate::clients::Step;
use crate::network::Fault;
use crate::rng::Rng;
use crate::sim::Sim;
use crate::HEARTBEAT_TIMEOUT_MS;

pub(crate) fn lit(v: i64) -> Node {
    Node::Value(Value::Int(v))
}

pub(crate) fn name(s: &str) -> Node {
    Node::Value(Value::Str(s.to_owned()))
}

pub(crate) fn call(f: &str, args: Vec<Node>) -> Node {
    Node::Task(f.to_owned(), args)
}

/// A random `inc`/`add`/`sum` over references drawn by `pick`.
pub(crate) fn random_op(rng: &mut Rng, pick: &mut dyn FnMut(&mut Rng) -> String) -> Node {
    match rng.below(4) {
        0 => call("inc", vec![name(&pick(rng))]),
        1 => call("add", vec![name(&pick(rng)), name(&pick(rng))]),
        2 => call("add", vec![name(&pick(rng)), lit(rng.below(10) as i64)]),
        _ => {
            let n = rng.range(1, 4);
            let mut items: Vec<Node> = (0..n).map(|_| name(&pick(rng))).collect();
            if rng.chance(30) {
                items.push(lit(rng.below(5) as i64));
            }
            call("sum", vec![Node::List(items)])
        }
    }
}

/// Keys every client may use, always with the same definitions.
pub(crate) struct Shared {
    pub(crate) defs: Vec<(String, Node)>,
    pub(crate) deps: BTreeMap<String, Vec<String>>,
}

impl Shared {
    pub(crate) fn generate(rng: &mut Rng) -> Shared {
        let mut defs: Vec<(String, Node)> = Vec::new();
        let mut deps = BTreeMap::new();
        let n = rng.range(3, 10);
        for i in 0..n {
            let key = format!("sh{i}");
            let mut used = Vec::new();
            let node = if i < 2 || rng.chance(20) {
                lit(rng.below(50) as i64)
            } else if rng.chance(8) {
                call("fail", vec![name(&format!("shared boom {i}"))])
            } else {
                let earlier: Vec<String> = defs.iter().map(|(k, _)| k.clone()).collect();
                random_op(rng, &mut |r| {
                    let k = r.pick(&earlier);
                    used.push(k.clone());
                    k
                })
            };
            deps.insert(key.clone(), used);
            defs.push((key, node));
        }
        Shared { defs, deps }
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.defs.iter().map(|(k, _)| k.clone()).collect()
    }

    /// Adds `key` and what it needs to `graph`.
    pub(crate) fn include(&self, key: &str, graph: &mut Graph) {
        let mut stack = vec![key.to_owned()];
        while let Some(k) = stack.pop() {
            if graph.contains(&Key::from(k.as_str())) {
                continue;
            }
            let node = &self.defs.iter().find(|(n, _)| *n == k).unwrap().1;
            graph.insert(k.as_str(), node.clone());
            stack.extend(self.deps[&k].iter().cloned());
        }
    }
}

/// A random layered graph named under `prefix`, possibly using shared and scattered keys;
/// returns the resolved graph and the requested keys.
pub(crate) fn random_graph(
    rng: &mut Rng,
    prefix: &str,
    shared: Option<&Shared>,
    scattered: &[Key],
) -> (Vec<(Key, Expr)>, Vec<Key>) {
    let n = if rng.chance(15) {
        rng.range(20, 40)
    } else {
        rng.range(5, 18)
    };
    let fail_at = if rng.chance(12) {
        Some(rng.below(n))
    } else {
        None
    };
    let shared_names = shared.map(|s| s.names()).unwrap_or_default();
    let scattered_names: Vec<String> = scattered
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let mut graph = Graph::new();
    let mut names: Vec<String> = Vec::new();
    let mut used_shared = BTreeSet::new();
    for i in 0..n {
        let key = format!("{prefix}.{i}");
        let node = if Some(i) == fail_at {
            if i > 0 && rng.chance(50) {
                // Fails with the value of its input as message: a failing task that fetched.
                call("fail", vec![name(&names[rng.below(i) as usize])])
            } else {
                call("fail", vec![name(&format!("boom {key}"))])
            }
        } else if i == 0 || rng.chance(12) {
            lit(rng.below(100) as i64)
        } else {
            random_op(rng, &mut |r| {
                let x = r.below(100);
                if x < 12 && !shared_names.is_empty() {
                    let k = r.pick(&shared_names);
                    used_shared.insert(k.clone());
                    k
                } else if x < 22 && !scattered_names.is_empty() {
                    r.pick(&scattered_names)
                } else {
                    // Mostly recent keys: deeper graphs.
                    let lo = names.len().saturating_sub(6) as u64;
                    let j = if r.chance(70) {
                        r.range(lo, names.len() as u64 - 1)
                    } else {
                        r.below(names.len() as u64)
                    };
                    names[j as usize].clone()
                }
            })
        };
        graph.insert(key.as_str(), node);
        names.push(key);
    }
    let mut outputs = Vec::new();
    for _ in 0..rng.range(1, 3) {
        let x = rng.below(100);
        let k = if x < 70 {
            let lo = names.len() * 2 / 3;
            names[rng.range(lo as u64, names.len() as u64 - 1) as usize].clone()
        } else if x < 90 || used_shared.is_empty() {
            rng.pick(&names)
        } else {
            let u: Vec<String> = used_shared.iter().cloned().collect();
            rng.pick(&u)
        };
        outputs.push(Key::from(k.as_str()));
        if rng.chance(10) {
            outputs.push(Key::from(k.as_str()));
        }
    }
    if let Some(s) = shared {
        for k in &used_shared {
            s.include(k, &mut graph);
        }
    }
    let resolved = graph.resolve(&|k| scattered.contains(k));
    (resolved, outputs)
}

/// A random client: maybe scatter, a few submits (some kept, some cancelled), gathers and
/// releases, or leaving halfway.
pub(crate) fn random_script(
    rng: &mut Rng,
    c: usize,
    shared: Option<&Shared>,
    fault_end: u64,
) -> Vec<Step> {
    let mut steps = vec![Step::Hello];
    let abandons = rng.chance(8);
    let mut scattered = Vec::new();
    if !abandons && rng.chance(30) {
        let kvs: Vec<(Key, Value)> = (0..rng.range(1, 3))
            .map(|i| {
                (
                    Key::from(format!("sc{c}.{i}")),
                    Value::Int(rng.below(1000) as i64),
                )
            })
            .collect();
        scattered = kvs.iter().map(|(k, _)| k.clone()).collect();
        steps.push(Step::Scatter(kvs));
        steps.push(Step::WaitAll);
        if rng.chance(40) {
            steps.push(Step::ReplicateScattered(rng.range(2, 3) as u32));
            if rng.chance(50) {
                steps.push(Step::WaitAll);
            }
        }
    }
    let mut any_kept = false;
    for r in 0..rng.range(1, 4) {
        steps.push(Step::Sleep(rng.below(fault_end / 2 + 1)));
        let keep = !abandons && rng.chance(20);
        any_kept |= keep;
        let (graph, outputs) = random_graph(rng, &format!("c{c}r{r}"), shared, &scattered);
        // Shared keys are never kept: `kept` is one flag, not one per client.
        let outputs = if keep {
            outputs
                .into_iter()
                .filter(|k| !k.as_str().unwrap().starts_with("sh"))
                .collect::<Vec<_>>()
        } else {
            outputs
        };
        if outputs.is_empty() {
            continue;
        }
        steps.push(Step::Submit {
            graph,
            outputs,
            keep,
            restrictions: vec![],
        });
        if !keep && rng.chance(10) {
            steps.push(Step::Sleep(rng.below(300)));
            steps.push(Step::Cancel);
        }
    }
    if abandons {
        steps.push(Step::Sleep(rng.below(fault_end + 1)));
        steps.push(Step::Goodbye);
        return steps;
    }
    steps.push(Step::WaitAll);
    if any_kept {
        steps.push(Step::Sleep(rng.below(500)));
        steps.push(Step::GatherKept);
        steps.push(Step::WaitAll);
        steps.push(Step::ReleaseKept);
        steps.push(Step::WaitAll);
    }
    if !scattered.is_empty() {
        steps.push(Step::ReleaseScattered);
        steps.push(Step::WaitAll);
    }
    steps
}

/// The whole random run of one seed.
pub(crate) fn random_sim(seed: u64) -> Sim {
    let mut rng = Rng::derive(seed, &[1]);
    let fault_end = rng.range(300, 3000);
    let config = Sim::config(HEARTBEAT_TIMEOUT_MS, rng.below(4) as u32, rng.chance(50));
    let mut sim = Sim::new(seed, config, fault_end);
    // From a stream of its own, so each seed's workload and faults stay what they were.
    sim.inline = Rng::derive(seed, &[2]).chance(50);
    let nworkers = if rng.chance(10) { 1 } else { rng.range(2, 5) };
    for _ in 0..nworkers {
        sim.add_worker(rng.range(1, 3) as u32);
    }
    let shared = if rng.chance(60) {
        Some(Shared::generate(&mut rng))
    } else {
        None
    };
    for c in 0..rng.range(1, 3) as usize {
        let script = random_script(&mut rng, c, shared.as_ref(), fault_end);
        let start = rng.below(200);
        sim.add_client(script, start);
    }
    let nfaults = rng.below(5);
    for _ in 0..nfaults {
        let at = rng.below(fault_end);
        let pick = rng.next();
        let fault = match rng.below(100) {
            0..=34 => Fault::Crash {
                pick,
                drop_inflight: rng.chance(50),
                noticed: rng.chance(75),
                rejoin_after: if rng.chance(60) {
                    Some(rng.range(0, 1500))
                } else {
                    None
                },
            },
            35..=49 => Fault::Join {
                nthreads: rng.range(1, 3) as u32,
            },
            50..=59 => Fault::Leave { pick },
            60..=79 => Fault::Partition {
                pick,
                ms: rng.range(100, 1500),
                dirs: rng.below(3) as u8,
            },
            80..=89 => Fault::SlowPeer {
                pick,
                ms: rng.range(300, 1500),
            },
            90..=94 => Fault::SchedulerRestart {
                down_ms: rng.range(0, 1500),
            },
            _ => Fault::CrashAll {
                rejoin_after: rng.range(0, 2000),
            },
        };
        sim.schedule_fault(at, fault);
    }
    if rng.chance(8) {
        let at = rng.below(fault_end);
        let down_ms = rng.range(0, 1500);
        sim.schedule_fault(at, Fault::SchedulerRestart { down_ms });
    }
    sim.schedule_fault(fault_end, Fault::End);
    sim
}

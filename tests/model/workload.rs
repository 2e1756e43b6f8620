//! The workload: what model clients send. Key names come from a small pool and each key has a
//! few definitions per sequence, so graphs constantly overlap with the same or other
//! definitions of a key, and refer to keys they do not define (named values), the way real
//! users reuse `x`, `y` and `total` across commands.

use std::collections::BTreeMap;

use zask::collection::{Collection, CollectionKind};
use zask::graph::{Expr, Key};
use zask::Value;

use crate::reference::has_cycle;
use crate::rng::Rng;

pub const KEY_POOL: [&str; 6] = ["x", "y", "z", "total", "a", "b"];
pub const DATASET_NAMES: [&str; 2] = ["d1", "d2"];
pub const COLLECTION_NAMES: [&str; 2] = ["c1", "c2"];

/// One request as a client means it (the request id is added when it is sent).
#[derive(Clone, Debug)]
pub enum ClientOp {
    Submit {
        graph: Vec<(Key, Expr)>,
        outputs: Vec<Key>,
        keep: bool,
    },
    Persist {
        graph: Vec<(Key, Expr)>,
        outputs: Vec<Key>,
    },
    Scatter {
        keys: Vec<Key>,
        values: Vec<i64>,
    },
    Gather(Vec<Key>),
    Release(Vec<Key>),
    WhoHas(Vec<Key>),
    Replicate(Vec<Key>, u32),
    Publish(String, Collection),
    GetDataset(String),
    Unpublish(String),
    SetCollection(String, Collection),
    GetCollection(String),
    DeleteCollection(String),
    ListCollections,
    Status,
    Restart,
    /// Cancel one of this client's requests in flight (chosen when sent).
    Cancel,
    Goodbye,
    /// Stop sending anything, pings included: the scheduler times the client out.
    GoSilent,
}

fn pool_key(rng: &mut Rng) -> Key {
    let s: &&str = rng.pick(&KEY_POOL);
    key(s)
}

pub fn key(s: &str) -> Key {
    Key::from(s)
}

pub fn lit(i: i64) -> Expr {
    Expr::Lit(Value::Int(i))
}

pub fn r(s: &str) -> Expr {
    Expr::Ref(key(s))
}

pub fn call(f: &str, args: Vec<Expr>) -> Expr {
    Expr::Call(f.into(), args)
}

/// The few definitions each key may have in one sequence.
pub struct DefinitionPool {
    defs: BTreeMap<Key, Vec<Expr>>,
}

impl DefinitionPool {
    pub fn new(rng: &mut Rng) -> DefinitionPool {
        let mut defs = BTreeMap::new();
        for k in KEY_POOL {
            let n = rng.range(1, 3);
            let mut list = vec![lit(*rng.pick(&[1, 2, 3, 5]))];
            for _ in 1..n {
                list.push(random_definition(rng, k));
            }
            defs.insert(key(k), list);
        }
        DefinitionPool { defs }
    }

    /// A graph of 1 to 4 pool keys, each with one of its definitions, without cycles.
    pub fn graph(&self, rng: &mut Rng) -> Vec<(Key, Expr)> {
        let n = rng.range(1, 4) as usize;
        let mut graph: Vec<(Key, Expr)> = Vec::new();
        let mut attempts = 0;
        while graph.len() < n && attempts < 20 {
            attempts += 1;
            let k = pool_key(rng);
            if graph.iter().any(|(g, _)| *g == k) {
                continue;
            }
            let e = rng.pick(&self.defs[&k]).clone();
            graph.push((k, e));
            if has_cycle(&graph) {
                graph.pop();
            }
        }
        graph
    }

    /// Outputs: one or two keys the graph defines; rarely a named key it does not define.
    pub fn outputs(&self, rng: &mut Rng, graph: &[(Key, Expr)]) -> Vec<Key> {
        if rng.chance(4) {
            return vec![pool_key(rng)];
        }
        let n = rng.range(1, 2);
        (0..n).map(|_| rng.pick(graph).0.clone()).collect()
    }
}

fn random_definition(rng: &mut Rng, own: &str) -> Expr {
    let other = |rng: &mut Rng| loop {
        let k = *rng.pick(&KEY_POOL);
        if k != own {
            return r(k);
        }
    };
    match rng.below(20) {
        0..=5 => call("inc", vec![other(rng)]),
        6..=10 => {
            let b = if rng.chance(50) { other(rng) } else { lit(10) };
            call("add", vec![other(rng), b])
        }
        11..=13 => call(
            "sum",
            vec![Expr::List(vec![other(rng), other(rng), lit(100)])],
        ),
        14..=15 => other(rng), // an alias
        16..=18 => call("inc", vec![call("inc", vec![other(rng)])]),
        _ => call("fail", vec![other(rng)]),
    }
}

pub fn collection(name: &str, graph: Vec<(Key, Expr)>, keys: Vec<Key>) -> Collection {
    Collection {
        kind: CollectionKind::Graph,
        npartitions: keys.len(),
        graph,
        keys,
        name: name.into(),
    }
}

fn some_keys(rng: &mut Rng) -> Vec<Key> {
    let n = rng.range(1, 2);
    (0..n).map(|_| pool_key(rng)).collect()
}

/// The request kinds, with how often each is drawn.
const OPS: [(&str, u64); 19] = [
    ("submit", 30),
    ("persist", 6),
    ("scatter", 7),
    ("gather", 6),
    ("release", 6),
    ("who_has", 2),
    ("replicate", 2),
    ("publish", 4),
    ("get_dataset", 3),
    ("unpublish", 2),
    ("set_collection", 4),
    ("get_collection", 4),
    ("delete_collection", 1),
    ("list_collections", 1),
    ("status", 1),
    ("restart", 1),
    ("cancel", 3),
    ("goodbye", 1),
    ("go_silent", 1),
];

/// Faults the model can leave out, by the same names.
pub const FAULTS: [&str; 7] = [
    "kill",
    "stall",
    "retire",
    "lose",
    "slow",
    "leave",
    "fixed_names",
];

/// Which requests clients send and which faults happen. `ZASK_MODEL_WITHOUT=restart,stall`
/// leaves some out, so a known bug in one does not hide others (a seed replays only with the
/// same list).
pub struct OpMix {
    weights: Vec<u64>,
    without: Vec<String>,
}

impl OpMix {
    pub fn from_env() -> OpMix {
        let without = std::env::var("ZASK_MODEL_WITHOUT").unwrap_or_default();
        let without: Vec<String> = without
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        for w in &without {
            assert!(
                OPS.iter().any(|(name, _)| name == w) || FAULTS.contains(&w.as_str()),
                "ZASK_MODEL_WITHOUT: no request kind or fault {w:?}; requests: {:?}, faults: {FAULTS:?}",
                OPS.map(|(n, _)| n)
            );
        }
        OpMix {
            weights: OPS
                .iter()
                .map(|(name, w)| {
                    if without.iter().any(|x| x == name) {
                        0
                    } else {
                        *w
                    }
                })
                .collect(),
            without,
        }
    }

    /// Is this fault (one of `FAULTS`) part of the mix?
    pub fn allows(&self, fault: &str) -> bool {
        debug_assert!(FAULTS.contains(&fault));
        !self.without.iter().any(|x| x == fault)
    }
}

/// A random request of a client that last persisted `last_persisted`.
pub fn random_op(
    rng: &mut Rng,
    pool: &DefinitionPool,
    mix: &OpMix,
    last_persisted: Option<&Collection>,
) -> ClientOp {
    match rng.weighted(&mix.weights) {
        0 => {
            let graph = pool.graph(rng);
            let outputs = pool.outputs(rng, &graph);
            ClientOp::Submit {
                graph,
                outputs,
                keep: rng.chance(35),
            }
        }
        1 => {
            let graph = pool.graph(rng);
            let outputs = pool.outputs(rng, &graph);
            ClientOp::Persist { graph, outputs }
        }
        2 => {
            let keys = some_keys(rng);
            let values = keys.iter().map(|_| rng.range(1000, 1009) as i64).collect();
            ClientOp::Scatter { keys, values }
        }
        3 => ClientOp::Gather(some_keys(rng)),
        4 => ClientOp::Release(some_keys(rng)),
        5 => ClientOp::WhoHas(some_keys(rng)),
        6 => ClientOp::Replicate(some_keys(rng), rng.range(1, 3) as u32),
        7 => {
            let name = rng.pick(&DATASET_NAMES).to_string();
            let c = match last_persisted {
                Some(c) if rng.chance(80) => c.clone(),
                _ => {
                    let graph = pool.graph(rng);
                    let outputs = pool.outputs(rng, &graph);
                    collection("published", graph, outputs)
                }
            };
            ClientOp::Publish(name, c)
        }
        8 => ClientOp::GetDataset(rng.pick(&DATASET_NAMES).to_string()),
        9 => ClientOp::Unpublish(rng.pick(&DATASET_NAMES).to_string()),
        10 => {
            let name = rng.pick(&COLLECTION_NAMES).to_string();
            let graph = pool.graph(rng);
            let outputs = pool.outputs(rng, &graph);
            let c = collection(&name, graph, outputs);
            ClientOp::SetCollection(name, c)
        }
        11 => ClientOp::GetCollection(rng.pick(&COLLECTION_NAMES).to_string()),
        12 => ClientOp::DeleteCollection(rng.pick(&COLLECTION_NAMES).to_string()),
        13 => ClientOp::ListCollections,
        14 => ClientOp::Status,
        15 => ClientOp::Restart,
        16 => ClientOp::Cancel,
        17 => ClientOp::Goodbye,
        _ => ClientOp::GoSilent,
    }
}

//! Bags: partitioned sequences in the style of dask.bag, built lazily into a task graph and
//! computed on a cluster by a `Client`.
//!
//! A `Bag` is a graph plus the keys of its partitions, `(name, 0)`, `(name, 1)`, ..., each
//! partition's value a list. Element-wise operations (`map`, `filter`) add one task per
//! partition that calls the executor's higher-order built-ins; reductions (`sum`, `fold`, ...)
//! reduce each partition, then combine the partial results in a tree of fan-in `split_every`,
//! and give an `Item`: a collection of one key.
//!
//! Names are deterministic: `"{op}-{hash}"`, the hash a stable FNV-1a over everything that
//! defines the new tasks (the parent's name, the operation, function names, encoded
//! arguments). The same construction always gives the same keys, so a recomputation, or a
//! second client building the same bag, shares results with the first instead of conflicting.
//!
//! ```no_run
//! use zask::{Bag, LocalCluster, Value};
//! let cluster = LocalCluster::new()?;
//! let client = cluster.client().map_err(|e| e.to_string())?;
//! let total = Bag::range(400, 200).map("double", vec![]).sum();
//! assert_eq!(total.compute(&client).map_err(|e| e.to_string())?, Value::from(159600));
//! # Ok::<(), String>(())
//! ```

use serde::Serialize;

use crate::client::{Client, ClientError};
use crate::collection::{AsCollection, Collection, CollectionKind};
use crate::graph::tokenize::{encoded, tokenize};
use crate::graph::{key, literal, Graph, Key, KeySpec, Node};
use crate::value::Value;

/// The fan-in of reduction trees unless told otherwise, as in dask.
pub const DEFAULT_SPLIT_EVERY: usize = 8;

/// How many elements each partition gets, as dask's `from_sequence` does:
/// `ceil(len / npartitions)`, at least 1.
fn partition_size(len: usize, npartitions: usize) -> usize {
    len.div_ceil(npartitions.max(1)).max(1)
}

/// The key of partition `i` of the collection `name`: `(name, i)`.
pub fn partition_key(name: &str, i: usize) -> Key {
    Key::Tuple(vec![Key::Str(name.to_owned()), Key::Int(i as i64)])
}

/// A lazily built, partitioned sequence. Cheap operations return new bags whose graph holds
/// the parent's tasks plus the new ones; nothing runs until `compute`.
#[derive(Clone, Debug, PartialEq)]
pub struct Bag {
    name: String,
    npartitions: usize,
    graph: Graph,
}

impl Bag {
    /// A bag of these items, in partitions of `ceil(len / npartitions)` elements as in dask,
    /// so there may be fewer partitions than asked for (5 items in 4 partitions make 3 of
    /// sizes 2, 2, 1) but never an empty one; no items make one empty partition. The items
    /// are literals in the graph: use `range` or tasks for big data.
    pub fn from_sequence<T: Into<Value>>(
        items: impl IntoIterator<Item = T>,
        npartitions: usize,
    ) -> Bag {
        let items: Vec<Value> = items.into_iter().map(Into::into).collect();
        let size = partition_size(items.len(), npartitions);
        let name = format!(
            "from_sequence-{}",
            tokenize(&[
                b"from_sequence",
                &encoded(&items),
                &(size as u64).to_le_bytes()
            ])
        );
        let parts: Vec<Vec<Value>> = if items.is_empty() {
            vec![vec![]]
        } else {
            items.chunks(size).map(<[Value]>::to_vec).collect()
        };
        let mut graph = Graph::new();
        let npartitions = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            graph.insert(partition_key(&name, i), literal(part));
        }
        Bag {
            name,
            npartitions,
            graph,
        }
    }

    /// The integers `0..n`, partitioned like `from_sequence` would, each partition a
    /// `range_list(start, stop)` task, so a big range stays small in the graph.
    pub fn range(n: usize, npartitions: usize) -> Bag {
        let size = partition_size(n, npartitions);
        let name = format!(
            "range-{}",
            tokenize(&[
                b"range",
                &(n as u64).to_le_bytes(),
                &(size as u64).to_le_bytes()
            ])
        );
        let count = n.div_ceil(size).max(1);
        let mut graph = Graph::new();
        for i in 0..count {
            let start = (i * size).min(n);
            let stop = ((i + 1) * size).min(n);
            graph.insert(
                partition_key(&name, i),
                Node::Task(
                    "range_list".into(),
                    vec![literal(start as i64), literal(stop as i64)],
                ),
            );
        }
        Bag {
            name,
            npartitions: count,
            graph,
        }
    }

    /// The name shared by the partition keys.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn npartitions(&self) -> usize {
        self.npartitions
    }

    /// The whole graph: the partitions' tasks and everything they depend on.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The partition keys, in order.
    pub fn keys(&self) -> Vec<Key> {
        (0..self.npartitions)
            .map(|i| partition_key(&self.name, i))
            .collect()
    }

    /// `f(x, *extra_args)` for every element `x`; `f` is a function name on the workers.
    pub fn map(&self, f: &str, extra_args: Vec<Value>) -> Bag {
        let extra = Value::List(extra_args);
        self.partitionwise("map", &[f.as_bytes(), &encoded(&extra)], |part| {
            Node::Task(
                "map".into(),
                vec![literal(f), part, Node::Quoted(extra.clone())],
            )
        })
    }

    /// The elements `x` for which `f(x)` is truthy (true, non-zero, non-empty, not null).
    pub fn filter(&self, f: &str) -> Bag {
        self.partitionwise("filter", &[f.as_bytes()], |part| {
            Node::Task("filter".into(), vec![literal(f), part])
        })
    }

    /// `f(partition)` for every partition; `f` must return a list.
    pub fn map_partitions(&self, f: &str) -> Bag {
        self.partitionwise("map_partitions", &[f.as_bytes()], |part| {
            Node::Task(f.into(), vec![part])
        })
    }

    /// Concatenates the elements, each of which must be a list.
    pub fn flatten(&self) -> Bag {
        self.partitionwise("flatten", &[], |part| {
            Node::Task("concat".into(), vec![part])
        })
    }

    /// A new bag with one task per partition, `task(reference to the parent's partition)`.
    fn partitionwise(&self, op: &str, token: &[&[u8]], task: impl Fn(Node) -> Node) -> Bag {
        let mut fields: Vec<&[u8]> = vec![self.name.as_bytes(), op.as_bytes()];
        fields.extend_from_slice(token);
        let name = format!("{op}-{}", tokenize(&fields));
        let mut graph = self.graph.clone();
        for i in 0..self.npartitions {
            graph.insert(
                partition_key(&name, i),
                task(key(partition_key(&self.name, i))),
            );
        }
        Bag {
            name,
            npartitions: self.npartitions,
            graph,
        }
    }

    /// The sum of the elements (0 for no elements); ints stay exact.
    pub fn sum(&self) -> Item {
        self.reduce(Reduction::Sum, DEFAULT_SPLIT_EVERY)
    }

    /// The number of elements.
    pub fn count(&self) -> Item {
        self.reduce(Reduction::Count, DEFAULT_SPLIT_EVERY)
    }

    /// The least number (null for no elements).
    pub fn min(&self) -> Item {
        self.reduce(Reduction::Min, DEFAULT_SPLIT_EVERY)
    }

    /// The greatest number (null for no elements).
    pub fn max(&self) -> Item {
        self.reduce(Reduction::Max, DEFAULT_SPLIT_EVERY)
    }

    /// The mean, a float (an error for no elements).
    pub fn mean(&self) -> Item {
        self.reduce(Reduction::Mean, DEFAULT_SPLIT_EVERY)
    }

    /// `binop(acc, x)` over each partition, then `combine(a, b)` over the partial results, as
    /// dask's `fold`. With an `initial`, every partition and every combining step starts from
    /// it (so it should be an identity of both, like 0 for `add`); without one, each starts
    /// from its first element, empty partitions are skipped (null partial results are
    /// dropped before combining) and an empty bag folds to null.
    pub fn fold(&self, binop: &str, combine: &str, initial: Option<Value>) -> Item {
        self.reduce(
            Reduction::Fold {
                binop: binop.to_owned(),
                combine: combine.to_owned(),
                initial,
            },
            DEFAULT_SPLIT_EVERY,
        )
    }

    /// A one-partition bag of `[item, count]` pairs, each distinct element once, in order of
    /// first appearance (as dask's `frequencies`, a bag of pairs).
    pub fn frequencies(&self) -> Bag {
        self.reduce(Reduction::Frequencies, DEFAULT_SPLIT_EVERY)
            .to_bag()
    }

    /// The first `n` elements, as a list. Every partition is computed (cut to its first `n`
    /// elements before anything moves), so the result is right even when the first partitions
    /// are short or empty.
    pub fn take(&self, n: usize) -> Item {
        self.reduce(Reduction::Take(n), DEFAULT_SPLIT_EVERY)
    }

    /// Any reduction with a chosen tree fan-in (`split_every`, at least 2): each partition is
    /// reduced by its own task, then at most `split_every` partial results are combined per
    /// task, level after level, until one task gives the result. E.g.
    /// `bag.reduce(Reduction::Sum, 4)`.
    pub fn reduce(&self, how: Reduction, split_every: usize) -> Item {
        let split_every = split_every.max(2);
        let op = how.op_name();
        let name = format!(
            "{op}-{}",
            tokenize(&[
                self.name.as_bytes(),
                op.as_bytes(),
                &encoded(&how),
                &(split_every as u64).to_le_bytes(),
            ])
        );
        let mut graph = self.graph.clone();
        let intermediate =
            |level: usize, i: usize| Key::Tuple(vec![Key::from(&name), level.into(), i.into()]);
        let mut layer: Vec<Key> = (0..self.npartitions)
            .map(|i| {
                let k = intermediate(0, i);
                graph.insert(k.clone(), how.chunk(key(partition_key(&self.name, i))));
                k
            })
            .collect();
        let refs = |keys: &[Key]| Node::List(keys.iter().cloned().map(Node::Ref).collect());
        let mut level = 0;
        while layer.len() > split_every {
            level += 1;
            layer = layer
                .chunks(split_every)
                .enumerate()
                .map(|(i, group)| {
                    let k = intermediate(level, i);
                    graph.insert(k.clone(), how.combine(refs(group)));
                    k
                })
                .collect();
        }
        graph.insert(
            partition_key(&name, 0),
            how.finish(how.combine(refs(&layer))),
        );
        Item { name, graph }
    }

    /// Computes every partition and concatenates them into one list.
    pub fn compute(&self, client: &Client) -> Result<Value, ClientError> {
        let keys = self.keys();
        let spec = KeySpec::Many(keys.iter().cloned().map(KeySpec::One).collect());
        let parts = match client.get(&self.graph, spec)? {
            Value::List(parts) => parts,
            other => vec![other],
        };
        let mut out = Vec::new();
        for (k, part) in keys.iter().zip(parts) {
            match part {
                Value::List(items) => out.extend(items),
                other => {
                    return Err(ClientError::Protocol(format!(
                        "partition {k} of a bag is {}, not a list",
                        other.type_name()
                    )))
                }
            }
        }
        Ok(Value::List(out))
    }

    /// What the scheduler stores to publish this bag.
    pub fn to_collection(&self) -> Collection {
        Collection {
            kind: CollectionKind::Bag,
            graph: self.graph.resolve(&|_| false),
            keys: self.keys(),
            npartitions: self.npartitions,
            name: self.name.clone(),
        }
    }

    /// The bag a collection describes: its kind must be "bag", its keys `(name, 0..n)`, and
    /// its graph must define them.
    pub fn from_collection(c: &Collection) -> Result<Bag, String> {
        c.expect_kind(CollectionKind::Bag)?;
        if c.npartitions == 0 {
            return Err(format!("bag collection {:?} has no partitions", c.name));
        }
        let expected: Vec<Key> = (0..c.npartitions)
            .map(|i| partition_key(&c.name, i))
            .collect();
        if c.keys != expected {
            return Err(format!(
                "bag collection {:?}: keys must be ({:?}, 0..{}), got {:?}",
                c.name, c.name, c.npartitions, c.keys
            ));
        }
        let graph = c.to_graph();
        c.check_defined(&graph)?;
        Ok(Bag {
            name: c.name.clone(),
            npartitions: c.npartitions,
            graph,
        })
    }
}

/// The reductions a bag offers; `Bag::reduce` runs one with a chosen tree fan-in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Reduction {
    Sum,
    Count,
    Min,
    Max,
    Mean,
    Fold {
        binop: String,
        combine: String,
        initial: Option<Value>,
    },
    Frequencies,
    Take(usize),
}

fn call(f: &str, args: Vec<Node>) -> Node {
    Node::Task(f.to_owned(), args)
}

impl Reduction {
    fn op_name(&self) -> &'static str {
        match self {
            Reduction::Sum => "sum",
            Reduction::Count => "count",
            Reduction::Min => "min",
            Reduction::Max => "max",
            Reduction::Mean => "mean",
            Reduction::Fold { .. } => "fold",
            Reduction::Frequencies => "frequencies",
            Reduction::Take(_) => "take",
        }
    }

    fn initial(initial: &Option<Value>) -> Node {
        Node::Quoted(initial.clone().unwrap_or(Value::Null))
    }

    /// The task reducing one partition.
    fn chunk(&self, part: Node) -> Node {
        match self {
            Reduction::Sum => call("sum", vec![part]),
            Reduction::Count => call("count", vec![part]),
            Reduction::Min => call("min_or_null", vec![part]),
            Reduction::Max => call("max_or_null", vec![part]),
            Reduction::Mean => call("mean_chunk", vec![part]),
            Reduction::Fold { binop, initial, .. } => call(
                "fold",
                vec![literal(binop.as_str()), part, Self::initial(initial)],
            ),
            Reduction::Frequencies => call("frequencies", vec![part]),
            Reduction::Take(n) => call("take", vec![literal(*n), part]),
        }
    }

    /// The task combining a list of partial results into one of the same kind.
    fn combine(&self, partials: Node) -> Node {
        match self {
            Reduction::Sum | Reduction::Count => call("sum", vec![partials]),
            Reduction::Min => call("min_or_null", vec![partials]),
            Reduction::Max => call("max_or_null", vec![partials]),
            Reduction::Mean => call("mean_combine", vec![partials]),
            Reduction::Fold {
                combine,
                initial: Some(initial),
                ..
            } if *initial != Value::Null => call(
                "fold",
                vec![
                    literal(combine.as_str()),
                    partials,
                    Node::Quoted(initial.clone()),
                ],
            ),
            Reduction::Fold { combine, .. } => call(
                "fold",
                vec![
                    literal(combine.as_str()),
                    call("drop_nulls", vec![partials]),
                    Node::Quoted(Value::Null),
                ],
            ),
            Reduction::Frequencies => call("merge_frequencies", vec![partials]),
            Reduction::Take(n) => call("take", vec![literal(*n), call("concat", vec![partials])]),
        }
    }

    /// The root task, from the last combining step.
    fn finish(&self, combined: Node) -> Node {
        match self {
            Reduction::Mean => call("mean_finish", vec![combined]),
            _ => combined,
        }
    }
}

/// A collection of one key, `(name, 0)`: the result of a reduction.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    name: String,
    graph: Graph,
}

impl Item {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key of the value: `(name, 0)`.
    pub fn key(&self) -> Key {
        partition_key(&self.name, 0)
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn compute(&self, client: &Client) -> Result<Value, ClientError> {
        client.get(&self.graph, self.key())
    }

    /// The one-partition bag whose partition is this item's value (which must then be a
    /// list): the key is the same.
    pub fn to_bag(&self) -> Bag {
        Bag {
            name: self.name.clone(),
            npartitions: 1,
            graph: self.graph.clone(),
        }
    }

    /// What the scheduler stores to publish this item.
    pub fn to_collection(&self) -> Collection {
        Collection {
            kind: CollectionKind::Item,
            graph: self.graph.resolve(&|_| false),
            keys: vec![self.key()],
            npartitions: 1,
            name: self.name.clone(),
        }
    }

    /// The item a collection describes: its kind must be "item", its one key `(name, 0)`, and
    /// its graph must define it.
    pub fn from_collection(c: &Collection) -> Result<Item, String> {
        c.expect_kind(CollectionKind::Item)?;
        let expected = partition_key(&c.name, 0);
        if c.keys != [expected.clone()] || c.npartitions != 1 {
            return Err(format!(
                "item collection {:?}: expected the one key {expected:?}, got {:?} \
                 ({} partitions)",
                c.name, c.keys, c.npartitions
            ));
        }
        let graph = c.to_graph();
        c.check_defined(&graph)?;
        Ok(Item {
            name: c.name.clone(),
            graph,
        })
    }
}

impl AsCollection for Bag {
    fn as_collection(&self) -> Collection {
        self.to_collection()
    }
}

impl AsCollection for Item {
    fn as_collection(&self) -> Collection {
        self.to_collection()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::graph::{cull, Expr};
    use crate::worker::executor::evaluate;
    use crate::worker::Registry;

    /// Runs a graph in this thread with the built-ins, as a worker would, task by task.
    fn run_locally(graph: &Graph, outputs: &[Key]) -> HashMap<Key, Value> {
        let resolved = graph.resolve(&|_| false);
        let view: HashMap<&Key, &Expr> = resolved.iter().map(|(k, e)| (k, e)).collect();
        let order = cull(&view, outputs, &|_| false).expect("a valid graph");
        let registry = Registry::with_builtins();
        let mut values = HashMap::new();
        for k in order {
            let v =
                evaluate(view[k], &values, &registry).unwrap_or_else(|e| panic!("task {k:?}: {e}"));
            values.insert(k.clone(), v);
        }
        values
    }

    fn compute_bag(bag: &Bag) -> Value {
        let values = run_locally(bag.graph(), &bag.keys());
        let mut out = Vec::new();
        for k in bag.keys() {
            match &values[&k] {
                Value::List(items) => out.extend(items.iter().cloned()),
                other => panic!("partition {k:?} is {other}"),
            }
        }
        Value::List(out)
    }

    fn compute_item(item: &Item) -> Value {
        run_locally(item.graph(), &[item.key()])
            .remove(&item.key())
            .unwrap()
    }

    fn partition_sizes(bag: &Bag) -> Vec<usize> {
        let values = run_locally(bag.graph(), &bag.keys());
        bag.keys()
            .iter()
            .map(|k| values[k].as_list().unwrap().len())
            .collect()
    }

    fn ints(xs: impl IntoIterator<Item = i64>) -> Value {
        Value::from(xs.into_iter().collect::<Vec<_>>())
    }

    #[test]
    fn tokenize_is_stable_fnv1a_and_counts_field_boundaries() {
        // Pinned: a change here changes every key, which must be deliberate.
        assert_eq!(tokenize(&[]), "cbf29ce484222325");
        assert_eq!(tokenize(&[b"a"]), tokenize(&[b"a"]));
        assert_ne!(tokenize(&[b"ab", b"c"]), tokenize(&[b"a", b"bc"]));
        assert_ne!(tokenize(&[b""]), tokenize(&[]));
        // Pinned too: names must be the same in every process, run and release, or results
        // kept under them would not be found again.
        let bag = Bag::range(400, 200).map("double", vec![]);
        assert_eq!(Bag::range(400, 200).name(), "range-2e1972a6adeede78");
        assert_eq!(bag.name(), "map-c1b164a346ef8302");
        assert_eq!(bag.sum().name(), "sum-0db633dc85fa2c41");
    }

    #[test]
    fn from_sequence_partitions_like_dask() {
        let sizes = |n: i64, parts| partition_sizes(&Bag::from_sequence(0..n, parts));
        assert_eq!(sizes(5, 2), vec![3, 2]);
        assert_eq!(sizes(10, 4), vec![3, 3, 3, 1]);
        assert_eq!(sizes(5, 4), vec![2, 2, 1]);
        assert_eq!(sizes(4, 4), vec![1, 1, 1, 1]);
        assert_eq!(sizes(3, 10), vec![1, 1, 1]);
        assert_eq!(sizes(0, 3), vec![0]);
        assert_eq!(sizes(3, 0), vec![3]);
        let bag = Bag::from_sequence(0..5, 2);
        assert_eq!(bag.npartitions(), 2);
        assert_eq!(compute_bag(&bag), ints(0..5));
        assert_eq!(
            bag.keys(),
            vec![partition_key(bag.name(), 0), partition_key(bag.name(), 1)]
        );
        // Partitions are literals: a string item is data, never a reference.
        let words = Bag::from_sequence(vec!["x", "y"], 1);
        assert_eq!(compute_bag(&words), Value::from(vec!["x", "y"]));
    }

    #[test]
    fn range_partitions_are_range_list_tasks() {
        let bag = Bag::range(10, 3);
        assert_eq!(bag.npartitions(), 3);
        let resolved: HashMap<Key, Expr> = bag.graph().resolve(&|_| false).into_iter().collect();
        assert_eq!(
            resolved[&bag.keys()[2]],
            Expr::Call(
                "range_list".into(),
                vec![Expr::Lit(8.into()), Expr::Lit(10.into())]
            )
        );
        assert_eq!(partition_sizes(&bag), vec![4, 4, 2]);
        assert_eq!(compute_bag(&bag), ints(0..10));
        assert_eq!(Bag::range(400, 200).npartitions(), 200);
        assert_eq!(Bag::range(400, 200).graph().len(), 200);
        assert_eq!(compute_bag(&Bag::range(0, 4)), ints(0..0));
    }

    #[test]
    fn keys_are_deterministic_and_depend_on_everything_that_defines_them() {
        let build = || {
            Bag::range(100, 10)
                .map("add", vec![1.into()])
                .filter("identity")
        };
        assert_eq!(build(), build());
        assert_eq!(build().keys(), build().keys());
        assert_eq!(build().sum(), build().sum());
        let a = Bag::range(100, 10).map("add", vec![1.into()]);
        let others = [
            Bag::range(100, 10).map("add", vec![2.into()]),
            Bag::range(100, 10).map("sub", vec![1.into()]),
            Bag::range(100, 5).map("add", vec![1.into()]),
            Bag::range(101, 10).map("add", vec![1.into()]),
            Bag::range(100, 10).filter("add"),
            Bag::range(100, 10).map_partitions("add"),
        ];
        for other in &others {
            assert_ne!(a.name(), other.name(), "{other:?}");
        }
        assert_ne!(
            Bag::from_sequence(vec![1, 2], 1).name(),
            Bag::from_sequence(vec![1, 3], 1).name()
        );
        assert_ne!(
            Bag::from_sequence(0..4, 2).name(),
            Bag::from_sequence(0..4, 4).name()
        );
        assert_ne!(a.sum().name(), a.count().name());
        assert_ne!(a.sum().name(), a.reduce(Reduction::Sum, 4).name());
        assert_ne!(
            a.fold("add", "add", None).name(),
            a.fold("add", "add", Some(0.into())).name()
        );
        assert_ne!(a.take(1).name(), a.take(2).name());
        // The parent's tasks come along; the new ones refer to them.
        assert!(a.graph().contains(&Bag::range(100, 10).keys()[0]));
    }

    /// Every task's number of dependencies, and the depth of the tree under `root`.
    fn fan_in_and_depth(graph: &Graph, root: &Key) -> (usize, usize) {
        let resolved: HashMap<Key, Expr> = graph.resolve(&|_| false).into_iter().collect();
        let max_fan_in = resolved
            .values()
            .map(|e| e.dependencies().len())
            .max()
            .unwrap_or(0);
        let mut depth = 0;
        let mut k = root.clone();
        while let Some(dep) = resolved[&k].dependencies().into_iter().next() {
            depth += 1;
            k = dep;
        }
        (max_fan_in, depth)
    }

    #[test]
    fn reductions_are_trees_of_bounded_fan_in() {
        let bag = Bag::range(400, 200);
        let sum = bag.sum();
        // 200 partitions, 200 chunk sums, 25 + 4 combining tasks, the root.
        assert_eq!(sum.graph().len(), 200 + 200 + 25 + 4 + 1);
        assert_eq!(fan_in_and_depth(sum.graph(), &sum.key()), (8, 4));
        let sum3 = bag.reduce(Reduction::Sum, 3);
        // 200 -> 67 -> 23 -> 8 -> 3 -> root.
        assert_eq!(sum3.graph().len(), 200 + 200 + 67 + 23 + 8 + 3 + 1);
        assert_eq!(fan_in_and_depth(sum3.graph(), &sum3.key()), (3, 6));
        // A fan-in below 2 would never finish; it is raised to 2.
        let sum1 = Bag::range(8, 8).reduce(Reduction::Sum, 1);
        assert_eq!(fan_in_and_depth(sum1.graph(), &sum1.key()).0, 2);
        for (item, want) in [(sum, 79800), (sum3, 79800), (sum1, 28)] {
            assert_eq!(compute_item(&item), Value::from(want));
        }
        // One partition: a chunk and the root.
        let one = Bag::from_sequence(vec![1, 2], 1).sum();
        assert_eq!(one.graph().len(), 3);
        assert_eq!(one.key(), partition_key(one.name(), 0));
    }

    #[test]
    fn element_wise_operations() {
        let bag = Bag::from_sequence(0..5, 2);
        assert_eq!(compute_bag(&bag.map("inc", vec![])), ints(1..6));
        assert_eq!(compute_bag(&bag.map("add", vec![10.into()])), ints(10..15));
        // identity keeps the non-zero elements.
        assert_eq!(compute_bag(&bag.filter("identity")), ints(1..5));
        assert_eq!(compute_bag(&bag.map_partitions("drop_nulls")), ints(0..5));
        let nested = Bag::from_sequence(vec![ints(0..2), ints(0..0), ints(5..7)], 2);
        assert_eq!(
            compute_bag(&nested.flatten()),
            Value::from(vec![0, 1, 5, 6])
        );
    }

    #[test]
    fn reductions_give_the_right_values_even_with_empty_partitions() {
        let bag = Bag::range(20, 7).map("double", vec![]);
        assert_eq!(compute_item(&bag.sum()), 380.into());
        assert_eq!(compute_item(&bag.count()), 20.into());
        assert_eq!(compute_item(&bag.min()), 0.into());
        assert_eq!(compute_item(&bag.max()), 38.into());
        assert_eq!(compute_item(&bag.mean()), 19.0.into());
        assert_eq!(compute_item(&bag.fold("add", "add", None)), 380.into());
        assert_eq!(
            compute_item(&bag.fold("add", "add", Some(0.into()))),
            380.into()
        );
        assert_eq!(compute_item(&bag.take(3)), ints([0, 2, 4]));
        // Only the last partition keeps elements: the others are empty.
        let mut items = vec![Value::Null; 4];
        items.extend([1.into(), 2.into()]);
        let sparse = Bag::from_sequence(items, 3).filter("identity");
        assert_eq!(partition_sizes(&sparse), vec![0, 0, 2]);
        assert_eq!(compute_item(&sparse.count()), 2.into());
        assert_eq!(compute_item(&sparse.min()), 1.into());
        assert_eq!(compute_item(&sparse.max()), 2.into());
        assert_eq!(compute_item(&sparse.mean()), 1.5.into());
        assert_eq!(compute_item(&sparse.fold("add", "add", None)), 3.into());
        assert_eq!(compute_item(&sparse.take(5)), ints(1..3));
        // No elements at all, in several partitions.
        let none = Bag::from_sequence(vec![Value::Null; 6], 3).filter("identity");
        assert_eq!(none.npartitions(), 3);
        assert_eq!(compute_item(&none.count()), 0.into());
        assert_eq!(compute_item(&none.sum()), 0.into());
        assert_eq!(compute_item(&none.min()), Value::Null);
        assert_eq!(compute_item(&none.fold("add", "add", None)), Value::Null);
        assert_eq!(compute_item(&none.take(2)), ints([]));
        assert_eq!(compute_bag(&none.frequencies()), ints([]));
    }

    #[test]
    fn frequencies_are_a_one_partition_bag_of_pairs() {
        let bag = Bag::from_sequence(vec!["a", "b", "a", "c", "a", "b"], 4);
        let freq = bag.frequencies();
        assert_eq!(freq.npartitions(), 1);
        let pair = |s: &str, n: i64| Value::List(vec![s.into(), n.into()]);
        assert_eq!(
            compute_bag(&freq),
            Value::List(vec![pair("a", 3), pair("b", 2), pair("c", 1)])
        );
        // It is a bag like any other.
        assert_eq!(compute_item(&freq.count()), 3.into());
    }
}

//! Bags: partitioned sequences in the style of dask.bag, built lazily into a task graph and
//! computed on a cluster by a `Client` (`client.compute(&bag)`): this module only builds
//! graphs and touches no network.
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
//! let client = cluster.client()?;
//! let total = Bag::range(400, 200).map("double", vec![]).sum();
//! assert_eq!(client.compute(&total)?, Value::from(159600));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::collection::{AsCollection, Collection, CollectionError, CollectionKind, Computable};
use crate::graph::tokenize::{encoded, tokenize};
use crate::graph::{key, literal, Graph, Key, Node};
use crate::value::Value;

mod reduction;
#[cfg(test)]
mod tests;

pub use reduction::{Item, Reduction};

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
    pub fn from_collection(c: &Collection) -> Result<Bag, CollectionError> {
        c.expect_kind(CollectionKind::Bag)?;
        if c.npartitions == 0 {
            return Err(CollectionError::NoPartitions {
                name: c.name.clone(),
            });
        }
        let expected: Vec<Key> = (0..c.npartitions)
            .map(|i| partition_key(&c.name, i))
            .collect();
        if c.keys != expected {
            return Err(CollectionError::BagKeys {
                name: c.name.clone(),
                npartitions: c.npartitions,
                keys: c.keys.clone(),
            });
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

impl AsCollection for Bag {
    fn as_collection(&self) -> Collection {
        self.to_collection()
    }
}

impl Computable for Bag {
    fn graph(&self) -> &Graph {
        &self.graph
    }

    fn output_keys(&self) -> Vec<Key> {
        self.keys()
    }

    /// Every partition concatenated into one list.
    fn assemble(&self, parts: Vec<Value>) -> Result<Value, CollectionError> {
        let mut out = Vec::new();
        for (k, part) in self.keys().into_iter().zip(parts) {
            match part {
                Value::List(items) => out.extend(items),
                other => {
                    return Err(CollectionError::PartitionNotList {
                        key: k,
                        found: other.type_name(),
                    })
                }
            }
        }
        Ok(Value::List(out))
    }
}

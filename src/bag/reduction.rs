//! Reductions of a bag (`sum`, `fold`, ...) as trees of tasks of bounded fan-in, and their
//! result: an `Item`, a collection of one key.

use serde::Serialize;

use super::{partition_key, Bag};
use crate::collection::{AsCollection, Collection, CollectionError, CollectionKind, Computable};
use crate::graph::tokenize::{encoded, tokenize};
use crate::graph::{key, literal, Graph, Key, Node};
use crate::value::Value;

impl Bag {
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
    pub fn from_collection(c: &Collection) -> Result<Item, CollectionError> {
        c.expect_kind(CollectionKind::Item)?;
        let expected = partition_key(&c.name, 0);
        if c.keys != [expected.clone()] || c.npartitions != 1 {
            return Err(CollectionError::ItemKeys {
                name: c.name.clone(),
                npartitions: c.npartitions,
                keys: c.keys.clone(),
            });
        }
        let graph = c.to_graph();
        c.check_defined(&graph)?;
        Ok(Item {
            name: c.name.clone(),
            graph,
        })
    }
}

impl AsCollection for Item {
    fn as_collection(&self) -> Collection {
        self.to_collection()
    }
}

impl Computable for Item {
    fn graph(&self) -> &Graph {
        &self.graph
    }

    fn output_keys(&self) -> Vec<Key> {
        vec![self.key()]
    }

    /// The one value.
    fn assemble(&self, values: Vec<Value>) -> Result<Value, CollectionError> {
        Ok(values.into_iter().next().unwrap_or(Value::Null))
    }
}

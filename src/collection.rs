//! Collections as the scheduler stores them: a graph with every reference explicit, the keys
//! that make up the collection and what kind of collection it is, so that one client can
//! publish a bag, an item or a plain graph under a name and another can fetch it back, compute
//! it or build on it.

use serde::{Deserialize, Serialize};

use crate::graph::tokenize::{encoded, tokenize};
use crate::graph::{Expr, Graph, Key, Node};
use crate::value::Value;

/// What a collection is, which says how its keys are laid out and how it computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectionKind {
    /// A `Bag`: keys `(name, 0..npartitions)`, one list per partition.
    Bag,
    /// An `Item`: one key, `(name, 0)`.
    Item,
    /// A plain graph and the keys wanted of it (any keys).
    Graph,
}

impl CollectionKind {
    /// "a bag", "an item", "a graph", for messages.
    fn with_article(self) -> String {
        match self {
            CollectionKind::Item => format!("an {self}"),
            _ => format!("a {self}"),
        }
    }
}

impl std::fmt::Display for CollectionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CollectionKind::Bag => "bag",
            CollectionKind::Item => "item",
            CollectionKind::Graph => "graph",
        })
    }
}

/// What the scheduler stores under a collection name: a native collection, or the opaque
/// payload a 2015 (dask 0.7) client sent with `set_collection`. Both live in one namespace.
#[derive(Clone, Debug, PartialEq)]
pub enum StoredCollection {
    Native(Collection),
    Legacy(LegacyCollection),
}

/// A 2015 client's collection: its `set-collection` payload, kept verbatim (a pickle the
/// scheduler never decodes beyond the name; only a 2015 client can rebuild it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LegacyCollection {
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// A published collection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Collection {
    pub kind: CollectionKind,
    /// The tasks, resolved: what `Graph::resolve` gives.
    pub graph: Vec<(Key, Expr)>,
    /// The keys whose values make up the collection, in order.
    pub keys: Vec<Key>,
    pub npartitions: usize,
    pub name: String,
}

impl Collection {
    /// A plain graph and the keys wanted of it (kind "graph"). Its name is a stable hash of
    /// both, so publishing the same graph twice gives the same name.
    pub fn from_graph(graph: &Graph, keys: Vec<Key>) -> Collection {
        let graph = graph.resolve(&|_| false);
        let name = format!(
            "graph-{}",
            tokenize(&[b"graph", &encoded(&graph), &encoded(&keys)])
        );
        Collection {
            kind: CollectionKind::Graph,
            npartitions: keys.len(),
            graph,
            keys,
            name,
        }
    }

    /// The graph again, as nodes: literals stay literal (`Node::Quoted`), references explicit
    /// (`Node::Ref`), so it computes exactly as stored (`client.get(&c.to_graph(), c.keys)`)
    /// and can be extended with more tasks.
    pub fn to_graph(&self) -> Graph {
        self.graph
            .iter()
            .map(|(k, e)| (k.clone(), expr_to_node(e)))
            .collect()
    }

    /// An error unless this collection is of `kind`.
    pub(crate) fn expect_kind(&self, kind: CollectionKind) -> Result<(), CollectionError> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(CollectionError::WrongKind {
                name: self.name.clone(),
                found: self.kind,
                expected: kind,
            })
        }
    }

    /// An error unless `graph` defines every key of this collection.
    pub(crate) fn check_defined(&self, graph: &Graph) -> Result<(), CollectionError> {
        match self.keys.iter().find(|k| !graph.contains(k)) {
            None => Ok(()),
            Some(k) => Err(CollectionError::Undefined {
                name: self.name.clone(),
                key: k.clone(),
            }),
        }
    }
}

/// Why a collection cannot be turned into a `Bag` or an `Item`, or why its computed values do
/// not make one. The collection (or its computed values) is what it is: retrying the same
/// conversion never helps (`retry_may_help` is false for every variant); the collection must
/// be stored again, right.
#[derive(Clone, Debug, PartialEq)]
pub enum CollectionError {
    /// The collection is of another kind than the one asked for.
    WrongKind {
        name: String,
        found: CollectionKind,
        expected: CollectionKind,
    },
    /// A bag collection without partitions.
    NoPartitions { name: String },
    /// A bag collection whose keys are not `(name, 0..npartitions)`.
    BagKeys {
        name: String,
        npartitions: usize,
        keys: Vec<Key>,
    },
    /// An item collection whose keys are not the one key `(name, 0)`.
    ItemKeys {
        name: String,
        npartitions: usize,
        keys: Vec<Key>,
    },
    /// The collection's graph does not define one of its keys.
    Undefined { name: String, key: Key },
    /// A computed partition of a bag is not a list.
    PartitionNotList { key: Key, found: &'static str },
}

impl CollectionError {
    /// Whether repeating the same conversion unchanged can succeed: never (see the type).
    pub fn retry_may_help(&self) -> bool {
        false
    }
}

impl std::fmt::Display for CollectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CollectionError::WrongKind {
                name,
                found,
                expected,
            } => write!(
                f,
                "collection {name:?} is {}, not {}",
                found.with_article(),
                expected.with_article()
            ),
            CollectionError::NoPartitions { name } => {
                write!(f, "bag collection {name:?} has no partitions")
            }
            CollectionError::BagKeys {
                name,
                npartitions,
                keys,
            } => write!(
                f,
                "bag collection {name:?}: keys must be ({name:?}, 0..{npartitions}), got {keys:?}"
            ),
            CollectionError::ItemKeys {
                name,
                npartitions,
                keys,
            } => {
                let expected = Key::Tuple(vec![Key::Str(name.clone()), Key::Int(0)]);
                write!(
                    f,
                    "item collection {name:?}: expected the one key {expected:?}, got {keys:?} \
                     ({npartitions} partitions)"
                )
            }
            CollectionError::Undefined { name, key } => write!(
                f,
                "collection {name:?}: its graph does not define its key {key:?}"
            ),
            CollectionError::PartitionNotList { key, found } => {
                write!(f, "partition {key} of a bag is {found}, not a list")
            }
        }
    }
}

impl std::error::Error for CollectionError {}

fn expr_to_node(e: &Expr) -> Node {
    match e {
        Expr::Lit(v) => Node::Quoted(v.clone()),
        Expr::Ref(k) => Node::Ref(k.clone()),
        Expr::Call(f, args) => Node::Task(f.clone(), args.iter().map(expr_to_node).collect()),
        Expr::List(items) => Node::List(items.iter().map(expr_to_node).collect()),
    }
}

/// Anything that can be stored as a collection: a `Bag`, an `Item`, or a `Collection`.
pub trait AsCollection {
    fn as_collection(&self) -> Collection;
}

impl AsCollection for Collection {
    fn as_collection(&self) -> Collection {
        self.clone()
    }
}

/// Something a client can compute (`Client::compute`): a graph, the keys to get from it, and
/// how their values make the result. Pure: building and assembling touch no network.
pub trait Computable {
    /// The graph defining `output_keys` (and everything they depend on).
    fn graph(&self) -> &Graph;
    /// The keys whose values make the result, in order.
    fn output_keys(&self) -> Vec<Key>;
    /// The result, from the values of `output_keys` in the same order.
    fn assemble(&self, values: Vec<Value>) -> Result<Value, CollectionError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{key, literal};

    fn through_msgpack(c: &Collection) -> Collection {
        rmp_serde::from_slice(&rmp_serde::to_vec(c).unwrap()).unwrap()
    }

    #[test]
    fn a_plain_graph_keeps_literals_literal_and_references_explicit() {
        let g = crate::graph! {
            "x" => 1,
            ("y", 0) => ("add", "x", literal("x")),
            "z" => ("sum", vec![key(("y", 0)), "x".into()]),
            "s" => "no such key",
        };
        let keys = vec![Key::from("z"), Key::from("s")];
        let c = Collection::from_graph(&g, keys.clone());
        assert_eq!(c.kind, CollectionKind::Graph);
        assert_eq!((c.keys.clone(), c.npartitions), (keys.clone(), 2));
        assert!(c.name.starts_with("graph-"));
        assert_eq!(c, Collection::from_graph(&g, keys.clone()));
        assert_ne!(c.name, Collection::from_graph(&g, vec!["z".into()]).name);
        let back = c.to_graph();
        // The same tasks, whatever the user wrote: resolving again gives the stored graph.
        assert_eq!(back.resolve(&|_| false), c.graph);
        assert_eq!(Collection::from_graph(&back, keys), c);
        assert_eq!(
            back.get(&("y", 0).into()),
            Some(&Node::Task(
                "add".into(),
                vec![Node::Ref("x".into()), Node::Quoted("x".into())]
            ))
        );
        assert_eq!(
            back.get(&"s".into()),
            Some(&Node::Quoted("no such key".into()))
        );
        assert_eq!(through_msgpack(&c), c);
    }
}

//! Collections as the scheduler stores them: a graph with every reference explicit, the keys
//! that make up the collection and what kind of collection it is, so that one client can
//! publish a bag, an item or a plain graph under a name and another can fetch it back, compute
//! it or build on it.

use serde::{Deserialize, Serialize};

use crate::graph::tokenize::{encoded, tokenize};
use crate::graph::{Expr, Graph, Key, Node};

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

impl std::fmt::Display for CollectionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CollectionKind::Bag => "bag",
            CollectionKind::Item => "item",
            CollectionKind::Graph => "graph",
        })
    }
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
    pub(crate) fn expect_kind(&self, kind: CollectionKind) -> Result<(), String> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(format!(
                "collection {:?} is a {}, not a {kind}",
                self.name, self.kind
            ))
        }
    }

    /// An error unless `graph` defines every key of this collection.
    pub(crate) fn check_defined(&self, graph: &Graph) -> Result<(), String> {
        match self.keys.iter().find(|k| !graph.contains(k)) {
            None => Ok(()),
            Some(k) => Err(format!(
                "collection {:?}: its graph does not define its key {k:?}",
                self.name
            )),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bag::{Bag, Item};
    use crate::graph::{key, literal};

    fn through_msgpack(c: &Collection) -> Collection {
        rmp_serde::from_slice(&rmp_serde::to_vec(c).unwrap()).unwrap()
    }

    #[test]
    fn a_bag_comes_back_equal() {
        let bags = [
            Bag::from_sequence(vec!["x", "y", "z"], 2),
            Bag::range(100, 7)
                .map("add", vec![5.into()])
                .filter("identity")
                .map_partitions("drop_nulls"),
            Bag::from_sequence(vec![vec![1, 2], vec![3]], 2).flatten(),
            Bag::range(50, 9).frequencies(),
        ];
        for bag in bags {
            let c = bag.to_collection();
            assert_eq!(c.kind, CollectionKind::Bag);
            assert_eq!(c.keys, bag.keys());
            assert_eq!(c.npartitions, bag.npartitions());
            assert_eq!(c.name, bag.name());
            assert_eq!(Bag::from_collection(&c), Ok(bag.clone()));
            assert_eq!(Bag::from_collection(&through_msgpack(&c)), Ok(bag.clone()));
            // Built upon after the round trip, it gives the same keys as built upon before.
            let back = Bag::from_collection(&c).unwrap();
            assert_eq!(back.sum(), bag.sum());
        }
    }

    #[test]
    fn an_item_comes_back_equal() {
        let bag = Bag::range(100, 10).map("double", vec![]);
        let items = [
            bag.sum(),
            bag.mean(),
            bag.fold("add", "add", None),
            bag.fold("add", "add", Some(0.into())),
            bag.take(3),
        ];
        for item in items {
            let c = item.to_collection();
            assert_eq!((c.kind, c.npartitions), (CollectionKind::Item, 1));
            assert_eq!(c.keys, vec![item.key()]);
            assert_eq!(Item::from_collection(&c), Ok(item.clone()));
            assert_eq!(Item::from_collection(&through_msgpack(&c)), Ok(item));
        }
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

    #[test]
    fn a_collection_of_the_wrong_kind_or_shape_is_refused() {
        let bag = Bag::range(10, 2);
        let item = bag.sum();
        let err = Item::from_collection(&bag.to_collection()).unwrap_err();
        assert!(err.contains("not a \"item\""), "{err}");
        let err = Bag::from_collection(&item.to_collection()).unwrap_err();
        assert!(err.contains("not a \"bag\""), "{err}");
        let graph = Collection::from_graph(&crate::graph! { "x" => 1 }, vec!["x".into()]);
        assert!(Bag::from_collection(&graph).is_err());
        // The item's one partition is the one-partition bag of the same key.
        let mut as_bag = item.to_collection();
        as_bag.kind = CollectionKind::Bag;
        assert_eq!(Bag::from_collection(&as_bag), Ok(item.to_bag()));

        let mut c = bag.to_collection();
        c.keys.pop();
        assert!(Bag::from_collection(&c)
            .unwrap_err()
            .contains("keys must be"));
        let mut c = bag.to_collection();
        c.graph.retain(|(k, _)| *k != bag.keys()[1]);
        let err = Bag::from_collection(&c).unwrap_err();
        assert!(err.contains("does not define"), "{err}");
        let mut c = bag.to_collection();
        c.npartitions = 0;
        c.keys.clear();
        assert!(Bag::from_collection(&c).is_err());
        let mut c = item.to_collection();
        c.keys = vec![Key::from("other")];
        assert!(Item::from_collection(&c).is_err());
        let mut c = item.to_collection();
        c.graph.clear();
        assert!(Item::from_collection(&c).is_err());
    }
}

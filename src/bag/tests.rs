//! Unit tests of bags: graphs built and run in this thread, no cluster.

use std::collections::HashMap;

use super::*;
use crate::graph::tokenize::tokenize;
use crate::graph::{cull, Expr};
use crate::worker::executor::evaluate;
use crate::worker::Registry;

fn through_msgpack(c: &Collection) -> Collection {
    rmp_serde::from_slice(&rmp_serde::to_vec(c).unwrap()).unwrap()
}

/// Runs a graph in this thread with the built-ins, as a worker would, task by task.
fn run_locally(graph: &Graph, outputs: &[Key]) -> HashMap<Key, Value> {
    let resolved = graph.resolve(&|_| false);
    let view: HashMap<&Key, &Expr> = resolved.iter().map(|(k, e)| (k, e)).collect();
    let order = cull(&view, outputs, &|_| false).expect("a valid graph");
    let registry = Registry::with_builtins();
    let mut values = HashMap::new();
    for k in order {
        let v = evaluate(view[k], &values, &registry).unwrap_or_else(|e| panic!("task {k:?}: {e}"));
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
fn a_collection_of_the_wrong_kind_or_shape_is_refused() {
    let bag = Bag::range(10, 2);
    let item = bag.sum();
    let err = Item::from_collection(&bag.to_collection()).unwrap_err();
    assert!(
        matches!(
            err,
            CollectionError::WrongKind {
                found: CollectionKind::Bag,
                expected: CollectionKind::Item,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("is a bag, not an item"), "{err}");
    assert!(!err.retry_may_help());
    let err = Bag::from_collection(&item.to_collection()).unwrap_err();
    assert!(err.to_string().contains("is an item, not a bag"), "{err}");
    let graph = Collection::from_graph(&crate::graph! { "x" => 1 }, vec!["x".into()]);
    assert!(Bag::from_collection(&graph).is_err());
    // The item's one partition is the one-partition bag of the same key.
    let mut as_bag = item.to_collection();
    as_bag.kind = CollectionKind::Bag;
    assert_eq!(Bag::from_collection(&as_bag), Ok(item.to_bag()));

    let mut c = bag.to_collection();
    c.keys.pop();
    let err = Bag::from_collection(&c).unwrap_err();
    assert!(matches!(err, CollectionError::BagKeys { .. }), "{err:?}");
    assert!(err.to_string().contains("keys must be"), "{err}");
    let mut c = bag.to_collection();
    c.graph.retain(|(k, _)| *k != bag.keys()[1]);
    let err = Bag::from_collection(&c).unwrap_err();
    assert!(matches!(err, CollectionError::Undefined { .. }), "{err:?}");
    assert!(err.to_string().contains("does not define"), "{err}");
    let mut c = bag.to_collection();
    c.npartitions = 0;
    c.keys.clear();
    assert!(matches!(
        Bag::from_collection(&c),
        Err(CollectionError::NoPartitions { .. })
    ));
    let mut c = item.to_collection();
    c.keys = vec![Key::from("other")];
    assert!(matches!(
        Item::from_collection(&c),
        Err(CollectionError::ItemKeys { .. })
    ));
    let mut c = item.to_collection();
    c.graph.clear();
    assert!(Item::from_collection(&c).is_err());
}

#[test]
fn assembling_concatenates_partitions_and_names_one_that_is_not_a_list() {
    let bag = Bag::range(4, 2);
    assert_eq!(bag.output_keys(), bag.keys());
    assert_eq!(bag.assemble(vec![ints(0..2), ints(2..4)]), Ok(ints(0..4)));
    let err = bag.assemble(vec![ints(0..2), 5.into()]).unwrap_err();
    assert_eq!(
        err,
        CollectionError::PartitionNotList {
            key: bag.keys()[1].clone(),
            found: Value::from(5).type_name(),
        }
    );
    assert!(err.to_string().contains("not a list"), "{err}");
    let item = bag.sum();
    assert_eq!(item.output_keys(), vec![item.key()]);
    assert_eq!(item.assemble(vec![6.into()]), Ok(6.into()));
}

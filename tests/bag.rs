//! Bags on an embedded cluster of two workers: every operation computes the same values as
//! dask.bag would, including the resilience notebook's bag with a slow element function.

use zask::bag::{Item, Reduction};
use zask::{Bag, Client, ClientError, LocalCluster, Value};

fn cluster() -> (LocalCluster, Client) {
    let cluster = LocalCluster::builder()
        .workers(2)
        .start()
        .expect("a local cluster starts");
    let client = cluster.client().expect("a client connects");
    (cluster, client)
}

fn ints(xs: impl IntoIterator<Item = i64>) -> Value {
    Value::from(xs.into_iter().collect::<Vec<_>>())
}

fn pair(item: impl Into<Value>, n: i64) -> Value {
    Value::List(vec![item.into(), n.into()])
}

#[test]
fn map_over_a_sequence() {
    let (_cluster, client) = cluster();
    let bag = Bag::from_sequence(0..5, 2).map("inc", vec![]);
    assert_eq!(client.compute(&bag).unwrap(), ints(1..6));
    let bag = Bag::from_sequence(0..5, 2).map("add", vec![10.into()]);
    assert_eq!(client.compute(&bag).unwrap(), ints(10..15));
}

#[test]
fn the_notebook_bag_sums_to_159600() {
    let (_cluster, client) = cluster();
    let total = Bag::range(400, 200).map("double", vec![]).sum();
    assert_eq!(client.compute(&total).unwrap(), Value::from(159600));
    // Computing again (same keys) gives the same answer.
    assert_eq!(client.compute(&total).unwrap(), Value::from(159600));
    let total = Bag::range(400, 200)
        .map("double", vec![])
        .reduce(Reduction::Sum, 3);
    assert_eq!(client.compute(&total).unwrap(), Value::from(159600));
}

#[test]
fn the_notebook_bag_with_a_slow_element_function() {
    let (_cluster, client) = cluster();
    let total = Bag::range(400, 200)
        .map("slow_double", vec![0.001.into()])
        .sum();
    assert_eq!(client.compute(&total).unwrap(), Value::from(159600));
}

#[test]
fn filter_map_partitions_and_flatten() {
    let (_cluster, client) = cluster();
    let mut items = vec![Value::Null; 3];
    items.extend([1.into(), 0.into(), 2.into()]);
    let bag = Bag::from_sequence(items, 4);
    assert_eq!(client.compute(&bag.filter("identity")).unwrap(), ints(1..3));
    assert_eq!(
        client.compute(&bag.map_partitions("drop_nulls")).unwrap(),
        ints([1, 0, 2])
    );
    let nested = Bag::from_sequence(vec![ints(0..3), ints([]), ints(7..9)], 2);
    assert_eq!(
        client.compute(&nested.flatten()).unwrap(),
        ints([0, 1, 2, 7, 8])
    );
    assert_eq!(
        client.compute(&Bag::range(0, 3)).unwrap(),
        ints([]),
        "an empty range is an empty list"
    );
}

#[test]
fn reductions() {
    let (_cluster, client) = cluster();
    let bag = Bag::range(100, 13).map("inc", vec![]);
    let get = |item: Item| client.compute(&item).unwrap();
    assert_eq!(get(bag.sum()), 5050.into());
    assert_eq!(get(bag.count()), 100.into());
    assert_eq!(get(bag.min()), 1.into());
    assert_eq!(get(bag.max()), 100.into());
    assert_eq!(get(bag.mean()), 50.5.into());
    assert_eq!(get(bag.fold("add", "add", None)), 5050.into());
    assert_eq!(get(bag.fold("add", "add", Some(0.into()))), 5050.into());
    // 100! overflows: an error naming the function and the element, not a wrong value.
    let err = client.compute(&bag.fold("mul", "mul", None)).unwrap_err();
    assert!(err.to_string().contains("fold(mul): element"), "{err}");
    assert!(err.to_string().contains("integer overflow"), "{err}");
    // The mean of no elements is an error, as in Python; the other reductions have a value.
    let none = Bag::from_sequence(vec![Value::Null; 4], 2).filter("identity");
    assert_eq!(get(none.sum()), 0.into());
    assert_eq!(get(none.count()), 0.into());
    assert_eq!(get(none.max()), Value::Null);
    let err = client.compute(&none.mean()).unwrap_err();
    assert!(
        err.to_string().contains("mean of an empty sequence"),
        "{err}"
    );
}

#[test]
fn a_fold_with_a_float_initial_and_a_mean_of_floats() {
    let (_cluster, client) = cluster();
    let bag = Bag::from_sequence(vec![0.5, 1.5, 4.0], 2);
    assert_eq!(client.compute(&bag.mean()).unwrap(), Value::from(2.0));
    assert_eq!(
        client
            .compute(&bag.fold("add", "add", Some(0.0.into())))
            .unwrap(),
        Value::from(6.0)
    );
    assert_eq!(client.compute(&bag.max()).unwrap(), Value::from(4.0));
}

#[test]
fn frequencies_are_a_bag_of_pairs_in_first_seen_order() {
    let (_cluster, client) = cluster();
    let words = Bag::from_sequence(vec!["a", "b", "a", "c", "b", "a"], 3);
    let freq = words.frequencies();
    assert_eq!(freq.npartitions(), 1);
    assert_eq!(
        client.compute(&freq).unwrap(),
        Value::List(vec![pair("a", 3), pair("b", 2), pair("c", 1)])
    );
    let mods = Bag::range(30, 7).map("mul", vec![0.into()]).frequencies();
    assert_eq!(
        client.compute(&mods).unwrap(),
        Value::List(vec![pair(0, 30)])
    );
}

#[test]
fn take_gives_the_first_elements_even_past_short_partitions() {
    let (_cluster, client) = cluster();
    let bag = Bag::range(10, 5).map("double", vec![]);
    assert_eq!(client.compute(&bag.take(3)).unwrap(), ints([0, 2, 4]));
    assert_eq!(client.compute(&bag.take(0)).unwrap(), ints([]));
    assert_eq!(
        client.compute(&bag.take(50)).unwrap(),
        ints((0..10).map(|x| 2 * x))
    );
    // The first partitions are empty after the filter.
    let sparse = Bag::range(10, 5)
        .map("sub", vec![5.into()])
        .filter("identity");
    assert_eq!(client.compute(&sparse.take(2)).unwrap(), ints([-5, -4]));
}

#[test]
fn two_clients_building_the_same_bag_share_its_keys() {
    let (cluster, client) = cluster();
    let other = cluster.client().unwrap();
    let build = || {
        Bag::range(40, 8)
            .map("slow_double", vec![0.001.into()])
            .sum()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| client.compute(&build()));
        let b = s.spawn(|| other.compute(&build()));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a.unwrap(), Value::from(1560));
    assert_eq!(b.unwrap(), Value::from(1560));
}

#[test]
fn a_bag_round_trips_through_a_collection_and_computes_the_same() {
    let (_cluster, client) = cluster();
    let bag = Bag::range(50, 6).map("inc", vec![]).filter("identity");
    let c = bag.to_collection();
    let back = Bag::from_collection(&c).unwrap();
    assert_eq!(back, bag);
    assert_eq!(
        client.compute(&back).unwrap(),
        client.compute(&bag).unwrap()
    );
    assert_eq!(
        client.get(&c.to_graph(), c.keys.clone()).unwrap(),
        Value::List(
            (0..6)
                .map(|i| {
                    let start = i * 9;
                    ints((start + 1)..=(start + 9).min(50))
                })
                .collect()
        )
    );
    let item = back.sum();
    let item_back = Item::from_collection(&item.to_collection()).unwrap();
    assert_eq!(client.compute(&item_back).unwrap(), Value::from(1275));
}

#[test]
fn element_errors_name_the_function() {
    let (_cluster, client) = cluster();
    let err = client
        .compute(&Bag::from_sequence(0..4, 2).map("no_such_function", vec![]))
        .unwrap_err();
    assert!(matches!(err, ClientError::Request(_)), "{err:?}");
    assert!(err.to_string().contains("no_such_function"), "{err}");
    let err = client
        .compute(
            &Bag::from_sequence(vec![Value::from(1), "x".into()], 1)
                .map("inc", vec![])
                .sum(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("map(inc): element 1"), "{err}");
    let err = client
        .compute(&Bag::range(4, 2).map_partitions("sum"))
        .unwrap_err();
    assert!(err.to_string().contains("not a list"), "{err}");
    // The cluster serves on.
    assert_eq!(
        client.compute(&Bag::range(4, 2).sum()).unwrap(),
        Value::from(6)
    );
}

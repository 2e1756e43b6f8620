//! Tests of the legacy graph translation: graphs the real 2015 client pickled, translated to
//! native graphs (or refused, naming the task) and evaluated with the executor.

use super::*;
use crate::protocol::TaskError;
use zask_compat::pickle::decode;

/// The payload the unmodified 2015 client pickles (compat/tests/fixtures/legacy/make.py).
fn payload(name: &str) -> Pickle {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/compat/tests/fixtures/legacy/");
    decode(&std::fs::read(format!("{dir}{name}.payload.pkl")).unwrap()).unwrap()
}

fn key(s: &str) -> Key {
    Key::from(s)
}

fn lit(v: impl Into<Value>) -> Expr {
    Expr::Lit(v.into())
}

fn call(f: &str, args: Vec<Expr>) -> Expr {
    Expr::Call(f.into(), args)
}

#[test]
fn dill_callables_resolve_to_their_globals() {
    let p = payload("schedule_nested");
    let dask = p.dict_get(p.root, "dask").unwrap();
    let Some(Node::Dict(pairs)) = p.get(dask) else {
        panic!()
    };
    let mut seen = Vec::new();
    for &(_, v) in pairs {
        if let Some([f, ..]) = p.tuple_of(v) {
            if let Some(Callable::Global { module, name }) = callable_of(&p, *f) {
                seen.push(format!("{module}.{name}"));
            }
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "_operator.mul",
            "_operator.truediv",
            "builtins.len",
            "builtins.list",
            "builtins.max",
            "builtins.sum"
        ]
    );
}

#[test]
fn nested_tasks_lists_dependencies_and_literals_translate() {
    let t = translate(&payload("schedule_nested")).unwrap();
    let graph: std::collections::HashMap<Key, Expr> = t.graph.into_iter().collect();
    assert_eq!(graph[&key("a")], lit(1));
    assert_eq!(
        graph[&key("b")],
        call("mul", vec![Expr::Ref(key("a")), lit(10)])
    );
    assert_eq!(
        graph[&key("c")],
        call(
            "sum",
            vec![Expr::List(vec![
                Expr::Ref(key("a")),
                Expr::Ref(key("b")),
                call("neg", vec![lit(4)])
            ])]
        )
    );
    // max(a, b, 3): the built-in takes one list.
    assert_eq!(
        graph[&Key::from(("t", 0))],
        call(
            "max",
            vec![Expr::List(vec![
                Expr::Ref(key("a")),
                Expr::Ref(key("b")),
                lit(3)
            ])]
        )
    );
    // 'a' in a walked list is a key of the graph: a dependency.
    assert_eq!(
        graph[&key("l")],
        call(
            "list",
            vec![Expr::List(vec![
                lit(1.5),
                lit(Value::Null),
                Expr::Ref(key("a"))
            ])]
        )
    );
    assert_eq!(
        graph[&key("d")],
        call("truediv", vec![Expr::Ref(key("b")), lit(4)])
    );
    // A non-task tuple is compared with the keys whole, not walked: ('a', 'b') is data.
    assert_eq!(
        graph[&key("e")],
        call(
            "length",
            vec![lit(Value::List(vec!["a".into(), "b".into()]))]
        )
    );
    assert_eq!(
        graph[&key("m")],
        lit(Value::Map(vec![(
            "k".into(),
            Value::List(vec![1.into(), Value::List(vec![2.into(), 3.into()])])
        )]))
    );
    assert_eq!(
        t.shape,
        KeySpec::Many(vec![
            KeySpec::Many(vec![KeySpec::One(key("a")), KeySpec::One(key("b"))]),
            KeySpec::One(key("c")),
            KeySpec::Many(vec![KeySpec::One(Key::from(("t", 0)))]),
        ])
    );
    assert_eq!(
        t.outputs,
        vec![key("a"), key("b"), key("c"), Key::from(("t", 0))]
    );
    assert!(t.keep_results);
}

/// The parts of a `python` task: the task tuple and key as decoded pickles, the input keys'
/// pickles decoded, and the input expressions.
fn python_parts(expr: &Expr) -> (Pickle, Pickle, Vec<Pickle>, Vec<Expr>) {
    let Expr::Call(f, args) = expr else {
        panic!("not a call: {expr:?}")
    };
    assert_eq!(f, PYTHON_TASK);
    let [Expr::Lit(Value::Bytes(task)), Expr::Lit(Value::Bytes(k)), Expr::Lit(Value::List(keys)), inputs] =
        &args[..]
    else {
        panic!("not a python task's arguments: {args:?}")
    };
    let keys = keys
        .iter()
        .map(|k| match k {
            Value::Bytes(b) => decode(b).unwrap(),
            other => panic!("an input key that is not a pickle: {other:?}"),
        })
        .collect();
    let inputs = match inputs {
        Expr::List(items) => items.clone(),
        Expr::Lit(Value::List(items)) if items.is_empty() => vec![],
        other => panic!("inputs: {other:?}"),
    };
    (decode(task).unwrap(), decode(k).unwrap(), keys, inputs)
}

#[test]
fn python_only_callables_become_python_tasks_restricted_to_python_workers() {
    let t = translate(&payload("schedule_lambda")).unwrap();
    assert_eq!(
        t.restrictions,
        vec![(key("y"), vec![WorkerSelector::Python])]
    );
    let y = &t.graph.iter().find(|(k, _)| *k == key("y")).unwrap().1;
    let (task, k, input_keys, inputs) = python_parts(y);
    // `(add, 'x', (lambda v: v + 1, 'x'))`: the whole task travels as the client pickled it,
    // the known `add` around the lambda included; `x`, read twice, is one input.
    let items = task.tuple_of(task.root).unwrap();
    assert_eq!(
        callable_of(&task, items[0]),
        Some(Callable::Global {
            module: "_operator".into(),
            name: "add".into()
        })
    );
    assert_eq!(task.str_of(items[1]), Some("x"));
    let nested = task.tuple_of(items[2]).unwrap();
    assert_eq!(
        callable_of(&task, nested[0]),
        Some(Callable::Other("a lambda".into()))
    );
    assert_eq!(k.str_of(k.root), Some("y"));
    assert_eq!(input_keys.len(), 1);
    assert_eq!(input_keys[0].str_of(input_keys[0].root), Some("x"));
    assert_eq!(inputs, vec![Expr::Ref(key("x"))]);
    // The literal stays a native value, which any worker holds.
    assert!(t.graph.contains(&(key("x"), lit(1))));

    let t = translate(&payload("schedule_function")).unwrap();
    assert_eq!(
        t.restrictions,
        vec![(key("y"), vec![WorkerSelector::Python])]
    );
    let y = &t.graph.iter().find(|(k, _)| *k == key("y")).unwrap().1;
    let (task, ..) = python_parts(y);
    let items = task.tuple_of(task.root).unwrap();
    assert_eq!(
        callable_of(&task, items[0]),
        Some(Callable::Other("the Python function 'inc'".into()))
    );
}

#[test]
fn a_missing_key_and_values_zask_cannot_hold_are_refused() {
    let refused = translate(&payload("schedule_missing")).unwrap_err();
    assert_eq!(refused, Refused::MissingKey("nope".into()));
    assert_eq!(
        refused.exception(),
        ("builtins", "KeyError", "nope".to_owned())
    );
    let refused = translate(&payload("schedule_set")).unwrap_err();
    assert!(
        matches!(&refused, Refused::NotRepresentable { what, .. } if what == "a builtins.set object"),
        "{refused:?}"
    );
    assert_eq!(refused.exception().1, "NotImplementedError");
    // Not a schedule payload at all.
    let mut p = Pickle::new();
    p.root = p.add(Node::Int(1));
    assert!(matches!(translate(&p), Err(Refused::Malformed(_))));
}

#[test]
fn a_cycle_in_a_literal_is_refused_not_followed() {
    // {'dask': {'x': L}, 'keys': 'x'} where L = [L]
    let mut p = Pickle::new();
    let list = p.add(Node::List(vec![]));
    p.nodes[list.index()] = Node::List(vec![list]);
    let x = p.add(Node::Str("x".into()));
    let dask = p.add(Node::Dict(vec![(x, list)]));
    let kd = p.add(Node::Str("dask".into()));
    let kk = p.add(Node::Str("keys".into()));
    p.root = p.add(Node::Dict(vec![(kd, dask), (kk, x)]));
    assert!(matches!(
        translate(&p),
        Err(Refused::NotRepresentable { .. })
    ));
}

#[test]
fn results_take_the_shape_of_the_keys_and_python_types() {
    let mut p = Pickle::new();
    let shape = KeySpec::Many(vec![
        KeySpec::Many(vec![KeySpec::One(key("a")), KeySpec::One(key("b"))]),
        KeySpec::One(key("c")),
    ]);
    let values = vec![
        Value::Int(1),
        Value::Map(vec![(
            Value::List(vec![1.into()]),
            Value::Bytes(b"z".to_vec()),
        )]),
        Value::Float(2.5),
    ];
    p.root = add_shaped(&mut p, &shape, &mut values.into_iter());
    // A map's list key becomes a tuple (Python keys are hashable).
    assert_eq!(p.render(p.root), r#"[[1, {(1,): b"z"}], 2.5]"#);
}

#[test]
fn task_errors_become_python_exception_classes() {
    let task = |kind, message: &str| RequestError::Task {
        key: key("y"),
        error: TaskError {
            kind,
            message: message.into(),
        },
    };
    assert_eq!(
        exception_of(&task(
            TaskErrorKind::Failed,
            "ZeroDivisionError: division by zero"
        )),
        ("builtins", "ZeroDivisionError", "division by zero".into())
    );
    assert_eq!(
        exception_of(&task(TaskErrorKind::BadArguments, "add: argument 1")).1,
        "TypeError"
    );
    assert_eq!(
        exception_of(&task(TaskErrorKind::Failed, "integer overflow")).1,
        "OverflowError"
    );
    let (_, class, message) = exception_of(&task(TaskErrorKind::Failed, "boom"));
    assert_eq!(class, "RuntimeError");
    assert!(
        message.contains("boom") && message.contains("\"y\""),
        "{message}"
    );
}

/// Evaluates a translated graph with the Rust workers' executor and built-ins.
fn run(graph: Vec<(Key, Expr)>) -> std::collections::HashMap<Key, Value> {
    let registry = crate::worker::Registry::with_builtins();
    let mut done = std::collections::HashMap::new();
    let mut todo = graph;
    while !todo.is_empty() {
        let before = todo.len();
        todo.retain(|(k, e)| {
            if !e.references().iter().all(|r| done.contains_key(*r)) {
                return true;
            }
            let v = crate::worker::executor::evaluate(e, &done, &registry)
                .unwrap_or_else(|e| panic!("{k:?}: {e:?}"));
            done.insert(k.clone(), v);
            false
        });
        assert!(todo.len() < before, "no progress: {todo:?}");
    }
    done
}

#[test]
fn bag_graphs_of_known_functions_translate_and_compute_as_python() {
    let t = translate(&payload("schedule_bag")).unwrap();
    let graph: std::collections::HashMap<Key, Expr> = t.graph.clone().into_iter().collect();
    let bag = |n: i64| Key::from(("bag-1", n));
    // (reify, (map, neg, ('load-1', 0))): the executor's map over the built-in.
    assert_eq!(
        graph[&bag(0)],
        call("map", vec![lit("neg"), Expr::Ref(Key::from(("load-1", 0)))])
    );
    // The partitions are literal tuples: lists.
    assert_eq!(graph[&Key::from(("load-1", 1))], lit(vec![3, 4]));
    // count of a partition (toolz.count) is its length; the total is a sum of a list.
    assert_eq!(
        graph[&Key::from(("bag-4", 0))],
        call("length", vec![Expr::Ref(Key::from(("bag-1", 0)))])
    );
    assert_eq!(
        graph[&key("bag-5")],
        call(
            "sum",
            vec![Expr::List(vec![
                Expr::Ref(Key::from(("bag-4", 0))),
                Expr::Ref(Key::from(("bag-4", 1)))
            ])]
        )
    );
    assert_eq!(
        graph[&Key::from(("bag-8", 1))],
        call(
            "filter",
            vec![lit("neg"), Expr::Ref(Key::from(("bag-1", 1)))]
        )
    );
    // Computed by the Rust workers' executor, the values are Python's.
    let values = run(t.graph);
    let shaped: Vec<Value> = t.outputs.iter().map(|k| values[k].clone()).collect();
    assert_eq!(
        shaped,
        vec![
            Value::from(vec![0, -1, -2]),
            Value::from(vec![-3, -4]),
            Value::from(-10),
            Value::from(5),
            Value::from(0),
            Value::from(vec![-1, -2]),
            Value::from(vec![-3, -4]),
        ]
    );
}

#[test]
fn a_bag_over_a_user_function_runs_its_partitions_in_python_over_native_loads() {
    let t = translate(&payload("schedule_bag_function")).unwrap();
    // Every partition of the map over `inc` is a Python task reading its load partition,
    // which stays a native literal.
    assert!(!t.restrictions.is_empty());
    for (k, selectors) in &t.restrictions {
        assert_eq!(selectors, &vec![WorkerSelector::Python], "{k:?}");
        let expr = &t.graph.iter().find(|(g, _)| g == k).unwrap().1;
        let (_, _, input_keys, inputs) = python_parts(expr);
        assert_eq!(inputs.len(), 1, "{k:?} reads its load partition");
        let Expr::Ref(input) = &inputs[0] else {
            panic!("{inputs:?}")
        };
        let native = &t.graph.iter().find(|(g, _)| g == input).unwrap().1;
        assert!(matches!(native, Expr::Lit(Value::List(_))), "{native:?}");
        assert_eq!(input_keys.len(), 1);
    }
}

//! Unit tests of the registry and of every built-in.

use std::time::Duration;

use super::*;

fn call(reg: &Registry, name: &str, args: Vec<Value>) -> Result<Value, TaskError> {
    reg.get(name).unwrap_or_else(|| panic!("{name} missing"))(args)
}

fn builtin(name: &str, args: Vec<Value>) -> Result<Value, TaskError> {
    call(&Registry::with_test_functions(), name, args)
}

fn ok(name: &str, args: Vec<Value>) -> Value {
    builtin(name, args).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn err(name: &str, args: Vec<Value>) -> TaskError {
    builtin(name, args).expect_err(name)
}

fn bad_args(message: &str) -> TaskError {
    bad_arguments(message.to_owned())
}

fn fail(message: &str) -> TaskError {
    failed(message.to_owned())
}

fn ints(xs: &[i64]) -> Value {
    Value::from(xs.to_vec())
}

#[test]
fn typed_functions_of_several_arities_and_return_types() {
    let mut reg = Registry::new();
    reg.register("zero", || 0i64)
        .register("greet", |who: String| format!("hi {who}"))
        .register("add", |a: i64, b: i64| a + b)
        .register("nothing", |_: Value| ())
        .register("maybe", |x: Option<i64>| x.map(|x| x * 10))
        .register("pair", |a: u32, b: bool| {
            vec![Value::from(a), Value::from(b)]
        })
        .register("six", |a: i64, b: i64, c: i64, d: i64, e: i64, f: f64| {
            (a + b + c + d + e) as f64 + f
        })
        .register("checked", |x: i64| {
            if x < 0 {
                Err(format!("{x} is negative"))
            } else {
                Ok(x)
            }
        });
    assert_eq!(call(&reg, "zero", vec![]), Ok(Value::Int(0)));
    assert_eq!(call(&reg, "greet", vec!["ann".into()]), Ok("hi ann".into()));
    assert_eq!(call(&reg, "add", vec![2.into(), 3.into()]), Ok(5.into()));
    assert_eq!(call(&reg, "nothing", vec![1.into()]), Ok(Value::Null));
    assert_eq!(call(&reg, "maybe", vec![Value::Null]), Ok(Value::Null));
    assert_eq!(call(&reg, "maybe", vec![4.into()]), Ok(40.into()));
    assert_eq!(
        call(&reg, "pair", vec![7.into(), true.into()]),
        Ok(Value::List(vec![7.into(), true.into()]))
    );
    let six: Vec<Value> = vec![1.into(), 2.into(), 3.into(), 4.into(), 5.into(), 0.5.into()];
    assert_eq!(call(&reg, "six", six), Ok(15.5.into()));
    assert_eq!(call(&reg, "checked", vec![1.into()]), Ok(1.into()));
    assert_eq!(
        call(&reg, "checked", vec![(-1).into()]),
        Err(fail("-1 is negative"))
    );
}

#[test]
fn arity_and_type_errors_name_the_function_and_argument() {
    let mut reg = Registry::new();
    reg.register("add", |a: i64, b: i64| a + b)
        .register("one", |a: i64| a);
    assert_eq!(
        call(&reg, "add", vec![1.into(), 2.into(), 3.into()]),
        Err(bad_args("add takes 2 arguments, got 3"))
    );
    assert_eq!(
        call(&reg, "one", vec![]),
        Err(bad_args("one takes 1 argument, got 0"))
    );
    assert_eq!(
        call(&reg, "add", vec![1.into(), "x".into()]),
        Err(bad_args("add: argument 2: expected int, got str"))
    );
}

#[test]
fn raw_functions_get_the_arguments_as_is() {
    let mut reg = Registry::new();
    reg.register_raw("count_args", |args| Ok(Value::from(args.len())))
        .register_raw("nope", |_| Err("no".to_owned()));
    assert_eq!(
        call(&reg, "count_args", vec![Value::Null, "a".into()]),
        Ok(2.into())
    );
    assert_eq!(call(&reg, "nope", vec![]), Err(fail("no")));
}

#[test]
fn lookup_and_sorted_names() {
    let mut reg = Registry::new();
    reg.register("b", || 1i64).register("a", || 2i64);
    assert!(reg.contains("a") && !reg.contains("c"));
    assert!(reg.get("c").is_none());
    assert_eq!(reg.names(), vec!["a", "b"]);
    // Registering again replaces.
    reg.register("a", || 3i64);
    assert_eq!(call(&reg, "a", vec![]), Ok(3.into()));
    assert_eq!(reg.names().len(), 2);
}

#[test]
fn every_builtin_is_registered() {
    let reg = Registry::with_builtins();
    for name in [
        "inc",
        "add",
        "sub",
        "mul",
        "double",
        "neg",
        "sum",
        "length",
        "identity",
        "div",
        "truediv",
        "floordiv",
        "list",
        "fail",
        "slow_inc",
        "slow_add",
        "sleep",
        "range_list",
        "concat",
        "max",
        "min",
        "count",
        "slow_double",
        "take",
        "drop_nulls",
        "min_or_null",
        "max_or_null",
        "frequencies",
        "merge_frequencies",
        "mean_chunk",
        "mean_combine",
        "mean_finish",
    ] {
        assert!(reg.contains(name), "{name}");
    }
}

#[test]
fn arithmetic_keeps_ints_exact_and_promotes_to_float() {
    assert_eq!(ok("inc", vec![1.into()]), 2.into());
    assert_eq!(ok("inc", vec![1.5.into()]), 2.5.into());
    assert_eq!(ok("add", vec![2.into(), 3.into()]), 5.into());
    assert_eq!(ok("add", vec![2.into(), 0.5.into()]), 2.5.into());
    assert_eq!(ok("sub", vec![2.into(), 5.into()]), (-3).into());
    assert_eq!(ok("mul", vec![4.into(), 2.5.into()]), 10.0.into());
    assert_eq!(ok("double", vec![21.into()]), 42.into());
    assert_eq!(ok("neg", vec![7.into()]), (-7).into());
    assert_eq!(ok("neg", vec![(-0.5).into()]), 0.5.into());
    assert_eq!(ok("div", vec![7.into(), 2.into()]), 3.5.into());
    assert_eq!(ok("div", vec![4.into(), 2.into()]), 2.0.into());
}

#[test]
fn python_division_floors_and_true_divides_as_python_does() {
    assert_eq!(ok("truediv", vec![1.into(), 2.into()]), 0.5.into());
    assert_eq!(ok("truediv", vec![4.into(), 2.into()]), 2.0.into());
    assert_eq!(ok("floordiv", vec![7.into(), 2.into()]), 3.into());
    assert_eq!(ok("floordiv", vec![(-7).into(), 2.into()]), (-4).into());
    assert_eq!(ok("floordiv", vec![7.into(), (-2).into()]), (-4).into());
    assert_eq!(ok("floordiv", vec![(-6).into(), 2.into()]), (-3).into());
    assert_eq!(ok("floordiv", vec![7.5.into(), 2.into()]), 3.0.into());
    assert_eq!(ok("list", vec![vec![1, 2].into()]), Value::from(vec![1, 2]));
    // The message starts with the class Python raises; the legacy protocol maps it.
    let zero = |m: &str| fail(&format!("ZeroDivisionError: {m}"));
    assert_eq!(
        err("truediv", vec![1.into(), 0.into()]),
        zero("division by zero")
    );
    assert_eq!(
        err("truediv", vec![1.into(), 0.0.into()]),
        zero("float division by zero")
    );
    assert_eq!(
        err("floordiv", vec![1.into(), 0.into()]),
        zero("integer division or modulo by zero")
    );
    assert_eq!(
        err("floordiv", vec![1.5.into(), 0.into()]),
        zero("float divmod()")
    );
}

#[test]
fn arithmetic_errors() {
    let overflow = fail("integer overflow");
    assert_eq!(err("inc", vec![i64::MAX.into()]), overflow);
    assert_eq!(err("add", vec![i64::MAX.into(), 1.into()]), overflow);
    assert_eq!(err("sub", vec![i64::MIN.into(), 1.into()]), overflow);
    assert_eq!(err("mul", vec![i64::MAX.into(), 2.into()]), overflow);
    assert_eq!(err("double", vec![i64::MAX.into()]), overflow);
    assert_eq!(err("neg", vec![i64::MIN.into()]), overflow);
    let zero = fail("division by zero");
    assert_eq!(err("div", vec![1.into(), 0.into()]), zero);
    assert_eq!(err("div", vec![1.5.into(), 0.0.into()]), zero);
    assert_eq!(
        err("add", vec![1.into(), "x".into()]),
        bad_args("add: argument 2: expected number, got str")
    );
    assert_eq!(
        err("inc", vec![Value::Null]),
        bad_args("inc: argument 1: expected number, got null")
    );
    assert_eq!(
        err("neg", vec![true.into()]),
        bad_args("neg: argument 1: expected number, got bool")
    );
    assert_eq!(
        err("div", vec![vec![1].into(), 1.into()]),
        bad_args("div: argument 1: expected number, got list")
    );
    assert_eq!(
        err("inc", vec![1.into(), 2.into()]),
        bad_args("inc takes 1 argument, got 2")
    );
}

#[test]
fn sum_max_min() {
    assert_eq!(ok("sum", vec![ints(&[1, 2, 3])]), 6.into());
    assert_eq!(ok("sum", vec![ints(&[])]), 0.into());
    let mixed = Value::List(vec![1.into(), 0.5.into()]);
    assert_eq!(ok("sum", vec![mixed.clone()]), 1.5.into());
    assert_eq!(
        err("sum", vec![ints(&[i64::MAX, 1])]),
        fail("integer overflow")
    );
    assert_eq!(
        err("sum", vec![Value::List(vec![1.into(), "a".into()])]),
        bad_args("sum: argument 1: expected number, got str")
    );
    assert_eq!(
        err("sum", vec![1.into()]),
        bad_args("sum: argument 1: expected list, got int")
    );
    assert_eq!(ok("max", vec![ints(&[3, 9, 2])]), 9.into());
    assert_eq!(ok("min", vec![ints(&[3, 9, 2])]), 2.into());
    assert_eq!(ok("max", vec![mixed.clone()]), 1.into());
    assert_eq!(ok("min", vec![mixed]), 0.5.into());
    // Python keeps the first of equal elements.
    let tie = Value::List(vec![2.into(), 2.0.into()]);
    assert_eq!(ok("max", vec![tie]), 2.into());
    assert_eq!(
        err("max", vec![ints(&[])]),
        fail("max of an empty sequence")
    );
    assert_eq!(
        err("min", vec![ints(&[])]),
        fail("min of an empty sequence")
    );
}

#[test]
fn length_and_count() {
    assert_eq!(ok("length", vec![ints(&[1, 2, 3])]), 3.into());
    assert_eq!(ok("length", vec!["héllo".into()]), 5.into());
    assert_eq!(ok("length", vec![Value::Bytes(vec![0; 4])]), 4.into());
    let map = Value::map([("a", Value::Null), ("b", Value::Null)]);
    assert_eq!(ok("length", vec![map]), 2.into());
    assert_eq!(ok("count", vec![ints(&[1, 2])]), 2.into());
    assert_eq!(
        err("length", vec![1.into()]),
        bad_args("length: argument 1: expected list, str, bytes or map, got int")
    );
}

#[test]
fn identity_and_fail() {
    let v = Value::map([("k", ints(&[1]))]);
    assert_eq!(ok("identity", vec![v.clone()]), v);
    assert_eq!(err("fail", vec!["boom".into()]), fail("boom"));
    assert_eq!(err("fail", vec![3.into()]), fail("3"));
}

#[test]
fn sleeping_functions() {
    assert_eq!(ok("sleep", vec![0.01.into()]), Value::Null);
    assert_eq!(ok("sleep", vec![0.into()]), Value::Null);
    assert_eq!(ok("slow_inc", vec![1.into(), 0.01.into()]), 2.into());
    assert_eq!(ok("slow_add", vec![1.into(), 2.into(), 0.into()]), 3.into());
    let negative = bad_args(
        "sleep: argument 1: expected a non-negative number of seconds, \
         got a negative or non-finite number",
    );
    assert_eq!(err("sleep", vec![(-1.0).into()]), negative);
    assert_eq!(
        err("slow_inc", vec![1.into(), "x".into()]),
        bad_args("slow_inc: argument 2: expected float, got str")
    );
}

#[test]
fn test_functions_are_only_in_the_test_registry() {
    let stock = Registry::with_builtins();
    let test = Registry::with_test_functions();
    for name in [
        "exit_process",
        "counted_inc",
        "wait_for_file",
        "alloc",
        "fail_with_length",
    ] {
        assert!(!stock.contains(name), "{name} must be opt-in");
        assert!(test.contains(name), "{name}");
    }
    assert!(stock.names().iter().all(|n| test.contains(n)));
    let e = err("fail_with_length", vec![5.into()]);
    assert_eq!(e.message, "eeeee");
}

#[test]
fn counted_inc_appends_a_line_per_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("count");
    let p = Value::from(path.to_str().unwrap());
    assert_eq!(ok("counted_inc", vec![p.clone(), 1.into()]), 2.into());
    assert_eq!(ok("counted_inc", vec![p, 5.into()]), 6.into());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n5\n");
    let missing_dir = dir.path().join("no/such/dir");
    let e = err(
        "counted_inc",
        vec![missing_dir.to_str().unwrap().into(), 1.into()],
    );
    assert_eq!(e.kind, TaskErrorKind::Failed);
    assert!(e.message.starts_with("counted_inc: "), "{e}");
    assert_eq!(
        err("counted_inc", vec![1.into(), 1.into()]).kind,
        TaskErrorKind::BadArguments
    );
}

#[test]
fn wait_for_file_returns_once_the_file_exists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flag");
    let p = Value::from(path.to_str().unwrap());
    let waiter = std::thread::spawn(move || builtin("wait_for_file", vec![p]));
    std::thread::sleep(Duration::from_millis(30));
    std::fs::write(&path, b"").unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(true.into()));
}

#[test]
fn alloc_gives_zero_bytes() {
    assert_eq!(ok("alloc", vec![10.into()]), Value::Bytes(vec![0; 10]));
    assert_eq!(ok("alloc", vec![0.into()]), Value::Bytes(vec![]));
    assert_eq!(
        err("alloc", vec![(-1).into()]),
        bad_args("alloc: argument 1: expected usize, got int out of range")
    );
}

#[test]
fn range_list_and_concat() {
    assert_eq!(ok("range_list", vec![2.into(), 5.into()]), ints(&[2, 3, 4]));
    assert_eq!(ok("range_list", vec![5.into(), 2.into()]), ints(&[]));
    let lists = Value::List(vec![ints(&[1, 2]), ints(&[]), ints(&[3])]);
    assert_eq!(ok("concat", vec![lists]), ints(&[1, 2, 3]));
    assert_eq!(
        err("concat", vec![Value::List(vec![1.into()])]),
        bad_args("concat: argument 1: expected list, got int")
    );
}

#[test]
fn bag_builtins() {
    assert_eq!(ok("slow_double", vec![21.into(), 0.001.into()]), 42.into());
    assert_eq!(ok("slow_double", vec![1.5.into(), 0.into()]), 3.0.into());
    assert_eq!(ok("take", vec![2.into(), ints(&[5, 6, 7])]), ints(&[5, 6]));
    assert_eq!(ok("take", vec![9.into(), ints(&[5])]), ints(&[5]));
    assert_eq!(
        err("take", vec![(-1).into(), ints(&[])]).kind,
        TaskErrorKind::BadArguments
    );
    let with_nulls = Value::List(vec![Value::Null, 3.into(), Value::Null, 1.into()]);
    assert_eq!(ok("drop_nulls", vec![with_nulls.clone()]), ints(&[3, 1]));
    assert_eq!(ok("min_or_null", vec![with_nulls.clone()]), 1.into());
    assert_eq!(ok("max_or_null", vec![with_nulls]), 3.into());
    assert_eq!(ok("max_or_null", vec![ints(&[])]), Value::Null);
    assert_eq!(
        ok("min_or_null", vec![Value::List(vec![Value::Null])]),
        Value::Null
    );
    assert_eq!(
        err("max_or_null", vec![Value::List(vec!["a".into()])]).kind,
        TaskErrorKind::BadArguments
    );
}

#[test]
fn frequencies_count_in_first_seen_order_and_merge() {
    let items = Value::List(vec![
        "b".into(),
        "a".into(),
        "b".into(),
        1.into(),
        1.0.into(),
    ]);
    let pair = |item: Value, n: i64| Value::List(vec![item, n.into()]);
    let counted = ok("frequencies", vec![items]);
    assert_eq!(
        counted,
        Value::List(vec![
            pair("b".into(), 2),
            pair("a".into(), 1),
            pair(1.into(), 1),
            pair(1.0.into(), 1),
        ])
    );
    assert_eq!(ok("frequencies", vec![ints(&[])]), ints(&[]));
    let other = ok("frequencies", vec![Value::from(vec!["c", "a"])]);
    assert_eq!(
        ok("merge_frequencies", vec![Value::List(vec![counted, other])]),
        Value::List(vec![
            pair("b".into(), 2),
            pair("a".into(), 2),
            pair(1.into(), 1),
            pair(1.0.into(), 1),
            pair("c".into(), 1),
        ])
    );
    assert_eq!(
        err("merge_frequencies", vec![Value::List(vec![ints(&[1])])]),
        bad_args("merge_frequencies: argument 1: expected a pair (a list of 2), got int")
    );
}

#[test]
fn mean_in_chunks() {
    let a = ok("mean_chunk", vec![ints(&[1, 2, 3])]);
    assert_eq!(a, ints(&[6, 3]));
    let b = ok("mean_chunk", vec![Value::List(vec![0.5.into()])]);
    assert_eq!(b, Value::List(vec![0.5.into(), 1.into()]));
    let empty = ok("mean_chunk", vec![ints(&[])]);
    assert_eq!(empty, ints(&[0, 0]));
    let total = ok("mean_combine", vec![Value::List(vec![a, b, empty.clone()])]);
    assert_eq!(total, Value::List(vec![6.5.into(), 4.into()]));
    assert_eq!(ok("mean_finish", vec![total]), 1.625.into());
    assert_eq!(ok("mean_finish", vec![ints(&[3, 2])]), 1.5.into());
    assert_eq!(
        err("mean_finish", vec![empty]),
        fail("mean of an empty sequence")
    );
    assert_eq!(
        err("mean_combine", vec![Value::List(vec![ints(&[1, 2, 3])])]),
        bad_args(
            "mean_combine: argument 1: expected a pair (a list of 2), \
             got a list of another length"
        )
    );
    assert_eq!(
        err("mean_chunk", vec![ints(&[i64::MAX, 1])]),
        fail("integer overflow")
    );
}

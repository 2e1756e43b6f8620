//! The function registry: task functions looked up by name, typed registration, and the
//! built-ins the stock `zask-worker` offers.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::protocol::{TaskError, TaskErrorKind};
use crate::value::{Bytes, ConversionError, FromValue, Value};

/// A registered function, as the executor calls it.
pub type TaskFn = Arc<dyn Fn(Vec<Value>) -> Result<Value, TaskError> + Send + Sync>;

/// Task functions by name. Cloning is cheap: functions are shared.
#[derive(Clone, Default)]
pub struct Registry {
    functions: BTreeMap<String, TaskFn>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// A registry with every built-in function (what the stock `zask-worker` runs).
    pub fn with_builtins() -> Registry {
        let mut r = Registry::new();
        add_builtins(&mut r);
        r
    }

    /// The built-ins plus the test functions (`zask-worker --test-functions`): helpers for
    /// fault-injection tests and benchmarks that a production worker must not offer, because
    /// anyone who can submit a graph could call them: `exit_process(code)` ends the worker
    /// process, `counted_inc(path, x)` appends to any file, `wait_for_file(path)` blocks a
    /// thread until a file exists, `alloc(nbytes)` allocates any size, and
    /// `fail_with_length(n)` fails with an error text of `n` characters.
    pub fn with_test_functions() -> Registry {
        let mut r = Registry::with_builtins();
        add_test_functions(&mut r);
        r
    }

    /// Registers a typed function, replacing any of the same name:
    /// `registry.register("add", |a: i64, b: i64| a + b)`. Arguments are converted with
    /// `FromValue`; a wrong count or an unconvertible argument is a `BadArguments` error, and an
    /// `Err` returned by the function a `Failed` one.
    pub fn register<Args, F: IntoTaskFn<Args>>(&mut self, name: &str, f: F) -> &mut Self {
        self.functions.insert(name.to_owned(), f.into_task_fn(name));
        self
    }

    /// Registers an untyped function, which gets the argument list as is; its `Err` is a
    /// `Failed` error.
    pub fn register_raw(
        &mut self,
        name: &str,
        f: impl Fn(Vec<Value>) -> Result<Value, String> + Send + Sync + 'static,
    ) -> &mut Self {
        let f: TaskFn = Arc::new(move |args| f(args).map_err(failed));
        self.functions.insert(name.to_owned(), f);
        self
    }

    pub fn get(&self, name: &str) -> Option<&TaskFn> {
        self.functions.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.functions.contains_key(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.functions.keys().cloned().collect()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.functions.keys()).finish()
    }
}

/// A Rust function that can be registered as a task function; `Args` is the tuple of its
/// argument types, which only serves to tell the arities apart.
pub trait IntoTaskFn<Args> {
    fn into_task_fn(self, name: &str) -> TaskFn;
}

/// What a typed task function may return; `Err` carries the task's error message.
pub trait TaskOutput {
    fn into_task_result(self) -> Result<Value, String>;
}

// One impl per concrete type rather than a blanket `T: Into<Value>`: a blanket impl would
// overlap with the one for `Result`.
macro_rules! task_output_via_into {
    ($($t:ty),*) => {$(
        impl TaskOutput for $t {
            fn into_task_result(self) -> Result<Value, String> {
                Ok(self.into())
            }
        }
    )*};
}
task_output_via_into!(
    Value,
    i64,
    i32,
    u32,
    u64,
    usize,
    f64,
    bool,
    String,
    &'static str,
    (),
    Bytes
);

impl<T: Into<Value>> TaskOutput for Vec<T> {
    fn into_task_result(self) -> Result<Value, String> {
        Ok(self.into())
    }
}

impl<T: Into<Value>> TaskOutput for Option<T> {
    fn into_task_result(self) -> Result<Value, String> {
        Ok(self.into())
    }
}

impl<T: Into<Value>, E: fmt::Display> TaskOutput for Result<T, E> {
    fn into_task_result(self) -> Result<Value, String> {
        self.map(Into::into).map_err(|e| e.to_string())
    }
}

fn failed(message: String) -> TaskError {
    TaskError {
        kind: TaskErrorKind::Failed,
        message,
    }
}

fn bad_arguments(message: String) -> TaskError {
    TaskError {
        kind: TaskErrorKind::BadArguments,
        message,
    }
}

fn take_args<const N: usize>(name: &str, args: Vec<Value>) -> Result<[Value; N], TaskError> {
    <[Value; N]>::try_from(args).map_err(|args| {
        let plural = if N == 1 { "" } else { "s" };
        bad_arguments(format!(
            "{name} takes {N} argument{plural}, got {}",
            args.len()
        ))
    })
}

/// `position` counts from 1, as people do when reading an error.
fn convert<T: FromValue>(name: &str, position: usize, v: Value) -> Result<T, TaskError> {
    T::from_value(v).map_err(|e| bad_arguments(format!("{name}: argument {position}: {e}")))
}

macro_rules! impl_into_task_fn {
    ($n:literal $(; $ty:ident $arg:ident $pos:literal)*) => {
        impl<F, R, $($ty),*> IntoTaskFn<($($ty,)*)> for F
        where
            F: Fn($($ty),*) -> R + Send + Sync + 'static,
            R: TaskOutput,
            $($ty: FromValue,)*
        {
            fn into_task_fn(self, name: &str) -> TaskFn {
                let name = name.to_owned();
                Arc::new(move |args| {
                    let [$($arg),*] = take_args::<$n>(&name, args)?;
                    $(let $arg = convert::<$ty>(&name, $pos, $arg)?;)*
                    self($($arg),*).into_task_result().map_err(failed)
                })
            }
        }
    };
}
impl_into_task_fn!(0);
impl_into_task_fn!(1; A1 a1 1);
impl_into_task_fn!(2; A1 a1 1; A2 a2 2);
impl_into_task_fn!(3; A1 a1 1; A2 a2 2; A3 a3 3);
impl_into_task_fn!(4; A1 a1 1; A2 a2 2; A3 a3 3; A4 a4 4);
impl_into_task_fn!(5; A1 a1 1; A2 a2 2; A3 a3 3; A4 a4 4; A5 a5 5);
impl_into_task_fn!(6; A1 a1 1; A2 a2 2; A3 a3 3; A4 a4 4; A5 a5 5; A6 a6 6);

// ---- built-ins ----

/// A number argument of the arithmetic built-ins. Ints are kept apart from floats so that int
/// arithmetic stays exact; bools are not numbers here.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Num {
    Int(i64),
    Float(f64),
}

impl FromValue for Num {
    fn from_value(v: Value) -> Result<Self, ConversionError> {
        match v {
            Value::Int(i) => Ok(Num::Int(i)),
            Value::Float(x) => Ok(Num::Float(x)),
            other => Err(ConversionError {
                expected: "number",
                got: other.type_name(),
            }),
        }
    }
}

impl From<Num> for Value {
    fn from(n: Num) -> Value {
        match n {
            Num::Int(i) => Value::Int(i),
            Num::Float(x) => Value::Float(x),
        }
    }
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(x) => x,
        }
    }

    fn compare(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }
}

#[derive(Clone, Copy)]
struct BinOp {
    int: fn(i64, i64) -> Option<i64>,
    float: fn(f64, f64) -> f64,
}

const ADD: BinOp = BinOp {
    int: i64::checked_add,
    float: |a, b| a + b,
};
const SUB: BinOp = BinOp {
    int: i64::checked_sub,
    float: |a, b| a - b,
};
const MUL: BinOp = BinOp {
    int: i64::checked_mul,
    float: |a, b| a * b,
};

/// The one arithmetic rule of the built-ins: int op int stays int (and must not overflow),
/// anything with a float is float.
fn arith(op: BinOp, a: Num, b: Num) -> Result<Num, String> {
    match (a, b) {
        (Num::Int(a), Num::Int(b)) => (op.int)(a, b)
            .map(Num::Int)
            .ok_or_else(|| "integer overflow".to_owned()),
        (a, b) => Ok(Num::Float((op.float)(a.as_f64(), b.as_f64()))),
    }
}

/// The length of a list, str (in chars), bytes or map; taking it as an argument type makes a
/// value without a length a `BadArguments` error.
struct Length(usize);

impl FromValue for Length {
    fn from_value(v: Value) -> Result<Self, ConversionError> {
        match v {
            Value::List(l) => Ok(Length(l.len())),
            Value::Str(s) => Ok(Length(s.chars().count())),
            Value::Bytes(b) => Ok(Length(b.len())),
            Value::Map(m) => Ok(Length(m.len())),
            other => Err(ConversionError {
                expected: "list, str, bytes or map",
                got: other.type_name(),
            }),
        }
    }
}

/// A sleep length; `Duration` would panic on a negative or non-finite one.
struct Seconds(Duration);

impl FromValue for Seconds {
    fn from_value(v: Value) -> Result<Self, ConversionError> {
        let secs = f64::from_value(v)?;
        Duration::try_from_secs_f64(secs)
            .map(Seconds)
            .map_err(|_| ConversionError {
                expected: "a non-negative number of seconds",
                got: "a negative or non-finite number",
            })
    }
}

/// The first greatest (or least) element, as Python's `max` and `min` pick it.
fn extreme(name: &str, items: Vec<Num>, wanted: Ordering) -> Result<Num, String> {
    let mut items = items.into_iter();
    let first = items
        .next()
        .ok_or_else(|| format!("{name} of an empty sequence"))?;
    Ok(items.fold(first, |best, n| {
        if n.compare(best) == Some(wanted) {
            n
        } else {
            best
        }
    }))
}

fn add_builtins(r: &mut Registry) {
    for (name, op) in [("add", ADD), ("sub", SUB), ("mul", MUL)] {
        r.register(name, move |a: Num, b: Num| arith(op, a, b));
    }
    // neg as x * -1: it overflows exactly when negation does, and gives -0.0 for 0.0.
    for (name, op, operand) in [("inc", ADD, 1), ("double", MUL, 2), ("neg", MUL, -1)] {
        r.register(name, move |x: Num| arith(op, x, Num::Int(operand)));
    }
    r.register("div", |a: Num, b: Num| {
        if b.as_f64() == 0.0 {
            Err("division by zero")
        } else {
            Ok(a.as_f64() / b.as_f64())
        }
    });
    r.register("sum", |items: Vec<Num>| {
        items
            .into_iter()
            .try_fold(Num::Int(0), |total, n| arith(ADD, total, n))
    });
    r.register("max", |items: Vec<Num>| {
        extreme("max", items, Ordering::Greater)
    });
    r.register("min", |items: Vec<Num>| {
        extreme("min", items, Ordering::Less)
    });
    r.register("length", |x: Length| x.0);
    r.register("count", |x: Length| x.0);
    r.register("identity", |x: Value| x);
    r.register("fail", |msg: Value| -> Result<Value, String> {
        Err(match msg {
            Value::Str(s) => s,
            other => other.to_string(),
        })
    });
    r.register("sleep", |secs: Seconds| std::thread::sleep(secs.0));
    r.register("slow_inc", |x: Num, secs: Seconds| {
        std::thread::sleep(secs.0);
        arith(ADD, x, Num::Int(1))
    });
    r.register("slow_add", |x: Num, y: Num, secs: Seconds| {
        std::thread::sleep(secs.0);
        arith(ADD, x, y)
    });
    r.register("range_list", |start: i64, stop: i64| {
        (start..stop).collect::<Vec<i64>>()
    });
    r.register("concat", |lists: Vec<Vec<Value>>| {
        lists.into_iter().flatten().collect::<Vec<Value>>()
    });
    add_bag_builtins(r);
}

/// The test functions of `Registry::with_test_functions` (see there why they are opt-in).
fn add_test_functions(r: &mut Registry) {
    r.register("counted_inc", |path: String, x: Num| {
        // One append-mode write per call, so concurrent processes never interleave lines.
        let line = format!("{}\n", Value::from(x));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(line.as_bytes()))
            .map_err(|e| format!("counted_inc: {path}: {e}"))?;
        arith(ADD, x, Num::Int(1))
    });
    r.register("wait_for_file", |path: String| {
        while !Path::new(&path).exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    });
    r.register("exit_process", |code: i32| -> Value {
        std::process::exit(code)
    });
    r.register("alloc", |nbytes: usize| Bytes(vec![0; nbytes]));
    r.register("fail_with_length", |n: usize| -> Result<Value, String> {
        Err("e".repeat(n))
    });
}

/// The built-ins `zask::Bag` builds its graphs from (next to `map`, `filter` and `fold`, which
/// the executor handles itself, and `sum`, `count`, `concat`, `range_list`):
///
/// - `slow_double(x, secs)`: sleeps `secs` seconds, then returns `2 * x`.
/// - `take(n, list)`: the first `n` elements of `list` (all of them if it is shorter).
/// - `drop_nulls(list)`: `list` without its null elements.
/// - `min_or_null(list)`, `max_or_null(list)`: like `min` and `max`, but null elements are
///   skipped and an empty (or all-null) list gives null instead of an error, so that empty
///   partitions and their null results combine.
/// - `frequencies(list)`: `[[item, count], ...]`, each distinct item once, in first-seen order.
///   Items are the same when their msgpack encodings are (so `1` and `1.0` are different).
/// - `merge_frequencies(lists)`: adds up several `frequencies` results into one, in first-seen
///   order.
/// - `mean_chunk(list)`: `[sum, count]` of a list of numbers; `mean_combine(chunks)` adds a list
///   of such pairs into one pair; `mean_finish([sum, count])` is `sum / count` as a float (an
///   error when `count` is 0). Sums stay exact ints while every element is an int.
fn add_bag_builtins(r: &mut Registry) {
    r.register("slow_double", |x: Num, secs: Seconds| {
        std::thread::sleep(secs.0);
        arith(MUL, x, Num::Int(2))
    });
    r.register("take", |n: usize, list: Vec<Value>| {
        list.into_iter().take(n).collect::<Vec<Value>>()
    });
    r.register("drop_nulls", |list: Vec<Value>| {
        list.into_iter()
            .filter(|v| *v != Value::Null)
            .collect::<Vec<Value>>()
    });
    r.register("min_or_null", |items: Vec<Option<Num>>| {
        extreme_or_null(items, Ordering::Less)
    });
    r.register("max_or_null", |items: Vec<Option<Num>>| {
        extreme_or_null(items, Ordering::Greater)
    });
    r.register("frequencies", |items: Vec<Value>| {
        let mut counts = Frequencies::default();
        for item in items {
            counts.add(item, 1);
        }
        counts.into_value()
    });
    r.register("merge_frequencies", |lists: Vec<Vec<Pair<Value, i64>>>| {
        let mut counts = Frequencies::default();
        for Pair(item, n) in lists.into_iter().flatten() {
            counts.add(item, n);
        }
        counts.into_value()
    });
    r.register("mean_chunk", |items: Vec<Num>| -> Result<Value, String> {
        let sum = items
            .iter()
            .try_fold(Num::Int(0), |total, &n| arith(ADD, total, n))?;
        Ok(mean_pair(sum, items.len() as i64))
    });
    r.register(
        "mean_combine",
        |pairs: Vec<Pair<Num, i64>>| -> Result<Value, String> {
            let (sum, count) = pairs.into_iter().try_fold(
                (Num::Int(0), 0i64),
                |(sum, count), Pair(s, c)| -> Result<(Num, i64), String> {
                    let count = count
                        .checked_add(c)
                        .ok_or_else(|| "integer overflow".to_owned())?;
                    Ok((arith(ADD, sum, s)?, count))
                },
            )?;
            Ok(mean_pair(sum, count))
        },
    );
    r.register("mean_finish", |Pair(sum, count): Pair<Num, i64>| {
        if count == 0 {
            Err("mean of an empty sequence")
        } else {
            Ok(sum.as_f64() / count as f64)
        }
    });
}

fn mean_pair(sum: Num, count: i64) -> Value {
    Value::List(vec![sum.into(), count.into()])
}

/// A pair argument, given as a two-element list `[a, b]`.
struct Pair<A, B>(A, B);

impl<A: FromValue, B: FromValue> FromValue for Pair<A, B> {
    fn from_value(v: Value) -> Result<Self, ConversionError> {
        match v {
            Value::List(l) if l.len() == 2 => {
                let [a, b] = <[Value; 2]>::try_from(l).expect("length checked");
                Ok(Pair(A::from_value(a)?, B::from_value(b)?))
            }
            Value::List(_) => Err(ConversionError {
                expected: "a pair (a list of 2)",
                got: "a list of another length",
            }),
            other => Err(ConversionError {
                expected: "a pair (a list of 2)",
                got: other.type_name(),
            }),
        }
    }
}

/// Like `extreme`, but skipping nulls, and null for no numbers at all.
fn extreme_or_null(items: Vec<Option<Num>>, wanted: Ordering) -> Option<Num> {
    let numbers: Vec<Num> = items.into_iter().flatten().collect();
    extreme("", numbers, wanted).ok()
}

/// Counts of distinct items in first-seen order, the items told apart by their encoding.
#[derive(Default)]
struct Frequencies {
    index: HashMap<Vec<u8>, usize>,
    counts: Vec<(Value, i64)>,
}

impl Frequencies {
    fn add(&mut self, item: Value, n: i64) {
        let encoded = rmp_serde::to_vec(&item).expect("a value always encodes");
        match self.index.get(&encoded) {
            Some(&i) => self.counts[i].1 = self.counts[i].1.saturating_add(n),
            None => {
                self.index.insert(encoded, self.counts.len());
                self.counts.push((item, n));
            }
        }
    }

    fn into_value(self) -> Value {
        Value::List(
            self.counts
                .into_iter()
                .map(|(item, n)| Value::List(vec![item, n.into()]))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
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
}

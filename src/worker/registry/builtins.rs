//! The built-in task functions: arithmetic, lists and strings, the reductions `zask::Bag`
//! builds its graphs from, and the opt-in test functions (`Registry::with_test_functions`).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::*;

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

/// The prefix of an error message that Python raises as `ZeroDivisionError` (the legacy
/// protocol maps a message starting with `Class: ` to that exception class).
const ZERO_DIVISION: &str = "ZeroDivisionError: ";

/// Python's `a / b`.
fn py_truediv(a: Num, b: Num) -> Result<f64, String> {
    if b.as_f64() == 0.0 {
        let what = match (a, b) {
            (Num::Int(_), Num::Int(_)) => "division by zero",
            _ => "float division by zero",
        };
        return Err(format!("{ZERO_DIVISION}{what}"));
    }
    Ok(a.as_f64() / b.as_f64())
}

/// Python's `a // b`: int // int floors (towards negative infinity) and stays int; with a
/// float it is the floor of the float quotient.
fn py_floordiv(a: Num, b: Num) -> Result<Num, String> {
    match (a, b) {
        (Num::Int(_), Num::Int(0)) => {
            Err(format!("{ZERO_DIVISION}integer division or modulo by zero"))
        }
        (Num::Int(a), Num::Int(b)) => {
            let q = a
                .checked_div(b)
                .ok_or_else(|| "integer overflow".to_owned())?;
            Ok(Num::Int(if (a % b != 0) && ((a < 0) != (b < 0)) {
                q - 1
            } else {
                q
            }))
        }
        (_, b) if b.as_f64() == 0.0 => Err(format!("{ZERO_DIVISION}float divmod()")),
        (a, b) => Ok(Num::Float((a.as_f64() / b.as_f64()).floor())),
    }
}

pub(super) fn add_builtins(r: &mut Registry) {
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
    // Python's `/` and `//` (legacy `operator.truediv` / `floordiv`): `/` always gives a
    // float; `//` floors; dividing by zero fails with a message that starts with Python's
    // exception class, which the legacy protocol turns into that exception.
    r.register("truediv", |a: Num, b: Num| py_truediv(a, b));
    r.register("floordiv", |a: Num, b: Num| py_floordiv(a, b));
    // Python's `list(xs)`: a new list of the elements.
    r.register("list", |items: Vec<Value>| items);
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
    // Constant or linear time in their arguments, no sleep, no allocation beyond their
    // result: a worker may run them on its IO thread when their values are small.
    for name in [
        "add", "sub", "mul", "inc", "double", "neg", "div", "truediv", "floordiv", "list", "sum",
        "max", "min", "length", "count", "identity", "fail",
    ] {
        r.mark_cheap(name);
    }
}

/// `nbytes` bytes, byte `i` being `(i + seed) % 251`: the test function `pattern`, and
/// what a test checks a value read back against.
fn pattern(nbytes: usize, seed: u64) -> Vec<u8> {
    // One period, copied over and over: fast even in an unoptimised build.
    let period: Vec<u8> = (0..251u64)
        .map(|j| ((j + seed % 251) % 251) as u8)
        .collect();
    let mut bytes = Vec::with_capacity(nbytes);
    while bytes.len() + period.len() <= nbytes {
        bytes.extend_from_slice(&period);
    }
    bytes.extend_from_slice(&period[..nbytes - bytes.len()]);
    bytes
}

/// The test functions of `Registry::with_test_functions` (see there why they are opt-in).
pub(super) fn add_test_functions(r: &mut Registry) {
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
    r.register("pattern", |nbytes: usize, seed: u64| {
        Bytes(pattern(nbytes, seed))
    });
    r.register("hold", |nbytes: usize, secs: Seconds| {
        // Non-zero bytes: every page is written, so it is resident (zeroed pages may not be).
        let held = std::hint::black_box(vec![1u8; nbytes]);
        std::thread::sleep(secs.0);
        held.len() as i64
    });
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

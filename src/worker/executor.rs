//! The executor: a pool of threads that evaluate task expressions with registered functions.
//! A panic or an `Err` in a task becomes that task's error; the thread lives on. A task made
//! only of cheap calls (`Registry::mark_cheap`) on small values may instead run on the
//! calling thread (`Executor::run_inline`): two thread hand-offs cost more than it does.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::registry::Registry;
use crate::graph::{Expr, Key};
use crate::protocol::codec::encode_value;
use crate::protocol::{Frame, TaskError, TaskErrorKind};
use crate::value::Value;

/// One task to run, with its inputs already loaded.
pub struct Job {
    pub key: Key,
    pub expr: Expr,
    pub inputs: HashMap<Key, Value>,
}

/// The encoded result, or why there is none.
pub struct JobResult {
    pub key: Key,
    pub result: Result<Frame, TaskError>,
}

/// The most encoded bytes (spec plus inputs) of a task run on the worker's IO thread. Cheap
/// functions are at most linear in their arguments, so a task this small takes microseconds
/// there; anything bigger goes to the pool, which keeps the IO thread free for heartbeats
/// and peers.
pub const INLINE_BYTES_MAX: usize = 16 * 1024;

/// Whether every call in `expr` is to a function the registry marks cheap. The higher-order
/// built-ins (`map`, `filter`, `fold`) never are: their cost grows with what they apply.
pub fn is_cheap(expr: &Expr, registry: &Registry) -> bool {
    match expr {
        Expr::Lit(_) | Expr::Ref(_) => true,
        Expr::List(items) => items.iter().all(|e| is_cheap(e, registry)),
        Expr::Call(name, args) => {
            !higher_order::NAMES.contains(&name.as_str())
                && registry.is_cheap(name)
                && args.iter().all(|e| is_cheap(e, registry))
        }
    }
}

/// Evaluates an expression: literals as they are, references from `inputs`, lists element by
/// element, calls through `call` (the higher-order built-ins, else the registry).
pub fn evaluate(
    expr: &Expr,
    inputs: &HashMap<Key, Value>,
    registry: &Registry,
) -> Result<Value, TaskError> {
    eval(expr, &mut |k| inputs.get(k).cloned(), registry)
}

/// Like `evaluate`, consuming the inputs: each is moved, not copied, into its last use (a
/// large input is never duplicated to run a task).
pub fn evaluate_owned(
    expr: &Expr,
    mut inputs: HashMap<Key, Value>,
    registry: &Registry,
) -> Result<Value, TaskError> {
    let mut uses: HashMap<Key, usize> = HashMap::new();
    for k in expr.references() {
        *uses.entry(k.clone()).or_default() += 1;
    }
    let mut take = |k: &Key| {
        let left = uses.get_mut(k)?;
        *left -= 1;
        if *left == 0 {
            inputs.remove(k)
        } else {
            inputs.get(k).cloned()
        }
    };
    eval(expr, &mut take, registry)
}

fn eval(
    expr: &Expr,
    input: &mut dyn FnMut(&Key) -> Option<Value>,
    registry: &Registry,
) -> Result<Value, TaskError> {
    match expr {
        Expr::Lit(v) => Ok(v.clone()),
        Expr::Ref(k) => input(k).ok_or_else(|| TaskError {
            kind: TaskErrorKind::BadInput,
            message: format!("input {k:?} was not loaded"),
        }),
        Expr::List(items) => items
            .iter()
            .map(|e| eval(e, input, registry))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::List),
        Expr::Call(name, args) => {
            if !is_known(name, registry) {
                return Err(unknown_function(name));
            }
            let args = args
                .iter()
                .map(|e| eval(e, input, registry))
                .collect::<Result<Vec<_>, _>>()?;
            call(name, args, registry)
        }
    }
}

/// Calls a function by name on evaluated arguments: a higher-order built-in, else a
/// registered function (a panic in it becomes a `Panicked` error).
fn call(name: &str, args: Vec<Value>, registry: &Registry) -> Result<Value, TaskError> {
    match name {
        "map" => higher_order::map(args, registry),
        "filter" => higher_order::filter(args, registry),
        "fold" => higher_order::fold(args, registry),
        _ => {
            let f = registry.get(name).ok_or_else(|| unknown_function(name))?;
            match catch_unwind(AssertUnwindSafe(|| crate::fatal::in_task(|| f(args)))) {
                Ok(r) => r,
                Err(panic) => Err(TaskError {
                    kind: TaskErrorKind::Panicked,
                    message: format!("{name}: {}", panic_message(&panic)),
                }),
            }
        }
    }
}

fn is_known(name: &str, registry: &Registry) -> bool {
    higher_order::NAMES.contains(&name) || registry.contains(name)
}

fn unknown_function(name: &str) -> TaskError {
    TaskError {
        kind: TaskErrorKind::UnknownFunction,
        message: format!("no function named {name:?} is registered on this worker"),
    }
}

/// The higher-order built-ins `map`, `filter` and `fold`. They call other functions by name, so
/// they need the registry, which registered functions never see: `evaluate` handles them
/// itself, before the registry. Their names are reserved; a registered function of the same
/// name is never called. The function they apply may be any registered function or one of
/// these three.
///
/// - `map(f, list)` / `map(f, list, extra)`: `[f(x, *extra) for x in list]`, `extra` a list of
///   arguments appended to every call.
/// - `filter(f, list)`: the elements `x` of `list` for which `f(x)` is truthy (see `truthy`).
/// - `fold(f, list, initial)`: `f(...f(f(initial, x0), x1)..., xn)`. A null `initial` starts
///   from the first element instead; then an empty list folds to null.
///
/// A function name that is not known is an `UnknownFunction` error naming it, even for an empty
/// list. An error of an element's call keeps its kind and says which call and element failed,
/// e.g. `map(inc): element 2: inc: argument 1: expected number, got str`.
pub mod higher_order {
    use super::{call, is_known, unknown_function};
    use crate::protocol::{TaskError, TaskErrorKind};
    use crate::value::Value;
    use crate::worker::Registry;

    /// The names `evaluate` handles itself.
    pub const NAMES: [&str; 3] = ["map", "filter", "fold"];

    /// Python's truthiness: null, false, zero, and empty str, bytes, lists and maps are false;
    /// everything else (NaN included) is true.
    pub fn truthy(v: &Value) -> bool {
        match v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(x) => *x != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Bytes(b) => !b.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
        }
    }

    pub(super) fn map(args: Vec<Value>, registry: &Registry) -> Result<Value, TaskError> {
        let (f, list, extra) = match <[Value; 3]>::try_from(args) {
            Ok([f, list, extra]) => (f, list, extra),
            Err(args) => match <[Value; 2]>::try_from(args) {
                Ok([f, list]) => (f, list, Value::List(vec![])),
                Err(args) => return Err(arity("map", "2 or 3 arguments", args.len())),
            },
        };
        let f = function("map", f, registry)?;
        let list = list_arg("map", 2, list)?;
        let extra = list_arg("map", 3, extra)?;
        list.into_iter()
            .enumerate()
            .map(|(i, x)| {
                let mut args = Vec::with_capacity(1 + extra.len());
                args.push(x);
                args.extend(extra.iter().cloned());
                element_call("map", &f, i, args, registry)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::List)
    }

    pub(super) fn filter(args: Vec<Value>, registry: &Registry) -> Result<Value, TaskError> {
        let [f, list] =
            <[Value; 2]>::try_from(args).map_err(|a| arity("filter", "2 arguments", a.len()))?;
        let f = function("filter", f, registry)?;
        let mut kept = Vec::new();
        for (i, x) in list_arg("filter", 2, list)?.into_iter().enumerate() {
            if truthy(&element_call("filter", &f, i, vec![x.clone()], registry)?) {
                kept.push(x);
            }
        }
        Ok(Value::List(kept))
    }

    pub(super) fn fold(args: Vec<Value>, registry: &Registry) -> Result<Value, TaskError> {
        let [f, list, initial] =
            <[Value; 3]>::try_from(args).map_err(|a| arity("fold", "3 arguments", a.len()))?;
        let f = function("fold", f, registry)?;
        let mut items = list_arg("fold", 2, list)?.into_iter().enumerate();
        let mut acc = match initial {
            Value::Null => match items.next() {
                Some((_, first)) => first,
                None => return Ok(Value::Null),
            },
            initial => initial,
        };
        for (i, x) in items {
            acc = element_call("fold", &f, i, vec![acc, x], registry)?;
        }
        Ok(acc)
    }

    fn element_call(
        caller: &str,
        f: &str,
        i: usize,
        args: Vec<Value>,
        registry: &Registry,
    ) -> Result<Value, TaskError> {
        call(f, args, registry).map_err(|e| TaskError {
            kind: e.kind,
            message: format!("{caller}({f}): element {i}: {}", e.message),
        })
    }

    fn function(caller: &str, f: Value, registry: &Registry) -> Result<String, TaskError> {
        match f {
            Value::Str(name) if is_known(&name, registry) => Ok(name),
            Value::Str(name) => Err(TaskError {
                kind: TaskErrorKind::UnknownFunction,
                message: format!("{caller}: {}", unknown_function(&name).message),
            }),
            other => Err(bad_arguments(format!(
                "{caller}: argument 1: expected str (a function name), got {}",
                other.type_name()
            ))),
        }
    }

    fn list_arg(caller: &str, position: usize, v: Value) -> Result<Vec<Value>, TaskError> {
        match v {
            Value::List(l) => Ok(l),
            other => Err(bad_arguments(format!(
                "{caller}: argument {position}: expected list, got {}",
                other.type_name()
            ))),
        }
    }

    fn arity(caller: &str, takes: &str, got: usize) -> TaskError {
        bad_arguments(format!("{caller} takes {takes}, got {got}"))
    }

    fn bad_arguments(message: String) -> TaskError {
        TaskError {
            kind: TaskErrorKind::BadArguments,
            message,
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// The thread pool. Dropping the job sender ends the threads.
pub struct Executor {
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    /// For the jobs run on the caller's thread (`run_inline`).
    registry: Registry,
}

impl Executor {
    /// Starts `nthreads` threads; each result goes to `done`, then `notify` runs (to wake the
    /// worker's event loop).
    pub fn start(
        nthreads: usize,
        registry: Registry,
        done: Sender<JobResult>,
        notify: impl Fn() + Send + Clone + 'static,
    ) -> Executor {
        let (tx, rx): (Sender<Job>, Receiver<Job>) = crossbeam_channel::unbounded();
        let threads = (0..nthreads.max(1))
            .map(|i| {
                let rx = rx.clone();
                let registry = registry.clone();
                let done = done.clone();
                let notify = notify.clone();
                std::thread::Builder::new()
                    .name(format!("zask-exec-{i}"))
                    .spawn(move || {
                        crate::fatal::mark_service();
                        for job in rx {
                            let result = evaluate_owned(&job.expr, job.inputs, &registry)
                                .map(|v| encode_value(&v));
                            if done
                                .send(JobResult {
                                    key: job.key,
                                    result,
                                })
                                .is_err()
                            {
                                break;
                            }
                            notify();
                        }
                    })
                    .expect("spawning an executor thread")
            })
            .collect();
        Executor {
            jobs: Some(tx),
            threads,
            registry,
        }
    }

    /// Runs `job` on the calling thread and returns its result if it is cheap: `bytes`, its
    /// spec and inputs encoded, at most `INLINE_BYTES_MAX`, and every call cheap
    /// (`is_cheap`); otherwise gives it back untouched, for `submit`.
    // The error is the job itself, given back (moved, not copied): no boxing wanted.
    #[allow(clippy::result_large_err)]
    pub fn run_inline(&self, job: Job, bytes: usize) -> Result<JobResult, Job> {
        if bytes > INLINE_BYTES_MAX || !is_cheap(&job.expr, &self.registry) {
            return Err(job);
        }
        let result =
            evaluate_owned(&job.expr, job.inputs, &self.registry).map(|v| encode_value(&v));
        Ok(JobResult {
            key: job.key,
            result,
        })
    }

    pub fn submit(&self, job: Job) {
        if let Some(tx) = &self.jobs {
            // Only fails after shutdown, when results are no longer wanted.
            let _ = tx.send(job);
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.jobs.take();
        // Running tasks may be long; do not wait for them at shutdown.
        self.threads.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_nested_calls_lists_and_references() {
        let mut reg = Registry::new();
        reg.register("add", |a: i64, b: i64| a + b);
        let expr = Expr::Call(
            "add".into(),
            vec![
                Expr::Ref("x".into()),
                Expr::Call("add".into(), vec![Expr::Lit(1.into()), Expr::Lit(2.into())]),
            ],
        );
        let inputs = HashMap::from([(Key::from("x"), Value::from(10))]);
        assert_eq!(evaluate(&expr, &inputs, &reg), Ok(Value::from(13)));
        let list = Expr::List(vec![Expr::Ref("x".into()), Expr::Lit(Value::Null)]);
        assert_eq!(
            evaluate(&list, &inputs, &reg),
            Ok(Value::List(vec![Value::from(10), Value::Null]))
        );
    }

    #[test]
    fn panics_and_unknown_functions_become_task_errors() {
        let mut reg = Registry::new();
        reg.register("boom", || -> i64 { panic!("kaboom") });
        let err = evaluate(&Expr::Call("boom".into(), vec![]), &HashMap::new(), &reg).unwrap_err();
        assert_eq!(err.kind, TaskErrorKind::Panicked);
        assert!(err.message.contains("kaboom"));
        let err = evaluate(&Expr::Call("nope".into(), vec![]), &HashMap::new(), &reg).unwrap_err();
        assert_eq!(err.kind, TaskErrorKind::UnknownFunction);
        assert!(err.message.contains("\"nope\""));
    }

    fn lit(v: impl Into<Value>) -> Expr {
        Expr::Lit(v.into())
    }

    fn run(name: &str, args: Vec<Expr>) -> Result<Value, TaskError> {
        evaluate(
            &Expr::Call(name.into(), args),
            &HashMap::new(),
            &Registry::with_builtins(),
        )
    }

    #[test]
    fn map_applies_a_function_with_extra_arguments_to_each_element() {
        assert_eq!(
            run("map", vec![lit("inc"), lit(vec![1, 2, 3])]),
            Ok(Value::from(vec![2, 3, 4]))
        );
        assert_eq!(
            run("map", vec![lit("add"), lit(vec![1, 2]), lit(vec![10])]),
            Ok(Value::from(vec![11, 12]))
        );
        assert_eq!(
            run(
                "map",
                vec![lit("inc"), lit(Vec::<i64>::new()), lit(vec![0; 0])]
            ),
            Ok(Value::List(vec![]))
        );
        // The list may come from a reference and the function may be higher-order itself.
        let inputs = HashMap::from([(Key::from("xs"), Value::from(vec![vec![1, 2], vec![3]]))]);
        let nested = Expr::Call(
            "map".into(),
            vec![lit("map"), Expr::Ref("xs".into()), lit(vec!["double"])],
        );
        // map("map", [[1, 2], [3]], ["double"]) calls map([1, 2], "double"): argument order is
        // (element, *extra), so the element is taken for the function name and rejected.
        let err = evaluate(&nested, &inputs, &Registry::with_builtins()).unwrap_err();
        assert_eq!(err.kind, TaskErrorKind::BadArguments);
        assert!(
            err.message
                .starts_with("map(map): element 0: map: argument 1"),
            "{err}"
        );
        let sums = Expr::Call("map".into(), vec![lit("sum"), Expr::Ref("xs".into())]);
        assert_eq!(
            evaluate(&sums, &inputs, &Registry::with_builtins()),
            Ok(Value::from(vec![3, 3]))
        );
    }

    #[test]
    fn filter_keeps_truthy_results() {
        let mut reg = Registry::with_builtins();
        reg.register("is_even", |x: i64| x % 2 == 0);
        let expr = Expr::Call("filter".into(), vec![lit("is_even"), lit(vec![1, 2, 3, 4])]);
        assert_eq!(
            evaluate(&expr, &HashMap::new(), &reg),
            Ok(Value::from(vec![2, 4]))
        );
        // Truthiness as in Python: identity keeps the non-zero, non-empty, non-null elements.
        let mixed = Value::List(vec![
            0.into(),
            1.into(),
            0.0.into(),
            2.5.into(),
            "".into(),
            "a".into(),
            Value::Null,
            false.into(),
            true.into(),
            Value::List(vec![]),
            Value::from(vec![0]),
            Value::Map(vec![]),
            Value::Bytes(vec![]),
        ]);
        assert_eq!(
            run("filter", vec![lit("identity"), lit(mixed)]),
            Ok(Value::List(vec![
                1.into(),
                2.5.into(),
                "a".into(),
                true.into(),
                Value::from(vec![0])
            ]))
        );
    }

    #[test]
    fn fold_starts_from_initial_or_the_first_element() {
        assert_eq!(
            run("fold", vec![lit("add"), lit(vec![1, 2, 3]), lit(10)]),
            Ok(16.into())
        );
        assert_eq!(
            run(
                "fold",
                vec![lit("sub"), lit(vec![10, 2, 3]), lit(Value::Null)]
            ),
            Ok(5.into())
        );
        assert_eq!(
            run("fold", vec![lit("add"), lit(vec![0; 0]), lit(Value::Null)]),
            Ok(Value::Null)
        );
        assert_eq!(
            run("fold", vec![lit("add"), lit(vec![0; 0]), lit(7)]),
            Ok(7.into())
        );
    }

    #[test]
    fn higher_order_errors_name_the_function_and_element() {
        let err = run("map", vec![lit("nope"), lit(vec![0; 0])]).unwrap_err();
        assert_eq!(err.kind, TaskErrorKind::UnknownFunction);
        assert!(err.message.contains("\"nope\""), "{err}");
        let err = run("filter", vec![lit("nope"), lit(vec![1])]).unwrap_err();
        assert_eq!(err.kind, TaskErrorKind::UnknownFunction);
        let err = run("fold", vec![lit("nope"), lit(vec![1]), lit(0)]).unwrap_err();
        assert_eq!(err.kind, TaskErrorKind::UnknownFunction);
        let values = Value::List(vec![1.into(), "x".into()]);
        let err = run("map", vec![lit("inc"), lit(values)]).unwrap_err();
        assert_eq!(err.kind, TaskErrorKind::BadArguments);
        assert_eq!(
            err.message,
            "map(inc): element 1: inc: argument 1: expected number, got str"
        );
        let err = run("fold", vec![lit("div"), lit(vec![1, 0]), lit(Value::Null)]).unwrap_err();
        assert_eq!(err.kind, TaskErrorKind::Failed);
        assert_eq!(err.message, "fold(div): element 1: division by zero");
        let err = run("map", vec![lit("inc")]).unwrap_err();
        assert_eq!(err.message, "map takes 2 or 3 arguments, got 1");
        let err = run("filter", vec![lit(1), lit(vec![1])]).unwrap_err();
        assert_eq!(
            err.message,
            "filter: argument 1: expected str (a function name), got int"
        );
        let err = run("fold", vec![lit("add"), lit(1), lit(0)]).unwrap_err();
        assert_eq!(err.message, "fold: argument 2: expected list, got int");
        let mut reg = Registry::new();
        reg.register("boom", |_: i64| -> i64 { panic!("kaboom") });
        let expr = Expr::Call("map".into(), vec![lit("boom"), lit(vec![1])]);
        let err = evaluate(&expr, &HashMap::new(), &reg).unwrap_err();
        assert_eq!(err.kind, TaskErrorKind::Panicked);
        assert_eq!(err.message, "map(boom): element 0: boom: kaboom");
    }

    fn inline_pool() -> Executor {
        let (done, _) = crossbeam_channel::unbounded();
        let mut reg = Registry::with_builtins();
        reg.register("mine", |x: i64| x);
        Executor::start(1, reg, done, || {})
    }

    fn job(expr: Expr, inputs: HashMap<Key, Value>) -> Job {
        Job {
            key: "k".into(),
            expr,
            inputs,
        }
    }

    #[test]
    fn cheap_tasks_on_small_values_run_inline_and_the_rest_are_given_back() {
        let pool = inline_pool();
        let inc = Expr::Call("inc".into(), vec![Expr::Ref("x".into())]);
        let inputs = HashMap::from([(Key::from("x"), Value::from(41))]);
        let r = pool.run_inline(job(inc.clone(), inputs.clone()), 10).ok();
        let r = r.expect("inc on a small int runs inline");
        assert_eq!(r.key, Key::from("k"));
        assert_eq!(r.result, Ok(encode_value(&Value::from(42))));
        // Errors of a cheap function are the task's, as in the pool.
        let div = Expr::Call("div".into(), vec![lit(1), lit(0)]);
        let r = pool
            .run_inline(job(div, HashMap::new()), 10)
            .ok()
            .expect("inline");
        assert_eq!(r.result.unwrap_err().kind, TaskErrorKind::Failed);
        // Too many bytes, an unmarked function (a user's, a sleep), a higher-order built-in
        // or an unmarked call nested in a cheap one: back to the caller, for the pool.
        assert!(pool
            .run_inline(job(inc, inputs), INLINE_BYTES_MAX + 1)
            .is_err());
        for expr in [
            Expr::Call("mine".into(), vec![lit(1)]),
            Expr::Call("sleep".into(), vec![lit(0)]),
            Expr::Call("map".into(), vec![lit("inc"), lit(vec![1])]),
            Expr::Call("inc".into(), vec![Expr::Call("sleep".into(), vec![lit(0)])]),
            Expr::List(vec![Expr::Call("nope".into(), vec![])]),
        ] {
            let given_back = pool.run_inline(job(expr.clone(), HashMap::new()), 10);
            assert!(given_back.is_err(), "{expr:?} ran inline");
        }
    }

    #[test]
    fn a_cheap_function_registered_again_is_no_longer_cheap() {
        let mut reg = Registry::with_builtins();
        let inc = Expr::Call("inc".into(), vec![lit(1)]);
        assert!(is_cheap(&inc, &reg));
        reg.register("inc", |x: i64| x + 1);
        assert!(!is_cheap(&inc, &reg));
        reg.mark_cheap("inc");
        assert!(is_cheap(&inc, &reg));
        reg.mark_cheap("unknown");
        assert!(!reg.is_cheap("unknown"));
    }

    #[test]
    fn higher_order_names_are_reserved() {
        let mut reg = Registry::with_builtins();
        reg.register("map", |_: Value, _: Value| 0i64);
        let expr = Expr::Call("map".into(), vec![lit("inc"), lit(vec![1])]);
        assert_eq!(
            evaluate(&expr, &HashMap::new(), &reg),
            Ok(Value::from(vec![2]))
        );
    }
}

//! The executor: a pool of threads that evaluate task expressions with registered functions.
//! A panic or an `Err` in a task becomes that task's error; the thread lives on.

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

/// Evaluates an expression: literals as they are, references from `inputs`, lists element by
/// element, calls through the registry.
pub fn evaluate(
    expr: &Expr,
    inputs: &HashMap<Key, Value>,
    registry: &Registry,
) -> Result<Value, TaskError> {
    match expr {
        Expr::Lit(v) => Ok(v.clone()),
        Expr::Ref(k) => inputs.get(k).cloned().ok_or_else(|| TaskError {
            kind: TaskErrorKind::BadInput,
            message: format!("input {k:?} was not loaded"),
        }),
        Expr::List(items) => items
            .iter()
            .map(|e| evaluate(e, inputs, registry))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::List),
        Expr::Call(name, args) => {
            let f = registry.get(name).ok_or_else(|| TaskError {
                kind: TaskErrorKind::UnknownFunction,
                message: format!("no function named {name:?} is registered on this worker"),
            })?;
            let args = args
                .iter()
                .map(|e| evaluate(e, inputs, registry))
                .collect::<Result<Vec<_>, _>>()?;
            match catch_unwind(AssertUnwindSafe(|| f(args))) {
                Ok(r) => r,
                Err(panic) => Err(TaskError {
                    kind: TaskErrorKind::Panicked,
                    message: format!("{name}: {}", panic_message(&panic)),
                }),
            }
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
                        for job in rx {
                            let result = evaluate(&job.expr, &job.inputs, &registry)
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
        }
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
}

//! The function registry: task functions looked up by name and typed registration (argument
//! conversion, results, errors). The built-ins the stock `zask-worker` offers are in
//! `builtins.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use crate::protocol::{TaskError, TaskErrorKind};
use crate::value::{Bytes, ConversionError, FromValue, Value};

mod builtins;
#[cfg(test)]
mod tests;

use builtins::{add_builtins, add_test_functions};

/// A registered function, as the executor calls it.
pub type TaskFn = Arc<dyn Fn(Vec<Value>) -> Result<Value, TaskError> + Send + Sync>;

/// Task functions by name. Cloning is cheap: functions are shared.
#[derive(Clone, Default)]
pub struct Registry {
    functions: BTreeMap<String, TaskFn>,
    /// Functions known to return in microseconds on small arguments (`mark_cheap`).
    cheap: BTreeSet<String>,
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
    /// thread until a file exists, `alloc(nbytes)` allocates any size, `pattern(nbytes, seed)`
    /// makes `nbytes` bytes that depend on `seed` (byte `i` is `(i + seed) % 251`, so a
    /// value read back can be checked), `hold(nbytes, secs)` allocates `nbytes`, writes every
    /// one and holds them for `secs` seconds inside the task (it returns `nbytes`), and
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
        self.cheap.remove(name);
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
        self.cheap.remove(name);
        self.functions.insert(name.to_owned(), f);
        self
    }

    /// Registers an untyped function that says itself what kind of error it fails with.
    pub fn register_fn(
        &mut self,
        name: &str,
        f: impl Fn(Vec<Value>) -> Result<Value, TaskError> + Send + Sync + 'static,
    ) -> &mut Self {
        self.cheap.remove(name);
        self.functions.insert(name.to_owned(), Arc::new(f));
        self
    }

    /// Says that the function registered as `name` is cheap: on arguments of a few KiB it
    /// returns in microseconds, never blocks, sleeps or ends the process. A worker may then
    /// run a task made only of cheap calls on small values on its IO thread instead of
    /// handing it to a pool thread (`Executor::try_inline`). Registering `name` again
    /// clears the mark: a replacement is not known to be cheap. Unknown names are ignored.
    pub fn mark_cheap(&mut self, name: &str) -> &mut Self {
        if self.functions.contains_key(name) {
            self.cheap.insert(name.to_owned());
        }
        self
    }

    /// Whether `name` is registered and marked cheap (`mark_cheap`).
    pub fn is_cheap(&self, name: &str) -> bool {
        self.cheap.contains(name)
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

/// What a typed task function may return; an `Err` the function returns (any `Display`) is
/// the task's `Failed` error, its text the error's.
pub trait TaskOutput {
    fn into_task_result(self) -> Result<Value, TaskError>;
}

// One impl per concrete type rather than a blanket `T: Into<Value>`: a blanket impl would
// overlap with the one for `Result`.
macro_rules! task_output_via_into {
    ($($t:ty),*) => {$(
        impl TaskOutput for $t {
            fn into_task_result(self) -> Result<Value, TaskError> {
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
    fn into_task_result(self) -> Result<Value, TaskError> {
        Ok(self.into())
    }
}

impl<T: Into<Value>> TaskOutput for Option<T> {
    fn into_task_result(self) -> Result<Value, TaskError> {
        Ok(self.into())
    }
}

impl<T: Into<Value>, E: fmt::Display> TaskOutput for Result<T, E> {
    fn into_task_result(self) -> Result<Value, TaskError> {
        self.map(Into::into).map_err(|e| failed(e.to_string()))
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
                    self($($arg),*).into_task_result()
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

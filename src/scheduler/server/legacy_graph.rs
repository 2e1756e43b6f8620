//! A legacy (2015) graph as a native one (legacy-protocol.md §4.1), and native results as
//! legacy ones. The `schedule` payload is `{'dask': dict, 'keys': key | nested lists,
//! 'keep_results': bool}`; a value of `dask` is a task iff it is a tuple whose first element
//! is a callable; tasks nest, list arguments are walked, any other hashable argument equal to
//! a key of the dict is a dependency. A task runs natively when its callable is in
//! [`KNOWN_CALLABLES`], the one table from legacy globals to Zask built-ins, or is one of
//! the tasks dask.bag builds around them (`reify`, `map`/`filter` over a known function: the
//! executor's higher-order built-ins). Any other task (a lambda, a user's function, a literal
//! Zask's values cannot hold) becomes a [`PYTHON_TASK`] call restricted to workers that run
//! Python: its pickled tuple travels unchanged to a 2015 Python worker (through the bridge
//! the scheduler keeps for it, `legacy_workers.rs`), with the values of its dependencies.
//! Nothing here executes anything: callables are recognised by the globals the pickle names.

use std::collections::HashSet;

use zask_compat::pickle::{encode, Node, NodeId, Pickle};

use crate::graph::{Expr, Key, KeySpec};
use crate::protocol::{RequestError, TaskErrorKind, WorkerSelector};
use crate::value::Value;

/// Legacy callables the Rust workers have: `(module, name)` as the pickle names them (dill
/// names builtins through `_get_attr`/`_load_type`, which [`callable_of`] resolves to these)
/// → the Zask built-in with the same Python semantics (`src/worker/registry/builtins.rs`).
pub(crate) const KNOWN_CALLABLES: &[(&str, &str, &str)] = &[
    ("_operator", "add", "add"),
    ("operator", "add", "add"),
    ("_operator", "sub", "sub"),
    ("operator", "sub", "sub"),
    ("_operator", "mul", "mul"),
    ("operator", "mul", "mul"),
    ("_operator", "truediv", "truediv"),
    ("operator", "truediv", "truediv"),
    ("_operator", "floordiv", "floordiv"),
    ("operator", "floordiv", "floordiv"),
    ("_operator", "neg", "neg"),
    ("operator", "neg", "neg"),
    ("builtins", "sum", "sum"),
    ("builtins", "len", "length"),
    ("builtins", "max", "max"),
    ("builtins", "min", "min"),
    ("builtins", "list", "list"),
    // dask.bag's `count` reduction (`toolz.count`): the length of a partition.
    ("toolz.itertoolz", "count", "length"),
    ("toolz", "count", "length"),
];

/// dask.bag's `reify(seq)`: an iterator made a list. The partitions Zask computes are already
/// lists, so a `reify` of a `map`/`filter` is that call, and of anything else a `list` of it.
const REIFY: (&str, &str) = ("dask.bag.core", "reify");

/// Python's `map(f, seq)` and `filter(f, seq)` (dill names them `_load_type('map')`): the
/// executor's higher-order built-ins of the same names, over a known function.
const HIGHER_ORDER: &[&str] = &["map", "filter"];

/// Built-ins that take one list where Python also takes several arguments (`max(a, b)`).
const VARIADIC: &[&str] = &["max", "min"];

/// The task function of a task only Python can run, as the bridge to a 2015 Python worker
/// registers it. Its arguments: the task tuple as a standalone pickle, the task's key as one,
/// the keys of its dependencies as a list of such pickles, and the list of their values in
/// the same order (`Expr::Ref`s, so the scheduler and the workers see real dependencies).
pub(crate) const PYTHON_TASK: &str = "python";

/// How deep literals and nested tasks may go (the decoder bounds depth too, but a pickle can
/// hold cycles through its memo, which a tree walk must not follow forever).
const DEPTH_MAX: usize = 256;

/// A legacy graph in native form.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Translated {
    pub graph: Vec<(Key, Expr)>,
    /// Every requested key, in order, with repeats (`shape.flatten()`).
    pub outputs: Vec<Key>,
    /// The shape of the request's `keys`, which the result takes.
    pub shape: KeySpec,
    pub keep_results: bool,
    /// The tasks only Python can run, each restricted to workers that run Python.
    pub restrictions: Vec<(Key, Vec<WorkerSelector>)>,
}

/// Why a legacy graph cannot run here; each is raised by the client as the exception of
/// [`Refused::exception`]. The graph is at fault: sending it again unchanged cannot help.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refused {
    /// The payload is not `{'dask': dict, 'keys': ...}`.
    Malformed(String),
    /// A requested key is not in the graph (`KeyError('key')`, as the 2015 scheduler said).
    MissingKey(String),
    /// A task calls something only Python can run.
    NeedsPython { key: String, callable: String },
    /// A key or literal that Zask's values cannot hold (a set, a big int, an object...).
    NotRepresentable { key: String, what: String },
}

impl Refused {
    /// `(module, class, message)` of the exception the client raises.
    pub(crate) fn exception(&self) -> (&'static str, &'static str, String) {
        match self {
            Refused::Malformed(m) => ("builtins", "ValueError", m.clone()),
            Refused::MissingKey(k) => ("builtins", "KeyError", k.clone()),
            Refused::NeedsPython { key, callable } => (
                "builtins",
                "NotImplementedError",
                format!("task {key} calls {callable}, which only a Python worker can run"),
            ),
            Refused::NotRepresentable { key, what } => (
                "builtins",
                "NotImplementedError",
                format!(
                    "{key} holds {what}, which Zask's Rust workers cannot hold; \
                     not supported yet"
                ),
            ),
        }
    }
}

/// A callable as the pickle names it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Callable {
    /// `module.name`, a global Python imports by name.
    Global { module: String, name: String },
    /// Something built by value (a lambda, a user's function, a partial...), described.
    Other(String),
}

/// Whether the node is a callable, and which: a global; dill's `_get_attr(module, name)`,
/// `_getattr`, `_load_type(name)`; dill's `_create_function(...)` (a function pickled by
/// value); any other object built by a call (kept as "other": it may be callable, and it is
/// nothing Zask's values can hold either way). Plain data is not callable.
pub(crate) fn callable_of(p: &Pickle, id: NodeId) -> Option<Callable> {
    let global = |id: NodeId| match p.get(id)? {
        Node::Global { module, name } => Some((module.as_str(), name.as_str())),
        _ => None,
    };
    match p.get(id)? {
        Node::Global { module, name } => Some(Callable::Global {
            module: module.clone(),
            name: name.clone(),
        }),
        Node::Reduce { callable, args } => {
            let args = p.tuple_of(*args).unwrap_or(&[]);
            let helper = global(*callable).filter(|(m, _)| m.starts_with("dill"));
            let other = || {
                let what = match global(*callable) {
                    Some((m, n)) => format!("an object built by {m}.{n}"),
                    None => "a Python object built by a call".to_owned(),
                };
                Some(Callable::Other(what))
            };
            let Some((_, helper)) = helper else {
                return other();
            };
            match (helper, args) {
                ("_get_attr" | "_getattr", [obj, name]) => {
                    let module = p.str_of(*obj).map(str::to_owned).or_else(|| {
                        // `_import_module('_operator')`
                        let Node::Reduce { callable, args } = p.get(*obj)? else {
                            return None;
                        };
                        let (_, f) = global(*callable)?;
                        let [m] = p.tuple_of(*args)? else { return None };
                        (f == "_import_module").then(|| p.str_of(*m).map(str::to_owned))?
                    });
                    match (module, p.str_of(*name)) {
                        (Some(module), Some(name)) => Some(Callable::Global {
                            module,
                            name: name.to_owned(),
                        }),
                        _ => other(),
                    }
                }
                ("_load_type", [name]) => match p.str_of(*name) {
                    Some(name) => Some(Callable::Global {
                        module: "builtins".into(),
                        name: name.to_owned(),
                    }),
                    None => other(),
                },
                ("_create_function", [_, _, name, ..]) => {
                    Some(Callable::Other(match p.str_of(*name) {
                        Some("<lambda>") => "a lambda".to_owned(),
                        Some(n) => format!("the Python function '{n}'"),
                        None => "a Python function".to_owned(),
                    }))
                }
                _ => other(),
            }
        }
        Node::NewObj { .. } | Node::Build { .. } => {
            Some(Callable::Other("a Python object".to_owned()))
        }
        _ => None,
    }
}

impl Callable {
    fn describe(&self) -> String {
        match self {
            Callable::Global { module, name } => format!("{module}.{name}"),
            Callable::Other(what) => what.clone(),
        }
    }

    /// The Zask built-in it is, if the Rust workers have it.
    fn builtin(&self) -> Option<&'static str> {
        let Callable::Global { module, name } = self else {
            return None;
        };
        KNOWN_CALLABLES
            .iter()
            .find(|(m, n, _)| m == module && n == name)
            .map(|&(_, _, b)| b)
    }
}

/// Translates a legacy `schedule` payload.
pub(crate) fn translate(p: &Pickle) -> Result<Translated, Refused> {
    let field = |name: &str| p.dict_get(p.root, name);
    let dask = field("dask").ok_or_else(|| Refused::Malformed("no 'dask' graph".into()))?;
    let Some(Node::Dict(pairs)) = p.get(dask) else {
        return Err(Refused::Malformed("'dask' is not a dict".into()));
    };
    let keys = field("keys").ok_or_else(|| Refused::Malformed("no 'keys'".into()))?;
    let keep_results = matches!(
        field("keep_results").and_then(|id| p.get(id)),
        Some(Node::Bool(true))
    );
    let mut entries = Vec::with_capacity(pairs.len());
    for &(k, v) in pairs {
        let key = key_of(p, k, 0).ok_or_else(|| Refused::NotRepresentable {
            key: format!("key {}", p.render(k)),
            what: "a key that is not a str, an int or a tuple of them".into(),
        })?;
        entries.push((key, k, v));
    }
    let t = Translator {
        p,
        keys: entries.iter().map(|(k, _, _)| k.clone()).collect(),
    };
    let mut graph = Vec::with_capacity(entries.len());
    let mut restrictions = Vec::new();
    for (key, k, v) in entries {
        let name = || p.render(k);
        let expr = if t.is_task(v) {
            match t.task(v, &name, 0) {
                Ok(expr) => expr,
                // Python runs what the Rust workers cannot: the whole task goes, unchanged.
                Err(Refused::NeedsPython { .. } | Refused::NotRepresentable { .. }) => {
                    restrictions.push((key.clone(), vec![WorkerSelector::Python]));
                    t.python_task(k, v, &name)?
                }
                Err(other) => return Err(other),
            }
        } else {
            Expr::Lit(t.value(v, &name, 0)?)
        };
        graph.push((key, expr));
    }
    let shape = t.shape(keys, 0)?;
    Ok(Translated {
        graph,
        outputs: shape.flatten(),
        shape,
        keep_results,
        restrictions,
    })
}

/// Plain Python data (a 2015 Python worker's result) as a value: tuples become lists; sets,
/// big integers and objects are refused (`Refused::NotRepresentable`, naming `what`).
pub(crate) fn value_of(p: &Pickle, id: NodeId, what: &str) -> Result<Value, Refused> {
    let t = Translator {
        p,
        keys: HashSet::new(),
    };
    t.value(id, &|| what.to_owned(), 0)
}

/// A str, an int, or a tuple of them, as a key.
fn key_of(p: &Pickle, id: NodeId, depth: usize) -> Option<Key> {
    if depth > DEPTH_MAX {
        return None;
    }
    match p.get(id)? {
        Node::Str(s) => Some(Key::Str(s.clone())),
        Node::Int(i) => Some(Key::Int(*i)),
        Node::Tuple(items) => items
            .iter()
            .map(|&i| key_of(p, i, depth + 1))
            .collect::<Option<Vec<_>>>()
            .map(Key::Tuple),
        _ => None,
    }
}

struct Translator<'a> {
    p: &'a Pickle,
    keys: HashSet<Key>,
}

impl Translator<'_> {
    fn is_task(&self, id: NodeId) -> bool {
        matches!(self.p.tuple_of(id), Some([f, ..]) if callable_of(self.p, *f).is_some())
    }

    fn too_deep(&self, name: &dyn Fn() -> String) -> Refused {
        Refused::NotRepresentable {
            key: format!("task {}", name()),
            what: format!("a value nested deeper than {DEPTH_MAX} levels (or a cycle)"),
        }
    }

    /// A task (`is_task` holds) as a call of a built-in.
    fn task(&self, id: NodeId, name: &dyn Fn() -> String, depth: usize) -> Result<Expr, Refused> {
        if depth > DEPTH_MAX {
            return Err(self.too_deep(name));
        }
        let items = self.p.tuple_of(id).unwrap_or(&[]);
        let (&f, args) = items.split_first().expect("is_task: a non-empty tuple");
        let callable = callable_of(self.p, f).expect("is_task: the first item is callable");
        if let Some(expr) = self.bag_task(&callable, args, name, depth)? {
            return Ok(expr);
        }
        let builtin = callable.builtin().ok_or_else(|| Refused::NeedsPython {
            key: name(),
            callable: callable.describe(),
        })?;
        let mut args = args
            .iter()
            .map(|&a| self.arg(a, name, depth + 1))
            .collect::<Result<Vec<_>, _>>()?;
        if VARIADIC.contains(&builtin) && args.len() != 1 {
            args = vec![Expr::list(args)];
        }
        Ok(Expr::Call(builtin.to_owned(), args))
    }

    /// The tasks dask.bag builds around known functions: `reify(x)`, `map(f, seq)` and
    /// `filter(f, seq)` with `f` a known callable. None when the callable is none of these.
    fn bag_task(
        &self,
        callable: &Callable,
        args: &[NodeId],
        name: &dyn Fn() -> String,
        depth: usize,
    ) -> Result<Option<Expr>, Refused> {
        let Callable::Global { module, name: f } = callable else {
            return Ok(None);
        };
        if (module.as_str(), f.as_str()) == REIFY {
            let [seq] = args else {
                return Err(
                    self.needs_python(name, "dask.bag.core.reify with other than one argument")
                );
            };
            let seq = self.arg(*seq, name, depth + 1)?;
            let is_list = matches!(&seq, Expr::Call(g, _) if HIGHER_ORDER.contains(&g.as_str()));
            return Ok(Some(if is_list {
                seq
            } else {
                Expr::Call("list".to_owned(), vec![seq])
            }));
        }
        if module != "builtins" || !HIGHER_ORDER.contains(&f.as_str()) {
            return Ok(None);
        }
        let [g, seq] = args else {
            // map(f, a, b) zips several sequences, which the executor's map does not do.
            return Err(self.needs_python(name, &format!("builtins.{f} over several sequences")));
        };
        let function = match callable_of(self.p, *g) {
            Some(c) => c,
            None => {
                let what = format!("builtins.{f} of {}", self.p.render(*g));
                return Err(self.needs_python(name, &what));
            }
        };
        let Some(builtin) = function.builtin() else {
            return Err(Refused::NeedsPython {
                key: name(),
                callable: function.describe(),
            });
        };
        let seq = self.arg(*seq, name, depth + 1)?;
        Ok(Some(Expr::Call(
            f.clone(),
            vec![Expr::Lit(Value::Str(builtin.to_owned())), seq],
        )))
    }

    /// A task only Python can run, as a [`PYTHON_TASK`] call: its tuple and key as standalone
    /// pickles, and its dependencies (found as the 2015 worker finds them: the arguments of
    /// tasks, nested tasks and lists walked, any other argument equal to a key of the graph).
    fn python_task(
        &self,
        key: NodeId,
        task: NodeId,
        name: &dyn Fn() -> String,
    ) -> Result<Expr, Refused> {
        let standalone = |id: NodeId| {
            encode(self.p, id).map(Value::Bytes).map_err(|e| {
                Refused::Malformed(format!("task {} cannot be pickled again: {e}", name()))
            })
        };
        let mut dependencies: Vec<(Key, NodeId)> = Vec::new();
        let mut stack = vec![(task, 0usize)];
        while let Some((id, depth)) = stack.pop() {
            if depth > DEPTH_MAX {
                return Err(self.too_deep(name));
            }
            if self.is_task(id) {
                let items = self.p.tuple_of(id).unwrap_or(&[]);
                stack.extend(items[1..].iter().rev().map(|&a| (a, depth + 1)));
            } else if let Some(Node::List(items)) = self.p.get(id) {
                stack.extend(items.iter().rev().map(|&a| (a, depth + 1)));
            } else if let Some(k) = key_of(self.p, id, 0).filter(|k| self.keys.contains(k)) {
                if !dependencies.iter().any(|(d, _)| *d == k) {
                    dependencies.push((k, id));
                }
            }
        }
        let key_pickles = dependencies
            .iter()
            .map(|&(_, id)| standalone(id))
            .collect::<Result<Vec<_>, _>>()?;
        let values = dependencies
            .into_iter()
            .map(|(k, _)| Expr::Ref(k))
            .collect();
        Ok(Expr::Call(
            PYTHON_TASK.to_owned(),
            vec![
                Expr::Lit(standalone(task)?),
                Expr::Lit(standalone(key)?),
                Expr::Lit(Value::List(key_pickles)),
                Expr::list(values),
            ],
        ))
    }

    fn needs_python(&self, name: &dyn Fn() -> String, what: &str) -> Refused {
        Refused::NeedsPython {
            key: name(),
            callable: what.to_owned(),
        }
    }

    /// A task's argument: a nested task, a walked list, a dependency, or a literal.
    fn arg(&self, id: NodeId, name: &dyn Fn() -> String, depth: usize) -> Result<Expr, Refused> {
        if depth > DEPTH_MAX {
            return Err(self.too_deep(name));
        }
        if self.is_task(id) {
            return self.task(id, name, depth);
        }
        if let Some(Node::List(items)) = self.p.get(id) {
            return items
                .iter()
                .map(|&i| self.arg(i, name, depth + 1))
                .collect::<Result<Vec<_>, _>>()
                .map(Expr::list);
        }
        if let Some(k) = key_of(self.p, id, 0).filter(|k| self.keys.contains(k)) {
            return Ok(Expr::Ref(k));
        }
        self.value(id, name, depth).map(Expr::Lit)
    }

    /// Plain data as a value (tuples become lists).
    fn value(&self, id: NodeId, name: &dyn Fn() -> String, depth: usize) -> Result<Value, Refused> {
        if depth > DEPTH_MAX {
            return Err(self.too_deep(name));
        }
        let items = |ids: &[NodeId]| {
            ids.iter()
                .map(|&i| self.value(i, name, depth + 1))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match self.p.get(id) {
            Some(Node::None) => Value::Null,
            Some(Node::Bool(b)) => Value::Bool(*b),
            Some(Node::Int(i)) => Value::Int(*i),
            Some(Node::Float(x)) => Value::Float(*x),
            Some(Node::Str(s)) => Value::Str(s.clone()),
            Some(Node::Bytes(b)) => Value::Bytes(b.clone()),
            Some(Node::List(ids) | Node::Tuple(ids)) => Value::List(items(ids)?),
            Some(Node::Dict(pairs)) => Value::Map(
                pairs
                    .iter()
                    .map(|&(k, v)| {
                        Ok((
                            self.value(k, name, depth + 1)?,
                            self.value(v, name, depth + 1)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, Refused>>()?,
            ),
            other => {
                let what = match other {
                    Some(Node::BigInt(_)) => "an integer outside 64 bits".to_owned(),
                    Some(Node::Set(_) | Node::FrozenSet(_)) => "a set".to_owned(),
                    Some(Node::Reduce { callable, .. }) => match callable_of(self.p, *callable) {
                        Some(Callable::Global { module, name }) => {
                            format!("a {module}.{name} object")
                        }
                        _ => "a Python object".to_owned(),
                    },
                    _ => format!("the Python object {}", self.p.render(id)),
                };
                return Err(Refused::NotRepresentable {
                    key: format!("key {}", name()),
                    what,
                });
            }
        })
    }

    /// The requested keys' shape: a list is nested keys, anything else one key of the graph.
    fn shape(&self, id: NodeId, depth: usize) -> Result<KeySpec, Refused> {
        if depth > DEPTH_MAX {
            return Err(Refused::Malformed("'keys' nested too deep".into()));
        }
        if let Some(Node::List(items)) = self.p.get(id) {
            return items
                .iter()
                .map(|&i| self.shape(i, depth + 1))
                .collect::<Result<Vec<_>, _>>()
                .map(KeySpec::Many);
        }
        match key_of(self.p, id, 0) {
            Some(k) if self.keys.contains(&k) => Ok(KeySpec::One(k)),
            _ => Err(Refused::MissingKey(match self.p.get(id) {
                Some(Node::Str(s)) => s.clone(),
                _ => self.p.render(id),
            })),
        }
    }
}

/// A native value as a Python one (a map's list keys become tuples: Python keys are hashable).
pub(crate) fn add_value(p: &mut Pickle, v: &Value) -> NodeId {
    add_value_as(p, v, false)
}

fn add_value_as(p: &mut Pickle, v: &Value, hashable: bool) -> NodeId {
    let node = match v {
        Value::Null => Node::None,
        Value::Bool(b) => Node::Bool(*b),
        Value::Int(i) => Node::Int(*i),
        Value::Float(x) => Node::Float(*x),
        Value::Str(s) => Node::Str(s.clone()),
        Value::Bytes(b) => Node::Bytes(b.clone()),
        Value::List(items) => {
            let ids = items.iter().map(|x| add_value_as(p, x, hashable)).collect();
            if hashable {
                Node::Tuple(ids)
            } else {
                Node::List(ids)
            }
        }
        Value::Map(pairs) => Node::Dict(
            pairs
                .iter()
                .map(|(k, v)| (add_value_as(p, k, true), add_value_as(p, v, false)))
                .collect(),
        ),
    };
    p.add(node)
}

/// Results shaped like the request's keys: one value, or nested lists of them.
pub(crate) fn add_shaped(
    p: &mut Pickle,
    shape: &KeySpec,
    values: &mut impl Iterator<Item = Value>,
) -> NodeId {
    match shape {
        KeySpec::One(_) => {
            let v = values.next().unwrap_or(Value::Null);
            add_value(p, &v)
        }
        KeySpec::Many(items) => {
            let ids = items.iter().map(|s| add_shaped(p, s, values)).collect();
            p.add(Node::List(ids))
        }
    }
}

/// Python exception classes a built-in's error message may start with (`Class: message`).
/// A 2015 Python worker's task error arrives the same way (`legacy_workers.rs`).
const PYTHON_ERRORS: &[&str] = &[
    "ZeroDivisionError",
    "TypeError",
    "ValueError",
    "KeyError",
    "IndexError",
    "OverflowError",
    "AttributeError",
    "NameError",
    "AssertionError",
    "NotImplementedError",
    "RuntimeError",
    "ArithmeticError",
    "LookupError",
    "StopIteration",
    "FileNotFoundError",
    "OSError",
    "MemoryError",
    "RecursionError",
    "UnicodeDecodeError",
    "UnicodeEncodeError",
    "Exception",
];

/// The exception `(module, class, message)` a failed native request is raised as: a task's
/// error of a Python class where the built-in says so (`ZeroDivisionError: ...`), its
/// arguments not fitting as `TypeError` (as Python would), integer overflow as
/// `OverflowError`, no worker to run a task as `ValueError` (the 2015 scheduler's "No workers
/// found"); anything else a `RuntimeError` with Zask's message.
pub(crate) fn exception_of(error: &RequestError) -> (&'static str, &'static str, String) {
    if let RequestError::Task { error, .. } = error {
        if error.kind == TaskErrorKind::Failed {
            for class in PYTHON_ERRORS {
                if let Some(rest) = error
                    .message
                    .strip_prefix(class)
                    .and_then(|r| r.strip_prefix(": "))
                {
                    return ("builtins", class, rest.to_owned());
                }
            }
            if error.message == "integer overflow" {
                return ("builtins", "OverflowError", error.message.clone());
            }
        }
        if error.kind == TaskErrorKind::NoWorker {
            // What the 2015 scheduler raised when it had no worker for a graph.
            return ("builtins", "ValueError", error.to_string());
        }
        if error.kind == TaskErrorKind::BadArguments {
            return ("builtins", "TypeError", error.message.clone());
        }
    }
    ("builtins", "RuntimeError", error.to_string())
}

#[cfg(test)]
mod tests;

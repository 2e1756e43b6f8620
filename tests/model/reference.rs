//! The reference: the task functions, a plain evaluator of one client's graph, and the book of
//! named values that says which values a key name may refer to at a given moment.
//!
//! The semantics checked (see the brief in the model's main module): a task is its key *and*
//! its definition, so each graph gets its own definitions' values; a key a graph refers to but
//! does not define refers to the value *named* by that key when the submit is handled. Names are
//! set by scatter, keep_results and persist, and the exact moment a computed result becomes
//! named lies somewhere between the request being handled and its answer leaving the
//! scheduler, so the book tracks a *set* of values a name may hold, never a single guess.

use std::collections::{BTreeMap, BTreeSet};

use zask::graph::{Expr, Key};
use zask::Value;

/// The message of the one failing function, so an error can be told from any other.
pub const FAIL_MESSAGE: &str = "model failure";

/// The task functions of the model workers (and of the reference). Values are always ints or
/// lists of ints, so any other shape is a bug of the test itself, hence the panics.
pub fn apply(f: &str, args: Vec<Value>) -> Result<Value, String> {
    let int = |v: &Value| match v {
        Value::Int(i) => *i,
        other => panic!("model functions take ints, got {other:?}"),
    };
    match (f, args.as_slice()) {
        ("inc", [a]) => Ok(Value::Int(int(a).wrapping_add(1))),
        ("add", [a, b]) => Ok(Value::Int(int(a).wrapping_add(int(b)))),
        ("sum", [Value::List(xs)]) => Ok(Value::Int(xs.iter().map(int).fold(0, i64::wrapping_add))),
        ("fail", [_]) => Err(FAIL_MESSAGE.into()),
        _ => panic!("the model has no function {f} taking {args:?}"),
    }
}

#[derive(Debug)]
pub enum EvalError {
    /// The function failed.
    Failed(String),
    /// A reference with no value (a worker was not given a dependency).
    Unbound(Key),
}

/// Evaluates one task spec; `lookup` gives the value of each referenced key.
pub fn eval_expr(e: &Expr, lookup: &dyn Fn(&Key) -> Option<Value>) -> Result<Value, EvalError> {
    match e {
        Expr::Lit(v) => Ok(v.clone()),
        Expr::Ref(k) => lookup(k).ok_or_else(|| EvalError::Unbound(k.clone())),
        Expr::List(items) => items
            .iter()
            .map(|i| eval_expr(i, lookup))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::List),
        Expr::Call(f, args) => {
            let args = args
                .iter()
                .map(|a| eval_expr(a, lookup))
                .collect::<Result<Vec<_>, _>>()?;
            apply(f, args).map_err(EvalError::Failed)
        }
    }
}

/// What a name may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Named {
    Unnamed,
    /// `fragile`: lost for good with its holders: scattered data (no lineage), or computed
    /// from it.
    Value {
        value: i64,
        fragile: bool,
    },
}

/// A request that will name a key if it succeeds (a scatter, a keep_results submit, a
/// persist), between the moment it is handled and the moment its answer leaves.
#[derive(Debug)]
struct Writer {
    id: u64,
    values: BTreeSet<Named>,
    /// What else the name could have been set to after this writer set it: values of the
    /// writers active at some point of its interval, and `Unnamed` if a release came by.
    overlap: BTreeSet<Named>,
}

#[derive(Debug, Default)]
pub struct NameBook {
    /// The values each name may hold now; no entry means surely unnamed.
    names: BTreeMap<Key, BTreeSet<Named>>,
    active: BTreeMap<Key, Vec<Writer>>,
    next_writer: u64,
    /// Keys that named fragile values at some point: a loss of one may surface as
    /// `DataLost` (or `NotFound`) through anything that needs it.
    pub ever_fragile: BTreeSet<Key>,
}

impl NameBook {
    pub fn possible(&self, k: &Key) -> BTreeSet<Named> {
        self.names
            .get(k)
            .cloned()
            .unwrap_or_else(|| BTreeSet::from([Named::Unnamed]))
    }

    pub fn surely_unnamed(&self, k: &Key) -> bool {
        self.possible(k) == BTreeSet::from([Named::Unnamed])
    }

    pub fn maybe_unnamed(&self, k: &Key) -> bool {
        self.possible(k).contains(&Named::Unnamed)
    }

    /// A writer is handled: from now on the name may hold any of `values`. Returns its id.
    pub fn writer_started(&mut self, k: &Key, values: BTreeSet<Named>) -> u64 {
        self.next_writer += 1;
        let id = self.next_writer;
        if values
            .iter()
            .any(|v| matches!(v, Named::Value { fragile: true, .. }))
        {
            self.ever_fragile.insert(k.clone());
        }
        let names = self
            .names
            .entry(k.clone())
            .or_insert_with(|| BTreeSet::from([Named::Unnamed]));
        names.extend(values.iter().copied());
        let active = self.active.entry(k.clone()).or_default();
        let mut overlap = BTreeSet::new();
        for w in active.iter_mut() {
            w.overlap.extend(values.iter().copied());
            overlap.extend(w.values.iter().copied());
        }
        active.push(Writer {
            id,
            values,
            overlap,
        });
        id
    }

    /// A writer's answer left: the name was set to one of `values` at some point, so now it
    /// holds that or what an overlapping writer or release did after.
    pub fn writer_succeeded(&mut self, k: &Key, id: u64, values: Option<BTreeSet<Named>>) {
        let Some(w) = self.take_writer(k, id) else {
            return; // a restart came by: it names nothing any more
        };
        let mut now = values.unwrap_or(w.values);
        now.extend(w.overlap);
        self.names.insert(k.clone(), now);
    }

    /// A writer failed or ended: it may or may not have named; its values stay possible.
    pub fn writer_ended(&mut self, k: &Key, id: u64) {
        self.take_writer(k, id);
    }

    fn take_writer(&mut self, k: &Key, id: u64) -> Option<Writer> {
        let active = self.active.get_mut(k)?;
        let pos = active.iter().position(|w| w.id == id)?;
        Some(active.remove(pos))
    }

    /// `Release(k)` handled: unnamed, unless a writer in flight names it again.
    pub fn released(&mut self, k: &Key) {
        let mut now = BTreeSet::from([Named::Unnamed]);
        for w in self.active.get_mut(k).into_iter().flatten() {
            w.overlap.insert(Named::Unnamed);
            now.extend(w.values.iter().copied());
        }
        self.names.insert(k.clone(), now);
    }

    /// `Restart` handled: every name and every writer in flight is gone.
    pub fn restart(&mut self) {
        self.names.clear();
        self.active.clear();
    }
}

/// The answers allowed for a graph's outputs, over every value its references may take.
#[derive(Debug, Default)]
pub struct Expected {
    /// The allowed value vectors, in output order.
    pub values: BTreeSet<Vec<i64>>,
    /// The possible value of each distinct output (what a keep/persist names).
    pub per_output: BTreeMap<Key, BTreeSet<i64>>,
    /// A `Graph(MissingKey)` error may name these.
    pub missing: BTreeSet<Key>,
    /// A task error (the failing function) may name these: keys that fail, directly or
    /// through a dependency.
    pub failed: BTreeSet<Key>,
    /// The graph uses a fragile named value: its results are fragile too.
    pub fragile: bool,
}

/// Beyond this many combinations of referenced names the test is too loose to mean much; the
/// key pool keeps it far below.
const COMBINATIONS_MAX: usize = 4096;

/// The reference answer for `outputs` of `graph`, with keys it does not define taken from the
/// names in `book` as they are now.
pub fn expect_graph(graph: &[(Key, Expr)], outputs: &[Key], book: &NameBook) -> Expected {
    let defs: BTreeMap<&Key, &Expr> = graph.iter().map(|(k, e)| (k, e)).collect();
    let mut externals = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&Key> = outputs.iter().collect();
    while let Some(k) = stack.pop() {
        if !seen.insert(k.clone()) {
            continue;
        }
        match defs.get(k) {
            Some(e) => stack.extend(e.references()),
            None => {
                externals.insert(k.clone());
            }
        }
    }
    let options: Vec<(Key, Vec<Named>)> = externals
        .into_iter()
        .map(|k| {
            let o = book.possible(&k).into_iter().collect();
            (k, o)
        })
        .collect();
    let fragile = options.iter().any(|(_, o)| {
        o.iter()
            .any(|n| matches!(n, Named::Value { fragile: true, .. }))
    });
    let total: usize = options.iter().map(|(_, o)| o.len()).product();
    assert!(
        total <= COMBINATIONS_MAX,
        "{total} combinations of named values: the workload is too loose"
    );
    let mut out = Expected {
        fragile,
        ..Expected::default()
    };
    for mut index in 0..total {
        let mut bound = BTreeMap::new();
        let mut unnamed = Vec::new();
        for (k, o) in &options {
            match o[index % o.len()] {
                Named::Unnamed => unnamed.push(k.clone()),
                Named::Value { value, .. } => {
                    bound.insert(k.clone(), value);
                }
            }
            index /= o.len();
        }
        if !unnamed.is_empty() {
            out.missing.extend(unnamed);
            continue;
        }
        let mut memo = BTreeMap::new();
        let results: Vec<Option<Value>> = outputs
            .iter()
            .map(|k| eval_key(k, &defs, &bound, &mut memo))
            .collect();
        for (k, v) in &memo {
            if v.is_none() && defs.contains_key(k) {
                out.failed.insert(k.clone());
            }
        }
        if results.iter().all(Option::is_some) {
            let ints: Vec<i64> = results
                .into_iter()
                .map(|v| match v {
                    Some(Value::Int(i)) => i,
                    other => panic!("outputs are ints, got {other:?}"),
                })
                .collect();
            for (k, v) in outputs.iter().zip(&ints) {
                out.per_output.entry(k.clone()).or_default().insert(*v);
            }
            out.values.insert(ints);
        }
    }
    out
}

/// The value of `k` (None: it failed), memoised.
fn eval_key(
    k: &Key,
    defs: &BTreeMap<&Key, &Expr>,
    bound: &BTreeMap<Key, i64>,
    memo: &mut BTreeMap<Key, Option<Value>>,
) -> Option<Value> {
    if let Some(v) = memo.get(k) {
        return v.clone();
    }
    let result = match defs.get(k) {
        None => Some(Value::Int(bound[k])),
        Some(e) => {
            let mut inputs = BTreeMap::new();
            let mut ok = true;
            for r in e.references() {
                match eval_key(r, defs, bound, memo) {
                    Some(v) => {
                        inputs.insert(r.clone(), v);
                    }
                    None => ok = false,
                }
            }
            if ok {
                match eval_expr(e, &|r| inputs.get(r).cloned()) {
                    Ok(v) => Some(v),
                    Err(EvalError::Failed(_)) => None,
                    Err(EvalError::Unbound(r)) => panic!("reference {r:?} evaluated above"),
                }
            } else {
                None
            }
        }
    };
    memo.insert(k.clone(), result.clone());
    result
}

/// Does this graph refer around in a loop (among the keys it defines)?
pub fn has_cycle(graph: &[(Key, Expr)]) -> bool {
    let defs: BTreeMap<&Key, &Expr> = graph.iter().map(|(k, e)| (k, e)).collect();
    // 0 unvisited, 1 on the stack, 2 done
    fn visit<'a>(
        k: &'a Key,
        defs: &BTreeMap<&'a Key, &'a Expr>,
        mark: &mut BTreeMap<&'a Key, u8>,
    ) -> bool {
        match mark.get(k) {
            Some(1) => return true,
            Some(2) => return false,
            _ => {}
        }
        mark.insert(k, 1);
        if let Some(e) = defs.get(k) {
            for r in e.references() {
                if defs.contains_key(r) && visit(r, defs, mark) {
                    return true;
                }
            }
        }
        mark.insert(k, 2);
        false
    }
    let mut mark = BTreeMap::new();
    graph.iter().any(|(k, _)| visit(k, &defs, &mut mark))
}

//! The graph model: what users write (`Graph` of `Node`s, the `graph!` macro), what travels to the
//! scheduler and workers (`Expr`, with every reference made explicit), and the checks every
//! submission passes (culling to the requested keys, missing keys, cycles).

pub mod json;
mod key;
pub mod tokenize;

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

pub use key::{Key, KeySpec};

use crate::value::Value;

/// A graph entry as a user writes it, before key names are resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// A literal. A string that names a key of the graph is a reference to it, and lists are
    /// traversed for such strings, as in dask.
    Value(Value),
    /// `(function, args...)`.
    Task(String, Vec<Node>),
    /// A list whose elements are resolved one by one.
    List(Vec<Node>),
    /// An explicit reference, e.g. to a tuple key or to data that is not in this graph.
    Ref(Key),
    /// A value that stays literal even if it names a key.
    Quoted(Value),
}

/// An explicit reference to a key.
pub fn key(k: impl Into<Key>) -> Node {
    Node::Ref(k.into())
}

/// A value that is never taken for a key name.
pub fn literal(v: impl Into<Value>) -> Node {
    Node::Quoted(v.into())
}

/// A task node: `task("add", ["x".into(), 2.into()])`.
pub fn task(function: &str, args: impl IntoIterator<Item = Node>) -> Node {
    Node::Task(function.to_owned(), args.into_iter().collect())
}

impl From<Value> for Node {
    fn from(v: Value) -> Node {
        Node::Value(v)
    }
}

macro_rules! node_from_value {
    ($($t:ty),*) => {$(
        impl From<$t> for Node {
            fn from(v: $t) -> Node { Node::Value(v.into()) }
        }
    )*};
}
node_from_value!(i32, i64, u32, u64, usize, f64, bool, &str, String, ());

impl<T: Into<Node>> From<Vec<T>> for Node {
    fn from(v: Vec<T>) -> Node {
        Node::List(v.into_iter().map(Into::into).collect())
    }
}

macro_rules! node_from_task_tuple {
    ($($a:ident),*) => {
        #[allow(non_snake_case)]
        impl<$($a: Into<Node>),*> From<(&str, $($a,)*)> for Node {
            fn from((f, $($a,)*): (&str, $($a,)*)) -> Node {
                Node::Task(f.to_owned(), vec![$($a.into()),*])
            }
        }
    };
}
node_from_task_tuple!();
node_from_task_tuple!(A);
node_from_task_tuple!(A, B);
node_from_task_tuple!(A, B, C);
node_from_task_tuple!(A, B, C, D);
node_from_task_tuple!(A, B, C, D, E);
node_from_task_tuple!(A, B, C, D, E, F);
node_from_task_tuple!(A, B, C, D, E, F, G);

/// A task graph: keys mapped to nodes, in insertion order. Build it with `graph!` or `insert`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    entries: Vec<(Key, Node)>,
    index: HashMap<Key, usize>,
}

/// Builds a `Graph` the way the 2015 seed writes a Python dict:
/// `graph! { "x" => 1, "y" => ("add", "x", 2) }`.
#[macro_export]
macro_rules! graph {
    ($($k:expr => $v:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut g = $crate::graph::Graph::new();
        $( g.insert($k, $v); )*
        g
    }};
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Adds or replaces an entry.
    pub fn insert(&mut self, k: impl Into<Key>, node: impl Into<Node>) {
        let k = k.into();
        let node = node.into();
        match self.index.get(&k) {
            Some(&i) => self.entries[i].1 = node,
            None => {
                self.index.insert(k.clone(), self.entries.len());
                self.entries.push((k, node));
            }
        }
    }

    pub fn get(&self, k: &Key) -> Option<&Node> {
        self.index.get(k).map(|&i| &self.entries[i].1)
    }

    pub fn contains(&self, k: &Key) -> bool {
        self.index.contains_key(k)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Node)> {
        self.entries.iter().map(|(k, n)| (k, n))
    }

    /// Adds every entry of `other`, replacing entries with the same key.
    pub fn extend(&mut self, other: &Graph) {
        for (k, n) in other.iter() {
            self.insert(k.clone(), n.clone());
        }
    }

    /// Makes every reference explicit. A string (or a task-shaped tuple) is a reference when it
    /// names a key of this graph or a key for which `known_elsewhere` says yes (data already on
    /// the cluster, e.g. scattered by this client).
    pub fn resolve(&self, known_elsewhere: &dyn Fn(&Key) -> bool) -> Vec<(Key, Expr)> {
        let is_key = |k: &Key| self.contains(k) || known_elsewhere(k);
        self.entries
            .iter()
            .map(|(k, n)| (k.clone(), resolve_node(n, &is_key)))
            .collect()
    }
}

impl<K: Into<Key>, N: Into<Node>> FromIterator<(K, N)> for Graph {
    fn from_iter<I: IntoIterator<Item = (K, N)>>(iter: I) -> Graph {
        let mut g = Graph::new();
        for (k, n) in iter {
            g.insert(k, n);
        }
        g
    }
}

fn resolve_node(node: &Node, is_key: &dyn Fn(&Key) -> bool) -> Expr {
    match node {
        Node::Value(v) => resolve_value(v, is_key),
        Node::Quoted(v) => Expr::Lit(v.clone()),
        Node::Ref(k) => Expr::Ref(k.clone()),
        Node::List(items) => Expr::list(items.iter().map(|n| resolve_node(n, is_key)).collect()),
        Node::Task(f, args) => {
            // dask checks "is it a key?" before "is it a task?": ("x", 1) names a tuple key
            // when the graph has one.
            if let Some(k) = tuple_key(f, args) {
                if is_key(&k) {
                    return Expr::Ref(k);
                }
            }
            Expr::Call(
                f.clone(),
                args.iter().map(|n| resolve_node(n, is_key)).collect(),
            )
        }
    }
}

fn tuple_key(f: &str, args: &[Node]) -> Option<Key> {
    let mut parts = vec![Key::Str(f.to_owned())];
    for a in args {
        match a {
            Node::Value(Value::Str(s)) => parts.push(Key::Str(s.clone())),
            Node::Value(Value::Int(i)) => parts.push(Key::Int(*i)),
            _ => return None,
        }
    }
    Some(Key::Tuple(parts))
}

fn resolve_value(v: &Value, is_key: &dyn Fn(&Key) -> bool) -> Expr {
    match v {
        Value::Str(s) => {
            let k = Key::Str(s.clone());
            if is_key(&k) {
                Expr::Ref(k)
            } else {
                Expr::Lit(v.clone())
            }
        }
        Value::List(items) => Expr::list(items.iter().map(|i| resolve_value(i, is_key)).collect()),
        other => Expr::Lit(other.clone()),
    }
}

/// A graph entry with every reference explicit: what the scheduler checks and workers evaluate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    Lit(Value),
    Ref(Key),
    Call(String, Vec<Expr>),
    List(Vec<Expr>),
}

impl Expr {
    /// A list of expressions; folded into one literal when nothing inside refers to a key, which
    /// keeps big literal lists compact on the wire.
    pub fn list(items: Vec<Expr>) -> Expr {
        if items.iter().all(|e| matches!(e, Expr::Lit(_))) {
            Expr::Lit(Value::List(
                items
                    .into_iter()
                    .map(|e| match e {
                        Expr::Lit(v) => v,
                        _ => unreachable!("checked above"),
                    })
                    .collect(),
            ))
        } else {
            Expr::List(items)
        }
    }

    /// Every reference in this expression, with repeats, in evaluation order.
    pub fn references(&self) -> Vec<&Key> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            match e {
                Expr::Lit(_) => {}
                Expr::Ref(k) => out.push(k),
                Expr::Call(_, args) | Expr::List(args) => stack.extend(args.iter().rev()),
            }
        }
        out
    }

    /// Every key this expression refers to, each once, in first-seen order.
    pub fn dependencies(&self) -> Vec<Key> {
        let mut seen = HashSet::new();
        self.references()
            .into_iter()
            .filter(|k| seen.insert(*k))
            .cloned()
            .collect()
    }
}

/// Why a submitted graph cannot run. Returned before anything runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum GraphError {
    /// A requested key, or a key some task refers to, is neither in the graph nor on the cluster.
    MissingKey { key: Key, needed_by: Option<Key> },
    /// The graph refers back to itself; `cycle` lists the keys around the loop.
    Cycle { cycle: Vec<Key> },
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphError::MissingKey {
                key,
                needed_by: Some(by),
            } => write!(
                f,
                "missing key {key:?}: task {by:?} needs it but it is not in the graph nor on the cluster"
            ),
            GraphError::MissingKey {
                key,
                needed_by: None,
            } => write!(
                f,
                "missing key {key:?}: it was requested but is not in the graph nor on the cluster"
            ),
            GraphError::Cycle { cycle } => {
                write!(f, "cycle in graph: ")?;
                for k in cycle {
                    write!(f, "{k:?} -> ")?;
                }
                match cycle.first() {
                    Some(k) => write!(f, "{k:?}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for GraphError {}

/// Culls `graph` to what `outputs` need and orders it so dependencies come first.
/// Keys that are not in `graph` but for which `on_cluster` says yes end the walk (their data or
/// task is already known). Missing keys and cycles are errors naming the keys.
pub fn cull<'g, S: std::hash::BuildHasher>(
    graph: &HashMap<&'g Key, &'g Expr, S>,
    outputs: &[Key],
    on_cluster: &dyn Fn(&Key) -> bool,
) -> Result<Vec<&'g Key>, GraphError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        InProgress,
        Done,
    }
    let mut marks: HashMap<&Key, Mark> = HashMap::new();
    let mut order = Vec::new();
    for out in outputs {
        let Some((&root, _)) = graph.get_key_value(out) else {
            if on_cluster(out) {
                continue;
            }
            return Err(GraphError::MissingKey {
                key: out.clone(),
                needed_by: None,
            });
        };
        if marks.contains_key(root) {
            continue;
        }
        // Iterative DFS (a 10,000-link chain must not overflow the stack); the stack holds
        // (key, its dependencies, next dependency to visit).
        let mut stack: Vec<(&'g Key, Vec<Key>, usize)> = Vec::new();
        marks.insert(root, Mark::InProgress);
        stack.push((root, graph[root].dependencies(), 0));
        while let Some((k, deps, next)) = stack.last_mut() {
            let k: &'g Key = k;
            if *next == deps.len() {
                marks.insert(k, Mark::Done);
                order.push(k);
                stack.pop();
                continue;
            }
            let dep = &deps[*next];
            *next += 1;
            match graph.get_key_value(dep) {
                Some((&dep_key, dep_expr)) => match marks.get(dep_key) {
                    Some(Mark::Done) => {}
                    Some(Mark::InProgress) => {
                        let start = stack
                            .iter()
                            .position(|(s, _, _)| *s == dep_key)
                            .unwrap_or(0);
                        let cycle = stack[start..]
                            .iter()
                            .map(|(s, _, _)| (*s).clone())
                            .collect();
                        return Err(GraphError::Cycle { cycle });
                    }
                    None => {
                        marks.insert(dep_key, Mark::InProgress);
                        let deps = dep_expr.dependencies();
                        stack.push((dep_key, deps, 0));
                    }
                },
                None if on_cluster(dep) => {}
                None => {
                    return Err(GraphError::MissingKey {
                        key: dep.clone(),
                        needed_by: Some(k.clone()),
                    })
                }
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(g: &Graph) -> HashMap<Key, Expr> {
        g.resolve(&|_| false).into_iter().collect()
    }

    #[test]
    fn strings_naming_keys_become_references() {
        let g = crate::graph! { "x" => 1, "y" => ("add", "x", "z") };
        let r = resolved(&g);
        assert_eq!(
            r[&Key::from("y")],
            Expr::Call(
                "add".into(),
                vec![Expr::Ref("x".into()), Expr::Lit(Value::from("z"))]
            )
        );
    }

    #[test]
    fn tuple_shaped_args_name_tuple_keys() {
        let g = crate::graph! { ("x", 1) => 1, "y" => ("inc", ("x", 1)) };
        let r = resolved(&g);
        assert_eq!(
            r[&Key::from("y")],
            Expr::Call("inc".into(), vec![Expr::Ref(("x", 1).into())])
        );
    }

    #[test]
    fn lists_are_traversed_and_literal_lists_fold() {
        let g = crate::graph! { "a" => 1, "s" => ("sum", vec!["a", "b"]), "l" => vec![1, 2] };
        let r = resolved(&g);
        assert_eq!(
            r[&Key::from("s")],
            Expr::Call(
                "sum".into(),
                vec![Expr::List(vec![
                    Expr::Ref("a".into()),
                    Expr::Lit(Value::from("b"))
                ])]
            )
        );
        assert_eq!(r[&Key::from("l")], Expr::Lit(Value::from(vec![1, 2])));
    }

    #[test]
    fn cull_keeps_only_what_outputs_need_in_dependency_order() {
        let g = crate::graph! { "x" => 1, "y" => ("inc", "x"), "unused" => ("inc", "x") };
        let r = resolved(&g);
        let view: HashMap<&Key, &Expr> = r.iter().collect();
        let order = cull(&view, &["y".into()], &|_| false).unwrap();
        assert_eq!(order, vec![&Key::from("x"), &Key::from("y")]);
    }

    #[test]
    fn cull_names_missing_keys_and_cycles() {
        let g = crate::graph! { "a" => ("inc", key("b")), "b" => ("inc", "a"), "c" => ("inc", key("nope")) };
        let r = resolved(&g);
        let view: HashMap<&Key, &Expr> = r.iter().collect();
        let err = cull(&view, &["a".into()], &|_| false).unwrap_err();
        assert!(
            matches!(err, GraphError::Cycle { ref cycle } if cycle.len() == 2),
            "{err}"
        );
        let err = cull(&view, &["c".into()], &|_| false).unwrap_err();
        assert_eq!(
            err,
            GraphError::MissingKey {
                key: "nope".into(),
                needed_by: Some("c".into())
            }
        );
        let err = cull(&view, &["zz".into()], &|_| false).unwrap_err();
        assert!(err.to_string().contains("\"zz\""));
    }

    #[test]
    fn long_chains_do_not_overflow_the_stack() {
        let mut g = Graph::new();
        g.insert("k0", 0);
        for i in 1..100_000 {
            g.insert(format!("k{i}"), ("inc", format!("k{}", i - 1)));
        }
        let r = resolved(&g);
        let view: HashMap<&Key, &Expr> = r.iter().collect();
        let order = cull(&view, &["k99999".into()], &|_| false).unwrap();
        assert_eq!(order.len(), 100_000);
    }
}

//! Conversions between the tree and plain data ([`serde_pickle::Value`]), for headers and other
//! messages that hold only data. serde_pickle loses globals and shared references, so these
//! conversions refuse (or, on request, blank out) anything opaque.

use std::collections::{BTreeMap, HashSet};

use num_bigint::BigInt;
use serde_pickle::{HashableValue, Value};

use super::error::{Limits, PickleError};
use super::value::{Node, NodeId, Pickle};

/// What [`to_value`] does with a node that has no plain-data equivalent (a global, a call that
/// is not one of the recognised builtins, a persistent id...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opaque {
    /// Fail with [`PickleError::NotPlainData`].
    Error,
    /// Replace it by `None`, as serde_pickle's `replace_unresolved_globals` does.
    AsNone,
}

/// Converts the graph under `id` to plain data. Shared nodes are copied (within `max_nodes` in
/// total, so a small graph cannot expand exponentially); a cycle is an error. Calls of
/// `set`/`frozenset`/`bytearray` on a list and `_codecs.encode(str, 'latin1')` (how protocols
/// below 4 write sets and bytes) become the data they describe.
pub fn to_value(p: &Pickle, id: NodeId, opaque: Opaque) -> Result<Value, PickleError> {
    to_value_with(p, id, opaque, &Limits::default())
}

/// [`to_value`] with explicit limits (`max_depth`, `max_nodes`).
pub fn to_value_with(
    p: &Pickle,
    id: NodeId,
    opaque: Opaque,
    limits: &Limits,
) -> Result<Value, PickleError> {
    let mut c = ToValue {
        p,
        opaque,
        limits,
        budget: limits.max_nodes,
        path: HashSet::new(),
    };
    c.run(id)
}

struct ToValue<'a> {
    p: &'a Pickle,
    opaque: Opaque,
    limits: &'a Limits,
    budget: usize,
    path: HashSet<NodeId>,
}

/// A step of the conversion's work stack (no recursion, so no depth overflows the stack).
enum Step {
    Visit(NodeId, usize),
    /// The last `n` converted values (pairs for a dict) make this node.
    Make(NodeId, Kind, usize),
}

#[derive(Clone, Copy)]
enum Kind {
    Tuple,
    List,
    Set,
    FrozenSet,
    Dict,
}

impl ToValue<'_> {
    fn run(&mut self, root: NodeId) -> Result<Value, PickleError> {
        let mut work = vec![Step::Visit(root, 0)];
        let mut values: Vec<Value> = Vec::new();
        while let Some(step) = work.pop() {
            match step {
                Step::Visit(id, depth) => self.visit(id, depth, &mut work, &mut values)?,
                Step::Make(id, kind, n) => {
                    let len = if matches!(kind, Kind::Dict) { 2 * n } else { n };
                    let items = values.split_off(values.len() - len);
                    let v = match kind {
                        Kind::Tuple => Value::Tuple(items),
                        Kind::List => Value::List(items),
                        Kind::Set => Value::Set(hashables(id, items)?.into_iter().collect()),
                        Kind::FrozenSet => {
                            Value::FrozenSet(hashables(id, items)?.into_iter().collect())
                        }
                        Kind::Dict => {
                            let mut m = BTreeMap::new();
                            let mut it = items.into_iter();
                            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                                m.insert(hashable(id, k)?, v);
                            }
                            Value::Dict(m)
                        }
                    };
                    values.push(v);
                    self.path.remove(&id);
                }
            }
        }
        values
            .pop()
            .ok_or(PickleError::InvalidNode { node: root.0 })
    }

    fn opaque(opaque: Opaque, id: NodeId, what: &'static str) -> Result<Value, PickleError> {
        match opaque {
            Opaque::Error => Err(PickleError::NotPlainData { node: id.0, what }),
            Opaque::AsNone => Ok(Value::None),
        }
    }

    fn visit(
        &mut self,
        id: NodeId,
        depth: usize,
        work: &mut Vec<Step>,
        values: &mut Vec<Value>,
    ) -> Result<(), PickleError> {
        if depth > self.limits.max_depth || self.budget == 0 {
            return Err(PickleError::TooDeep { node: id.0 });
        }
        self.budget -= 1;
        if self.path.contains(&id) {
            return Err(PickleError::NotPlainData {
                node: id.0,
                what: "cycle",
            });
        }
        let p = self.p;
        let opaque = self.opaque;
        let node = p.get(id).ok_or(PickleError::InvalidNode { node: id.0 })?;
        let mut container = |kind: Kind, items: Vec<NodeId>, n: usize| {
            self.path.insert(id);
            work.push(Step::Make(id, kind, n));
            work.extend(items.into_iter().rev().map(|c| Step::Visit(c, depth + 1)));
            Ok(())
        };
        let v = match node {
            Node::None => Value::None,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::I64(*i),
            Node::BigInt(b) => Value::Int(BigInt::from_signed_bytes_le(b)),
            Node::Float(f) => Value::F64(*f),
            Node::Str(s) => Value::String(s.clone()),
            Node::Bytes(b) | Node::ByteArray(b) => Value::Bytes(b.clone()),
            Node::Tuple(v) => return container(Kind::Tuple, v.clone(), v.len()),
            Node::List(v) => return container(Kind::List, v.clone(), v.len()),
            Node::Set(v) => return container(Kind::Set, v.clone(), v.len()),
            Node::FrozenSet(v) => return container(Kind::FrozenSet, v.clone(), v.len()),
            Node::Dict(pairs) => {
                let flat = pairs.iter().flat_map(|&(k, v)| [k, v]).collect();
                return container(Kind::Dict, flat, pairs.len());
            }
            Node::Reduce { callable, args } => match builtin_call(p, *callable, *args) {
                Some(Builtin::Set(items)) => {
                    let n = items.len();
                    return container(Kind::Set, items, n);
                }
                Some(Builtin::FrozenSet(items)) => {
                    let n = items.len();
                    return container(Kind::FrozenSet, items, n);
                }
                Some(Builtin::Bytes(b)) => Value::Bytes(b),
                None => Self::opaque(opaque, id, "a call")?,
            },
            Node::Global { .. } => Self::opaque(opaque, id, "a global")?,
            Node::NewObj { .. } => Self::opaque(opaque, id, "an object construction")?,
            Node::Build { .. } => Self::opaque(opaque, id, "an object with state")?,
            Node::Appends { .. } | Node::SetItems { .. } | Node::AddItems { .. } => {
                Self::opaque(opaque, id, "a container subclass")?
            }
            Node::PersistentId(_) => Self::opaque(opaque, id, "a persistent id")?,
            Node::Ext(_) => Self::opaque(opaque, id, "an extension code")?,
        };
        values.push(v);
        Ok(())
    }
}

/// `set(list)`, `frozenset(list)`, `bytearray(bytes)`, `_codecs.encode(str, 'latin1')`.
fn builtin_call(p: &Pickle, callable: NodeId, args: NodeId) -> Option<Builtin> {
    let Node::Global { module, name } = p.get(callable)? else {
        return None;
    };
    let args = p.tuple_of(args)?;
    let builtins = module == "builtins" || module == "__builtin__";
    let list = |i: usize| match p.get(*args.get(i)?)? {
        Node::List(v) => Some(v.clone()),
        _ => None,
    };
    match (builtins, name.as_str(), args.len()) {
        (true, "set", 1) => list(0).map(Builtin::Set),
        (true, "set", 0) => Some(Builtin::Set(Vec::new())),
        (true, "frozenset", 1) => list(0).map(Builtin::FrozenSet),
        (true, "frozenset", 0) => Some(Builtin::FrozenSet(Vec::new())),
        (true, "bytearray", 1) => match p.get(args[0])? {
            Node::Bytes(b) => Some(Builtin::Bytes(b.clone())),
            Node::Reduce { callable, args } => match builtin_call(p, *callable, *args)? {
                Builtin::Bytes(b) => Some(Builtin::Bytes(b)),
                _ => None,
            },
            _ => None,
        },
        (true, "bytearray", 2) => latin1(p, args[0], args[1]).map(Builtin::Bytes),
        (true, "bytes", 0) => Some(Builtin::Bytes(Vec::new())),
        (false, "encode", 2) if module == "_codecs" => {
            latin1(p, args[0], args[1]).map(Builtin::Bytes)
        }
        _ => None,
    }
}

/// The bytes of `str.encode('latin1')`, for a `Str` node and an encoding node naming Latin-1.
fn latin1(p: &Pickle, s: NodeId, encoding: NodeId) -> Option<Vec<u8>> {
    let s = p.str_of(s)?;
    if !matches!(p.str_of(encoding)?, "latin1" | "latin-1") {
        return None;
    }
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

fn hashable(id: NodeId, v: Value) -> Result<HashableValue, PickleError> {
    v.into_hashable().map_err(|_| PickleError::NotPlainData {
        node: id.0,
        what: "unhashable dict key or set item",
    })
}

fn hashables(id: NodeId, items: Vec<Value>) -> Result<Vec<HashableValue>, PickleError> {
    items.into_iter().map(|v| hashable(id, v)).collect()
}

enum Builtin {
    Set(Vec<NodeId>),
    FrozenSet(Vec<NodeId>),
    Bytes(Vec<u8>),
}

impl Pickle {
    /// Adds plain data to the arena (every value a fresh node) and returns its id.
    pub fn add_value(&mut self, v: &Value) -> NodeId {
        let node = match v {
            Value::None => Node::None,
            Value::Bool(b) => Node::Bool(*b),
            Value::I64(i) => Node::Int(*i),
            Value::Int(b) => {
                let bytes = b.to_signed_bytes_le();
                match super::text::le_to_i64(&bytes) {
                    Some(i) => Node::Int(i),
                    None => {
                        let mut bytes = bytes;
                        super::text::minimise(&mut bytes);
                        Node::BigInt(bytes)
                    }
                }
            }
            Value::F64(f) => Node::Float(*f),
            Value::Bytes(b) => Node::Bytes(b.clone()),
            Value::String(s) => Node::Str(s.clone()),
            Value::List(v) => Node::List(v.iter().map(|x| self.add_value(x)).collect()),
            Value::Tuple(v) => Node::Tuple(v.iter().map(|x| self.add_value(x)).collect()),
            Value::Set(s) => Node::Set(s.iter().map(|x| self.add_hashable(x)).collect()),
            Value::FrozenSet(s) => {
                Node::FrozenSet(s.iter().map(|x| self.add_hashable(x)).collect())
            }
            Value::Dict(m) => Node::Dict(
                m.iter()
                    .map(|(k, v)| (self.add_hashable(k), self.add_value(v)))
                    .collect(),
            ),
        };
        self.add(node)
    }

    fn add_hashable(&mut self, v: &HashableValue) -> NodeId {
        self.add_value(&v.clone().into_value())
    }

    /// A tree holding just this plain data, with it as the root.
    pub fn from_value(v: &Value) -> Pickle {
        let mut p = Pickle::new();
        p.root = p.add_value(v);
        p
    }
}

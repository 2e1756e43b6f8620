//! The decoded tree: an arena of nodes addressed by [`NodeId`], so an object reached twice
//! (through the memo) stays one node and cycles need no special handling.

use std::collections::HashMap;
use std::fmt::Write as _;

/// A node's index in its [`Pickle`] arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One object of the pickle. Plain data is kept as data; everything that Python would build by
/// calling something (globals, constructor calls, state application) is kept as an opaque node
/// and never executed.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    None,
    Bool(bool),
    Int(i64),
    /// An integer outside `i64`: minimal little-endian two's-complement bytes (as `LONG1`).
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    /// Not produced by the decoder (protocols 0–4 pickle a bytearray as a REDUCE, which is kept
    /// as such); encoded as `builtins.bytearray(bytes)`.
    ByteArray(Vec<u8>),
    Tuple(Vec<NodeId>),
    List(Vec<NodeId>),
    /// Ordered key/value pairs: keys may be anything, duplicates are kept as written.
    Dict(Vec<(NodeId, NodeId)>),
    Set(Vec<NodeId>),
    FrozenSet(Vec<NodeId>),
    /// A reference to `module.name` (`GLOBAL`, `STACK_GLOBAL`; `INST`/`OBJ` become REDUCE of one).
    Global {
        module: String,
        name: String,
    },
    /// `callable(*args)` (`REDUCE`; also `INST` and `OBJ`).
    Reduce {
        callable: NodeId,
        args: NodeId,
    },
    /// `cls.__new__(cls, *args, **kwargs)` (`NEWOBJ`, `NEWOBJ_EX` with `kwargs`).
    NewObj {
        cls: NodeId,
        args: NodeId,
        kwargs: Option<NodeId>,
    },
    /// `obj` after `BUILD` with `state` (`__setstate__` or `__dict__` update).
    Build {
        obj: NodeId,
        state: NodeId,
    },
    /// `obj` after `APPEND(S)` where `obj` is not a plain list (e.g. a list subclass instance).
    Appends {
        obj: NodeId,
        items: Vec<NodeId>,
    },
    /// `obj` after `SETITEM(S)` where `obj` is not a plain dict.
    SetItems {
        obj: NodeId,
        pairs: Vec<(NodeId, NodeId)>,
    },
    /// `obj` after `ADDITEMS` where `obj` is not a plain set.
    AddItems {
        obj: NodeId,
        items: Vec<NodeId>,
    },
    /// A persistent id (`PERSID`, `BINPERSID`): the id object, for the pickler's owner to resolve.
    PersistentId(NodeId),
    /// An extension-registry code (`EXT1`/`EXT2`/`EXT4`).
    Ext(u32),
}

impl Node {
    /// The nodes this one refers to, in emission order.
    pub fn children(&self) -> Vec<NodeId> {
        match self {
            Node::Tuple(v) | Node::List(v) | Node::Set(v) | Node::FrozenSet(v) => v.clone(),
            Node::Dict(p) => p.iter().flat_map(|&(k, v)| [k, v]).collect(),
            Node::Reduce { callable, args } => vec![*callable, *args],
            Node::NewObj { cls, args, kwargs } => {
                let mut v = vec![*cls, *args];
                v.extend(kwargs);
                v
            }
            Node::Build { obj, state } => vec![*obj, *state],
            Node::Appends { obj, items } | Node::AddItems { obj, items } => {
                let mut v = vec![*obj];
                v.extend(items);
                v
            }
            Node::SetItems { obj, pairs } => {
                let mut v = vec![*obj];
                v.extend(pairs.iter().flat_map(|&(k, v)| [k, v]));
                v
            }
            Node::PersistentId(p) => vec![*p],
            _ => Vec::new(),
        }
    }

    /// Rewrites every reference to another node with `f` (same order as [`Node::children`]).
    pub fn map_children(&mut self, mut f: impl FnMut(NodeId) -> NodeId) {
        match self {
            Node::Tuple(v) | Node::List(v) | Node::Set(v) | Node::FrozenSet(v) => {
                v.iter_mut().for_each(|c| *c = f(*c))
            }
            Node::Dict(p) => p.iter_mut().for_each(|(k, v)| {
                *k = f(*k);
                *v = f(*v);
            }),
            Node::Reduce { callable, args } => {
                *callable = f(*callable);
                *args = f(*args);
            }
            Node::NewObj { cls, args, kwargs } => {
                *cls = f(*cls);
                *args = f(*args);
                if let Some(k) = kwargs {
                    *k = f(*k);
                }
            }
            Node::Build { obj, state } => {
                *obj = f(*obj);
                *state = f(*state);
            }
            Node::Appends { obj, items } | Node::AddItems { obj, items } => {
                *obj = f(*obj);
                items.iter_mut().for_each(|c| *c = f(*c));
            }
            Node::SetItems { obj, pairs } => {
                *obj = f(*obj);
                pairs.iter_mut().for_each(|(k, v)| {
                    *k = f(*k);
                    *v = f(*v);
                });
            }
            Node::PersistentId(p) => *p = f(*p),
            _ => {}
        }
    }

    /// Whether two nodes have the same kind and the same scalar content (children not compared).
    fn same_shape(&self, other: &Node) -> bool {
        use Node::*;
        match (self, other) {
            (Float(a), Float(b)) => a.to_bits() == b.to_bits(),
            (Tuple(a), Tuple(b))
            | (List(a), List(b))
            | (Set(a), Set(b))
            | (FrozenSet(a), FrozenSet(b)) => a.len() == b.len(),
            (Dict(a), Dict(b)) => a.len() == b.len(),
            (Reduce { .. }, Reduce { .. }) | (Build { .. }, Build { .. }) => true,
            (PersistentId(_), PersistentId(_)) => true,
            (NewObj { kwargs: a, .. }, NewObj { kwargs: b, .. }) => a.is_some() == b.is_some(),
            (Appends { items: a, .. }, Appends { items: b, .. })
            | (AddItems { items: a, .. }, AddItems { items: b, .. }) => a.len() == b.len(),
            (SetItems { pairs: a, .. }, SetItems { pairs: b, .. }) => a.len() == b.len(),
            _ => self == other,
        }
    }
}

/// A decoded pickle: the node arena and the root (the object `STOP` returned).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pickle {
    pub nodes: Vec<Node>,
    pub root: NodeId,
}

impl Pickle {
    /// An empty arena (root 0 until one is set); add nodes with [`Pickle::add`].
    pub fn new() -> Self {
        Pickle::default()
    }

    /// Appends a node and returns its id.
    pub fn add(&mut self, node: Node) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(node);
        id
    }

    /// The node with this id, if it is in the arena.
    pub fn get(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id.index())
    }

    /// The root node.
    pub fn root_node(&self) -> Option<&Node> {
        self.get(self.root)
    }

    /// The string of a `Str` node.
    pub fn str_of(&self, id: NodeId) -> Option<&str> {
        match self.get(id)? {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The items of a `Tuple` node.
    pub fn tuple_of(&self, id: NodeId) -> Option<&[NodeId]> {
        match self.get(id)? {
            Node::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// The value of the first pair of a `Dict` node whose key is the string `key`.
    pub fn dict_get(&self, dict: NodeId, key: &str) -> Option<NodeId> {
        match self.get(dict)? {
            Node::Dict(pairs) => pairs
                .iter()
                .find(|(k, _)| self.str_of(*k) == Some(key))
                .map(|&(_, v)| v),
            _ => None,
        }
    }

    /// Whether the graph reachable from `a` in `self` and the one reachable from `b` in `other`
    /// are the same up to renumbering, sharing included: two references to one node on one side
    /// must be two references to one node on the other.
    pub fn isomorphic(&self, a: NodeId, other: &Pickle, b: NodeId) -> bool {
        let mut fwd: HashMap<NodeId, NodeId> = HashMap::new();
        let mut back: HashMap<NodeId, NodeId> = HashMap::new();
        let mut work = vec![(a, b)];
        while let Some((x, y)) = work.pop() {
            match (fwd.get(&x), back.get(&y)) {
                (Some(&y2), Some(&x2)) if y2 == y && x2 == x => continue,
                (None, None) => {}
                _ => return false,
            }
            fwd.insert(x, y);
            back.insert(y, x);
            let (Some(nx), Some(ny)) = (self.get(x), other.get(y)) else {
                return false;
            };
            if !nx.same_shape(ny) {
                return false;
            }
            let (cx, cy) = (nx.children(), ny.children());
            if cx.len() != cy.len() {
                return false;
            }
            work.extend(cx.into_iter().zip(cy));
        }
        true
    }

    /// A one-line rendering of the graph under `id`, for tests and debugging. Nodes reached more
    /// than once are labelled `#n=` at their first appearance and written `#n#` afterwards.
    pub fn render(&self, id: NodeId) -> String {
        let mut counts: HashMap<NodeId, usize> = HashMap::new();
        let mut work = vec![id];
        while let Some(n) = work.pop() {
            let c = counts.entry(n).or_insert(0);
            *c += 1;
            if *c == 1 {
                if let Some(node) = self.get(n) {
                    work.extend(node.children());
                }
            }
        }
        let mut r = Renderer {
            p: self,
            counts,
            labels: HashMap::new(),
            out: String::new(),
        };
        r.node(id, 0);
        r.out
    }
}

struct Renderer<'a> {
    p: &'a Pickle,
    counts: HashMap<NodeId, usize>,
    labels: HashMap<NodeId, usize>,
    out: String,
}

impl Renderer<'_> {
    fn list(&mut self, open: &str, items: &[NodeId], close: &str, depth: usize) {
        self.out.push_str(open);
        for (i, &c) in items.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            self.node(c, depth + 1);
        }
        self.out.push_str(close);
    }

    fn pairs(&mut self, pairs: &[(NodeId, NodeId)], depth: usize) {
        for (i, &(k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            self.node(k, depth + 1);
            self.out.push_str(": ");
            self.node(v, depth + 1);
        }
    }

    fn node(&mut self, id: NodeId, depth: usize) {
        if let Some(l) = self.labels.get(&id) {
            let _ = write!(self.out, "#{l}#");
            return;
        }
        if depth > 200 {
            self.out.push_str("...");
            return;
        }
        if self.counts.get(&id).copied().unwrap_or(0) > 1 {
            let l = self.labels.len();
            self.labels.insert(id, l);
            let _ = write!(self.out, "#{l}=");
        }
        let Some(node) = self.p.get(id) else {
            let _ = write!(self.out, "<invalid {}>", id.0);
            return;
        };
        match node {
            Node::None => self.out.push_str("None"),
            Node::Bool(b) => self.out.push_str(if *b { "True" } else { "False" }),
            Node::Int(i) => {
                let _ = write!(self.out, "{i}");
            }
            Node::BigInt(b) => {
                let _ = write!(self.out, "{}", num_bigint::BigInt::from_signed_bytes_le(b));
            }
            Node::Float(f) => {
                let _ = write!(self.out, "{f:?}");
            }
            Node::Str(s) => {
                let _ = write!(self.out, "{s:?}");
            }
            Node::Bytes(b) => {
                let _ = write!(self.out, "b{:?}", String::from_utf8_lossy(b));
            }
            Node::ByteArray(b) => {
                let _ = write!(self.out, "bytearray(b{:?})", String::from_utf8_lossy(b));
            }
            Node::Tuple(v) => {
                let close = if v.len() == 1 { ",)" } else { ")" };
                self.list("(", v, close, depth)
            }
            Node::List(v) => self.list("[", v, "]", depth),
            Node::Set(v) => self.list("set(", v, ")", depth),
            Node::FrozenSet(v) => self.list("frozenset(", v, ")", depth),
            Node::Dict(p) => {
                self.out.push('{');
                self.pairs(p, depth);
                self.out.push('}');
            }
            Node::Global { module, name } => {
                let _ = write!(self.out, "Global({module} {name})");
            }
            Node::Reduce { callable, args } => {
                self.list("Reduce(", &[*callable, *args], ")", depth)
            }
            Node::NewObj { cls, args, kwargs } => {
                let mut v = vec![*cls, *args];
                v.extend(kwargs);
                self.list("NewObj(", &v, ")", depth)
            }
            Node::Build { obj, state } => self.list("Build(", &[*obj, *state], ")", depth),
            Node::Appends { obj, items } => {
                self.list("Appends(", &[*obj], "; ", depth);
                self.list("", items, ")", depth);
            }
            Node::AddItems { obj, items } => {
                self.list("AddItems(", &[*obj], "; ", depth);
                self.list("", items, ")", depth);
            }
            Node::SetItems { obj, pairs } => {
                self.list("SetItems(", &[*obj], "; ", depth);
                self.pairs(pairs, depth);
                self.out.push(')');
            }
            Node::PersistentId(p) => self.list("PersistentId(", &[*p], ")", depth),
            Node::Ext(c) => {
                let _ = write!(self.out, "Ext({c})");
            }
        }
    }
}

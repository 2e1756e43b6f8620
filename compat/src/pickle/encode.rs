//! The encoder: writes any node of a [`Pickle`] and everything it reaches as a standalone
//! protocol 4 pickle (without FRAMEs), which Python 3.4 and later read, including the legacy
//! Python 3.6 client and workers. Nodes reached more than once are stored in the memo at their
//! first emission and fetched with GET afterwards, so sharing and cycles survive.

use std::collections::HashMap;

use super::error::{Limits, PickleError};
use super::ops::*;
use super::text;
use super::value::{Node, NodeId, Pickle};

/// The protocol the encoder writes.
pub const PROTOCOL: u8 = 4;

/// Encodes the graph under `root` with the default [`Limits`] (only `max_depth` applies).
pub fn encode(p: &Pickle, root: NodeId) -> Result<Vec<u8>, PickleError> {
    encode_with(p, root, &Limits::default())
}

/// Encodes the graph under `root`; recursion deeper than `limits.max_depth` is an error.
pub fn encode_with(p: &Pickle, root: NodeId, limits: &Limits) -> Result<Vec<u8>, PickleError> {
    let refs = count_refs(p, root)?;
    let mut e = Encoder {
        p,
        out: vec![PROTO, PROTOCOL],
        refs,
        memo: HashMap::new(),
        entered: HashMap::new(),
        max_depth: limits.max_depth,
    };
    e.node(root, 0)?;
    e.out.push(STOP);
    Ok(e.out)
}

/// How often each reachable node is referenced (the root counts once more).
fn count_refs(p: &Pickle, root: NodeId) -> Result<HashMap<NodeId, u32>, PickleError> {
    let mut refs: HashMap<NodeId, u32> = HashMap::new();
    let mut work = vec![root];
    while let Some(n) = work.pop() {
        let c = refs.entry(n).or_insert(0);
        *c += 1;
        if *c == 1 {
            let node = p.get(n).ok_or(PickleError::InvalidNode { node: n.0 })?;
            work.extend(node.children());
        }
    }
    Ok(refs)
}

struct Encoder<'a> {
    p: &'a Pickle,
    out: Vec<u8>,
    refs: HashMap<NodeId, u32>,
    /// Memo index of each node stored so far.
    memo: HashMap<NodeId, u32>,
    /// How many emissions of each node are under way (a tuple on a cycle is entered twice).
    entered: HashMap<NodeId, u32>,
    max_depth: usize,
}

type R = Result<(), PickleError>;

impl Encoder<'_> {
    fn shared(&self, id: NodeId) -> bool {
        self.refs.get(&id).copied().unwrap_or(0) > 1
    }

    fn put(&mut self, id: NodeId) {
        let i = self.memo.len() as u32;
        self.put_as(id, i);
    }

    fn put_as(&mut self, id: NodeId, i: u32) {
        if i < 256 {
            self.out.extend([BINPUT, i as u8]);
        } else {
            self.out.push(LONG_BINPUT);
            self.out.extend(i.to_le_bytes());
        }
        self.memo.insert(id, i);
    }

    fn get(&mut self, i: u32) {
        if i < 256 {
            self.out.extend([BINGET, i as u8]);
        } else {
            self.out.push(LONG_BINGET);
            self.out.extend(i.to_le_bytes());
        }
    }

    fn sized(&mut self, short: u8, long: u8, long8: u8, b: &[u8]) {
        if b.len() < 256 && short != 0 {
            self.out.extend([short, b.len() as u8]);
        } else if let Ok(n) = u32::try_from(b.len()) {
            self.out.push(long);
            self.out.extend(n.to_le_bytes());
        } else {
            self.out.push(long8);
            self.out.extend((b.len() as u64).to_le_bytes());
        }
        self.out.extend(b);
    }

    fn str(&mut self, s: &str) {
        self.sized(SHORT_BINUNICODE, BINUNICODE, BINUNICODE8, s.as_bytes());
    }

    fn global(&mut self, module: &str, name: &str) {
        self.str(module);
        self.str(name);
        self.out.push(STACK_GLOBAL);
    }

    fn long(&mut self, b: &[u8]) {
        if b.len() < 256 {
            self.out.extend([LONG1, b.len() as u8]);
        } else {
            self.out.push(LONG4);
            self.out.extend((b.len() as u32).to_le_bytes());
        }
        self.out.extend(b);
    }

    fn items(&mut self, items: &[NodeId], op: u8, depth: usize) -> R {
        for chunk in items.chunks(1000) {
            self.out.push(MARK);
            for &c in chunk {
                self.node(c, depth + 1)?;
            }
            self.out.push(op);
        }
        Ok(())
    }

    fn pairs(&mut self, pairs: &[(NodeId, NodeId)], depth: usize) -> R {
        for chunk in pairs.chunks(1000) {
            self.out.push(MARK);
            for &(k, v) in chunk {
                self.node(k, depth + 1)?;
                self.node(v, depth + 1)?;
            }
            self.out.push(SETITEMS);
        }
        Ok(())
    }

    /// After emitting the parts of an immutable node (tuple, call...) that `n` stack items hold:
    /// if the node was stored meanwhile (a cycle came back to it through a mutable object),
    /// drop the parts and fetch the stored object, as CPython does. Returns whether it was.
    fn stored_meanwhile(&mut self, id: NodeId, n: usize, marked: bool) -> bool {
        let Some(&i) = self.memo.get(&id) else {
            return false;
        };
        if marked {
            self.out.push(POP_MARK);
        } else {
            self.out.extend(std::iter::repeat_n(POP, n));
        }
        self.get(i);
        true
    }

    fn node(&mut self, id: NodeId, depth: usize) -> R {
        if let Some(&i) = self.memo.get(&id) {
            self.get(i);
            return Ok(());
        }
        if depth > self.max_depth {
            return Err(PickleError::TooDeep { node: id.0 });
        }
        let entered = self.entered.entry(id).or_insert(0);
        if *entered >= 2 {
            return Err(PickleError::UnencodableCycle { node: id.0 });
        }
        *entered += 1;
        let r = self.emit(id, depth);
        if let Some(e) = self.entered.get_mut(&id) {
            *e -= 1;
        }
        r
    }

    fn emit(&mut self, id: NodeId, depth: usize) -> R {
        let p = self.p;
        let node = p.get(id).ok_or(PickleError::InvalidNode { node: id.0 })?;
        match node {
            Node::None => self.out.push(NONE),
            Node::Bool(b) => self.out.push(if *b { NEWTRUE } else { NEWFALSE }),
            Node::Int(v) => {
                let v = *v;
                if (0..256).contains(&v) {
                    self.out.extend([BININT1, v as u8]);
                } else if (0..65536).contains(&v) {
                    self.out.push(BININT2);
                    self.out.extend((v as u16).to_le_bytes());
                } else if let Ok(v) = i32::try_from(v) {
                    self.out.push(BININT);
                    self.out.extend(v.to_le_bytes());
                } else {
                    self.long(&text::i64_to_le(v));
                }
            }
            Node::BigInt(b) => self.long(b),
            Node::Float(f) => {
                self.out.push(BINFLOAT);
                self.out.extend(f.to_be_bytes());
            }
            Node::Str(s) => self.str(s),
            Node::Bytes(b) => self.sized(SHORT_BINBYTES, BINBYTES, BINBYTES8, b),
            Node::ByteArray(b) => {
                self.global("builtins", "bytearray");
                self.sized(SHORT_BINBYTES, BINBYTES, BINBYTES8, b);
                self.out.extend([TUPLE1, REDUCE]);
            }
            Node::Global { module, name } => self.global(module, name),
            Node::Ext(c) => {
                if let Ok(c) = u8::try_from(*c) {
                    self.out.extend([EXT1, c]);
                } else if let Ok(c) = u16::try_from(*c) {
                    self.out.push(EXT2);
                    self.out.extend(c.to_le_bytes());
                } else {
                    self.out.push(EXT4);
                    self.out.extend(c.to_le_bytes());
                }
            }
            Node::Tuple(items) => {
                if items.is_empty() {
                    self.out.push(EMPTY_TUPLE);
                } else if items.len() <= 3 {
                    for &c in items {
                        self.node(c, depth + 1)?;
                    }
                    if self.stored_meanwhile(id, items.len(), false) {
                        return Ok(());
                    }
                    self.out.push(TUPLE1 + items.len() as u8 - 1);
                } else {
                    self.out.push(MARK);
                    for &c in items {
                        self.node(c, depth + 1)?;
                    }
                    if self.stored_meanwhile(id, 0, true) {
                        return Ok(());
                    }
                    self.out.push(TUPLE);
                }
            }
            Node::FrozenSet(items) => {
                self.out.push(MARK);
                for &c in items {
                    self.node(c, depth + 1)?;
                }
                if self.stored_meanwhile(id, 0, true) {
                    return Ok(());
                }
                self.out.push(FROZENSET);
            }
            Node::List(items) => {
                self.out.push(EMPTY_LIST);
                self.put_mutable(id);
                self.items(items, APPENDS, depth)?;
                return Ok(());
            }
            Node::Set(items) => {
                self.out.push(EMPTY_SET);
                self.put_mutable(id);
                self.items(items, ADDITEMS, depth)?;
                return Ok(());
            }
            Node::Dict(pairs) => {
                self.out.push(EMPTY_DICT);
                self.put_mutable(id);
                self.pairs(pairs, depth)?;
                return Ok(());
            }
            Node::Reduce { callable, args } => {
                self.node(*callable, depth + 1)?;
                self.node(*args, depth + 1)?;
                if self.stored_meanwhile(id, 2, false) {
                    return Ok(());
                }
                self.out.push(REDUCE);
            }
            Node::NewObj { cls, args, kwargs } => {
                self.node(*cls, depth + 1)?;
                self.node(*args, depth + 1)?;
                if let Some(k) = kwargs {
                    self.node(*k, depth + 1)?;
                }
                let n = 2 + usize::from(kwargs.is_some());
                if self.stored_meanwhile(id, n, false) {
                    return Ok(());
                }
                self.out
                    .push(if kwargs.is_some() { NEWOBJ_EX } else { NEWOBJ });
            }
            Node::PersistentId(pid) => {
                self.node(*pid, depth + 1)?;
                if self.stored_meanwhile(id, 1, false) {
                    return Ok(());
                }
                self.out.push(BINPERSID);
            }
            Node::Build { obj, state } => {
                if !self.post_op_prefix(id, *obj, depth)? {
                    self.node(*state, depth + 1)?;
                    self.out.push(BUILD);
                }
                return Ok(());
            }
            Node::Appends { obj, items } => {
                if !self.post_op_prefix(id, *obj, depth)? {
                    self.items(items, APPENDS, depth)?;
                }
                return Ok(());
            }
            Node::AddItems { obj, items } => {
                if !self.post_op_prefix(id, *obj, depth)? {
                    self.items(items, ADDITEMS, depth)?;
                }
                return Ok(());
            }
            Node::SetItems { obj, pairs } => {
                if !self.post_op_prefix(id, *obj, depth)? {
                    self.pairs(pairs, depth)?;
                }
                return Ok(());
            }
        }
        self.put_if_shared(id);
        Ok(())
    }

    fn put_if_shared(&mut self, id: NodeId) {
        if self.shared(id) {
            self.put(id);
        }
    }

    /// Mutable objects (lists, dicts, sets, objects with post-operations) are always stored:
    /// every cycle the decoder can build passes through one, and storing it before its contents
    /// is what lets the cycle close with a GET.
    fn put_mutable(&mut self, id: NodeId) {
        self.put(id);
    }

    /// Emits the object a post-operation node (BUILD, APPENDS...) applies to, and makes the
    /// node share its memo slot: the operation mutates that very object. Returns true when the
    /// node was completely emitted meanwhile (a cycle through `obj`), so nothing is left to do.
    fn post_op_prefix(
        &mut self,
        id: NodeId,
        obj: NodeId,
        depth: usize,
    ) -> Result<bool, PickleError> {
        self.node(obj, depth + 1)?;
        if self.memo.contains_key(&id) {
            return Ok(true);
        }
        let i = match self.memo.get(&obj) {
            Some(&i) => i,
            None => {
                self.put_mutable(obj);
                self.memo[&obj]
            }
        };
        self.memo.insert(id, i);
        Ok(false)
    }
}

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
        next_index: 0,
        entered: HashMap::new(),
        max_depth: limits.max_depth,
    };
    e.run(root)?;
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
    /// Memo index of each node stored so far (the nodes of a post-operation chain share one).
    memo: HashMap<NodeId, u32>,
    /// The next unused memo index.
    next_index: u32,
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
        let i = self.next_index;
        self.next_index += 1;
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

    /// After the parts of an immutable node (tuple, call...) are on the stack (`n` items, or
    /// everything above a MARK): if the node was stored meanwhile (a cycle came back to it
    /// through a mutable object and emitted it whole), drop the parts and fetch the stored
    /// object, as CPython does. Returns whether it was.
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

    /// Runs the emission of `root` with an explicit work stack (no recursion, so no depth can
    /// overflow the thread's stack; `max_depth` still bounds the nesting).
    fn run(&mut self, root: NodeId) -> R {
        let mut work = vec![Task::Visit(root, 0)];
        while let Some(task) = work.pop() {
            match task {
                Task::Visit(id, depth) => self.visit(id, depth, &mut work)?,
                Task::Op(op) => self.out.push(op),
                Task::Finish { id, n, op } => {
                    if !self.stored_meanwhile(id, n, false) {
                        self.out.push(op);
                        self.put_if_shared(id);
                    }
                    self.leave(id);
                }
                Task::FinishMarked { id, op } => {
                    if !self.stored_meanwhile(id, 0, true) {
                        self.out.push(op);
                        self.put_if_shared(id);
                    }
                    self.leave(id);
                }
                Task::PostOps { chain, base, depth } => {
                    self.post_ops(chain, base, depth, &mut work)?
                }
                Task::Leave(id) => self.leave(id),
            }
        }
        Ok(())
    }

    fn leave(&mut self, id: NodeId) {
        if let Some(e) = self.entered.get_mut(&id) {
            *e -= 1;
        }
    }

    /// Starts emitting `id`: a GET if it is stored, the whole of a scalar, or the opening of a
    /// container with the rest pushed onto `work` (in reverse, since it is a stack).
    fn visit(&mut self, id: NodeId, depth: usize, work: &mut Vec<Task>) -> R {
        if let Some(&i) = self.memo.get(&id) {
            self.get(i);
            return Ok(());
        }
        if depth > self.max_depth {
            return Err(PickleError::TooDeep { node: id.0 });
        }
        let in_progress = self.entered.get(&id).copied().unwrap_or(0) > 0;
        if let Some((chain, base)) = self.post_op_chain(id)? {
            // A reference to an object whose post-operations are still being emitted (a cycle
            // through its state or items) is a reference to the object itself: GET it.
            if in_progress {
                if let Some(&i) = self.memo.get(&base) {
                    self.get(i);
                    return Ok(());
                }
            }
            self.enter(id)?;
            work.push(Task::PostOps { chain, base, depth });
            work.push(Task::Visit(base, depth + 1));
            return Ok(());
        }
        self.enter(id)?;
        let mut next = Vec::new();
        let done = self.emit(id, depth, &mut next)?;
        if done {
            self.leave(id);
        }
        work.extend(next.into_iter().rev());
        Ok(())
    }

    fn enter(&mut self, id: NodeId) -> R {
        let entered = self.entered.entry(id).or_insert(0);
        if *entered >= 2 {
            return Err(PickleError::UnencodableCycle { node: id.0 });
        }
        *entered += 1;
        Ok(())
    }

    /// For a post-operation node (BUILD, APPENDS...): the chain of post-operation nodes from
    /// `id` down through their `obj`s, outermost first, and the object they all apply to. They
    /// are all one Python object, at different moments.
    fn post_op_chain(&self, id: NodeId) -> Result<Option<(Vec<NodeId>, NodeId)>, PickleError> {
        let mut chain = Vec::new();
        let mut cur = id;
        loop {
            let node = self
                .p
                .get(cur)
                .ok_or(PickleError::InvalidNode { node: cur.0 })?;
            match node {
                Node::Build { obj, .. }
                | Node::Appends { obj, .. }
                | Node::AddItems { obj, .. }
                | Node::SetItems { obj, .. } => {
                    if chain.len() > self.p.nodes.len() {
                        return Err(PickleError::UnencodableCycle { node: id.0 });
                    }
                    chain.push(cur);
                    cur = *obj;
                }
                _ => break,
            }
        }
        Ok((!chain.is_empty()).then_some((chain, cur)))
    }

    /// `base` is on the stack: give the chain `base`'s memo slot and apply the operations,
    /// innermost (earliest) first. Nothing to do if a cycle through `base` emitted it all.
    fn post_ops(
        &mut self,
        chain: Vec<NodeId>,
        base: NodeId,
        depth: usize,
        work: &mut Vec<Task>,
    ) -> R {
        let outer = chain[0];
        if self.memo.contains_key(&outer) {
            self.leave(outer);
            return Ok(());
        }
        let i = match self.memo.get(&base) {
            Some(&i) => i,
            None => {
                self.put_mutable(base);
                self.memo[&base]
            }
        };
        for &c in &chain {
            self.memo.insert(c, i);
        }
        let p = self.p;
        let mut tasks = Vec::new();
        for &c in chain.iter().rev() {
            match p.get(c) {
                Some(Node::Build { state, .. }) => {
                    tasks.push(Task::Visit(*state, depth + 1));
                    tasks.push(Task::Op(BUILD));
                }
                Some(Node::Appends { items, .. }) => batches(&mut tasks, items, depth, APPENDS),
                Some(Node::AddItems { items, .. }) => batches(&mut tasks, items, depth, ADDITEMS),
                Some(Node::SetItems { pairs, .. }) => pair_batches(&mut tasks, pairs, depth),
                _ => return Err(PickleError::InvalidNode { node: c.0 }),
            }
        }
        tasks.push(Task::Leave(outer));
        work.extend(tasks.into_iter().rev());
        Ok(())
    }

    /// Emits what `id` starts with and pushes the rest onto `next`, in order. Returns true
    /// when the node is complete (a scalar), false when tasks in `next` finish it.
    fn emit(
        &mut self,
        id: NodeId,
        depth: usize,
        next: &mut Vec<Task>,
    ) -> Result<bool, PickleError> {
        let p = self.p;
        let node = p.get(id).ok_or(PickleError::InvalidNode { node: id.0 })?;
        let d = depth + 1;
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
            Node::Tuple(items) if items.is_empty() => self.out.push(EMPTY_TUPLE),
            Node::Tuple(items) if items.len() <= 3 => {
                next.extend(items.iter().map(|&c| Task::Visit(c, d)));
                let op = TUPLE1 + items.len() as u8 - 1;
                next.push(Task::Finish {
                    id,
                    n: items.len(),
                    op,
                });
                return Ok(false);
            }
            Node::Tuple(items) | Node::FrozenSet(items) => {
                self.out.push(MARK);
                next.extend(items.iter().map(|&c| Task::Visit(c, d)));
                let op = if matches!(node, Node::Tuple(_)) {
                    TUPLE
                } else {
                    FROZENSET
                };
                next.push(Task::FinishMarked { id, op });
                return Ok(false);
            }
            Node::List(items) | Node::Set(items) => {
                let (empty, op) = match node {
                    Node::List(_) => (EMPTY_LIST, APPENDS),
                    _ => (EMPTY_SET, ADDITEMS),
                };
                self.out.push(empty);
                self.put_mutable(id);
                batches(next, items, depth, op);
                next.push(Task::Leave(id));
                return Ok(false);
            }
            Node::Dict(pairs) => {
                self.out.push(EMPTY_DICT);
                self.put_mutable(id);
                pair_batches(next, pairs, depth);
                next.push(Task::Leave(id));
                return Ok(false);
            }
            Node::Reduce { callable, args } => {
                next.push(Task::Visit(*callable, d));
                next.push(Task::Visit(*args, d));
                next.push(Task::Finish {
                    id,
                    n: 2,
                    op: REDUCE,
                });
                return Ok(false);
            }
            Node::NewObj { cls, args, kwargs } => {
                next.push(Task::Visit(*cls, d));
                next.push(Task::Visit(*args, d));
                if let Some(k) = kwargs {
                    next.push(Task::Visit(*k, d));
                }
                let (n, op) = match kwargs {
                    Some(_) => (3, NEWOBJ_EX),
                    None => (2, NEWOBJ),
                };
                next.push(Task::Finish { id, n, op });
                return Ok(false);
            }
            Node::PersistentId(pid) => {
                next.push(Task::Visit(*pid, d));
                next.push(Task::Finish {
                    id,
                    n: 1,
                    op: BINPERSID,
                });
                return Ok(false);
            }
            Node::Build { .. }
            | Node::Appends { .. }
            | Node::AddItems { .. }
            | Node::SetItems { .. } => return Err(PickleError::InvalidNode { node: id.0 }),
        }
        self.put_if_shared(id);
        Ok(true)
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
}

/// One step of the encoder's work stack.
enum Task {
    /// Emit this node (at this nesting depth).
    Visit(NodeId, usize),
    /// Emit this opcode.
    Op(u8),
    /// The `n` parts of an immutable node are on the stack: close it with `op`.
    Finish { id: NodeId, n: usize, op: u8 },
    /// The parts of an immutable node are on the stack above a MARK: close it with `op`.
    FinishMarked { id: NodeId, op: u8 },
    /// The object of a chain of post-operation nodes is on the stack: apply them.
    PostOps {
        chain: Vec<NodeId>,
        base: NodeId,
        depth: usize,
    },
    /// The node's emission is over.
    Leave(NodeId),
}

/// `MARK items... op` in batches of 1000, as CPython writes them.
fn batches(out: &mut Vec<Task>, items: &[NodeId], depth: usize, op: u8) {
    for chunk in items.chunks(1000) {
        out.push(Task::Op(MARK));
        out.extend(chunk.iter().map(|&c| Task::Visit(c, depth + 1)));
        out.push(Task::Op(op));
    }
}

/// `MARK key value... SETITEMS` in batches of 1000.
fn pair_batches(out: &mut Vec<Task>, pairs: &[(NodeId, NodeId)], depth: usize) {
    for chunk in pairs.chunks(1000) {
        out.push(Task::Op(MARK));
        for &(k, v) in chunk {
            out.push(Task::Visit(k, depth + 1));
            out.push(Task::Visit(v, depth + 1));
        }
        out.push(Task::Op(SETITEMS));
    }
}

//! The decoder: a pickle virtual machine that builds a [`Pickle`] arena instead of objects.
//! It never imports, calls or executes anything; every allocation is checked against
//! [`Limits`] and against the input that remains; no input makes it panic.

use std::collections::HashMap;

use super::error::{At, Limit, Limits, PickleError};
use super::ops::*;
use super::text;
use super::value::{Node, NodeId, Pickle};

/// Decodes one pickle with the default [`Limits`]. Bytes after `STOP` are ignored, as Python does.
pub fn decode(data: &[u8]) -> Result<Pickle, PickleError> {
    decode_with(data, &Limits::default()).map(|(p, _)| p)
}

/// Decodes one pickle; also returns how many bytes it took (up to and including `STOP`).
pub fn decode_with(data: &[u8], limits: &Limits) -> Result<(Pickle, usize), PickleError> {
    if data.len() > limits.max_input_bytes {
        return Err(PickleError::LimitExceeded {
            at: At {
                pos: 0,
                opcode: None,
            },
            limit: Limit::InputBytes,
        });
    }
    let mut vm = Vm {
        data,
        pos: 0,
        limits,
        nodes: Vec::new(),
        depth: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        at: At {
            pos: 0,
            opcode: None,
        },
    };
    let root = vm.run()?;
    Ok((
        Pickle {
            nodes: vm.nodes,
            root,
        },
        vm.pos,
    ))
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    limits: &'a Limits,
    nodes: Vec<Node>,
    /// Nesting depth of each node when it was last built or extended.
    depth: Vec<u32>,
    stack: Vec<NodeId>,
    /// Stack lengths at each MARK (CPython's metastack).
    marks: Vec<usize>,
    memo: HashMap<u64, NodeId>,
    at: At,
}

type R<T> = Result<T, PickleError>;

impl<'a> Vm<'a> {
    fn err_limit(&self, limit: Limit) -> PickleError {
        PickleError::LimitExceeded { at: self.at, limit }
    }

    fn malformed(&self, what: &'static str) -> PickleError {
        PickleError::Malformed { at: self.at, what }
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(PickleError::Truncated { at: self.at }),
        }
    }

    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> R<[u8; N]> {
        let mut b = [0u8; N];
        b.copy_from_slice(self.take(N)?);
        Ok(b)
    }

    /// A length prefix, checked against the allocation limit and the remaining input.
    fn len_checked(&mut self, n: u64) -> R<usize> {
        if n > self.limits.max_alloc as u64 {
            return Err(self.err_limit(Limit::Alloc));
        }
        let n = n as usize;
        if n > self.data.len() - self.pos {
            return Err(PickleError::Truncated { at: self.at });
        }
        Ok(n)
    }

    fn sized(&mut self, n: u64) -> R<&'a [u8]> {
        let n = self.len_checked(n)?;
        self.take(n)
    }

    /// One `\n`-terminated line (without the newline).
    fn line(&mut self) -> R<&'a [u8]> {
        let rest = &self.data[self.pos..];
        match rest.iter().position(|&c| c == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => Err(PickleError::Truncated { at: self.at }),
        }
    }

    fn line_str(&mut self) -> R<&'a str> {
        let l = self.line()?;
        std::str::from_utf8(l).map_err(|_| self.malformed("text line is not UTF-8"))
    }

    fn new_node(&mut self, node: Node) -> R<NodeId> {
        if self.nodes.len() >= self.limits.max_nodes {
            return Err(self.err_limit(Limit::Nodes));
        }
        let d = node
            .children()
            .iter()
            .map(|c| self.depth[c.index()] + 1)
            .max()
            .unwrap_or(0);
        if d as usize > self.limits.max_depth {
            return Err(self.err_limit(Limit::Depth));
        }
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(node);
        self.depth.push(d);
        Ok(id)
    }

    fn push(&mut self, node: Node) -> R<()> {
        let id = self.new_node(node)?;
        self.stack.push(id);
        Ok(())
    }

    /// The lowest stack index usable now (above the last MARK).
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> R<NodeId> {
        if self.stack.len() <= self.floor() {
            return Err(PickleError::StackUnderflow { at: self.at });
        }
        self.stack
            .pop()
            .ok_or(PickleError::StackUnderflow { at: self.at })
    }

    fn top(&self) -> R<NodeId> {
        if self.stack.len() <= self.floor() {
            return Err(PickleError::StackUnderflow { at: self.at });
        }
        self.stack
            .last()
            .copied()
            .ok_or(PickleError::StackUnderflow { at: self.at })
    }

    /// Pops everything above the last MARK and the MARK itself.
    fn pop_mark(&mut self) -> R<Vec<NodeId>> {
        let m = self
            .marks
            .pop()
            .ok_or(PickleError::NoMark { at: self.at })?;
        Ok(self.stack.split_off(m.min(self.stack.len())))
    }

    fn pairs(&self, items: Vec<NodeId>) -> R<Vec<(NodeId, NodeId)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("odd number of items for a dict"));
        }
        Ok(items.chunks_exact(2).map(|c| (c[0], c[1])).collect())
    }

    /// Depth bookkeeping after extending `id` with `items`.
    fn deepen(&mut self, id: NodeId, items: &[NodeId]) -> R<()> {
        let d = items
            .iter()
            .map(|c| self.depth[c.index()] + 1)
            .max()
            .unwrap_or(0)
            .max(self.depth[id.index()]);
        if d as usize > self.limits.max_depth {
            return Err(self.err_limit(Limit::Depth));
        }
        self.depth[id.index()] = d;
        Ok(())
    }

    /// Moves node `id`'s content to a fresh node and puts `make(fresh)` in its place, so every
    /// reference to `id` (stack, memo, containers) sees the mutated object.
    fn rewrite(&mut self, id: NodeId, make: impl FnOnce(NodeId) -> Node) -> R<()> {
        let old = std::mem::replace(&mut self.nodes[id.index()], Node::None);
        let moved = self.new_node(old)?;
        self.depth[moved.index()] = self.depth[id.index()];
        self.nodes[id.index()] = make(moved);
        Ok(())
    }

    fn memo_put(&mut self, index: u64, id: NodeId) -> R<()> {
        if !self.memo.contains_key(&index) && self.memo.len() >= self.limits.max_memo {
            return Err(self.err_limit(Limit::Memo));
        }
        self.memo.insert(index, id);
        Ok(())
    }

    fn memo_get(&mut self, index: u64) -> R<()> {
        match self.memo.get(&index) {
            Some(&id) => {
                self.stack.push(id);
                Ok(())
            }
            None => Err(PickleError::MissingMemo { at: self.at, index }),
        }
    }

    fn text_index(&mut self) -> R<u64> {
        let l = self.line_str()?;
        l.trim()
            .parse::<u64>()
            .map_err(|_| self.malformed("bad memo index"))
    }

    fn int_node(&self, le: Vec<u8>) -> Node {
        match text::le_to_i64(&le) {
            Some(v) => Node::Int(v),
            None => Node::BigInt(le),
        }
    }

    fn decimal(&self, s: &str) -> R<Node> {
        if s.len() > self.limits.max_int_digits + 1 {
            return Err(self.err_limit(Limit::IntDigits));
        }
        if let Ok(v) = s.parse::<i64>() {
            return Ok(Node::Int(v));
        }
        let le = text::decimal_to_le(s).ok_or_else(|| self.malformed("bad integer literal"))?;
        Ok(self.int_node(le))
    }

    fn global(&mut self) -> R<Node> {
        let module = self.line_str()?.to_owned();
        let name = self.line_str()?.to_owned();
        Ok(Node::Global { module, name })
    }

    /// A Python-2 `str` (`STRING`, `BINSTRING`, `SHORT_BINSTRING`): a `Str` when it is UTF-8,
    /// `Bytes` otherwise (Python 3 would decode it as ASCII by default).
    fn py2_str(b: Vec<u8>) -> Node {
        match String::from_utf8(b) {
            Ok(s) => Node::Str(s),
            Err(e) => Node::Bytes(e.into_bytes()),
        }
    }

    fn run(&mut self) -> R<NodeId> {
        loop {
            self.at = At {
                pos: self.pos,
                opcode: None,
            };
            let op = self.u8()?;
            self.at.opcode = Some(op);
            match op {
                STOP => return self.pop(),
                PROTO => {
                    let v = self.u8()?;
                    if v > 4 {
                        return Err(PickleError::Unsupported {
                            at: self.at,
                            what: "pickle protocol above 4",
                        });
                    }
                }
                FRAME => {
                    let n = u64::from_le_bytes(self.le::<8>()?);
                    if n > (self.data.len() - self.pos) as u64 {
                        return Err(PickleError::Truncated { at: self.at });
                    }
                }
                BYTEARRAY8 | NEXT_BUFFER | READONLY_BUFFER => {
                    return Err(PickleError::Unsupported {
                        at: self.at,
                        what: "protocol 5 opcode",
                    })
                }
                MARK => {
                    if self.marks.len() >= self.limits.max_depth {
                        return Err(self.err_limit(Limit::Depth));
                    }
                    self.marks.push(self.stack.len());
                }
                POP => {
                    if self.stack.len() <= self.floor() && !self.marks.is_empty() {
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                POP_MARK => {
                    self.pop_mark()?;
                }
                DUP => {
                    let t = self.top()?;
                    self.stack.push(t);
                }
                NONE => self.push(Node::None)?,
                NEWTRUE => self.push(Node::Bool(true))?,
                NEWFALSE => self.push(Node::Bool(false))?,
                INT => {
                    let l = self.line_str()?.trim();
                    let node = match l {
                        "01" => Node::Bool(true),
                        "00" => Node::Bool(false),
                        _ => self.decimal(l)?,
                    };
                    self.push(node)?
                }
                LONG => {
                    let l = self.line_str()?.trim();
                    let l = l.strip_suffix('L').unwrap_or(l);
                    let node = self.decimal(l)?;
                    self.push(node)?
                }
                BININT => {
                    let v = i32::from_le_bytes(self.le::<4>()?);
                    self.push(Node::Int(i64::from(v)))?
                }
                BININT1 => {
                    let v = self.u8()?;
                    self.push(Node::Int(i64::from(v)))?
                }
                BININT2 => {
                    let v = u16::from_le_bytes(self.le::<2>()?);
                    self.push(Node::Int(i64::from(v)))?
                }
                LONG1 | LONG4 => {
                    let n = if op == LONG1 {
                        u64::from(self.u8()?)
                    } else {
                        let n = i32::from_le_bytes(self.le::<4>()?);
                        if n < 0 {
                            return Err(self.malformed("negative LONG4 length"));
                        }
                        n as u64
                    };
                    let mut b = self.sized(n)?.to_vec();
                    text::minimise(&mut b);
                    let node = self.int_node(b);
                    self.push(node)?
                }
                FLOAT => {
                    let l = self.line_str()?.trim();
                    let v = l
                        .parse::<f64>()
                        .map_err(|_| self.malformed("bad float literal"))?;
                    self.push(Node::Float(v))?
                }
                BINFLOAT => {
                    let v = f64::from_be_bytes(self.le::<8>()?);
                    self.push(Node::Float(v))?
                }
                STRING => {
                    let l = self.line()?;
                    let body = match l {
                        [q, body @ .., q2] if (*q == b'\'' || *q == b'"') && q == q2 => body,
                        _ => return Err(self.malformed("STRING not quoted")),
                    };
                    let b = text::escape_decode(body)
                        .ok_or_else(|| self.malformed("bad escape in STRING"))?;
                    self.push(Self::py2_str(b))?
                }
                BINSTRING | SHORT_BINSTRING => {
                    let n = if op == BINSTRING {
                        let n = i32::from_le_bytes(self.le::<4>()?);
                        if n < 0 {
                            return Err(self.malformed("negative BINSTRING length"));
                        }
                        n as u64
                    } else {
                        u64::from(self.u8()?)
                    };
                    let b = self.sized(n)?.to_vec();
                    self.push(Self::py2_str(b))?
                }
                UNICODE => {
                    let l = self.line()?;
                    let s = text::raw_unicode_escape_decode(l)
                        .ok_or_else(|| self.malformed("bad escape in UNICODE"))?;
                    self.push(Node::Str(s))?
                }
                SHORT_BINUNICODE | BINUNICODE | BINUNICODE8 => {
                    let n = match op {
                        SHORT_BINUNICODE => u64::from(self.u8()?),
                        BINUNICODE => u64::from(u32::from_le_bytes(self.le::<4>()?)),
                        _ => u64::from_le_bytes(self.le::<8>()?),
                    };
                    let b = self.sized(n)?;
                    let s = std::str::from_utf8(b)
                        .map_err(|_| self.malformed("string is not UTF-8"))?
                        .to_owned();
                    self.push(Node::Str(s))?
                }
                SHORT_BINBYTES | BINBYTES | BINBYTES8 => {
                    let n = match op {
                        SHORT_BINBYTES => u64::from(self.u8()?),
                        BINBYTES => u64::from(u32::from_le_bytes(self.le::<4>()?)),
                        _ => u64::from_le_bytes(self.le::<8>()?),
                    };
                    let b = self.sized(n)?.to_vec();
                    self.push(Node::Bytes(b))?
                }
                EMPTY_TUPLE => self.push(Node::Tuple(Vec::new()))?,
                TUPLE1 | TUPLE2 | TUPLE3 => {
                    let n = usize::from(op - TUPLE1 + 1);
                    if self.stack.len() < self.floor() + n {
                        return Err(PickleError::StackUnderflow { at: self.at });
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Node::Tuple(items))?
                }
                TUPLE => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items))?
                }
                EMPTY_LIST => self.push(Node::List(Vec::new()))?,
                LIST => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items))?
                }
                EMPTY_DICT => self.push(Node::Dict(Vec::new()))?,
                DICT => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push(Node::Dict(pairs))?
                }
                EMPTY_SET => self.push(Node::Set(Vec::new()))?,
                FROZENSET => {
                    let items = self.pop_mark()?;
                    self.push(Node::FrozenSet(items))?
                }
                APPEND => {
                    let v = self.pop()?;
                    let target = self.top()?;
                    self.extend(target, vec![v], Ext::Append)?
                }
                APPENDS => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.extend(target, items, Ext::Append)?
                }
                SETITEM => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let target = self.top()?;
                    self.extend(target, vec![k, v], Ext::SetItem)?
                }
                SETITEMS => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.extend(target, items, Ext::SetItem)?
                }
                ADDITEMS => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.extend(target, items, Ext::Add)?
                }
                BUILD => {
                    let state = self.pop()?;
                    let obj = self.top()?;
                    self.rewrite(obj, |moved| Node::Build { obj: moved, state })?;
                    self.deepen(obj, &[state])?;
                }
                GLOBAL => {
                    let g = self.global()?;
                    self.push(g)?
                }
                STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Node::Str(m), Node::Str(n)) =
                        (&self.nodes[module.index()], &self.nodes[name.index()])
                    else {
                        return Err(self.malformed("STACK_GLOBAL operands are not strings"));
                    };
                    let g = Node::Global {
                        module: m.clone(),
                        name: n.clone(),
                    };
                    self.push(g)?
                }
                REDUCE => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.push(Node::Reduce { callable, args })?
                }
                NEWOBJ => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    self.push(Node::NewObj {
                        cls,
                        args,
                        kwargs: None,
                    })?
                }
                NEWOBJ_EX => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    self.push(Node::NewObj {
                        cls,
                        args,
                        kwargs: Some(kwargs),
                    })?
                }
                INST => {
                    let g = self.global()?;
                    let items = self.pop_mark()?;
                    let callable = self.new_node(g)?;
                    let args = self.new_node(Node::Tuple(items))?;
                    self.push(Node::Reduce { callable, args })?
                }
                OBJ => {
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return Err(PickleError::StackUnderflow { at: self.at });
                    }
                    let callable = items.remove(0);
                    let args = self.new_node(Node::Tuple(items))?;
                    self.push(Node::Reduce { callable, args })?
                }
                PERSID => {
                    let l = self.line()?;
                    let s = String::from_utf8(l.to_vec())
                        .map_err(|_| self.malformed("persistent id is not UTF-8"))?;
                    let pid = self.new_node(Node::Str(s))?;
                    self.push(Node::PersistentId(pid))?
                }
                BINPERSID => {
                    let pid = self.pop()?;
                    self.push(Node::PersistentId(pid))?
                }
                EXT1 => {
                    let c = self.u8()?;
                    self.push(Node::Ext(u32::from(c)))?
                }
                EXT2 => {
                    let c = u16::from_le_bytes(self.le::<2>()?);
                    self.push(Node::Ext(u32::from(c)))?
                }
                EXT4 => {
                    let c = u32::from_le_bytes(self.le::<4>()?);
                    self.push(Node::Ext(c))?
                }
                PUT => {
                    let i = self.text_index()?;
                    let t = self.top()?;
                    self.memo_put(i, t)?
                }
                BINPUT => {
                    let i = u64::from(self.u8()?);
                    let t = self.top()?;
                    self.memo_put(i, t)?
                }
                LONG_BINPUT => {
                    let i = u64::from(u32::from_le_bytes(self.le::<4>()?));
                    let t = self.top()?;
                    self.memo_put(i, t)?
                }
                MEMOIZE => {
                    let i = self.memo.len() as u64;
                    let t = self.top()?;
                    self.memo_put(i, t)?
                }
                GET => {
                    let i = self.text_index()?;
                    self.memo_get(i)?
                }
                BINGET => {
                    let i = u64::from(self.u8()?);
                    self.memo_get(i)?
                }
                LONG_BINGET => {
                    let i = u64::from(u32::from_le_bytes(self.le::<4>()?));
                    self.memo_get(i)?
                }
                _ => return Err(PickleError::UnknownOpcode { at: self.at }),
            }
        }
    }

    /// APPEND(S), SETITEM(S), ADDITEMS on `target`: in place on a plain list, dict or set (or a
    /// node already recording such post-operations); otherwise `target` becomes an opaque
    /// post-operation node wrapping its old content.
    fn extend(&mut self, target: NodeId, items: Vec<NodeId>, kind: Ext) -> R<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.deepen(target, &items)?;
        let node = &mut self.nodes[target.index()];
        match (kind, node) {
            (Ext::Append, Node::List(v))
            | (Ext::Append, Node::Appends { items: v, .. })
            | (Ext::Add, Node::Set(v))
            | (Ext::Add, Node::AddItems { items: v, .. }) => {
                v.extend(items);
                Ok(())
            }
            (Ext::SetItem, Node::Dict(p)) | (Ext::SetItem, Node::SetItems { pairs: p, .. }) => {
                if !items.len().is_multiple_of(2) {
                    return Err(PickleError::Malformed {
                        at: self.at,
                        what: "odd number of items for a dict",
                    });
                }
                p.extend(items.chunks_exact(2).map(|c| (c[0], c[1])));
                Ok(())
            }
            (Ext::Append, _) => self.rewrite(target, |obj| Node::Appends { obj, items }),
            (Ext::Add, _) => self.rewrite(target, |obj| Node::AddItems { obj, items }),
            (Ext::SetItem, _) => {
                let pairs = self.pairs(items)?;
                self.rewrite(target, |obj| Node::SetItems { obj, pairs })
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Ext {
    Append,
    SetItem,
    Add,
}

//! Pickle without execution.
//!
//! [`decode`] reads protocols 0–4 into a [`Pickle`]: an arena of [`Node`]s where plain data
//! stays data and everything Python would *call* (globals, `REDUCE`, `NEWOBJ`, `BUILD`, ...)
//! is an opaque node. The memo maps to node ids, so an object reached twice is one node and
//! cycles are plain back-references. [`encode`] writes any node and what it reaches as a
//! standalone protocol 4 pickle. [`to_value`] / [`Pickle::from_value`] convert plain parts to
//! and from [`serde_pickle::Value`]. [`helpers`] builds the few opaque values the legacy
//! protocol needs (datetimes, exceptions, `dill.loads`).
//!
//! The decoder is meant for hostile input: it is bounded by [`Limits`] (input size, nodes,
//! depth, memo, single allocations, text-integer digits), checks every length prefix against
//! the remaining input before allocating, reports a typed [`PickleError`] with the byte offset
//! and opcode, and never panics.
//!
//! ```
//! use zask_compat::pickle::{decode, encode, Node, Pickle};
//!
//! // pickle.dumps({'a': (1, 'x')}, protocol=3)
//! let p = decode(b"\x80\x03}q\x00X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00xq\x02\x86q\x03s.")?;
//! assert_eq!(p.render(p.root), r#"{"a": (1, "x")}"#);
//!
//! // Any subtree is a standalone pickle again.
//! let a = p.dict_get(p.root, "a").unwrap();
//! let bytes = encode(&p, a)?;
//! let q = decode(&bytes)?;
//! assert!(p.isomorphic(a, &q, q.root));
//!
//! // Building an error reply with an opaque exception instance.
//! let mut r = Pickle::new();
//! let exc = r.add_exception("builtins", "KeyError", "x");
//! let key = r.add(Node::Str("result".into()));
//! r.root = r.add(Node::Dict(vec![(key, exc)]));
//! let reply = encode(&r, r.root)?;
//! let back = decode(&reply)?;
//! assert_eq!(back.render(back.root), r#"{"result": Reduce(Global(builtins KeyError), ("x",))}"#);
//! # Ok::<(), zask_compat::pickle::PickleError>(())
//! ```

mod decode;
mod encode;
mod error;
pub mod helpers;
pub mod ops;
mod plain;
mod text;
mod value;

pub use decode::{decode, decode_with};
pub use encode::{encode, encode_with, PROTOCOL};
pub use error::{At, Limit, Limits, PickleError};
pub use plain::{to_value, to_value_with, Opaque};
pub use value::{Node, NodeId, Pickle};

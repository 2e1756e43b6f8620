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

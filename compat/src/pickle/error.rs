//! Errors and resource limits of the pickle codec.

use std::fmt;

/// Resource limits for decoding (and for walking a tree recursively when encoding or
/// converting it). The defaults suit protocol messages; every limit is checked before the
/// memory it guards is allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest input accepted at all, in bytes.
    pub max_input_bytes: usize,
    /// Most nodes the decoded tree may hold.
    pub max_nodes: usize,
    /// Deepest nesting: of MARKs while decoding, of containers in the tree, and of the
    /// recursion when encoding or converting.
    pub max_depth: usize,
    /// Most memo entries.
    pub max_memo: usize,
    /// Largest single allocation taken from a length prefix (string, bytes, big int), in bytes.
    /// A prefix is also checked against the input that remains before anything is allocated.
    pub max_alloc: usize,
    /// Most decimal digits of a text-protocol integer (`INT`/`LONG`), whose conversion is
    /// quadratic in its length (Python's own default limit is 4300).
    pub max_int_digits: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: 256 << 20,
            max_nodes: 4 << 20,
            max_depth: 1000,
            max_memo: 1 << 20,
            max_alloc: 64 << 20,
            max_int_digits: 4300,
        }
    }
}

/// Which limit of [`Limits`] was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    InputBytes,
    Nodes,
    Depth,
    Memo,
    Alloc,
    IntDigits,
}

/// Where in the input an error was found: the offset of the opcode and the opcode byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub pos: usize,
    pub opcode: Option<u8>,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.opcode {
            Some(op) => write!(
                f,
                "at byte {} (opcode {:#04x} {})",
                self.pos,
                op,
                super::ops::name(op)
            ),
            None => write!(f, "at byte {}", self.pos),
        }
    }
}

/// Everything that can go wrong decoding, encoding or converting a pickle.
///
/// None of these is worth retrying with the same input: the data (or tree) itself is at fault,
/// or it is larger than the configured [`Limits`] allow (see [`PickleError::retry_may_help`]).
#[derive(Debug, Clone, PartialEq)]
pub enum PickleError {
    /// The input ended inside an opcode or before `STOP`.
    Truncated { at: At },
    /// A byte that is no opcode of protocols 0–5.
    UnknownOpcode { at: At },
    /// A protocol 5 opcode (out-of-band buffers, `BYTEARRAY8`) or a `PROTO` above 4.
    Unsupported { at: At, what: &'static str },
    /// An opcode needed more stack items than there were (above the last MARK).
    StackUnderflow { at: At },
    /// An opcode needed a MARK and there was none.
    NoMark { at: At },
    /// `GET` of a memo index never `PUT`.
    MissingMemo { at: At, index: u64 },
    /// The input is not a well-formed pickle at this point (bad text line, bad UTF-8,
    /// odd `SETITEMS` count, wrong operand type...).
    Malformed { at: At, what: &'static str },
    /// A limit of [`Limits`] was reached.
    LimitExceeded { at: At, limit: Limit },
    /// Encoding or converting: a node id not in this tree.
    InvalidNode { node: u32 },
    /// Encoding: a cycle that no pickle can express (it passes through no list, dict, set or
    /// BUILD, which are the only objects that exist before their contents).
    UnencodableCycle { node: u32 },
    /// Encoding or converting: the tree is nested deeper than `max_depth`.
    TooDeep { node: u32 },
    /// Converting to plain data: this node has no plain-data equivalent.
    NotPlainData { node: u32, what: &'static str },
}

impl PickleError {
    /// Whether retrying the same operation can help: never, the input itself is at fault.
    /// (A `LimitExceeded` can only pass with larger [`Limits`], which is a different call.)
    pub fn retry_may_help(&self) -> bool {
        false
    }
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PickleError::Truncated { at } => write!(f, "pickle truncated {at}"),
            PickleError::UnknownOpcode { at } => write!(f, "unknown pickle opcode {at}"),
            PickleError::Unsupported { at, what } => write!(f, "unsupported: {what} {at}"),
            PickleError::StackUnderflow { at } => write!(f, "pickle stack underflow {at}"),
            PickleError::NoMark { at } => write!(f, "no MARK on the pickle stack {at}"),
            PickleError::MissingMemo { at, index } => {
                write!(f, "memo index {index} was never stored {at}")
            }
            PickleError::Malformed { at, what } => write!(f, "malformed pickle: {what} {at}"),
            PickleError::LimitExceeded { at, limit } => {
                write!(f, "pickle limit {limit:?} exceeded {at}")
            }
            PickleError::InvalidNode { node } => write!(f, "node {node} is not in the tree"),
            PickleError::UnencodableCycle { node } => {
                write!(f, "node {node} is on a cycle that no pickle can express")
            }
            PickleError::TooDeep { node } => write!(f, "tree too deep at node {node}"),
            PickleError::NotPlainData { node, what } => {
                write!(f, "node {node} is not plain data: {what}")
            }
        }
    }
}

impl std::error::Error for PickleError {}

//! The JSON graph format of the `zask` command (see README): parsing graphs, printing values.
//!
//! A graph file is a JSON object (`{"x": 1, "y": {"task": ["add", "x", 2]}}`) or, for keys that
//! are not strings, an array of `[key, value]` pairs (`[[["x", 1], 1], ["y", ...]]`). A key is a
//! string, an integer, or an array of keys (a tuple key such as `("x", 1)`).
//!
//! Values mirror what a Rust graph holds: `null`, booleans, integers (which must fit in `i64`),
//! other numbers (floats) and strings are literals, and a string naming a key is a reference to
//! it, as in dask; arrays are lists whose elements follow the same rules. Objects are reserved
//! for markers, each with exactly one field:
//!
//! - `{"task": [FUNCTION, ARGS...]}`: a task, `FUNCTION` being a non-empty string;
//! - `{"key": KEY}`: an explicit reference, e.g. to a tuple key;
//! - `{"str": "..."}`: a string that stays literal even if it names a key;
//! - `{"bytes": BASE64}`: raw bytes, in standard base64 with padding;
//! - `{"map": {...}}` or `{"map": [[K, V], ...]}`: a literal map (string keys, or any keys).
//!   Nothing inside a map is taken for a reference: its strings are plain strings, its nested
//!   maps and bytes use the markers above, and `task` and `key` markers are errors.
//!
//! Errors name where they are, e.g. `graph entry "y": argument 2: unknown object marker "foo"
//! (expected one of task, key, str, bytes, map)`; arguments, list items and pairs count from 1.
//!
//! `read.rs` reads graphs and keys (locating every error); `write.rs` writes graphs, keys and
//! values.

use std::fmt;

mod read;
#[cfg(test)]
mod tests;
mod write;

pub use read::{graph_from_json, key_from_json, parse_graph, parse_key_arg, value_from_json};
pub use write::{graph_to_json, key_to_json, value_to_json};

const MARKERS: &str = "task, key, str, bytes, map";

/// A graph file that cannot be read, and where the problem is.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonGraphError {
    pub location: String,
    pub message: String,
}

impl fmt::Display for JsonGraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

impl std::error::Error for JsonGraphError {}

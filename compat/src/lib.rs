//! Compatibility with the 2015 `dask.distributed` wire protocol (ZeroMQ + pickle).
//!
//! For now only its pickle layer: [`pickle`] decodes protocols 0–4 into a tree that keeps
//! globals, constructor calls and shared references as opaque nodes, and encodes any part of
//! that tree again as a standalone pickle. Nothing is ever imported, called or executed.

pub mod pickle;

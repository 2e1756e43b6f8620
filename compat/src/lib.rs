//! Compatibility with the 2015 `dask.distributed` wire protocol (ZeroMQ + pickle).
//!
//! [`pickle`] decodes protocols 0–4 into a tree that keeps globals, constructor calls and
//! shared references as opaque nodes, and encodes any part of that tree again as a standalone
//! pickle. [`legacy`] is the protocol's message layer on top of it: a typed
//! [`legacy::LegacyMessage`] from the two frames a 2015 peer sends, and builders for the
//! replies. Nothing is ever imported, called or executed. This crate is the legacy protocol's
//! codec, at the level of Zask's own protocol module: it knows nothing of Zask.

pub mod legacy;
pub mod pickle;

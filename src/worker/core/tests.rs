//! Unit tests of the worker state machine, driven directly with no sockets, threads or store.

use super::*;

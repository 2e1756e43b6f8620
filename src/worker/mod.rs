//! The worker: a pure state machine (`core`), a thread pool (`executor`) running functions from
//! a `registry`, and the IO layer (`server`) that owns its sockets and its store.

pub mod core;
pub mod executor;
pub mod registry;
pub mod server;

pub use registry::Registry;
pub use server::{Worker, WorkerConfig};

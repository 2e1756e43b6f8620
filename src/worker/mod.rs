//! The worker: a pure state machine (`core`), a thread pool (`executor`) running functions from
//! a `registry`, the IO layer (`server`) that owns its sockets and its store, and the `nanny`
//! that restarts a worker process that dies.

pub mod core;
pub mod executor;
pub mod memory;
pub mod nanny;
pub mod registry;
pub mod runtime;
pub mod server;

pub use registry::Registry;
pub use server::{SpillTo, Worker, WorkerConfig, WorkerError};

//! The scheduler: a pure state machine (`core`) driven by an IO layer (`server`) that owns the
//! two ROUTER sockets (one for workers, one for clients).

pub mod core;
pub mod server;

pub use server::{Scheduler, SchedulerConfig};

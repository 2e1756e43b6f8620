//! The scheduler: a pure state machine (`core`) driven by an IO layer (`server`) that owns the
//! two ROUTER sockets (one for workers, one for clients), the `journal` that lets a
//! restarted scheduler resume, and the `dashboard` (HTTP) that shows snapshots of the core.

pub mod core;
pub mod dashboard;
pub mod journal;
pub mod server;

pub use server::{Scheduler, SchedulerConfig};

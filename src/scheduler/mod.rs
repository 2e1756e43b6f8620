//! The scheduler: a pure state machine (`core`) driven by an IO layer (`server`) that owns the
//! two ROUTER sockets (one for workers, one for clients), and the `journal` that lets a
//! restarted scheduler resume.

pub mod core;
pub mod journal;
pub mod server;

pub use server::{Scheduler, SchedulerConfig};

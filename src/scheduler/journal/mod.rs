//! The scheduler's journal: what a restarted scheduler needs to resume — graphs that clients
//! still wait for, the names of scattered data, stored collections. The core decides what to
//! write (`JournalOp`); `tables.rs` says, purely, which table entries each operation writes
//! and what a set of tables recovers (shared with the simulation, which keeps its tables in
//! memory: `MemoryJournal`); `sled.rs` keeps the tables on disk.

mod sled;
pub mod tables;
mod write;

pub use self::sled::Journal;
pub use tables::MemoryJournal;
pub use write::{JournalError, JournalWrite};

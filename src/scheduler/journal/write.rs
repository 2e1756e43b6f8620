//! What the scheduler's IO loop needs of a journal (`JournalWrite`) and how a journal fails
//! (`JournalError`). Pure: shared by the disk journal and the in-memory one.

use std::fmt;
use std::path::PathBuf;

use crate::scheduler::core::JournalOp;

/// Why the journal could not be opened, read or written.
///
/// Whether retrying can help differs per variant ([`JournalError::retry_may_help`]), as for
/// the storage crate's `StoreError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalError {
    /// Reading or writing the state directory failed (disk full, permission denied, an IO
    /// error), with the backend's message. Retrying can help once the cause is gone.
    Io(String),
    /// Another process (a scheduler still running) holds the state directory. Retrying helps
    /// once it has exited.
    Locked { path: PathBuf },
    /// The state directory's database is damaged beyond skipping an entry. Retrying will not
    /// help: the directory must be repaired or removed.
    Corrupted(String),
}

impl JournalError {
    /// Whether repeating the failed operation unchanged can succeed later.
    pub fn retry_may_help(&self) -> bool {
        matches!(self, JournalError::Io(_) | JournalError::Locked { .. })
    }
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Io(message) => write!(f, "state dir: {message}"),
            JournalError::Locked { path } => write!(
                f,
                "state dir {} is in use by another process (another scheduler?)",
                path.display()
            ),
            JournalError::Corrupted(message) => write!(f, "state dir is damaged: {message}"),
        }
    }
}

impl std::error::Error for JournalError {}

/// Where the scheduler's IO loop makes each batch's journal operations durable before any of
/// the batch's messages leave. A trait so that tests can put a failing journal under the
/// shipped loop.
pub trait JournalWrite {
    fn apply(&self, op: &JournalOp) -> Result<(), JournalError>;
    /// Makes everything applied so far durable.
    fn flush(&self) -> Result<(), JournalError>;
    /// Where the journal lives, for error messages.
    fn location(&self) -> String;
}

impl<T: JournalWrite + ?Sized> JournalWrite for &T {
    fn apply(&self, op: &JournalOp) -> Result<(), JournalError> {
        (**self).apply(op)
    }
    fn flush(&self) -> Result<(), JournalError> {
        (**self).flush()
    }
    fn location(&self) -> String {
        (**self).location()
    }
}

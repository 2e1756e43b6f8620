//! The error a part's own check returns when its tables disagree: its own file, so every part
//! can name it without depending on the checks between parts (`invariants.rs`), which read
//! the parts.

/// A broken invariant of the scheduler core: a bug in the core, never something a peer can
/// cause. Retrying cannot help; the message says which invariant and which task or worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvariantViolation {
    /// The part whose tables disagree ("tasks", "workers", "names", ...).
    pub part: &'static str,
    pub message: String,
}

impl std::fmt::Display for InvariantViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.part, self.message)
    }
}

impl std::error::Error for InvariantViolation {}

impl InvariantViolation {
    /// `part`'s tables disagree, as `message` says.
    pub(super) fn new(part: &'static str, message: String) -> InvariantViolation {
        InvariantViolation { part, message }
    }
}

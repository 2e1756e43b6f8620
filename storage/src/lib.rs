//! Pluggable result store of a Zask worker: the `Store` trait, its error type, and
//! parsing of the CLI store spec (`memory` or `sled:PATH`) into an opened backend.
//!
//! The store behaves like a mutable mapping from byte keys to byte values. Values are
//! already-encoded task results and keys are already-encoded task keys; the store never
//! interprets either, so every backend can be tested with arbitrary bytes.
//!
//! Adding a backend means one new module implementing [`Store`], plus one arm in
//! [`StoreSpec`] and its parser.
//!
//! Backends keep their values in one of two tiers ([`Tier`]): the process's memory or disk.
//! [`MemoryStore`] keeps everything in memory, [`SledStore`] everything on disk, and
//! [`SpillingStore`] keeps values in memory until asked to move one to disk
//! ([`Store::spill`]); which values to move, and when, is its user's decision.

use std::fmt;
use std::path::PathBuf;

mod memory;
mod sled_store;
mod spill;

/// The reference-counted buffer values are handed out in ([`Store::get_shared`]).
pub use bytes::Bytes;
pub use memory::MemoryStore;
pub use sled_store::{open_sled, SledStore};
pub use spill::SpillingStore;

/// Result of every fallible store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// Why a store operation failed.
///
/// Whether retrying can help differs per variant (see each variant, or
/// [`StoreError::retry_may_help`]). A store whose operation failed stays usable: the
/// failed operation changed nothing that `len`/`total_bytes` do not account for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The backend failed, with the backend's own message (disk full, permission
    /// denied, ...). Retrying the same operation can help when the cause was
    /// transient, so callers may retry a bounded number of times.
    Io(String),
    /// The on-disk directory is already held by another open store (another worker
    /// process, or a second handle in this one). Retrying only helps once the holder
    /// has exited; usually the fix is to give each worker its own path.
    Locked {
        /// The directory that could not be locked.
        path: PathBuf,
    },
    /// The backend found corrupted data on disk. Retrying will not help: the data must
    /// be discarded (for example by removing the directory).
    Corrupted(String),
    /// A store spec string could not be parsed. Retrying with the same spec will not
    /// help.
    InvalidSpec {
        /// The spec exactly as given.
        spec: String,
        /// What is wrong with it and what is expected.
        reason: String,
    },
    /// A spilling store's disk tier failed: its directory could not be written or read (disk
    /// full, read-only, removed). The value stays where it was (in memory, for a spill).
    /// Retrying can help when the disk was full and space is freed, not when the directory
    /// is read-only, forbidden or gone (see `retry_may_help`).
    Disk {
        /// The file or directory the operation failed on.
        path: PathBuf,
        /// The operating system's kind of error (`StorageFull`, `ReadOnlyFilesystem`,
        /// `PermissionDenied`, `NotADirectory`, ...).
        kind: std::io::ErrorKind,
        /// What the operation was and the operating system's message.
        message: String,
    },
}

impl StoreError {
    /// Whether repeating the failed operation unchanged can succeed later.
    pub fn retry_may_help(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            StoreError::Io(_) | StoreError::Locked { .. } => true,
            StoreError::Disk { kind, .. } => !matches!(
                kind,
                ErrorKind::PermissionDenied
                    | ErrorKind::ReadOnlyFilesystem
                    | ErrorKind::NotADirectory
                    | ErrorKind::NotFound
            ),
            StoreError::Corrupted(_) | StoreError::InvalidSpec { .. } => false,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io(msg) => write!(f, "store backend error: {msg}"),
            StoreError::Locked { path } => write!(
                f,
                "store directory {} is already in use by another store",
                path.display()
            ),
            StoreError::Corrupted(msg) => write!(f, "store data is corrupted: {msg}"),
            StoreError::InvalidSpec { spec, reason } => {
                write!(f, "invalid store spec {spec:?}: {reason}")
            }
            StoreError::Disk { path, message, .. } => {
                write!(f, "spill disk error at {}: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// Where a stored value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// In this process's memory: it counts against a worker's memory limit.
    Memory,
    /// On disk: read back when asked for, not counted against the memory limit.
    Disk,
}

/// Where a backend puts the values it is given, as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tiers {
    /// Every value in memory, and it stays there ([`MemoryStore`]).
    Memory,
    /// Every value on disk from the start ([`SledStore`]): nothing to spill.
    Disk,
    /// Values arrive in memory and move to disk when [`Store::spill`] is asked to
    /// ([`SpillingStore`]).
    Spilling,
}

/// A worker's result store: a mutable mapping from byte keys to byte values.
///
/// Mutation takes `&mut self` so that backends can keep `len` and `total_bytes` as
/// plain running counters instead of recomputing them. The order of [`Store::keys`]
/// is unspecified and may differ between backends.
pub trait Store: Send {
    /// Backend name for logs/registration, e.g. `"memory"` or `"sled:/path"`.
    fn kind(&self) -> String;
    /// The value stored under `key`, if any: a copy the caller owns.
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>>;
    /// The value stored under `key`, if any, as a shared buffer: a backend that keeps values
    /// in memory hands out the buffer it holds without copying it (a reference count), so a
    /// large value can be sent while it stays stored. The buffer never changes: a later
    /// `set` or `delete` of the key leaves it as it was. Default: `get`'s copy, wrapped.
    fn get_shared(&self, key: &[u8]) -> StoreResult<Option<Bytes>> {
        Ok(self.get(key)?.map(Bytes::from))
    }
    /// Stores `value` under `key`, replacing any previous value. Takes ownership so
    /// that an in-memory backend keeps the buffer without copying it.
    fn set(&mut self, key: &[u8], value: Vec<u8>) -> StoreResult<()>;
    /// Removes `key`; returns whether it was present.
    fn delete(&mut self, key: &[u8]) -> StoreResult<bool>;
    /// Whether `key` is present.
    fn contains(&self, key: &[u8]) -> StoreResult<bool>;
    /// All keys currently stored, in unspecified order.
    fn keys(&self) -> StoreResult<Vec<Vec<u8>>>;
    /// Number of keys stored. O(1).
    fn len(&self) -> usize;
    /// Whether no key is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sum of the lengths of all values currently stored (keys excluded). O(1).
    fn total_bytes(&self) -> u64;
    /// Removes every key.
    fn clear(&mut self) -> StoreResult<()>;
    /// Where this backend puts values. Default: all in memory.
    fn tiers(&self) -> Tiers {
        Tiers::Memory
    }
    /// Where `key`'s value is, `None` if absent. Default: in memory when present.
    fn tier(&self, key: &[u8]) -> StoreResult<Option<Tier>> {
        Ok(self.contains(key)?.then_some(Tier::Memory))
    }
    /// The bytes of the values held in this process's memory (`total_bytes` minus what is
    /// on disk). O(1). Default: every byte.
    fn memory_bytes(&self) -> u64 {
        self.total_bytes()
    }
    /// Moves `key`'s value from memory to disk. `Ok(true)` if it moved; `Ok(false)` if
    /// there was nothing to move (absent, already on disk, or a backend with one tier, the
    /// default). On error nothing moved: the value is still readable where it was.
    fn spill(&mut self, key: &[u8]) -> StoreResult<bool> {
        let _ = key;
        Ok(false)
    }
}

/// A parsed store spec, so that a CLI can reject a bad spec before starting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `memory`: results live in the worker process only.
    Memory,
    /// `sled:PATH`: results live in a sled database directory at `PATH`.
    Sled(PathBuf),
}

impl StoreSpec {
    /// Opens the store this spec names. A sled store is opened fresh (emptied),
    /// because a worker that starts must not serve results left by an earlier run.
    pub fn open(&self) -> StoreResult<Box<dyn Store>> {
        Ok(match self {
            StoreSpec::Memory => Box::new(MemoryStore::new()),
            StoreSpec::Sled(path) => Box::new(SledStore::open_fresh(path)?),
        })
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("memory"),
            StoreSpec::Sled(path) => write!(f, "sled:{}", path.display()),
        }
    }
}

const EXPECTED: &str = r#"expected "memory" or "sled:PATH""#;

/// Parses a CLI store spec: `"memory"` or `"sled:PATH"`. A bad spec gives
/// [`StoreError::InvalidSpec`], whose message names the bad spec and is suitable for
/// printing as is (it also serves as a clap `value_parser`).
pub fn parse_store_spec(spec: &str) -> Result<StoreSpec, StoreError> {
    let invalid = |reason: String| StoreError::InvalidSpec {
        spec: spec.to_string(),
        reason,
    };
    if spec == "memory" {
        return Ok(StoreSpec::Memory);
    }
    // strip_prefix rather than splitting on ':' so paths may themselves contain ':'
    // (e.g. Windows drive letters).
    if let Some(path) = spec.strip_prefix("sled:") {
        if path.is_empty() {
            return Err(invalid(format!("missing path after \"sled:\"; {EXPECTED}")));
        }
        return Ok(StoreSpec::Sled(PathBuf::from(path)));
    }
    if spec == "sled" {
        return Err(invalid(format!("missing path; {EXPECTED}")));
    }
    Err(invalid(format!("unknown store kind; {EXPECTED}")))
}

/// Parses a CLI store spec and opens it; `"sled:PATH"` is opened fresh (emptied).
/// A bad spec gives [`StoreError::InvalidSpec`].
pub fn open_store(spec: &str) -> StoreResult<Box<dyn Store>> {
    parse_store_spec(spec)?.open()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_memory() {
        assert_eq!(parse_store_spec("memory"), Ok(StoreSpec::Memory));
    }

    #[test]
    fn parses_sled_paths() {
        assert_eq!(
            parse_store_spec("sled:/x"),
            Ok(StoreSpec::Sled(PathBuf::from("/x")))
        );
        assert_eq!(
            parse_store_spec("sled:rel/dir"),
            Ok(StoreSpec::Sled(PathBuf::from("rel/dir")))
        );
        assert_eq!(
            parse_store_spec("sled:C:\\data"),
            Ok(StoreSpec::Sled(PathBuf::from("C:\\data")))
        );
    }

    #[test]
    fn bad_specs_name_the_spec() {
        for bad in [
            "sled:", "sled", "foo", "", "Memory", " memory", "memory:", "redis:x",
        ] {
            let err = parse_store_spec(bad).expect_err(bad);
            assert!(matches!(err, StoreError::InvalidSpec { .. }), "{err:?}");
            assert!(!err.retry_may_help());
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("{bad:?}")),
                "message {msg:?} should name spec {bad:?}"
            );
            assert!(
                msg.contains("sled:PATH"),
                "message {msg:?} should say what is expected"
            );
        }
    }

    #[test]
    fn open_store_rejects_bad_spec_with_matchable_error() {
        match open_store("foo") {
            Err(StoreError::InvalidSpec { spec, .. }) => assert_eq!(spec, "foo"),
            Err(other) => panic!("unexpected error {other}"),
            Ok(store) => panic!("opened {}", store.kind()),
        }
        assert!(!StoreError::InvalidSpec {
            spec: "foo".into(),
            reason: "x".into()
        }
        .retry_may_help());
    }

    #[test]
    fn spec_display_round_trips() {
        for spec in ["memory", "sled:/tmp/zask results"] {
            let parsed = parse_store_spec(spec).unwrap();
            assert_eq!(parsed.to_string(), spec);
        }
    }

    #[test]
    fn open_store_memory() {
        let store = open_store("memory").unwrap();
        assert_eq!(store.kind(), "memory");
        assert!(store.is_empty());
    }
}

//! On-disk result store backed by sled, for results too large to keep in memory.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::{Store, StoreError, StoreResult, Tier, Tiers};

/// Result store in a sled database directory.
///
/// `len` and `total_bytes` are running counters, computed by one scan at open and
/// then adjusted from the old value that every sled write returns, so both are O(1).
/// They stay exact because this store is the only handle to its database (sled's
/// directory lock keeps other processes out) and every mutation takes `&mut self`.
///
/// Writes are not flushed one by one: results can be recomputed, so losing the last
/// few hundred milliseconds on a crash is acceptable. Dropping the store flushes.
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
    len: usize,
    total_bytes: u64,
}

impl SledStore {
    /// Opens (creating if needed) the database at `path`, keeping what it holds.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<SledStore> {
        let path = path.as_ref().to_path_buf();
        let db = open_sled(&path)?;
        let mut len = 0usize;
        let mut total_bytes = 0u64;
        for entry in db.iter() {
            let (_key, value) = entry.map_err(backend_error)?;
            len += 1;
            total_bytes += value.len() as u64;
        }
        log::info!(
            "opened sled store at {}: {} results, {} bytes",
            path.display(),
            len,
            total_bytes
        );
        Ok(SledStore {
            db,
            path,
            len,
            total_bytes,
        })
    }

    /// Opens the database at `path` and removes everything in it, so a freshly
    /// started worker never serves results left by an earlier run.
    pub fn open_fresh(path: impl AsRef<Path>) -> StoreResult<SledStore> {
        let mut store = Self::open(path)?;
        if !store.is_empty() {
            log::info!(
                "clearing {} stale results ({} bytes) from {}",
                store.len,
                store.total_bytes,
                store.path.display()
            );
            store.clear()?;
        }
        Ok(store)
    }

    /// The directory this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Maps a sled error to ours. sled's own `Display` already says what went wrong.
fn backend_error(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Corruption { .. } => StoreError::Corrupted(e.to_string()),
        other => StoreError::Io(other.to_string()),
    }
}

/// Opens the sled database at `path`. sled lets go of its directory lock a moment after the
/// last handle drops (its flusher thread ends asynchronously), so a database reopened right
/// away waits briefly (up to 2 s) for the lock instead of failing. Shared by every sled user
/// in Zask (this store, the scheduler's journal).
pub fn open_sled(path: &Path) -> StoreResult<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match sled::open(path).map_err(|e| open_error(e, path)) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Like [`backend_error`], but recognises sled's failure to take the directory lock.
/// sled reports that only as an `io::Error` of kind `Other` whose message starts
/// "could not acquire lock", so the message is the only thing to match on.
fn open_error(e: sled::Error, path: &Path) -> StoreError {
    match &e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Locked {
                path: path.to_path_buf(),
            }
        }
        _ => backend_error(e),
    }
}

impl fmt::Debug for SledStore {
    // sled::Db's Debug prints every entry; the counters are what matters in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("total_bytes", &self.total_bytes)
            .finish()
    }
}

impl Store for SledStore {
    fn kind(&self) -> String {
        format!("sled:{}", self.path.display())
    }

    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let value = self.db.get(key).map_err(backend_error)?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn set(&mut self, key: &[u8], value: Vec<u8>) -> StoreResult<()> {
        let new_len = value.len() as u64;
        // The counters change only after sled has accepted the write, so a failed
        // insert leaves them matching what is on disk.
        let old = self.db.insert(key, value).map_err(backend_error)?;
        match old {
            Some(old) => self.total_bytes -= old.len() as u64,
            None => self.len += 1,
        }
        self.total_bytes += new_len;
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> StoreResult<bool> {
        let old = self.db.remove(key).map_err(backend_error)?;
        Ok(match old {
            Some(old) => {
                self.len -= 1;
                self.total_bytes -= old.len() as u64;
                true
            }
            None => false,
        })
    }

    fn contains(&self, key: &[u8]) -> StoreResult<bool> {
        self.db.contains_key(key).map_err(backend_error)
    }

    fn keys(&self) -> StoreResult<Vec<Vec<u8>>> {
        self.db
            .iter()
            .keys()
            .map(|k| k.map(|k| k.to_vec()).map_err(backend_error))
            .collect()
    }

    fn len(&self) -> usize {
        self.len
    }

    fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    fn clear(&mut self) -> StoreResult<()> {
        // Not `sled::Tree::clear`: it is not atomic and does not report what it
        // removed, so a failure half way would leave the counters wrong. Removing key
        // by key keeps them exact at every step.
        for key in self.db.iter().keys() {
            let key = key.map_err(backend_error)?;
            if let Some(old) = self.db.remove(&key).map_err(backend_error)? {
                self.len -= 1;
                self.total_bytes -= old.len() as u64;
            }
        }
        Ok(())
    }

    fn tiers(&self) -> Tiers {
        Tiers::Disk
    }

    fn tier(&self, key: &[u8]) -> StoreResult<Option<Tier>> {
        Ok(self.contains(key)?.then_some(Tier::Disk))
    }

    fn memory_bytes(&self) -> u64 {
        0
    }
}

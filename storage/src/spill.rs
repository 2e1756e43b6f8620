//! A store in two tiers: values arrive in memory and move to files in a spill directory when
//! asked to (`Store::spill`). Both tiers are readable at all times; which value to move and
//! when is the caller's decision (a Zask worker spills its least recently used results once
//! its memory passes a target).

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::{Store, StoreError, StoreResult, Tier, Tiers};

/// Values in memory, and the others in files of a directory of their own.
///
/// `open` makes a fresh directory for this store inside the one given (so several workers may
/// share a spill directory) and dropping the store removes it: spilled values are never read
/// by another run. One file per spilled value, named by a number (keys can be longer than a
/// file name may be).
///
/// A disk failure (full, read-only, removed directory) is a `StoreError::Disk` naming the
/// path; the operation that failed changed nothing: a value that could not be spilled stays
/// in memory, readable.
pub struct SpillingStore {
    /// Values in memory, as reference-counted buffers (`get_shared` hands them out uncopied).
    memory: HashMap<Vec<u8>, Bytes>,
    /// The sum of the lengths of the values in `memory`.
    memory_bytes: u64,
    /// Spilled keys: the lengths of their values and the numbers of their files.
    disk: HashMap<Vec<u8>, (u64, u64)>,
    /// The number of the next file written.
    next_file: u64,
    /// The sum of the lengths in `disk`.
    disk_bytes: u64,
    /// This store's own directory (inside the one `open` was given).
    dir: PathBuf,
}

/// Distinguishes the directories of stores opened by one process.
static OPENED: AtomicU64 = AtomicU64::new(0);

fn disk_error(path: &Path, what: &str, e: io::Error) -> StoreError {
    StoreError::Disk {
        path: path.to_path_buf(),
        kind: e.kind(),
        message: format!("{what}: {e}"),
    }
}

impl SpillingStore {
    /// A store spilling into a new directory inside `parent` (created if missing). Fails
    /// with `StoreError::Disk` if the directory cannot be made.
    pub fn open(parent: impl AsRef<Path>) -> StoreResult<SpillingStore> {
        let parent = parent.as_ref();
        fs::create_dir_all(parent)
            .map_err(|e| disk_error(parent, "making the spill directory", e))?;
        let n = OPENED.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("zask-spill-{}-{n}", std::process::id()));
        if dir.exists() {
            // Left by an earlier process with the same pid: nothing in it is ours to serve.
            fs::remove_dir_all(&dir)
                .map_err(|e| disk_error(&dir, "removing a stale spill directory", e))?;
        }
        fs::create_dir(&dir).map_err(|e| disk_error(&dir, "making the spill directory", e))?;
        log::info!("spilling to {}", dir.display());
        Ok(SpillingStore {
            memory: HashMap::new(),
            memory_bytes: 0,
            disk: HashMap::new(),
            disk_bytes: 0,
            next_file: 0,
            dir,
        })
    }

    /// The directory spilled values are written to (removed when the store is dropped).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bytes of the values on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    fn file(&self, number: u64) -> PathBuf {
        self.dir.join(format!("{number}.value"))
    }

    /// Removes `key`'s file; the counters change only once it is gone.
    fn delete_from_disk(&mut self, key: &[u8]) -> StoreResult<bool> {
        let Some(&(len, number)) = self.disk.get(key) else {
            return Ok(false);
        };
        let path = self.file(number);
        match fs::remove_file(&path) {
            Ok(()) => {}
            // Gone already (someone cleaned the directory): it is not on disk either way.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(disk_error(&path, "removing a spilled value", e)),
        }
        self.disk.remove(key);
        self.disk_bytes -= len;
        Ok(true)
    }
}

impl fmt::Debug for SpillingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpillingStore")
            .field("dir", &self.dir)
            .field("in_memory", &self.memory.len())
            .field("memory_bytes", &self.memory_bytes)
            .field("on_disk", &self.disk.len())
            .field("disk_bytes", &self.disk_bytes)
            .finish()
    }
}

impl Drop for SpillingStore {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!(
                    "could not remove spill directory {}: {e}",
                    self.dir.display()
                );
            }
        }
    }
}

impl Store for SpillingStore {
    fn kind(&self) -> String {
        format!("spill:{}", self.dir.display())
    }

    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        if let Some(v) = self.memory.get(key) {
            return Ok(Some(v.to_vec()));
        }
        let Some(&(_, number)) = self.disk.get(key) else {
            return Ok(None);
        };
        let path = self.file(number);
        fs::read(&path)
            .map(Some)
            .map_err(|e| disk_error(&path, "reading a spilled value", e))
    }

    fn get_shared(&self, key: &[u8]) -> StoreResult<Option<Bytes>> {
        if let Some(v) = self.memory.get(key) {
            return Ok(Some(v.clone()));
        }
        // A value on disk is read into a buffer of its own (no copy beyond the read).
        Ok(self.get(key)?.map(Bytes::from))
    }

    fn set(&mut self, key: &[u8], value: Vec<u8>) -> StoreResult<()> {
        // A new value starts in memory; an older one on disk goes first, so a failure leaves
        // the old value in place.
        self.delete_from_disk(key)?;
        let new_len = value.len() as u64;
        let value = Bytes::from(value);
        if let Some(slot) = self.memory.get_mut(key) {
            self.memory_bytes -= slot.len() as u64;
            *slot = value;
        } else {
            self.memory.insert(key.to_vec(), value);
        }
        self.memory_bytes += new_len;
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> StoreResult<bool> {
        if let Some(old) = self.memory.remove(key) {
            self.memory_bytes -= old.len() as u64;
            return Ok(true);
        }
        self.delete_from_disk(key)
    }

    fn contains(&self, key: &[u8]) -> StoreResult<bool> {
        Ok(self.memory.contains_key(key) || self.disk.contains_key(key))
    }

    fn keys(&self) -> StoreResult<Vec<Vec<u8>>> {
        Ok(self
            .memory
            .keys()
            .chain(self.disk.keys())
            .cloned()
            .collect())
    }

    fn len(&self) -> usize {
        self.memory.len() + self.disk.len()
    }

    fn total_bytes(&self) -> u64 {
        self.memory_bytes + self.disk_bytes
    }

    fn clear(&mut self) -> StoreResult<()> {
        let spilled: Vec<Vec<u8>> = self.disk.keys().cloned().collect();
        for key in spilled {
            self.delete_from_disk(&key)?;
        }
        self.memory = HashMap::new();
        self.memory_bytes = 0;
        Ok(())
    }

    fn tiers(&self) -> Tiers {
        Tiers::Spilling
    }

    fn tier(&self, key: &[u8]) -> StoreResult<Option<Tier>> {
        Ok(if self.memory.contains_key(key) {
            Some(Tier::Memory)
        } else if self.disk.contains_key(key) {
            Some(Tier::Disk)
        } else {
            None
        })
    }

    fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    fn spill(&mut self, key: &[u8]) -> StoreResult<bool> {
        let Some(value) = self.memory.get(key) else {
            return Ok(false);
        };
        let number = self.next_file;
        let path = self.file(number);
        if let Err(e) = fs::write(&path, &value[..]) {
            // Half a file is no value: remove what was written (best effort), keep the
            // value in memory.
            let _ = fs::remove_file(&path);
            return Err(disk_error(&path, "writing a spilled value", e));
        }
        let value = self.memory.remove(key).expect("looked up above");
        let len = value.len() as u64;
        self.memory_bytes -= len;
        self.disk.insert(key.to_vec(), (len, number));
        self.disk_bytes += len;
        self.next_file += 1;
        Ok(true)
    }
}

//! Part: held data, the core's index of the store: the size and origin of each value this
//! worker holds (results of its tasks, copies fetched from peers, scattered values). The
//! runner writes and deletes the values themselves; a key is here exactly when the core has
//! asked for it to be stored and not deleted since. Their sizes add up to `total_bytes`.
//!
//! Each value is in memory or on disk (spilled, or written by a store that lives on disk), and
//! the sizes of those in memory add up to `memory_bytes`, what the memory limit (`memory.rs`)
//! is measured against. Every use of a value (a task's input, a fetch, a gather) stamps it, so
//! the least recently used values are the first to be spilled.

use rustc_hash::FxHashMap as HashMap;

use super::InvariantViolation;
use crate::graph::Key;
use crate::protocol::HeldKey;

#[derive(Clone, Copy, Debug)]
pub(super) struct Held {
    pub(super) nbytes: u64,
    /// `spec_hash` of the task that made it, `SCATTERED`, or `UNKNOWN_ORIGIN` for a copy.
    pub(super) origin: u64,
    /// On disk rather than in this process's memory.
    pub(super) on_disk: bool,
    /// When it was last used (stored, read): a count of uses, not a time.
    last_use: u64,
}

#[derive(Default)]
pub(super) struct HeldData {
    values: HashMap<Key, Held>,
    /// The sum of `nbytes` over `values`.
    total_bytes: u64,
    /// The sum of `nbytes` over the `values` in memory.
    memory_bytes: u64,
    /// Uses counted so far: the stamp of the next use.
    uses: u64,
}

impl HeldData {
    /// A value is stored (in memory, or on disk when `on_disk`); it counts as just used.
    pub(super) fn insert(&mut self, key: Key, nbytes: u64, origin: u64, on_disk: bool) {
        self.uses += 1;
        let held = Held {
            nbytes,
            origin,
            on_disk,
            last_use: self.uses,
        };
        if let Some(old) = self.values.insert(key, held) {
            self.uncount(&old);
        }
        self.total_bytes += nbytes;
        if !on_disk {
            self.memory_bytes += nbytes;
        }
    }

    fn uncount(&mut self, held: &Held) {
        self.total_bytes -= held.nbytes;
        if !held.on_disk {
            self.memory_bytes -= held.nbytes;
        }
    }

    pub(super) fn remove(&mut self, key: &Key) -> Option<Held> {
        let held = self.values.remove(key)?;
        self.uncount(&held);
        Some(held)
    }

    /// `key` is read (an input, a fetch, a gather): it becomes the most recently used.
    pub(super) fn touch(&mut self, key: &Key) {
        if let Some(held) = self.values.get_mut(key) {
            self.uses += 1;
            held.last_use = self.uses;
        }
    }

    /// The sizes of every value held, added up.
    pub(super) fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The sizes of the values held in memory, added up.
    pub(super) fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    /// The sizes of the values held on disk, added up.
    pub(super) fn disk_bytes(&self) -> u64 {
        self.total_bytes - self.memory_bytes
    }

    /// Marks the least recently used values in memory as on disk until those left in memory
    /// add up to at most `target_bytes`; returns them, least recently used first.
    pub(super) fn spill_until(&mut self, target_bytes: u64) -> Vec<(Key, u64)> {
        if self.memory_bytes <= target_bytes {
            return Vec::new();
        }
        let mut in_memory: Vec<(u64, &Key)> = self
            .values
            .iter()
            .filter(|(_, h)| !h.on_disk)
            .map(|(k, h)| (h.last_use, k))
            .collect();
        in_memory.sort_unstable();
        let mut left = self.memory_bytes;
        let mut chosen = Vec::new();
        for (_, key) in in_memory {
            if left <= target_bytes {
                break;
            }
            let nbytes = self.values[key].nbytes;
            left -= nbytes;
            chosen.push((key.clone(), nbytes));
        }
        for (key, nbytes) in &chosen {
            self.values
                .get_mut(key)
                .expect("chosen from values")
                .on_disk = true;
            self.memory_bytes -= nbytes;
        }
        chosen
    }

    /// `key` could not be spilled after all: it is in memory. False if it is not held or not
    /// on disk.
    pub(super) fn back_in_memory(&mut self, key: &Key) -> bool {
        match self.values.get_mut(key) {
            Some(held) if held.on_disk => {
                held.on_disk = false;
                self.memory_bytes += held.nbytes;
                true
            }
            _ => false,
        }
    }

    /// The keys of the values on disk.
    pub(super) fn on_disk(&self) -> Vec<Key> {
        self.values
            .iter()
            .filter(|(_, h)| h.on_disk)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether `key` is held on disk.
    pub(super) fn is_on_disk(&self, key: &Key) -> bool {
        self.values.get(key).is_some_and(|h| h.on_disk)
    }

    /// Held data's own invariant: `total_bytes` is the sum of the sizes, `memory_bytes` the
    /// sum of those in memory.
    pub(super) fn check(&self) -> Result<(), InvariantViolation> {
        let counted: u64 = self.values.values().map(|h| h.nbytes).sum();
        if counted != self.total_bytes {
            return Err(InvariantViolation::HeldBytes {
                counted,
                total: self.total_bytes,
            });
        }
        let in_memory: u64 = self
            .values
            .values()
            .filter(|h| !h.on_disk)
            .map(|h| h.nbytes)
            .sum();
        if in_memory != self.memory_bytes {
            return Err(InvariantViolation::MemoryBytes {
                counted: in_memory,
                total: self.memory_bytes,
            });
        }
        Ok(())
    }

    /// Tests only: pretends the total is `n`, to show the check catching it.
    #[cfg(test)]
    pub(super) fn corrupt_total(&mut self, n: u64) {
        self.total_bytes = n;
    }

    pub(super) fn contains(&self, key: &Key) -> bool {
        self.values.contains_key(key)
    }

    pub(super) fn nbytes(&self, key: &Key) -> Option<u64> {
        self.values.get(key).map(|h| h.nbytes)
    }

    pub(super) fn len(&self) -> usize {
        self.values.len()
    }

    /// What the store holds, as the registration lists it.
    pub(super) fn listing(&self) -> Vec<HeldKey> {
        self.values
            .iter()
            .map(|(key, held)| HeldKey {
                key: key.clone(),
                origin: held.origin,
                nbytes: held.nbytes,
            })
            .collect()
    }

    /// Forgets every value, returning their keys (for the runner to delete).
    pub(super) fn clear(&mut self) -> Vec<Key> {
        self.total_bytes = 0;
        self.memory_bytes = 0;
        self.values.drain().map(|(k, _)| k).collect()
    }
}

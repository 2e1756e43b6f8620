//! Part: held data, the core's index of the store: the size and origin of each value this
//! worker holds (results of its tasks, copies fetched from peers, scattered values). The
//! runner writes and deletes the values themselves; a key is here exactly when the core has
//! asked for it to be stored and not deleted since. Their sizes add up to `total_bytes`, what
//! the memory limit (`memory.rs`) is measured against.

use rustc_hash::FxHashMap as HashMap;

use super::InvariantViolation;
use crate::graph::Key;
use crate::protocol::HeldKey;

#[derive(Clone, Copy, Debug)]
pub(super) struct Held {
    pub(super) nbytes: u64,
    /// `spec_hash` of the task that made it, `SCATTERED`, or `UNKNOWN_ORIGIN` for a copy.
    pub(super) origin: u64,
}

#[derive(Default)]
pub(super) struct HeldData {
    values: HashMap<Key, Held>,
    /// The sum of `nbytes` over `values`.
    total_bytes: u64,
}

impl HeldData {
    pub(super) fn insert(&mut self, key: Key, nbytes: u64, origin: u64) {
        if let Some(old) = self.values.insert(key, Held { nbytes, origin }) {
            self.total_bytes -= old.nbytes;
        }
        self.total_bytes += nbytes;
    }

    pub(super) fn remove(&mut self, key: &Key) -> Option<Held> {
        let held = self.values.remove(key)?;
        self.total_bytes -= held.nbytes;
        Some(held)
    }

    /// The sizes of every value held, added up.
    pub(super) fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Held data's own invariant: `total_bytes` is the sum of the sizes.
    pub(super) fn check(&self) -> Result<(), InvariantViolation> {
        let counted: u64 = self.values.values().map(|h| h.nbytes).sum();
        if counted != self.total_bytes {
            return Err(InvariantViolation::HeldBytes {
                counted,
                total: self.total_bytes,
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
        self.values.drain().map(|(k, _)| k).collect()
    }
}

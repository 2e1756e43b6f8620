//! Part: held data, the core's index of the store: the size and origin of each value this
//! worker holds (results of its tasks, copies fetched from peers, scattered values). The
//! runner writes and deletes the values themselves; a key is here exactly when the core has
//! asked for it to be stored and not deleted since.

use rustc_hash::FxHashMap as HashMap;

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
}

impl HeldData {
    pub(super) fn insert(&mut self, key: Key, nbytes: u64, origin: u64) {
        self.values.insert(key, Held { nbytes, origin });
    }

    pub(super) fn remove(&mut self, key: &Key) -> Option<Held> {
        self.values.remove(key)
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
        self.values.drain().map(|(k, _)| k).collect()
    }
}

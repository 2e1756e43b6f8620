//! In-memory result store: results live only as long as the worker process.

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;

use crate::{Store, StoreResult};

/// Result store backed by a `HashMap`, with the byte total kept as a running counter. Values
/// are reference-counted buffers: `set` keeps the given `Vec` without copying it and
/// `get_shared` hands it out without copying it.
#[derive(Default)]
pub struct MemoryStore {
    map: HashMap<Vec<u8>, Bytes>,
    total_bytes: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Debug for MemoryStore {
    // Listing every result would flood logs; the counters are what matters there.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("len", &self.map.len())
            .field("total_bytes", &self.total_bytes)
            .finish()
    }
}

impl Store for MemoryStore {
    fn kind(&self) -> String {
        "memory".to_string()
    }

    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.map.get(key).map(|v| v.to_vec()))
    }

    fn get_shared(&self, key: &[u8]) -> StoreResult<Option<Bytes>> {
        Ok(self.map.get(key).cloned())
    }

    fn set(&mut self, key: &[u8], value: Vec<u8>) -> StoreResult<()> {
        let new_len = value.len() as u64;
        let value = Bytes::from(value);
        // Replacing in place avoids allocating a copy of a key that is already there.
        if let Some(slot) = self.map.get_mut(key) {
            self.total_bytes -= slot.len() as u64;
            *slot = value;
        } else {
            self.map.insert(key.to_vec(), value);
        }
        self.total_bytes += new_len;
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> StoreResult<bool> {
        Ok(match self.map.remove(key) {
            Some(old) => {
                self.total_bytes -= old.len() as u64;
                true
            }
            None => false,
        })
    }

    fn contains(&self, key: &[u8]) -> StoreResult<bool> {
        Ok(self.map.contains_key(key))
    }

    fn keys(&self) -> StoreResult<Vec<Vec<u8>>> {
        Ok(self.map.keys().cloned().collect())
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    fn clear(&mut self) -> StoreResult<()> {
        // Replace rather than `clear()` so the table's capacity is returned too: a worker
        // clears to free memory, not to refill the same amount.
        self.map = HashMap::new();
        self.total_bytes = 0;
        Ok(())
    }
}

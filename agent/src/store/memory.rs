//! An in-memory [`Store`] for tests and as the last resort when no disk store can be opened:
//! the same policy as the sled store, nothing survives a restart.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::{Class, Store, StoreError};

#[derive(Default)]
pub struct MemoryStore {
    records: Mutex<[BTreeMap<u64, Vec<u8>>; 3]>,
    dead: Mutex<BTreeMap<u64, Vec<u8>>>,
    counters: Mutex<HashMap<String, u64>>,
    next_id: AtomicU64,
}

impl MemoryStore {
    fn records(&self) -> std::sync::MutexGuard<'_, [BTreeMap<u64, Vec<u8>>; 3]> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dead(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Vec<u8>>> {
        self.dead.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Up to `limit` entries with ids above `after`, in id order.
pub(super) fn read_after<V>(
    entries: &BTreeMap<u64, V>,
    after: Option<u64>,
    limit: usize,
    bytes: impl Fn(&V) -> &Vec<u8>,
) -> Vec<(u64, Vec<u8>)> {
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    entries
        .range((start, Bound::Unbounded))
        .take(limit)
        .map(|(k, v)| (*k, bytes(v).clone()))
        .collect()
}

impl Store for MemoryStore {
    fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn insert(&self, class: Class, id: u64, value: &[u8]) -> Result<(), StoreError> {
        self.records()[class as usize].insert(id, value.to_vec());
        Ok(())
    }

    fn remove(&self, class: Class, id: u64) -> Result<Option<usize>, StoreError> {
        Ok(self.records()[class as usize].remove(&id).map(|v| v.len()))
    }

    fn newest_id(&self, class: Class) -> Result<Option<u64>, StoreError> {
        Ok(self.records()[class as usize]
            .last_key_value()
            .map(|(k, _)| *k))
    }

    fn oldest(&self, class: Class) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self.records()[class as usize]
            .first_key_value()
            .map(|(k, v)| (*k, v.clone())))
    }

    fn after(
        &self,
        class: Class,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Ok(read_after(
            &self.records()[class as usize],
            after,
            limit,
            |v| v,
        ))
    }

    fn measure(&self, class: Class, after: Option<u64>) -> Result<(u64, u64), StoreError> {
        let records = self.records();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(records[class as usize]
            .range((start, Bound::Unbounded))
            .fold((0, 0), |(n, bytes), (_, v)| (n + 1, bytes + v.len() as u64)))
    }

    fn counter(&self, name: &str) -> Result<u64, StoreError> {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        Ok(counters.get(name).copied().unwrap_or(0))
    }

    fn set_counter(&self, name: &str, value: u64) -> Result<(), StoreError> {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        counters.insert(name.to_string(), value);
        Ok(())
    }

    fn insert_dead(&self, id: u64, value: &[u8]) -> Result<(), StoreError> {
        self.dead().insert(id, value.to_vec());
        Ok(())
    }

    fn remove_dead(&self, id: u64) -> Result<Option<usize>, StoreError> {
        Ok(self.dead().remove(&id).map(|v| v.len()))
    }

    fn dead_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Ok(read_after(&self.dead(), after, limit, |v| v))
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        0
    }
}

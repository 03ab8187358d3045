//! Write-behind in front of a disk store: spares the flash the records that are delivered before
//! they would have been made durable.
//!
//! With the broker reachable, a summary is acknowledged milliseconds after it is appended, long
//! before the next flush (`outbox.flush_interval`). Writing it to sled anyway, then removing it,
//! costs the flash both writes for nothing: at 1,000 tags summarised every second that was about
//! 11 GiB a day. Records therefore wait in memory, and a flush moves to the store only those still
//! unacknowledged that were already waiting at the flush before it, then syncs it. A record that
//! was being delivered when one flush came thus gets until the next one to be acknowledged: a
//! flush that lands while a burst of summaries is on its way writes none of them.
//!
//! Invariants:
//! - **Durable within two flushes.** A record is durable once the second [`Store::flush`] after
//!   its insertion returned (an alert: the first one); [`Store::lowest_pending`] names the oldest
//!   record not yet durable, so the outbox never reports one as durable too early. Two flushes
//!   in a row move everything (a clean stop does that).
//! - **Bounded memory.** At most `max_staged` bytes wait in memory; beyond them records go to the
//!   store at once (a flush that keeps failing, a disk that is full, cannot make memory grow).
//! - **One view.** Reads merge the staged records with the store's, in id order; a record is in
//!   one of the two, never both.
//! - **No empty syncs.** A flush with nothing staged and nothing written to the store since the
//!   last one does not sync (no fsync every second on an idle or fully delivered outbox).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::memory::read_after;
use super::{Class, Store, StoreError};

/// Bytes kept in memory at most, by default: many flush intervals of the reference load.
pub const MAX_STAGED: u64 = 1 << 20;

pub struct WriteBehind {
    inner: Box<dyn Store>,
    staged: Mutex<Staged>,
    max_staged: u64,
    /// The store was written since its last flush.
    dirty: AtomicBool,
}

#[derive(Default)]
struct Staged {
    /// Each record with the flush count when it was staged.
    records: [BTreeMap<u64, (Vec<u8>, u64)>; 3],
    bytes: u64,
    /// Flushes so far.
    flushes: u64,
}

impl WriteBehind {
    pub fn new(inner: Box<dyn Store>, max_staged: u64) -> WriteBehind {
        WriteBehind {
            inner,
            staged: Mutex::default(),
            max_staged,
            dirty: AtomicBool::new(false),
        }
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, Staged> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn written<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        self.dirty.store(true, Ordering::Relaxed);
        result
    }
}

impl Store for WriteBehind {
    fn next_id(&self) -> Result<u64, StoreError> {
        self.inner.next_id()
    }

    fn insert(&self, class: Class, id: u64, value: &[u8]) -> Result<(), StoreError> {
        let mut staged = self.staged();
        if staged.bytes + value.len() as u64 > self.max_staged {
            drop(staged);
            return self.written(self.inner.insert(class, id, value));
        }
        staged.bytes += value.len() as u64;
        let flushes = staged.flushes;
        staged.records[class as usize].insert(id, (value.to_vec(), flushes));
        Ok(())
    }

    fn remove(&self, class: Class, id: u64) -> Result<Option<usize>, StoreError> {
        let mut staged = self.staged();
        if let Some((value, _)) = staged.records[class as usize].remove(&id) {
            staged.bytes -= value.len() as u64;
            return Ok(Some(value.len()));
        }
        drop(staged);
        self.written(self.inner.remove(class, id))
    }

    fn newest_id(&self, class: Class) -> Result<Option<u64>, StoreError> {
        let staged = self.staged().records[class as usize]
            .last_key_value()
            .map(|(k, _)| *k);
        Ok(staged.max(self.inner.newest_id(class)?))
    }

    fn oldest(&self, class: Class) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let staged = self.staged().records[class as usize]
            .first_key_value()
            .map(|(k, (v, _))| (*k, v.clone()));
        let stored = self.inner.oldest(class)?;
        Ok(match (staged, stored) {
            (Some(s), Some(d)) => Some(if s.0 < d.0 { s } else { d }),
            (s, d) => s.or(d),
        })
    }

    fn after(
        &self,
        class: Class,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut merged = self.inner.after(class, after, limit)?;
        merged.extend(read_after(
            &self.staged().records[class as usize],
            after,
            limit,
            |(value, _)| value,
        ));
        merged.sort_unstable_by_key(|(id, _)| *id);
        merged.truncate(limit);
        Ok(merged)
    }

    fn measure(&self, class: Class, after: Option<u64>) -> Result<(u64, u64), StoreError> {
        let (depth, bytes) = self.inner.measure(class, after)?;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let staged = self.staged();
        Ok(staged.records[class as usize]
            .range((start, Bound::Unbounded))
            .fold((depth, bytes), |(n, b), (_, (v, _))| {
                (n + 1, b + v.len() as u64)
            }))
    }

    fn counter(&self, name: &str) -> Result<u64, StoreError> {
        self.inner.counter(name)
    }

    fn set_counter(&self, name: &str, value: u64) -> Result<(), StoreError> {
        self.written(self.inner.set_counter(name, value))
    }

    fn insert_dead(&self, id: u64, value: &[u8]) -> Result<(), StoreError> {
        self.written(self.inner.insert_dead(id, value))
    }

    fn remove_dead(&self, id: u64) -> Result<Option<usize>, StoreError> {
        self.written(self.inner.remove_dead(id))
    }

    fn dead_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.dead_after(after, limit)
    }

    /// Moves what was staged before the previous flush (alerts: everything) to the store, then
    /// syncs it. A record the store refuses stays staged (and the error is returned): the next
    /// flush tries again.
    fn flush(&self) -> Result<(), StoreError> {
        {
            let mut staged = self.staged();
            let previous = staged.flushes;
            staged.flushes += 1;
            for class in Class::ALL {
                let due: Vec<u64> = staged.records[class as usize]
                    .iter()
                    .filter(|(_, (_, at))| class == Class::Alert || *at < previous)
                    .map(|(id, _)| *id)
                    .collect();
                for id in due {
                    let Some((value, at)) = staged.records[class as usize].remove(&id) else {
                        continue;
                    };
                    if let Err(error) = self.inner.insert(class, id, &value) {
                        staged.records[class as usize].insert(id, (value, at));
                        return Err(error);
                    }
                    staged.bytes -= value.len() as u64;
                    self.dirty.store(true, Ordering::Relaxed);
                }
            }
        }
        if self.dirty.swap(false, Ordering::Relaxed) {
            if let Err(error) = self.inner.flush() {
                self.dirty.store(true, Ordering::Relaxed);
                return Err(error);
            }
        }
        Ok(())
    }

    fn lowest_pending(&self) -> Option<u64> {
        let staged = self.staged();
        staged
            .records
            .iter()
            .filter_map(|records| records.first_key_value().map(|(id, _)| *id))
            .min()
    }

    fn size_on_disk(&self) -> u64 {
        self.inner.size_on_disk()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// A memory store that counts what reaches it and can be told to fail.
    #[derive(Default)]
    struct Counted {
        store: MemoryStore,
        inserts: AtomicUsize,
        removes: AtomicUsize,
        syncs: AtomicUsize,
        failing: AtomicBool,
    }

    impl Store for Arc<Counted> {
        fn next_id(&self) -> Result<u64, StoreError> {
            self.store.next_id()
        }
        fn insert(&self, class: Class, id: u64, value: &[u8]) -> Result<(), StoreError> {
            if self.failing.load(Ordering::Relaxed) {
                return Err(StoreError::Backend("disk full".into()));
            }
            self.inserts.fetch_add(1, Ordering::Relaxed);
            self.store.insert(class, id, value)
        }
        fn remove(&self, class: Class, id: u64) -> Result<Option<usize>, StoreError> {
            self.removes.fetch_add(1, Ordering::Relaxed);
            self.store.remove(class, id)
        }
        fn newest_id(&self, class: Class) -> Result<Option<u64>, StoreError> {
            self.store.newest_id(class)
        }
        fn oldest(&self, class: Class) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
            self.store.oldest(class)
        }
        fn after(
            &self,
            class: Class,
            after: Option<u64>,
            limit: usize,
        ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
            self.store.after(class, after, limit)
        }
        fn measure(&self, class: Class, after: Option<u64>) -> Result<(u64, u64), StoreError> {
            self.store.measure(class, after)
        }
        fn counter(&self, name: &str) -> Result<u64, StoreError> {
            self.store.counter(name)
        }
        fn set_counter(&self, name: &str, value: u64) -> Result<(), StoreError> {
            self.store.set_counter(name, value)
        }
        fn insert_dead(&self, id: u64, value: &[u8]) -> Result<(), StoreError> {
            self.store.insert_dead(id, value)
        }
        fn remove_dead(&self, id: u64) -> Result<Option<usize>, StoreError> {
            self.store.remove_dead(id)
        }
        fn dead_after(
            &self,
            after: Option<u64>,
            limit: usize,
        ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
            self.store.dead_after(after, limit)
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.syncs.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        fn size_on_disk(&self) -> u64 {
            0
        }
    }

    fn ids(records: Vec<(u64, Vec<u8>)>) -> Vec<u64> {
        records.into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn records_delivered_before_the_flush_never_reach_the_store() {
        let disk = Arc::new(Counted::default());
        let store = WriteBehind::new(Box::new(Arc::clone(&disk)), 1 << 20);
        for id in 1..=5 {
            store
                .insert(Class::Summary, id, b"summary")
                .expect("insert");
        }
        for id in 1..=3 {
            assert_eq!(store.remove(Class::Summary, id).expect("remove"), Some(7));
        }
        store.flush().expect("flush");
        assert_eq!(
            disk.inserts.load(Ordering::Relaxed),
            0,
            "they get until the next flush"
        );
        assert_eq!(store.lowest_pending(), Some(4), "not durable yet");
        store.flush().expect("flush");
        assert_eq!(
            disk.inserts.load(Ordering::Relaxed),
            2,
            "only the two not delivered"
        );
        assert_eq!(store.lowest_pending(), None);
        assert_eq!(disk.removes.load(Ordering::Relaxed), 0);
        assert_eq!(disk.syncs.load(Ordering::Relaxed), 1);
        store.flush().expect("flush");
        assert_eq!(
            disk.syncs.load(Ordering::Relaxed),
            1,
            "nothing new: no sync"
        );
        // Reads see the store and the staged records as one stream, in id order.
        store.insert(Class::Summary, 6, b"summary").expect("insert");
        assert_eq!(
            ids(store.after(Class::Summary, None, 10).expect("read")),
            [4, 5, 6]
        );
        assert_eq!(
            ids(store.after(Class::Summary, Some(4), 1).expect("read")),
            [5]
        );
        assert_eq!(
            store.oldest(Class::Summary).expect("oldest").map(|r| r.0),
            Some(4)
        );
        assert_eq!(store.newest_id(Class::Summary).expect("newest"), Some(6));
        assert_eq!(
            store.measure(Class::Summary, None).expect("measure"),
            (3, 21)
        );
        assert_eq!(store.remove(Class::Summary, 4).expect("remove"), Some(7));
        assert_eq!(
            disk.removes.load(Ordering::Relaxed),
            1,
            "a stored one is removed there"
        );
    }

    #[test]
    fn memory_is_bounded_and_a_failing_flush_keeps_the_records() {
        let disk = Arc::new(Counted::default());
        let store = WriteBehind::new(Box::new(Arc::clone(&disk)), 20);
        store
            .insert(Class::Alert, 1, b"0123456789")
            .expect("staged");
        store
            .insert(Class::Alert, 2, b"0123456789")
            .expect("staged");
        store
            .insert(Class::Alert, 3, b"0123456789")
            .expect("past the bound");
        assert_eq!(
            disk.inserts.load(Ordering::Relaxed),
            1,
            "the third went straight down"
        );
        assert_eq!(
            ids(store.after(Class::Alert, None, 10).expect("read")),
            [1, 2, 3]
        );
        disk.failing.store(true, Ordering::Relaxed);
        assert!(store.flush().is_err());
        assert_eq!(
            ids(store.after(Class::Alert, None, 10).expect("read")),
            [1, 2, 3],
            "nothing lost"
        );
        disk.failing.store(false, Ordering::Relaxed);
        store.flush().expect("flush");
        assert_eq!(disk.inserts.load(Ordering::Relaxed), 3);
        assert_eq!(disk.syncs.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn an_alert_is_durable_at_the_first_flush_a_summary_at_the_second() {
        let disk = Arc::new(Counted::default());
        let store = WriteBehind::new(Box::new(Arc::clone(&disk)), 1 << 20);
        store.insert(Class::Summary, 1, b"summary").expect("insert");
        store.insert(Class::Alert, 2, b"alert").expect("insert");
        store.flush().expect("flush");
        assert_eq!(
            ids(disk.store.after(Class::Alert, None, 9).expect("read")),
            [2]
        );
        assert!(disk
            .store
            .after(Class::Summary, None, 9)
            .expect("read")
            .is_empty());
        assert_eq!(store.lowest_pending(), Some(1));
        store.flush().expect("flush");
        assert_eq!(
            ids(disk.store.after(Class::Summary, None, 9).expect("read")),
            [1]
        );
    }
}

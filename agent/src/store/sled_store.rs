//! The durable [`Store`]: sled 0.34, one tree per class with big-endian ids as keys (so tree order
//! is id order), a `dead` tree for dead letters, a `meta` tree for the counters, and sled's persisted id generator for ids.
//!
//! Opening never stops the agent: a store that cannot be read (corruption reported by sled, or
//! three opens in a row that never finished because the process died inside sled's recovery) is
//! moved aside to `<dir>.corrupt-<n>` (the first n free) and a fresh one started. A store locked by another
//! running agent is an error: nothing is moved.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{Class, Store, StoreError};

/// Page cache sled may use: the working set is the head of each stream and the tail being
/// appended, so a small cache serves (the whole agent's memory target is 15 MiB).
const CACHE_BYTES: u64 = 1 << 20;

/// Unfinished opens in a row after which the store is presumed to crash sled's recovery.
const MAX_UNFINISHED_OPENS: u32 = 3;

pub struct SledStore {
    db: sled::Db,
    trees: [sled::Tree; 3],
    dead: sled::Tree,
    meta: sled::Tree,
}

/// Why the store at `dir` could not be used as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub moved_to: PathBuf,
    pub why: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the outbox {0} is in use by another process (is another agent running?)")]
    Locked(PathBuf),
    #[error("cannot open the outbox {dir}: {error}")]
    Unusable { dir: PathBuf, error: String },
}

impl SledStore {
    /// Opens the store as it is, without any recovery.
    pub fn open(dir: &Path) -> Result<SledStore, OpenError> {
        let unusable = |error: String| OpenError::Unusable {
            dir: dir.to_path_buf(),
            error,
        };
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            // The agent flushes on its own schedule (and knows what is durable).
            .flush_every_ms(None)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                    OpenError::Locked(dir.to_path_buf())
                }
                other => unusable(other.to_string()),
            })?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| unusable(e.to_string()));
        let trees = [tree("alert")?, tree("event")?, tree("summary")?];
        let dead = tree("dead")?;
        let meta = tree("meta")?;
        Ok(SledStore {
            db,
            trees,
            dead,
            meta,
        })
    }

    /// Opens the store, moving an unreadable one aside and starting afresh.
    pub fn open_or_recover(dir: &Path) -> Result<(SledStore, Option<Recovery>), OpenError> {
        let marker = marker_path(dir);
        let unfinished = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .unwrap_or(0);
        let mut recovery = None;
        if unfinished >= MAX_UNFINISHED_OPENS && dir.exists() {
            recovery = Some(move_aside(
                dir,
                format!("the last {unfinished} attempts to open it never finished"),
            )?);
        }
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| OpenError::Unusable {
                dir: dir.to_path_buf(),
                error: e.to_string(),
            })?;
        }
        let attempts = if recovery.is_some() {
            1
        } else {
            unfinished + 1
        };
        let _ = std::fs::write(&marker, attempts.to_string());
        let opened = match SledStore::open(dir) {
            Err(OpenError::Unusable { error, .. }) if is_corruption(&error) => {
                let moved = move_aside(dir, error)?;
                recovery = Some(moved);
                SledStore::open(dir)
            }
            other => other,
        };
        if opened.is_ok() || matches!(opened, Err(OpenError::Locked(_))) {
            let _ = std::fs::remove_file(&marker);
        }
        opened.map(|store| (store, recovery))
    }

    fn tree(&self, class: Class) -> &sled::Tree {
        &self.trees[class as usize]
    }
}

fn marker_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".opening");
    dir.with_file_name(name)
}

/// Errors that mean the files cannot be read as a sled store (as opposed to permissions, a full
/// disk or a lock, where the data is fine and must stay).
fn is_corruption(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    error.contains("corrupt")
        || error.contains("unexpected end of file")
        || error.contains("failed to fill whole buffer")
        || error.contains("invalid data")
        || error.contains("unsupported")
}

fn move_aside(dir: &Path, why: String) -> Result<Recovery, OpenError> {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(crate::files::aside_suffix(&[dir], "corrupt"));
    let moved_to = dir.with_file_name(name);
    std::fs::rename(dir, &moved_to).map_err(|e| OpenError::Unusable {
        dir: dir.to_path_buf(),
        error: format!("unreadable ({why}) and cannot be moved aside: {e}"),
    })?;
    Ok(Recovery { moved_to, why })
}

fn key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// The first key of the ids above `after`, if there can be any.
fn first_key_after(after: Option<u64>) -> Option<[u8; 8]> {
    match after {
        Some(id) => id.checked_add(1).map(key),
        None => Some(key(0)),
    }
}

/// Up to `limit` entries of `tree` with ids above `after`, in id order.
fn read_after(
    tree: &sled::Tree,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let Some(start) = first_key_after(after) else {
        return Ok(Vec::new());
    };
    tree.range(start..)
        .take(limit)
        .map(|entry| {
            let (k, v) = entry?;
            Ok((id_of(&k)?, v.to_vec()))
        })
        .collect()
}

fn id_of(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Backend(format!("unexpected key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

impl Store for SledStore {
    fn next_id(&self) -> Result<u64, StoreError> {
        // sled starts at 0; the outbox's ids start at 1.
        Ok(self.db.generate_id()? + 1)
    }

    fn insert(&self, class: Class, id: u64, value: &[u8]) -> Result<(), StoreError> {
        self.tree(class).insert(key(id), value)?;
        Ok(())
    }

    fn remove(&self, class: Class, id: u64) -> Result<Option<usize>, StoreError> {
        Ok(self.tree(class).remove(key(id))?.map(|v| v.len()))
    }

    fn newest_id(&self, class: Class) -> Result<Option<u64>, StoreError> {
        match self.tree(class).last()? {
            Some((k, _)) => Ok(Some(id_of(&k)?)),
            None => Ok(None),
        }
    }

    fn oldest(&self, class: Class) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        match self.tree(class).first()? {
            Some((k, v)) => Ok(Some((id_of(&k)?, v.to_vec()))),
            None => Ok(None),
        }
    }

    fn after(
        &self,
        class: Class,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        read_after(self.tree(class), after, limit)
    }

    fn measure(&self, class: Class, after: Option<u64>) -> Result<(u64, u64), StoreError> {
        let (mut count, mut bytes) = (0, 0);
        let Some(start) = first_key_after(after) else {
            return Ok((0, 0));
        };
        for entry in self.tree(class).range(start..) {
            let (_, v) = entry?;
            count += 1;
            bytes += v.len() as u64;
        }
        Ok((count, bytes))
    }

    fn counter(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self
            .meta
            .get(name)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    fn set_counter(&self, name: &str, value: u64) -> Result<(), StoreError> {
        self.meta.insert(name, &value.to_be_bytes())?;
        Ok(())
    }

    fn insert_dead(&self, id: u64, value: &[u8]) -> Result<(), StoreError> {
        self.dead.insert(key(id), value)?;
        Ok(())
    }

    fn remove_dead(&self, id: u64) -> Result<Option<usize>, StoreError> {
        Ok(self.dead.remove(key(id))?.map(|v| v.len()))
    }

    fn dead_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        read_after(&self.dead, after, limit)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

/// Whether an I/O error means the disk is full.
pub fn is_disk_full(error: &std::io::Error) -> bool {
    error.kind() == ErrorKind::StorageFull || error.raw_os_error() == Some(28)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::record;
    use crate::store::Outbox;

    /// Reopens like a restarted agent. sled releases its file lock when its background thread
    /// exits, which can lag the drop on a loaded machine: wait for it (bounded).
    fn open(dir: &Path) -> Outbox {
        let mut attempts = 0;
        let (store, recovery) = loop {
            match SledStore::open_or_recover(dir) {
                Err(OpenError::Locked(_)) if attempts < 100 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other.expect("opens"),
            }
        };
        assert_eq!(recovery, None);
        Outbox::new(Box::new(store), 1 << 20).expect("outbox")
    }

    #[test]
    fn ids_keep_increasing_across_restarts_and_records_and_drops_survive() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("outbox");
        let mut last = 0;
        let mut kept = Vec::new();
        for round in 0..3 {
            let outbox = open(&dir);
            for n in 0..10 {
                let class = if n % 3 == 0 {
                    Class::Alert
                } else {
                    Class::Summary
                };
                let crate::store::Appended::Stored { id, .. } =
                    outbox.append(record(class, n)).expect("append")
                else {
                    panic!("stored");
                };
                assert!(id > last, "round {round}: id {id} after {last}");
                last = id;
                kept.push(id);
            }
            // Acknowledge everything: the next round starts from an empty store.
            for class in Class::ALL {
                for r in outbox.next_after(class, None, 100).expect("read") {
                    outbox.acknowledge(class, r.id).expect("ack");
                }
            }
            assert_eq!(outbox.depth(), 0);
            outbox.flush().expect("flush");
        }

        // Records not acknowledged are still there, in order, after a restart.
        {
            let outbox = open(&dir);
            for n in 0..4 {
                outbox.append(record(Class::Summary, n)).expect("append");
            }
            outbox.flush().expect("flush");
        }
        let outbox = open(&dir);
        let records = outbox.next_after(Class::Summary, None, 10).expect("read");
        assert_eq!(records.len(), 4);
        assert!(records.windows(2).all(|w| w[0].id < w[1].id));
        assert!(records[0].id > last);
        assert_eq!(records[3].payload, record(Class::Summary, 3).payload);
        assert_eq!(outbox.stats().summary.depth, 4);
    }

    #[test]
    fn reopening_counts_from_the_snapshot_and_the_tail_only() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("outbox");
        let expected_bytes;
        {
            let outbox = open(&dir);
            for n in 0..10 {
                outbox.append(record(Class::Summary, n)).expect("append");
            }
            for r in outbox.next_after(Class::Summary, None, 4).expect("read") {
                outbox.acknowledge(Class::Summary, r.id).expect("ack");
            }
            outbox.flush().expect("flush with a snapshot of 6");
            // Appended after the snapshot, and made durable by a later flush of the store.
            for n in 10..13 {
                outbox.append(record(Class::Summary, n)).expect("append");
            }
            expected_bytes = outbox.stats().summary.bytes;
            outbox
                .store
                .flush()
                .expect("store flush without a snapshot");
        }
        let outbox = open(&dir);
        let stats = outbox.stats();
        assert_eq!(stats.summary.depth, 9);
        assert_eq!(stats.summary.bytes, expected_bytes);

        // A snapshot that overstates a class (its removals reached the disk, a newer snapshot did
        // not) heals when the class is found empty.
        for r in outbox.next_after(Class::Summary, None, 100).expect("read") {
            outbox.acknowledge(Class::Summary, r.id).expect("ack");
        }
        assert_eq!(outbox.stats().summary.depth, 0);
        outbox.flush().expect("flush");
        let stale = crate::store::snapshot_key("depth", Class::Summary);
        outbox.store.set_counter(&stale, 5).expect("stale snapshot");
        outbox.store.flush().expect("store flush");
        drop(outbox);
        let outbox = open(&dir);
        assert_eq!(outbox.stats().summary.depth, 5, "overstated");
        outbox.append(record(Class::Summary, 99)).expect("append");
        let id = outbox.next_after(Class::Summary, None, 1).expect("read")[0].id;
        outbox.acknowledge(Class::Summary, id).expect("ack");
        assert_eq!(outbox.stats().summary.depth, 0, "healed");
        assert_eq!(outbox.stats().summary.bytes, 0);
    }

    #[test]
    fn drop_counters_are_persisted() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("outbox");
        {
            let (store, _) = SledStore::open_or_recover(&dir).expect("opens");
            let outbox = Outbox::new(Box::new(store), 200).expect("outbox");
            for n in 0..20 {
                outbox.append(record(Class::Summary, n)).expect("append");
            }
            assert!(outbox.stats().summary.dropped > 0);
            outbox.flush().expect("flush");
        }
        let (store, _) = SledStore::open_or_recover(&dir).expect("opens");
        let outbox = Outbox::new(Box::new(store), 200).expect("outbox");
        let stats = outbox.stats();
        assert_eq!(stats.summary.dropped + stats.summary.depth, 20);
    }

    #[test]
    fn a_second_opener_is_refused_without_touching_the_store() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("outbox");
        let _first = SledStore::open_or_recover(&dir).expect("opens");
        match SledStore::open_or_recover(&dir) {
            Err(OpenError::Locked(path)) => assert_eq!(path, dir),
            other => panic!("expected Locked, got {:?}", other.map(|_| ())),
        }
        assert!(dir.exists());
    }

    #[test]
    fn an_unreadable_store_is_moved_aside_and_a_fresh_one_started() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("outbox");
        {
            let outbox = open(&dir);
            outbox.append(record(Class::Alert, 1)).expect("append");
            outbox.flush().expect("flush");
        }
        // Garbage where sled keeps its configuration and its log.
        for entry in std::fs::read_dir(&dir).expect("dir") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                std::fs::write(&path, b"\xde\xad\xbe\xef not a sled file").expect("write");
            }
        }
        let (store, recovery) = SledStore::open_or_recover(&dir).expect("recovers");
        let recovery = recovery.expect("moved aside");
        assert!(recovery.moved_to.exists(), "{recovery:?}");
        assert!(recovery
            .moved_to
            .to_string_lossy()
            .contains("outbox.corrupt-"));
        let outbox = Outbox::new(Box::new(store), 1 << 20).expect("outbox");
        assert_eq!(outbox.depth(), 0);
        outbox
            .append(record(Class::Alert, 2))
            .expect("a fresh store works");
    }

    #[test]
    fn repeated_unfinished_opens_move_the_store_aside() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("outbox");
        drop(open(&dir));
        std::fs::write(marker_path(&dir), "3").expect("marker");
        let (_store, recovery) = SledStore::open_or_recover(&dir).expect("opens");
        assert!(recovery.expect("moved").why.contains("never finished"));
        assert!(!marker_path(&dir).exists());
    }
}

//! The outbox: the durable, bounded buffer of everything bound upstream.
//!
//! Everything the uplink will send (alerts, events, summaries) is appended here first; the uplink
//! reads from it and removes a record only once the broker has acknowledged it.
//!
//! Invariants (each has a test below or in `sled_store`):
//! - **Monotonic ids.** Every record gets an id greater than every id handed out before, across
//!   restarts and crashes (the sled store persists its id generator and skips ahead on recovery).
//!   Ids are shared by all classes, so an id names one record.
//! - **Removal only on acknowledgement.** [`Outbox::next_after`] reads without removing; only
//!   [`Outbox::acknowledge`] (called on the broker's PUBACK), the full policy, and
//!   [`Outbox::bury`] (which moves a record the broker will not take to the dead letters; see
//!   [`dead_letters`]) remove a record from its stream.
//! - **Order within a stream.** Each [`Class`] is one stream, read in id order.
//! - **Bounded.** The encoded records never exceed `max_bytes`. To make room, the oldest records of
//!   the least important class go first: summaries, then events, then alerts. A record only ever
//!   evicts records of its own or a less important class, so no alert is dropped while a summary
//!   remains. When no room can be made the new record is dropped. Every drop is counted per class;
//!   the counters are persisted and reported upstream.
//! - **Checked.** Each record carries a CRC-32; a record that fails it is removed, counted as
//!   corrupt and reported, never sent.
//! - **Durable on flush.** A record is on disk once [`Outbox::flush`] returned an id at or above
//!   its own; the agent flushes at `outbox.flush_interval`, at once after an alert, and on
//!   shutdown. Behind the agent's write-behind layer ([`write_behind`]) that is the second flush
//!   after its append (an alert's first).
//! - **Cheap to reopen.** Each flush first writes the occupancy (records and bytes per class) and
//!   the last id it covers; opening reads that snapshot and counts only the records above it, so a
//!   large backlog is not read at start-up. A snapshot older than later removals can only
//!   overstate a class; the count of a class is reset when the class is found empty.

pub mod dead_letters;
pub mod memory;
pub mod sled_store;
pub mod write_behind;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::health::assess::{stored_without, StoredWithout};
use crate::records::Report;

pub use dead_letters::{DeadLetter, DeadLetterStats};
pub use memory::MemoryStore;
pub use sled_store::SledStore;
pub use write_behind::WriteBehind;

/// What a record is, which also decides its priority upstream and under the full policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Sent first, never dropped while anything else can make room.
    Alert = 0,
    /// Device up/down, agent start/stop, configuration and store changes.
    Event = 1,
    /// Periodic tag summaries and assessments: the first to go when full.
    Summary = 2,
}

impl Class {
    /// Most important first: the order the uplink drains streams in.
    pub const ALL: [Class; 3] = [Class::Alert, Class::Event, Class::Summary];

    pub fn name(self) -> &'static str {
        match self {
            Class::Alert => "alert",
            Class::Event => "event",
            Class::Summary => "summary",
        }
    }

    fn from_byte(byte: u8) -> Option<Class> {
        Class::ALL.into_iter().find(|c| *c as u8 == byte)
    }
}

/// What a record carries.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a record is made once and moved; boxing every report to shrink the rare raw one buys nothing"
)]
pub enum Payload {
    /// A typed record (store formats 2 and 3): the uplink's encoder decides its topic and bytes.
    Report(Report),
    /// A record that carries its own topic and JSON body: what releases before typed records
    /// wrote (store format 1). Still sent as before after an upgrade, byte for byte.
    Raw {
        /// Full MQTT topic.
        topic: String,
        /// Short name of the payload type (`tags`, `health`, `alert`, `event`).
        kind: String,
        /// JSON document carried as the envelope's `data`.
        body: Vec<u8>,
    },
}

impl Payload {
    /// The payload type's short name (the envelope's `kind`).
    pub fn kind(&self) -> &str {
        match self {
            Payload::Report(report) => report.kind(),
            Payload::Raw { kind, .. } => kind,
        }
    }
}

/// A record to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecord {
    pub class: Class,
    pub created: SystemTime,
    pub payload: Payload,
}

impl NewRecord {
    /// A typed record, in its report's class.
    pub fn report(report: Report, created: SystemTime) -> NewRecord {
        NewRecord {
            class: report.class(),
            created,
            payload: Payload::Report(report),
        }
    }
}

/// A stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: u64,
    pub class: Class,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    pub payload: Payload,
}

impl Record {
    pub fn created(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.created_ms)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("outbox store: {0}")]
    Backend(String),
    #[error("outbox record {id} is corrupt: {why}")]
    Corrupt { id: u64, why: &'static str },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// An ordered key-value store with one keyspace per class, ids as keys. Policy (bounds, priority,
/// counting) lives in [`Outbox`], so every backend behaves the same.
pub trait Store: Send + Sync {
    /// A fresh id, greater than any handed out before (for a durable store: across restarts).
    fn next_id(&self) -> Result<u64, StoreError>;
    fn insert(&self, class: Class, id: u64, value: &[u8]) -> Result<(), StoreError>;
    /// Removes a record; its encoded size if it was there.
    fn remove(&self, class: Class, id: u64) -> Result<Option<usize>, StoreError>;
    /// The largest id stored.
    fn newest_id(&self, class: Class) -> Result<Option<u64>, StoreError>;
    /// The record with the smallest id.
    fn oldest(&self, class: Class) -> Result<Option<(u64, Vec<u8>)>, StoreError>;
    /// Up to `limit` records with ids above `after`, in id order.
    fn after(
        &self,
        class: Class,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// Number of records with ids above `after` and their total encoded size (read when opening).
    fn measure(&self, class: Class, after: Option<u64>) -> Result<(u64, u64), StoreError>;
    fn counter(&self, name: &str) -> Result<u64, StoreError>;
    fn set_counter(&self, name: &str, value: u64) -> Result<(), StoreError>;
    /// The dead-letter area: records the broker will not take, kept (by their id) apart from the
    /// streams until someone retries or drops them.
    fn insert_dead(&self, id: u64, value: &[u8]) -> Result<(), StoreError>;
    fn remove_dead(&self, id: u64) -> Result<Option<usize>, StoreError>;
    /// Up to `limit` dead letters with ids above `after`, in id order.
    fn dead_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// Makes everything written so far durable (a write-behind layer: see [`Store::lowest_pending`]).
    fn flush(&self) -> Result<(), StoreError>;
    /// The lowest id inserted that the last flush did not make durable (none for a plain store).
    fn lowest_pending(&self) -> Option<u64> {
        None
    }
    /// Bytes the store takes on disk (0 for memory).
    fn size_on_disk(&self) -> u64;
}

/// Store format 1: a topic and a JSON body (releases before typed records; still read, and
/// written for [`Payload::Raw`]).
const RAW_VERSION: u8 = 1;
/// Store format 2: a [`Report`] in postcard, from before assessments carried their features
/// (still read).
const REPORT_VERSION_2: u8 = 2;
/// Store format 3: a [`Report`] in postcard, assessments with `features` but before `vibration`
/// (still read).
const REPORT_VERSION_3: u8 = 3;
/// Store format 4: a [`Report`] in postcard (assessments with `features` and `vibration`).
const REPORT_VERSION: u8 = 4;

/// Version, class, created (ms), then for format 1 kind, topic and body, for formats 2 to 4 the report;
/// then a CRC-32 of all of it.
pub fn encode(record: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    match &record.payload {
        Payload::Report(report) => {
            // Measured first, so a large record (a summary of 1,000 tags is 50 KB) is one
            // allocation, not a chain of reallocations.
            let size =
                postcard::serialize_with_flavor(report, postcard::ser_flavors::Size::default())
                    .unwrap_or(0);
            // Version, class and time before it, the CRC after.
            const HEAD: usize = 1 + 1 + 8;
            out.reserve_exact(HEAD + size + 4);
            out.push(REPORT_VERSION);
            out.push(record.class as u8);
            out.extend_from_slice(&record.created_ms.to_be_bytes());
            out.resize(HEAD + size, 0);
            // Into a slice: postcard's `Vec` flavour extends the vector a byte at a time, which
            // at the release build's size optimisation is a call and a capacity check per byte.
            match postcard::to_slice(report, &mut out[HEAD..]) {
                Ok(written) => {
                    let end = HEAD + written.len();
                    out.truncate(end);
                }
                // Only if the size pass disagreed: the CRC then catches the empty record.
                Err(_) => out.clear(),
            }
        }
        Payload::Raw { topic, kind, body } => {
            let kind = &kind.as_bytes()[..kind.len().min(255)];
            let topic = &topic.as_bytes()[..topic.len().min(u16::MAX as usize)];
            out.reserve(17 + kind.len() + topic.len() + body.len());
            out.push(RAW_VERSION);
            out.push(record.class as u8);
            out.extend_from_slice(&record.created_ms.to_be_bytes());
            out.push(kind.len() as u8);
            out.extend_from_slice(kind);
            out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
            out.extend_from_slice(topic);
            out.extend_from_slice(body);
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

pub fn decode(id: u64, bytes: &[u8]) -> Result<Record, StoreError> {
    let corrupt = |why| StoreError::Corrupt { id, why };
    let (content, crc) = bytes.split_last_chunk::<4>().ok_or(corrupt("too short"))?;
    if crc32fast::hash(content) != u32::from_be_bytes(*crc) {
        return Err(corrupt("checksum mismatch"));
    }
    let mut rest = content;
    let mut take = |n: usize| -> Result<&[u8], StoreError> {
        if rest.len() < n {
            return Err(corrupt("truncated"));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let version = take(1)?[0];
    let class = Class::from_byte(take(1)?[0]).ok_or(corrupt("unknown class"))?;
    let created_ms = u64::from_be_bytes(take(8)?.try_into().map_err(|_| corrupt("created"))?);
    let payload = match version {
        REPORT_VERSION => Payload::Report(
            postcard::from_bytes(rest).map_err(|_| corrupt("the report cannot be read"))?,
        ),
        REPORT_VERSION_3 | REPORT_VERSION_2 => {
            let missing = if version == REPORT_VERSION_2 {
                StoredWithout::Features
            } else {
                StoredWithout::Vibration
            };
            Payload::Report(
                stored_without(missing, || postcard::from_bytes(rest))
                    .map_err(|_| corrupt("the report cannot be read"))?,
            )
        }
        RAW_VERSION => {
            let kind_len = take(1)?[0] as usize;
            let kind = String::from_utf8(take(kind_len)?.to_vec()).map_err(|_| corrupt("kind"))?;
            let topic_len = u16::from_be_bytes(take(2)?.try_into().map_err(|_| corrupt("topic"))?);
            let topic = String::from_utf8(take(topic_len as usize)?.to_vec())
                .map_err(|_| corrupt("topic"))?;
            Payload::Raw {
                topic,
                kind,
                body: rest.to_vec(),
            }
        }
        _ => return Err(corrupt("unknown record version")),
    };
    Ok(Record {
        id,
        class,
        created_ms,
        payload,
    })
}

/// Per-class figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassStats {
    pub depth: u64,
    pub bytes: u64,
    /// Records dropped by the full policy since the store was created.
    pub dropped: u64,
}

/// What `millwright outbox`, the `status` command and the agent's reports show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutboxStats {
    pub alert: ClassStats,
    pub event: ClassStats,
    pub summary: ClassStats,
    pub bytes: u64,
    pub max_bytes: u64,
    pub size_on_disk: u64,
    /// RFC 3339 creation time of the oldest record queued.
    pub oldest: Option<String>,
    /// The highest id appended (or found when opening).
    pub last_id: u64,
    /// Records that failed their checksum and were removed.
    pub corrupt: u64,
    /// Appends or flushes the store refused (disk full, I/O errors).
    pub store_errors: u64,
    /// Records the broker would not take, kept apart (see [`dead_letters`]).
    pub dead_letters: DeadLetterStats,
}

impl OutboxStats {
    pub fn class(&self, class: Class) -> &ClassStats {
        match class {
            Class::Alert => &self.alert,
            Class::Event => &self.event,
            Class::Summary => &self.summary,
        }
    }

    pub fn depth(&self) -> u64 {
        self.alert.depth + self.event.depth + self.summary.depth
    }

    pub fn dropped(&self) -> u64 {
        self.alert.dropped + self.event.dropped + self.summary.dropped
    }
}

/// What happened to an appended record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored with this id, after evicting `evicted` older records.
    Stored { id: u64, evicted: u32 },
    /// No room could be made without dropping something more important (or it is larger than the
    /// whole outbox): the new record was dropped and counted.
    Dropped,
}

#[derive(Debug, Default)]
struct Occupancy {
    depth: [u64; 3],
    bytes: [u64; 3],
    dropped: [u64; 3],
    dead: dead_letters::DeadOccupancy,
}

impl Occupancy {
    fn total(&self) -> u64 {
        self.bytes.iter().sum()
    }

    fn level(&self, max_bytes: u64) -> Level {
        Level {
            percent: self.total().saturating_mul(100) / max_bytes.max(1),
            dead_letters: self.dead.depth,
            last_dead_reason: self.dead.last.as_ref().map(|(reason, _)| reason.clone()),
        }
    }
}

/// How full the outbox is, as the agent's health judges it: published on [`Outbox::level`]
/// whenever it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Level {
    /// Bytes queued, in percent of `max_bytes`.
    pub percent: u64,
    /// Records kept in the dead letters.
    pub dead_letters: u64,
    pub last_dead_reason: Option<String>,
}

/// The occupancy, locked; publishes the level when the lock is released, so no change to the
/// occupancy goes unannounced.
struct Locked<'a> {
    occupancy: std::sync::MutexGuard<'a, Occupancy>,
    max_bytes: u64,
    level: &'a watch::Sender<Level>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Occupancy;
    fn deref(&self) -> &Occupancy {
        &self.occupancy
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Occupancy {
        &mut self.occupancy
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let occupancy = &self.occupancy;
        let max_bytes = self.max_bytes;
        self.level.send_if_modified(|level| {
            let same = level.percent == occupancy.total().saturating_mul(100) / max_bytes.max(1)
                && level.dead_letters == occupancy.dead.depth
                && level.last_dead_reason.as_deref()
                    == occupancy.dead.last.as_ref().map(|(r, _)| r.as_str());
            if !same {
                *level = occupancy.level(max_bytes);
            }
            !same
        });
    }
}

/// The outbox: a [`Store`] with the bound, the priority and the counters.
pub struct Outbox {
    store: Box<dyn Store>,
    max_bytes: u64,
    occupancy: Mutex<Occupancy>,
    /// The counts the last occupancy snapshot wrote.
    snapshot: Mutex<Option<([u64; 3], [u64; 3])>>,
    level: watch::Sender<Level>,
    last_id: AtomicU64,
    corrupt: AtomicU64,
    store_errors: AtomicU64,
    complaints: Mutex<Complaints>,
    /// Wakes the uplink when a record was appended.
    pub appended: Notify,
    /// Wakes the flusher when an alert wants to be on disk at once.
    pub urgent: Notify,
}

fn dropped_counter(class: Class) -> &'static str {
    match class {
        Class::Alert => "dropped.alert",
        Class::Event => "dropped.event",
        Class::Summary => "dropped.summary",
    }
}

const CORRUPT_COUNTER: &str = "corrupt";
/// The last id the occupancy snapshot covers.
const SNAPSHOT_THROUGH: &str = "snapshot.through";

fn snapshot_key(what: &str, class: Class) -> String {
    format!("snapshot.{what}.{}", class.name())
}

/// The least time between two log lines about failing or dropped appends.
pub const COMPLAINT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Complaints {
    last: Option<SystemTime>,
    suppressed: u64,
}

impl Outbox {
    /// Wraps a store, reading its occupancy and persisted counters.
    pub fn new(store: Box<dyn Store>, max_bytes: u64) -> Result<Outbox, StoreError> {
        let mut occupancy = Occupancy::default();
        // 0 = no snapshot yet (a store written before snapshots, or never flushed): count it all.
        let snapshot_through = store.counter(SNAPSHOT_THROUGH)?;
        let after = (snapshot_through > 0).then_some(snapshot_through);
        for class in Class::ALL {
            let slot = class as usize;
            let (depth, bytes) = store.measure(class, after)?;
            occupancy.depth[slot] = depth;
            occupancy.bytes[slot] = bytes;
            if after.is_some() {
                occupancy.depth[slot] += store.counter(&snapshot_key("depth", class))?;
                occupancy.bytes[slot] += store.counter(&snapshot_key("bytes", class))?;
            }
            occupancy.dropped[slot] = store.counter(dropped_counter(class))?;
        }
        occupancy.dead = Outbox::measure_dead(store.as_ref())?;
        let corrupt = store.counter(CORRUPT_COUNTER)?;
        let mut last_id = 0;
        for class in Class::ALL {
            last_id = last_id.max(store.newest_id(class)?.unwrap_or(0));
        }
        let (level, _) = watch::channel(occupancy.level(max_bytes));
        Ok(Outbox {
            store,
            max_bytes,
            level,
            snapshot: Mutex::new(None),
            occupancy: Mutex::new(occupancy),
            last_id: AtomicU64::new(last_id),
            corrupt: AtomicU64::new(corrupt),
            store_errors: AtomicU64::new(0),
            complaints: Mutex::new(Complaints::default()),
            appended: Notify::new(),
            urgent: Notify::new(),
        })
    }

    fn lock(&self) -> Locked<'_> {
        Locked {
            occupancy: self.occupancy.lock().unwrap_or_else(|e| e.into_inner()),
            max_bytes: self.max_bytes,
            level: &self.level,
        }
    }

    /// The outbox's level, announced on every change: how the agent's health hears of it.
    pub fn level(&self) -> watch::Receiver<Level> {
        self.level.subscribe()
    }

    /// Appends a record, making room by the full policy. A store failure is counted and returned;
    /// the caller reports it and carries on (acquisition never stops for the outbox).
    pub fn append(&self, new: NewRecord) -> Result<Appended, StoreError> {
        let result = self.append_inner(new);
        if result.is_err() {
            self.store_errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn append_inner(&self, new: NewRecord) -> Result<Appended, StoreError> {
        let class = new.class;
        let mut record = Record {
            id: 0,
            class,
            created_ms: new
                .created
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            payload: new.payload,
        };
        // The id goes into the key, not the value: the value is encoded once, before the id is
        // drawn, and its size decides what has to make room.
        let value = encode(&record);
        let size = value.len() as u64;
        let mut occupancy = self.lock();
        let mut evicted = 0;
        while occupancy.total() + size > self.max_bytes {
            // The least important class with something in it, but never one above the new record.
            let victim = Class::ALL
                .into_iter()
                .rev()
                .take_while(|c| *c >= class)
                .find(|c| occupancy.depth[*c as usize] > 0);
            let Some(victim) = victim else {
                self.count_drop(&mut occupancy, class)?;
                return Ok(Appended::Dropped);
            };
            match self.store.oldest(victim)? {
                Some((id, _)) => {
                    if let Some(len) = self.store.remove(victim, id)? {
                        occupancy.depth[victim as usize] -= 1;
                        occupancy.bytes[victim as usize] -= len as u64;
                    }
                    self.count_drop(&mut occupancy, victim)?;
                    evicted += 1;
                }
                // The counts disagree with the store: trust the store.
                None => {
                    occupancy.depth[victim as usize] = 0;
                    occupancy.bytes[victim as usize] = 0;
                }
            }
        }
        record.id = self.store.next_id()?;
        self.store.insert(class, record.id, &value)?;
        occupancy.depth[class as usize] += 1;
        occupancy.bytes[class as usize] += value.len() as u64;
        self.last_id.fetch_max(record.id, Ordering::Relaxed);
        drop(occupancy);
        self.appended.notify_one();
        if class == Class::Alert {
            self.urgent.notify_one();
        }
        Ok(Appended::Stored {
            id: record.id,
            evicted,
        })
    }

    fn count_drop(&self, occupancy: &mut Occupancy, class: Class) -> Result<(), StoreError> {
        let slot = &mut occupancy.dropped[class as usize];
        *slot += 1;
        self.store.set_counter(dropped_counter(class), *slot)
    }

    /// Up to `limit` records of `class` with ids above `after`, in id order. Corrupt records are
    /// removed, counted and skipped.
    pub fn next_after(
        &self,
        class: Class,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let raw = self.store.after(class, after, limit)?;
        let mut records = Vec::with_capacity(raw.len());
        for (id, bytes) in raw {
            match decode(id, &bytes) {
                Ok(record) => records.push(record),
                Err(error) => {
                    tracing::error!(%error, "removing a corrupt outbox record");
                    self.forget(class, id)?;
                    let corrupt = self.corrupt.fetch_add(1, Ordering::Relaxed) + 1;
                    self.store.set_counter(CORRUPT_COUNTER, corrupt)?;
                }
            }
        }
        Ok(records)
    }

    /// The broker acknowledged the record: it leaves the outbox. Unknown ids (already evicted by
    /// the full policy, or acknowledged twice) are ignored.
    pub fn acknowledge(&self, class: Class, id: u64) -> Result<(), StoreError> {
        self.forget(class, id)
    }

    fn forget(&self, class: Class, id: u64) -> Result<(), StoreError> {
        let slot = class as usize;
        let mut occupancy = self.lock();
        if let Some(len) = self.store.remove(class, id)? {
            occupancy.depth[slot] = occupancy.depth[slot].saturating_sub(1);
            occupancy.bytes[slot] = occupancy.bytes[slot].saturating_sub(len as u64);
        }
        // A snapshot from before removals that reached the disk overstates the class; the truth
        // is known once it is empty.
        if occupancy.depth[slot] > 0 && self.store.newest_id(class)?.is_none() {
            occupancy.depth[slot] = 0;
            occupancy.bytes[slot] = 0;
        }
        Ok(())
    }

    /// Makes every record appended so far durable, with an occupancy snapshot; returns the highest
    /// id that is durable. A failure at any step (the snapshot included) is counted.
    pub fn flush(&self) -> Result<u64, StoreError> {
        self.flush_inner().inspect_err(|_| {
            self.store_errors.fetch_add(1, Ordering::Relaxed);
        })
    }

    fn flush_inner(&self) -> Result<u64, StoreError> {
        let through = {
            let occupancy = self.lock();
            let through = self.last_id.load(Ordering::Relaxed);
            let counts = (occupancy.depth, occupancy.bytes);
            let mut written = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
            // Unchanged counts keep the older snapshot: its `through` is then behind, which can
            // only overstate a class at the next start (see the module invariants), and an
            // outbox whose records all went out is not written to every flush.
            if through > 0 && *written != Some(counts) {
                for class in Class::ALL {
                    let slot = class as usize;
                    self.store
                        .set_counter(&snapshot_key("depth", class), occupancy.depth[slot])?;
                    self.store
                        .set_counter(&snapshot_key("bytes", class), occupancy.bytes[slot])?;
                }
                self.store.set_counter(SNAPSHOT_THROUGH, through)?;
                *written = Some(counts);
            }
            through
        };
        self.store.flush()?;
        Ok(match self.store.lowest_pending() {
            Some(pending) => through.min(pending.saturating_sub(1)),
            None => through,
        })
    }

    pub fn stats(&self) -> OutboxStats {
        let occupancy = self.lock();
        let class_stats = |class: Class| ClassStats {
            depth: occupancy.depth[class as usize],
            bytes: occupancy.bytes[class as usize],
            dropped: occupancy.dropped[class as usize],
        };
        let oldest = Class::ALL
            .into_iter()
            .filter_map(|class| {
                let (id, bytes) = self.store.oldest(class).ok()??;
                decode(id, &bytes).ok().map(|r| r.created_ms)
            })
            .min()
            .map(|ms| {
                humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
            });
        OutboxStats {
            alert: class_stats(Class::Alert),
            event: class_stats(Class::Event),
            summary: class_stats(Class::Summary),
            bytes: occupancy.total(),
            max_bytes: self.max_bytes,
            size_on_disk: self.store.size_on_disk(),
            oldest,
            last_id: self.last_id.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
            store_errors: self.store_errors.load(Ordering::Relaxed),
            dead_letters: self.dead_letter_stats(&occupancy.dead),
        }
    }

    /// Whether a failed or dropped append should be logged now: the first one, then at most one
    /// every [`COMPLAINT_INTERVAL`], saying how many went unlogged in between (a full disk would
    /// otherwise log every summary). Every one is counted in the stats regardless. `now` is the
    /// clock's; a clock that went back counts as the interval passed.
    pub fn complain(&self, now: SystemTime) -> Option<u64> {
        let mut complaints = self.complaints.lock().unwrap_or_else(|e| e.into_inner());
        match complaints.last {
            Some(last)
                if now
                    .duration_since(last)
                    .is_ok_and(|d| d < COMPLAINT_INTERVAL) =>
            {
                complaints.suppressed += 1;
                None
            }
            _ => {
                complaints.last = Some(now);
                Some(std::mem::take(&mut complaints.suppressed))
            }
        }
    }

    /// Records dropped by the full policy, all classes together (cheap: no store access).
    pub fn dropped(&self) -> u64 {
        self.lock().dropped.iter().sum()
    }

    /// Records queued in every class.
    pub fn depth(&self) -> u64 {
        self.lock().depth.iter().sum()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record in the first store format, as releases before typed records wrote them.
    pub fn record(class: Class, n: usize) -> NewRecord {
        NewRecord {
            class,
            created: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + n as u64),
            payload: Payload::Raw {
                topic: format!("e/s/a/l/x/{}", class.name()),
                kind: class.name().into(),
                body: format!("{{\"n\":{n}}}").into_bytes(),
            },
        }
    }

    fn outbox(max_bytes: u64) -> Outbox {
        Outbox::new(Box::new(MemoryStore::default()), max_bytes).expect("outbox")
    }

    fn ids(outbox: &Outbox, class: Class) -> Vec<u64> {
        outbox
            .next_after(class, None, 1000)
            .expect("read")
            .iter()
            .map(|r| r.id)
            .collect()
    }

    #[test]
    fn records_round_trip_and_a_flipped_bit_is_caught() {
        let event = crate::records::Event::new("device_down", serde_json::json!({"x": 1}));
        for new in [
            record(Class::Event, 7),
            NewRecord::report(Report::Event(event), UNIX_EPOCH),
        ] {
            let record = Record {
                id: 42,
                class: new.class,
                created_ms: 1_700_000_007_000,
                payload: new.payload,
            };
            let mut bytes = encode(&record);
            assert_eq!(decode(42, &bytes).expect("decodes"), record);
            bytes[12] ^= 0x10;
            assert!(matches!(
                decode(42, &bytes),
                Err(StoreError::Corrupt { id: 42, .. })
            ));
        }
        assert!(decode(1, &[1, 2]).is_err());
    }

    #[test]
    fn assessments_stored_by_older_releases_still_read() {
        use crate::health::assess::{tests::assessment, Action, Features};
        let mut with = assessment("P-101", Action::ScheduledMaintenance);
        with.features.vibration_severity = Some(0.75);
        let record = |a: crate::health::assess::Assessment| Record {
            id: 9,
            class: Class::Summary,
            created_ms: 1_700_000_009_000,
            payload: Payload::Report(Report::Assessment(a)),
        };
        let current = encode(&record(with.clone()));
        assert_eq!(decode(9, &current).expect("format 4"), record(with.clone()));

        // An older format is the same postcard without the trailing fields added since (one byte
        // each when absent, as they are in a record made without them), under its version.
        let older = |a, dropped: usize, version: u8| {
            let mut bytes = encode(&record(a));
            bytes.truncate(bytes.len() - 4 - dropped);
            bytes[0] = version;
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_be_bytes());
            bytes
        };
        let assessment_of = |bytes: &[u8]| match decode(9, bytes).map(|r| r.payload) {
            Ok(Payload::Report(Report::Assessment(a))) => Some(a),
            _ => None,
        };
        // Format 3: features, no `vibration`.
        let format_3 = older(with.clone(), 1, REPORT_VERSION_3);
        let read = assessment_of(&format_3).expect("format 3");
        assert_eq!(
            (read.features.clone(), read.vibration.clone()),
            (with.features.clone(), None)
        );
        // Format 2: neither features nor `vibration`.
        let bare = crate::health::assess::Assessment {
            features: Box::default(),
            ..with.clone()
        };
        let mut format_2 = older(bare, 1 + 9, REPORT_VERSION_2);
        let old = assessment_of(&format_2).expect("format 2");
        assert_eq!(*old.features, Features::default());
        assert_eq!(
            (old.asset.as_str(), old.reasons.len()),
            ("P-101", with.reasons.len())
        );
        // The same bytes read as the current format run short: the version decides.
        format_2[0] = REPORT_VERSION;
        let n = format_2.len();
        let crc = crc32fast::hash(&format_2[..n - 4]);
        format_2[n - 4..].copy_from_slice(&crc.to_be_bytes());
        assert!(decode(9, &format_2).is_err());
    }

    #[test]
    fn reading_does_not_remove_and_streams_keep_id_order() {
        let outbox = outbox(1 << 20);
        for n in 0..5 {
            outbox.append(record(Class::Summary, n)).expect("append");
            outbox.append(record(Class::Alert, n)).expect("append");
        }
        let summaries = ids(&outbox, Class::Summary);
        assert_eq!(summaries.len(), 5);
        assert!(summaries.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            ids(&outbox, Class::Summary),
            summaries,
            "reads remove nothing"
        );
        let after = outbox
            .next_after(Class::Summary, Some(summaries[1]), 2)
            .expect("read");
        assert_eq!(
            after.iter().map(|r| r.id).collect::<Vec<_>>(),
            &summaries[2..4]
        );
        outbox
            .acknowledge(Class::Summary, summaries[0])
            .expect("ack");
        outbox
            .acknowledge(Class::Summary, summaries[0])
            .expect("a second ack is harmless");
        assert_eq!(ids(&outbox, Class::Summary), &summaries[1..]);
        assert_eq!(outbox.stats().summary.depth, 4);
        assert_eq!(outbox.stats().alert.depth, 5);
    }

    #[test]
    fn full_outbox_drops_oldest_summaries_first_and_never_an_alert_while_a_summary_remains() {
        let size = encode(&Record {
            id: 0,
            class: Class::Summary,
            created_ms: 0,
            payload: record(Class::Summary, 0).payload,
        })
        .len() as u64;
        // Room for ten records of this size.
        let outbox = outbox(size * 10);
        for n in 0..8 {
            outbox.append(record(Class::Summary, n)).expect("append");
        }
        let first_summaries = ids(&outbox, Class::Summary);
        for n in 0..2 {
            outbox.append(record(Class::Alert, n)).expect("append");
        }
        // Full: each further alert evicts the oldest summary.
        for n in 2..7 {
            let appended = outbox.append(record(Class::Alert, n)).expect("append");
            assert!(matches!(appended, Appended::Stored { evicted: 1, .. }));
        }
        assert_eq!(ids(&outbox, Class::Alert).len(), 7);
        assert_eq!(ids(&outbox, Class::Summary), &first_summaries[5..]);
        let stats = outbox.stats();
        assert_eq!(stats.summary.dropped, 5);
        assert_eq!(stats.alert.dropped, 0);
        assert!(stats.bytes <= stats.max_bytes);

        // A summary cannot evict an alert: it is dropped itself, the oldest summary makes room.
        outbox.append(record(Class::Summary, 99)).expect("append");
        assert_eq!(ids(&outbox, Class::Alert).len(), 7);
        assert_eq!(outbox.stats().summary.dropped, 6);

        // Once only alerts remain, a summary is refused and an alert evicts the oldest alert.
        for id in ids(&outbox, Class::Summary) {
            outbox.acknowledge(Class::Summary, id).expect("ack");
        }
        for n in 7..10 {
            outbox.append(record(Class::Alert, n)).expect("append");
        }
        assert_eq!(
            outbox.append(record(Class::Summary, 100)).expect("append"),
            Appended::Dropped
        );
        let alerts_before = ids(&outbox, Class::Alert);
        outbox.append(record(Class::Alert, 10)).expect("append");
        let alerts_after = ids(&outbox, Class::Alert);
        assert_eq!(alerts_after[..9], alerts_before[1..]);
        let stats = outbox.stats();
        assert_eq!(stats.alert.dropped, 1);
        assert_eq!(stats.summary.dropped, 7);
        assert!(stats.bytes <= stats.max_bytes);
    }

    #[test]
    fn a_record_larger_than_the_outbox_is_dropped_and_counted() {
        let outbox = outbox(64);
        let mut big = record(Class::Alert, 1);
        if let Payload::Raw { body, .. } = &mut big.payload {
            *body = vec![b'x'; 100];
        }
        assert_eq!(outbox.append(big).expect("append"), Appended::Dropped);
        assert_eq!(outbox.stats().alert.dropped, 1);
        assert_eq!(outbox.depth(), 0);
    }

    #[test]
    fn complaints_are_throttled_and_count_what_went_unlogged() {
        let outbox = outbox(1 << 20);
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s);
        assert_eq!(outbox.complain(at(0)), Some(0));
        assert_eq!(outbox.complain(at(1)), None);
        assert_eq!(outbox.complain(at(9)), None);
        assert_eq!(outbox.complain(at(10)), Some(2));
        assert_eq!(outbox.complain(at(11)), None);
        assert_eq!(outbox.complain(at(5)), Some(1), "the clock went back");
    }

    #[test]
    fn stats_show_the_oldest_record() {
        let outbox = outbox(1 << 20);
        assert_eq!(outbox.stats().oldest, None);
        outbox.append(record(Class::Summary, 5)).expect("append");
        outbox.append(record(Class::Alert, 9)).expect("append");
        assert_eq!(
            outbox.stats().oldest.as_deref(),
            Some("2023-11-14T22:13:25.000Z")
        );
    }
}

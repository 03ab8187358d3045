//! The outbox's dead-letter area: records the broker will not take.
//!
//! A record that cannot be published — its topic is not a valid MQTT topic, it is larger than a
//! packet may be, or the broker closes the connection every time it is sent — would otherwise sit at
//! the head of its stream for ever, holding back everything behind it. The uplink moves it here
//! with the reason, and the stream goes on.
//!
//! Invariants:
//! - **Nothing accepted is lost silently.** A record moves here in two steps, written here first and
//!   then removed from its stream; a crash in between leaves it in both places, so it is sent (and,
//!   if it fails again, buried) again, never lost. It stays until someone retries it (appended
//!   again at the end of its stream, with a new id) or drops it on purpose.
//! - **Bounded.** The area holds at most [`Outbox::dead_letter_capacity`] bytes (an eighth of the
//!   outbox's size, at least 64 KiB). The oldest dead letters make room; each one dropped is
//!   counted, and the counts survive restarts.
//! - **Checked.** Each dead letter carries a CRC-32 of its reason, the topic it was refused on and
//!   its record (which keeps its own), like every record in the outbox.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{decode, encode, Appended, NewRecord, Outbox, Payload, Record, StoreError};

/// Format 1 (before typed records) kept no topic: the record carried it.
const DEAD_VERSION_1: u8 = 1;
const DEAD_VERSION: u8 = 2;
const TOTAL_COUNTER: &str = "dead.total";
const DROPPED_COUNTER: &str = "dead.dropped";
/// Dead letters read at a time when scanning the area.
const BATCH: usize = 256;

/// A record the broker would not take, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub record: Record,
    /// The topic it was to be published on.
    pub topic: String,
    pub reason: String,
    /// When it was moved here (ms since the Unix epoch).
    pub buried_ms: u64,
}

impl DeadLetter {
    /// What `millwright outbox --dead-letters` and the `dead-letters` command show of one.
    pub fn describe(&self) -> serde_json::Value {
        let record = &self.record;
        serde_json::json!({
            "id": record.id,
            "class": record.class.name(),
            "kind": record.payload.kind(),
            "topic": self.topic,
            "bytes": super::encode(record).len(),
            "created": rfc3339(record.created_ms),
            "buried": rfc3339(self.buried_ms),
            "reason": self.reason,
        })
    }
}

/// What `status`, `millwright outbox` and the health alert show of the area.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterStats {
    /// Dead letters kept now.
    pub depth: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    /// Records ever moved here (since the store was created).
    pub total: u64,
    /// Dead letters dropped to make room for newer ones.
    pub dropped: u64,
    /// The newest dead letter's reason and when it was moved here (RFC 3339).
    pub last_reason: Option<String>,
    pub last_at: Option<String>,
}

/// What the outbox keeps in memory about the area.
#[derive(Debug, Default)]
pub(super) struct DeadOccupancy {
    pub depth: u64,
    pub bytes: u64,
    pub total: u64,
    pub dropped: u64,
    pub last: Option<(String, u64)>,
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Up to 65535 bytes of `text`, at a character boundary.
fn clipped(text: &str) -> &str {
    let mut end = text.len().min(u16::MAX as usize);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Version, time buried, reason, topic, the record as the outbox stores it, then a CRC-32 of all
/// of it.
fn encode_dead(record: &Record, topic: &str, reason: &str, buried_ms: u64) -> Vec<u8> {
    let (reason, topic) = (clipped(reason).as_bytes(), clipped(topic).as_bytes());
    let stored = encode(record);
    let mut out = Vec::with_capacity(17 + reason.len() + topic.len() + stored.len());
    out.push(DEAD_VERSION);
    out.extend_from_slice(&buried_ms.to_be_bytes());
    for text in [reason, topic] {
        out.extend_from_slice(&(text.len() as u16).to_be_bytes());
        out.extend_from_slice(text);
    }
    out.extend_from_slice(&stored);
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out
}

/// A text with its 16-bit length in front, and what follows it.
fn text(bytes: &[u8]) -> Option<(String, &[u8])> {
    let (length, rest) = bytes.split_first_chunk::<2>()?;
    let length = usize::from(u16::from_be_bytes(*length));
    let (text, rest) = (rest.get(..length)?, rest.get(length..)?);
    Some((String::from_utf8_lossy(text).into_owned(), rest))
}

fn decode_dead(id: u64, bytes: &[u8]) -> Result<DeadLetter, StoreError> {
    let corrupt = |why| StoreError::Corrupt { id, why };
    let (content, crc) = bytes.split_last_chunk::<4>().ok_or(corrupt("too short"))?;
    if crc32fast::hash(content) != u32::from_be_bytes(*crc) {
        return Err(corrupt("dead letter checksum mismatch"));
    }
    let (&version, rest) = content.split_first().ok_or(corrupt("truncated"))?;
    if version != DEAD_VERSION && version != DEAD_VERSION_1 {
        return Err(corrupt("unknown dead letter version"));
    }
    let (buried, rest) = rest.split_first_chunk::<8>().ok_or(corrupt("truncated"))?;
    let (reason, rest) = text(rest).ok_or(corrupt("truncated"))?;
    let (topic, stored) = match version {
        DEAD_VERSION => text(rest).ok_or(corrupt("truncated"))?,
        _ => (String::new(), rest),
    };
    let record = decode(id, stored)?;
    let topic = match (&record.payload, topic.is_empty()) {
        (Payload::Raw { topic, .. }, true) => topic.clone(),
        _ => topic,
    };
    Ok(DeadLetter {
        record,
        topic,
        reason,
        buried_ms: u64::from_be_bytes(*buried),
    })
}

impl Outbox {
    /// The most the dead-letter area keeps, in bytes.
    pub fn dead_letter_capacity(&self) -> u64 {
        (self.max_bytes / 8).max(64 << 10)
    }

    /// Reads the area's figures when the outbox opens (the area is small: bounded).
    pub(super) fn measure_dead(store: &dyn super::Store) -> Result<DeadOccupancy, StoreError> {
        let mut occupancy = DeadOccupancy {
            total: store.counter(TOTAL_COUNTER)?,
            dropped: store.counter(DROPPED_COUNTER)?,
            ..DeadOccupancy::default()
        };
        let mut after = None;
        loop {
            let batch = store.dead_after(after, BATCH)?;
            let Some((last_id, _)) = batch.last() else {
                break;
            };
            after = Some(*last_id);
            for (id, bytes) in &batch {
                occupancy.depth += 1;
                occupancy.bytes += bytes.len() as u64;
                if let Ok(letter) = decode_dead(*id, bytes) {
                    occupancy.last = Some((letter.reason, letter.buried_ms));
                }
            }
        }
        Ok(occupancy)
    }

    /// Moves a record that cannot be delivered on `topic` from its stream to the dead-letter area.
    pub fn bury(
        &self,
        record: &Record,
        topic: &str,
        reason: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let value = encode_dead(record, topic, reason, millis(now));
        let size = value.len() as u64;
        let capacity = self.dead_letter_capacity();
        {
            let mut occupancy = self.lock();
            let dead = &mut occupancy.dead;
            if size > capacity {
                // Larger than the whole area: it cannot be kept, only counted.
                dead.dropped += 1;
                self.store.set_counter(DROPPED_COUNTER, dead.dropped)?;
            } else {
                while dead.bytes + size > capacity {
                    let Some((oldest, _)) = self.store.dead_after(None, 1)?.pop() else {
                        (dead.depth, dead.bytes) = (0, 0);
                        break;
                    };
                    if let Some(len) = self.store.remove_dead(oldest)? {
                        dead.depth = dead.depth.saturating_sub(1);
                        dead.bytes = dead.bytes.saturating_sub(len as u64);
                    }
                    dead.dropped += 1;
                    self.store.set_counter(DROPPED_COUNTER, dead.dropped)?;
                }
                self.store.insert_dead(record.id, &value)?;
                dead.depth += 1;
                dead.bytes += size;
            }
            dead.total += 1;
            dead.last = Some((reason.to_string(), millis(now)));
            self.store.set_counter(TOTAL_COUNTER, dead.total)?;
        }
        self.forget(record.class, record.id)
    }

    /// Up to `limit` dead letters, oldest first. Unreadable ones are skipped (and logged).
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let mut letters = Vec::new();
        for (id, bytes) in self.store.dead_after(None, limit)? {
            match decode_dead(id, &bytes) {
                Ok(letter) => letters.push(letter),
                Err(error) => tracing::warn!(%error, "skipping an unreadable dead letter"),
            }
        }
        Ok(letters)
    }

    /// Appends every dead letter again at the end of its stream (with a new id) and removes it
    /// from the area; returns how many went back. For after the cause was fixed (a broker's
    /// packet limit raised, an ACL corrected).
    pub fn retry_dead_letters(&self) -> Result<usize, StoreError> {
        self.empty_dead_letters(|letter| {
            let record = letter.record;
            let new = NewRecord {
                class: record.class,
                created: record.created(),
                payload: record.payload,
            };
            self.append(new)
                .map(|appended| matches!(appended, Appended::Stored { .. }))
        })
    }

    /// Removes every dead letter; returns how many.
    pub fn drop_dead_letters(&self) -> Result<usize, StoreError> {
        self.empty_dead_letters(|_| Ok(true))
    }

    /// Takes every dead letter out after `handle` (whose answer says whether it counts).
    fn empty_dead_letters(
        &self,
        mut handle: impl FnMut(DeadLetter) -> Result<bool, StoreError>,
    ) -> Result<usize, StoreError> {
        let mut handled = 0;
        loop {
            let batch = self.store.dead_after(None, BATCH)?;
            if batch.is_empty() {
                break;
            }
            for (id, bytes) in batch {
                // An unreadable dead letter cannot be retried; it is removed like the others.
                if let Ok(letter) = decode_dead(id, &bytes) {
                    handled += usize::from(handle(letter)?);
                }
                if let Some(len) = self.store.remove_dead(id)? {
                    let mut occupancy = self.lock();
                    occupancy.dead.depth = occupancy.dead.depth.saturating_sub(1);
                    occupancy.dead.bytes = occupancy.dead.bytes.saturating_sub(len as u64);
                }
            }
        }
        let mut occupancy = self.lock();
        (occupancy.dead.depth, occupancy.dead.bytes) = (0, 0);
        Ok(handled)
    }

    pub(super) fn dead_letter_stats(&self, dead: &DeadOccupancy) -> DeadLetterStats {
        DeadLetterStats {
            depth: dead.depth,
            bytes: dead.bytes,
            max_bytes: self.dead_letter_capacity(),
            total: dead.total,
            dropped: dead.dropped,
            last_reason: dead.last.as_ref().map(|(reason, _)| reason.clone()),
            last_at: dead.last.as_ref().map(|(_, ms)| rfc3339(*ms)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::record;
    use crate::store::{Class, MemoryStore};

    fn stored(outbox: &Outbox, class: Class, n: usize) -> Record {
        outbox.append(record(class, n)).expect("append");
        outbox
            .next_after(class, None, 1000)
            .expect("read")
            .pop()
            .expect("stored")
    }

    #[test]
    fn a_buried_record_leaves_its_stream_with_its_reason_and_can_be_retried() {
        let outbox = Outbox::new(Box::new(MemoryStore::default()), 1 << 20).expect("outbox");
        let poison = stored(&outbox, Class::Summary, 1);
        let next = stored(&outbox, Class::Summary, 2);
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        outbox
            .bury(
                &poison,
                "e/s/a/l/x/summary",
                "the broker closed the connection 3 times",
                at,
            )
            .expect("bury");
        let queued: Vec<u64> = outbox
            .next_after(Class::Summary, None, 10)
            .expect("read")
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(queued, [next.id], "the stream goes on without it");
        let stats = outbox.stats();
        assert_eq!(stats.summary.depth, 1);
        assert_eq!(stats.summary.dropped, 0, "buried, not dropped");
        assert_eq!(stats.dead_letters.depth, 1);
        assert_eq!(stats.dead_letters.total, 1);
        assert_eq!(
            stats.dead_letters.last_reason.as_deref(),
            Some("the broker closed the connection 3 times")
        );
        assert_eq!(
            stats.dead_letters.last_at.as_deref(),
            Some("2023-11-14T22:15:00.000Z")
        );
        let letters = outbox.dead_letters(10).expect("list");
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].record, poison);
        assert_eq!(letters[0].topic, "e/s/a/l/x/summary");
        assert_eq!(letters[0].describe()["kind"], "summary");

        assert_eq!(outbox.retry_dead_letters().expect("retry"), 1);
        let requeued = outbox.next_after(Class::Summary, None, 10).expect("read");
        assert_eq!(requeued.len(), 2);
        assert!(requeued[1].id > next.id, "retried at the end with a new id");
        assert_eq!(requeued[1].payload, poison.payload);
        assert_eq!(outbox.stats().dead_letters.depth, 0);
        assert_eq!(outbox.stats().dead_letters.total, 1, "the total stays");
    }

    #[test]
    fn the_area_is_bounded_and_counts_what_it_drops() {
        // 64 KiB of dead letters at most; each of these is a little over 10 KB.
        let outbox = Outbox::new(Box::new(MemoryStore::default()), 1 << 20).expect("outbox");
        assert_eq!(outbox.dead_letter_capacity(), 128 << 10);
        let mut first = None;
        for n in 0..20 {
            let mut new = record(Class::Event, n);
            if let Payload::Raw { body, .. } = &mut new.payload {
                *body = vec![b'x'; 10_000];
            }
            outbox.append(new).expect("append");
            let record = outbox
                .next_after(Class::Event, None, 1)
                .expect("read")
                .pop()
                .expect("record");
            first.get_or_insert(record.id);
            outbox
                .bury(&record, "t", "too large", SystemTime::now())
                .expect("bury");
        }
        let stats = outbox.stats().dead_letters;
        assert!(stats.bytes <= stats.max_bytes, "{stats:?}");
        assert_eq!(stats.depth + stats.dropped, 20, "{stats:?}");
        assert!(stats.dropped >= 7, "{stats:?}");
        let kept = outbox.dead_letters(100).expect("list");
        assert!(
            kept[0].record.id > first.expect("first"),
            "the oldest went first"
        );
        assert_eq!(outbox.drop_dead_letters().expect("drop"), kept.len());
        assert_eq!(outbox.stats().dead_letters.depth, 0);
        assert_eq!(outbox.depth(), 0);
    }

    #[test]
    fn dead_letters_survive_a_reopen_and_a_flipped_bit_is_caught() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("outbox");
        let poison = {
            let (store, _) = crate::store::SledStore::open_or_recover(&dir).expect("open");
            let outbox = Outbox::new(Box::new(store), 1 << 20).expect("outbox");
            let poison = stored(&outbox, Class::Alert, 7);
            outbox
                .bury(&poison, "a\0b", "topic has a NUL", SystemTime::now())
                .expect("bury");
            outbox.flush().expect("flush");
            poison
        };
        let store = loop {
            match crate::store::SledStore::open_or_recover(&dir) {
                Ok((store, _)) => break store,
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let outbox = Outbox::new(Box::new(store), 1 << 20).expect("outbox");
        let stats = outbox.stats().dead_letters;
        assert_eq!((stats.depth, stats.total), (1, 1));
        assert_eq!(stats.last_reason.as_deref(), Some("topic has a NUL"));
        assert_eq!(outbox.dead_letters(10).expect("list")[0].record, poison);
        assert_eq!(outbox.stats().alert.depth, 0);

        let mut bytes = encode_dead(&poison, "a/b", "why", 5);
        let letter = decode_dead(poison.id, &bytes).expect("decodes");
        assert_eq!(
            (letter.reason.as_str(), letter.topic.as_str()),
            ("why", "a/b")
        );
        bytes[3] ^= 1;
        assert!(decode_dead(poison.id, &bytes).is_err());

        // Written before typed records: no topic of its own, the record's is shown.
        let mut old = vec![DEAD_VERSION_1];
        old.extend_from_slice(&5u64.to_be_bytes());
        old.extend_from_slice(&3u16.to_be_bytes());
        old.extend_from_slice(b"why");
        old.extend_from_slice(&encode(&poison));
        old.extend_from_slice(&crc32fast::hash(&old).to_be_bytes());
        let letter = decode_dead(poison.id, &old).expect("decodes");
        assert_eq!(letter.topic, "e/s/a/l/x/alert");
        assert_eq!(letter.record, poison);
    }
}

//! Bounded fan-out of samples from acquisition to every consumer, a poll's samples at a time.
//!
//! A source publishes what one request (or one OPC UA notification) returned as one batch: at
//! 1,000 registers every 100 ms that is about a hundred messages a second instead of ten
//! thousand, and each consumer is woken once per batch. Stages take a batch at a time
//! ([`Subscriber::recv_batch`]: one pass through their `select!` per poll, not per register);
//! [`Subscriber::recv`] hands out samples one by one. Stages that need no sample at once
//! (summaries, scoring) [`Subscriber::drain`] on a tick of their own instead: one wake per tick,
//! not per poll, which is most of what waking costs at a hundred polls a second.
//!
//! A batch's vector goes back to a small pool once every subscriber has taken it, and a source
//! fills its next poll into one from there ([`SampleBus::buffer`]): allocating and freeing a poll's
//! batch (7 KB for 100 registers) a hundred times a second made musl's allocator map and unmap
//! pages each time, about a tenth of the agent's CPU at the reference load.
//!
//! Invariants: publishing never waits (acquisition must not stall on a slow consumer); each
//! subscriber has its own bounded queue of batches; when a subscriber falls behind, its oldest
//! batches are dropped and the samples in them counted, never silently lost; a batch's samples
//! are dropped as soon as every subscriber has taken it, and the pool keeps at most
//! [`POOLED`] empty vectors of at most [`POOLED_CAPACITY`] samples each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use tokio::sync::broadcast;

use crate::sample::{Quality, Sample};

/// How often draining stages take what the bus holds. The default capacity (256 polls) then
/// covers 2,560 polls a second before a drain falls behind, ten times the busiest plan measured.
pub const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// Empty sample vectors kept for the next polls.
pub const POOLED: usize = 16;
/// A vector with room for more samples than this is freed rather than kept (300 KB at most).
pub const POOLED_CAPACITY: usize = 256;

/// Vectors of batches every subscriber has taken.
#[derive(Debug, Default)]
struct Pool(Mutex<Vec<Vec<Sample>>>);

impl Pool {
    fn take(&self) -> Vec<Sample> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give(&self, mut samples: Vec<Sample>) {
        if samples.capacity() == 0 || samples.capacity() > POOLED_CAPACITY {
            return;
        }
        samples.clear();
        let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOLED {
            pool.push(samples);
        }
    }
}

/// Samples published together, numbered in publishing order.
#[derive(Debug)]
struct Batch {
    /// How many samples were published before this batch.
    first: u64,
    samples: Vec<Sample>,
    pool: Arc<Pool>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.samples));
    }
}

#[derive(Clone)]
pub struct SampleBus {
    sender: broadcast::Sender<Arc<Batch>>,
    pool: Arc<Pool>,
    /// Samples published so far; held while sending, so that batches go out in number order.
    published: Arc<Mutex<u64>>,
    dropped: Arc<AtomicU64>,
    counts: Arc<SampleCounts>,
}

/// Samples published, by quality, and those subscribers fell behind on.
#[derive(Debug, Default)]
pub struct SampleCounts {
    good: AtomicU64,
    uncertain: AtomicU64,
    bad: AtomicU64,
    dropped: Arc<AtomicU64>,
}

impl SampleCounts {
    fn count(&self, samples: &[Sample]) {
        let (mut good, mut uncertain) = (0, 0);
        for sample in samples {
            match sample.quality {
                Quality::Good => good += 1,
                Quality::Uncertain(_) => uncertain += 1,
                _ => {}
            }
        }
        let bad = samples.len() as u64 - good - uncertain;
        for (counter, n) in [
            (&self.good, good),
            (&self.uncertain, uncertain),
            (&self.bad, bad),
        ] {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    pub fn good(&self) -> u64 {
        self.good.load(Ordering::Relaxed)
    }

    pub fn uncertain(&self) -> u64 {
        self.uncertain.load(Ordering::Relaxed)
    }

    pub fn bad(&self) -> u64 {
        self.bad.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl SampleBus {
    /// A bus that keeps up to `capacity` batches for a subscriber that falls behind.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        SampleBus {
            sender,
            pool: Arc::default(),
            published: Arc::default(),
            dropped: Arc::clone(&dropped),
            counts: Arc::new(SampleCounts {
                dropped,
                ..SampleCounts::default()
            }),
        }
    }

    /// Hands one sample to every current subscriber (none is fine: nobody is listening yet).
    pub fn publish(&self, sample: Sample) {
        let mut samples = self.buffer();
        samples.push(sample);
        self.publish_all(samples);
    }

    /// An empty vector to fill a poll's samples into, from the pool when it has one.
    pub fn buffer(&self) -> Vec<Sample> {
        self.pool.take()
    }

    /// Hands samples to every current subscriber as one batch.
    pub fn publish_all(&self, samples: Vec<Sample>) {
        if samples.is_empty() {
            self.pool.give(samples);
            return;
        }
        self.counts.count(&samples);
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        let first = *published;
        *published += samples.len() as u64;
        let _no_subscribers = self.sender.send(Arc::new(Batch {
            first,
            samples,
            pool: Arc::clone(&self.pool),
        }));
    }

    pub fn subscribe(&self) -> Subscriber {
        // Taken under the lock, so the first batch this subscriber sees starts at `next`.
        let published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        Subscriber {
            receiver: self.sender.subscribe(),
            batch: None,
            next: *published,
            dropped: Arc::clone(&self.dropped),
        }
    }

    /// The bus's counts, to read while it runs.
    pub fn counts(&self) -> Arc<SampleCounts> {
        Arc::clone(&self.counts)
    }

    /// Samples dropped across all subscribers because they fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

pub struct Subscriber {
    receiver: broadcast::Receiver<Arc<Batch>>,
    /// The batch being taken apart, and the index of its next sample.
    batch: Option<(Arc<Batch>, usize)>,
    /// The number of the next sample expected: a batch that starts later shows what was dropped.
    next: u64,
    dropped: Arc<AtomicU64>,
}

/// The samples of one poll not taken yet, shared with the other subscribers.
pub struct Polled {
    batch: Arc<Batch>,
    from: usize,
}

impl Polled {
    pub fn iter(&self) -> impl Iterator<Item = &Sample> {
        self.batch.samples[self.from..].iter()
    }
}

impl Subscriber {
    /// The next sample, or `None` when every publisher is gone. Lag is counted and skipped.
    pub async fn recv(&mut self) -> Option<Sample> {
        loop {
            if let Some((batch, index)) = &mut self.batch {
                if let Some(sample) = batch.samples.get(*index) {
                    *index += 1;
                    return Some(sample.clone());
                }
                self.batch = None;
            }
            let batch = self.next_batch().await?;
            self.batch = Some((batch, 0));
        }
    }

    /// The rest of the current poll's samples, or the next poll's; `None` when every publisher
    /// is gone. Lag is counted and skipped.
    pub async fn recv_batch(&mut self) -> Option<Polled> {
        if let Some((batch, from)) = self.batch.take() {
            if from < batch.samples.len() {
                return Some(Polled { batch, from });
            }
        }
        let batch = self.next_batch().await?;
        Some(Polled { batch, from: 0 })
    }

    /// Hands every sample published so far to `each`, without waiting. `false` when every
    /// publisher is gone. Lag is counted and skipped, as by `recv`; a stage that drains must do so
    /// more often than the bus's capacity in polls fills.
    pub fn drain(&mut self, mut each: impl FnMut(&Sample)) -> bool {
        if let Some((batch, from)) = self.batch.take() {
            batch.samples[from.min(batch.samples.len())..]
                .iter()
                .for_each(&mut each);
        }
        loop {
            match self.receiver.try_recv() {
                Ok(batch) => {
                    self.count_gap(&batch);
                    batch.samples.iter().for_each(&mut each);
                }
                Err(broadcast::error::TryRecvError::Empty) => return true,
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(broadcast::error::TryRecvError::Closed) => return false,
            }
        }
    }

    /// Counts the samples published between the last batch taken and `batch`.
    fn count_gap(&mut self, batch: &Batch) {
        if batch.first > self.next {
            self.dropped
                .fetch_add(batch.first - self.next, Ordering::Relaxed);
        }
        self.next = batch.first + batch.samples.len() as u64;
    }

    async fn next_batch(&mut self) -> Option<Arc<Batch>> {
        loop {
            match self.receiver.recv().await {
                Ok(batch) => {
                    self.count_gap(&batch);
                    return Some(batch);
                }
                // The batches skipped are counted from the next one's number.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Quality, TagId};
    use std::time::SystemTime;

    fn sample(i: u32) -> Sample {
        Sample {
            tag: TagId(i),
            server_timestamp: None,
            timestamp: SystemTime::UNIX_EPOCH,
            value: None,
            quality: Quality::Good,
        }
    }

    #[tokio::test]
    async fn samples_are_counted_by_quality_and_drops_beside_them() {
        let bus = SampleBus::new(1);
        let mut slow = bus.subscribe();
        let with = |quality| Sample {
            quality,
            ..sample(0)
        };
        bus.publish_all(vec![
            with(Quality::Good),
            with(Quality::Uncertain(0x4000_0000)),
            with(Quality::Timeout),
        ]);
        bus.publish_all(vec![with(Quality::Good), with(Quality::Bad(0x8000_0000))]);
        let counts = bus.counts();
        assert_eq!((counts.good(), counts.uncertain(), counts.bad()), (2, 1, 2));
        let _ = slow.recv().await;
        assert_eq!(counts.dropped(), bus.dropped());
        assert_eq!(counts.dropped(), 3, "the first batch fell out of the queue");
    }

    #[tokio::test]
    async fn slow_subscriber_loses_oldest_batches_and_their_samples_are_counted() {
        let bus = SampleBus::new(4);
        let mut slow = bus.subscribe();
        for i in 0..10 {
            bus.publish_all(vec![sample(2 * i), sample(2 * i + 1)]);
        }
        let first = slow.recv().await.expect("sample");
        assert_eq!(first.tag, TagId(12), "the newest 4 batches survive");
        assert_eq!(bus.dropped(), 12, "6 batches of 2 samples");
        let mut tags = Vec::new();
        for _ in 0..7 {
            tags.push(slow.recv().await.expect("sample").tag.0);
        }
        assert_eq!(tags, (13..20).collect::<Vec<_>>(), "in order, one by one");
        drop(bus);
        assert!(
            slow.recv().await.is_none(),
            "closed once the publishers are gone"
        );
    }

    #[tokio::test]
    async fn a_late_subscriber_sees_what_is_published_after_it_and_counts_no_drop() {
        let bus = SampleBus::new(4);
        bus.publish_all(vec![sample(0), sample(1)]);
        let mut late = bus.subscribe();
        bus.publish(sample(2));
        assert_eq!(late.recv().await.expect("sample").tag, TagId(2));
        assert_eq!(bus.dropped(), 0);
        bus.publish_all(Vec::new());
        bus.publish(sample(3));
        assert_eq!(late.recv().await.expect("sample").tag, TagId(3));
        // A batch at a time, after what `recv` already took of it.
        bus.publish_all(vec![sample(4), sample(5), sample(6)]);
        assert_eq!(late.recv().await.expect("sample").tag, TagId(4));
        let rest: Vec<u32> = late
            .recv_batch()
            .await
            .expect("batch")
            .iter()
            .map(|s| s.tag.0)
            .collect();
        assert_eq!(rest, [5, 6]);
        bus.publish_all(vec![sample(7)]);
        let next: Vec<u32> = late
            .recv_batch()
            .await
            .expect("batch")
            .iter()
            .map(|s| s.tag.0)
            .collect();
        assert_eq!(next, [7]);
    }

    #[tokio::test]
    async fn a_batch_every_subscriber_took_lends_its_vector_to_the_next_poll() {
        let bus = SampleBus::new(4);
        let mut first = bus.subscribe();
        let mut second = bus.subscribe();
        let mut samples = bus.buffer();
        samples.extend((0..100).map(sample));
        let address = samples.as_ptr();
        bus.publish_all(samples);
        assert!(first.drain(|_| {}));
        assert_eq!(
            bus.buffer().capacity(),
            0,
            "still held by the second subscriber"
        );
        assert!(second.drain(|_| {}));
        let reused = bus.buffer();
        assert_eq!(
            (reused.as_ptr(), reused.len()),
            (address, 0),
            "the same vector, empty"
        );
        // Too large to keep: freed.
        bus.publish_all((0..POOLED_CAPACITY as u32 + 1).map(sample).collect());
        assert!(first.drain(|_| {}) && second.drain(|_| {}));
        assert_eq!(bus.buffer().capacity(), 0);
    }

    #[tokio::test]
    async fn drain_takes_what_is_there_without_waiting_and_counts_lag() {
        let bus = SampleBus::new(2);
        let mut drained = bus.subscribe();
        let mut tags = Vec::new();
        assert!(
            drained.drain(|s| tags.push(s.tag.0)),
            "nothing yet, still open"
        );
        assert!(tags.is_empty());
        bus.publish_all(vec![sample(0), sample(1)]);
        assert_eq!(drained.recv().await.expect("sample").tag, TagId(0));
        for i in 1..4 {
            bus.publish(sample(10 + i));
        }
        assert!(drained.drain(|s| tags.push(s.tag.0)));
        assert_eq!(
            tags,
            [1, 12, 13],
            "the rest of the batch begun, then the newest two"
        );
        assert_eq!(bus.dropped(), 1, "sample 11 fell out of the queue");
        drop(bus);
        assert!(
            !drained.drain(|_| {}),
            "closed once the publishers are gone"
        );
    }
}

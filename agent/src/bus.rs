//! Bounded fan-out of samples from acquisition to every consumer.
//!
//! Invariants: publishing never waits (acquisition must not stall on a slow consumer); each
//! subscriber has its own bounded queue; when a subscriber falls behind, its oldest samples are
//! dropped and the number dropped is counted, never silently lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::sample::Sample;

#[derive(Clone)]
pub struct SampleBus {
    sender: broadcast::Sender<Sample>,
    dropped: Arc<AtomicU64>,
}

impl SampleBus {
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        SampleBus {
            sender,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Hands a sample to every current subscriber (none is fine: nobody is listening yet).
    pub fn publish(&self, sample: Sample) {
        let _no_subscribers = self.sender.send(sample);
    }

    pub fn subscribe(&self) -> Subscriber {
        Subscriber {
            receiver: self.sender.subscribe(),
            dropped: Arc::clone(&self.dropped),
        }
    }

    /// Samples dropped across all subscribers because they fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

pub struct Subscriber {
    receiver: broadcast::Receiver<Sample>,
    dropped: Arc<AtomicU64>,
}

impl Subscriber {
    /// The next sample, or `None` when every publisher is gone. Lag is counted and skipped.
    pub async fn recv(&mut self) -> Option<Sample> {
        loop {
            match self.receiver.recv().await {
                Ok(sample) => return Some(sample),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.dropped.fetch_add(n, Ordering::Relaxed);
                }
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
    async fn slow_subscriber_loses_oldest_and_it_is_counted() {
        let bus = SampleBus::new(4);
        let mut slow = bus.subscribe();
        for i in 0..10 {
            bus.publish(sample(i));
        }
        drop(bus.clone());
        let first = slow.recv().await.expect("sample");
        assert_eq!(first.tag, TagId(6), "the newest 4 survive");
        assert_eq!(bus.dropped(), 6);
    }
}

//! Hang detection for the service watchdog.
//!
//! Every long-running loop (a Modbus polling line, an OPC UA endpoint; scoring and the uplink later) owns a
//! [`Heartbeat`] and beats it once per iteration. The main loop asks [`Liveness::stalled`] before
//! each systemd keep-alive and withholds the keep-alive while any loop has been silent for longer
//! than its stall limit, so systemd restarts an agent whose executor or one of whose tasks hangs,
//! not only one whose main loop hangs.
//!
//! Invariant: a stall limit is an upper bound on a healthy loop's iteration time (its longest
//! schedule plus every timeout an iteration can spend, doubled), so a slow but working device
//! never triggers a restart; only a loop that stopped iterating does.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// The time of a loop's last iteration.
#[derive(Debug)]
pub struct Heartbeat {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Heartbeat {
    pub fn new() -> Arc<Heartbeat> {
        Arc::new(Heartbeat {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    pub fn beat(&self) {
        self.last_ms.store(self.millis(Instant::now()), Relaxed);
    }

    /// How long ago the last beat (or creation) was.
    pub fn silent_for(&self, now: Instant) -> Duration {
        Duration::from_millis(self.millis(now).saturating_sub(self.last_ms.load(Relaxed)))
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }
}

/// A watched loop: its name for the log, its heartbeat and how long it may stay silent.
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: String,
    pub heartbeat: Arc<Heartbeat>,
    pub stall_limit: Duration,
}

/// The loops the watchdog answers for.
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    watched: Vec<Watched>,
}

/// A loop silent past its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub name: String,
    pub silent_for: Duration,
    pub stall_limit: Duration,
}

impl Liveness {
    pub fn watch(
        &mut self,
        name: impl Into<String>,
        heartbeat: Arc<Heartbeat>,
        stall_limit: Duration,
    ) {
        self.watched.push(Watched {
            name: name.into(),
            heartbeat,
            stall_limit,
        });
    }

    pub fn stalled(&self, now: Instant) -> Vec<Stall> {
        self.watched
            .iter()
            .filter_map(|w| {
                let silent_for = w.heartbeat.silent_for(now);
                (silent_for > w.stall_limit).then(|| Stall {
                    name: w.name.clone(),
                    silent_for,
                    stall_limit: w.stall_limit,
                })
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.watched.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_loop_is_stalled_only_after_its_limit_without_a_beat() {
        let busy = Heartbeat::new();
        let hung = Heartbeat::new();
        let mut liveness = Liveness::default();
        liveness.watch("busy", Arc::clone(&busy), Duration::from_secs(10));
        liveness.watch("hung", Arc::clone(&hung), Duration::from_secs(10));

        for _ in 0..8 {
            tokio::time::advance(Duration::from_secs(2)).await;
            busy.beat();
        }
        // 16 s without a beat from "hung", 0 s from "busy".
        let stalled = liveness.stalled(Instant::now());
        assert_eq!(stalled.len(), 1);
        assert_eq!(stalled[0].name, "hung");
        assert_eq!(stalled[0].silent_for, Duration::from_secs(16));

        hung.beat();
        assert!(liveness.stalled(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(
            liveness.stalled(Instant::now()).is_empty(),
            "exactly at the limit is not a stall"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(liveness.stalled(Instant::now()).len(), 2);
    }
}

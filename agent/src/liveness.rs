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

use crate::clock::Clock;

/// The time of a loop's last iteration, on its clock's monotonic time line.
pub struct Heartbeat {
    clock: Arc<dyn Clock>,
    last_ms: AtomicU64,
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Heartbeat(last at {} ms)", self.last_ms.load(Relaxed))
    }
}

fn millis(at: Duration) -> u64 {
    u64::try_from(at.as_millis()).unwrap_or(u64::MAX)
}

impl Heartbeat {
    /// A heartbeat that counts as beaten now.
    pub fn new(clock: Arc<dyn Clock>) -> Arc<Heartbeat> {
        let now = millis(clock.elapsed());
        Arc::new(Heartbeat {
            clock,
            last_ms: AtomicU64::new(now),
        })
    }

    pub fn beat(&self) {
        self.last_ms.store(millis(self.clock.elapsed()), Relaxed);
    }

    /// How long before `now` (the clock's [`Clock::elapsed`]) the last beat was.
    pub fn silent_for(&self, now: Duration) -> Duration {
        Duration::from_millis(millis(now).saturating_sub(self.last_ms.load(Relaxed)))
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

    /// The loops silent past their limit at `now` (the clock's [`Clock::elapsed`]).
    pub fn stalled(&self, now: Duration) -> Vec<Stall> {
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

    #[test]
    fn a_loop_is_stalled_only_after_its_limit_without_a_beat() {
        let clock = Arc::new(crate::clock::ManualClock::new(
            std::time::SystemTime::UNIX_EPOCH,
        ));
        let busy = Heartbeat::new(clock.clone());
        let hung = Heartbeat::new(clock.clone());
        let mut liveness = Liveness::default();
        liveness.watch("busy", Arc::clone(&busy), Duration::from_secs(10));
        liveness.watch("hung", Arc::clone(&hung), Duration::from_secs(10));

        for _ in 0..8 {
            clock.advance(Duration::from_secs(2));
            busy.beat();
        }
        // 16 s without a beat from "hung", 0 s from "busy".
        let stalled = liveness.stalled(clock.elapsed());
        assert_eq!(stalled.len(), 1);
        assert_eq!(stalled[0].name, "hung");
        assert_eq!(stalled[0].silent_for, Duration::from_secs(16));

        hung.beat();
        assert!(liveness.stalled(clock.elapsed()).is_empty());
        clock.advance(Duration::from_secs(10));
        assert!(
            liveness.stalled(clock.elapsed()).is_empty(),
            "exactly at the limit is not a stall"
        );
        clock.advance(Duration::from_millis(1));
        assert_eq!(liveness.stalled(clock.elapsed()).len(), 2);
    }
}

//! Per-source counters (a Modbus device or an OPC UA endpoint), updated by acquisition and read by
//! the periodic summary and `status`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::sample::Quality;

#[derive(Debug, Default)]
pub struct DeviceStats {
    pub online: AtomicBool,
    pub requests: AtomicU64,
    pub responses: AtomicU64,
    pub exceptions: AtomicU64,
    pub timeouts: AtomicU64,
    pub transport_errors: AtomicU64,
    pub malformed: AtomicU64,
    /// Successful connections after the first (TCP) or recoveries after a failure (RTU).
    pub reconnects: AtomicU64,
    /// Polls skipped because the previous one ran past its due time.
    pub overruns: AtomicU64,
    /// OPC UA data change notifications received from subscriptions.
    pub notifications: AtomicU64,
    pub latency_us_total: AtomicU64,
    /// Largest latency since the last periodic summary took it ([`DeviceStats::take_latency_max`]);
    /// reading the counters (`status`) leaves it alone.
    pub latency_us_max: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    pub online: bool,
    pub requests: u64,
    pub responses: u64,
    pub exceptions: u64,
    pub timeouts: u64,
    pub transport_errors: u64,
    pub malformed: u64,
    pub reconnects: u64,
    pub overruns: u64,
    pub notifications: u64,
    pub latency_us_total: u64,
    pub latency_us_max: u64,
}

impl DeviceStats {
    pub fn record(&self, outcome: Quality, latency: Duration) {
        self.requests.fetch_add(1, Relaxed);
        let counter = match outcome {
            Quality::Good | Quality::Uncertain(_) => {
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.latency_us_total.fetch_add(us, Relaxed);
                self.latency_us_max.fetch_max(us, Relaxed);
                &self.responses
            }
            Quality::Exception(_) | Quality::Bad(_) => {
                // A device exception (or an OPC UA bad status) is still an answer: the line works.
                &self.exceptions
            }
            Quality::Timeout => &self.timeouts,
            Quality::Transport | Quality::Stale => &self.transport_errors,
            Quality::Malformed => &self.malformed,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// The largest latency of the interval that ends now; the next interval starts from zero.
    /// Only the periodic summary calls this, so each interval's maximum is reported once.
    pub fn take_latency_max(&self) -> Duration {
        Duration::from_micros(self.latency_us_max.swap(0, Relaxed))
    }

    /// Reads the counters without changing any.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            online: self.online.load(Relaxed),
            requests: self.requests.load(Relaxed),
            responses: self.responses.load(Relaxed),
            exceptions: self.exceptions.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            transport_errors: self.transport_errors.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            overruns: self.overruns.load(Relaxed),
            notifications: self.notifications.load(Relaxed),
            latency_us_total: self.latency_us_total.load(Relaxed),
            latency_us_max: self.latency_us_max.load(Relaxed),
        }
    }
}

impl StatsSnapshot {
    /// Mean latency of good answers.
    pub fn mean_latency(&self) -> Option<Duration> {
        (self.responses > 0).then(|| Duration::from_micros(self.latency_us_total / self.responses))
    }

    /// Requests that failed, of any kind.
    pub fn errors(&self) -> u64 {
        self.exceptions + self.timeouts + self.transport_errors + self.malformed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_the_counters_does_not_reset_the_interval_maximum() {
        let stats = DeviceStats::default();
        stats.record(Quality::Good, Duration::from_millis(7));
        stats.record(Quality::Good, Duration::from_millis(3));
        // `status` reads as often as anyone asks; the summary must still see 7 ms.
        assert_eq!(stats.snapshot().latency_us_max, 7_000);
        assert_eq!(stats.snapshot().latency_us_max, 7_000);
        assert_eq!(stats.take_latency_max(), Duration::from_millis(7));
        assert_eq!(
            stats.take_latency_max(),
            Duration::ZERO,
            "the next interval starts over"
        );
        assert_eq!(stats.snapshot().responses, 2);
    }
}

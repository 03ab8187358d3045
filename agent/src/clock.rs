//! The one place that reads the time. Stages are given a [`Clock`]: the agent runs on
//! [`SystemClock`], tests and `replay` on [`ManualClock`]. Timers (tokio's `interval`, `sleep`)
//! stay in the async loops around the stages, where tests pause tokio's time instead. The I/O
//! loops (Modbus lines, OPC UA sessions, output blink patterns) schedule and time their requests
//! on tokio's `Instant` for the same reason: they talk to devices in real time and never run
//! under `replay`, and a paused runtime moves them too.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

pub trait Clock: Send + Sync {
    /// Wall-clock time stamped on samples and records.
    fn now(&self) -> SystemTime;
    /// Time since the clock's own start, for durations and time lines: never goes back, whatever
    /// happens to the wall clock (NTP steps, an RTC that starts in 1970).
    fn elapsed(&self) -> Duration;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// Where [`SystemClock::elapsed`] counts from: tokio's monotonic time, so that tests which pause
/// tokio's time move it too.
fn origin() -> tokio::time::Instant {
    static ORIGIN: OnceLock<tokio::time::Instant> = OnceLock::new();
    *ORIGIN.get_or_init(tokio::time::Instant::now)
}

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn elapsed(&self) -> Duration {
        let origin = origin();
        tokio::time::Instant::now().saturating_duration_since(origin)
    }
}

/// The next instant after now on a process-wide grid of `period` (whole multiples of it since the
/// agent started).
pub fn next_on_grid(period: Duration) -> tokio::time::Instant {
    let origin = origin();
    let now = tokio::time::Instant::now();
    let period = period.max(Duration::from_millis(1));
    match now.checked_duration_since(origin) {
        Some(since) => {
            let next = since.as_nanos() / period.as_nanos() + 1;
            origin + period.saturating_mul(u32::try_from(next).unwrap_or(u32::MAX))
        }
        // A runtime whose clock began before the grid's (tests pausing time): unaligned.
        None => now + period,
    }
}

/// An interval whose ticks fall on the grid of `period` ([`next_on_grid`]), so that stages
/// ticking at the same period, or at multiples of it, and polls scheduled on the grid wake the
/// runtime together: one timer wake serves them all instead of one wake each. The first tick is
/// the next grid point. A tick taken late (a stage busy loading its model at start, say) fires
/// once and the ticks after it return to the grid: missed ticks are skipped, never burst, and
/// never delayed, which would leave the stage off the grid for good, waking the runtime on its own
/// every period (10 extra wakes a second at 100 ms, measured).
pub fn ticker(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval_at(next_on_grid(period), period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    interval
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    start: SystemTime,
    now: Mutex<SystemTime>,
}

impl ManualClock {
    pub fn new(start: SystemTime) -> Self {
        ManualClock {
            start,
            now: Mutex::new(start),
        }
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn elapsed(&self) -> Duration {
        self.now().duration_since(self.start).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_both_clocks_never_go_back() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let clock = ManualClock::new(start);
        assert_eq!(clock.elapsed(), Duration::ZERO);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), start + Duration::from_millis(1500));
        assert_eq!(clock.elapsed(), Duration::from_millis(1500));
        let system = SystemClock;
        let (a, b) = (system.elapsed(), system.elapsed());
        assert!(b >= a);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ticker_taken_late_returns_to_its_grid() {
        let period = Duration::from_millis(100);
        let mut ticker = ticker(period);
        let first = ticker.tick().await;
        // Busy for 130 ms: the tick due at +100 is taken 30 ms late.
        tokio::time::sleep(Duration::from_millis(130)).await;
        ticker.tick().await;
        let next = ticker.tick().await;
        assert_eq!(
            next - first,
            2 * period,
            "back on the grid, not 30 ms behind it"
        );
        let after = ticker.tick().await;
        assert_eq!(after - first, 3 * period);
    }
}

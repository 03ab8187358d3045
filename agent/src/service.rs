//! The service manager's side of the agent: systemd readiness, status line, reload and watchdog
//! notifications (`Type=notify` with `WatchdogSec`, see `cross/debian/millwright.service`).
//!
//! Outside systemd (no `NOTIFY_SOCKET`) every notification is a no-op, so the same binary runs in a
//! terminal, under another supervisor or in tests. A failed notification is logged once and never
//! stops the agent: the worst outcome is that systemd restarts it, which is what the watchdog is for.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::warn;

/// Interval between keep-alives when systemd asks for none; the liveness check still runs so that
/// a hung loop is logged.
const UNSUPERVISED_CHECK: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct ServiceManager {
    watchdog: Option<Duration>,
    failure_reported: AtomicBool,
}

impl ServiceManager {
    /// Reads `WATCHDOG_USEC`/`WATCHDOG_PID` as systemd set them for this process.
    pub fn from_environment() -> ServiceManager {
        ServiceManager {
            watchdog: sd_notify::watchdog_enabled(),
            failure_reported: AtomicBool::new(false),
        }
    }

    /// The watchdog timeout systemd enforces, if any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// How often the main loop checks liveness and sends a keep-alive: half the watchdog timeout,
    /// as sd_watchdog_enabled(3) recommends, so one late tick does not cost a restart.
    pub fn keep_alive_interval(&self) -> Duration {
        self.watchdog.map_or(UNSUPERVISED_CHECK, |timeout| {
            (timeout / 2).max(Duration::from_millis(10))
        })
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// Announces a reload; systemd expects `READY=1` (via [`ServiceManager::ready`]) when it ends.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    pub fn keep_alive(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(error) = sd_notify::notify(states) {
            if !self.failure_reported.swap(true, Relaxed) {
                warn!(%error, "cannot notify the service manager (NOTIFY_SOCKET); continuing without");
            }
        }
    }
}

//! The agent's status as one typed snapshot: what the `status` command answers (over MQTT and the
//! control socket) and `millwright alerts` / `outbox` print, and what a status page or a metrics
//! endpoint renders. Field names are the JSON keys users see (documented in the README).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::decisions::lifecycle::{Alert, Origin};
use crate::store::OutboxStats;
use crate::uplink::encode::uns::state_name;
use crate::uplink::timestamp;
use firmware_config::Severity;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub agent: String,
    pub version: String,
    pub config_hash: String,
    pub uptime_s: u64,
    pub devices: Vec<DeviceStatus>,
    /// With `[mqtt]` only.
    pub outbox: Option<OutboxStats>,
    pub uplink: Option<UplinkStatus>,
    pub alerts: Vec<AlertStatus>,
    /// Where the kernel tells (Linux).
    pub storage: Option<StorageStatus>,
}

/// What the agent has written to storage since it started: on a gateway, the flash that wears.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageStatus {
    /// Bytes the agent caused to be written to storage (the kernel's count, `/proc/self/io`:
    /// sled's log, `alerts.json`, everything), less writes cancelled before they reached it.
    pub bytes_written: u64,
    /// `bytes_written` extrapolated to a day, once the agent has run a minute.
    pub bytes_per_day: Option<u64>,
}

impl StorageStatus {
    /// This process's figures after `uptime`.
    pub fn of_this_process(uptime: Duration) -> Option<StorageStatus> {
        let io = std::fs::read_to_string("/proc/self/io").ok()?;
        StorageStatus::from_io(&io, uptime)
    }

    /// From the text of a `/proc/<pid>/io` file.
    pub fn from_io(io: &str, uptime: Duration) -> Option<StorageStatus> {
        let field = |name: &str| {
            io.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let bytes_written =
            field("write_bytes")?.saturating_sub(field("cancelled_write_bytes").unwrap_or(0));
        let bytes_per_day = (uptime >= Duration::from_secs(60))
            .then(|| (bytes_written as f64 * 86_400.0 / uptime.as_secs_f64()) as u64);
        Some(StorageStatus {
            bytes_written,
            bytes_per_day,
        })
    }
}

/// One Modbus device or OPC UA endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceStatus {
    pub device: String,
    pub online: bool,
    pub requests: u64,
    pub errors: u64,
    pub reconnects: u64,
    pub notifications: u64,
}

/// The MQTT session's counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UplinkStatus {
    pub connected: bool,
    pub connects: u64,
    pub connection_losses: u64,
    pub published: u64,
    pub acknowledged: u64,
    pub commands: u64,
    /// Records moved to the dead letters by this run.
    pub dead_lettered: u64,
    /// Why the broker is unreachable, as the last failed attempt said.
    pub last_error: Option<String>,
}

/// One alert that is not normal. The same fields are the alert topic's payload, with the
/// transition's own added.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertStatus {
    pub alert_id: String,
    pub source: String,
    pub origin: Origin,
    pub severity: Severity,
    pub state: &'static str,
    pub value: Option<f64>,
    pub reason: String,
    pub raised: String,
    pub acknowledged_by: Option<String>,
    pub shelved_until: Option<String>,
}

impl AlertStatus {
    pub fn of(alert: &Alert) -> AlertStatus {
        AlertStatus {
            alert_id: alert.id.clone(),
            source: alert.source.clone(),
            origin: alert.origin,
            severity: alert.severity,
            state: state_name(Some(alert.state)),
            value: alert.value,
            reason: alert.reason.clone(),
            raised: timestamp(alert.raised),
            acknowledged_by: alert.acknowledged_by.clone(),
            shelved_until: alert.shelved_until.map(timestamp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_figures_come_from_the_kernels_io_counters() {
        let io = "rchar: 10\nwchar: 999999\nwrite_bytes: 4096000\ncancelled_write_bytes: 96000\n";
        let young = StorageStatus::from_io(io, Duration::from_secs(30)).expect("parsed");
        assert_eq!(young.bytes_written, 4_000_000);
        assert_eq!(young.bytes_per_day, None, "too early to extrapolate");
        let hour = StorageStatus::from_io(io, Duration::from_secs(3600)).expect("parsed");
        assert_eq!(hour.bytes_per_day, Some(96_000_000));
        assert_eq!(StorageStatus::from_io("rchar: 1\n", Duration::ZERO), None);
        let here = StorageStatus::of_this_process(Duration::ZERO);
        assert!(here.is_some() || !std::path::Path::new("/proc/self/io").exists());
    }
}

//! The agent's status as one typed snapshot: what the `status` command answers (over MQTT and the
//! control socket), `millwright alerts` / `outbox` print, the status page and `/api/status` show,
//! and `/metrics` and the demo render. Field names are the JSON keys users see (the README
//! documents them; `agent/src/http/status.schema.json` is their schema). A change that renames or
//! removes a key raises [`SCHEMA`]; adding one does not.
//!
//! The snapshot is assembled on request from what the stages keep anyway (device counters, the
//! latest assessment, line and station views, the alert book); nothing is computed for it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::bus::SampleCounts;
use crate::decisions::lifecycle::{Alert, Origin};
use crate::health::assess::{Action, Assessment, Priority};
use crate::production::LineView;
use crate::quality::QualityView;
use crate::sources::DeviceStats;
use crate::store::OutboxStats;
use crate::uplink::encode::uns::state_name;
use crate::uplink::timestamp;
use firmware_config::Severity;

/// The snapshot's schema version (`schema` in the JSON).
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub schema: u32,
    pub agent: String,
    pub version: String,
    pub config_hash: String,
    pub uptime_s: u64,
    /// When the snapshot was taken (RFC 3339 UTC).
    pub time: String,
    pub devices: Vec<DeviceStatus>,
    /// Samples the configuration has produced, by quality.
    pub samples: SampleStatus,
    /// Each asset's latest assessment (none before the first).
    pub assets: Vec<AssetStatus>,
    pub alerts: Vec<AlertStatus>,
    pub lines: Vec<LineStatus>,
    pub quality: Vec<StationStatus>,
    /// With `[mqtt]` only.
    pub outbox: Option<OutboxStats>,
    pub uplink: Option<UplinkStatus>,
    /// Where the kernel tells (Linux).
    pub storage: Option<StorageStatus>,
    pub process: Option<ProcessStatus>,
}

/// What a running configuration keeps for the snapshot: the sources' counters and the stages'
/// latest views. Cheap to clone (shared handles).
#[derive(Clone)]
pub struct Board {
    pub devices: Vec<(String, Arc<DeviceStats>)>,
    pub samples: Arc<SampleCounts>,
    pub assets: watch::Receiver<AssetView>,
    pub lines: watch::Receiver<LineView>,
    pub quality: watch::Receiver<QualityView>,
    /// The latest spectra of waveform assets (read by the `spectrum` command, not the snapshot).
    pub spectra: crate::vibration::SpectrumBook,
}

/// Each asset's latest assessment, by asset id.
pub type AssetView = BTreeMap<String, Assessment>;

impl Default for Board {
    fn default() -> Board {
        Board {
            devices: Vec::new(),
            samples: Arc::default(),
            assets: watch::channel(AssetView::new()).1,
            lines: watch::channel(LineView::new()).1,
            quality: watch::channel(QualityView::new()).1,
            spectra: crate::vibration::SpectrumBook::default(),
        }
    }
}

/// The parts of a snapshot a [`Board`] gives.
pub struct Boarded {
    pub devices: Vec<DeviceStatus>,
    pub samples: SampleStatus,
    pub assets: Vec<AssetStatus>,
    pub lines: Vec<LineStatus>,
    pub quality: Vec<StationStatus>,
}

impl Board {
    pub fn read(&self) -> Boarded {
        Boarded {
            devices: self
                .devices
                .iter()
                .map(|(name, stats)| DeviceStatus::of(name, stats))
                .collect(),
            samples: SampleStatus {
                good: self.samples.good(),
                uncertain: self.samples.uncertain(),
                bad: self.samples.bad(),
                dropped: self.samples.dropped(),
            },
            assets: self.assets.borrow().values().map(AssetStatus::of).collect(),
            lines: self.lines.borrow().values().map(LineStatus::of).collect(),
            quality: self
                .quality
                .borrow()
                .values()
                .map(StationStatus::of)
                .collect(),
        }
    }
}

/// Samples by quality since the configuration was loaded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleStatus {
    pub good: u64,
    /// OPC UA uncertain values.
    pub uncertain: u64,
    /// Exceptions, timeouts, transport errors, malformed answers, stale and bad values.
    pub bad: u64,
    /// Samples a slow stage fell behind on (counted, not lost upstream: the stage missed them).
    pub dropped: u64,
}

/// An asset's latest assessment, as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssetStatus {
    pub asset: String,
    pub asset_type: String,
    pub timestamp: String,
    /// 0..1.
    pub health: f64,
    /// 0..1.
    pub failure_probability: f64,
    pub action: Action,
    pub priority: Priority,
    pub remaining_life_hours: Option<f64>,
    pub reasons: Vec<String>,
}

impl AssetStatus {
    pub fn of(a: &Assessment) -> AssetStatus {
        AssetStatus {
            asset: a.asset.clone(),
            asset_type: a.asset_type.clone(),
            timestamp: a.timestamp.clone(),
            health: a.overall_health,
            failure_probability: a.failure_probability,
            action: a.action,
            priority: a.priority,
            remaining_life_hours: a.remaining_life_hours,
            reasons: a.reasons.clone(),
        }
    }
}

/// A production line this shift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineStatus {
    pub line: String,
    pub shift: String,
    /// `running`, `idle`, `fault`, …; `None` before the state tag was read.
    pub state: Option<String>,
    /// 0..1 each; `None` while undefined (nothing planned or produced yet).
    pub oee: Option<f64>,
    pub availability: Option<f64>,
    pub performance: Option<f64>,
    pub quality: Option<f64>,
    pub total: f64,
    pub good: f64,
    pub reject: f64,
    /// The biggest loss and what to do about it.
    pub top_loss: Option<String>,
}

impl LineStatus {
    pub fn of(report: &crate::production::line::LineReport) -> LineStatus {
        let f = &report.figures;
        LineStatus {
            line: report.line.clone(),
            shift: report.shift.clone(),
            state: report.state.map(|s| s.name().to_string()),
            oee: f.oee,
            availability: f.availability,
            performance: f.performance,
            quality: f.quality,
            total: f.total,
            good: f.good,
            reject: f.reject,
            top_loss: report.recommendation.clone(),
        }
    }
}

/// A quality station: its latest report's figures and its latest parts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StationStatus {
    pub station: String,
    pub line: Option<String>,
    /// Over the station's current report interval.
    pub parts: u64,
    pub pass: u64,
    pub review: u64,
    pub reject: u64,
    pub reject_rate: Option<f64>,
    pub capability: Vec<CapabilityStatus>,
    /// Newest first.
    pub latest: Vec<PartStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapabilityStatus {
    pub characteristic: String,
    pub n: u64,
    pub cpk: Option<f64>,
    pub ppk: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartStatus {
    pub part_id: Option<String>,
    pub at: String,
    pub decision: crate::quality::station::Decision,
    pub score: f64,
}

impl StationStatus {
    pub fn of(view: &crate::quality::StationView) -> StationStatus {
        let report = view.report.as_ref();
        let count = |f: fn(&crate::quality::station::QualityReport) -> u64| report.map_or(0, f);
        StationStatus {
            station: view.station.clone(),
            line: view.line.clone(),
            parts: count(|r| r.parts),
            pass: count(|r| r.pass),
            review: count(|r| r.review),
            reject: count(|r| r.reject),
            reject_rate: report.and_then(|r| r.reject_rate()),
            capability: report.map_or_else(Vec::new, |r| {
                r.characteristics
                    .iter()
                    .map(|c| CapabilityStatus {
                        characteristic: c.name.clone(),
                        n: c.n,
                        cpk: c.capability.cpk,
                        ppk: c.capability.ppk,
                    })
                    .collect()
            }),
            latest: view
                .latest
                .iter()
                .rev()
                .map(|p| PartStatus {
                    part_id: p.part_id.clone(),
                    at: timestamp(p.at),
                    decision: p.decision,
                    score: p.score,
                })
                .collect(),
        }
    }
}

/// This process's memory and CPU time (Linux).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessStatus {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, 100 a second on every Linux ABI.
const USER_HZ: f64 = 100.0;

impl ProcessStatus {
    pub fn of_this_process() -> Option<ProcessStatus> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        ProcessStatus::from_proc(&status, &stat)
    }

    /// From the texts of `/proc/<pid>/status` and `/proc/<pid>/stat`.
    pub fn from_proc(status: &str, stat: &str) -> Option<ProcessStatus> {
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        // The command name may hold spaces and parentheses: fields count from the last `)`.
        let after = &stat[stat.rfind(')')? + 1..];
        let mut fields = after.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some(ProcessStatus {
            rss_bytes: rss_kib * 1024,
            cpu_seconds: (utime + stime) as f64 / USER_HZ,
        })
    }
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
    pub responses: u64,
    /// Every failed request (the sum of `errors_by_kind`).
    pub errors: u64,
    pub errors_by_kind: ErrorCounts,
    pub reconnects: u64,
    /// Polls skipped because the one before ran past its due time.
    pub overruns: u64,
    pub notifications: u64,
    /// Time spent waiting for responses, for a mean latency over any interval.
    pub response_seconds: f64,
    pub latency_mean_ms: Option<f64>,
}

/// Failed requests by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    pub exception: u64,
    pub timeout: u64,
    pub transport: u64,
    pub malformed: u64,
}

impl DeviceStatus {
    pub fn of(name: &str, stats: &DeviceStats) -> DeviceStatus {
        let s = stats.snapshot();
        DeviceStatus {
            device: name.to_string(),
            online: s.online,
            requests: s.requests,
            responses: s.responses,
            errors: s.errors(),
            errors_by_kind: ErrorCounts {
                exception: s.exceptions,
                timeout: s.timeouts,
                transport: s.transport_errors,
                malformed: s.malformed,
            },
            reconnects: s.reconnects,
            overruns: s.overruns,
            notifications: s.notifications,
            response_seconds: s.latency_us_total as f64 / 1e6,
            latency_mean_ms: s.mean_latency().map(|d| d.as_secs_f64() * 1e3),
        }
    }
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
    fn process_figures_come_from_proc() {
        let status = "Name:\tmillwright\nVmHWM:\t  9000 kB\nVmRSS:\t   8192 kB\n";
        // A command name with a space and a parenthesis does not shift the fields.
        let stat = "42 (mill (w) right) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        let process = ProcessStatus::from_proc(status, stat).expect("parsed");
        assert_eq!(process.rss_bytes, 8192 * 1024);
        assert!((process.cpu_seconds - 3.0).abs() < 1e-9, "{process:?}");
        assert_eq!(ProcessStatus::from_proc("VmRSS: x kB", stat), None);
        assert!(ProcessStatus::of_this_process().is_some_and(|p| p.rss_bytes > 0));
    }

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

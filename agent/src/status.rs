//! The agent's status as one typed snapshot: what the `status` command answers (over MQTT and the
//! control socket) and `millwright alerts` / `outbox` print, and what a status page or a metrics
//! endpoint renders. Field names are the JSON keys users see (documented in the README).

use serde::Serialize;

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

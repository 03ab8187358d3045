//! `/metrics`: the status snapshot in the OpenMetrics text format, encoded by the Prometheus
//! project's client.
//!
//! Every metric is read from one [`Status`], so a scrape sees one consistent moment and nothing
//! is kept between scrapes. Labels come from the configuration (devices, assets, lines, stations,
//! characteristics) or from fixed sets (error kinds, qualities, alert states and severities,
//! record classes): their cardinality is bounded by the configuration, never by the data.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::status::Status;

type Labels = Vec<(&'static str, String)>;

/// The metrics of one scrape.
struct Scrape(Registry);

/// A label value as the text format needs it: the encoder writes values as they are, and a name
/// from the configuration may hold a quote or a backslash.
fn escaped(value: String) -> String {
    if !value.contains(['\\', '"', '\n']) {
        return value;
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_all(rows: Vec<(Labels, f64)>) -> Vec<(Labels, f64)> {
    rows.into_iter()
        .map(|(labels, value)| {
            let labels = labels.into_iter().map(|(k, v)| (k, escaped(v))).collect();
            (labels, value)
        })
        .collect()
}

impl Scrape {
    fn gauge(&mut self, name: &str, help: &str, unit: Option<Unit>, rows: Vec<(Labels, f64)>) {
        let rows = escape_all(rows);
        if let [(labels, value)] = rows.as_slice() {
            if labels.is_empty() {
                let gauge = Gauge::<f64, AtomicU64>::default();
                gauge.set(*value);
                return self.register(name, help, unit, gauge);
            }
        }
        let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for (labels, value) in rows {
            family.get_or_create(&labels).set(value);
        }
        self.register(name, help, unit, family);
    }

    fn register(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        metric: impl prometheus_client::registry::Metric,
    ) {
        match unit {
            Some(unit) => self.0.register_with_unit(name, help, unit, metric),
            None => self.0.register(name, help, metric),
        }
    }

    /// A counter: the `_total` suffix is added by the encoder.
    fn counter(&mut self, name: &str, help: &str, unit: Option<Unit>, rows: Vec<(Labels, f64)>) {
        let rows = escape_all(rows);
        if let [(labels, value)] = rows.as_slice() {
            if labels.is_empty() {
                let counter = Counter::<f64, AtomicU64>::default();
                counter.inc_by(value.max(0.0));
                return self.register(name, help, unit, counter);
            }
        }
        let family = Family::<Labels, Counter<f64, AtomicU64>>::default();
        for (labels, value) in rows {
            family.get_or_create(&labels).inc_by(value.max(0.0));
        }
        self.register(name, help, unit, family);
    }
}

fn one(value: f64) -> Vec<(Labels, f64)> {
    vec![(Vec::new(), value)]
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

/// Counters the HTTP server keeps about itself.
#[derive(Debug, Default)]
pub struct ServerCounts {
    pub requests: AtomicU64,
    pub refused: AtomicU64,
}

/// The OpenMetrics text of `status`.
pub fn render(status: &Status, server: &ServerCounts) -> String {
    let mut scrape = Scrape(Registry::with_prefix("millwright"));
    scrape.gauge(
        "build_info",
        "The agent's version and configuration hash (always 1)",
        None,
        vec![(
            vec![
                ("version", status.version.clone()),
                ("config_hash", status.config_hash.clone()),
                ("agent", status.agent.clone()),
            ],
            1.0,
        )],
    );
    scrape.gauge(
        "uptime",
        "Time since the agent started",
        Some(Unit::Seconds),
        one(status.uptime_s as f64),
    );
    devices(&mut scrape, status);
    health(&mut scrape, status);
    production(&mut scrape, status);
    upstream(&mut scrape, status);
    process(&mut scrape, status, server);
    let mut text = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &scrape.0);
    text
}

fn devices(scrape: &mut Scrape, status: &Status) {
    let each = |value: &dyn Fn(&crate::status::DeviceStatus) -> f64| {
        status
            .devices
            .iter()
            .map(|d| (vec![("device", d.device.clone())], value(d)))
            .collect::<Vec<_>>()
    };
    scrape.gauge(
        "device_up",
        "1 while the device (Modbus device or OPC UA endpoint) answers",
        None,
        each(&|d| flag(d.online)),
    );
    scrape.counter(
        "device_requests",
        "Requests sent to the device",
        None,
        each(&|d| d.requests as f64),
    );
    scrape.counter(
        "device_responses",
        "Responses received from the device",
        None,
        each(&|d| d.responses as f64),
    );
    scrape.counter(
        "device_response_time",
        "Time spent waiting for the device's responses (divide by responses for the mean)",
        Some(Unit::Seconds),
        each(&|d| d.response_seconds),
    );
    let mut errors = Vec::new();
    for d in &status.devices {
        let k = d.errors_by_kind;
        for (kind, n) in [
            ("exception", k.exception),
            ("timeout", k.timeout),
            ("transport", k.transport),
            ("malformed", k.malformed),
        ] {
            errors.push((
                vec![("device", d.device.clone()), ("kind", kind.to_string())],
                n as f64,
            ));
        }
    }
    scrape.counter("device_errors", "Failed requests by kind.", None, errors);
    scrape.counter(
        "device_reconnects",
        "Reconnections after a lost connection",
        None,
        each(&|d| d.reconnects as f64),
    );
    scrape.counter(
        "device_overruns",
        "Polls skipped because the one before ran past its due time",
        None,
        each(&|d| d.overruns as f64),
    );
    let s = &status.samples;
    scrape.counter(
        "samples",
        "Samples acquired, by quality",
        None,
        [("good", s.good), ("uncertain", s.uncertain), ("bad", s.bad)]
            .into_iter()
            .map(|(q, n)| (vec![("quality", q.to_string())], n as f64))
            .collect(),
    );
    scrape.counter(
        "samples_dropped",
        "Samples a slow stage fell behind on",
        None,
        one(s.dropped as f64),
    );
}

fn health(scrape: &mut Scrape, status: &Status) {
    let each = |value: &dyn Fn(&crate::status::AssetStatus) -> f64| {
        status
            .assets
            .iter()
            .map(|a| {
                (
                    vec![("asset", a.asset.clone()), ("type", a.asset_type.clone())],
                    value(a),
                )
            })
            .collect::<Vec<_>>()
    };
    scrape.gauge(
        "asset_health",
        "The asset's overall health, 0 (failed) to 1 (as new)",
        None,
        each(&|a| a.health),
    );
    scrape.gauge(
        "asset_failure_probability",
        "The asset's probability of failure, 0 to 1",
        None,
        each(&|a| a.failure_probability),
    );
    let mut alerts = Vec::new();
    for state in [
        "active_unacknowledged",
        "active_acknowledged",
        "cleared_unacknowledged",
    ] {
        for severity in firmware_config::Severity::ALL {
            let n = status
                .alerts
                .iter()
                .filter(|a| a.state == state && a.severity == severity)
                .count();
            alerts.push((
                vec![
                    ("state", state.to_string()),
                    ("severity", severity.name().to_string()),
                ],
                n as f64,
            ));
        }
    }
    scrape.gauge(
        "alerts",
        "Alerts that are not normal, by state and severity",
        None,
        alerts,
    );
    scrape.gauge(
        "alerts_shelved",
        "Alerts shelved (hidden from the outputs for a while)",
        None,
        one(status
            .alerts
            .iter()
            .filter(|a| a.shelved_until.is_some())
            .count() as f64),
    );
}

fn production(scrape: &mut Scrape, status: &Status) {
    let mut factors = Vec::new();
    for line in &status.lines {
        for (factor, value) in [
            ("oee", line.oee),
            ("availability", line.availability),
            ("performance", line.performance),
            ("quality", line.quality),
        ] {
            if let Some(value) = value {
                factors.push((
                    vec![("line", line.line.clone()), ("factor", factor.to_string())],
                    value,
                ));
            }
        }
    }
    scrape.gauge(
        "line_oee",
        "OEE and its factors this shift, 0 to 1 (absent while undefined)",
        None,
        factors,
    );
    let mut parts = Vec::new();
    for line in &status.lines {
        for (kind, n) in [("good", line.good), ("reject", line.reject)] {
            parts.push((
                vec![("line", line.line.clone()), ("kind", kind.to_string())],
                n,
            ));
        }
    }
    scrape.gauge("line_parts", "Parts made this shift.", None, parts);
    let mut decisions = Vec::new();
    let mut cpk = Vec::new();
    for station in &status.quality {
        for (decision, n) in [
            ("pass", station.pass),
            ("review", station.review),
            ("reject", station.reject),
        ] {
            decisions.push((
                vec![
                    ("station", station.station.clone()),
                    ("decision", decision.to_string()),
                ],
                n as f64,
            ));
        }
        for c in &station.capability {
            if let Some(value) = c.cpk {
                cpk.push((
                    vec![
                        ("station", station.station.clone()),
                        ("characteristic", c.characteristic.clone()),
                    ],
                    value,
                ));
            }
        }
    }
    scrape.gauge(
        "quality_parts",
        "Parts decided over the station's current report interval, by decision",
        None,
        decisions,
    );
    scrape.gauge(
        "quality_cpk",
        "Process capability (Cpk) of each characteristic over the current report interval",
        None,
        cpk,
    );
}

fn upstream(scrape: &mut Scrape, status: &Status) {
    if let Some(outbox) = &status.outbox {
        let classes = [
            ("alert", &outbox.alert),
            ("event", &outbox.event),
            ("summary", &outbox.summary),
        ];
        scrape.gauge(
            "outbox_depth",
            "Records waiting to go upstream, by class",
            None,
            classes
                .iter()
                .map(|(c, s)| (vec![("class", c.to_string())], s.depth as f64))
                .collect(),
        );
        scrape.gauge(
            "outbox",
            "Bytes of records waiting to go upstream",
            Some(Unit::Bytes),
            one(outbox.bytes as f64),
        );
        scrape.gauge(
            "outbox_capacity",
            "The outbox's size limit",
            Some(Unit::Bytes),
            one(outbox.max_bytes as f64),
        );
        let now = humantime::parse_rfc3339_weak(&status.time).ok();
        let age = outbox
            .oldest
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .zip(now)
            .map_or(0.0, |(oldest, now)| {
                now.duration_since(oldest).unwrap_or_default().as_secs_f64()
            });
        scrape.gauge(
            "outbox_oldest_age",
            "Age of the oldest record waiting (0 when none waits)",
            Some(Unit::Seconds),
            one(age),
        );
        scrape.counter(
            "outbox_dropped",
            "Records dropped because the outbox was full, by class",
            None,
            classes
                .iter()
                .map(|(c, s)| (vec![("class", c.to_string())], s.dropped as f64))
                .collect(),
        );
    }
    if let Some(uplink) = &status.uplink {
        scrape.gauge(
            "uplink_connected",
            "1 while the MQTT session is up",
            None,
            one(flag(uplink.connected)),
        );
        scrape.counter(
            "uplink_published",
            "Messages published to the broker",
            None,
            one(uplink.published as f64),
        );
        scrape.counter(
            "uplink_delivered",
            "Messages the broker acknowledged",
            None,
            one(uplink.acknowledged as f64),
        );
        scrape.gauge(
            "uplink_in_flight",
            "Messages published and not yet acknowledged",
            None,
            one(uplink.published.saturating_sub(uplink.acknowledged) as f64),
        );
        scrape.counter(
            "uplink_connects",
            "Sessions established with the broker",
            None,
            one(uplink.connects as f64),
        );
        scrape.counter(
            "uplink_connection_losses",
            "Sessions lost",
            None,
            one(uplink.connection_losses as f64),
        );
    }
}

fn process(scrape: &mut Scrape, status: &Status, server: &ServerCounts) {
    use std::sync::atomic::Ordering::Relaxed;
    if let Some(process) = &status.process {
        scrape.gauge(
            "process_resident_memory",
            "Resident memory of the agent's process",
            Some(Unit::Bytes),
            one(process.rss_bytes as f64),
        );
        scrape.counter(
            "process_cpu",
            "CPU time the agent's process used",
            Some(Unit::Seconds),
            one(process.cpu_seconds),
        );
    }
    if let Some(storage) = &status.storage {
        scrape.counter(
            "storage_written",
            "Bytes the agent caused to be written to storage",
            Some(Unit::Bytes),
            one(storage.bytes_written as f64),
        );
    }
    scrape.counter(
        "http_requests",
        "Requests the status server answered",
        None,
        one(server.requests.load(Relaxed) as f64),
    );
    scrape.counter(
        "http_refused",
        "Requests refused for missing or wrong credentials",
        None,
        one(server.refused.load(Relaxed) as f64),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::*;

    fn status() -> Status {
        Status {
            schema: SCHEMA,
            agent: "gw".into(),
            version: "1".into(),
            config_hash: "abc".into(),
            uptime_s: 5,
            time: "2026-01-01T00:00:10Z".into(),
            devices: vec![DeviceStatus {
                device: "odd \"name\" \\ here".into(),
                online: true,
                requests: 3,
                responses: 2,
                errors: 1,
                errors_by_kind: ErrorCounts {
                    exception: 0,
                    timeout: 1,
                    transport: 0,
                    malformed: 0,
                },
                reconnects: 0,
                overruns: 0,
                notifications: 0,
                response_seconds: 0.5,
                latency_mean_ms: Some(250.0),
            }],
            samples: SampleStatus {
                good: 7,
                uncertain: 0,
                bad: 1,
                dropped: 0,
            },
            assets: Vec::new(),
            alerts: Vec::new(),
            lines: vec![LineStatus {
                line: "press".into(),
                shift: "day".into(),
                state: None,
                oee: None,
                availability: Some(0.5),
                performance: None,
                quality: None,
                total: 0.0,
                good: 0.0,
                reject: 0.0,
                top_loss: None,
            }],
            quality: Vec::new(),
            outbox: None,
            uplink: None,
            storage: None,
            process: None,
        }
    }

    #[test]
    fn labels_are_escaped_and_undefined_figures_are_absent() {
        let text = render(&status(), &ServerCounts::default());
        assert!(
            text.contains(
                r#"millwright_device_errors_total{device="odd \"name\" \\ here",kind="timeout"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"millwright_line_oee{line="press",factor="availability"} 0.5"#));
        assert!(
            !text.contains(r#"factor="oee""#),
            "an undefined OEE is not a 0"
        );
        assert!(text.contains("millwright_samples_total{quality=\"bad\"} 1"));
        assert!(text.contains("millwright_uptime_seconds 5"), "{text}");
        assert!(!text.contains("uplink"), "no uplink, no uplink metrics");
        assert!(text.ends_with("# EOF\n"));
    }

    /// Every series the dashboard in the repository queries is one this module writes.
    #[test]
    fn the_grafana_dashboard_queries_only_metrics_that_exist() {
        let mut full = status();
        full.assets.push(AssetStatus {
            asset: "P-1".into(),
            asset_type: "pump".into(),
            timestamp: full.time.clone(),
            health: 0.9,
            failure_probability: 0.1,
            action: crate::health::assess::Action::RoutineMonitoring,
            priority: crate::health::assess::Priority::Low,
            remaining_life_hours: None,
            reasons: Vec::new(),
        });
        full.lines[0].oee = Some(0.4);
        full.quality.push(StationStatus {
            station: "gauge".into(),
            line: None,
            parts: 1,
            pass: 1,
            review: 0,
            reject: 0,
            reject_rate: Some(0.0),
            capability: vec![CapabilityStatus {
                characteristic: "bore".into(),
                n: 30,
                cpk: Some(1.4),
                ppk: Some(1.3),
            }],
            latest: Vec::new(),
        });
        full.outbox = Some(crate::store::OutboxStats::default());
        full.uplink = Some(UplinkStatus {
            connected: true,
            connects: 1,
            connection_losses: 0,
            published: 3,
            acknowledged: 2,
            commands: 0,
            dead_lettered: 0,
            last_error: None,
        });
        full.process = Some(ProcessStatus {
            rss_bytes: 1,
            cpu_seconds: 1.0,
        });
        let text = render(&full, &ServerCounts::default());
        let written: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let dashboard = include_str!("../../../cross/grafana/millwright-dashboard.json");
        let queried: std::collections::BTreeSet<&str> = dashboard
            .match_indices("millwright_")
            .map(|(at, _)| {
                let rest = &dashboard[at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .filter(|name| *name != "millwright_gateways")
            .collect();
        assert!(queried.len() > 15, "{queried:?}");
        let missing: Vec<_> = queried.difference(&written).collect();
        assert!(
            missing.is_empty(),
            "the dashboard queries {missing:?}; /metrics writes {written:?}"
        );
    }
}

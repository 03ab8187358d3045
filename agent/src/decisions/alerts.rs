//! The agent's alerts: one [`Book`] per agent, fed by assessments, tag limits, the agent's own
//! health and the outputs, changed by acknowledgements and shelving from MQTT, the control socket
//! and the acknowledge input.
//!
//! Invariants:
//! - every transition is, in this order, shown on the outputs (the people at the machine first),
//!   written to the state file, and appended to the outbox (alert class: flushed at once, sent
//!   before summaries): upstream only hears of a state that was saved;
//! - the state file (`<data_dir>/alerts.json`) is replaced atomically (write, fsync, rename), so a
//!   power cut leaves the old or the new book, never a torn one; after a restart every alert is in
//!   the state it was, and sources that find their condition gone clear it through the lifecycle;
//! - a state file that cannot be read is moved aside and reported, never fatal.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use firmware_config::{Alerting, Plan, Severity};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::conditions::Conditions;
use super::lifecycle::{Alert, AlertError, Book, Condition, Origin, State, Transition};
use super::limits;
use crate::bus::Subscriber;
use crate::clock::Clock;
use crate::health::assess::{Action, Assessment};
use crate::records::Report;
use crate::sources::DeviceStats;
use crate::status::AlertStatus;
use crate::store::{NewRecord, Outbox};
pub use crate::uplink::encode::uns::state_name;
use crate::uplink::UplinkStats;

/// State file name inside the data directory.
pub const STATE_FILE: &str = "alerts.json";

/// What the outputs show: every alert that is not shelved, as severity and state.
pub type View = Arc<Vec<(Severity, State)>>;

pub struct Alerts {
    book: Mutex<Book>,
    file: PathBuf,
    /// Where transitions go upstream (none without `[mqtt]`).
    upstream: Option<Arc<Outbox>>,
    view: watch::Sender<View>,
    pub persist_failures: AtomicU64,
}

impl Alerts {
    /// The alerts of the agent whose data directory is `data_dir`, as they were when it stopped;
    /// transitions also become records in `upstream`.
    pub fn open(data_dir: &Path, upstream: Option<Arc<Outbox>>) -> Alerts {
        let file = data_dir.join(STATE_FILE);
        let book = match std::fs::read(&file) {
            Ok(bytes) => match serde_json::from_slice::<Book>(&bytes) {
                Ok(book) => {
                    let count = book.alerts().count();
                    if count > 0 {
                        info!(alerts = count, file = %file.display(), "alerts restored");
                    }
                    book
                }
                Err(error) => {
                    let aside = file.with_extension("json.unreadable");
                    let _ = std::fs::rename(&file, &aside);
                    error!(%error, moved_to = %aside.display(), "the alert state file cannot be read; starting with no alerts");
                    Book::default()
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Book::default(),
            Err(error) => {
                error!(%error, file = %file.display(), "the alert state file cannot be read; starting with no alerts");
                Book::default()
            }
        };
        let (view, _) = watch::channel(view_of(&book));
        Alerts {
            book: Mutex::new(book),
            file,
            upstream,
            view,
            persist_failures: AtomicU64::new(0),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<View> {
        self.view.subscribe()
    }

    /// Changes the book and carries out what changed (see the module invariants).
    pub fn apply<T>(&self, change: impl FnOnce(&mut Book) -> (Vec<Transition>, T)) -> T {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let (transitions, result) = change(&mut book);
        if transitions.is_empty() {
            return result;
        }
        self.view.send_replace(view_of(&book));
        if let Err(error) = off_the_worker(|| persist(&self.file, &book)) {
            if self.persist_failures.fetch_add(1, Ordering::Relaxed) == 0 {
                error!(%error, file = %self.file.display(), "cannot save the alert state; alerts work but will not survive a restart (counted)");
            }
        }
        for transition in transitions {
            info!(
                alert = %transition.alert.id,
                change = ?transition.change,
                state = state_name(transition.state),
                severity = transition.alert.severity.name(),
                reason = %transition.alert.reason,
                "alert"
            );
            if let Some(outbox) = &self.upstream {
                let at = transition.at;
                let report = Report::AlertTransition(transition);
                crate::reports::append(outbox, NewRecord::report(report, at));
            }
        }
        result
    }

    pub fn condition(&self, condition: Condition, now: SystemTime) {
        self.apply(|book| (book.condition(condition, now).into_iter().collect(), ()));
    }

    pub fn acknowledge(&self, id: &str, by: &str, now: SystemTime) -> Result<Alert, AlertError> {
        self.apply(|book| match book.acknowledge(id, by, now) {
            Ok(t) => (vec![t.clone()], Ok(t.alert)),
            Err(e) => (Vec::new(), Err(e)),
        })
    }

    /// Acknowledges every unacknowledged alert; how many there were.
    pub fn acknowledge_all(&self, by: &str, now: SystemTime) -> usize {
        self.apply(|book| {
            let done = book.acknowledge_all(by, now);
            let count = done.len();
            (done, count)
        })
    }

    /// Shelves an alert for `duration`, at most `max`.
    pub fn shelve(
        &self,
        id: &str,
        duration: Duration,
        max: Duration,
        by: &str,
        now: SystemTime,
    ) -> Result<Alert, AlertError> {
        if duration > max {
            return Err(AlertError::ShelvedTooLong(max));
        }
        self.apply(|book| match book.shelve(id, now + duration, by, now) {
            Ok(t) => (vec![t.clone()], Ok(t.alert)),
            Err(e) => (Vec::new(), Err(e)),
        })
    }

    pub fn unshelve(&self, id: &str, by: &str, now: SystemTime) -> Result<Alert, AlertError> {
        self.apply(|book| match book.unshelve(id, by, now) {
            Ok(t) => (vec![t.clone()], Ok(t.alert)),
            Err(e) => (Vec::new(), Err(e)),
        })
    }

    /// Every alert that is not normal, as `status` shows them.
    pub fn snapshot(&self) -> Vec<AlertStatus> {
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        book.alerts().map(AlertStatus::of).collect()
    }
}

fn view_of(book: &Book) -> View {
    Arc::new(
        book.alerts()
            .filter(|a| !a.shelved())
            .map(|a| (a.severity, a.state))
            .collect(),
    )
}

/// Runs blocking file I/O without holding up the tasks queued behind the caller (the outputs task
/// just woken by the view is one): on a multi-thread runtime the worker hands its queue to another
/// thread for the duration.
fn off_the_worker<T>(io: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(io),
        _ => io(),
    }
}

fn persist(file: &Path, book: &Book) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(book).map_err(std::io::Error::other)?;
    crate::files::write_atomically(file, &bytes, crate::files::STATE_FILE_MODE)
}

/// The maintenance alert id of an asset.
pub fn maintenance_id(asset: &str) -> String {
    format!("{asset}/maintenance")
}

/// The maintenance condition an assessment states.
pub fn maintenance_condition(assessment: &Assessment, latching: bool) -> Condition {
    Condition {
        id: maintenance_id(&assessment.asset),
        source: assessment.asset.clone(),
        origin: Origin::Maintenance,
        severity: match assessment.action {
            Action::ImmediateMaintenance => Severity::High,
            Action::ScheduledMaintenance | Action::RoutineMonitoring => Severity::Medium,
        },
        latching,
        active: assessment.action != Action::RoutineMonitoring,
        value: Some(assessment.failure_probability),
        reason: if assessment.reasons.is_empty() {
            assessment.action.name().to_string()
        } else {
            format!(
                "{}: {}",
                assessment.action.name(),
                assessment.reasons.join("; ")
            )
        },
    }
}

/// The agent-health condition with `id` (`agent/...`).
pub fn health_condition(id: String, severity: Severity, active: bool, reason: String) -> Condition {
    Condition {
        source: id.trim_start_matches("agent/").to_string(),
        id,
        origin: Origin::Health,
        severity,
        latching: false,
        active,
        value: None,
        reason,
    }
}

/// Whether an alert still has a source in `plan` (health alerts of outputs and devices included).
pub fn configured(plan: &Plan, alert: &Alert) -> bool {
    match alert.origin {
        Origin::Maintenance => plan
            .assets
            .iter()
            .any(|a| maintenance_id(&a.id) == alert.id),
        Origin::Limit => plan.alerting.limits.iter().any(|l| {
            l.limits
                .iter()
                .any(|limit| limits::alert_id(&l.tag, limit.kind) == alert.id)
        }),
        Origin::Health => {
            if let Some(device) = alert.id.strip_prefix("agent/device/") {
                plan.sources().iter().any(|s| s.source == device)
            } else if let Some(output) = alert.id.strip_prefix("agent/output/") {
                plan.alerting.outputs.iter().any(|o| o.name == output)
            } else {
                // agent/outbox, agent/dead_letters and agent/broker exist only with an uplink.
                plan.mqtt.is_some()
            }
        }
    }
}

/// Conditions queued from other stages before the decisions stage takes them.
const REPORTED_CAPACITY: usize = 64;

/// The channel on which other stages (the outputs: one failing) report agent-health conditions
/// to the decisions stage, the only one that changes the alert book from what stages see.
pub fn reporting() -> (mpsc::Sender<Condition>, mpsc::Receiver<Condition>) {
    mpsc::channel(REPORTED_CAPACITY)
}

/// Everything the alert sources read.
pub struct Inputs {
    /// Needed only with limits or an acknowledge input (an idle subscriber would lag and count
    /// drops).
    pub samples: Option<Subscriber>,
    pub assessments: broadcast::Receiver<Assessment>,
    pub devices: Vec<(String, Arc<DeviceStats>)>,
    pub outbox: Option<Arc<Outbox>>,
    pub uplink: Option<Arc<UplinkStats>>,
    /// Conditions other stages report (see [`reporting`]).
    pub reported: mpsc::Receiver<Condition>,
}

/// Raises and clears alerts from samples (limits, the acknowledge input), assessments and the
/// agent's health until `stop`: the decisions stage's loop around its core, `conditions`.
pub async fn run(
    mut conditions: Conditions,
    alerting: Alerting,
    alerts: Arc<Alerts>,
    mut inputs: Inputs,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    let mut health = HealthWatch::new(&alerting, &inputs.devices);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut assessing = true;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            sample = next_sample(&mut inputs.samples) => {
                let Some(sample) = sample else { break };
                let now = clock.now();
                let decided = conditions.sample(&sample, now);
                if let Some(by) = decided.acknowledge_all_by {
                    let count = alerts.acknowledge_all(&by, now);
                    info!(acknowledged = count, %by, "acknowledge input pressed");
                }
                for condition in decided.conditions {
                    alerts.condition(condition, now);
                }
            }
            Some(condition) = inputs.reported.recv() => alerts.condition(condition, clock.now()),
            assessment = inputs.assessments.recv(), if assessing => match assessment {
                Ok(assessment) => alerts.condition(conditions.assessment(&assessment), clock.now()),
                Err(broadcast::error::RecvError::Lagged(missed)) => warn!(missed, "assessments missed by the alerts"),
                Err(broadcast::error::RecvError::Closed) => assessing = false,
            },
            _ = tick.tick() => {
                let now = clock.now();
                for condition in conditions.tick(now).into_iter().chain(health.check(&inputs, now)) {
                    alerts.condition(condition, now);
                }
                alerts.apply(|book| (book.expire(now), ()));
            }
        }
    }
}

async fn next_sample(samples: &mut Option<Subscriber>) -> Option<crate::sample::Sample> {
    match samples {
        Some(samples) => samples.recv().await,
        None => std::future::pending().await,
    }
}

/// The agent's own health, judged once a second.
struct HealthWatch {
    device_down_after: Duration,
    outbox_filling_percent: u8,
    broker_unreachable_after: Duration,
    down_since: Vec<Option<SystemTime>>,
    broker_lost_since: Option<SystemTime>,
    /// Conditions reported at least once: each is reported at the first check (clearing what a
    /// restart remembered), then only on change.
    reported: HashMap<String, bool>,
}

impl HealthWatch {
    fn new(alerting: &Alerting, devices: &[(String, Arc<DeviceStats>)]) -> HealthWatch {
        HealthWatch {
            device_down_after: alerting.device_down_after,
            outbox_filling_percent: alerting.outbox_filling_percent,
            broker_unreachable_after: alerting.broker_unreachable_after,
            down_since: vec![None; devices.len()],
            broker_lost_since: None,
            reported: HashMap::new(),
        }
    }

    fn check(&mut self, inputs: &Inputs, now: SystemTime) -> Vec<Condition> {
        let mut found = Vec::new();
        for ((name, stats), since) in inputs.devices.iter().zip(self.down_since.iter_mut()) {
            let online = stats.online.load(Ordering::Relaxed);
            // Before the first attempt a source counts as offline: wait for one.
            let tried = [&stats.requests, &stats.transport_errors, &stats.timeouts]
                .iter()
                .any(|counter| counter.load(Ordering::Relaxed) > 0);
            *since = match (online, *since) {
                (true, _) => None,
                (false, None) if tried => Some(now),
                (false, other) => other,
            };
            let down = since.is_some_and(|s| elapsed(s, now) >= self.device_down_after);
            found.push(health_condition(
                format!("agent/device/{name}"),
                Severity::Medium,
                down,
                format!(
                    "{name} offline for more than {}",
                    humantime::format_duration(self.device_down_after)
                ),
            ));
        }
        if let Some(outbox) = &inputs.outbox {
            let stats = outbox.stats();
            let percent = stats.bytes.saturating_mul(100) / stats.max_bytes.max(1);
            let limit = u64::from(self.outbox_filling_percent);
            let was = self.reported.get("agent/outbox").copied().unwrap_or(false);
            // Five points of deadband so a full outbox at its drop threshold does not chatter.
            let filling = percent >= limit || (was && percent + 5 >= limit);
            found.push(health_condition(
                "agent/outbox".into(),
                Severity::High,
                filling,
                format!("outbox {percent}% full (alert at {limit}%): the uplink is not keeping up and the oldest summaries will be dropped"),
            ));
            let dead = &stats.dead_letters;
            found.push(health_condition(
                "agent/dead_letters".into(),
                Severity::Medium,
                dead.depth > 0,
                format!(
                    "{} record(s) the broker would not take wait in the outbox's dead letters (`millwright outbox --dead-letters`): {}",
                    dead.depth,
                    dead.last_reason.as_deref().unwrap_or("no reason recorded")
                ),
            ));
        }
        if let Some(uplink) = &inputs.uplink {
            let connected = uplink.connected.load(Ordering::Relaxed);
            let since = if connected {
                self.broker_lost_since = None;
                None
            } else {
                Some(*self.broker_lost_since.get_or_insert(now))
            };
            let unreachable =
                since.is_some_and(|s| elapsed(s, now) >= self.broker_unreachable_after);
            found.push(health_condition(
                "agent/broker".into(),
                Severity::Medium,
                unreachable,
                format!(
                    "MQTT broker unreachable for more than {}: {}",
                    humantime::format_duration(self.broker_unreachable_after),
                    uplink
                        .last_error()
                        .as_deref()
                        .unwrap_or("no connection attempt finished yet")
                ),
            ));
        }
        found.retain(|c| self.reported.insert(c.id.clone(), c.active) != Some(c.active));
        found
    }
}

fn elapsed(since: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(since).unwrap_or_default()
}

/// Clears alerts whose source left the configuration.
pub fn forget_unconfigured(alerts: &Alerts, plan: &Plan, now: SystemTime) {
    alerts.apply(|book| (book.forget(|a| configured(plan, a), now), ()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limit(active: bool) -> Condition {
        Condition {
            id: "temp/hi".into(),
            source: "temp".into(),
            origin: Origin::Limit,
            severity: Severity::Medium,
            latching: false,
            active,
            value: Some(81.0),
            reason: "temp 81°C above hi limit 80°C".into(),
        }
    }

    #[test]
    fn transitions_are_saved_and_an_unreadable_state_file_is_moved_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(STATE_FILE), b"{torn").expect("write");
        let alerts = Alerts::open(dir.path(), None);
        assert!(dir.path().join("alerts.json.unreadable").exists());
        assert!(alerts.snapshot().is_empty());
        let mut view = alerts.subscribe();
        alerts.condition(limit(true), SystemTime::UNIX_EPOCH);
        assert!(view.has_changed().expect("open"));
        assert_eq!(
            view.borrow_and_update().as_slice(),
            [(Severity::Medium, State::ActiveUnacknowledged)]
        );
        let reopened = Alerts::open(dir.path(), None);
        assert_eq!(reopened.snapshot()[0].state, "active_unacknowledged");
        assert_eq!(alerts.persist_failures.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn records_go_to_the_source_topic_and_health_to_the_agent() {
        let topics = crate::uplink::Topics::new("e/s/a/l", "gw");
        let mut book = Book::default();
        let raised = book
            .condition(limit(true), SystemTime::UNIX_EPOCH)
            .expect("raised");
        let limit_record = Report::AlertTransition(raised);
        assert_eq!(topics.of(&limit_record), "e/s/a/l/temp/alert");
        assert_eq!(limit_record.class(), crate::store::Class::Alert);
        let body: serde_json::Value =
            serde_json::from_str(&crate::uplink::encode::uns::data(&limit_record)).expect("json");
        assert_eq!(body["state"], "active_unacknowledged");
        assert_eq!(body["transition"], "raised");
        assert_eq!(body["value"], 81.0);
        let down = health_condition(
            "agent/device/plc".into(),
            Severity::Medium,
            true,
            "plc offline".into(),
        );
        assert_eq!(down.source, "device/plc");
        let raised = book
            .condition(down, SystemTime::UNIX_EPOCH)
            .expect("raised");
        assert_eq!(
            topics.of(&Report::AlertTransition(raised)),
            "e/s/a/l/gw/alert"
        );
    }

    #[test]
    fn health_watch_raises_and_clears_device_outbox_and_broker_alerts() {
        use crate::store::MemoryStore;

        let alerting = firmware_config::load_str(
            Path::new("t.toml"),
            "[alerts]\ndevice_down_after = \"30s\"\noutbox_filling_percent = 50\nbroker_unreachable_after = \"60s\"\n",
        )
        .expect("config")
        .alerting;
        let plc = Arc::new(DeviceStats::default());
        let outbox =
            Arc::new(Outbox::new(Box::new(MemoryStore::default()), 64 << 10).expect("outbox"));
        let uplink = Arc::new(UplinkStats::default());
        let bus = crate::bus::SampleBus::new(1);
        let (_feed, assessments) = broadcast::channel(1);
        let inputs = Inputs {
            samples: Some(bus.subscribe()),
            assessments,
            devices: vec![("plc".into(), Arc::clone(&plc))],
            outbox: Some(Arc::clone(&outbox)),
            uplink: Some(Arc::clone(&uplink)),
            reported: reporting().1,
        };
        let mut health = HealthWatch::new(&alerting, &inputs.devices);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |s: u64| start + Duration::from_secs(s);
        let said = |conditions: Vec<Condition>| -> Vec<(String, bool)> {
            conditions.into_iter().map(|c| (c.id, c.active)).collect()
        };
        // First check: everything reported once (inactive), which clears remembered alerts.
        assert_eq!(
            said(health.check(&inputs, at(0))),
            [
                ("agent/device/plc".to_string(), false),
                ("agent/outbox".to_string(), false),
                ("agent/dead_letters".to_string(), false),
                ("agent/broker".to_string(), false)
            ]
        );
        // The device fails its first request, the broker is not there: nothing yet.
        plc.requests.fetch_add(1, Ordering::Relaxed);
        assert!(health.check(&inputs, at(1)).is_empty());
        assert!(health.check(&inputs, at(30)).is_empty());
        assert_eq!(
            said(health.check(&inputs, at(31))),
            [("agent/device/plc".to_string(), true)]
        );
        *uplink.last_error.lock().expect("lock") =
            Some("connection refused: nothing accepts connections on b:1883".into());
        let broker = health.check(&inputs, at(61));
        assert_eq!(said(broker.clone()), [("agent/broker".to_string(), true)]);
        assert_eq!(
            broker[0].reason,
            "MQTT broker unreachable for more than 1m: connection refused: nothing accepts connections on b:1883",
            "the alert says why"
        );
        plc.online.store(true, Ordering::Relaxed);
        uplink.connected.store(true, Ordering::Relaxed);
        assert_eq!(
            said(health.check(&inputs, at(62))),
            [
                ("agent/device/plc".to_string(), false),
                ("agent/broker".to_string(), false)
            ]
        );
        // The outbox past half full raises; it clears only 5 points below.
        let mut first = None;
        while outbox.stats().bytes * 100 / outbox.stats().max_bytes < 50 {
            let padding = " ".repeat(512);
            let record = crate::reports::event("x", json!({ "padding": padding }), at(0));
            if let Ok(crate::store::Appended::Stored { id, .. }) = outbox.append(record) {
                first.get_or_insert(id);
            }
        }
        assert_eq!(
            said(health.check(&inputs, at(63))),
            [("agent/outbox".to_string(), true)]
        );
        outbox
            .acknowledge(crate::store::Class::Event, first.expect("stored"))
            .expect("remove one");
        assert!(outbox.stats().bytes * 100 / outbox.stats().max_bytes < 50);
        assert!(
            health.check(&inputs, at(64)).is_empty(),
            "within the deadband"
        );
        // A record moved to the dead letters raises agent/dead_letters until they are gone.
        let poison = outbox
            .next_after(crate::store::Class::Event, None, 1)
            .expect("read")
            .remove(0);
        outbox
            .bury(&poison, "p/gw/events", "the topic contains `#`", at(65))
            .expect("bury");
        let dead = health.check(&inputs, at(65));
        assert_eq!(
            said(dead.clone()),
            [("agent/dead_letters".to_string(), true)]
        );
        assert!(
            dead[0]
                .reason
                .starts_with("1 record(s) the broker would not take")
                && dead[0].reason.ends_with("the topic contains `#`"),
            "{}",
            dead[0].reason
        );
        outbox.drop_dead_letters().expect("drop");
        assert_eq!(
            said(health.check(&inputs, at(66))),
            [("agent/dead_letters".to_string(), false)]
        );
    }

    #[test]
    fn maintenance_alerts_follow_the_action() {
        let mut assessment =
            crate::health::assess::tests::assessment("P-1", Action::ImmediateMaintenance);
        assessment.reasons = vec!["vibration 5.1 mm/s in zone D".into()];
        let immediate = maintenance_condition(&assessment, true);
        assert!(immediate.active && immediate.latching);
        assert_eq!(immediate.id, "P-1/maintenance");
        assert_eq!(immediate.severity, Severity::High);
        assert_eq!(
            immediate.reason,
            "immediate_maintenance: vibration 5.1 mm/s in zone D"
        );
        assessment.action = Action::ScheduledMaintenance;
        assert_eq!(
            maintenance_condition(&assessment, true).severity,
            Severity::Medium
        );
        assessment.action = Action::RoutineMonitoring;
        assert!(!maintenance_condition(&assessment, true).active);
    }
}

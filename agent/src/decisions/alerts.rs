//! The agent's alerts: one [`Book`] per agent, owned by the decisions stage ([`run`]), fed by
//! assessments, tag limits, the agent's own health (device counters, the outbox's level and the
//! broker link as their owners announce them, the outputs over [`reporting`]), changed by
//! acknowledgements and shelving that arrive on its [`AlertDesk`] (MQTT, the control socket) and
//! by the acknowledge input.
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
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use firmware_config::{Alerting, Plan, Severity};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
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
use crate::store::{Level, NewRecord, Outbox};
pub use crate::uplink::encode::uns::state_name;
use crate::uplink::BrokerLink;

/// State file name inside the data directory.
pub const STATE_FILE: &str = "alerts.json";

/// What the outputs show: every alert that is not shelved, as severity and state.
pub type View = Arc<Vec<(Severity, State)>>;

/// Every alert that is not normal, as `status` shows them.
pub type Listed = Arc<Vec<AlertStatus>>;

/// How long a command waits for the decisions stage (it answers in microseconds; a reload in
/// progress holds requests until the new configuration's stage takes them).
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Requests queued for the decisions stage.
const REQUESTS_CAPACITY: usize = 16;

/// A change people ask for (MQTT, the control socket), carried out by the decisions stage.
enum Request {
    Acknowledge {
        /// `None`: every unacknowledged alert.
        id: Option<String>,
        by: String,
        reply: oneshot::Sender<Result<Acknowledged, AlertError>>,
    },
    Shelve {
        id: String,
        duration: Duration,
        by: String,
        reply: oneshot::Sender<Result<Alert, AlertError>>,
    },
    Unshelve {
        id: String,
        by: String,
        reply: oneshot::Sender<Result<Alert, AlertError>>,
    },
}

/// What an acknowledgement did.
#[derive(Debug)]
pub enum Acknowledged {
    One(Alert),
    All(usize),
}

/// The alert book and everything that follows from a change to it. Owned by the decisions stage
/// alone: other stages report conditions on [`reporting`], people's requests arrive through an
/// [`AlertDesk`], and the book is published as a [`View`] for the outputs and a [`Listed`] for
/// `status`. Between two configurations the book passes from one stage to the next.
pub struct Alerts {
    book: Book,
    file: PathBuf,
    /// Where transitions go upstream (none without `[mqtt]`).
    upstream: Option<Arc<Outbox>>,
    view: watch::Sender<View>,
    listed: watch::Sender<Listed>,
    requests: mpsc::Receiver<Request>,
    desk: AlertDesk,
    pub persist_failures: u64,
}

impl Alerts {
    /// The alerts of the agent whose data directory is `data_dir`, as they were when it stopped;
    /// transitions also become records in `upstream`.
    pub fn open(data_dir: &Path, upstream: Option<Arc<Outbox>>) -> Alerts {
        let file = data_dir.join(STATE_FILE);
        let book = restore(&file);
        let (view, _) = watch::channel(view_of(&book));
        let (listed, listing) = watch::channel(listed_of(&book));
        let (send, requests) = mpsc::channel(REQUESTS_CAPACITY);
        Alerts {
            book,
            file,
            upstream,
            view,
            listed,
            requests,
            desk: AlertDesk {
                requests: send,
                listed: listing,
            },
            persist_failures: 0,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<View> {
        self.view.subscribe()
    }

    /// Where people's requests come in; it stays valid across configurations.
    pub fn desk(&self) -> AlertDesk {
        self.desk.clone()
    }

    /// Changes the book and carries out what changed (see the module invariants).
    pub fn apply<T>(&mut self, change: impl FnOnce(&mut Book) -> (Vec<Transition>, T)) -> T {
        let (transitions, result) = change(&mut self.book);
        if transitions.is_empty() {
            return result;
        }
        self.view.send_replace(view_of(&self.book));
        self.listed.send_replace(listed_of(&self.book));
        if let Err(error) = crate::files::off_the_worker(|| persist(&self.file, &self.book)) {
            self.persist_failures += 1;
            if self.persist_failures == 1 {
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

    pub fn condition(&mut self, condition: Condition, now: SystemTime) {
        self.apply(|book| (book.condition(condition, now).into_iter().collect(), ()));
    }

    pub fn acknowledge(
        &mut self,
        id: &str,
        by: &str,
        now: SystemTime,
    ) -> Result<Alert, AlertError> {
        self.apply(|book| single(book.acknowledge(id, by, now)))
    }

    /// Acknowledges every unacknowledged alert; how many there were.
    pub fn acknowledge_all(&mut self, by: &str, now: SystemTime) -> usize {
        self.apply(|book| {
            let done = book.acknowledge_all(by, now);
            let count = done.len();
            (done, count)
        })
    }

    /// Shelves an alert for `duration`, at most `max`.
    pub fn shelve(
        &mut self,
        id: &str,
        (duration, max): (Duration, Duration),
        by: &str,
        now: SystemTime,
    ) -> Result<Alert, AlertError> {
        if duration > max {
            return Err(AlertError::ShelvedTooLong(max));
        }
        self.apply(|book| single(book.shelve(id, now + duration, by, now)))
    }

    pub fn unshelve(&mut self, id: &str, by: &str, now: SystemTime) -> Result<Alert, AlertError> {
        self.apply(|book| single(book.unshelve(id, by, now)))
    }

    /// Every alert that is not normal, as `status` shows them.
    pub fn snapshot(&self) -> Vec<AlertStatus> {
        listed_of(&self.book).to_vec()
    }

    /// Carries out one request; a requester that gave up is not an error.
    fn serve(&mut self, request: Request, max_shelve: Duration, now: SystemTime) {
        match request {
            Request::Acknowledge {
                id: None,
                by,
                reply,
            } => {
                let count = self.acknowledge_all(&by, now);
                let _ = reply.send(Ok(Acknowledged::All(count)));
            }
            Request::Acknowledge {
                id: Some(id),
                by,
                reply,
            } => {
                let _ = reply.send(self.acknowledge(&id, &by, now).map(Acknowledged::One));
            }
            Request::Shelve {
                id,
                duration,
                by,
                reply,
            } => {
                let _ = reply.send(self.shelve(&id, (duration, max_shelve), &by, now));
            }
            Request::Unshelve { id, by, reply } => {
                let _ = reply.send(self.unshelve(&id, &by, now));
            }
        }
    }
}

fn single(done: Result<Transition, AlertError>) -> (Vec<Transition>, Result<Alert, AlertError>) {
    match done {
        Ok(t) => {
            let alert = t.alert.clone();
            (vec![t], Ok(alert))
        }
        Err(e) => (Vec::new(), Err(e)),
    }
}

/// The book in the state file, or an empty one (a file that cannot be read is moved aside).
fn restore(file: &Path) -> Book {
    match std::fs::read(file) {
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
                let _ = std::fs::rename(file, &aside);
                error!(%error, moved_to = %aside.display(), "the alert state file cannot be read; starting with no alerts");
                Book::default()
            }
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Book::default(),
        Err(error) => {
            error!(%error, file = %file.display(), "the alert state file cannot be read; starting with no alerts");
            Book::default()
        }
    }
}

/// How other parts of the agent ask the decisions stage to change the book, and read it.
#[derive(Clone)]
pub struct AlertDesk {
    requests: mpsc::Sender<Request>,
    listed: watch::Receiver<Listed>,
}

impl AlertDesk {
    /// Every alert that is not normal, as the decisions stage last published them.
    pub fn snapshot(&self) -> Vec<AlertStatus> {
        self.listed.borrow().to_vec()
    }

    /// Acknowledges one alert, or every unacknowledged one when `id` is `None`.
    pub async fn acknowledge(
        &self,
        id: Option<&str>,
        by: &str,
    ) -> Result<Acknowledged, AlertError> {
        let (id, by) = (id.map(str::to_string), by.to_string());
        self.ask(|reply| Request::Acknowledge { id, by, reply })
            .await?
    }

    pub async fn shelve(
        &self,
        id: &str,
        duration: Duration,
        by: &str,
    ) -> Result<Alert, AlertError> {
        let (id, by) = (id.to_string(), by.to_string());
        self.ask(|reply| Request::Shelve {
            id,
            duration,
            by,
            reply,
        })
        .await?
    }

    pub async fn unshelve(&self, id: &str, by: &str) -> Result<Alert, AlertError> {
        let (id, by) = (id.to_string(), by.to_string());
        self.ask(|reply| Request::Unshelve { id, by, reply })
            .await?
    }

    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, AlertError> {
        let (reply, answer) = oneshot::channel();
        let asked = async {
            self.requests.send(request(reply)).await.ok()?;
            answer.await.ok()
        };
        match tokio::time::timeout(ANSWER_WITHIN, asked).await {
            Ok(Some(answer)) => Ok(answer),
            Ok(None) => Err(AlertError::Unavailable("the agent is stopping".into())),
            Err(_) => Err(AlertError::Unavailable(format!(
                "the decisions stage did not answer within {}",
                humantime::format_duration(ANSWER_WITHIN)
            ))),
        }
    }
}

fn listed_of(book: &Book) -> Listed {
    Arc::new(book.alerts().map(AlertStatus::of).collect())
}

fn view_of(book: &Book) -> View {
    Arc::new(
        book.alerts()
            .filter(|a| !a.shelved())
            .map(|a| (a.severity, a.state))
            .collect(),
    )
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
        Origin::Production => plan
            .lines
            .iter()
            .any(|line| crate::production::line::alert_ids(line).contains(&alert.id)),
        Origin::Quality => plan
            .quality
            .iter()
            .any(|station| station.alert_ids().contains(&alert.id)),
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
    /// The outbox's level (see [`Outbox::level`]).
    pub outbox: Option<watch::Receiver<Level>>,
    /// The broker connection (see [`UplinkStats::link`]).
    pub broker: Option<watch::Receiver<BrokerLink>>,
    /// Conditions other stages report (see [`reporting`]).
    pub reported: mpsc::Receiver<Condition>,
}

/// Raises and clears alerts from samples (limits, the acknowledge input), assessments, the
/// agent's health and people's requests until `stop`: the decisions stage's loop around its
/// core, `conditions`. Hands the book back for the next configuration.
pub async fn run(
    mut conditions: Conditions,
    alerting: Alerting,
    mut alerts: Alerts,
    mut inputs: Inputs,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) -> Alerts {
    let mut health = HealthWatch::new(&alerting, &inputs.devices);
    let mut tick = crate::clock::ticker(Duration::from_secs(1));
    let mut assessing = true;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(request) = alerts.requests.recv() => alerts.serve(request, alerting.max_shelve, clock.now()),
            polled = next_batch(&mut inputs.samples) => {
                let Some(polled) = polled else { break };
                let now = clock.now();
                for sample in polled.iter() {
                    let decided = conditions.sample(sample, now);
                    if let Some(by) = decided.acknowledge_all_by {
                        let count = alerts.acknowledge_all(&by, now);
                        info!(acknowledged = count, %by, "acknowledge input pressed");
                    }
                    for condition in decided.conditions {
                        alerts.condition(condition, now);
                    }
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
    alerts
}

async fn next_batch(samples: &mut Option<Subscriber>) -> Option<crate::bus::Polled> {
    match samples {
        Some(samples) => samples.recv_batch().await,
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
            let level = outbox.borrow().clone();
            let percent = level.percent;
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
            found.push(health_condition(
                "agent/dead_letters".into(),
                Severity::Medium,
                level.dead_letters > 0,
                format!(
                    "{} record(s) the broker would not take wait in the outbox's dead letters (`millwright outbox --dead-letters`): {}",
                    level.dead_letters,
                    level.last_dead_reason.as_deref().unwrap_or("no reason recorded")
                ),
            ));
        }
        if let Some(broker) = &inputs.broker {
            let link = broker.borrow().clone();
            let since = if link.connected {
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
                    link.last_error
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
pub fn forget_unconfigured(alerts: &mut Alerts, plan: &Plan, now: SystemTime) {
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
        let mut alerts = Alerts::open(dir.path(), None);
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
        assert_eq!(alerts.persist_failures, 0);
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

    /// The time the decisions stage's manual clock stands at in the desk test.
    const DESK_TIME: SystemTime = SystemTime::UNIX_EPOCH;

    /// The decisions stage around a book, with nothing else feeding it.
    fn decisions(
        alerts: Alerts,
        max_shelve: &str,
    ) -> (CancellationToken, tokio::task::JoinHandle<Alerts>) {
        let alerting = firmware_config::load_str(
            Path::new("t.toml"),
            &format!("[alerts]\nmax_shelve = \"{max_shelve}\"\n"),
        )
        .expect("config")
        .alerting;
        let (_feed, assessments) = broadcast::channel(1);
        let inputs = Inputs {
            samples: None,
            assessments,
            devices: Vec::new(),
            outbox: None,
            broker: None,
            reported: reporting().1,
        };
        let stop = CancellationToken::new();
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::ManualClock::new(DESK_TIME));
        let task = tokio::spawn(run(
            Conditions::new(&alerting),
            alerting,
            alerts,
            inputs,
            clock,
            stop.clone(),
        ));
        (stop, task)
    }

    #[tokio::test]
    async fn requests_are_carried_out_by_the_decisions_stage_and_outlive_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut alerts = Alerts::open(dir.path(), None);
        alerts.condition(limit(true), DESK_TIME);
        let desk = alerts.desk();
        let (stop, task) = decisions(alerts, "1h");
        let done = desk.acknowledge(Some("temp/hi"), "ann").await.expect("ack");
        assert!(
            matches!(done, Acknowledged::One(alert) if alert.acknowledged_by.as_deref() == Some("ann"))
        );
        assert_eq!(desk.snapshot()[0].state, "active_acknowledged", "published");
        let err = desk
            .acknowledge(Some("nope"), "ann")
            .await
            .expect_err("unknown");
        assert!(err.to_string().contains("temp/hi"), "{err}");
        let refused = desk
            .shelve("temp/hi", Duration::from_secs(7200), "ann")
            .await
            .expect_err("longer than max_shelve");
        assert!(
            matches!(refused, AlertError::ShelvedTooLong(_)),
            "{refused}"
        );
        // A reload: the stage stops and hands the book over; a request made in between waits
        // for the next configuration's stage, which allows longer shelving.
        stop.cancel();
        let alerts = task.await.expect("the book comes back");
        assert_eq!(alerts.snapshot()[0].acknowledged_by.as_deref(), Some("ann"));
        let asking = tokio::spawn({
            let desk = desk.clone();
            async move {
                desk.shelve("temp/hi", Duration::from_secs(7200), "bob")
                    .await
            }
        });
        tokio::task::yield_now().await;
        let (stop, task) = decisions(alerts, "8h");
        let shelved = asking
            .await
            .expect("task")
            .expect("shelved by the next stage");
        assert!(shelved.shelved());
        stop.cancel();
        drop(task.await.expect("stopped"));
        let err = desk
            .unshelve("temp/hi", "bob")
            .await
            .expect_err("nobody answers");
        assert!(matches!(err, AlertError::Unavailable(_)), "{err}");
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
        let uplink = Arc::new(crate::uplink::UplinkStats::default());
        let bus = crate::bus::SampleBus::new(1);
        let (_feed, assessments) = broadcast::channel(1);
        let inputs = Inputs {
            samples: Some(bus.subscribe()),
            assessments,
            devices: vec![("plc".into(), Arc::clone(&plc))],
            outbox: Some(outbox.level()),
            broker: Some(uplink.link()),
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
        uplink.set_link(
            false,
            Some("connection refused: nothing accepts connections on b:1883".into()),
        );
        let broker = health.check(&inputs, at(61));
        assert_eq!(said(broker.clone()), [("agent/broker".to_string(), true)]);
        assert_eq!(
            broker[0].reason,
            "MQTT broker unreachable for more than 1m: connection refused: nothing accepts connections on b:1883",
            "the alert says why"
        );
        plc.online.store(true, Ordering::Relaxed);
        uplink.set_link(true, None);
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

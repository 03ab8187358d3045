//! The alert lifecycle, after ISA-18.2: normal → active-unacknowledged → active-acknowledged →
//! normal; an alert that clears while unacknowledged returns to normal at once unless it latches,
//! in which case it waits as cleared-unacknowledged until someone acknowledges it. Shelving hides
//! an alert from the local outputs until an expiry, without changing its state.
//!
//! Pure: the [`Book`] is changed by conditions, acknowledgements, shelving and the passing of time,
//! and says what changed as [`Transition`]s. Invariants:
//! - an alert in the book is never in the normal state: normal means absent;
//! - every change to the book yields exactly one transition, and nothing else changes it, so the
//!   transitions are a complete history and the book can be rebuilt from its last snapshot;
//! - a repeated condition (same activity, same severity) changes nothing.

use std::collections::BTreeMap;
use std::time::SystemTime;

use firmware_config::Severity;
use serde::{Deserialize, Serialize};

/// Where an alert comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// An asset's assessment asks for maintenance.
    Maintenance,
    /// A tag beyond one of its limits.
    Limit,
    /// The agent itself: a device down, the outbox filling, the broker unreachable, an output failing.
    Health,
    /// A production line: stopped too long, OEE below its target, rejects above their limit.
    Production,
    /// A quality station: a run rule broken, Cpk below its minimum, rejects above their limit.
    Quality,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    ActiveUnacknowledged,
    ActiveAcknowledged,
    ClearedUnacknowledged,
}

impl State {
    pub fn is_active(self) -> bool {
        !matches!(self, State::ClearedUnacknowledged)
    }

    pub fn is_acknowledged(self) -> bool {
        matches!(self, State::ActiveAcknowledged)
    }
}

/// What a condition source says about one alert at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub id: String,
    /// The asset, tag or agent part the alert is about.
    pub source: String,
    pub origin: Origin,
    pub severity: Severity,
    pub latching: bool,
    pub active: bool,
    pub value: Option<f64>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub source: String,
    pub origin: Origin,
    pub severity: Severity,
    pub latching: bool,
    pub state: State,
    /// The value and reason when the alert was raised or last changed severity.
    pub value: Option<f64>,
    pub reason: String,
    pub raised: SystemTime,
    pub changed: SystemTime,
    pub acknowledged_by: Option<String>,
    pub shelved_until: Option<SystemTime>,
}

impl Alert {
    pub fn shelved(&self) -> bool {
        self.shelved_until.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Raised,
    /// Severity rose while active: annunciated again as unacknowledged.
    Escalated,
    /// Severity fell while active.
    Eased,
    Acknowledged,
    Cleared,
    Shelved,
    Unshelved,
}

/// One change to one alert: the alert as it is after the change, with `state` `None` once it is
/// back to normal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub change: Change,
    pub alert: Alert,
    pub state: Option<State>,
    pub by: Option<String>,
    pub at: SystemTime,
}

/// Why an acknowledgement or a shelving was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    #[error("no alert {id:?} (present: {present})")]
    Unknown { id: String, present: String },
    #[error("alert {id:?} is already acknowledged (by {by})")]
    AlreadyAcknowledged { id: String, by: String },
    #[error("alert {0:?} is not shelved")]
    NotShelved(String),
    #[error("shelving is limited to {} (alerts.max_shelve)", humantime::format_duration(*.0))]
    ShelvedTooLong(std::time::Duration),
    /// The decisions stage could not take the request.
    #[error("{0}")]
    Unavailable(String),
}

/// Every alert that is not normal, by id.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Book {
    alerts: BTreeMap<String, Alert>,
}

fn transition(change: Change, alert: &Alert, by: Option<&str>, at: SystemTime) -> Transition {
    Transition {
        change,
        state: Some(alert.state),
        alert: alert.clone(),
        by: by.map(str::to_string),
        at,
    }
}

fn returned(change: Change, alert: Alert, by: Option<&str>, at: SystemTime) -> Transition {
    Transition {
        change,
        alert,
        state: None,
        by: by.map(str::to_string),
        at,
    }
}

impl Book {
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values()
    }

    pub fn get(&self, id: &str) -> Option<&Alert> {
        self.alerts.get(id)
    }

    /// Applies what a source says now.
    pub fn condition(&mut self, condition: Condition, now: SystemTime) -> Option<Transition> {
        let id = condition.id.clone();
        match (self.alerts.get_mut(&id), condition.active) {
            (None, false) => None,
            (None, true) => {
                let alert = Alert {
                    id: id.clone(),
                    source: condition.source,
                    origin: condition.origin,
                    severity: condition.severity,
                    latching: condition.latching,
                    state: State::ActiveUnacknowledged,
                    value: condition.value,
                    reason: condition.reason,
                    raised: now,
                    changed: now,
                    acknowledged_by: None,
                    shelved_until: None,
                };
                let raised = transition(Change::Raised, &alert, None, now);
                self.alerts.insert(id, alert);
                Some(raised)
            }
            (Some(alert), true) if alert.state == State::ClearedUnacknowledged => {
                alert.state = State::ActiveUnacknowledged;
                alert.severity = condition.severity;
                (alert.value, alert.reason) = (condition.value, condition.reason);
                (alert.raised, alert.changed) = (now, now);
                Some(transition(Change::Raised, alert, None, now))
            }
            (Some(alert), true) => {
                if condition.severity == alert.severity {
                    return None;
                }
                let change = if condition.severity > alert.severity {
                    alert.state = State::ActiveUnacknowledged;
                    alert.acknowledged_by = None;
                    Change::Escalated
                } else {
                    Change::Eased
                };
                alert.severity = condition.severity;
                (alert.value, alert.reason) = (condition.value, condition.reason);
                alert.changed = now;
                Some(transition(change, alert, None, now))
            }
            (Some(alert), false) => match alert.state {
                State::ClearedUnacknowledged => None,
                State::ActiveUnacknowledged if alert.latching => {
                    alert.state = State::ClearedUnacknowledged;
                    alert.changed = now;
                    alert.value = condition.value;
                    Some(transition(Change::Cleared, alert, None, now))
                }
                State::ActiveUnacknowledged | State::ActiveAcknowledged => {
                    let mut alert = self.alerts.remove(&id)?;
                    alert.value = condition.value;
                    alert.changed = now;
                    Some(returned(Change::Cleared, alert, None, now))
                }
            },
        }
    }

    /// Acknowledges one alert.
    pub fn acknowledge(
        &mut self,
        id: &str,
        by: &str,
        now: SystemTime,
    ) -> Result<Transition, AlertError> {
        let Some(alert) = self.alerts.get_mut(id) else {
            return Err(self.unknown(id));
        };
        match alert.state {
            State::ActiveAcknowledged => Err(AlertError::AlreadyAcknowledged {
                id: id.to_string(),
                by: alert
                    .acknowledged_by
                    .clone()
                    .unwrap_or_else(|| "someone".into()),
            }),
            State::ActiveUnacknowledged => {
                alert.state = State::ActiveAcknowledged;
                alert.acknowledged_by = Some(by.to_string());
                alert.changed = now;
                Ok(transition(Change::Acknowledged, alert, Some(by), now))
            }
            State::ClearedUnacknowledged => {
                let mut alert = self.alerts.remove(id).ok_or_else(|| self.unknown(id))?;
                alert.acknowledged_by = Some(by.to_string());
                alert.changed = now;
                Ok(returned(Change::Acknowledged, alert, Some(by), now))
            }
        }
    }

    /// Acknowledges every unacknowledged alert (the acknowledge button).
    pub fn acknowledge_all(&mut self, by: &str, now: SystemTime) -> Vec<Transition> {
        let waiting: Vec<String> = self
            .alerts
            .values()
            .filter(|a| !a.state.is_acknowledged())
            .map(|a| a.id.clone())
            .collect();
        waiting
            .iter()
            .filter_map(|id| self.acknowledge(id, by, now).ok())
            .collect()
    }

    /// Hides an alert from the local outputs until `until`.
    pub fn shelve(
        &mut self,
        id: &str,
        until: SystemTime,
        by: &str,
        now: SystemTime,
    ) -> Result<Transition, AlertError> {
        let Some(alert) = self.alerts.get_mut(id) else {
            return Err(self.unknown(id));
        };
        alert.shelved_until = Some(until);
        alert.changed = now;
        Ok(transition(Change::Shelved, alert, Some(by), now))
    }

    /// Ends shelving early.
    pub fn unshelve(
        &mut self,
        id: &str,
        by: &str,
        now: SystemTime,
    ) -> Result<Transition, AlertError> {
        let Some(alert) = self.alerts.get_mut(id) else {
            return Err(self.unknown(id));
        };
        if alert.shelved_until.take().is_none() {
            return Err(AlertError::NotShelved(id.to_string()));
        }
        alert.changed = now;
        Ok(transition(Change::Unshelved, alert, Some(by), now))
    }

    /// Ends shelving that has expired. An alert still active comes back unacknowledged: whoever
    /// shelved it is not the one who must see it now.
    pub fn expire(&mut self, now: SystemTime) -> Vec<Transition> {
        let mut changes = Vec::new();
        for alert in self.alerts.values_mut() {
            if alert.shelved_until.is_some_and(|until| until <= now) {
                alert.shelved_until = None;
                if alert.state == State::ActiveAcknowledged {
                    alert.state = State::ActiveUnacknowledged;
                    alert.acknowledged_by = None;
                }
                alert.changed = now;
                changes.push(transition(Change::Unshelved, alert, Some("expiry"), now));
            }
        }
        changes
    }

    /// Removes alerts whose source no longer exists (after a configuration change).
    pub fn forget(&mut self, keep: impl Fn(&Alert) -> bool, now: SystemTime) -> Vec<Transition> {
        let gone: Vec<String> = self
            .alerts
            .values()
            .filter(|a| !keep(a))
            .map(|a| a.id.clone())
            .collect();
        gone.into_iter()
            .filter_map(|id| self.alerts.remove(&id))
            .map(|mut alert| {
                alert.reason = "no longer configured".into();
                alert.changed = now;
                returned(Change::Cleared, alert, Some("configuration"), now)
            })
            .collect()
    }

    fn unknown(&self, id: &str) -> AlertError {
        let known: Vec<&str> = self.alerts.keys().map(String::as_str).collect();
        AlertError::Unknown {
            id: id.to_string(),
            present: if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::clock::{Clock, ManualClock};

    fn condition(id: &str, active: bool, severity: Severity, latching: bool) -> Condition {
        Condition {
            id: id.into(),
            source: "pump".into(),
            origin: Origin::Limit,
            severity,
            latching,
            active,
            value: Some(91.0),
            reason: "above hi".into(),
        }
    }

    fn start() -> ManualClock {
        ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
    }

    fn state(book: &Book, id: &str) -> Option<State> {
        book.get(id).map(|a| a.state)
    }

    /// The book after a restart: written and read back as the agent does.
    fn restarted(book: &Book) -> Book {
        serde_json::from_slice(&serde_json::to_vec(book).expect("encode")).expect("decode")
    }

    #[test]
    fn non_latching_alert_acknowledged_then_cleared() {
        let clock = start();
        let mut book = Book::default();
        let raised = book
            .condition(
                condition("t/hi", true, Severity::Medium, false),
                clock.now(),
            )
            .expect("raised");
        assert_eq!(raised.change, Change::Raised);
        assert_eq!(raised.state, Some(State::ActiveUnacknowledged));
        assert!(book
            .condition(
                condition("t/hi", true, Severity::Medium, false),
                clock.now()
            )
            .is_none());
        clock.advance(Duration::from_secs(5));
        let acked = book
            .acknowledge("t/hi", "operator", clock.now())
            .expect("ack");
        assert_eq!(acked.state, Some(State::ActiveAcknowledged));
        assert_eq!(acked.by.as_deref(), Some("operator"));
        assert!(book.acknowledge("t/hi", "again", clock.now()).is_err());
        let cleared = book
            .condition(
                condition("t/hi", false, Severity::Medium, false),
                clock.now(),
            )
            .expect("cleared");
        assert_eq!((cleared.change, cleared.state), (Change::Cleared, None));
        assert!(book.get("t/hi").is_none());
    }

    #[test]
    fn unacknowledged_non_latching_alert_clears_by_itself() {
        let clock = start();
        let mut book = Book::default();
        book.condition(
            condition("t/hi", true, Severity::Medium, false),
            clock.now(),
        );
        let cleared = book
            .condition(
                condition("t/hi", false, Severity::Medium, false),
                clock.now(),
            )
            .expect("cleared");
        assert_eq!(cleared.state, None);
        assert!(book.acknowledge("t/hi", "late", clock.now()).is_err());
    }

    #[test]
    fn latching_alert_waits_for_acknowledgement_after_clearing() {
        let clock = start();
        let mut book = Book::default();
        book.condition(condition("t/hh", true, Severity::High, true), clock.now());
        let cleared = book
            .condition(condition("t/hh", false, Severity::High, true), clock.now())
            .expect("cleared");
        assert_eq!(cleared.state, Some(State::ClearedUnacknowledged));
        assert_eq!(state(&book, "t/hh"), Some(State::ClearedUnacknowledged));
        // Back beyond the limit before anyone looked: active and unacknowledged again.
        let again = book
            .condition(condition("t/hh", true, Severity::High, true), clock.now())
            .expect("again");
        assert_eq!(again.state, Some(State::ActiveUnacknowledged));
        book.condition(condition("t/hh", false, Severity::High, true), clock.now());
        // Acknowledged after clearing: back to normal.
        let acked = book
            .acknowledge("t/hh", "operator", clock.now())
            .expect("ack");
        assert_eq!((acked.change, acked.state), (Change::Acknowledged, None));
        assert!(book.get("t/hh").is_none());
    }

    #[test]
    fn latching_alert_acknowledged_while_active_clears_to_normal() {
        let clock = start();
        let mut book = Book::default();
        book.condition(condition("t/hh", true, Severity::High, true), clock.now());
        book.acknowledge("t/hh", "operator", clock.now())
            .expect("ack");
        let cleared = book
            .condition(condition("t/hh", false, Severity::High, true), clock.now())
            .expect("cleared");
        assert_eq!(cleared.state, None);
    }

    #[test]
    fn escalation_is_annunciated_again_and_easing_is_not() {
        let clock = start();
        let mut book = Book::default();
        book.condition(condition("a/m", true, Severity::Medium, false), clock.now());
        book.acknowledge("a/m", "operator", clock.now())
            .expect("ack");
        let up = book
            .condition(condition("a/m", true, Severity::High, false), clock.now())
            .expect("escalated");
        assert_eq!(up.change, Change::Escalated);
        assert_eq!(up.state, Some(State::ActiveUnacknowledged));
        book.acknowledge("a/m", "operator", clock.now())
            .expect("ack");
        let down = book
            .condition(condition("a/m", true, Severity::Medium, false), clock.now())
            .expect("eased");
        assert_eq!(down.change, Change::Eased);
        assert_eq!(down.state, Some(State::ActiveAcknowledged));
    }

    #[test]
    fn shelving_expires_and_an_active_alert_comes_back_unacknowledged() {
        let clock = start();
        let mut book = Book::default();
        book.condition(
            condition("t/hi", true, Severity::Medium, false),
            clock.now(),
        );
        book.acknowledge("t/hi", "operator", clock.now())
            .expect("ack");
        let until = clock.now() + Duration::from_secs(3600);
        let shelved = book
            .shelve("t/hi", until, "operator", clock.now())
            .expect("shelved");
        assert_eq!(shelved.alert.shelved_until, Some(until));
        clock.advance(Duration::from_secs(3599));
        assert!(book.expire(clock.now()).is_empty());
        clock.advance(Duration::from_secs(1));
        let expired = book.expire(clock.now());
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].change, Change::Unshelved);
        assert_eq!(expired[0].state, Some(State::ActiveUnacknowledged));
        assert!(!book.get("t/hi").expect("present").shelved());
        assert!(book.unshelve("t/hi", "x", clock.now()).is_err());
    }

    #[test]
    fn a_shelved_alert_that_clears_leaves_the_book() {
        let clock = start();
        let mut book = Book::default();
        book.condition(
            condition("t/hi", true, Severity::Medium, false),
            clock.now(),
        );
        book.shelve(
            "t/hi",
            clock.now() + Duration::from_secs(60),
            "op",
            clock.now(),
        )
        .expect("shelved");
        book.condition(
            condition("t/hi", false, Severity::Medium, false),
            clock.now(),
        );
        clock.advance(Duration::from_secs(120));
        assert!(book.expire(clock.now()).is_empty());
        assert!(book.get("t/hi").is_none());
    }

    #[test]
    fn every_state_survives_a_restart() {
        let clock = start();
        let mut book = Book::default();
        book.condition(
            condition("unacked", true, Severity::High, false),
            clock.now(),
        );
        book.condition(
            condition("acked", true, Severity::Medium, false),
            clock.now(),
        );
        book.acknowledge("acked", "operator", clock.now())
            .expect("ack");
        book.condition(
            condition("latched", true, Severity::Critical, true),
            clock.now(),
        );
        book.condition(
            condition("latched", false, Severity::Critical, true),
            clock.now(),
        );
        book.condition(
            condition("shelved", true, Severity::Low, false),
            clock.now(),
        );
        let until = clock.now() + Duration::from_secs(600);
        book.shelve("shelved", until, "operator", clock.now())
            .expect("shelve");

        let mut after = restarted(&book);
        assert_eq!(after, book);
        assert_eq!(state(&after, "unacked"), Some(State::ActiveUnacknowledged));
        assert_eq!(state(&after, "acked"), Some(State::ActiveAcknowledged));
        assert_eq!(
            after
                .get("acked")
                .and_then(|a| a.acknowledged_by.as_deref()),
            Some("operator")
        );
        assert_eq!(state(&after, "latched"), Some(State::ClearedUnacknowledged));
        assert_eq!(
            after.get("shelved").and_then(|a| a.shelved_until),
            Some(until)
        );

        // The lifecycle goes on from where it was.
        assert!(after
            .condition(
                condition("unacked", true, Severity::High, false),
                clock.now()
            )
            .is_none());
        let acked = after
            .acknowledge("latched", "operator", clock.now())
            .expect("ack");
        assert_eq!(acked.state, None);
        clock.advance(Duration::from_secs(600));
        assert_eq!(after.expire(clock.now()).len(), 1);
        let cleared = after
            .condition(
                condition("acked", false, Severity::Medium, false),
                clock.now(),
            )
            .expect("cleared");
        assert_eq!(cleared.state, None);
    }

    #[test]
    fn acknowledge_all_takes_every_waiting_alert_and_names_unknown_ones() {
        let clock = start();
        let mut book = Book::default();
        book.condition(condition("a", true, Severity::High, false), clock.now());
        book.condition(condition("b", true, Severity::High, true), clock.now());
        book.condition(condition("b", false, Severity::High, true), clock.now());
        book.condition(condition("c", true, Severity::Low, false), clock.now());
        book.acknowledge("c", "x", clock.now()).expect("ack");
        let acked = book.acknowledge_all("button", clock.now());
        assert_eq!(acked.len(), 2);
        assert_eq!(state(&book, "a"), Some(State::ActiveAcknowledged));
        assert!(book.get("b").is_none());
        let error = book
            .acknowledge("zz", "x", clock.now())
            .expect_err("unknown");
        assert!(error.to_string().contains("a, c"), "{error}");
    }

    #[test]
    fn forgotten_sources_are_cleared() {
        let clock = start();
        let mut book = Book::default();
        book.condition(condition("old", true, Severity::High, false), clock.now());
        book.condition(condition("kept", true, Severity::High, false), clock.now());
        let gone = book.forget(|a| a.id == "kept", clock.now());
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].alert.id, "old");
        assert!(book.get("kept").is_some());
    }
}

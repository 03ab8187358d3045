//! The decisions stage's synchronous core: turns samples (tag limits, the acknowledge input) and
//! assessments (maintenance) into alert [`Condition`]s, under whatever clock it is given. The
//! running agent ([`super::alerts::run`]) and `millwright replay` both drive it; the first hands
//! its conditions to the shared alert book, the second to a book of its own.

use std::collections::HashMap;
use std::time::SystemTime;

use firmware_config::{Alerting, Limit, LimitKind};

use super::alerts::maintenance_condition;
use super::lifecycle::{Condition, Origin};
use super::limits::{self, LimitWatch};
use crate::health::assess::Assessment;
use crate::sample::Sample;

/// What one sample decided.
#[derive(Debug, Default, PartialEq)]
pub struct Decided {
    pub conditions: Vec<Condition>,
    /// The acknowledge input was pressed: acknowledge every alert, by this input.
    pub acknowledge_all_by: Option<String>,
}

/// Limits and inputs of one plan, with their states.
#[derive(Debug)]
pub struct Conditions {
    watches: HashMap<u32, LimitWatch>,
    acknowledge_tag: Option<(String, u32)>,
    button: Option<bool>,
    maintenance_latching: bool,
}

impl Conditions {
    pub fn new(alerting: &Alerting) -> Conditions {
        Conditions {
            watches: alerting
                .limits
                .iter()
                .map(|l| (l.tag_index, LimitWatch::new(l.clone())))
                .collect(),
            acknowledge_tag: alerting.acknowledge_tag.clone(),
            button: None,
            maintenance_latching: alerting.maintenance_latching,
        }
    }

    /// Whether any sample matters (else a subscriber to the samples would only lag).
    pub fn needs_samples(&self) -> bool {
        !self.watches.is_empty() || self.acknowledge_tag.is_some()
    }

    /// A sample at `now` (the receipt time: an OPC UA source timestamp is the server's clock,
    /// and the on-delay is also judged at ticks by this one).
    pub fn sample(&mut self, sample: &Sample, now: SystemTime) -> Decided {
        let mut decided = Decided::default();
        if !sample.quality.is_good() {
            return decided;
        }
        let Some(value) = sample.value.as_ref().and_then(|v| v.as_f64()) else {
            return decided;
        };
        if let Some((name, _)) = self
            .acknowledge_tag
            .as_ref()
            .filter(|(_, i)| *i == sample.tag.0)
        {
            let pressed = value != 0.0;
            if self.button == Some(false) && pressed {
                decided.acknowledge_all_by = Some(format!("input {name}"));
            }
            self.button = Some(pressed);
        }
        if let Some(watch) = self.watches.get_mut(&sample.tag.0) {
            let changes = watch.observe(value, now);
            decided.conditions = limit_conditions(watch, changes);
        }
        decided
    }

    /// An assessment: the asset's maintenance condition.
    pub fn assessment(&self, assessment: &Assessment) -> Condition {
        maintenance_condition(assessment, self.maintenance_latching)
    }

    /// Time passing: limits whose on- or off-delay ran out.
    pub fn tick(&mut self, now: SystemTime) -> Vec<Condition> {
        let mut conditions = Vec::new();
        for watch in self.watches.values_mut() {
            let changes = watch.tick(now);
            conditions.extend(limit_conditions(watch, changes));
        }
        conditions
    }
}

fn limit_conditions(watch: &LimitWatch, changes: Vec<(Limit, bool)>) -> Vec<Condition> {
    let config = &watch.config;
    let unit = config.unit.as_deref().unwrap_or("");
    changes
        .into_iter()
        .map(|(limit, active)| {
            let value = watch.last();
            let side = if limit.kind.is_high() {
                "above"
            } else {
                "below"
            };
            let reason = match (limit.kind, value) {
                (LimitKind::Alarm, Some(v)) => {
                    let state = match v {
                        0.0 => "false".to_string(),
                        1.0 => "true".to_string(),
                        v => format!("{v}{unit}"),
                    };
                    let alarm_when = limit.value != 0.0;
                    format!("{} is {state} (alarm when {alarm_when})", config.tag)
                }
                (_, Some(v)) => format!(
                    "{} {v}{unit} {side} {} limit {}{unit}",
                    config.tag,
                    limit.kind.name(),
                    limit.value
                ),
                (_, None) => format!("{} {} limit", config.tag, limit.kind.name()),
            };
            Condition {
                id: limits::alert_id(&config.tag, limit.kind),
                source: config.tag.clone(),
                origin: Origin::Limit,
                severity: limit.severity,
                latching: config.latching,
                active,
                value,
                reason,
            }
        })
        .collect()
}

//! Tag limits (hi-hi / hi / lo / lo-lo) with deadband, on-delay and off-delay, and discrete
//! alarms: pure, per tag.
//!
//! A limit is *beyond* when the value passes it (above a high limit, below a low one), and *back*
//! only once the value is inside by more than the deadband. A discrete alarm is beyond while the
//! tag is in its alarm state (a number other than 0 counts as true), and back as soon as it is not. It becomes active after being beyond
//! for the whole on-delay, and inactive again after being back for the whole off-delay, both
//! judged at each sample and at each [`LimitWatch::tick`], so a tag that is only sent on change
//! still raises and clears its alert on time. Until a limit's state is known, the
//! first value inside it reports it inactive, which clears an alert remembered from before a
//! restart.

use std::time::SystemTime;

use firmware_config::{Limit, LimitKind, TagLimits};

#[derive(Debug, Clone, Copy, Default)]
struct LimitState {
    /// `None` until the first value.
    active: Option<bool>,
    beyond_since: Option<SystemTime>,
    back_since: Option<SystemTime>,
}

/// One tag's limits and their states.
#[derive(Debug, Clone)]
pub struct LimitWatch {
    pub config: TagLimits,
    states: Vec<LimitState>,
    last: Option<f64>,
}

impl LimitWatch {
    pub fn new(config: TagLimits) -> LimitWatch {
        let states = vec![LimitState::default(); config.limits.len()];
        LimitWatch {
            config,
            states,
            last: None,
        }
    }

    /// A new value; the limits whose state changed, with their new state.
    pub fn observe(&mut self, value: f64, now: SystemTime) -> Vec<(Limit, bool)> {
        self.last = Some(value);
        self.evaluate(value, now)
    }

    /// Time passing without a new value: limits whose on-delay ran out become active.
    pub fn tick(&mut self, now: SystemTime) -> Vec<(Limit, bool)> {
        match self.last {
            Some(value) => self.evaluate(value, now),
            None => Vec::new(),
        }
    }

    pub fn last(&self) -> Option<f64> {
        self.last
    }

    fn evaluate(&mut self, value: f64, now: SystemTime) -> Vec<(Limit, bool)> {
        let mut changes = Vec::new();
        for (limit, state) in self.config.limits.iter().zip(self.states.iter_mut()) {
            let (beyond, back) = match limit.kind {
                LimitKind::Alarm => {
                    let alarm = (value != 0.0) == (limit.value != 0.0);
                    (alarm, !alarm)
                }
                kind if kind.is_high() => (
                    value > limit.value,
                    value < limit.value - self.config.deadband,
                ),
                _ => (
                    value < limit.value,
                    value > limit.value + self.config.deadband,
                ),
            };
            let lasted =
                |since: SystemTime, delay| now.duration_since(since).unwrap_or_default() >= delay;
            let active = match state.active {
                Some(true) if back => {
                    !lasted(*state.back_since.get_or_insert(now), self.config.off_delay)
                }
                Some(true) => true,
                _ if beyond => lasted(*state.beyond_since.get_or_insert(now), self.config.on_delay),
                _ => false,
            };
            if !beyond {
                state.beyond_since = None;
            }
            if !back || !active {
                state.back_since = None;
            }
            if state.active != Some(active) {
                // Unknown and still waiting out the on-delay: nothing to say yet.
                if state.active.is_none() && !active && beyond {
                    continue;
                }
                state.active = Some(active);
                changes.push((*limit, active));
            }
        }
        changes
    }
}

/// The alert id of a tag's limit.
pub fn alert_id(tag: &str, kind: LimitKind) -> String {
    format!("{tag}/{}", kind.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use firmware_config::Severity;

    fn watch(deadband: f64, on_delay: Duration) -> LimitWatch {
        LimitWatch::new(TagLimits {
            tag: "bearing_temp".into(),
            tag_index: 0,
            unit: Some("°C".into()),
            limits: vec![
                Limit {
                    kind: LimitKind::HiHi,
                    value: 95.0,
                    severity: Severity::High,
                },
                Limit {
                    kind: LimitKind::Hi,
                    value: 85.0,
                    severity: Severity::Medium,
                },
                Limit {
                    kind: LimitKind::Lo,
                    value: 5.0,
                    severity: Severity::Medium,
                },
            ],
            deadband,
            on_delay,
            off_delay: Duration::ZERO,
            latching: false,
        })
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn kinds(changes: &[(Limit, bool)]) -> Vec<(&'static str, bool)> {
        changes.iter().map(|(l, a)| (l.kind.name(), *a)).collect()
    }

    #[test]
    fn first_value_reports_every_limit_and_a_value_beyond_two_raises_both() {
        let mut w = watch(2.0, Duration::ZERO);
        assert_eq!(
            kinds(&w.observe(50.0, at(0))),
            [("hi_hi", false), ("hi", false), ("lo", false)]
        );
        assert!(w.observe(60.0, at(1)).is_empty());
        assert_eq!(
            kinds(&w.observe(96.0, at(2))),
            [("hi_hi", true), ("hi", true)]
        );
        assert_eq!(
            kinds(&w.observe(4.0, at(3))),
            [("hi_hi", false), ("hi", false), ("lo", true)]
        );
    }

    #[test]
    fn deadband_keeps_the_alert_until_the_value_is_well_inside() {
        let mut w = watch(2.0, Duration::ZERO);
        w.observe(50.0, at(0));
        assert_eq!(kinds(&w.observe(86.0, at(1))), [("hi", true)]);
        assert!(
            w.observe(84.0, at(2)).is_empty(),
            "inside, but within the deadband"
        );
        assert!(w.observe(85.5, at(3)).is_empty());
        assert_eq!(kinds(&w.observe(82.9, at(4))), [("hi", false)]);
    }

    #[test]
    fn on_delay_needs_the_value_beyond_for_the_whole_delay() {
        let mut w = watch(0.0, Duration::from_secs(10));
        w.observe(50.0, at(0));
        assert!(w.observe(90.0, at(1)).is_empty());
        assert!(w.observe(90.0, at(5)).is_empty());
        // A dip restarts the delay.
        assert!(w.observe(80.0, at(6)).is_empty());
        assert!(w.observe(90.0, at(7)).is_empty());
        assert!(w.tick(at(16)).is_empty());
        assert_eq!(kinds(&w.tick(at(17))), [("hi", true)]);
    }

    #[test]
    fn off_delay_needs_the_value_back_for_the_whole_delay() {
        let mut w = watch(1.0, Duration::ZERO);
        w.config.off_delay = Duration::from_secs(10);
        w.observe(50.0, at(0));
        assert_eq!(kinds(&w.observe(90.0, at(1))), [("hi", true)]);
        assert!(
            w.observe(80.0, at(2)).is_empty(),
            "back, within the off-delay"
        );
        // Beyond again restarts it; so does a value inside the deadband.
        assert!(w.observe(86.0, at(5)).is_empty());
        assert!(w.observe(80.0, at(6)).is_empty());
        assert!(w.observe(84.5, at(8)).is_empty());
        assert!(w.observe(80.0, at(9)).is_empty());
        assert!(w.tick(at(18)).is_empty());
        assert_eq!(kinds(&w.tick(at(19))), [("hi", false)]);
        // Raised again, the off-delay starts afresh.
        assert_eq!(kinds(&w.observe(90.0, at(20))), [("hi", true)]);
        assert!(w.observe(80.0, at(21)).is_empty());
        assert_eq!(kinds(&w.tick(at(31))), [("hi", false)]);
    }

    #[test]
    fn a_discrete_alarm_follows_the_state_after_its_on_delay() {
        let mut w = LimitWatch::new(TagLimits {
            tag: "overload_trip".into(),
            tag_index: 0,
            unit: None,
            limits: vec![Limit {
                kind: LimitKind::Alarm,
                value: 1.0,
                severity: Severity::High,
            }],
            deadband: 0.0,
            on_delay: Duration::from_secs(2),
            off_delay: Duration::ZERO,
            latching: false,
        });
        assert_eq!(kinds(&w.observe(0.0, at(0))), [("alarm", false)]);
        assert!(w.observe(1.0, at(1)).is_empty(), "within the on-delay");
        assert_eq!(kinds(&w.tick(at(3))), [("alarm", true)]);
        assert!(w.observe(1.0, at(4)).is_empty());
        assert_eq!(kinds(&w.observe(0.0, at(5))), [("alarm", false)]);
        // A status word: anything but zero is the alarm state.
        w.observe(3.0, at(6));
        assert_eq!(kinds(&w.tick(at(8))), [("alarm", true)]);
    }

    #[test]
    fn unknown_state_beyond_the_limit_waits_for_the_delay_before_reporting() {
        let mut w = watch(0.0, Duration::from_secs(10));
        assert_eq!(
            kinds(&w.observe(90.0, at(0))),
            [("hi_hi", false), ("lo", false)]
        );
        assert_eq!(kinds(&w.tick(at(10))), [("hi", true)]);
    }
}

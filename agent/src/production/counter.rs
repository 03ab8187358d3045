//! A PLC counter turned into increments: roll-over at the configured maximum, a reset to zero,
//! a `bad` spell, and any other step backwards reported as an anomaly instead of negative
//! production.
//!
//! Invariant: between two good readings the increment is counted exactly once, whatever happened
//! in between (bad quality, an agent restart from a persisted baseline); a reading that cannot
//! be explained re-baselines the counter and counts nothing.

use firmware_config::CounterSpec;
use serde::{Deserialize, Serialize};

/// What one reading meant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// The amount counted since the last good reading (0 for the first).
    Counted(f64),
    /// The counter went backwards in a way its settings do not explain, or jumped further than
    /// the line could have produced: nothing counted, the new value is the baseline.
    Anomaly { from: f64, to: f64 },
}

/// The last good reading: persisted so that a restart counts what was made while it was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub last: Option<f64>,
}

impl Counter {
    /// `value` is a good reading; `most` the most the line can have counted since the last good
    /// reading (`None`: no bound, as for energy).
    pub fn read(&mut self, spec: &CounterSpec, value: f64, most: Option<f64>) -> Step {
        if !value.is_finite() || value < 0.0 {
            let from = self.last.unwrap_or(value);
            return Step::Anomaly { from, to: value };
        }
        let Some(last) = self.last.replace(value) else {
            return Step::Counted(0.0);
        };
        let within = |amount: f64| most.is_none_or(|most| amount <= most);
        if value >= last {
            let amount = value - last;
            return if within(amount) {
                Step::Counted(amount)
            } else {
                Step::Anomaly {
                    from: last,
                    to: value,
                }
            };
        }
        if let Some(max) = spec.max.map(|m| m as f64) {
            let wrapped = max - last + value + 1.0;
            // Without a bound, only a counter that was in the top half and is now in the bottom
            // half can have rolled over.
            let plausible = match most {
                Some(most) => wrapped <= most,
                None => last > max / 2.0 && value < max / 2.0,
            };
            if plausible && last <= max {
                return Step::Counted(wrapped);
            }
        }
        if spec.reset && within(value) {
            return Step::Counted(value);
        }
        Step::Anomaly {
            from: last,
            to: value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max: Option<u64>, reset: bool) -> CounterSpec {
        CounterSpec { tag: 0, max, reset }
    }

    fn run(spec: &CounterSpec, readings: &[f64], most: Option<f64>) -> Vec<Step> {
        let mut counter = Counter::default();
        readings
            .iter()
            .map(|v| counter.read(spec, *v, most))
            .collect()
    }

    #[test]
    fn a_16_bit_counter_rolls_over_without_losing_a_part() {
        // 65534 → 65535 (1) → 0 (1) → 3 (3): five parts across the roll-over.
        let steps = run(
            &spec(Some(65_535), false),
            &[65_534.0, 65_535.0, 0.0, 3.0],
            Some(100.0),
        );
        assert_eq!(
            steps,
            [
                Step::Counted(0.0),
                Step::Counted(1.0),
                Step::Counted(1.0),
                Step::Counted(3.0)
            ]
        );
    }

    #[test]
    fn a_custom_maximum_rolls_over_at_it() {
        // 32760 → 5 with max 32767: 7 to reach 32767, 1 to reach 0, 5 more = 13.
        let steps = run(&spec(Some(32_767), false), &[32_760.0, 5.0], Some(100.0));
        assert_eq!(steps[1], Step::Counted(13.0));
    }

    #[test]
    fn a_reset_to_zero_counts_what_came_after_it() {
        // 1200 → 4: the PLC reset the counter and made 4 parts since.
        let steps = run(&spec(None, true), &[1_200.0, 4.0], Some(50.0));
        assert_eq!(steps[1], Step::Counted(4.0));
    }

    #[test]
    fn going_backwards_otherwise_is_an_anomaly_and_rebaselines() {
        let steps = run(&spec(None, false), &[500.0, 480.0, 490.0], Some(50.0));
        assert_eq!(
            steps[1],
            Step::Anomaly {
                from: 500.0,
                to: 480.0
            }
        );
        assert_eq!(steps[2], Step::Counted(10.0), "counting resumes from 480");
        // A 16-bit counter far from its top does not "roll over" by going back 20.
        let steps = run(&spec(Some(65_535), false), &[500.0, 480.0], Some(50.0));
        assert!(matches!(steps[1], Step::Anomaly { .. }));
    }

    #[test]
    fn a_jump_beyond_what_the_line_can_make_is_an_anomaly() {
        let steps = run(&spec(None, false), &[10.0, 10_010.0], Some(60.0));
        assert!(matches!(steps[1], Step::Anomaly { .. }));
    }

    #[test]
    fn without_a_bound_roll_over_needs_the_top_half() {
        let s = spec(Some(999_999), false);
        assert_eq!(run(&s, &[999_990.5, 2.5], None)[1], Step::Counted(12.0));
        assert!(matches!(
            run(&s, &[400_000.0, 2.0], None)[1],
            Step::Anomaly { .. }
        ));
    }
}

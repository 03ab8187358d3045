//! The explainable rule baseline: each rule turns a feature into a 0..1 health for one dimension
//! and a sentence a reliability engineer can check against the standard.
//!
//! Health scale shared by every rule, so that dimensions compare: 1.0 new, 0.85 at the end of
//! "good", 0.6 at the end of "acceptable long-term", 0.3 at the start of "damaging / not
//! acceptable", 0 well beyond it. A finding at or below 0.3 is `critical`: no model may rate the
//! asset healthier than the immediate-maintenance threshold while it stands.

use firmware_config::{Foundation, InsulationClass, IsoGroup};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Vibration,
    Thermal,
    Electrical,
    Pressure,
}

impl Dimension {
    pub const ALL: [Dimension; 4] = [
        Dimension::Vibration,
        Dimension::Thermal,
        Dimension::Electrical,
        Dimension::Pressure,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dimension::Vibration => "vibration",
            Dimension::Thermal => "thermal",
            Dimension::Electrical => "electrical",
            Dimension::Pressure => "pressure",
        }
    }
}

/// What one rule concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub dimension: Dimension,
    pub health: f64,
    pub reason: String,
}

/// Health at or below which a finding is critical (zone D, over the limit, single phasing).
pub const CRITICAL_HEALTH: f64 = 0.3;

impl Finding {
    pub fn critical(&self) -> bool {
        self.health <= CRITICAL_HEALTH
    }
}

/// Health anchors at the zone boundaries: 1.0 at zero, 0.85 / 0.6 / 0.3 at the three boundaries,
/// 0 at `last_boundary × 1.5`; linear in between.
fn banded_health(value: f64, boundaries: [f64; 3]) -> f64 {
    let anchors = [
        (0.0, 1.0),
        (boundaries[0], 0.85),
        (boundaries[1], 0.6),
        (boundaries[2], CRITICAL_HEALTH),
        (boundaries[2] * 1.5, 0.0),
    ];
    if value <= 0.0 {
        return 1.0;
    }
    for pair in anchors.windows(2) {
        let ((x0, h0), (x1, h1)) = (pair[0], pair[1]);
        if value <= x1 {
            return h0 + (h1 - h0) * (value - x0) / (x1 - x0);
        }
    }
    0.0
}

/// ISO 10816-3 zone boundaries A/B, B/C, C/D in mm/s RMS.
pub fn iso_10816_3_boundaries(group: IsoGroup, foundation: Foundation) -> [f64; 3] {
    match (group, foundation) {
        (IsoGroup::Group1, Foundation::Rigid) => [2.3, 4.5, 7.1],
        (IsoGroup::Group1, Foundation::Flexible) => [3.5, 7.1, 11.0],
        (IsoGroup::Group2, Foundation::Rigid) => [1.4, 2.8, 4.5],
        (IsoGroup::Group2, Foundation::Flexible) => [2.3, 4.5, 7.1],
    }
}

/// Vibration velocity RMS against the ISO 10816-3 zones of the machine's group and foundation.
pub fn vibration(velocity_mm_s: f64, group: IsoGroup, foundation: Foundation) -> Finding {
    let boundaries = iso_10816_3_boundaries(group, foundation);
    let zone = match boundaries.iter().position(|&b| velocity_mm_s <= b) {
        Some(0) => "A",
        Some(1) => "B",
        Some(2) => "C",
        _ => "D",
    };
    let meaning = match zone {
        "A" => "as new",
        "B" => "unrestricted long-term operation",
        "C" => "short-term operation only, plan maintenance",
        _ => "damaging",
    };
    Finding {
        dimension: Dimension::Vibration,
        health: banded_health(velocity_mm_s, boundaries),
        reason: format!(
            "vibration {velocity_mm_s:.1} mm/s in zone {zone} for group {} {} ({meaning}; boundaries {}/{}/{} mm/s)",
            group.number(),
            foundation.name(),
            boundaries[0],
            boundaries[1],
            boundaries[2]
        ),
    }
}

/// Winding temperature against the insulation class limit. Each 10 K above the limit roughly
/// halves insulation life; the margin bands are 40 / 20 / 0 K.
pub fn winding_temperature(celsius: f64, class: InsulationClass) -> Finding {
    let limit = class.limit_celsius();
    let margin = limit - celsius;
    Finding {
        dimension: Dimension::Thermal,
        health: banded_health(40.0 - margin, [0.0, 20.0, 40.0]).min(1.0),
        reason: if margin >= 0.0 {
            format!(
                "winding {celsius:.0} °C, {margin:.0} K below the class {class:?} limit of {limit:.0} °C"
            )
        } else {
            format!(
                "winding {celsius:.0} °C, {:.0} K above the class {class:?} limit of {limit:.0} °C (insulation life roughly halves per 10 K)",
                -margin
            )
        },
    }
}

/// Bearing temperature against its alarm limit, with the rise over ambient and its trend when
/// known: a rise climbing at constant load is the early sign of bearing distress.
pub fn bearing_temperature(
    celsius: f64,
    limit: f64,
    ambient: Option<f64>,
    rise_per_hour: Option<f64>,
) -> Finding {
    let margin = limit - celsius;
    let mut health = banded_health(40.0 - margin, [0.0, 20.0, 40.0]).min(1.0);
    let mut reason = format!("bearing {celsius:.0} °C, limit {limit:.0} °C");
    if let Some(ambient) = ambient {
        reason.push_str(&format!(", {:.0} K over ambient", celsius - ambient));
    }
    if let Some(slope) = rise_per_hour.filter(|s| *s > 1.0) {
        // A steady climb of several K per hour costs up to one band.
        health -= (slope / 10.0).min(0.25);
        reason.push_str(&format!(", rising {slope:.1} K/h"));
    }
    Finding {
        dimension: Dimension::Thermal,
        health: health.clamp(0.0, 1.0),
        reason,
    }
}

/// Phase currents: single phasing, unbalance (NEMA MG 1: above 1 % derate, above 5 % not
/// acceptable) and, with a rated current, overload (above the 1.15 service factor is critical).
pub fn currents(phases: &[f64], rated: Option<f64>) -> Option<Finding> {
    let largest = phases.iter().copied().fold(f64::NAN, f64::max);
    if !largest.is_finite() {
        return None;
    }
    let mut findings = Vec::new();
    if phases.len() == 3 {
        let running = largest > rated.map_or(0.5, |r| 0.1 * r);
        let lost = phases.iter().position(|&p| p < 0.1 * largest);
        if let (true, Some(phase)) = (running, lost) {
            findings.push(Finding {
                dimension: Dimension::Electrical,
                health: 0.0,
                reason: format!(
                    "phase L{} carries {:.1} A while another carries {largest:.1} A: single phasing, trip condition",
                    phase + 1,
                    phases[phase]
                ),
            });
        } else if let Some(unbalance) = super::features::current_unbalance(phases) {
            let percent = unbalance * 100.0;
            findings.push(Finding {
                dimension: Dimension::Electrical,
                health: banded_health(percent, [1.0, 3.0, 5.0]),
                reason: format!(
                    "current unbalance {percent:.1} % ({})",
                    if percent <= 1.0 {
                        "within 1 %"
                    } else if percent <= 5.0 {
                        "above 1 %: derating needed"
                    } else {
                        "above 5 %: not acceptable"
                    }
                ),
            });
        }
    }
    if let Some(rated) = rated {
        let load = largest / rated;
        // 100 % load is fine, 1.15 (service factor) is the limit.
        let health = banded_health((load - 0.9).max(0.0), [0.1, 0.175, 0.25]);
        findings.push(Finding {
            dimension: Dimension::Electrical,
            health,
            reason: format!(
                "current {largest:.1} A is {:.0} % of the rated {rated:.1} A",
                load * 100.0
            ),
        });
    }
    findings
        .into_iter()
        .min_by(|a, b| a.health.total_cmp(&b.health))
}

/// Process pressure against the operating range, and its fluctuation (coefficient of variation),
/// which in a pump points at cavitation.
pub fn pressure(mean: f64, fluctuation: Option<f64>, low: f64, high: f64) -> Finding {
    let outside = super::features::range_deviation(mean, low, high);
    let mut health = banded_health(outside, [0.0001, 0.1, 0.3]);
    let mut reason = if outside == 0.0 {
        format!("pressure {mean:.2} within {low}..{high}")
    } else {
        format!(
            "pressure {mean:.2} outside {low}..{high} by {:.0} % of the range",
            outside * 100.0
        )
    };
    if let Some(cv) = fluctuation.filter(|cv| *cv > 0.03) {
        // 3 % fluctuation starts to matter, 15 % is severe (cavitation, surge).
        health = health.min(banded_health(cv * 100.0, [3.0, 8.0, 15.0]));
        reason.push_str(&format!(", fluctuating {:.0} % (cavitation?)", cv * 100.0));
    }
    Finding {
        dimension: Dimension::Pressure,
        health,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vibration_zones_follow_iso_10816_3() {
        let d = vibration(5.1, IsoGroup::Group2, Foundation::Rigid);
        assert!(
            d.reason
                .starts_with("vibration 5.1 mm/s in zone D for group 2 rigid"),
            "{}",
            d.reason
        );
        assert!(d.critical());
        let c = vibration(5.1, IsoGroup::Group1, Foundation::Rigid);
        assert!(
            c.reason.contains("zone C for group 1 rigid"),
            "{}",
            c.reason
        );
        assert!(!c.critical() && c.health < 0.6 && c.health > CRITICAL_HEALTH);
        let b = vibration(5.1, IsoGroup::Group1, Foundation::Flexible);
        assert!(b.reason.contains("zone B"), "{}", b.reason);
        let a = vibration(2.0, IsoGroup::Group2, Foundation::Flexible);
        assert!(a.reason.contains("zone A") && a.health > 0.85);
        // Exactly on a boundary belongs to the better zone and gets the anchor health.
        let edge = vibration(2.8, IsoGroup::Group2, Foundation::Rigid);
        assert!(edge.reason.contains("zone B"));
        assert!((edge.health - 0.6).abs() < 1e-12);
        assert_eq!(
            vibration(20.0, IsoGroup::Group2, Foundation::Rigid).health,
            0.0
        );
    }

    #[test]
    fn health_falls_monotonically_with_vibration() {
        let mut last = 1.0;
        for step in 0..200 {
            let h = vibration(f64::from(step) * 0.05, IsoGroup::Group2, Foundation::Rigid).health;
            assert!(h <= last, "{h} > {last} at step {step}");
            last = h;
        }
    }

    #[test]
    fn winding_temperature_against_insulation_class() {
        let cool = winding_temperature(90.0, InsulationClass::F);
        assert_eq!(cool.health, 1.0);
        assert!(
            cool.reason
                .contains("65 K below the class F limit of 155 °C"),
            "{}",
            cool.reason
        );
        let hot = winding_temperature(125.0, InsulationClass::B);
        assert!(hot.health < 0.85 && !hot.critical(), "{hot:?}");
        let over = winding_temperature(140.0, InsulationClass::B);
        assert!(
            over.critical() && over.reason.contains("10 K above the class B limit"),
            "{}",
            over.reason
        );
    }

    #[test]
    fn bearing_temperature_counts_a_steady_rise() {
        let steady = bearing_temperature(60.0, 95.0, Some(25.0), Some(0.2));
        let rising = bearing_temperature(60.0, 95.0, Some(25.0), Some(3.0));
        assert!(rising.health < steady.health);
        assert!(
            rising.reason.contains("35 K over ambient, rising 3.0 K/h"),
            "{}",
            rising.reason
        );
    }

    #[test]
    fn current_unbalance_bands_and_single_phasing() {
        let balanced = currents(&[40.0, 40.2, 39.9], Some(42.0)).expect("finding");
        assert!(balanced.health > 0.85, "{balanced:?}");
        let derate = currents(&[40.0, 42.0, 38.0], None).expect("finding");
        assert!(
            derate.reason.contains("5.0 %") || derate.reason.contains("derating"),
            "{}",
            derate.reason
        );
        let bad = currents(&[40.0, 46.0, 34.0], None).expect("finding");
        assert!(
            bad.critical() && bad.reason.contains("not acceptable"),
            "{}",
            bad.reason
        );
        let lost = currents(&[40.0, 0.3, 41.0], Some(42.0)).expect("finding");
        assert_eq!(lost.health, 0.0);
        assert!(lost.reason.contains("phase L2") && lost.reason.contains("single phasing"));
        // A stopped motor is not single phasing.
        let stopped = currents(&[0.0, 0.0, 0.0], Some(42.0)).expect("finding");
        assert!(stopped.health > 0.85, "{stopped:?}");
    }

    #[test]
    fn overload_above_service_factor_is_critical() {
        assert!(currents(&[42.0], Some(42.0)).expect("f").health >= 0.85);
        let sf = currents(&[48.6], Some(42.0)).expect("f");
        assert!(
            sf.critical() && sf.reason.contains("116 % of the rated"),
            "{}",
            sf.reason
        );
    }

    #[test]
    fn pressure_range_and_fluctuation() {
        assert_eq!(pressure(4.5, Some(0.01), 3.0, 6.0).health, 1.0);
        let low = pressure(2.4, None, 3.0, 6.0);
        assert!(
            low.health < 0.6 && low.reason.contains("outside 3..6 by 20 %"),
            "{}",
            low.reason
        );
        let cavitating = pressure(4.5, Some(0.12), 3.0, 6.0);
        assert!(
            cavitating.health < 0.6 && cavitating.reason.contains("cavitation"),
            "{}",
            cavitating.reason
        );
    }
}

//! Waveform vibration diagnostics: acceleration waveforms (OPC UA arrays) → time features, ISO
//! velocity by integration, averaged spectra, envelope spectra → shaft-order and bearing defect
//! diagnoses that feed the asset's health like the other rules.
//!
//! Invariants:
//! - Memory is set by configuration: each waveform asset keeps one buffer of `max_samples`, set
//!   aside when the scorer is built; a longer or malformed waveform is rejected and counted, never
//!   truncated silently.
//! - Spectra stay on the gateway (the latest per asset, for `millwright spectrum`); assessments
//!   carry the diagnosis and the peak table only.

pub mod diagnose;
pub mod dsp;
pub mod recordings;
pub mod synth;
pub mod waveforms;

pub use diagnose::{analyze, Analysis, Diagnosis, FaultKind, Peak, VibrationReport};
pub use recordings::{read_recording, Recorded, Recording};
pub use waveforms::{Latest, Rejected, SpectrumBook, WaveformSlot};

#[cfg(test)]
mod tests {
    use firmware_config::{Foundation, IsoGroup};

    use super::dsp::Analyzer;
    use super::synth::{Fault, Machine};
    use super::*;

    fn diagnose(machine: &Machine) -> Analysis {
        let (waveform, bearings) = machine.settings();
        let class = Some((IsoGroup::Group2, Foundation::Rigid));
        analyze(
            &mut Analyzer::new(),
            &machine.waveform(),
            &waveform,
            &bearings,
            Some(machine.shaft_hz),
            class,
        )
        .expect("analysis")
    }

    fn expected(fault: Fault) -> Option<FaultKind> {
        match fault {
            Fault::Healthy => None,
            Fault::OuterRace => Some(FaultKind::OuterRace),
            Fault::InnerRace => Some(FaultKind::InnerRace),
            Fault::RollingElement => Some(FaultKind::RollingElement),
            Fault::Unbalance => Some(FaultKind::Unbalance),
            Fault::Misalignment => Some(FaultKind::Misalignment),
            Fault::Looseness => Some(FaultKind::Looseness),
        }
    }

    #[test]
    fn each_fault_is_named_and_a_healthy_machine_is_not() {
        for fault in Fault::ALL {
            for seed in 1..=3 {
                let machine = Machine::motor(fault, seed);
                let analysis = diagnose(&machine);
                let named: Vec<FaultKind> =
                    analysis.report.diagnoses.iter().map(|d| d.fault).collect();
                match expected(fault) {
                    None => assert!(
                        named.is_empty(),
                        "healthy seed {seed}: {:#?}",
                        analysis.report
                    ),
                    Some(kind) => assert_eq!(
                        named.first(),
                        Some(&kind),
                        "{fault:?} seed {seed}: {:#?}",
                        analysis.report.diagnoses
                    ),
                }
            }
        }
    }

    #[test]
    fn defect_lines_are_found_within_the_resolution_despite_slip() {
        for fault in [Fault::OuterRace, Fault::InnerRace, Fault::RollingElement] {
            let machine = Machine::motor(fault, 11);
            let analysis = diagnose(&machine);
            let label = match fault {
                Fault::OuterRace => "BPFO",
                Fault::InnerRace => "BPFI",
                _ => "BSF",
            };
            let peak = analysis
                .report
                .peaks
                .iter()
                .find(|p| p.label == label)
                .expect("peak");
            let truth = machine.defect_hz().expect("defect frequency");
            assert!(
                (peak.hz - truth).abs() <= 1.5 * analysis.envelope.df,
                "{label}: found {} Hz, true {truth} Hz (nominal {}, resolution {} Hz)",
                peak.hz,
                peak.expected_hz,
                analysis.envelope.df
            );
            // The search had to reach past the nominal line: slip moved it by 1.5 %.
            assert!(
                (peak.expected_hz - truth).abs() > 0.01 * truth,
                "slip moved the line"
            );
        }
    }

    #[test]
    fn the_reason_names_the_frequency_the_harmonics_and_the_level() {
        let analysis = diagnose(&Machine::motor(Fault::OuterRace, 5));
        let reason = &analysis.report.diagnoses[0].reason;
        assert!(
            reason.starts_with("outer race defect suspected on bearing DE: BPFO ")
                && reason.contains(" dB above the noise floor")
                && reason.contains("harmonic")
                && reason.contains("envelope spectrum"),
            "{reason}"
        );
        let inner = diagnose(&Machine::motor(Fault::InnerRace, 5));
        assert!(
            inner.report.diagnoses[0]
                .reason
                .contains("shaft-rate sidebands"),
            "{}",
            inner.report.diagnoses[0].reason
        );
    }

    #[test]
    fn velocity_from_the_waveform_matches_the_synthetic_machine() {
        // Unbalance 5 mm/s at 1× over the healthy 0.6 (1×, same phase), 0.2 (2×) and noise.
        let analysis = diagnose(&Machine::motor(Fault::Unbalance, 3));
        let v = analysis.report.velocity_rms;
        assert!((5.5..6.0).contains(&v), "velocity {v} mm/s");
        let one = &analysis.report.peaks[0];
        assert_eq!(one.label, "1x");
        assert!(
            (one.amplitude - 5.6).abs() < 0.3,
            "1× {} mm/s",
            one.amplitude
        );
    }

    #[test]
    fn a_developed_bearing_defect_asks_for_planned_maintenance_but_is_not_critical() {
        let analysis = diagnose(&Machine::motor(Fault::InnerRace, 4));
        let health = analysis.report.diagnoses[0].health;
        assert!(
            health < 0.5,
            "failure probability above the scheduled threshold: {health}"
        );
        assert!(health > crate::health::rules::CRITICAL_HEALTH, "{health}");
    }

    #[test]
    fn a_fault_too_faint_to_see_is_not_reported() {
        let mut machine = Machine::motor(Fault::OuterRace, 9);
        machine.severity = 0.05;
        let analysis = diagnose(&machine);
        assert!(
            analysis.report.diagnoses.is_empty(),
            "{:#?}",
            analysis.report.diagnoses
        );
    }
}

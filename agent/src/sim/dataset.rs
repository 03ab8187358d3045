//! Training data from the simulator: every asset of an agent configuration is run against the
//! simulated fleet in accelerated time, through the agent's own scorer (windows, features, rules),
//! and each assessment round becomes a CSV row of model features with its label.
//!
//! Tags are matched to simulator points by device unit id, table and wire address, exactly as a
//! real poll would read them. An asset's run ends when its machine fails; the label says whether
//! the failure comes within the horizon.

use std::fmt::Write as _;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use firmware_config::Plan;

use super::plant::Plant;
use crate::health::model::ModelFeature;
use crate::health::scorer::Scorer;
use crate::replay::Timeline;
use crate::sample::{Quality, Sample, TagId};

/// How to run the fleet.
#[derive(Debug, Clone)]
pub struct DatasetOptions {
    /// Simulated time per run.
    pub duration: Duration,
    /// Time between assessment rounds (rows).
    pub step: Duration,
    /// Polls per step.
    pub polls_per_step: u32,
    /// A row is labelled positive when the machine fails within this horizon.
    pub horizon: Duration,
}

/// Writes the CSV header and one row per asset and assessment round; returns the row count.
pub fn write(
    plan: &Plan,
    plant: &Plant,
    options: &DatasetOptions,
    out: &mut impl Write,
) -> anyhow::Result<usize> {
    // Which (machine, point) each plan tag reads.
    let mut sources = Vec::with_capacity(plan.tag_count());
    for device in &plan.devices {
        let machine = plant
            .machines()
            .iter()
            .position(|m| m.config.unit_id == device.unit_id)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "device {:?}: no simulated machine with unit id {}",
                    device.name,
                    device.unit_id
                )
            })?;
        for tag in device.tags.iter() {
            let point = plant.machines()[machine]
                .points
                .iter()
                .position(|p| p.tag.table == tag.table && p.tag.address == tag.address)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "tag {:?}: machine {:?} has no point at {} {}",
                        tag.name,
                        plant.machines()[machine].config.name,
                        tag.table.name(),
                        tag.address
                    )
                })?;
            sources.push((machine, point));
        }
    }
    let asset_machine: Vec<usize> = plan
        .assets
        .iter()
        .map(|asset| {
            let s = &asset.signals;
            let tag = s
                .vibration
                .or(s.bearing_temperature)
                .or(s.winding_temperature)
                .or(s.pressure)
                .or(s.currents.first().copied())
                .unwrap_or(0);
            sources[tag as usize].0
        })
        .collect();

    let mut header = String::from("run,fault,hours,hours_to_failure,label,rule_probability");
    for feature in ModelFeature::ALL {
        let _ = write!(header, ",{}", feature.name());
    }
    writeln!(out, "{header}")?;

    // The replay's time line: the scorer on simulated time, a round every step.
    let mut timeline = Timeline::new(Scorer::new(plan, Default::default()), options.step);
    let start = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
    let poll_every = options.step / options.polls_per_step.max(1);
    let mut rows = 0;
    let mut elapsed = Duration::ZERO;
    while elapsed < options.duration {
        for k in 0..options.polls_per_step.max(1) {
            let at = elapsed + poll_every * k;
            for (i, &(m, p)) in sources.iter().enumerate() {
                let machine = &plant.machines()[m];
                let sample = Sample {
                    tag: TagId(i as u32),
                    server_timestamp: None,
                    timestamp: start + at,
                    value: Some(plant.value(machine, p, at, start + at)),
                    quality: Quality::Good,
                };
                timeline.observe(&sample, start + at);
            }
        }
        elapsed += options.step;
        let (observations, assessments, t) = timeline
            .run_round(|scorer, t, now| (scorer.observations(t), scorer.assess_all(t, now), t));
        let scorer = &timeline.scorer;
        for (i, observed) in observations {
            let asset = scorer.asset(i);
            let machine = &plant.machines()[asset_machine[i]];
            let fault = machine.config.fault.as_ref();
            let fails = fault.map(|f| f.fails.get());
            if fails.is_some_and(|f| elapsed >= f) {
                continue;
            }
            let to_failure = fails.map(|f| (f - elapsed).as_secs_f64() / 3600.0);
            let label = fails.is_some_and(|f| f - elapsed <= options.horizon);
            let rule = assessments
                .iter()
                .find(|a| a.asset == asset.id)
                .map_or(f64::NAN, |a| a.rule_probability);
            let mut row = format!(
                "{},{},{:.3},{},{},{rule:.4}",
                asset.id,
                fault.map_or("healthy", |f| f.kind.as_str()),
                t / 3600.0,
                to_failure.map_or(String::new(), |h| format!("{h:.3}")),
                u8::from(label)
            );
            for feature in ModelFeature::ALL {
                match feature.value(asset, &observed) {
                    Some(v) => {
                        let _ = write!(row, ",{v:.6}");
                    }
                    None => row.push(','),
                }
            }
            writeln!(out, "{row}")?;
            rows += 1;
        }
    }
    Ok(rows)
}

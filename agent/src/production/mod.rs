//! The production stage: per line, OEE and its losses per shift (ISO 22400-2), downtime events,
//! and running and closing reports as records in the outbox.
//!
//! Pure cores ([`line::LineCore`], [`tally::Tally`], [`counter::Counter`]) in a thin loop: the
//! loop drains the sample bus, steps every line once a second on the injected clock, sends a
//! running report every `report_interval` and a closing report when a shift ends, and saves each
//! line's state to `data_dir/lines/<line>.json` with every report and on stop.
//!
//! Invariants: counts are never lost to a restart (the counters' baselines are saved with the
//! tally; parts made while the agent was down are counted at its first reading); a SIGKILL loses
//! at most one `report_interval` of time attribution, which the restarted agent books as
//! unaccounted; a save that fails is logged and retried at the next report.

pub mod counter;
pub mod line;
pub mod tally;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use firmware_config::Line;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use tokio::sync::{mpsc, watch};

use crate::bus::{Subscriber, DRAIN_EVERY};
use crate::clock::Clock;
use crate::decisions::lifecycle::Condition;
use crate::records::Report;
use crate::reports::append;
use crate::store::{NewRecord, Outbox};
use line::{LineCore, Output, Persisted};

/// How often every line is stepped.
pub const STEP: Duration = Duration::from_secs(1);

/// Where a line's state is saved.
pub fn state_file(data_dir: &Path, line: &str) -> PathBuf {
    data_dir.join("lines").join(format!("{line}.json"))
}

/// Reads a line's saved state; a missing file is a first start, an unreadable one is logged and
/// set aside (counting starts afresh rather than not at all).
pub fn restore(data_dir: &Path, line: &str) -> Option<Persisted> {
    crate::files::restore_state(&state_file(data_dir, line), "the line's saved state")
}

fn save(data_dir: &Path, core: &mut LineCore, now: std::time::SystemTime) {
    let path = state_file(data_dir, core.name());
    if let Err(error) = crate::files::save_state(&path, core.save(now)) {
        warn!(%error, path = %path.display(), "cannot save the line's state; retrying at the next report");
    }
}

/// Where a stage's outputs go.
pub struct Sinks {
    pub outbox: Option<Arc<Outbox>>,
    /// The decisions stage, for the lines' alert conditions.
    pub alerts: Option<mpsc::Sender<Condition>>,
    /// Each line's latest report, for whoever shows it (the demo).
    pub view: watch::Sender<LineView>,
}

/// Each line's latest report, by line name.
pub type LineView = std::collections::BTreeMap<String, line::LineReport>;

/// The record an output is sent as.
pub fn report_of(output: Output) -> Report {
    match output {
        Output::Report(report) => Report::Production(report),
        Output::Downtime(downtime) => Report::Downtime(downtime),
        Output::Anomaly(text) => Report::Event(crate::records::Event::new(
            "counter_anomaly",
            serde_json::json!({ "message": text }),
        )),
    }
}

impl Sinks {
    fn emit(&self, output: Output, now: std::time::SystemTime) {
        match &output {
            Output::Report(report) => {
                log_report(report);
                self.view.send_modify(|view| {
                    view.insert(report.line.clone(), (**report).clone());
                });
            }
            Output::Downtime(downtime) => {
                info!(line = %downtime.line, state = downtime.state.name(), reason = downtime.reason.as_deref().unwrap_or("-"), minutes = format!("{:.1}", downtime.seconds / 60.0), "downtime");
            }
            Output::Anomaly(text) => warn!("{text}"),
        }
        if let Some(outbox) = &self.outbox {
            append(outbox, NewRecord::report(report_of(output), now));
        }
    }
}

impl Sinks {
    /// Hands the lines' changed alert conditions to the decisions stage; one it cannot take now
    /// (its queue is full) is offered again next second.
    fn raise(&self, cores: &mut [LineCore]) {
        let Some(alerts) = &self.alerts else { return };
        for core in cores {
            for condition in core.conditions() {
                let id = condition.id.clone();
                if alerts.try_send(condition).is_err() {
                    core.unsent(&id);
                }
            }
        }
    }
}

fn log_report(report: &line::LineReport) {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}", 100.0 * v));
    let f = &report.figures;
    info!(
        line = %report.line,
        shift = %report.shift,
        closing = report.closing,
        oee = pct(f.oee),
        availability = pct(f.availability),
        performance = pct(f.performance),
        quality = pct(f.quality),
        good = f.good,
        reject = f.reject,
        top_loss = report.recommendation.as_deref().unwrap_or("-"),
        "production"
    );
}

/// The stage's cores and which tags feed which line.
pub struct Production {
    cores: Vec<LineCore>,
    by_tag: HashMap<u32, Vec<usize>>,
    report_every: Vec<Duration>,
    reported_at: Vec<Duration>,
}

impl Production {
    /// The lines of a running agent, each resumed from its state saved in `data_dir`.
    pub fn new(lines: &[Line], data_dir: &Path) -> Production {
        Production::with(lines, |name| restore(data_dir, name))
    }

    /// The lines starting from nothing (a replay of recorded history).
    pub fn fresh(lines: &[Line]) -> Production {
        Production::with(lines, |_| None)
    }

    fn with(lines: &[Line], restored: impl Fn(&str) -> Option<Persisted>) -> Production {
        let cores: Vec<LineCore> = lines
            .iter()
            .map(|line| LineCore::new(line.clone(), restored(&line.name)))
            .collect();
        let mut by_tag: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, core) in cores.iter().enumerate() {
            for tag in core.tags() {
                by_tag.entry(tag).or_default().push(i);
            }
        }
        Production {
            report_every: lines.iter().map(|l| l.report_interval).collect(),
            reported_at: vec![Duration::ZERO; cores.len()],
            cores,
            by_tag,
        }
    }

    /// A part of `line` rejected by a quality station.
    pub fn rejected(&mut self, line: &str) {
        if let Some(core) = self.cores.iter_mut().find(|c| c.name() == line) {
            core.rejected(1.0);
        }
    }

    pub fn observe(&mut self, sample: &crate::sample::Sample, mono: Duration) {
        if let Some(lines) = self.by_tag.get(&sample.tag.0) {
            for &i in lines {
                self.cores[i].observe(sample, mono);
            }
        }
    }

    /// Steps every line; returns its outputs (with the running reports that fell due), and the
    /// lines that reported, whose state is to be saved.
    pub fn step(
        &mut self,
        wall: std::time::SystemTime,
        mono: Duration,
    ) -> (Vec<Output>, Vec<usize>) {
        let mut outputs = Vec::new();
        let mut due = Vec::new();
        for (i, core) in self.cores.iter_mut().enumerate() {
            let stepped = core.step(wall, mono);
            let closed = stepped
                .iter()
                .any(|o| matches!(o, Output::Report(r) if r.closing));
            outputs.extend(stepped);
            if closed || mono.saturating_sub(self.reported_at[i]) >= self.report_every[i] {
                self.reported_at[i] = mono;
                due.push(i);
                if let Some(report) = core.report() {
                    outputs.push(Output::Report(Box::new(report)));
                }
            }
        }
        (outputs, due)
    }

    /// Every line's changed alert conditions.
    pub fn conditions(&mut self) -> Vec<Condition> {
        self.cores
            .iter_mut()
            .flat_map(LineCore::conditions)
            .collect()
    }

    /// Whether there are no lines.
    pub fn is_empty(&self) -> bool {
        self.cores.is_empty()
    }

    pub fn cores(&mut self) -> &mut [LineCore] {
        &mut self.cores
    }
}

/// Runs the stage until `stop`.
pub async fn run(
    mut production: Production,
    mut samples: Subscriber,
    mut rejects: mpsc::Receiver<String>,
    sinks: Sinks,
    data_dir: PathBuf,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    let mut drain = crate::clock::ticker(DRAIN_EVERY);
    let mut step = crate::clock::ticker(STEP);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(line) = rejects.recv() => production.rejected(&line),
            _ = drain.tick() => {
                let mono = clock.elapsed();
                if !samples.drain(|sample| production.observe(sample, mono)) {
                    break;
                }
            }
            _ = step.tick() => {
                let mono = clock.elapsed();
                samples.drain(|sample| production.observe(sample, mono));
                let now = clock.now();
                let (outputs, due) = production.step(now, mono);
                for output in outputs {
                    sinks.emit(output, now);
                }
                sinks.raise(production.cores());
                for i in due {
                    save(&data_dir, &mut production.cores()[i], now);
                }
            }
        }
    }
    let now = clock.now();
    for core in production.cores() {
        save(&data_dir, core, now);
    }
}

//! The quality stage: per station, a decision on every part (pass, review, reject) from the
//! characteristics' distance to their spec limits, control charts with run rules on every
//! characteristic, a divert output pulsed for bad parts, and running and per-shift quality
//! reports (Cp/Cpk, Pp/Ppk, violations) as records.
//!
//! Pure cores ([`station::StationCore`], [`spc`]) in a thin loop. The loop takes the sample bus a
//! poll at a time (not on a drain tick: a reject must reach the divert output within a poll), decides
//! the parts that are due, pulses the divert output of each bad part, and once a second sends the
//! reports that are due and follows the line's shift calendar.
//!
//! Invariants: learned control limits are saved to `data_dir/quality/<station>.json` (write, fsync,
//! rename) the moment they are learned, and a restart uses them instead of learning again; a torn
//! file is set aside and learning starts afresh; given limits always win over saved ones; the
//! divert output is written by its own task, so a slow coil write never holds up decisions.

pub mod camera;
pub mod divert;
pub mod image;
pub mod model;
pub mod spc;
pub mod station;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use firmware_config::quality::{ControlLimits, Station};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bus::Subscriber;
use crate::clock::Clock;
use crate::decisions::lifecycle::Condition;
use crate::records::Report;
use crate::reports::append;
use crate::store::{NewRecord, Outbox};
use station::{Decision, Output, StationCore};

/// Where a station's learned limits are saved.
pub fn limits_file(data_dir: &Path, station: &str) -> PathBuf {
    data_dir.join("quality").join(format!("{station}.json"))
}

/// What is saved of a station: each characteristic's learned limits, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub limits: BTreeMap<String, ControlLimits>,
}

/// Reads a station's saved limits; a missing file is a first start, a torn one is set aside.
pub fn restore(data_dir: &Path, station: &str) -> Saved {
    crate::files::restore_state(
        &limits_file(data_dir, station),
        "the station's saved limits",
    )
    .unwrap_or_default()
}

fn save(data_dir: &Path, core: &StationCore) {
    let station = core.station();
    let saved = Saved {
        limits: station
            .characteristics
            .iter()
            .zip(core.limits())
            .filter(|(c, _)| c.limits.is_none())
            .filter_map(|(c, l)| l.map(|l| (c.name.clone(), l)))
            .collect(),
    };
    let path = limits_file(data_dir, &station.name);
    if let Err(error) = crate::files::save_state(&path, &saved) {
        warn!(%error, path = %path.display(), "cannot save the learned control limits; they are learned again after a restart");
    }
}

/// Every station of a plan, with the tags each one reads.
pub struct Quality {
    stations: Vec<StationCore>,
    /// Station indices by tag id.
    by_tag: Vec<Vec<usize>>,
    data_dir: Option<PathBuf>,
}

impl Quality {
    /// The stations, with limits saved in `data_dir` by an earlier run.
    pub fn new(stations: &[Station], data_dir: &Path, now: SystemTime) -> Quality {
        Quality::with(stations, Some(data_dir), now)
    }

    /// The stations as if never run (replay): nothing read or saved.
    pub fn fresh(stations: &[Station], now: SystemTime) -> Quality {
        Quality::with(stations, None, now)
    }

    fn with(stations: &[Station], data_dir: Option<&Path>, now: SystemTime) -> Quality {
        let cores: Vec<StationCore> = stations
            .iter()
            .map(|s| {
                let saved = data_dir.map(|d| restore(d, &s.name)).unwrap_or_default();
                let learned: Vec<Option<ControlLimits>> = s
                    .characteristics
                    .iter()
                    .map(|c| saved.limits.get(&c.name).copied())
                    .collect();
                StationCore::new(s.clone(), &learned, now)
            })
            .collect();
        let tags = stations.iter().flat_map(Station::tags).map(|t| t as usize);
        let mut by_tag = vec![Vec::new(); tags.max().map_or(0, |highest| highest + 1)];
        for (i, s) in stations.iter().enumerate() {
            for tag in s.tags() {
                let at: &mut Vec<usize> = &mut by_tag[tag as usize];
                if !at.contains(&i) {
                    at.push(i);
                }
            }
        }
        Quality {
            stations: cores,
            by_tag,
            data_dir: data_dir.map(Path::to_path_buf),
        }
    }

    /// Scores each station's parts with its defect model too (by station index).
    pub fn with_models(mut self, models: &[model::StationModels]) -> Quality {
        self.stations = std::mem::take(&mut self.stations)
            .into_iter()
            .enumerate()
            .map(|(i, core)| core.with_model(models.get(i).and_then(|m| m.part.clone())))
            .collect();
        self
    }

    pub fn observe(&mut self, sample: &crate::sample::Sample, mono: Duration) {
        if let Some(stations) = self.by_tag.get(sample.tag.0 as usize) {
            for &i in stations {
                self.stations[i].observe(sample, mono);
            }
        }
    }

    /// Decides due parts and sends due reports; `(station index, output)` pairs.
    pub fn step(&mut self, mono: Duration, now: SystemTime) -> Vec<(usize, Output)> {
        let mut all = Vec::new();
        for (i, core) in self.stations.iter_mut().enumerate() {
            let mut out = Vec::new();
            core.step(mono, now, &mut out);
            all.extend(out.into_iter().map(|o| (i, o)));
        }
        all
    }

    /// A station's camera image, scored.
    pub fn image(
        &mut self,
        station: usize,
        verdict: station::ImageVerdict,
        mono: Duration,
    ) -> Vec<(usize, Output)> {
        let mut out = Vec::new();
        if let Some(core) = self.stations.get_mut(station) {
            core.image(verdict, mono, &mut out);
        }
        out.into_iter().map(|o| (station, o)).collect()
    }

    /// Follows each station's line calendar to `now`: closing reports of shifts that ended.
    pub fn shifts(&mut self, now: SystemTime) -> Vec<(usize, Output)> {
        let mut all = Vec::new();
        let Ok(at) = jiff::Timestamp::try_from(now) else {
            return all;
        };
        for (i, core) in self.stations.iter_mut().enumerate() {
            let current = core
                .station()
                .line
                .as_ref()
                .and_then(|(_, calendar)| calendar.current(at))
                .map(|s| s.id());
            let mut out = Vec::new();
            core.shift(current.as_deref(), now, &mut out);
            all.extend(out.into_iter().map(|o| (i, o)));
        }
        all
    }

    /// Learns characteristic `name` of `station` afresh from its next baseline, and saves that
    /// its limits are gone (so that a restart learns them too).
    pub fn relearn(&mut self, station: &str, name: &str) -> Result<String, String> {
        let Some(i) = self
            .stations
            .iter()
            .position(|s| s.station().name == station)
        else {
            let known: Vec<&str> = self
                .stations
                .iter()
                .map(|s| s.station().name.as_str())
                .collect();
            return Err(format!(
                "no quality station {station:?} (stations: {})",
                known.join(", ")
            ));
        };
        let config = self.stations[i].station();
        let Some(c) = config.characteristics.iter().find(|c| c.name == name) else {
            let known: Vec<&str> = config
                .characteristics
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            return Err(format!(
                "station {station:?} has no characteristic {name:?} ({})",
                known.join(", ")
            ));
        };
        if c.limits.is_some() {
            return Err(format!(
                "{station}/{name} has its limits given in the configuration; change them there"
            ));
        }
        let baseline = c.baseline;
        self.stations[i].relearn(name);
        self.learned(i);
        info!(
            station,
            characteristic = name,
            baseline,
            "control limits forgotten; learning them again"
        );
        Ok(format!("{station}/{name}: learning its control limits again from the next {baseline} subgroup(s)"))
    }

    /// Each station's figures since it started.
    pub fn overall(&self, now: SystemTime) -> Vec<station::QualityReport> {
        self.stations.iter().map(|s| s.overall(now)).collect()
    }

    /// Station `i`'s name and characteristic `c`'s.
    pub fn names(&self, i: usize, c: usize) -> (&str, &str) {
        let station = self.stations[i].station();
        (
            &station.name,
            station
                .characteristics
                .get(c)
                .map_or("", |c| c.name.as_str()),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.stations.is_empty()
    }

    pub fn next_due(&self) -> Option<Duration> {
        self.stations.iter().filter_map(StationCore::next_due).min()
    }

    /// Saves what station `i` learned (not in replay).
    fn learned(&self, i: usize) {
        if let Some(dir) = &self.data_dir {
            save(dir, &self.stations[i]);
        }
    }
}

/// Parts each station's view keeps.
pub const LATEST_PARTS: usize = 10;

/// A station as the status page shows it: its latest report and its latest parts.
#[derive(Debug, Clone, PartialEq)]
pub struct StationView {
    pub station: String,
    pub line: Option<String>,
    pub report: Option<station::QualityReport>,
    /// Oldest first, at most [`LATEST_PARTS`].
    pub latest: std::collections::VecDeque<station::PartDecision>,
}

impl StationView {
    fn part(&mut self, part: &station::PartDecision) {
        if self.latest.len() == LATEST_PARTS {
            self.latest.pop_front();
        }
        self.latest.push_back(part.clone());
    }
}

/// Every station's view, by name.
pub type QualityView = BTreeMap<String, StationView>;

/// The record an output is sent as (`None`: nothing to record).
pub fn report_of(output: &Output) -> Option<Report> {
    match output {
        Output::Part(part) => Some(Report::Part(part.clone())),
        Output::Report(report) => Some(Report::Quality(report.clone())),
        Output::Condition(_) | Output::Learned(..) | Output::MoveImage { .. } => None,
    }
}

/// A request to learn a characteristic's limits again.
#[derive(Debug)]
pub struct Relearn {
    pub station: String,
    pub characteristic: String,
    pub done: tokio::sync::oneshot::Sender<Result<String, String>>,
}

/// Where `millwright quality relearn` reaches the running stage.
#[derive(Debug, Clone)]
pub struct Desk(mpsc::Sender<Relearn>);

impl Desk {
    pub fn new() -> (Desk, mpsc::Receiver<Relearn>) {
        let (send, receive) = mpsc::channel(4);
        (Desk(send), receive)
    }

    /// Asks the stage; at most 5 s.
    pub async fn relearn(&self, station: &str, characteristic: &str) -> Result<String, String> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let request = Relearn {
            station: station.into(),
            characteristic: characteristic.into(),
            done,
        };
        let asked = async {
            self.0.send(request).await.map_err(|_| {
                "the quality stage is not running (a reload?); try again".to_string()
            })?;
            answer
                .await
                .map_err(|_| "the quality stage stopped before answering".to_string())?
        };
        tokio::time::timeout(Duration::from_secs(5), asked)
            .await
            .unwrap_or_else(|_| Err("the quality stage did not answer within 5 s".into()))
    }
}

/// Removes characteristic `name`'s saved limits from `station`'s file while no agent runs;
/// whether there were any.
pub fn forget_saved(data_dir: &Path, station: &str, name: &str) -> std::io::Result<bool> {
    let mut saved = restore(data_dir, station);
    if saved.limits.remove(name).is_none() {
        return Ok(false);
    }
    let bytes = serde_json::to_vec_pretty(&saved).map_err(std::io::Error::other)?;
    crate::files::write_atomically(
        &limits_file(data_dir, station),
        &bytes,
        crate::files::STATE_FILE_MODE,
    )?;
    Ok(true)
}

/// Where the stage's outputs go.
pub struct Sinks {
    pub outbox: Option<Arc<Outbox>>,
    /// Each station's latest report and parts, for the status page.
    pub view: tokio::sync::watch::Sender<QualityView>,
    pub alerts: Option<mpsc::Sender<Condition>>,
    /// Each station's divert output (by station index), when it has one.
    pub diverts: Vec<Option<divert::Divert>>,
    /// The production stage, told of each reject of a station on a line (by the line's name).
    pub rejects: Option<mpsc::Sender<String>>,
}

impl Sinks {
    fn emit(&self, quality: &Quality, station: usize, output: Output, now: SystemTime) {
        match &output {
            Output::Part(part) => {
                self.divert(quality, station, part);
                self.tell_line(quality, station, part);
                self.show(quality, station, |view| view.part(part));
            }
            Output::Condition(condition) => {
                if let Some(alerts) = &self.alerts {
                    if let Err(error) = alerts.try_send(condition.clone()) {
                        warn!(%error, id = %condition.id, "quality alert condition not delivered");
                    }
                }
            }
            Output::Learned(index, limits) => {
                let config = quality.stations[station].station();
                let name = &config.characteristics[*index].name;
                info!(station = %config.name, characteristic = %name, center = limits.center, sigma = limits.sigma, "control limits learned and frozen");
                quality.learned(station);
            }
            Output::Report(report) => {
                log_report(report);
                if !report.closing || report.parts > 0 {
                    self.show(quality, station, |view| {
                        view.report = Some((**report).clone())
                    });
                }
            }
            Output::MoveImage { file, to } => {
                if let Err(error) = crate::sources::folder::move_into(file, to) {
                    warn!(%error, file = %file.display(), to, "cannot move the camera image");
                }
            }
        }
        self.record(&output, now);
    }

    /// Updates station `station`'s view.
    fn show(&self, quality: &Quality, station: usize, change: impl FnOnce(&mut StationView)) {
        let config = quality.stations[station].station();
        self.view.send_modify(|view| {
            let entry = view
                .entry(config.name.clone())
                .or_insert_with(|| StationView {
                    station: config.name.clone(),
                    line: config.line.as_ref().map(|(line, _)| line.clone()),
                    report: None,
                    latest: std::collections::VecDeque::new(),
                });
            change(entry);
        });
    }

    /// Pulses the station's divert output for a part it must not let through.
    fn divert(&self, quality: &Quality, station: usize, part: &station::PartDecision) {
        let Some(Some(divert)) = self.diverts.get(station) else {
            return;
        };
        let review_too = quality.stations[station]
            .station()
            .divert
            .is_some_and(|d| d.review);
        if part.decision == Decision::Reject || (review_too && part.decision == Decision::Review) {
            divert.pulse();
        }
    }

    /// Counts a reject against the station's line (its OEE quality when it has no reject
    /// counter of its own).
    fn tell_line(&self, quality: &Quality, station: usize, part: &station::PartDecision) {
        let Some(rejects) = &self.rejects else { return };
        if part.decision != Decision::Reject {
            return;
        }
        if let Some((line, _)) = &quality.stations[station].station().line {
            if let Err(error) = rejects.try_send(line.clone()) {
                warn!(%error, %line, "a reject was not counted against its line");
            }
        }
    }

    fn record(&self, output: &Output, now: SystemTime) {
        if let (Some(outbox), Some(report)) = (&self.outbox, report_of(output)) {
            append(outbox, NewRecord::report(report, now));
        }
    }
}

fn log_report(report: &station::QualityReport) {
    if report.parts == 0 {
        return;
    }
    info!(
        station = %report.station,
        shift = report.shift.as_deref().unwrap_or("-"),
        parts = report.parts,
        reject = report.reject,
        review = report.review,
        "quality {}",
        if report.closing { "shift closed" } else { "report" }
    );
}

/// Runs the stations on the bus's samples until `stop`.
pub async fn run(
    mut quality: Quality,
    mut samples: Subscriber,
    sinks: Sinks,
    mut desk: mpsc::Receiver<Relearn>,
    mut images: mpsc::Receiver<(usize, station::ImageVerdict)>,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    let mut second = crate::clock::ticker(Duration::from_secs(1));
    loop {
        let wait = quality
            .next_due()
            .map(|due| due.saturating_sub(clock.elapsed()));
        tokio::select! {
            () = stop.cancelled() => break,
            batch = samples.recv_batch() => {
                let Some(batch) = batch else { break };
                let mono = clock.elapsed();
                for sample in batch.iter() {
                    quality.observe(sample, mono);
                }
            }
            () = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {}
            Some((i, verdict)) = images.recv() => {
                let now = clock.now();
                for (i, output) in quality.image(i, verdict, clock.elapsed()) {
                    sinks.emit(&quality, i, output, now);
                }
            }
            Some(request) = desk.recv() => {
                let answer = quality.relearn(&request.station, &request.characteristic);
                let _asker_gone = request.done.send(answer);
            }
            _ = second.tick() => {
                let now = clock.now();
                for (i, output) in quality.shifts(now) {
                    sinks.emit(&quality, i, output, now);
                }
            }
        }
        let (mono, now) = (clock.elapsed(), clock.now());
        for (i, output) in quality.step(mono, now) {
            sinks.emit(&quality, i, output, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Quality as SampleQuality, Sample, TagId, Value};

    const GAUGE: &str = include_str!("../../tests/fixtures/quality-gauge.toml");

    fn stations() -> Vec<Station> {
        firmware_config::load_str(Path::new("gauge.toml"), GAUGE)
            .expect("valid")
            .quality
    }

    fn sample(tag: u32, value: Value) -> Sample {
        Sample {
            tag: TagId(tag),
            server_timestamp: None,
            timestamp: SystemTime::UNIX_EPOCH,
            value: Some(value),
            quality: SampleQuality::Good,
        }
    }

    /// Makes `n` parts with alternating bores around 25.00 (MR 0.004 → σ 0.004/1.128).
    fn make_parts(quality: &mut Quality, n: u64) {
        quality.observe(&sample(0, Value::U64(0)), Duration::ZERO);
        for i in 1..=n {
            let mono = Duration::from_millis(10 * i);
            let bore = if i % 2 == 0 { 25.002 } else { 24.998 };
            quality.observe(&sample(2, Value::F64(bore)), mono);
            quality.observe(&sample(3, Value::F64(120.0)), mono);
            quality.observe(&sample(0, Value::U64(i)), mono);
            for (station, output) in quality.step(mono, SystemTime::UNIX_EPOCH) {
                if let Output::Learned(..) = output {
                    quality.learned(station);
                }
            }
        }
    }

    #[test]
    fn learned_limits_survive_a_restart_and_given_ones_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut quality = Quality::new(&stations(), dir.path(), SystemTime::UNIX_EPOCH);
        make_parts(&mut quality, 24);
        assert_eq!(quality.stations[0].limits()[0], None, "24 of 25 parts");
        make_parts(&mut quality, 1);
        let learned = quality.stations[0].limits()[0].expect("learned at the 25th part");
        assert!((learned.center - 25.0).abs() < 0.001);
        assert!((learned.sigma - 0.004 / 1.128).abs() < 1e-4, "{learned:?}");

        let saved = std::fs::read_to_string(limits_file(dir.path(), "gauge-1")).expect("saved");
        assert!(saved.contains("\"bore\""), "{saved}");
        assert!(
            !saved.contains("\"weight\""),
            "given limits are not saved: {saved}"
        );

        let restarted = Quality::new(&stations(), dir.path(), SystemTime::UNIX_EPOCH);
        assert_eq!(
            restarted.stations[0].limits()[0],
            Some(learned),
            "not learned again"
        );
        assert_eq!(
            restarted.stations[0].limits()[1],
            Some(ControlLimits {
                center: 120.0,
                sigma: 0.4
            })
        );
    }

    #[test]
    fn a_torn_limits_file_is_set_aside_and_learning_starts_afresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = limits_file(dir.path(), "gauge-1");
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, b"{\"limits\": {\"bore\": {\"cen").expect("write");
        let quality = Quality::new(&stations(), dir.path(), SystemTime::UNIX_EPOCH);
        assert_eq!(quality.stations[0].limits()[0], None);
        assert!(!path.exists());
        let aside = std::fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains("corrupt"));
        assert!(aside, "the torn file is kept aside");
    }

    #[test]
    fn relearning_forgets_learned_limits_but_not_given_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut quality = Quality::new(&stations(), dir.path(), SystemTime::UNIX_EPOCH);
        make_parts(&mut quality, 25);
        assert!(quality.stations[0].limits()[0].is_some());
        assert!(quality.stations[0].relearn("bore"));
        assert!(quality.stations[0].relearn("weight"));
        assert!(!quality.stations[0].relearn("diameter"));
        assert_eq!(quality.stations[0].limits()[0], None);
        assert!(
            quality.stations[0].limits()[1].is_some(),
            "given limits stay"
        );
    }
}

//! The replay as a command: reads the history file row by row through the [`Engine`], writes
//! every finding as a JSON line, shows progress, and sums up (see [`super::tally`]).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::input::{self, Rows, Skipped};
use super::tally::{self, Failure, Outcome, Tally};
use super::{Counts, Engine, Finding};
use crate::app::Loaded;
use crate::clock::Clock;
use crate::records::Report;
use crate::uplink::encode::uns;
use crate::uplink::timestamp;

/// Skipped rows shown one by one; the rest are counted.
const SKIPS_SHOWN: usize = 20;

/// A line's closed shifts shown one by one in the printed summary (all are in the JSON).
const SHIFTS_SHOWN: usize = 60;

/// How fast to go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// As fast as the CPU allows.
    Max,
    /// This many times real time.
    Times(f64),
}

/// A `--speed` that is neither `max` nor a factor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("speed {0:?} is not `max` or a factor such as `10x`")]
pub struct SpeedError(String);

impl std::str::FromStr for Speed {
    type Err = SpeedError;

    fn from_str(text: &str) -> Result<Speed, SpeedError> {
        if text == "max" {
            return Ok(Speed::Max);
        }
        text.strip_suffix('x')
            .and_then(|n| n.parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n > 0.0)
            .map(Speed::Times)
            .ok_or_else(|| SpeedError(text.to_string()))
    }
}

/// What to replay, and how.
pub struct Options {
    pub speed: Speed,
    /// Recorded failures (`asset,time`), for lead times and false alarms.
    pub failures: Vec<Failure>,
    /// How long before a failure a warning counts as a warning of it.
    pub horizon: Duration,
}

/// Why a replay could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{path}: {source}")]
    Input {
        path: PathBuf,
        source: input::InputError,
    },
    #[error("{path}: line {line}: {why}")]
    Failures {
        path: PathBuf,
        line: u64,
        why: String,
    },
    #[error("{path}: line {line}: {why}")]
    FailureTime {
        path: PathBuf,
        line: u64,
        why: input::RowError,
    },
    #[error("cannot write the findings: {0}")]
    Output(#[from] std::io::Error),
}

/// What the replay found and how the input went.
#[derive(Debug)]
pub struct Summary {
    pub rows: u64,
    pub counts: Counts,
    pub skipped: u64,
    /// The first [`SKIPS_SHOWN`] skipped rows.
    pub skips: Vec<Skipped>,
    pub first: Option<SystemTime>,
    pub last: Option<SystemTime>,
    pub findings: u64,
    pub tally: Tally,
    pub outcome: Outcome,
    /// Each quality station over the whole recording.
    pub quality: Vec<crate::quality::station::QualityReport>,
}

/// Reads the failures file: `asset,time` per row (header first), assets of `loaded`.
pub fn read_failures(
    loaded: &Loaded,
    path: PathBuf,
    text: &str,
) -> Result<Vec<Failure>, ReplayError> {
    let failed = |line: u64, why: String| ReplayError::Failures {
        path: path.clone(),
        line,
        why,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| failed(1, e.to_string()))?
        .clone();
    let column = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(asset), Some(time)) = (column("asset"), column("time").or(column("timestamp")))
    else {
        return Err(failed(
            1,
            "the header must name the columns `asset` and `time`".into(),
        ));
    };
    let mut failures = Vec::new();
    for record in reader.records() {
        let record =
            record.map_err(|e| failed(e.position().map_or(0, |p| p.line()), e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line());
        let id = record.get(asset).unwrap_or_default();
        if !loaded.plan.assets.iter().any(|a| a.id == id) {
            return Err(failed(
                line,
                format!("no asset {id:?} in the configuration"),
            ));
        }
        let at =
            input::parse_time(record.get(time).unwrap_or_default().as_bytes()).map_err(|why| {
                ReplayError::FailureTime {
                    path: path.clone(),
                    line,
                    why,
                }
            })?;
        failures.push(Failure {
            asset: id.to_string(),
            at,
        });
    }
    Ok(failures)
}

/// The JSON line of a finding: `{"kind","time",…}`; reports carry the `data` they would carry
/// on MQTT.
pub fn finding_json(finding: &Finding) -> String {
    let report = |report: Report, at: String| {
        format!(
            r#"{{"kind":"{}","time":"{at}","data":{}}}"#,
            report.kind(),
            uns::data(&report)
        )
    };
    match finding {
        Finding::Assessment(a) => {
            let at = a.timestamp.clone();
            report(Report::Assessment(a.clone()), at)
        }
        Finding::Alert(t) => report(Report::AlertTransition(t.clone()), timestamp(t.at)),
        Finding::ActionChange {
            asset,
            from,
            to,
            at,
        } => json!({
            "kind": "action_change",
            "time": timestamp(*at),
            "asset": asset,
            "from": from,
            "to": to,
        })
        .to_string(),
        Finding::Production { output, at } => {
            report(crate::production::report_of(output.clone()), timestamp(*at))
        }
        Finding::Quality { output, at } => match crate::quality::report_of(output) {
            Some(record) => report(record, timestamp(*at)),
            None => String::new(),
        },
        Finding::LimitsLearned {
            station,
            characteristic,
            limits,
            at,
        } => json!({
            "kind": "limits_learned",
            "time": timestamp(*at),
            "station": station,
            "characteristic": characteristic,
            "center": limits.center,
            "sigma": limits.sigma,
        })
        .to_string(),
    }
}

/// Replays `input` through `loaded`'s stages; findings go to `out` as JSON lines; `progress` is
/// called about once a second of wall time (by `wall`) with a one-line status.
pub fn replay(
    loaded: &Loaded,
    input: impl Read,
    path: PathBuf,
    options: &Options,
    out: &mut dyn Write,
    wall: &dyn Clock,
    progress: &mut dyn FnMut(&str),
) -> Result<Summary, ReplayError> {
    let mut rows =
        Rows::new(&loaded.plan, input).map_err(|source| ReplayError::Input { path, source })?;
    let mut engine = Engine::new(loaded);
    let mut summary = Summary {
        rows: 0,
        counts: Counts::default(),
        skipped: 0,
        skips: Vec::new(),
        first: None,
        last: None,
        findings: 0,
        tally: Tally::default(),
        outcome: Outcome {
            assets: Vec::new(),
            lines: Vec::new(),
            failures: Vec::new(),
        },
        quality: Vec::new(),
    };
    let mut written: std::io::Result<()> = Ok(());
    let mut emit = |finding: Finding, summary: &mut Summary| {
        summary.findings += 1;
        summary.tally.add(&finding);
        if written.is_ok() {
            written = writeln!(out, "{}", finding_json(&finding));
        }
    };
    let started = wall.now();
    let mut shown = started;
    let mut samples = Vec::new();
    while let Some(row) = rows.next_row(&mut samples) {
        summary.rows += 1;
        let line = rows.line();
        let skip = |skipped: Skipped, summary: &mut Summary| {
            summary.skipped += 1;
            if summary.skips.len() < SKIPS_SHOWN {
                summary.skips.push(skipped);
            }
        };
        match row {
            Err(skipped) => skip(skipped, &mut summary),
            Ok(()) => {
                let mut refused = None;
                for sample in samples.drain(..) {
                    let mut found = Vec::new();
                    if let Err(why) = engine.feed(&sample, &mut |f| found.push(f)) {
                        refused = Some(why);
                        break;
                    }
                    summary.first = summary.first.or(Some(sample.timestamp));
                    summary.last = summary.last.max(Some(sample.timestamp));
                    for finding in found {
                        emit(finding, &mut summary);
                    }
                }
                samples.clear();
                if let Some(why) = refused {
                    skip(Skipped { line, why }, &mut summary);
                }
            }
        }
        if summary.rows % 4096 == 0 {
            let now = wall.now();
            pace(options.speed, started, now, summary.first, summary.last);
            if now.duration_since(shown).unwrap_or_default() >= Duration::from_secs(1) {
                shown = now;
                progress(&progress_line(&summary, &engine.counts, started, now));
            }
        }
    }
    let mut found = Vec::new();
    engine.finish(&mut |f| found.push(f));
    for finding in found {
        emit(finding, &mut summary);
    }
    written?;
    summary.quality = engine.quality_overall();
    summary.counts = engine.counts.clone();
    summary.outcome = tally::judge(&summary.tally, &options.failures, options.horizon);
    Ok(summary)
}

/// At a set speed, waits until the wall clock catches up with the recording.
fn pace(
    speed: Speed,
    started: SystemTime,
    now: SystemTime,
    first: Option<SystemTime>,
    last: Option<SystemTime>,
) {
    let Speed::Times(factor) = speed else {
        return;
    };
    let recorded = first
        .zip(last)
        .and_then(|(f, l)| l.duration_since(f).ok())
        .unwrap_or_default();
    let due = recorded.div_f64(factor);
    let spent = now.duration_since(started).unwrap_or_default();
    if let Some(ahead) = due.checked_sub(spent) {
        std::thread::sleep(ahead.min(Duration::from_secs(1)));
    }
}

fn progress_line(
    summary: &Summary,
    counts: &Counts,
    started: SystemTime,
    now: SystemTime,
) -> String {
    let seconds = now
        .duration_since(started)
        .unwrap_or_default()
        .as_secs_f64()
        .max(1e-3);
    format!(
        "replay: {} rows, {} samples, recording at {}, {:.0} rows/s",
        summary.rows,
        counts.samples,
        summary.last.map_or_else(|| "-".into(), timestamp),
        summary.rows as f64 / seconds
    )
}

/// The summary as the command prints it.
pub fn format_summary(summary: &Summary, failures_given: bool) -> String {
    let mut out = String::new();
    let c = &summary.counts;
    let _ = writeln!(
        out,
        "replayed {} rows ({} samples) from {} to {}; {} findings",
        summary.rows,
        c.samples,
        summary.first.map_or_else(|| "-".into(), timestamp),
        summary.last.map_or_else(|| "-".into(), timestamp),
        summary.findings
    );
    let _ = writeln!(
        out,
        "input: {} rows skipped, {} samples out of order (taken at the latest time), {} gaps",
        summary.skipped, c.out_of_order, c.gaps
    );
    for skip in &summary.skips {
        let _ = writeln!(out, "  line {}: {}", skip.line, skip.why);
    }
    if summary.skipped > summary.skips.len() as u64 {
        let _ = writeln!(
            out,
            "  … and {} more",
            summary.skipped - summary.skips.len() as u64
        );
    }
    for asset in &summary.outcome.assets {
        let _ = writeln!(
            out,
            "asset {}: {} assessments; scheduled maintenance first {}, immediate first {}; {} alert(s) raised; {} episode(s)",
            asset.asset,
            asset.assessments,
            asset.first_scheduled_maintenance.as_deref().unwrap_or("never"),
            asset.first_immediate_maintenance.as_deref().unwrap_or("never"),
            asset.alerts_raised,
            asset.episodes
        );
        if failures_given {
            let _ = writeln!(
                out,
                "  false alarms: {} over {:.2} asset-months ({} per asset-month)",
                asset.false_alarms,
                asset.asset_months,
                asset
                    .false_alarms_per_asset_month
                    .map_or_else(|| "-".into(), |r| format!("{r:.2}"))
            );
        }
    }
    for line in &summary.outcome.lines {
        format_line(&mut out, line);
    }
    for station in &summary.quality {
        format_station(&mut out, station);
    }
    for failure in &summary.outcome.failures {
        match failure.lead_time_hours {
            Some(hours) => {
                let _ = writeln!(
                    out,
                    "failure of {} at {}: warned {} ({hours:.1} h before)",
                    failure.asset,
                    failure.failed,
                    failure.warned.as_deref().unwrap_or("")
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "failure of {} at {}: MISSED (no warning within the horizon)",
                    failure.asset, failure.failed
                );
            }
        }
    }
    out
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{:.1} %", 100.0 * v))
}

fn format_line(out: &mut String, line: &super::tally::LineOutcome) {
    let f = &line.figures;
    let _ = writeln!(
        out,
        "line {}: {} shift(s) closed, OEE {} (availability {}, performance {}, quality {}); {} good, {} rejects; {} downtime event(s)",
        line.line,
        line.shifts.len(),
        percent(f.oee),
        percent(f.availability),
        percent(f.performance),
        percent(f.quality),
        f.good,
        f.reject,
        line.downtime_events
    );
    if let Some(top) = &line.top_loss {
        let _ = writeln!(out, "  biggest loss: {top}");
    }
    if let Some(o) = &line.outside_shifts {
        let _ = writeln!(
            out,
            "  outside shifts (in no OEE above): {} period(s), {:.1} h running, {} good, {} rejects",
            o.periods, o.running_hours, o.good, o.reject
        );
    }
    let hidden = line.shifts.len().saturating_sub(SHIFTS_SHOWN);
    if hidden > 0 {
        let _ = writeln!(out, "  … {hidden} earlier shift(s) in the JSON summary");
    }
    for shift in &line.shifts[hidden..] {
        let unseen = if shift.unaccounted_minutes >= 0.05 {
            format!(", {:.1} min not recorded", shift.unaccounted_minutes)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {} {}: OEE {} (A {}, P {}, Q {}), {} good, {} rejects{unseen}",
            shift.shift,
            shift.start,
            percent(shift.oee),
            percent(shift.availability),
            percent(shift.performance),
            percent(shift.quality),
            shift.good,
            shift.reject
        );
    }
}

fn format_station(out: &mut String, r: &crate::quality::station::QualityReport) {
    let _ = writeln!(
        out,
        "quality {}: {} part(s), {} pass, {} review, {} reject (reject rate {}), mean defect score {}{}",
        r.station,
        r.parts,
        r.pass,
        r.review,
        r.reject,
        percent(r.reject_rate()),
        r.mean_score.map_or_else(|| "-".into(), |s| format!("{s:.3}")),
        if r.missed > 0 {
            format!("; {} part(s) counted but not seen", r.missed)
        } else {
            String::new()
        }
    );
    let figure = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.2}"));
    for c in &r.characteristics {
        let unit = c.unit.as_deref().unwrap_or("");
        let limits = c.limits.map_or("limits not learned".to_string(), |l| {
            format!("centre {:.4}{unit}, σ {:.4}{unit}", l.center, l.sigma)
        });
        let violations: Vec<String> = c
            .violations
            .iter()
            .map(|(rule, n)| format!("{rule} ×{n}"))
            .collect();
        let _ = writeln!(
            out,
            "  {}: n {}, mean {}{unit}, Cp {}, Cpk {}, Pp {}, Ppk {}; {limits}; violations: {}",
            c.name,
            c.n,
            c.mean.map_or_else(|| "-".into(), |m| format!("{m:.4}")),
            figure(c.capability.cp),
            figure(c.capability.cpk),
            figure(c.capability.pp),
            figure(c.capability.ppk),
            if violations.is_empty() {
                "none".into()
            } else {
                violations.join(", ")
            }
        );
    }
}

/// The summary as the last JSON line.
pub fn summary_json(summary: &Summary) -> String {
    json!({
        "kind": "summary",
        "rows": summary.rows,
        "samples": summary.counts.samples,
        "skipped": summary.skipped,
        "out_of_order": summary.counts.out_of_order,
        "gaps": summary.counts.gaps,
        "from": summary.first.map(timestamp),
        "to": summary.last.map(timestamp),
        "findings": summary.findings,
        "assets": summary.outcome.assets,
        "lines": summary.outcome.lines,
        "quality": summary.quality.iter().map(uns::quality_json).collect::<Vec<_>>(),
        "failures": summary.outcome.failures,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const PRESS: &str = include_str!("../../tests/fixtures/line-press.toml");

    /// Replays `csv` through `loaded` at full speed: the summary and the findings written.
    fn replayed(loaded: &Loaded, csv: &str) -> (Summary, Vec<u8>) {
        let options = Options {
            speed: Speed::Max,
            failures: Vec::new(),
            horizon: Duration::from_secs(86_400),
        };
        let mut out = Vec::new();
        let summary = replay(
            loaded,
            csv.as_bytes(),
            "recorded.csv".into(),
            &options,
            &mut out,
            &ManualClock::new(SystemTime::UNIX_EPOCH),
            &mut |_| {},
        )
        .expect("replayed");
        (summary, out)
    }
    /// Monday 2026-11-23 06:00:00 UTC, the day shift's start.
    const SHIFT_START: u64 = 1_795_413_600;

    fn press() -> Loaded {
        let plan = firmware_config::load_str(std::path::Path::new("line-press.toml"), PRESS)
            .unwrap_or_else(|e| panic!("{e}"));
        Loaded::new(plan).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A recorded day of the press (long CSV, values sent on change): running at its ideal cycle
    /// (2 s) from 05:59 to 14:01, except a jam (fault, reason 12) 08:00–08:30 and the planned
    /// break 10:00–10:15 (planned stop); every 50th part is a reject.
    fn recorded_day() -> String {
        let mut csv = String::from("timestamp,tag,value\n");
        let (mut state, mut total, mut good) = (None, 0u32, 0u32);
        for t in SHIFT_START - 60..=SHIFT_START + 8 * 3600 + 60 {
            let minute = (t as i64 - SHIFT_START as i64).div_euclid(60);
            let now = match minute {
                120..=149 => 3,
                240..=254 => 0,
                _ => 1,
            };
            if state != Some(now) {
                csv += &format!("{t},press.state,{now}\n");
                csv += &format!("{t},press.reason,{}\n", if now == 3 { 12 } else { 0 });
                state = Some(now);
            }
            if now == 1 && t % 2 == 0 {
                total += 1;
                if total % 50 != 0 {
                    good += 1;
                }
                csv += &format!("{t},press.total,{total}\n{t},press.good,{good}\n");
            }
        }
        csv
    }

    #[test]
    fn a_recorded_shift_gives_the_oee_worked_by_hand() {
        let (summary, out) = replayed(&press(), &recorded_day());
        assert_eq!(summary.skipped, 0);
        let line = &summary.outcome.lines[0];
        assert_eq!(line.shifts.len(), 1, "{:?}", line.shifts);
        let f = &line.figures;
        // Shift 480 min − break 15 min = planned busy time 465 min; the jam (30 min, over the
        // 5 min micro-stop threshold) is unplanned: actual production time 435 min = 26,100 s.
        let minutes = |s: f64| s / 60.0;
        assert!((minutes(f.planned_busy_time) - 465.0).abs() < 0.1, "{f:?}");
        assert!((minutes(f.actual_production_time) - 435.0).abs() < 0.1);
        // 26,100 s at 2 s a part = 13,050 parts, 261 of them rejects (every 50th).
        assert!((f.total - 13_050.0).abs() <= 1.0, "{}", f.total);
        assert!((f.reject - 261.0).abs() <= 1.0, "{}", f.reject);
        // A = 435 / 465 = 0.9355, P = 2 s × 13,050 / 26,100 s = 1.0, Q = 12,789 / 13,050 = 0.98,
        // OEE = 0.9355 × 1.0 × 0.98 = 0.9168.
        let close = |v: Option<f64>, want: f64| (v.expect("figure") - want).abs() < 0.002;
        assert!(close(f.availability, 0.9355), "{:?}", f.availability);
        assert!(close(f.performance, 1.0), "{:?}", f.performance);
        assert!(close(f.quality, 0.98), "{:?}", f.quality);
        assert!(close(f.oee, 0.9168), "{:?}", f.oee);
        assert_eq!(line.downtime_events, 2, "the jam and the break");
        // Before the shift: the 05:59:00 reading is the counters' baseline, and the 29 parts
        // counted from 05:59:02 to 05:59:58 are reported apart from the shift.
        let outside = line
            .outside_shifts
            .as_ref()
            .expect("parts before the shift");
        assert_eq!((outside.periods, outside.total), (1, 29.0));
        let printed = format_summary(&summary, false);
        assert!(
            printed.contains("line press-1: 1 shift(s) closed, OEE 91.7 %"),
            "{printed}"
        );
        assert!(printed.contains("jam at infeed: 30 min"), "{printed}");
        assert!(
            printed
                .contains("outside shifts (in no OEE above): 1 period(s), 0.0 h running, 29 good"),
            "{printed}"
        );
        let findings = String::from_utf8(out).expect("utf-8");
        let closing = findings
            .lines()
            .find(|l| l.contains(r#""kind":"oee""#) && l.contains(r#""closing":true"#));
        assert!(closing.is_some(), "a closing report among the findings");
    }

    /// A recorded gauge (long CSV): a part every 10 s for 100 parts, counter, id and bore at the
    /// same timestamp; the bore on target ±2 µm (alternating) for 40 parts, then 20 µm high.
    fn recorded_gauge() -> String {
        let mut csv = String::from("timestamp,tag,value\n");
        for n in 1..=100u64 {
            let t = SHIFT_START + 10 * n;
            let noise = if n % 2 == 0 { 0.002 } else { -0.002 };
            let bore = 25.0 + noise + if n > 40 { 0.02 } else { 0.0 };
            csv += &format!("{t},gauge.parts,{n}\n{t},gauge.part_id,{}\n{t},gauge.bore,{bore}\n{t},gauge.weight,120.0\n", 7000 + n);
        }
        csv
    }

    #[test]
    fn recorded_measurements_give_decisions_learned_limits_and_capability() {
        let text = include_str!("../../tests/fixtures/quality-gauge.toml");
        let plan = firmware_config::load_str(std::path::Path::new("gauge.toml"), text)
            .unwrap_or_else(|e| panic!("{e}"));
        let loaded = Loaded::new(plan).unwrap_or_else(|e| panic!("{e}"));
        let (summary, out) = replayed(&loaded, &recorded_gauge());
        let findings = String::from_utf8(out).expect("utf-8");
        let parts = findings
            .lines()
            .filter(|l| l.contains(r#""kind":"part""#))
            .count();
        // The first counter reading is the baseline: parts 2..=100 are decided, the last at the
        // recording's end.
        assert_eq!(parts, 99, "{findings}");
        let learned = findings
            .lines()
            .find(|l| l.contains("limits_learned"))
            .expect("limits learned");
        // 25 parts alternating ±2 µm: centre 25.0000 (±0.00008), MR 0.004 → σ 0.004/1.128.
        let learned: serde_json::Value = serde_json::from_str(learned).expect("json");
        assert!(
            (learned["sigma"].as_f64().expect("σ") - 0.004 / 1.128).abs() < 1e-6,
            "{learned}"
        );
        let station = &summary.quality[0];
        assert_eq!(station.parts, 99);
        // A 20 µm shift is 5.6σ: rule 1 on every part after it; none out of spec (50 µm).
        assert_eq!(station.reject, 0);
        let bore = &station.characteristics[0];
        let nelson1 = bore
            .violations
            .iter()
            .find(|(r, _)| r == "Nelson 1")
            .map(|(_, n)| *n);
        assert_eq!(nelson1, Some(60), "{:?}", bore.violations);
        assert!(
            bore.capability.cpk.is_some_and(|c| c > 1.0),
            "{:?}",
            bore.capability
        );
        let printed = format_summary(&summary, false);
        assert!(
            printed.contains("quality gauge-1: 99 part(s), 99 pass"),
            "{printed}"
        );
        assert!(printed.contains("Nelson 1 ×60"), "{printed}");
        assert!(
            findings.contains(r#""alert_id":"gauge-1/bore/spc""#),
            "the alert in recorded time"
        );
    }
}

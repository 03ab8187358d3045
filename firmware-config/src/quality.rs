//! `[[quality]]`: quality stations. A station decides on every part a line makes: which tag says a
//! part is complete (a counter that increments, or a "part done" flag's rising edge), which
//! measured characteristics belong to the part (each with its spec limits and a control chart),
//! at which defect scores a part goes to review or is rejected, and which output diverts a bad
//! part. Validation resolves every tag, checks that limits, charts, subgroup sizes and run rules
//! make sense, and that a divert output is the station's alone (not also an alert indication).

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use crate::alerts::Output;
use crate::assets::{TagDirectory, TagIndex};
use crate::calendar::Calendar;
use crate::duration::HumanDuration;
use crate::lines::{Line, Need, SectionCheck};
use crate::modbus::Checker;
use crate::names::{self, TopicUse};
use crate::source::Seg;

/// The largest subgroup the charts' constants are tabled for.
pub const MAX_SUBGROUP: u32 = 25;

/// One quality station as written.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct StationConfig {
    /// The station's name: a topic level and the name in records and alerts.
    pub name: String,
    /// The production line it inspects (its shift calendar gives the per-shift reports).
    pub line: Option<String>,
    /// What says a part is complete: `trigger = { counter = "gauge.parts" }` (each increment is a
    /// part) or `trigger = { part_done = "gauge.done" }` (each rising edge is a part).
    pub trigger: TriggerConfig,
    /// The part id, when the line has one (an integer or a string tag).
    pub part_id: Option<String>,
    /// How long after the trigger the characteristics are read (a gauge that writes its result
    /// a moment after it signals the part).
    #[serde(default)]
    pub settle: HumanDuration,
    /// A part whose defect score is above this goes to review (manual inspection).
    #[serde(default = "default_review_above")]
    pub review_above: f64,
    /// A part whose defect score is above this is rejected (removed from the line).
    #[serde(default = "default_reject_above")]
    pub reject_above: f64,
    /// The defect score of a value exactly at a spec limit (on target is 0).
    #[serde(default = "default_score_at_spec")]
    pub score_at_spec: f64,
    /// The output that pulls a bad part off the line.
    pub divert: Option<DivertConfig>,
    /// A defect model (`.onnx`, with its manifest `.toml` beside it) whose inputs are this
    /// station's characteristics: the part's defect score is the higher of the model's and the
    /// spec limits'. Relative to this file.
    pub model: Option<std::path::PathBuf>,
    /// Camera images: a folder the camera writes one image per part to, scored by an image model.
    pub images: Option<ImagesConfig>,
    /// How often the station's running quality report is sent.
    #[serde(default = "default_report_interval")]
    pub report_interval: HumanDuration,
    #[serde(default)]
    pub alerts: QualityAlertsConfig,
    #[serde(default)]
    pub characteristics: Vec<CharacteristicConfig>,
}

fn default_review_above() -> f64 {
    0.5
}
fn default_reject_above() -> f64 {
    0.8
}
fn default_score_at_spec() -> f64 {
    0.8
}
fn default_report_interval() -> HumanDuration {
    HumanDuration::from_millis(60_000)
}
fn default_pulse() -> HumanDuration {
    HumanDuration::from_millis(500)
}
fn default_baseline() -> u32 {
    25
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    pub counter: Option<String>,
    pub part_done: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// Where the camera writes (FTP or SMB to the gateway). Relative to this file.
    pub folder: std::path::PathBuf,
    /// The image model (`.onnx`, its manifest `.toml` beside it). Relative to this file.
    pub model: std::path::PathBuf,
    /// How an image finds its part: `part_id` (its file name contains the part id), `time` (the
    /// file was written within `wait` of the part's trigger) or `arrival` (images and parts in the
    /// same order).
    #[serde(default)]
    pub link: ImageLink,
    /// How long a part waits for its image before it is decided without one (and reviewed).
    #[serde(default = "default_image_wait")]
    pub wait: HumanDuration,
    /// How often the folder is looked at for new images.
    #[serde(default = "default_image_poll")]
    pub poll: HumanDuration,
    /// Images are kept this many days in pass/, review/, reject/ and unmatched/, then deleted.
    #[serde(default = "default_keep_days")]
    pub keep_days: u32,
}

fn default_image_wait() -> HumanDuration {
    HumanDuration::from_millis(2_000)
}
fn default_image_poll() -> HumanDuration {
    HumanDuration::from_millis(200)
}
fn default_keep_days() -> u32 {
    30
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ImageLink {
    /// The file name holds the part id as a whole token.
    #[default]
    PartId,
    /// The file was written (its modification time) within `wait` of the part's trigger; the
    /// nearest part takes it.
    Time,
    /// Images and parts in the same order.
    Arrival,
}

/// A validated image source.
#[derive(Debug, Clone, PartialEq)]
pub struct Images {
    pub folder: std::path::PathBuf,
    pub model: std::path::PathBuf,
    pub link: ImageLink,
    pub wait: Duration,
    pub poll: Duration,
    pub keep: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DivertConfig {
    /// An `[[outputs]]` entry (a coil, a register, a GPIO line or an LED) used for nothing else.
    pub output: String,
    /// How long the output is held on for one part.
    #[serde(default = "default_pulse")]
    pub pulse: HumanDuration,
    /// Divert parts sent to review as well as rejects.
    #[serde(default)]
    pub review: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct QualityAlertsConfig {
    /// Raise an alert for every run-rule violation on a characteristic's chart.
    #[serde(default = "default_true")]
    pub run_rules: bool,
    /// A characteristic's Cpk over the running report below this.
    pub cpk_below: Option<f64>,
    /// The running report's reject rate above this fraction (0..1).
    pub reject_rate_above: Option<f64>,
    /// Parts a report needs before its Cpk and reject rate are judged.
    #[serde(default = "default_min_parts")]
    pub min_parts: u32,
}

fn default_min_parts() -> u32 {
    30
}

impl Default for QualityAlertsConfig {
    fn default() -> Self {
        QualityAlertsConfig {
            run_rules: true,
            cpk_below: None,
            reject_rate_above: None,
            min_parts: default_min_parts(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CharacteristicConfig {
    /// A topic level and the name in records.
    pub name: String,
    pub tag: String,
    pub unit: Option<String>,
    /// The nominal value; the middle of the spec when absent and both limits are given.
    pub target: Option<f64>,
    /// Lower and upper specification limits (either may be absent).
    pub lsl: Option<f64>,
    pub usl: Option<f64>,
    /// `imr` (default), `xbar_r`, `xbar_s`, `ewma` or `cusum`.
    #[serde(default)]
    pub chart: ChartKind,
    /// Parts per subgroup (X̄-R, X̄-S).
    pub subgroup: Option<u32>,
    /// EWMA weight (0 < λ ≤ 1; default 0.2) and limit width in σ (default 3).
    pub lambda: Option<f64>,
    pub l: Option<f64>,
    /// CUSUM allowance and decision interval, in σ (defaults 0.5 and 5).
    pub k: Option<f64>,
    pub h: Option<f64>,
    /// Control limits as known: `limits = { center = 25.0, sigma = 0.004 }` (σ of one part).
    /// Without them they are learned from the first `baseline` subgroups, then kept.
    pub limits: Option<LimitsConfig>,
    #[serde(default = "default_baseline")]
    pub baseline: u32,
    /// Run rules on the chart: `rules = { nelson = [1, 2, 3, 5, 6] }` or
    /// `rules = { western_electric = [1, 2, 3, 4] }` (the default, for I-MR and X̄ charts).
    pub rules: Option<RulesConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ChartKind {
    #[default]
    Imr,
    XbarR,
    XbarS,
    Ewma,
    Cusum,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub center: f64,
    pub sigma: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    pub western_electric: Option<Vec<u8>>,
    pub nelson: Option<Vec<u8>>,
}

/// A validated station.
#[derive(Debug, Clone, PartialEq)]
pub struct Station {
    pub name: String,
    /// The line it inspects, by name, with that line's calendar.
    pub line: Option<(String, Calendar)>,
    pub trigger: Trigger,
    pub part_id: Option<TagIndex>,
    pub settle: Duration,
    pub review_above: f64,
    pub reject_above: f64,
    pub score_at_spec: f64,
    pub divert: Option<Divert>,
    /// The defect model's path (resolved), checked against its manifest when loaded.
    pub model: Option<std::path::PathBuf>,
    pub images: Option<Images>,
    pub report_interval: Duration,
    pub alerts: QualityAlerts,
    pub characteristics: Vec<Characteristic>,
}

impl Station {
    /// Every tag the station reads.
    pub fn tags(&self) -> Vec<TagIndex> {
        let trigger = match self.trigger {
            Trigger::Counter(tag) | Trigger::PartDone(tag) => tag,
        };
        [trigger]
            .into_iter()
            .chain(self.part_id)
            .chain(self.characteristics.iter().map(|c| c.tag))
            .collect()
    }

    /// The ids of the alerts the station can raise.
    pub fn alert_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        if self.alerts.run_rules {
            ids.extend(
                self.characteristics
                    .iter()
                    .map(|c| format!("{}/{}/spc", self.name, c.name)),
            );
        }
        if self.alerts.cpk_below.is_some() {
            ids.extend(
                self.characteristics
                    .iter()
                    .filter(|c| c.has_spec())
                    .map(|c| format!("{}/{}/cpk", self.name, c.name)),
            );
        }
        if self.alerts.reject_rate_above.is_some() {
            ids.push(format!("{}/reject_rate", self.name));
        }
        ids
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Each increment is a part.
    Counter(TagIndex),
    /// Each rising edge (false → true, zero → nonzero) is a part.
    PartDone(TagIndex),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Divert {
    /// Index into the plan's outputs.
    pub output: usize,
    pub pulse: Duration,
    pub review: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityAlerts {
    pub run_rules: bool,
    pub cpk_below: Option<f64>,
    pub reject_rate_above: Option<f64>,
    pub min_parts: u32,
}

/// A validated characteristic.
#[derive(Debug, Clone, PartialEq)]
pub struct Characteristic {
    pub name: String,
    pub tag: TagIndex,
    pub unit: Option<String>,
    /// The nominal value; `None` only without spec limits.
    pub target: Option<f64>,
    pub lsl: Option<f64>,
    pub usl: Option<f64>,
    pub chart: Chart,
    pub limits: Option<ControlLimits>,
    /// Subgroups learned from when `limits` is absent.
    pub baseline: u32,
    pub rules: Vec<Rule>,
}

impl Characteristic {
    pub fn has_spec(&self) -> bool {
        self.lsl.is_some() || self.usl.is_some()
    }
}

/// Where the chart is centred and how wide one part's common-cause spread is.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, Deserialize)]
pub struct ControlLimits {
    pub center: f64,
    pub sigma: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Chart {
    Imr,
    XbarR { n: u32 },
    XbarS { n: u32 },
    Ewma { lambda: f64, l: f64 },
    Cusum { k: f64, h: f64 },
}

impl Chart {
    /// Parts per plotted point.
    pub fn subgroup(self) -> u32 {
        match self {
            Chart::XbarR { n } | Chart::XbarS { n } => n,
            Chart::Imr | Chart::Ewma { .. } | Chart::Cusum { .. } => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Chart::Imr => "I-MR",
            Chart::XbarR { .. } => "X̄-R",
            Chart::XbarS { .. } => "X̄-S",
            Chart::Ewma { .. } => "EWMA",
            Chart::Cusum { .. } => "CUSUM",
        }
    }

    /// Whether run rules apply (Shewhart charts); EWMA and CUSUM signal by their own limits.
    pub fn takes_rules(self) -> bool {
        matches!(self, Chart::Imr | Chart::XbarR { .. } | Chart::XbarS { .. })
    }
}

/// A run rule as the user named it: its family and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    WesternElectric(u8),
    Nelson(u8),
}

impl Rule {
    pub const WESTERN_ELECTRIC: [Rule; 4] = [
        Rule::WesternElectric(1),
        Rule::WesternElectric(2),
        Rule::WesternElectric(3),
        Rule::WesternElectric(4),
    ];

    /// What the rule tests: the name in every violation.
    pub fn describe(self) -> &'static str {
        match self {
            Rule::WesternElectric(1) | Rule::Nelson(1) => "a point beyond 3σ",
            Rule::Nelson(2) => "9 points in a row on one side of the centre line",
            Rule::Nelson(3) => "6 points in a row steadily rising or falling",
            Rule::Nelson(4) => "14 points in a row alternating up and down",
            Rule::WesternElectric(2) | Rule::Nelson(5) => "2 of 3 points beyond 2σ on one side",
            Rule::WesternElectric(3) | Rule::Nelson(6) => "4 of 5 points beyond 1σ on one side",
            Rule::Nelson(7) => "15 points in a row within 1σ",
            Rule::Nelson(8) => "8 points in a row beyond 1σ on either side",
            Rule::WesternElectric(4) => "8 points in a row on one side of the centre line",
            _ => "unknown rule",
        }
    }

    pub fn label(self) -> String {
        match self {
            Rule::WesternElectric(n) => format!("Western Electric {n}"),
            Rule::Nelson(n) => format!("Nelson {n}"),
        }
    }
}

/// A family of run rules as configured: its key, the numbers chosen, the highest that exists.
type Family<'r> = (&'static str, Option<&'r Vec<u8>>, u8, fn(u8) -> Rule);

pub(crate) fn validate_stations(
    check: &mut Checker<'_, '_>,
    tags: &TagDirectory<'_>,
    context: &StationContext<'_>,
    stations: &[(usize, StationConfig)],
) -> Vec<Station> {
    let mut seen = HashSet::new();
    let mut divert_outputs = HashSet::new();
    let mut valid = Vec::new();
    for (index, config) in stations {
        let before = check.errors.len();
        let mut v = StationSpec {
            v: SectionCheck::new(
                check,
                tags,
                format!("quality station {:?}", config.name),
                vec![Seg::Key("quality"), Seg::Index(*index)],
            ),
            context,
        };
        if let Some(problem) =
            names::topic_name_error("station name", &config.name, TopicUse::Level)
        {
            v.v.err(&["name"], problem);
        } else if !seen.insert(config.name.clone()) {
            v.v.err(&["name"], "another quality station has this name");
        }
        let station = v.station(config);
        if let Some(divert) = station.as_ref().and_then(|s| s.divert) {
            if !divert_outputs.insert(divert.output) {
                v.v.err(
                    &["divert", "output"],
                    "another quality station diverts with this output",
                );
            }
        }
        if check.errors.len() == before {
            valid.extend(station);
        }
    }
    valid
}

/// What stations refer to outside their own section.
pub(crate) struct StationContext<'p> {
    pub lines: &'p [Line],
    /// Every line the file names, valid or not (an invalid one is reported already).
    pub line_names: HashSet<String>,
    pub outputs: &'p [Output],
    /// Outputs that `[[indications]]` drive (by index).
    pub indicated: HashSet<usize>,
    /// Where relative model paths start.
    pub config_dir: &'p std::path::Path,
}

struct StationSpec<'c, 'a, 'b, 't, 'p> {
    v: SectionCheck<'c, 'a, 'b, 't>,
    context: &'c StationContext<'p>,
}

impl StationSpec<'_, '_, '_, '_, '_> {
    fn station(&mut self, c: &StationConfig) -> Option<Station> {
        let line = c.line.as_ref().and_then(|name| {
            let found = self.context.lines.iter().find(|l| &l.name == name);
            if found.is_none() && !self.context.line_names.contains(name) {
                self.v
                    .err(&["line"], format!("no [[lines]] entry named {name:?}"));
            }
            found.map(|l| (l.name.clone(), l.calendar.clone()))
        });
        let trigger = self.trigger(&c.trigger);
        let part_id = c
            .part_id
            .as_ref()
            .map(|t| self.v.tag(&["part_id"], t, Need::Any));
        self.thresholds(c);
        let divert = c.divert.as_ref().and_then(|d| self.divert(d));
        if c.model
            .as_ref()
            .is_some_and(|m| m.extension().is_none_or(|e| e != "onnx"))
        {
            self.v.err(
                &["model"],
                "the model must be an .onnx file (its manifest .toml beside it)",
            );
        }
        if c.report_interval.get() < Duration::from_secs(1) {
            self.v
                .err(&["report_interval"], "report_interval must be at least 1s");
        }
        let alerts = self.alerts(&c.alerts);
        if c.characteristics.is_empty() && c.images.is_none() {
            self.v.err(
                &["name"],
                "a station needs at least one [[quality.characteristics]] or `images`",
            );
        }
        let mut names = HashSet::new();
        let characteristics: Vec<Option<Characteristic>> = c
            .characteristics
            .iter()
            .enumerate()
            .map(|(i, ch)| {
                if !names.insert(ch.name.clone()) {
                    self.at(
                        i,
                        &["name"],
                        "another characteristic of this station has this name",
                    );
                }
                self.characteristic(i, ch)
            })
            .collect();
        Some(Station {
            name: c.name.clone(),
            line,
            trigger: trigger?,
            part_id: part_id.map(|p| p.ok_or(())).transpose().ok()?,
            settle: c.settle.get(),
            review_above: c.review_above,
            reject_above: c.reject_above,
            score_at_spec: c.score_at_spec,
            divert,
            model: c.model.as_ref().map(|m| self.context.config_dir.join(m)),
            images: c.images.as_ref().and_then(|i| self.images(i, c)),
            report_interval: c.report_interval.get(),
            alerts: alerts?,
            characteristics: characteristics.into_iter().collect::<Option<Vec<_>>>()?,
        })
    }

    fn trigger(&mut self, t: &TriggerConfig) -> Option<Trigger> {
        match (&t.counter, &t.part_done) {
            (Some(tag), None) => self
                .v
                .tag(&["trigger", "counter"], tag, Need::Integer)
                .map(Trigger::Counter),
            (None, Some(tag)) => self
                .v
                .tag(&["trigger", "part_done"], tag, Need::Flag)
                .map(Trigger::PartDone),
            _ => {
                self.v.err(&["trigger"], "give one trigger: `trigger = { counter = \"<tag>\" }` (each increment is a part) or `trigger = { part_done = \"<tag>\" }` (each rising edge is a part)");
                None
            }
        }
    }

    fn thresholds(&mut self, c: &StationConfig) {
        let fraction = |x: f64| x.is_finite() && x > 0.0 && x < 1.0;
        if !fraction(c.review_above) {
            self.v
                .err(&["review_above"], "review_above must be between 0 and 1");
        }
        if !fraction(c.reject_above) {
            self.v
                .err(&["reject_above"], "reject_above must be between 0 and 1");
        }
        if fraction(c.review_above) && fraction(c.reject_above) && c.review_above > c.reject_above {
            self.v.err(
                &["review_above"],
                format!(
                    "review_above ({}) must not be above reject_above ({})",
                    c.review_above, c.reject_above
                ),
            );
        }
        if !(c.score_at_spec.is_finite() && c.score_at_spec > 0.0 && c.score_at_spec <= 1.0) {
            self.v.err(
                &["score_at_spec"],
                "score_at_spec must be above 0 and at most 1",
            );
        }
    }

    fn images(&mut self, i: &ImagesConfig, c: &StationConfig) -> Option<Images> {
        if i.model.extension().is_none_or(|e| e != "onnx") {
            self.v.err(
                &["images", "model"],
                "the image model must be an .onnx file (its manifest .toml beside it)",
            );
            return None;
        }
        if i.link == ImageLink::PartId && c.part_id.is_none() {
            self.v.err(
                &["images", "link"],
                "link = \"part_id\" needs the station's `part_id` tag; or link = \"arrival\"",
            );
            return None;
        }
        if i.poll.get() < Duration::from_millis(20) || i.wait.get() < i.poll.get() {
            self.v.err(
                &["images", "wait"],
                "poll must be at least 20ms and wait at least one poll",
            );
            return None;
        }
        if i.keep_days == 0 {
            self.v.err(
                &["images", "keep_days"],
                "keep_days must be at least 1 (the folder must not fill the disk)",
            );
            return None;
        }
        let dir = self.context.config_dir;
        Some(Images {
            folder: dir.join(&i.folder),
            model: dir.join(&i.model),
            link: i.link,
            wait: i.wait.get(),
            poll: i.poll.get(),
            keep: Duration::from_secs(u64::from(i.keep_days) * 86_400),
        })
    }

    fn divert(&mut self, d: &DivertConfig) -> Option<Divert> {
        let Some(output) = self.context.outputs.iter().position(|o| o.name == d.output) else {
            let names: Vec<&str> = self
                .context
                .outputs
                .iter()
                .map(|o| o.name.as_str())
                .collect();
            self.v.err(
                &["divert", "output"],
                format!(
                    "no [[outputs]] entry named {:?} (outputs: {})",
                    d.output,
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                ),
            );
            return None;
        };
        if self.context.indicated.contains(&output) {
            self.v.err(&["divert", "output"], format!("output {:?} also shows alerts ([[indications]]); a divert output must serve the station alone", d.output));
            return None;
        }
        if d.pulse.get().is_zero() {
            self.v
                .err(&["divert", "pulse"], "pulse must be more than zero");
            return None;
        }
        Some(Divert {
            output,
            pulse: d.pulse.get(),
            review: d.review,
        })
    }

    fn alerts(&mut self, a: &QualityAlertsConfig) -> Option<QualityAlerts> {
        if a.cpk_below.is_some_and(|x| !(x.is_finite() && x > 0.0)) {
            self.v.err(
                &["alerts", "cpk_below"],
                "cpk_below must be a positive number",
            );
            return None;
        }
        if a.reject_rate_above
            .is_some_and(|x| !(x.is_finite() && x > 0.0 && x < 1.0))
        {
            self.v.err(
                &["alerts", "reject_rate_above"],
                "reject_rate_above must be a fraction between 0 and 1",
            );
            return None;
        }
        Some(QualityAlerts {
            run_rules: a.run_rules,
            cpk_below: a.cpk_below,
            reject_rate_above: a.reject_rate_above,
            min_parts: a.min_parts.max(2),
        })
    }

    fn at(&mut self, index: usize, keys: &[&str], message: impl Into<String>) {
        let mut path = vec![Seg::Key("characteristics"), Seg::Index(index)];
        path.extend(keys.iter().map(|k| Seg::Key(k)));
        self.v.err_at(&path, message);
    }

    fn characteristic(&mut self, i: usize, c: &CharacteristicConfig) -> Option<Characteristic> {
        if let Some(problem) =
            names::topic_name_error("characteristic name", &c.name, TopicUse::Level)
        {
            self.at(i, &["name"], problem);
        }
        let tag = self.v.tag_at(
            &[Seg::Key("characteristics"), Seg::Index(i), Seg::Key("tag")],
            &c.tag,
            Need::Number,
        );
        let target = self.spec(i, c);
        let chart = self.chart(i, c);
        let limits = match c.limits {
            Some(l) if !(l.center.is_finite() && l.sigma.is_finite() && l.sigma > 0.0) => {
                self.at(
                    i,
                    &["limits"],
                    "limits need a finite center and a sigma above 0",
                );
                return None;
            }
            Some(l) => Some(ControlLimits {
                center: l.center,
                sigma: l.sigma,
            }),
            None => None,
        };
        if limits.is_none() && c.baseline < 2 {
            self.at(
                i,
                &["baseline"],
                "baseline must be at least 2 subgroups (20 to 25 is usual)",
            );
        }
        let rules = self.rules(i, c, chart?);
        Some(Characteristic {
            name: c.name.clone(),
            tag: tag?,
            unit: c.unit.clone(),
            target: target?,
            lsl: c.lsl,
            usl: c.usl,
            chart: chart?,
            limits,
            baseline: c.baseline,
            rules: rules?,
        })
    }

    /// The target (`Some(None)` for a characteristic without spec limits).
    fn spec(&mut self, i: usize, c: &CharacteristicConfig) -> Option<Option<f64>> {
        let finite = |x: Option<f64>| x.is_none_or(f64::is_finite);
        if !(finite(c.lsl) && finite(c.usl) && finite(c.target)) {
            self.at(i, &["name"], "lsl, usl and target must be finite numbers");
            return None;
        }
        if let (Some(lsl), Some(usl)) = (c.lsl, c.usl) {
            if lsl >= usl {
                self.at(
                    i,
                    &["lsl"],
                    format!("lsl ({lsl}) must be below usl ({usl})"),
                );
                return None;
            }
        }
        let target = match (c.target, c.lsl, c.usl) {
            (Some(t), _, _) => Some(t),
            (None, Some(lsl), Some(usl)) => Some((lsl + usl) / 2.0),
            (None, None, None) => None,
            (None, _, _) => {
                self.at(i, &["name"], "a one-sided spec needs a `target` (the score is the distance from it towards the limit)");
                return None;
            }
        };
        if let Some(t) = target {
            if c.lsl.is_some_and(|l| t <= l) || c.usl.is_some_and(|u| t >= u) {
                self.at(
                    i,
                    &["target"],
                    format!("target {t} must lie inside the spec limits"),
                );
                return None;
            }
        }
        Some(target)
    }

    fn chart(&mut self, i: usize, c: &CharacteristicConfig) -> Option<Chart> {
        fn extra(given: &[(&'static str, bool)]) -> Vec<&'static str> {
            given
                .iter()
                .filter(|(_, set)| *set)
                .map(|(key, _)| *key)
                .collect()
        }
        let (chart, misplaced) = match c.chart {
            ChartKind::Imr => (
                Some(Chart::Imr),
                extra(&[
                    ("subgroup", c.subgroup.is_some()),
                    ("lambda", c.lambda.is_some()),
                    ("l", c.l.is_some()),
                    ("k", c.k.is_some()),
                    ("h", c.h.is_some()),
                ]),
            ),
            ChartKind::XbarR | ChartKind::XbarS => {
                let n = c.subgroup.unwrap_or(0);
                let chart = if !(2..=MAX_SUBGROUP).contains(&n) {
                    self.at(i, &["subgroup"], format!("an {} chart needs `subgroup` between 2 and {MAX_SUBGROUP} (parts per subgroup); got {}", if c.chart == ChartKind::XbarR { "X̄-R" } else { "X̄-S" }, c.subgroup.map_or("none".into(), |n| n.to_string())));
                    None
                } else if c.chart == ChartKind::XbarR {
                    Some(Chart::XbarR { n })
                } else {
                    Some(Chart::XbarS { n })
                };
                (
                    chart,
                    extra(&[
                        ("lambda", c.lambda.is_some()),
                        ("l", c.l.is_some()),
                        ("k", c.k.is_some()),
                        ("h", c.h.is_some()),
                    ]),
                )
            }
            ChartKind::Ewma => {
                let (lambda, l) = (c.lambda.unwrap_or(0.2), c.l.unwrap_or(3.0));
                let chart = if !(lambda.is_finite() && lambda > 0.0 && lambda <= 1.0) {
                    self.at(i, &["lambda"], "lambda must be above 0 and at most 1");
                    None
                } else if !(l.is_finite() && l > 0.0) {
                    self.at(i, &["l"], "l (the limit width in σ) must be above 0");
                    None
                } else {
                    Some(Chart::Ewma { lambda, l })
                };
                (
                    chart,
                    extra(&[
                        ("subgroup", c.subgroup.is_some()),
                        ("k", c.k.is_some()),
                        ("h", c.h.is_some()),
                    ]),
                )
            }
            ChartKind::Cusum => {
                let (k, h) = (c.k.unwrap_or(0.5), c.h.unwrap_or(5.0));
                let chart = if !(k.is_finite() && k >= 0.0) {
                    self.at(i, &["k"], "k (the allowance in σ) must be 0 or more");
                    None
                } else if !(h.is_finite() && h > 0.0) {
                    self.at(i, &["h"], "h (the decision interval in σ) must be above 0");
                    None
                } else {
                    Some(Chart::Cusum { k, h })
                };
                (
                    chart,
                    extra(&[
                        ("subgroup", c.subgroup.is_some()),
                        ("lambda", c.lambda.is_some()),
                        ("l", c.l.is_some()),
                    ]),
                )
            }
        };
        if let Some(key) = misplaced.first() {
            self.at(
                i,
                &[key],
                format!("`{key}` does not apply to a {:?} chart", c.chart),
            );
            return None;
        }
        chart
    }

    fn rules(&mut self, i: usize, c: &CharacteristicConfig, chart: Chart) -> Option<Vec<Rule>> {
        let Some(rules) = &c.rules else {
            return Some(if chart.takes_rules() {
                Rule::WESTERN_ELECTRIC.to_vec()
            } else {
                Vec::new()
            });
        };
        if !chart.takes_rules() {
            self.at(i, &["rules"], format!("run rules apply to I-MR, X̄-R and X̄-S charts; an {} chart signals by its own limits", chart.name()));
            return None;
        }
        let mut out = Vec::new();
        let families: [Family<'_>; 2] = [
            (
                "western_electric",
                rules.western_electric.as_ref(),
                4,
                Rule::WesternElectric,
            ),
            ("nelson", rules.nelson.as_ref(), 8, Rule::Nelson),
        ];
        for (key, numbers, highest, rule) in families {
            for &n in numbers.into_iter().flatten() {
                if n == 0 || n > highest {
                    self.at(
                        i,
                        &["rules", key],
                        format!(
                            "there is no {} rule {n} (1 to {highest})",
                            rule(1).label().trim_end_matches(" 1")
                        ),
                    );
                    return None;
                }
                if !out.contains(&rule(n)) {
                    out.push(rule(n));
                }
            }
        }
        Some(out)
    }
}

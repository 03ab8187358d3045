//! The summaries stage: what the agent tells the plant, as typed [`Report`]s appended to the
//! outbox: per-device tag summaries over each summary interval, per-asset assessments, and the
//! agent's events (device up/down, start/stop, configuration, outbox drops).
//!
//! Summaries are fixed-size per tag (count, min, max, sum, last, worst quality), so memory does not
//! grow with the interval or the uptime. Building a record is a pure function; only [`run`] does
//! I/O (appending to the outbox).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use firmware_config::Plan;
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::bus::{Subscriber, DRAIN_EVERY};
use crate::clock::Clock;
use crate::health::assess::Assessment;
use crate::records::{Event, Last, Report, TagStats, TagSummary};
use crate::sample::{Quality, Sample, Value};
use crate::sources::DeviceStats;
use crate::store::{Appended, NewRecord, Outbox};

/// How bad a quality is, for "worst quality over the interval".
#[inline(always)]
fn badness(quality: Quality) -> u8 {
    match quality {
        Quality::Good => 0,
        Quality::Uncertain(_) => 1,
        Quality::Stale => 2,
        Quality::Exception(_) | Quality::Bad(_) => 3,
        Quality::Malformed => 4,
        Quality::Timeout => 5,
        Quality::Transport => 6,
    }
}

/// One tag over one interval.
#[derive(Debug, Clone, Default)]
struct TagWindow {
    count: u32,
    numeric: u32,
    min: f64,
    max: f64,
    sum: f64,
    last: Option<Value>,
    bad: u32,
    worst: Option<Quality>,
}

impl TagWindow {
    fn observe(&mut self, sample: &Sample) {
        self.count += 1;
        if self
            .worst
            .is_none_or(|w| badness(sample.quality) > badness(w))
        {
            self.worst = Some(sample.quality);
        }
        if !sample.quality.is_good() {
            self.bad += 1;
            return;
        }
        if let Some(value) = &sample.value {
            if let Some(x) = value.as_f64().filter(|x| x.is_finite()) {
                // Plain comparisons: `x` is finite, and `f64::min` is a call to the C library's
                // `fmin` on x86_64 at the release build's size optimisation.
                if self.numeric == 0 || x < self.min {
                    self.min = x;
                }
                if self.numeric == 0 || x > self.max {
                    self.max = x;
                }
                self.numeric += 1;
                self.sum += x;
            }
            self.last = Some(value.clone());
        }
    }

    fn stats(&self, name: &Arc<str>, unit: Option<&Arc<str>>) -> TagStats {
        let numeric = self.numeric > 0;
        TagStats {
            name: Arc::clone(name),
            unit: unit.cloned(),
            count: self.count,
            bad: self.bad,
            worst: self.worst,
            last: self.last.as_ref().map(Last::of),
            min: numeric.then_some(self.min),
            max: numeric.then_some(self.max),
            mean: numeric.then(|| self.sum / f64::from(self.numeric)),
        }
    }
}

/// A device's tags as a contiguous range of tag ids.
#[derive(Debug, Clone)]
struct DeviceTags {
    name: String,
    first: usize,
    /// Sorted by name, each with its offset in the range: summaries come out in the order the
    /// wire wants them, without sorting each round.
    tags: Vec<(usize, Arc<str>, Option<Arc<str>>)>,
}

/// Running tag summaries of every device of a plan.
#[derive(Debug)]
pub struct TagSummaries {
    devices: Vec<DeviceTags>,
    windows: Vec<TagWindow>,
    since: SystemTime,
}

impl TagSummaries {
    pub fn new(plan: &Plan, since: SystemTime) -> TagSummaries {
        let mut first = 0;
        let devices = plan
            .sources()
            .iter()
            .map(|source| {
                let mut tags: Vec<(usize, Arc<str>, Option<Arc<str>>)> = source
                    .tags
                    .iter()
                    .enumerate()
                    .map(|(offset, (name, unit))| (offset, Arc::from(*name), unit.map(Arc::from)))
                    .collect();
                tags.sort_by(|a, b| a.1.cmp(&b.1));
                let device = DeviceTags {
                    name: source.source.to_string(),
                    first,
                    tags,
                };
                first += source.tags.len();
                device
            })
            .collect();
        TagSummaries {
            devices,
            windows: vec![TagWindow::default(); first],
            since,
        }
    }

    pub fn observe(&mut self, sample: &Sample) {
        if let Some(window) = self.windows.get_mut(sample.tag.0 as usize) {
            window.observe(sample);
        }
    }

    /// One summary per device for the interval that ends `now`, and a fresh interval.
    pub fn take(&mut self, online: &[Option<bool>], now: SystemTime) -> Vec<Report> {
        let mut reports = Vec::with_capacity(self.devices.len());
        for (index, device) in self.devices.iter().enumerate() {
            let windows = &mut self.windows[device.first..device.first + device.tags.len()];
            let tags = device
                .tags
                .iter()
                .map(|(offset, name, unit)| {
                    let window = std::mem::take(&mut windows[*offset]);
                    window.stats(name, unit.as_ref())
                })
                .collect();
            reports.push(Report::TagSummary(TagSummary {
                device: device.name.clone(),
                online: online.get(index).copied().flatten(),
                from: self.since,
                to: now,
                tags,
            }));
        }
        self.since = now;
        reports
    }
}

/// An event record.
pub fn event(name: &str, detail: serde_json::Value, now: SystemTime) -> NewRecord {
    NewRecord::report(Report::Event(Event::new(name, detail)), now)
}

/// Appends a record, reporting (not failing on) a full or broken store.
pub fn append(outbox: &Outbox, record: NewRecord) {
    let kind: std::borrow::Cow<'static, str> = match &record.payload {
        crate::store::Payload::Report(report) => report.kind().into(),
        crate::store::Payload::Raw { kind, .. } => kind.clone().into(),
    };
    let (class, at) = (record.class, record.created);
    match outbox.append(record) {
        Ok(Appended::Stored { .. }) => {}
        Ok(Appended::Dropped) => {
            if let Some(unlogged) = outbox.complain(at) {
                warn!(class = class.name(), %kind, unlogged, "outbox full: record dropped (counted)")
            }
        }
        Err(error) => {
            if let Some(unlogged) = outbox.complain(at) {
                warn!(%error, %kind, unlogged, "outbox append failed (counted; acquisition goes on)")
            }
        }
    }
}

/// Everything [`run`] reads from.
pub struct Sources {
    pub samples: Subscriber,
    pub assessments: broadcast::Receiver<Assessment>,
    pub devices: Vec<(String, Arc<DeviceStats>)>,
}

/// What [`run`] takes from the plan: not the plan itself, whose copy would hold every tag's
/// configuration a second time (a megabyte at 10,000 tags, in 20,000 small allocations).
pub struct Settings {
    pub every: Duration,
    /// Tag summaries are UNS's: a Sparkplug-only node reports changes instead (`changes`).
    pub summarize: bool,
    pub summaries: TagSummaries,
}

impl Settings {
    pub fn new(plan: &Plan, since: SystemTime) -> Settings {
        Settings {
            every: plan.outbox.summary_interval,
            summarize: plan.mqtt.as_ref().is_none_or(|mqtt| mqtt.formats.uns),
            summaries: TagSummaries::new(plan, since),
        }
    }
}

/// Turns samples, assessments and device state into outbox records until `stop`.
pub async fn run(
    settings: Settings,
    outbox: Arc<Outbox>,
    mut sources: Sources,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    let Settings {
        every,
        summarize,
        mut summaries,
    } = settings;
    // On the grid, so that summary rounds share the polls' wakes.
    let mut summary_tick = crate::clock::ticker(every);
    // The first summary covers a whole interval.
    summary_tick.tick().await;
    // Device state is sampled each second: a flap shorter than that shows in the reconnect count.
    let mut state_tick = crate::clock::ticker(Duration::from_secs(1));
    let mut drain_tick = crate::clock::ticker(DRAIN_EVERY);
    let mut online: Vec<Option<bool>> = vec![None; sources.devices.len()];
    let mut reported_drops = outbox.dropped();
    // No assets: the scorer never runs and the channel closes at once.
    let mut assessing = true;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = drain_tick.tick() => {
                let open = if summarize {
                    sources.samples.drain(|sample| summaries.observe(sample))
                } else {
                    sources.samples.drain(|_| {})
                };
                if !open {
                    break;
                }
            }
            assessment = sources.assessments.recv(), if assessing => match assessment {
                Ok(assessment) => {
                    append(&outbox, NewRecord::report(Report::Assessment(assessment), clock.now()));
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(missed, "assessments missed by the outbox feed");
                }
                Err(broadcast::error::RecvError::Closed) => assessing = false,
            },
            _ = state_tick.tick() => {
                let now = clock.now();
                for ((name, stats), known) in sources.devices.iter().zip(online.iter_mut()) {
                    let is_online = stats.online.load(Ordering::Relaxed);
                    if *known == Some(is_online) {
                        continue;
                    }
                    // Before its first poll a device counts as offline: wait for an attempt.
                    if known.is_none() && !is_online && stats.requests.load(Ordering::Relaxed) == 0 {
                        continue;
                    }
                    // An offline device is news at once; an online one only as a change.
                    if known.is_some() || !is_online {
                        let name_of = if is_online { "device_up" } else { "device_down" };
                        append(&outbox, event(name_of, json!({ "device": name }), now));
                    }
                    *known = Some(is_online);
                }
            }
            _ = summary_tick.tick() => {
                // Up to the tick: samples polled before it belong to this summary.
                sources.samples.drain(|sample| summaries.observe(sample));
                let now = clock.now();
                if summarize {
                    let flags: Vec<Option<bool>> = online.iter().map(|o| Some(o.unwrap_or(false))).collect();
                    for report in summaries.take(&flags, now) {
                        append(&outbox, NewRecord::report(report, now));
                    }
                }
                if outbox.dropped() > reported_drops {
                    let stats = outbox.stats();
                    let detail = json!({
                        "dropped_since_last_report": stats.dropped() - reported_drops,
                        "dropped": {
                            "alert": stats.alert.dropped,
                            "event": stats.event.dropped,
                            "summary": stats.summary.dropped,
                        },
                        "bytes": stats.bytes,
                        "max_bytes": stats.max_bytes,
                    });
                    reported_drops = stats.dropped();
                    append(&outbox, event("outbox_dropped", detail, now));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::TagId;
    use crate::uplink::encode::uns;
    use crate::uplink::Topics;

    /// The `data` users receive for a report.
    fn data(report: &Report) -> serde_json::Value {
        serde_json::from_str(&uns::data(report)).expect("json")
    }

    fn plan() -> Plan {
        firmware_config::load_str(
            std::path::Path::new("t.toml"),
            r#"
[[devices]]
name = "plc"
host = "127.0.0.1"
addressing = "zero_based"
[[devices.tags]]
name = "speed"
address = 0
table = "holding_register"
type = "f32"
unit = "rpm"
[[devices.tags]]
name = "state"
address = 2
table = "holding_register"
type = "u16"
[[devices]]
name = "meter"
host = "127.0.0.1"
addressing = "zero_based"
[[devices.tags]]
name = "kwh"
address = 0
table = "holding_register"
type = "u32"
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn sample(tag: u32, value: Option<Value>, quality: Quality) -> Sample {
        Sample {
            tag: TagId(tag),
            server_timestamp: None,
            timestamp: SystemTime::UNIX_EPOCH,
            value,
            quality,
        }
    }

    #[test]
    fn summaries_give_min_max_mean_last_count_and_worst_quality_per_device() {
        let topics = Topics::new("e/s/a/l", "gw");
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut summaries = TagSummaries::new(&plan(), start);
        for x in [3.0, 1.0, 5.0] {
            summaries.observe(&sample(0, Some(Value::F64(x)), Quality::Good));
        }
        summaries.observe(&sample(0, None, Quality::Timeout));
        summaries.observe(&sample(1, None, Quality::Exception(2)));
        summaries.observe(&sample(2, Some(Value::U64(42)), Quality::Good));
        summaries.observe(&sample(99, Some(Value::U64(1)), Quality::Good));
        let end = start + Duration::from_secs(60);
        let records = summaries.take(&[Some(true), Some(false)], end);
        assert_eq!(records.len(), 2);
        assert_eq!(topics.of(&records[0]), "e/s/a/l/plc/tags");
        assert_eq!(records[0].class(), crate::store::Class::Summary);
        let plc = data(&records[0]);
        let speed = &plc["tags"]["speed"];
        assert_eq!(speed["count"], 4);
        assert_eq!(speed["bad"], 1);
        assert_eq!(speed["min"], 1.0);
        assert_eq!(speed["max"], 5.0);
        assert_eq!(speed["mean"], 3.0);
        assert_eq!(speed["last"], 5.0);
        assert_eq!(speed["quality"], "timeout");
        assert_eq!(speed["unit"], "rpm");
        let state = &plc["tags"]["state"];
        assert_eq!(state["quality"], "exception");
        assert_eq!(state["exception_code"], 2);
        assert_eq!(state["mean"], serde_json::Value::Null);
        assert_eq!(plc["online"], true);
        assert_eq!(plc["from"], "2023-11-14T22:13:20.000Z");
        assert_eq!(plc["to"], "2023-11-14T22:14:20.000Z");
        let meter = data(&records[1]);
        assert_eq!(meter["tags"]["kwh"]["last"], 42);
        assert_eq!(meter["online"], false);

        // The next interval starts empty.
        let next = summaries.take(&[Some(true), Some(true)], end + Duration::from_secs(60));
        let plc = data(&next[0]);
        assert_eq!(plc["tags"]["speed"]["count"], 0);
        assert_eq!(plc["tags"]["speed"]["quality"], "none");
        assert_eq!(plc["from"], "2023-11-14T22:14:20.000Z");
    }

    #[test]
    fn opc_ua_statuses_times_and_arrays_in_summaries() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut summaries = TagSummaries::new(&plan(), start);
        let unknown = 0x8034_0000;
        summaries.observe(&sample(0, None, Quality::Bad(unknown)));
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        summaries.observe(&sample(1, Some(Value::Time(time)), Quality::Good));
        let short: Vec<Value> = (0..3).map(|i| Value::F64(f64::from(i))).collect();
        summaries.observe(&sample(2, Some(Value::Array(short.into())), Quality::Good));
        let records = summaries.take(&[Some(true), Some(true)], start + Duration::from_secs(60));
        let plc = data(&records[0]);
        assert_eq!(plc["tags"]["speed"]["quality"], "bad");
        assert_eq!(plc["tags"]["speed"]["status_code"], unknown);
        assert_eq!(plc["tags"]["speed"]["status"], "BadNodeIdUnknown");
        assert_eq!(plc["tags"]["state"]["last"], "2023-11-14T22:13:20.250Z");
        let meter = data(&records[1]);
        assert_eq!(meter["tags"]["kwh"]["last"], json!([0.0, 1.0, 2.0]));

        let waveform: Vec<Value> = (0..4096).map(|i| Value::F64(f64::from(i))).collect();
        summaries.observe(&sample(
            2,
            Some(Value::Array(waveform.into())),
            Quality::Good,
        ));
        let records = summaries.take(&[Some(true), Some(true)], start + Duration::from_secs(120));
        let meter = data(&records[1]);
        assert_eq!(meter["tags"]["kwh"]["last"], json!({"array_length": 4096}));
        assert!(
            uns::data(&records[1]).len() < 1024,
            "a waveform is not copied into the summary"
        );
    }

    #[test]
    fn events_carry_their_name_and_detail() {
        let topics = Topics::new("e/s/a/l", "gw");
        let record = event(
            "device_down",
            json!({"device": "plc"}),
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(record.class, crate::store::Class::Event);
        let crate::store::Payload::Report(report) = &record.payload else {
            panic!("typed")
        };
        assert_eq!(topics.of(report), "e/s/a/l/gw/events");
        assert_eq!(
            data(report),
            json!({"event": "device_down", "device": "plc"})
        );
    }
}

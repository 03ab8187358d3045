//! Report by exception, for Sparkplug B: each device's tags that moved beyond their deadband (or
//! whose quality changed) since they were last reported, batched into one
//! [`Report::Changes`](crate::records::Report::Changes) per device and `data_interval` at most.
//!
//! Invariants:
//! - a change is measured against the value last *reported*, not the last sample, so a slow drift
//!   is reported once it adds up to the deadband;
//! - a sample of another quality is always a change (bad and stale values are marked, not
//!   dropped); text, time and array values change on any difference;
//! - a device that is down reports nothing (its DDEATH says it); what changed meanwhile is
//!   reported once it is back, compared with what was reported before;
//! - every sample updates the latest values births carry ([`LiveTags`]);
//! - a waveform (an array longer than [`SUMMARY_ARRAY_LIMIT`]) is neither reported nor carried
//!   by births: it stays on the gateway, where it is analysed; its asset's vibration figures go
//!   up instead (hundreds of kilobytes a waveform would wear the outbox's flash and the link).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::bus::Subscriber;
use crate::clock::Clock;
use crate::records::{Change, DeviceChanges, Report, SUMMARY_ARRAY_LIMIT};
use crate::sample::{Quality, Sample, Value};
use crate::sources::DeviceStats;
use crate::store::{NewRecord, Outbox};
use crate::uplink::encode::sparkplug::{Current, LiveTags};

#[derive(Debug)]
struct TagState {
    source: usize,
    name: Arc<str>,
    deadband: f64,
    reported: Option<(Option<Value>, Quality)>,
    pending: Option<Change>,
}

/// The pure core: samples in, per-device changes out.
#[derive(Debug)]
pub struct Changes {
    tags: Vec<TagState>,
    /// Source names, in `TagId` order of their tags (Modbus devices, then OPC UA endpoints).
    sources: Vec<String>,
    /// Per source: tags with a pending change, in the order they changed.
    dirty: Vec<Vec<u32>>,
}

impl Changes {
    pub fn new(plan: &firmware_config::Plan, node: &firmware_config::Sparkplug) -> Changes {
        let mut tags = Vec::with_capacity(plan.tag_count());
        let mut sources = Vec::new();
        for source in plan.sources() {
            for (name, _unit) in &source.tags {
                tags.push(TagState {
                    source: sources.len(),
                    name: Arc::from(*name),
                    deadband: node.deadband(name),
                    reported: None,
                    pending: None,
                });
            }
            sources.push(source.source.to_string());
        }
        Changes {
            dirty: vec![Vec::new(); sources.len()],
            tags,
            sources,
        }
    }

    /// Takes one sample: pending when it differs from what was last reported.
    pub fn sample(&mut self, sample: &Sample) {
        if is_waveform(sample) {
            return;
        }
        let Some(tag) = self.tags.get_mut(sample.tag.0 as usize) else {
            return;
        };
        let differs = match &tag.reported {
            None => true,
            Some((value, quality)) => {
                *quality != sample.quality
                    || beyond(value.as_ref(), sample.value.as_ref(), tag.deadband)
            }
        };
        if !differs {
            tag.pending = None;
            return;
        }
        if tag.pending.is_none() {
            self.dirty[tag.source].push(sample.tag.0);
        }
        tag.pending = Some(Change {
            tag: Arc::clone(&tag.name),
            at: sample.timestamp,
            value: sample.value.clone(),
            quality: sample.quality,
        });
    }

    /// The pending changes of every source `up` says is up, one record each.
    pub fn due(&mut self, up: impl Fn(usize) -> bool) -> Vec<DeviceChanges> {
        let mut out = Vec::new();
        for source in 0..self.sources.len() {
            if self.dirty[source].is_empty() || !up(source) {
                continue;
            }
            let ids = std::mem::take(&mut self.dirty[source]);
            let changes: Vec<Change> = ids
                .into_iter()
                .filter_map(|id| {
                    let tag = &mut self.tags[id as usize];
                    let change = tag.pending.take()?;
                    tag.reported = Some((change.value.clone(), change.quality));
                    Some(change)
                })
                .collect();
            if !changes.is_empty() {
                out.push(DeviceChanges {
                    device: self.sources[source].clone(),
                    changes,
                });
            }
        }
        out
    }

    /// The source names, in order.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }
}

/// Whether `new` is more than `deadband` away from `old` (numbers), or different at all.
fn beyond(old: Option<&Value>, new: Option<&Value>, deadband: f64) -> bool {
    match (old, new) {
        (Some(Value::Bool(a)), Some(Value::Bool(b))) => a != b,
        (Some(a), Some(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() > deadband || (a.is_nan() != b.is_nan()),
            _ => a != b,
        },
        (None, None) => false,
        _ => true,
    }
}

/// What the loop needs.
pub struct ChangesParts {
    pub samples: Subscriber,
    pub live: Arc<LiveTags>,
    pub sources: Vec<(String, Arc<DeviceStats>)>,
    pub outbox: Arc<Outbox>,
    pub interval: Duration,
}

/// Runs the stage until `stop`.
pub async fn run(
    mut core: Changes,
    mut parts: ChangesParts,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    let stats: Vec<Option<Arc<DeviceStats>>> = core
        .sources()
        .iter()
        .map(|name| {
            parts
                .sources
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| Arc::clone(s))
        })
        .collect();
    let up = |source: usize| {
        stats[source]
            .as_ref()
            .is_none_or(|s| s.online.load(std::sync::atomic::Ordering::Relaxed))
    };
    let mut tick = crate::clock::ticker(parts.interval);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            batch = parts.samples.recv_batch() => {
                let Some(batch) = batch else { return };
                for sample in batch.iter() {
                    core.sample(sample);
                }
                let kept = batch.iter().filter(|s| !is_waveform(s));
                parts.live.update(kept.map(|s| (s.tag, current(s))));
            }
            _ = tick.tick() => {
                let now: SystemTime = clock.now();
                for changes in core.due(up) {
                    let record = NewRecord::report(Report::Changes(Box::new(changes)), now);
                    crate::reports::append(&parts.outbox, record);
                }
            }
        }
    }
}

/// An array too long to report by exception.
fn is_waveform(sample: &Sample) -> bool {
    matches!(&sample.value, Some(Value::Array(items)) if items.len() > SUMMARY_ARRAY_LIMIT)
}

fn current(sample: &Sample) -> Current {
    Current {
        value: sample.value.clone(),
        quality: sample.quality,
        at: sample.timestamp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::TagId;

    fn sample(tag: u32, value: f64, quality: Quality) -> Sample {
        Sample {
            tag: TagId(tag),
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(tag)),
            server_timestamp: None,
            value: Some(Value::F64(value)),
            quality,
        }
    }

    fn core(deadband: f64) -> Changes {
        Changes {
            tags: (0..3)
                .map(|i| TagState {
                    source: usize::from(i >= 2),
                    name: Arc::from(format!("t{i}")),
                    deadband,
                    reported: None,
                    pending: None,
                })
                .collect(),
            sources: vec!["plc".into(), "meter".into()],
            dirty: vec![Vec::new(), Vec::new()],
        }
    }

    fn names(changes: &[DeviceChanges]) -> Vec<(String, Vec<String>)> {
        changes
            .iter()
            .map(|d| {
                (
                    d.device.clone(),
                    d.changes.iter().map(|c| c.tag.to_string()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn only_moves_beyond_the_deadband_since_the_last_report_are_reported() {
        let mut core = core(0.5);
        core.sample(&sample(0, 10.0, Quality::Good));
        core.sample(&sample(2, 1.0, Quality::Good));
        let first = core.due(|_| true);
        assert_eq!(
            names(&first),
            [
                ("plc".to_string(), vec!["t0".to_string()]),
                ("meter".to_string(), vec!["t2".to_string()])
            ]
        );
        assert!(core.due(|_| true).is_empty(), "nothing new");
        // Three small steps: the third adds up past the deadband.
        for v in [10.2, 10.4] {
            core.sample(&sample(0, v, Quality::Good));
            assert!(core.due(|_| true).is_empty(), "{v} is within 0.5 of 10");
        }
        core.sample(&sample(0, 10.6, Quality::Good));
        let moved = core.due(|_| true);
        assert_eq!(moved[0].changes[0].value, Some(Value::F64(10.6)));
        // A change that comes back within the deadband before the interval ends is not sent.
        core.sample(&sample(0, 20.0, Quality::Good));
        core.sample(&sample(0, 10.7, Quality::Good));
        assert!(core.due(|_| true).is_empty());
    }

    #[test]
    fn a_new_quality_is_a_change_and_a_device_that_is_down_waits() {
        let mut core = core(100.0);
        core.sample(&sample(0, 1.0, Quality::Good));
        core.sample(&sample(1, 1.0, Quality::Good));
        core.due(|_| true);
        core.sample(&sample(0, 1.0, Quality::Timeout));
        assert!(core.due(|source| source != 0).is_empty(), "plc is down");
        core.sample(&sample(1, 2.0, Quality::Stale));
        let back = core.due(|_| true);
        assert_eq!(
            names(&back),
            [("plc".to_string(), vec!["t0".to_string(), "t1".to_string()])],
            "batched per device in the order they changed"
        );
        assert_eq!(back[0].changes[1].quality, Quality::Stale);
        // Back to good with the same value: the quality alone is reported.
        core.sample(&sample(0, 1.0, Quality::Good));
        assert_eq!(core.due(|_| true)[0].changes[0].quality, Quality::Good);
    }

    #[test]
    fn a_waveform_is_not_reported_but_a_short_array_is() {
        let mut core = core(0.0);
        let array = |n: usize| {
            let mut s = sample(0, 0.0, Quality::Good);
            s.value = Some(Value::Array(vec![Value::F64(1.0); n].into()));
            s
        };
        core.sample(&array(SUMMARY_ARRAY_LIMIT + 1));
        assert!(core.due(|_| true).is_empty(), "a waveform stays here");
        core.sample(&array(3));
        assert_eq!(core.due(|_| true)[0].changes.len(), 1);
    }

    #[test]
    fn text_and_missing_values_change_on_any_difference() {
        let text = |s: &str| Value::Text(s.into());
        assert!(beyond(Some(&text("a")), Some(&text("b")), 1e9));
        assert!(!beyond(Some(&text("a")), Some(&text("a")), 0.0));
        assert!(beyond(Some(&Value::F64(1.0)), None, 1e9));
        assert!(!beyond(None, None, 0.0));
        assert!(beyond(
            Some(&Value::Bool(true)),
            Some(&Value::Bool(false)),
            1e9
        ));
        assert!(!beyond(Some(&Value::I64(3)), Some(&Value::U64(3)), 0.0));
    }
}

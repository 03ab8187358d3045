//! Waveforms captured from a Linux IIO buffered device (an SPI accelerometer wired to the gateway),
//! through the kernel's buffer ABI (`Documentation/ABI/testing/sysfs-bus-iio`): the channel
//! enabled alone in `scan_elements`, the buffer filled at the device's `sampling_frequency`,
//! `max_samples` scans read from `/dev/iio:deviceN`, each sample turned into the kernel's unit by
//! the channel's `scale` and `offset`.
//!
//! Invariants: a capture never leaves the buffer enabled (a failed one disables it too); a capture
//! waits at most its samples' duration at the device's rate plus a grace; what a capture gives
//! reaches the scorer as a [`Recorded`] like a dropped-in recording, with the rate the device
//! reported, so its analysis and its rejection take one path.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use firmware_config::IioSource;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::vibration::{Recorded, Recording};

/// Where the kernel lists IIO devices.
pub const SYSFS: &str = "/sys/bus/iio/devices";

/// Longest kernel buffer asked for, in scans: the capture drains it as it fills.
const MAX_KERNEL_BUFFER: usize = 1 << 16;

/// One asset's IIO channel and how to capture it.
#[derive(Debug, Clone)]
pub struct IioCapture {
    pub asset: usize,
    pub source: IioSource,
    pub samples: usize,
    /// The configured rate, asked of the device when it differs.
    pub sample_rate: f64,
    /// Where devices are listed ([`SYSFS`]).
    pub sysfs: PathBuf,
    /// Time allowed beyond the capture's own duration.
    pub grace: Duration,
}

/// How one channel's sample is stored in a scan: `[be|le]:[s|u]bits/storagebits[Xrepeat]>>shift`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanType {
    pub big_endian: bool,
    pub signed: bool,
    pub bits: u32,
    pub storage_bits: u32,
    pub repeat: u32,
    pub shift: u32,
}

impl ScanType {
    pub fn parse(text: &str) -> Result<ScanType, String> {
        let bad = || format!("unreadable scan type {text:?}");
        let (endian, rest) = text.trim().split_once(':').ok_or_else(bad)?;
        let (sign, rest) = rest.split_at_checked(1).ok_or_else(bad)?;
        let (sizes, shift) = rest.split_once(">>").ok_or_else(bad)?;
        let (bits, storage) = sizes.split_once('/').ok_or_else(bad)?;
        let (storage, repeat) = storage.split_once('X').unwrap_or((storage, "1"));
        let number = |s: &str| s.parse::<u32>().map_err(|_| bad());
        let kind = ScanType {
            big_endian: match endian {
                "be" => true,
                "le" => false,
                _ => return Err(bad()),
            },
            signed: match sign {
                "s" => true,
                "u" => false,
                _ => return Err(bad()),
            },
            bits: number(bits)?,
            storage_bits: number(storage)?,
            repeat: number(repeat)?,
            shift: number(shift)?,
        };
        let storage_ok = matches!(kind.storage_bits, 8 | 16 | 32 | 64);
        if !storage_ok || kind.bits == 0 || kind.bits + kind.shift > kind.storage_bits {
            return Err(bad());
        }
        if kind.repeat == 0 {
            return Err(bad());
        }
        Ok(kind)
    }

    /// Bytes the channel takes in a scan (and its alignment).
    pub fn bytes(&self) -> usize {
        (self.storage_bits / 8 * self.repeat) as usize
    }

    /// The raw value of the channel's first element at the start of `bytes`.
    pub fn raw(&self, bytes: &[u8]) -> i64 {
        let n = (self.storage_bits / 8) as usize;
        let mut word = [0u8; 8];
        let stored = &bytes[..n];
        if self.big_endian {
            word[8 - n..].copy_from_slice(stored);
        } else {
            word[..n].copy_from_slice(stored);
        }
        let word = if self.big_endian {
            u64::from_be_bytes(word)
        } else {
            u64::from_le_bytes(word)
        };
        let value = (word >> self.shift) & (u64::MAX >> (64 - self.bits));
        if self.signed && self.bits < 64 && value >> (self.bits - 1) & 1 == 1 {
            (value | (u64::MAX << self.bits)) as i64
        } else {
            value as i64
        }
    }
}

/// Where the captured channel sits in each scan, and a scan's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub offset: usize,
    pub scan_bytes: usize,
    pub kind: ScanType,
}

/// The layout of scans holding `enabled` channels (scan index, type, whether it is the one
/// captured), as the kernel lays them out: in index order, each aligned to its own size, the scan
/// padded to the largest.
pub fn layout(enabled: &mut [(u32, ScanType, bool)]) -> Option<Layout> {
    enabled.sort_by_key(|(index, _, _)| *index);
    let (mut at, mut largest, mut ours) = (0usize, 1usize, None);
    for (_, kind, captured) in enabled.iter() {
        let size = kind.bytes();
        at = at.next_multiple_of(size);
        if *captured {
            ours = Some((at, *kind));
        }
        at += size;
        largest = largest.max(size);
    }
    let (offset, kind) = ours?;
    Some(Layout {
        offset,
        scan_bytes: at.next_multiple_of(largest),
        kind,
    })
}

/// The device's sysfs directory: `wanted` is a path, `iio:deviceN`, or the `name` of one device.
pub fn find_device(sysfs: &Path, wanted: &str) -> Result<PathBuf, String> {
    if wanted.contains('/') {
        let path = PathBuf::from(wanted);
        return if path.join("scan_elements").is_dir() {
            Ok(path)
        } else {
            Err(format!(
                "{wanted} is not an IIO device with a buffer (no scan_elements)"
            ))
        };
    }
    if sysfs.join(wanted).is_dir() {
        return Ok(sysfs.join(wanted));
    }
    let entries = std::fs::read_dir(sysfs)
        .map_err(|e| format!("cannot list IIO devices in {}: {e}", sysfs.display()))?;
    let mut seen = Vec::new();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("iio:device")
        {
            continue;
        }
        let name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        let name = name.trim().to_string();
        if name == wanted {
            found.push(entry.path());
        }
        seen.push(format!("{} ({name})", entry.file_name().to_string_lossy()));
    }
    seen.sort();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "no IIO device named {wanted:?} in {} (found: {})",
            sysfs.display(),
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join(", ")
            }
        )),
        _ => Err(format!(
            "{} IIO devices are named {wanted:?}: give iio = \"iio:deviceN\"",
            found.len()
        )),
    }
}

/// One device directory's attributes.
struct Attributes<'a>(&'a Path);

impl Attributes<'_> {
    fn read(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.0.join(file))
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn number(&self, file: &str) -> Option<f64> {
        self.read(file)?
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        let path = self.0.join(file);
        std::fs::write(&path, value).map_err(|e| {
            format!(
                "cannot write {value:?} to {}: {e} (the service user needs write access to the device's buffer and scan_elements files)",
                path.display()
            )
        })
    }

    /// The channel's attribute (`in_accel_z_scale`), or the one its type shares (`in_accel_scale`,
    /// `in_voltage_scale` for `in_voltage0`).
    fn channel_number(&self, channel: &str, what: &str) -> Option<f64> {
        let shared = match channel.rsplit_once('_') {
            Some((kind, modifier)) if kind != "in" && !modifier.is_empty() => kind.to_string(),
            _ => channel
                .trim_end_matches(|c: char| c.is_ascii_digit())
                .to_string(),
        };
        self.number(&format!("{channel}_{what}"))
            .or_else(|| self.number(&format!("{shared}_{what}")))
    }

    /// Asks for `wanted` when the device runs at another rate; the rate it then reports.
    fn sample_rate(&self, wanted: f64) -> Option<f64> {
        let now = self.number("sampling_frequency");
        if now.is_some_and(|now| (now - wanted).abs() > wanted * 0.005) {
            // A driver without that rate refuses or rounds: the rate read back is used.
            let _ = self.write("sampling_frequency", &format!("{wanted}"));
        }
        self.number("sampling_frequency")
    }

    /// Sets the trigger that paces the buffer: `wanted`, else the one set already, else the
    /// device's own (a trigger whose name starts with the device's). A device without
    /// `trigger/current_trigger` fills its buffer from its own FIFO.
    fn trigger(&self, sysfs: &Path, wanted: Option<&str>) -> Result<(), String> {
        let Some(current) = self.read("trigger/current_trigger") else {
            return match wanted {
                Some(t) => Err(format!(
                    "trigger = {t:?}, but the device takes no trigger (no trigger/current_trigger)"
                )),
                None => Ok(()),
            };
        };
        let triggers = trigger_names(sysfs);
        let name = match wanted {
            Some(t) if !triggers.iter().any(|n| n == t) => {
                return Err(format!(
                    "no IIO trigger named {t:?} (triggers: {})",
                    if triggers.is_empty() {
                        "none".to_string()
                    } else {
                        triggers.join(", ")
                    }
                ))
            }
            Some(t) => t.to_string(),
            None if !current.is_empty() => return Ok(()),
            None => {
                let device = self.read("name").unwrap_or_default();
                let own = triggers
                    .into_iter()
                    .find(|n| !device.is_empty() && n.starts_with(&device));
                let Some(own) = own else { return Ok(()) };
                own
            }
        };
        if name != current {
            self.write("trigger/current_trigger", &name)?;
        }
        Ok(())
    }

    /// Enables `channel` alone; the scan layout that follows.
    fn select(&self, channel: &str) -> Result<Layout, String> {
        let elements = self.0.join("scan_elements");
        let mut names: Vec<String> = std::fs::read_dir(&elements)
            .map_err(|e| format!("cannot list {}: {e}", elements.display()))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix("_en").map(str::to_string)
            })
            .collect();
        names.sort();
        if !names.iter().any(|n| n == channel) {
            return Err(format!(
                "the IIO device has no channel {channel} (scan elements: {})",
                names.join(", ")
            ));
        }
        for name in &names {
            let on = if name == channel { "1" } else { "0" };
            self.write(&format!("scan_elements/{name}_en"), on)?;
        }
        let mut enabled = Vec::new();
        for name in &names {
            if self.read(&format!("scan_elements/{name}_en")).as_deref() != Some("1") {
                continue;
            }
            let field = |what: &str| {
                self.read(&format!("scan_elements/{name}_{what}"))
                    .ok_or_else(|| format!("scan element {name} has no {what}"))
            };
            let index = field("index")?
                .parse::<u32>()
                .map_err(|_| format!("scan element {name} has an unreadable index"))?;
            let kind = ScanType::parse(&field("type")?)?;
            enabled.push((index, kind, name == channel));
        }
        layout(&mut enabled).ok_or_else(|| format!("the device did not enable {channel}"))
    }
}

/// The names of the IIO triggers (`triggerN/name`), sorted.
fn trigger_names(sysfs: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(sysfs)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("trigger"))
                .filter_map(|e| std::fs::read_to_string(e.path().join("name")).ok())
                .map(|n| n.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Takes one capture of `c.samples` samples.
pub async fn capture(c: &IioCapture) -> Result<Recording, String> {
    let dir = find_device(&c.sysfs, &c.source.device)?;
    let device = Attributes(&dir);
    device.write("buffer/enable", "0")?;
    let rate = device.sample_rate(c.sample_rate).unwrap_or(c.sample_rate);
    let layout = device.select(&c.source.channel)?;
    device.trigger(&c.sysfs, c.source.trigger.as_deref())?;
    let scale = device
        .channel_number(&c.source.channel, "scale")
        .unwrap_or(1.0);
    let offset = device
        .channel_number(&c.source.channel, "offset")
        .unwrap_or(0.0);
    device.write(
        "buffer/length",
        &c.samples.min(MAX_KERNEL_BUFFER).to_string(),
    )?;
    let node = c
        .source
        .device_node
        .clone()
        .unwrap_or_else(|| Path::new("/dev").join(dir.file_name().unwrap_or_default()));
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&node)
        .map_err(|e| format!("cannot open {}: {e}", node.display()))?;
    device.write("buffer/enable", "1")?;
    let wanted = c.samples * layout.scan_bytes;
    let within = Duration::from_secs_f64(c.samples as f64 / rate.max(1.0)) + c.grace;
    let read = tokio::task::spawn_blocking(move || read_bytes(&file, wanted, within)).await;
    let disabled = device.write("buffer/enable", "0");
    let bytes = read
        .map_err(|e| format!("the capture failed: {e}"))?
        .map_err(|error| format!("{error} from {}", node.display()))?;
    disabled?;
    let samples = bytes
        .chunks_exact(layout.scan_bytes)
        .map(|scan| {
            let raw = layout.kind.raw(&scan[layout.offset..]);
            ((raw as f64 + offset) * scale) as f32
        })
        .collect();
    Ok(Recording {
        samples,
        sample_rate: Some(rate),
    })
}

/// Reads exactly `wanted` bytes as the device makes them available, waiting at most `within`.
fn read_bytes(
    mut file: &std::fs::File,
    wanted: usize,
    within: Duration,
) -> Result<Vec<u8>, String> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let deadline = std::time::Instant::now() + within;
    let mut bytes = vec![0u8; wanted];
    let mut filled = 0;
    while filled < wanted {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!(
                "only {filled} of {wanted} bytes arrived within {} (is the device's trigger set?)",
                humantime::format_duration(within)
            ));
        }
        let timeout = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(&file, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("cannot wait for the device: {e}")),
        }
        match file.read(&mut bytes[filled..]) {
            Ok(0) => return Err("end of file".to_string()),
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(format!("cannot read the device: {e}")),
        }
    }
    Ok(bytes)
}

/// Captures every `every` until `stop`, handing each capture (or why it failed) to the scorer.
pub async fn run(c: IioCapture, out: mpsc::Sender<Recorded>, stop: CancellationToken) {
    info!(device = %c.source.device, channel = %c.source.channel, every = %humantime::format_duration(c.source.every), "capturing waveforms from IIO");
    let mut tick = tokio::time::interval(c.source.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let file = PathBuf::from(format!("{}/{}", c.source.device, c.source.channel));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let recording = tokio::select! {
            () = stop.cancelled() => {
                // Stopped mid-capture: the buffer is not left running.
                if let Ok(dir) = find_device(&c.sysfs, &c.source.device) {
                    let _ = Attributes(&dir).write("buffer/enable", "0");
                }
                return;
            }
            taken = capture(&c) => taken,
        };
        let recorded = Recorded {
            asset: c.asset,
            file: file.clone(),
            recording,
        };
        if out.send(recorded).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;

//! Polling: one task per line. A Modbus TCP device is a line with one unit; an RS-485 bus is a line
//! whose units (unit ids) are polled in turn over one serial port.
//!
//! Invariants:
//! - Every request has a timeout; a transport fault drops the connection (its state is unknown) and
//!   puts only the unit that failed into capped, jittered backoff. While a unit waits, its tags are
//!   reported `Stale` at their due times instead of being read.
//! - A unit that times out has the rest of that poll's requests skipped, so a silent slave costs
//!   its timeout once per poll, never once per request.
//! - Lines never share a task, so a dead TCP device cannot delay another device's polls.
//! - Polls that cannot keep up are skipped, not queued, and counted as overruns.
//! - A device's state does not flap on answers it garbles: after a malformed answer a unit needs
//!   [`PROBATION_ANSWERS`] valid answers in a row to count as online again (its good samples are
//!   published meanwhile), so a device that answers one request right after each reconnect and
//!   garbles the next (a wrong transaction id, say) stays offline, logged once, with its malformed
//!   answers counted.
//! - A coalesced read refused with "illegal data address" is split into one request per tag for
//!   good (when `split_rejected_reads`), so one unmapped register does not fail its neighbours.
//! - Every poll beats the line's heartbeat, and [`Line::stall_limit`] bounds the time between two
//!   beats of a healthy line; the service watchdog relies on it (see `crate::liveness`).
//! - Writes from the agent's own stages ([`DeviceWriter`]) go over the line's one connection, after
//!   the request in progress and before the next due poll. Their outcome counts like a poll's: a
//!   transport fault drops the connection and backs the unit off; an answer brings it online.
//! - After `shutdown` a line stops polling but serves writes (the outputs' shutdown patterns) until
//!   every writer is dropped, for at most [`WRITES_AFTER_SHUTDOWN`].

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use firmware_config::Device;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::slave::{Slave, SlaveContext};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::codec;
use super::link::{self, Data, Endpoint, Fault, WireWatch};
use super::plan::{self, PollGroup, ReadRequest};
use super::write::{self, DeviceWriter, WriteJob, WriteRequest};
use crate::backoff;
use crate::bus::SampleBus;
use crate::clock::Clock;
use crate::liveness::Heartbeat;
use crate::sample::{Quality, Sample, TagId};
use crate::sources::DeviceStats;

/// What a poll saw on the wire, for commissioning tools (`millwright read`).
pub enum PollEvent<'a> {
    Read {
        device: &'a Device,
        request: &'a ReadRequest,
        outcome: &'a Result<Data, Fault>,
    },
    /// The line could not be opened for this device.
    Unreachable {
        device: &'a Device,
        fault: &'a Fault,
    },
}

pub type Observer = Box<dyn FnMut(&PollEvent<'_>) + Send>;

/// How long a stopping line waits for the last writes (outputs set their shutdown patterns, each
/// within two seconds).
pub const WRITES_AFTER_SHUTDOWN: Duration = Duration::from_secs(3);

/// Writes queued per line before a writer waits.
const WRITE_QUEUE: usize = 16;

/// Valid answers in a row a unit needs, after a malformed one, to count as online again.
pub const PROBATION_ANSWERS: u8 = 3;

struct Scheduled {
    group: PollGroup,
    next_due: Instant,
}

/// One device (unit id) on a line.
pub struct Unit {
    device: Device,
    tag_base: u32,
    groups: Vec<Scheduled>,
    stats: Arc<DeviceStats>,
    failures: u32,
    retry_at: Option<Instant>,
    ever_online: bool,
    /// Valid answers still needed before the unit counts as online again (after a malformed one).
    probation: u8,
}

impl Unit {
    /// `tag_base` is the [`TagId`] of the device's first tag.
    pub fn new(device: Device, tag_base: u32, stats: Arc<DeviceStats>) -> Self {
        // On the stages' 100 ms grid: a poll and the ticks that drain its samples wake the
        // runtime once, not twice (intervals are whole multiples of 100 ms in practice).
        let first = crate::clock::next_on_grid(crate::bus::DRAIN_EVERY);
        let groups = plan::plan_device(&device)
            .into_iter()
            .map(|group| Scheduled {
                group,
                next_due: first,
            })
            .collect();
        Unit {
            device,
            tag_base,
            groups,
            stats,
            failures: 0,
            retry_at: None,
            ever_online: false,
            probation: 0,
        }
    }

    fn fail(&mut self, fault: &Fault, rng: &mut fastrand::Rng) {
        if matches!(fault, Fault::Malformed(_)) {
            self.probation = PROBATION_ANSWERS;
        }
        self.failures += 1;
        let wait = backoff::delay(&self.device.backoff, self.failures, rng.f64());
        self.retry_at = Some(Instant::now() + wait);
        self.stats.online.store(false, Relaxed);
        if self.failures == 1 {
            warn!(device = %self.device.name, %fault, retry_in = ?wait, "device offline");
        } else {
            debug!(device = %self.device.name, %fault, attempt = self.failures, retry_in = ?wait, "device still offline");
        }
    }

    /// The device answered (data or an exception). Called before the answer's samples are
    /// published, so that whoever sees a good sample also sees the device online.
    fn answered(&mut self) {
        if self.failures == 0 && self.ever_online {
            return;
        }
        if self.probation > 0 {
            self.probation -= 1;
            if self.probation > 0 {
                // Still offline (and backing off) until the device proves itself.
                return;
            }
        }
        if self.failures > 0 && self.ever_online {
            self.stats.reconnects.fetch_add(1, Relaxed);
            info!(device = %self.device.name, failed_attempts = self.failures, "device back online");
        } else if !self.ever_online {
            info!(device = %self.device.name, "device online");
        }
        self.failures = 0;
        self.retry_at = None;
        self.ever_online = true;
        self.stats.online.store(true, Relaxed);
    }

    /// The request's samples, appended to `into` (a vector from the bus's pool).
    fn samples(
        &self,
        request: &ReadRequest,
        outcome: &Result<Data, Fault>,
        clock: &dyn Clock,
        mut into: Vec<Sample>,
    ) -> Vec<Sample> {
        let timestamp = clock.now();
        into.extend(request.tags.iter().map(|&index| {
            let tag = &self.device.tags[index];
            let offset = usize::from(tag.address - request.start);
            let decoded = match outcome {
                Ok(Data::Registers(words)) => {
                    codec::decode_registers(tag, &words[offset..]).map_err(|_| Quality::Malformed)
                }
                Ok(Data::Bits(bits)) => {
                    codec::decode_bit(&bits[offset..]).map_err(|_| Quality::Malformed)
                }
                Err(fault) => Err(fault.quality()),
            };
            let (value, quality) = match decoded {
                Ok(value) => (Some(value), Quality::Good),
                Err(quality) => (None, quality),
            };
            Sample {
                tag: TagId(self.tag_base + index as u32),
                server_timestamp: None,
                timestamp,
                value,
                quality,
            }
        }));
        into
    }

    fn tags_without_reading(
        &self,
        requests: &[ReadRequest],
        quality: Quality,
        clock: &dyn Clock,
    ) -> Vec<Sample> {
        let timestamp = clock.now();
        requests
            .iter()
            .flat_map(|r| r.tags.iter())
            .map(|&index| Sample {
                tag: TagId(self.tag_base + index as u32),
                server_timestamp: None,
                timestamp,
                value: None,
                quality,
            })
            .collect()
    }
}

/// A connection (TCP socket or serial port) and the units polled through it.
pub struct Line {
    endpoint: Endpoint,
    inter_frame_delay: Duration,
    units: Vec<Unit>,
    ctx: Option<Context>,
    /// What the connection's frames look like (TCP only), to tell garbage from silence.
    wire: Option<Arc<WireWatch>>,
    last_transaction: Option<Instant>,
    clock: Arc<dyn Clock>,
    bus: SampleBus,
    observer: Option<Observer>,
    rng: fastrand::Rng,
    heartbeat: Arc<Heartbeat>,
    writes: mpsc::Receiver<WriteJob>,
}

impl Line {
    /// The line, and the sender its [`DeviceWriter`]s share.
    pub fn new(
        endpoint: Endpoint,
        inter_frame_delay: Duration,
        units: Vec<Unit>,
        clock: Arc<dyn Clock>,
        bus: SampleBus,
    ) -> (Self, mpsc::Sender<WriteJob>) {
        let (jobs, writes) = mpsc::channel(WRITE_QUEUE);
        let line = Line {
            endpoint,
            inter_frame_delay,
            units,
            ctx: None,
            wire: None,
            last_transaction: None,
            heartbeat: Heartbeat::new(Arc::clone(&clock)),
            clock,
            bus,
            observer: None,
            rng: fastrand::Rng::new(),
            writes,
        };
        (line, jobs)
    }

    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// A name for logs and task names.
    pub fn name(&self) -> String {
        match &self.endpoint {
            Endpoint::Tcp { .. } => self
                .units
                .first()
                .map_or_else(String::new, |u| u.device.name.clone()),
            Endpoint::Serial(bus) => bus.name.clone(),
        }
    }

    /// Beaten once per poll; see [`Line::stall_limit`].
    pub fn heartbeat(&self) -> Arc<Heartbeat> {
        Arc::clone(&self.heartbeat)
    }

    /// The longest a healthy line can go between two polls, doubled: its longest poll interval
    /// plus a poll in which the connect and every request (one per tag, after splitting) time out.
    pub fn stall_limit(&self) -> Duration {
        let worst_iteration = self
            .units
            .iter()
            .map(|unit| {
                let interval = unit.groups.iter().map(|s| s.group.interval).max();
                let per_request = unit.device.timeout + self.inter_frame_delay;
                let requests = u32::try_from(unit.device.tags.len()).unwrap_or(u32::MAX);
                interval.unwrap_or_default()
                    + unit.device.timeout
                    + unit.device.connect_delay
                    + per_request.saturating_mul(requests)
            })
            .max()
            .unwrap_or_default();
        worst_iteration.saturating_mul(2) + Duration::from_secs(10)
    }

    /// Polls every unit on its own schedule, and performs writes in between, until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        debug!(line = %self.name(), endpoint = %self.endpoint, units = self.units.len(), "polling");
        self.heartbeat.beat();
        let mut writers_left = true;
        loop {
            let next = self.earliest_due();
            if next.is_none() && !writers_left {
                break;
            }
            let due = async {
                match next {
                    Some((u, g)) => {
                        tokio::time::sleep_until(self.units[u].groups[g].next_due).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                job = self.writes.recv(), if writers_left => {
                    match job {
                        Some(job) => self.write(job).await,
                        None => writers_left = false,
                    }
                    self.heartbeat.beat();
                    continue;
                }
                () = due => {}
            }
            let Some((u, g)) = next else { continue };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = self.poll(u, g) => {}
            }
            self.reschedule(u, g);
            self.heartbeat.beat();
        }
        if writers_left {
            let deadline = Instant::now() + WRITES_AFTER_SHUTDOWN;
            while let Ok(Some(job)) = tokio::time::timeout_at(deadline, self.writes.recv()).await {
                self.write(job).await;
            }
        }
        if let Some(mut ctx) = self.ctx.take() {
            let _already_closed =
                tokio::time::timeout(Duration::from_millis(200), ctx.disconnect()).await;
        }
    }

    /// Polls every group of every unit once, ignoring schedules (for `millwright read`).
    pub async fn poll_all_once(&mut self) {
        for u in 0..self.units.len() {
            for g in 0..self.units[u].groups.len() {
                self.poll(u, g).await;
            }
        }
    }

    fn earliest_due(&self) -> Option<(usize, usize)> {
        self.units
            .iter()
            .enumerate()
            .flat_map(|(u, unit)| {
                unit.groups
                    .iter()
                    .enumerate()
                    .map(move |(g, s)| (s.next_due, u, g))
            })
            .min()
            .map(|(_, u, g)| (u, g))
    }

    fn reschedule(&mut self, u: usize, g: usize) {
        let now = Instant::now();
        let unit = &mut self.units[u];
        let scheduled = &mut unit.groups[g];
        let interval = scheduled.group.interval;
        scheduled.next_due += interval;
        if scheduled.next_due <= now {
            let missed =
                ((now - scheduled.next_due).as_nanos() / interval.as_nanos().max(1)) as u32 + 1;
            scheduled.next_due += interval * missed;
            unit.stats.overruns.fetch_add(u64::from(missed), Relaxed);
        }
    }

    /// Opens the line if it is closed, for unit `u`. A failure is counted against the unit and
    /// backs it off.
    async fn connect(&mut self, u: usize) -> Result<(), Fault> {
        if self.ctx.is_some() {
            return Ok(());
        }
        let unit = &mut self.units[u];
        match self.endpoint.open_watched(unit.device.timeout).await {
            Ok((ctx, wire)) => {
                self.ctx = Some(ctx);
                self.wire = wire;
                self.last_transaction = None;
                if !unit.device.connect_delay.is_zero() {
                    tokio::time::sleep(unit.device.connect_delay).await;
                }
                Ok(())
            }
            Err(fault) => {
                unit.stats.record(fault.quality(), Duration::ZERO);
                if let Some(observe) = &mut self.observer {
                    observe(&PollEvent::Unreachable {
                        device: &unit.device,
                        fault: &fault,
                    });
                }
                unit.fail(&fault, &mut self.rng);
                Err(fault)
            }
        }
    }

    /// Performs one write and answers it. A unit backing off is still tried: whoever writes
    /// (an output) retries at its own pace, and an answer brings the unit back sooner.
    async fn write(&mut self, job: WriteJob) {
        let outcome = self.perform(job.unit, &job.request).await;
        if let Err(fault) = &outcome {
            let device = &self.units[job.unit].device.name;
            debug!(%device, request = %job.request, %fault, "write failed");
        }
        let _writer_gone = job.done.send(outcome);
    }

    async fn perform(&mut self, u: usize, request: &WriteRequest) -> Result<(), Fault> {
        self.connect(u).await?;
        frame_gap(self.last_transaction, self.inter_frame_delay).await;
        let unit = &mut self.units[u];
        let Some(ctx) = self.ctx.as_mut() else {
            return Err(Fault::Transport("no connection".into()));
        };
        ctx.set_slave(Slave(unit.device.unit_id));
        let started = Instant::now();
        let outcome = write::send(ctx, request, unit.device.timeout)
            .await
            .map_err(|fault| classify(self.wire.as_deref(), fault));
        self.last_transaction = Some(Instant::now());
        let quality = outcome
            .as_ref()
            .map_or_else(Fault::quality, |()| Quality::Good);
        unit.stats.record(quality, started.elapsed());
        match &outcome {
            Err(fault) if fault.breaks_line() => {
                self.ctx = None;
                unit.fail(fault, &mut self.rng);
            }
            _ => unit.answered(),
        }
        outcome
    }

    async fn poll(&mut self, u: usize, g: usize) {
        let clock = Arc::clone(&self.clock);
        let unit = &self.units[u];

        if unit.retry_at.is_some_and(|at| Instant::now() < at) {
            let samples = unit.tags_without_reading(
                &unit.groups[g].group.requests,
                Quality::Stale,
                clock.as_ref(),
            );
            publish(&self.bus, samples);
            return;
        }

        if let Err(fault) = self.connect(u).await {
            let unit = &self.units[u];
            let samples = unit.tags_without_reading(
                &unit.groups[g].group.requests,
                fault.quality(),
                clock.as_ref(),
            );
            publish(&self.bus, samples);
            return;
        }
        let unit = &mut self.units[u];
        let Some(ctx) = self.ctx.as_mut() else { return };
        ctx.set_slave(Slave(unit.device.unit_id));

        let mut i = 0;
        while i < unit.groups[g].group.requests.len() {
            let request = &unit.groups[g].group.requests[i];
            let started = Instant::now();
            let gap = (self.inter_frame_delay, &mut self.last_transaction);
            let outcome = read_all(ctx, request, &unit.device, gap)
                .await
                .map_err(|fault| classify(self.wire.as_deref(), fault));
            let quality = outcome
                .as_ref()
                .map_or_else(Fault::quality, |_| Quality::Good);
            unit.stats.record(quality, started.elapsed());

            if quality == Quality::Exception(2)
                && unit.device.split_rejected_reads
                && request.tags.len() > 1
            {
                let parts = plan::split(request, &unit.device.tags);
                warn!(
                    device = %unit.device.name,
                    table = request.table.name(),
                    start = request.start,
                    count = request.count,
                    tags = parts.len(),
                    "device refused a coalesced read (illegal data address); reading these tags one by one from now on"
                );
                unit.groups[g].group.requests.splice(i..=i, parts);
                continue;
            }

            if let Some(observe) = &mut self.observer {
                observe(&PollEvent::Read {
                    device: &unit.device,
                    request,
                    outcome: &outcome,
                });
            }
            let samples = unit.samples(request, &outcome, clock.as_ref(), self.bus.buffer());
            // State changes before the samples that reveal them: whoever sees a good sample
            // also sees the device online.
            match &outcome {
                Err(fault) if fault.breaks_line() => {
                    let fault = fault.clone();
                    let rest = &unit.groups[g].group.requests[i + 1..];
                    let skipped = unit.tags_without_reading(rest, fault.quality(), clock.as_ref());
                    self.ctx = None;
                    unit.fail(&fault, &mut self.rng);
                    publish(&self.bus, samples);
                    publish(&self.bus, skipped);
                    return;
                }
                _ => {
                    unit.answered();
                    publish(&self.bus, samples);
                }
            }
            i += 1;
        }
    }
}

/// Reads a request after the line's frame gap; a block longer than the device's limit is read
/// in parts, one after the other (the gap before each), and joined.
async fn read_all(
    ctx: &mut Context,
    request: &ReadRequest,
    device: &Device,
    (gap, last): (Duration, &mut Option<Instant>),
) -> Result<Data, Fault> {
    let most = if request.table.is_bits() {
        u32::MAX
    } else {
        u32::from(device.max_registers_per_request.max(1))
    };
    let end = u32::from(request.start) + u32::from(request.count);
    let mut at = u32::from(request.start);
    let mut joined: Vec<u16> = Vec::new();
    loop {
        // Addresses fit in u16: validation keeps every tag inside 0..=65535.
        let part = ReadRequest {
            table: request.table,
            start: at as u16,
            count: (end - at).min(most) as u16,
            tags: Vec::new(),
        };
        frame_gap(*last, gap).await;
        let outcome = link::read(ctx, &part, device.timeout).await;
        *last = Some(Instant::now());
        at += u32::from(part.count);
        match outcome? {
            data if at >= end && joined.is_empty() => return Ok(data),
            Data::Registers(words) => joined.extend_from_slice(&words),
            bits @ Data::Bits(_) => return Ok(bits),
        }
        if at >= end {
            return Ok(Data::Registers(joined));
        }
    }
}

/// A timeout after part of a frame arrived is a malformed answer, not silence.
fn classify(wire: Option<&WireWatch>, fault: Fault) -> Fault {
    match wire {
        Some(wire) => wire.classify(fault),
        None => fault,
    }
}

/// RS-485 needs silence between a response and the next request.
/// Only when the gap has not passed yet: a timer due now still waits for the timer wheel's next
/// millisecond (one wake for nothing per request on a TCP line, whose gap is zero).
async fn frame_gap(last_transaction: Option<Instant>, gap: Duration) {
    if let Some(until) = last_transaction.map(|last| last + gap) {
        if until > Instant::now() {
            tokio::time::sleep_until(until).await;
        }
    }
}

fn publish(bus: &SampleBus, samples: Vec<Sample>) {
    bus.publish_all(samples);
}

/// The lines of a plan, each device's counters, and a writer per device (in plan order).
pub struct Lines {
    pub lines: Vec<Line>,
    pub stats: Vec<(String, Arc<DeviceStats>)>,
    /// Dropping them (all of them, with every clone) lets the lines stop without waiting.
    pub writers: Vec<DeviceWriter>,
}

/// A line per TCP device and per serial bus (in the order their first device is configured).
pub fn lines(plan: &firmware_config::Plan, clock: &Arc<dyn Clock>, bus: &SampleBus) -> Lines {
    let mut stats = Vec::new();
    let mut lines: Vec<(Endpoint, Duration, Vec<Unit>)> = Vec::new();
    let mut line_of_bus: Vec<Option<usize>> = vec![None; plan.buses.len()];
    // Each device's line and its index among the line's units, for its writer.
    let mut placement = Vec::with_capacity(plan.devices.len());
    let mut tag_base = 0u32;
    for device in &plan.devices {
        let device_stats = Arc::new(DeviceStats::default());
        stats.push((device.name.clone(), Arc::clone(&device_stats)));
        let unit = Unit::new(device.clone(), tag_base, Arc::clone(&device_stats));
        tag_base += device.tags.len() as u32;
        let line = match &device.link {
            firmware_config::Link::Tcp { host, port } => {
                let endpoint = Endpoint::Tcp {
                    host: host.clone(),
                    port: *port,
                };
                lines.push((endpoint, Duration::ZERO, Vec::new()));
                lines.len() - 1
            }
            firmware_config::Link::Rtu { bus: index } => {
                *line_of_bus[*index].get_or_insert_with(|| {
                    let serial_bus = &plan.buses[*index];
                    let endpoint = Endpoint::Serial(serial_bus.clone());
                    lines.push((endpoint, serial_bus.inter_frame_delay, Vec::new()));
                    lines.len() - 1
                })
            }
        };
        let label = format!("{} (unit {})", device.name, device.unit_id);
        placement.push((label, line, lines[line].2.len(), device_stats));
        lines[line].2.push(unit);
    }
    let (lines, senders): (Vec<Line>, Vec<mpsc::Sender<WriteJob>>) = lines
        .into_iter()
        .map(|(endpoint, gap, units)| {
            Line::new(endpoint, gap, units, Arc::clone(clock), bus.clone())
        })
        .unzip();
    let writers = placement
        .into_iter()
        .map(|(label, line, unit, stats)| {
            DeviceWriter::new(&label, unit, senders[line].clone(), stats)
        })
        .collect();
    Lines {
        lines,
        stats,
        writers,
    }
}

#[cfg(test)]
mod tests {

    /// Whether `future` is ready at its first poll.
    async fn ready_at_once(future: impl std::future::Future<Output = ()>) -> bool {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx).is_ready())).await
    }

    #[tokio::test]
    async fn a_frame_gap_that_has_passed_costs_no_timer_wait() {
        for _ in 0..20 {
            // The timer wheel has just turned: a deadline of now lies in its next millisecond.
            tokio::time::sleep(Duration::from_millis(2)).await;
            let last = Instant::now();
            assert!(ready_at_once(frame_gap(Some(last), Duration::ZERO)).await);
            assert!(ready_at_once(frame_gap(None, Duration::from_millis(5))).await);
        }
        let last = Instant::now();
        assert!(
            !ready_at_once(frame_gap(Some(last), Duration::from_millis(50))).await,
            "a gap still to come is waited for"
        );
    }
    use super::*;
    use crate::clock::SystemClock;

    fn line_of(toml: &str) -> Line {
        let plan = firmware_config::load_str(std::path::Path::new("t.toml"), toml)
            .unwrap_or_else(|e| panic!("{e}"));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        lines(&plan, &clock, &SampleBus::new(16)).lines.remove(0)
    }

    #[test]
    fn stall_limit_covers_the_longest_interval_and_a_poll_where_everything_times_out() {
        let line = line_of(
            r#"
[[devices]]
name = "d"
host = "127.0.0.1"
addressing = "zero_based"
poll_interval = "1s"
timeout = "500ms"
connect_delay = "200ms"
[[devices.tags]]
name = "a"
table = "holding_register"
address = 0
[[devices.tags]]
name = "b"
table = "holding_register"
address = 100
[[devices.tags]]
name = "c"
table = "holding_register"
address = 200
poll_interval = "5s"
"#,
        );
        // 2 × (5 s + connect 0.5 s + delay 0.2 s + 3 requests × 0.5 s) + 10 s
        assert_eq!(line.stall_limit(), Duration::from_millis(24_400));
    }
}

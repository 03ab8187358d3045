//! Local outputs that show alerts where the machine is: LED-class LEDs, GPIO lines and Modbus coils
//! or registers.
//!
//! Which pattern an output shows is a pure function of the alerts ([`patterns`]): for each output,
//! the first `[[indications]]` entry (in file order) that matches a visible (not shelved) alert
//! wins, else the output's idle pattern. Invariants of [`run`]:
//! - an output is written only when what it should show changes (a software blink counts each
//!   phase as a change), and once at start, since its state before is unknown — which is how
//!   alerts restored after a restart light the outputs again;
//! - a failing output (LED missing, GPIO line busy, coil write refused) is retried every
//!   [`RETRY_INTERVAL`] and on every change, and raises the agent-health alert `agent/output/<name>`
//!   until it works; it never stops the task;
//! - a Modbus output whose device failed and came back since its last write (a power-cycled relay
//!   module drops its coils) is written again, within [`RECOVERY_CHECK_INTERVAL`] of the poll
//!   that saw the device back;
//! - when the agent stops (not on a reload), every output is set to its `on_shutdown` pattern.

pub mod gpio;
pub mod led;
pub mod modbus;

use std::sync::Arc;
use std::time::Duration;

use firmware_config::{
    Alerting, Device, Indication, Output, OutputTarget, Pattern, Plan, Severity, StateFilter,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::bus::SampleBus;
use crate::clock::Clock;
use crate::decisions::alerts::{health_condition, View};
use crate::decisions::lifecycle::{Condition, State};
use crate::sources::modbus::DeviceWriter;

/// How often a failing output is tried again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// How often a Modbus output checks whether its device failed and came back since the last write
/// (and may have lost the output's state).
const RECOVERY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Longest wait for one output write when stopping.
const SHUTDOWN_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

fn matches(filter: StateFilter, state: State) -> bool {
    match filter {
        StateFilter::Any => true,
        StateFilter::Active => state.is_active(),
        StateFilter::Acknowledged => state == State::ActiveAcknowledged,
        StateFilter::Unacknowledged => state != State::ActiveAcknowledged,
        StateFilter::ClearedUnacknowledged => state == State::ClearedUnacknowledged,
    }
}

/// What each output shows for the visible alerts.
pub fn patterns(
    outputs: &[Output],
    indications: &[Indication],
    visible: &[(Severity, State)],
) -> Vec<Pattern> {
    outputs
        .iter()
        .enumerate()
        .map(|(index, output)| {
            indications
                .iter()
                .filter(|i| i.output == index)
                .find(|i| {
                    visible.iter().any(|(severity, state)| {
                        (i.severities.is_empty() || i.severities.contains(severity))
                            && matches(i.state, *state)
                    })
                })
                .map_or(output.idle, |i| i.pattern)
        })
        .collect()
}

/// One output's hardware.
/// Why an output cannot show what it should.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("no LED at {dir} (is the name right? see `ls {parent}`)")]
    NoLed { dir: String, parent: String },
    #[error("write {value:?} to {path}: {source}")]
    Write {
        value: String,
        path: String,
        source: std::io::Error,
    },
    #[error("no GPIO line named {0:?} on this system (see `gpioinfo`)")]
    NoGpioLine(String),
    #[error("{action} {chip} line {offset}: {source}")]
    Gpio {
        action: &'static str,
        chip: String,
        offset: u32,
        source: gpiocdev::Error,
    },
    #[error("{what}: {fault}")]
    Modbus {
        what: String,
        fault: crate::sources::modbus::Fault,
    },
    #[error("no Modbus device #{0}")]
    NoDevice(usize),
}

#[derive(Debug)]
pub enum Driver {
    Led(led::Led),
    Gpio(gpio::Gpio),
    Modbus(modbus::ModbusOutput),
}

impl Driver {
    /// `writers`: one per Modbus device, in plan order.
    pub fn open(target: &OutputTarget, writers: &[DeviceWriter]) -> Result<Driver, OutputError> {
        let writer = |device: usize| {
            writers
                .get(device)
                .cloned()
                .ok_or(OutputError::NoDevice(device))
        };
        Ok(match target {
            OutputTarget::Led(dir) => Driver::Led(led::Led::new(dir.clone())),
            OutputTarget::Gpio { line, active_low } => {
                Driver::Gpio(gpio::Gpio::open(line, *active_low)?)
            }
            OutputTarget::ModbusCoil { device, address } => Driver::Modbus(
                modbus::ModbusOutput::new(writer(*device)?, modbus::Point::Coil(*address)),
            ),
            OutputTarget::ModbusRegister {
                device,
                address,
                values,
            } => Driver::Modbus(modbus::ModbusOutput::new(
                writer(*device)?,
                modbus::Point::Register(*address, *values),
            )),
        })
    }

    /// Whether what was written may be gone: a Modbus device that failed and came back since.
    pub fn may_have_lost_state(&self) -> bool {
        match self {
            Driver::Modbus(output) => output.may_have_lost_state(),
            Driver::Led(_) | Driver::Gpio(_) => false,
        }
    }

    /// Whether the agent must toggle the output itself to blink it.
    pub fn blinks_in_software(&self) -> bool {
        match self {
            Driver::Led(led) => led.blinks_in_software(),
            Driver::Gpio(_) => true,
            Driver::Modbus(output) => !output.blinks_by_itself(),
        }
    }

    /// Shows `pattern`; `on` is the blink phase for outputs blinked in software.
    pub async fn show(&mut self, pattern: Pattern, on: bool) -> Result<(), OutputError> {
        let level = match pattern {
            Pattern::Off => false,
            Pattern::Steady => true,
            Pattern::SlowBlink | Pattern::FastBlink => on,
        };
        match self {
            Driver::Led(led) => led.show(pattern, on),
            Driver::Gpio(gpio) => gpio.set(level),
            Driver::Modbus(output) => output.show(pattern, level).await,
        }
    }
}

/// The blink phase of `pattern` at `elapsed` since the outputs started (so that every output
/// blinking at one rate blinks in step).
fn phase(pattern: Pattern, elapsed: Duration) -> bool {
    pattern
        .half_period()
        .is_none_or(|half| (elapsed.as_millis() / half.as_millis()) % 2 == 0)
}

struct Slot {
    output: Output,
    driver: Option<Driver>,
    /// What was last written successfully, with the phase; `None` when unknown.
    shown: Option<(Pattern, bool)>,
    failing: bool,
}

impl Slot {
    fn wanted(&self, pattern: Pattern, elapsed: Duration) -> (Pattern, bool) {
        let software = self.driver.as_ref().is_none_or(Driver::blinks_in_software);
        (pattern, software && phase(pattern, elapsed))
    }

    async fn bring_to(
        &mut self,
        want: (Pattern, bool),
        writers: &[DeviceWriter],
    ) -> Result<(), OutputError> {
        let driver = match &mut self.driver {
            Some(driver) => driver,
            None => self
                .driver
                .insert(Driver::open(&self.output.target, writers)?),
        };
        let result = driver.show(want.0, want.1).await;
        self.shown = result.is_ok().then_some(want);
        result
    }
}

/// Drives the outputs from the alerts the decisions stage publishes (`view`) until `stop`; sets
/// the shutdown patterns if the agent as a whole is stopping (`agent_shutdown`). Each output has
/// its own task, so a slow one (a PLC that times out) never delays another. An output that fails
/// or works again is reported on `report` (its `agent/output/…` health alert). Outputs listed in
/// `elsewhere` (by index: a quality station's divert output) are driven by their owner instead.
pub async fn run(
    alerting: Alerting,
    elsewhere: Vec<usize>,
    writers: Vec<DeviceWriter>,
    mut view: watch::Receiver<View>,
    report: mpsc::Sender<Condition>,
    stop: CancellationToken,
    agent_shutdown: CancellationToken,
) {
    let wanted =
        |view: &[(Severity, State)]| patterns(&alerting.outputs, &alerting.indications, view);
    let first = wanted(&view.borrow_and_update());
    let writers = Arc::new(writers);
    // One clock for every blink, so outputs blinking at one rate blink in step.
    let started = Instant::now();
    let mut drivers = tokio::task::JoinSet::new();
    let mut senders = Vec::new();
    for (index, (output, pattern)) in alerting.outputs.iter().zip(first).enumerate() {
        let (send, receive) = watch::channel(pattern);
        senders.push(send);
        if elsewhere.contains(&index) {
            continue;
        }
        let slot = Slot {
            output: output.clone(),
            driver: None,
            shown: None,
            failing: false,
        };
        drivers.spawn(drive(
            slot,
            receive,
            Arc::clone(&writers),
            report.clone(),
            started,
            stop.clone(),
            agent_shutdown.clone(),
        ));
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            changed = view.changed() => {
                if changed.is_err() { break }
                let now = wanted(&view.borrow_and_update());
                for (send, pattern) in senders.iter().zip(now) {
                    send.send_if_modified(|current| std::mem::replace(current, pattern) != pattern);
                }
            }
        }
    }
    while drivers.join_next().await.is_some() {}
    if agent_shutdown.is_cancelled() {
        info!(
            outputs = senders.len(),
            "outputs set to their shutdown patterns"
        );
    }
}

/// One output: shows what `pattern` says, blinks it if the hardware cannot, retries it while it
/// fails, and sets its shutdown pattern at the end.
#[allow(clippy::too_many_arguments)] // the task's whole context, passed once at spawn
async fn drive(
    mut slot: Slot,
    mut pattern: watch::Receiver<Pattern>,
    writers: Arc<Vec<DeviceWriter>>,
    report: mpsc::Sender<Condition>,
    started: Instant,
    stop: CancellationToken,
    agent_shutdown: CancellationToken,
) {
    let mut blink = tokio::time::interval(Duration::from_millis(125));
    blink.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut retry = tokio::time::interval_at(Instant::now() + RETRY_INTERVAL, RETRY_INTERVAL);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut recheck = tokio::time::interval_at(
        Instant::now() + RECOVERY_CHECK_INTERVAL,
        RECOVERY_CHECK_INTERVAL,
    );
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let current = *pattern.borrow_and_update();
        let want = slot.wanted(current, started.elapsed());
        if slot.shown != Some(want) {
            let result = slot.bring_to(want, &writers).await;
            reported(&report, &mut slot, result);
        }
        // A failing output waits for a change or a retry, not the next blink phase: a blinking
        // coil on a dead PLC would otherwise cost its line a timeout eight times a second.
        let blinking = current.half_period().is_some()
            && !slot.failing
            && slot.driver.as_ref().is_some_and(Driver::blinks_in_software);
        tokio::select! {
            () = stop.cancelled() => break,
            changed = pattern.changed() => if changed.is_err() { break },
            _ = blink.tick(), if blinking => {}
            _ = retry.tick(), if slot.failing => slot.shown = None,
            _ = recheck.tick(), if !slot.failing && matches!(slot.driver, Some(Driver::Modbus(_))) => {
                if slot.driver.as_ref().is_some_and(Driver::may_have_lost_state) {
                    info!(output = %slot.output.name, "the device came back after failing; writing the output again");
                    slot.shown = None;
                }
            }
        }
    }
    if !agent_shutdown.is_cancelled() {
        return;
    }
    let shutdown = slot.output.on_shutdown;
    match tokio::time::timeout(
        SHUTDOWN_WRITE_TIMEOUT,
        slot.bring_to((shutdown, shutdown != Pattern::Off), &writers),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            warn!(output = %slot.output.name, %error, "cannot set the shutdown pattern")
        }
        Err(_) => warn!(output = %slot.output.name, "setting the shutdown pattern timed out"),
    }
}

/// The health condition of output `name` (`agent/output/<name>`): failing with `reason`, or
/// working again.
pub fn output_health(name: &str, severity: Severity, failing: Option<String>) -> Condition {
    let active = failing.is_some();
    health_condition(
        format!("agent/output/{name}"),
        severity,
        active,
        failing.unwrap_or_else(|| "output works again".into()),
    )
}

/// Notes how a write went, and tells the decisions stage when the output starts or stops failing.
fn reported(report: &mpsc::Sender<Condition>, slot: &mut Slot, result: Result<(), OutputError>) {
    let name = &slot.output.name;
    let tell = |condition: Condition| {
        // Full only if the decisions stage stalls; the next retry reports the failure again.
        if let Err(error) = report.try_send(condition) {
            debug!(%error, "output health not reported");
        }
    };
    match result {
        Ok(()) if slot.failing => {
            slot.failing = false;
            info!(output = %slot.output.name, "output works again");
            tell(output_health(name, Severity::Medium, None));
        }
        Ok(()) => {}
        Err(error) => {
            if !slot.failing {
                warn!(output = %slot.output.name, %error, "output failed; retrying every {}s", RETRY_INTERVAL.as_secs());
                // A Modbus connection is reopened on the next try.
                if matches!(slot.driver, Some(Driver::Gpio(_))) {
                    slot.driver = None;
                }
            }
            slot.failing = true;
            tell(output_health(
                name,
                Severity::Medium,
                Some(format!("output {name}: {error}")),
            ));
        }
    }
}

/// `millwright leds test`: each output steady for `hold`, then off, one after the other; one line
/// per output through `say`. Returns how many failed. Modbus outputs are written through lines
/// of their own that poll nothing.
pub async fn cycle(plan: &Plan, hold: Duration, mut say: impl FnMut(String)) -> usize {
    let mut writes_only = plan.clone();
    for device in &mut writes_only.devices {
        device.tags = Arc::new([]);
    }
    let clock: Arc<dyn Clock> = Arc::new(crate::clock::SystemClock);
    let lines = crate::sources::modbus::lines(&writes_only, &clock, &SampleBus::new(1));
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for line in lines.lines {
        tasks.spawn(line.run(stop.clone()));
    }
    let writers = lines.writers;
    let devices = &plan.devices;
    let mut failed = 0;
    for output in &plan.alerting.outputs {
        let result = async {
            let mut driver = Driver::open(&output.target, &writers)?;
            driver.show(Pattern::Steady, true).await?;
            tokio::time::sleep(hold).await;
            driver.show(Pattern::Off, false).await
        }
        .await;
        match result {
            Ok(()) => say(format!(
                "{:<16} {:<40} ok (on {}ms, then off)",
                output.name,
                describe(&output.target, devices),
                hold.as_millis()
            )),
            Err(error) => {
                failed += 1;
                say(format!(
                    "{:<16} {:<40} FAILED: {error}",
                    output.name,
                    describe(&output.target, devices)
                ));
            }
        }
    }
    drop(writers);
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    failed
}

/// Where an output goes, for `check` and `leds test`.
pub fn describe(target: &OutputTarget, devices: &[Device]) -> String {
    match target {
        OutputTarget::Led(dir) => format!("led {}", dir.display()),
        OutputTarget::Gpio { line, active_low } => {
            let low = if *active_low { " (active low)" } else { "" };
            match line {
                firmware_config::GpioLine::Offset { chip, offset } => {
                    format!("gpio {} line {offset}{low}", chip.display())
                }
                firmware_config::GpioLine::Named(name) => format!("gpio line {name:?}{low}"),
            }
        }
        OutputTarget::ModbusCoil { device, address } => {
            format!("modbus {} coil {address}", devices[*device].name)
        }
        OutputTarget::ModbusRegister {
            device, address, ..
        } => {
            format!(
                "modbus {} holding register {address}",
                devices[*device].name
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decisions::alerts::Alerts;
    use std::path::PathBuf;

    fn output(name: &str, idle: Pattern) -> Output {
        Output {
            name: name.into(),
            target: OutputTarget::Led(PathBuf::from(name)),
            idle,
            on_shutdown: Pattern::Off,
        }
    }

    fn indication(
        output: usize,
        severities: &[Severity],
        state: StateFilter,
        pattern: Pattern,
    ) -> Indication {
        Indication {
            output,
            severities: severities.to_vec(),
            state,
            pattern,
        }
    }

    #[test]
    fn first_matching_indication_wins_per_output_and_idle_otherwise() {
        use Severity::*;
        let outputs = [
            output("red", Pattern::Off),
            output("amber", Pattern::Off),
            output("green", Pattern::Steady),
        ];
        let indications = [
            indication(
                0,
                &[High, Critical],
                StateFilter::Unacknowledged,
                Pattern::FastBlink,
            ),
            indication(
                0,
                &[High, Critical],
                StateFilter::Acknowledged,
                Pattern::Steady,
            ),
            indication(
                1,
                &[Low, Medium],
                StateFilter::Unacknowledged,
                Pattern::SlowBlink,
            ),
            indication(1, &[Low, Medium], StateFilter::Any, Pattern::Steady),
            indication(2, &[], StateFilter::Any, Pattern::Off),
        ];
        let show = |visible: &[(Severity, State)]| patterns(&outputs, &indications, visible);
        assert_eq!(show(&[]), [Pattern::Off, Pattern::Off, Pattern::Steady]);
        assert_eq!(
            show(&[(Medium, State::ActiveUnacknowledged)]),
            [Pattern::Off, Pattern::SlowBlink, Pattern::Off]
        );
        // Several alerts: the unacknowledged high one makes red blink although another is acknowledged.
        assert_eq!(
            show(&[
                (High, State::ActiveAcknowledged),
                (Critical, State::ActiveUnacknowledged),
                (Low, State::ActiveAcknowledged)
            ]),
            [Pattern::FastBlink, Pattern::Steady, Pattern::Off]
        );
        assert_eq!(
            show(&[(High, State::ActiveAcknowledged)]),
            [Pattern::Steady, Pattern::Off, Pattern::Off]
        );
        // A latched, cleared alert still wants acknowledging.
        assert_eq!(
            show(&[(Critical, State::ClearedUnacknowledged)]),
            [Pattern::FastBlink, Pattern::Off, Pattern::Off]
        );
    }

    /// One output and its indications, no limits.
    fn alerting_of(output: Output, indications: Vec<Indication>) -> Alerting {
        Alerting {
            acknowledge_tag: None,
            maintenance_latching: true,
            max_shelve: Duration::from_secs(60),
            device_down_after: Duration::from_secs(30),
            outbox_filling_percent: 80,
            broker_unreachable_after: Duration::from_secs(60),
            limits: Vec::new(),
            outputs: vec![output],
            indications,
        }
    }

    /// Waits (bounded) until `file` reads `want`.
    async fn wait_for(file: &std::path::Path, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(file).unwrap_or_default() != want {
            assert!(
                Instant::now() < deadline,
                "{} never read {want:?}",
                file.display()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn outputs_are_written_at_start_and_then_only_on_change() {
        use crate::decisions::lifecycle::{Condition, Origin};

        let dir = tempfile::tempdir().expect("tempdir");
        let led = dir.path().join("leds/red");
        std::fs::create_dir_all(&led).expect("mkdir");
        let alerting = alerting_of(
            Output {
                target: OutputTarget::Led(led.clone()),
                ..output("red", Pattern::Off)
            },
            vec![indication(0, &[], StateFilter::Any, Pattern::Steady)],
        );
        let mut alerts = Alerts::open(dir.path(), None);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            alerting,
            Vec::new(),
            Vec::new(),
            alerts.subscribe(),
            crate::decisions::alerts::reporting().0,
            stop.clone(),
            CancellationToken::new(),
        ));
        let brightness = led.join("brightness");
        wait_for(&brightness, "0").await;
        // Nothing changes: nothing is written (the removed file stays away).
        std::fs::remove_file(&brightness).expect("remove");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!brightness.exists(), "rewritten without a change");
        let condition = |active| Condition {
            id: "t/hi".into(),
            source: "t".into(),
            origin: Origin::Limit,
            severity: Severity::Medium,
            latching: false,
            active,
            value: None,
            reason: String::new(),
        };
        alerts.condition(condition(true), std::time::SystemTime::now());
        wait_for(&brightness, "1").await;
        // A transition that changes no pattern writes nothing either.
        std::fs::remove_file(&brightness).expect("remove");
        alerts
            .acknowledge("t/hi", "test", std::time::SystemTime::now())
            .expect("ack");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!brightness.exists(), "rewritten without a change");
        alerts.condition(condition(false), std::time::SystemTime::now());
        wait_for(&brightness, "0").await;
        stop.cancel();
        task.await.expect("outputs task");
    }

    /// The outputs task driving one coil (device 0, coil 7) that shows `idle`, through a stand-in
    /// for its polling line that records every write and answers it with `answer` after `delay`.
    struct CoilRig {
        reported: tokio::sync::mpsc::Receiver<Condition>,
        stats: Arc<crate::sources::DeviceStats>,
        written: Arc<std::sync::Mutex<Vec<crate::sources::modbus::write::WriteRequest>>>,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    impl CoilRig {
        fn start(
            idle: Pattern,
            answer: Result<(), crate::sources::modbus::Fault>,
            delay: Duration,
        ) -> CoilRig {
            let dir = tempfile::tempdir().expect("tempdir");
            let alerting = alerting_of(
                Output {
                    target: OutputTarget::ModbusCoil {
                        device: 0,
                        address: 7,
                    },
                    ..output("coil", idle)
                },
                Vec::new(),
            );
            let (jobs, mut line) = tokio::sync::mpsc::channel(4);
            let written = Arc::new(std::sync::Mutex::new(Vec::new()));
            let log = Arc::clone(&written);
            tokio::spawn(async move {
                while let Some(job) = line.recv().await {
                    let job: crate::sources::modbus::write::WriteJob = job;
                    log.lock().expect("log").push(job.request);
                    tokio::time::sleep(delay).await;
                    let _ = job.done.send(answer.clone());
                }
            });
            let alerts = Alerts::open(dir.path(), None);
            let (report, reported) = crate::decisions::alerts::reporting();
            let stats = Arc::new(crate::sources::DeviceStats::default());
            let stop = CancellationToken::new();
            let writer = DeviceWriter::new("relays (unit 7)", 0, jobs, Arc::clone(&stats));
            let task = tokio::spawn(run(
                alerting,
                Vec::new(),
                vec![writer],
                alerts.subscribe(),
                report,
                stop.clone(),
                CancellationToken::new(),
            ));
            CoilRig {
                reported,
                stats,
                written,
                stop,
                task,
                _dir: dir,
            }
        }

        fn writes(&self) -> usize {
            self.written.lock().expect("log").len()
        }

        async fn stop(self) {
            self.stop.cancel();
            self.task.await.expect("outputs task");
        }
    }

    /// A blinking coil whose device never answers is written at start and then once per retry
    /// interval, not at every blink phase.
    #[tokio::test(start_paused = true)]
    async fn a_failing_blinking_output_is_retried_at_the_retry_interval() {
        let timeout = Duration::from_millis(500);
        let rig = CoilRig::start(
            Pattern::FastBlink,
            Err(crate::sources::modbus::Fault::Timeout(timeout)),
            timeout,
        );
        tokio::time::sleep(RETRY_INTERVAL * 3 - Duration::from_secs(1)).await;
        assert_eq!(rig.writes(), 3);
        let mut rig = rig;
        let reported = rig.reported.try_recv().expect("reported");
        assert!(
            reported.id == "agent/output/coil" && reported.active,
            "the failing output reports its health condition: {reported:?}"
        );
        rig.stop().await;
    }

    /// A steady coil is written once; when its device fails and comes back (a power-cycled relay
    /// module drops its coils) it is written again, once.
    #[tokio::test(start_paused = true)]
    async fn a_modbus_output_is_written_again_when_its_device_comes_back() {
        use crate::sources::modbus::write::WriteRequest;

        let rig = CoilRig::start(Pattern::Steady, Ok(()), Duration::from_millis(20));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            rig.writes(),
            1,
            "written once at start, then only on change"
        );
        rig.stats
            .reconnects
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(rig.writes(), 2, "written again after the device came back");
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(rig.writes(), 2);
        let on = WriteRequest::SingleCoil {
            address: 7,
            on: true,
        };
        assert!(rig.written.lock().expect("log").iter().all(|w| *w == on));
        rig.stop().await;
    }

    #[test]
    fn blink_phases_follow_the_pattern_rate() {
        let at = Duration::from_millis;
        assert!(phase(Pattern::FastBlink, at(0)));
        assert!(!phase(Pattern::FastBlink, at(130)));
        assert!(phase(Pattern::FastBlink, at(250)));
        assert!(phase(Pattern::SlowBlink, at(400)));
        assert!(!phase(Pattern::SlowBlink, at(600)));
        assert!(phase(Pattern::Steady, at(600)));
    }
}

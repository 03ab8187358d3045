//! A station's divert output (a reject gate, a pusher, a lamp): on for `pulse` per bad part.
//!
//! Its own task, so that a slow write never holds up the decisions: [`Divert::pulse`] never waits.
//! A pulse asked for while the output is on extends it (two bad parts in a row keep the gate open
//! for both). A write that fails is retried with the next pulse and raises the output's
//! `agent/output/<name>` health alert, like the alert outputs do; at the end the output is left off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use firmware_config::{Output, Pattern, Severity};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::decisions::lifecycle::Condition;
use crate::outputs::{output_health, Driver};
use crate::sources::modbus::DeviceWriter;

/// The handle the stage pulses through.
#[derive(Debug, Clone)]
pub struct Divert {
    wake: Arc<Notify>,
    asked: Arc<AtomicU64>,
}

impl Divert {
    /// Asks for one pulse (never waits).
    pub fn pulse(&self) {
        self.asked.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

/// Counters of a divert output, for tests and the status.
#[derive(Debug, Default)]
pub struct DivertStats {
    pub pulses: AtomicU64,
    pub failures: AtomicU64,
}

/// Starts the output's task; the handle to pulse it, and its counters.
pub fn start(
    output: Output,
    pulse: Duration,
    writers: Vec<DeviceWriter>,
    report: mpsc::Sender<Condition>,
    stop: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> (Divert, Arc<DivertStats>) {
    let handle = Divert {
        wake: Arc::new(Notify::new()),
        asked: Arc::new(AtomicU64::new(0)),
    };
    let stats = Arc::new(DivertStats::default());
    let gate = Gate {
        output,
        driver: None,
        writers,
        report,
        failing: false,
        stats: Arc::clone(&stats),
    };
    tasks.spawn(drive(gate, pulse, handle.clone(), stop));
    (handle, stats)
}

/// The output and what writing it needs.
struct Gate {
    output: Output,
    driver: Option<Driver>,
    writers: Vec<DeviceWriter>,
    report: mpsc::Sender<Condition>,
    failing: bool,
    stats: Arc<DivertStats>,
}

async fn drive(mut gate: Gate, pulse: Duration, handle: Divert, stop: CancellationToken) {
    let mut seen = 0;
    // Off at start: the state before is unknown.
    let mut on_until: Option<Instant> = None;
    gate.set(false).await;
    loop {
        let off_at = on_until;
        tokio::select! {
            () = stop.cancelled() => break,
            () = handle.wake.notified() => {}
            () = async { if let Some(at) = off_at { tokio::time::sleep_until(at).await } }, if off_at.is_some() => {
                on_until = None;
                gate.set(false).await;
                continue;
            }
        }
        let asked = handle.asked.load(Ordering::Relaxed);
        if asked == seen {
            continue;
        }
        seen = asked;
        let was_on = on_until.is_some();
        on_until = Some(Instant::now() + pulse);
        if !was_on || gate.failing {
            gate.stats.pulses.fetch_add(1, Ordering::Relaxed);
            gate.set(true).await;
        }
    }
    if on_until.is_some() {
        gate.set(false).await;
    }
}

impl Gate {
    async fn set(&mut self, on: bool) {
        let pattern = if on { Pattern::Steady } else { Pattern::Off };
        let result = async {
            let driver = match &mut self.driver {
                Some(driver) => driver,
                None => self
                    .driver
                    .insert(Driver::open(&self.output.target, &self.writers)?),
            };
            driver.show(pattern, on).await
        }
        .await;
        let name = &self.output.name;
        match result {
            Ok(()) if self.failing => {
                self.failing = false;
                info!(output = %name, "divert output works again");
                let _ = self
                    .report
                    .try_send(output_health(name, Severity::Medium, None));
            }
            Ok(()) => {}
            Err(error) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                if !self.failing {
                    warn!(output = %name, %error, "divert output failed; a bad part may not have been diverted");
                }
                self.failing = true;
                let _ = self.report.try_send(output_health(
                    name,
                    Severity::High,
                    Some(format!("divert output {name}: {error}")),
                ));
            }
        }
    }
}

//! The simulated plant: machines, their points, and the register image a Modbus request sees at a
//! given moment. Protocol-independent, so OPC UA serving can be added beside Modbus.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use firmware_config::{DataType, Table, Tag};
use tokio_modbus::ExceptionCode;

use super::gauge::GaugeSim;
use super::line::LineSim;
use super::signal::{self, Load, Reading, SignalConfig};
use super::MachineConfig;
use crate::sample::Value;
use crate::sources::modbus::codec;

/// A served value: where it lives and how it moves.
#[derive(Debug, Clone)]
pub struct Point {
    pub tag: Tag,
    pub signal: SignalConfig,
}

pub struct Machine {
    pub config: MachineConfig,
    pub points: Vec<Point>,
    load: Load,
    /// Values written by clients (holding registers and coils), which then read back as written.
    written: Mutex<HashMap<(Table, u16), u16>>,
    /// Off: the unit answers nothing, and forgets what was written (see [`Plant::set_powered`]).
    powered: AtomicBool,
    line: Option<LineSim>,
    gauge: Option<GaugeSim>,
    /// Every value written, with its table and address, oldest first (at most [`WRITE_LOG`]).
    writes: Mutex<std::collections::VecDeque<(Table, u16, u16, Instant)>>,
    /// The waveform's Modbus block, when it has one.
    waveform_block: super::waveform::RegisterBlock,
}

/// Writes a machine remembers for [`Machine::writes`].
const WRITE_LOG: usize = 1024;

impl Machine {
    /// The machine's gauging station, when it has one.
    pub fn gauge(&self) -> Option<&GaugeSim> {
        self.gauge.as_ref()
    }

    /// The values written to `address` of `table`, oldest first (the last [`WRITE_LOG`] writes
    /// to the machine): a test sees each pulse of an output, not only where it ended.
    pub fn writes(&self, table: Table, address: u16) -> Vec<u16> {
        self.writes_at(table, address)
            .into_iter()
            .map(|(value, _)| value)
            .collect()
    }

    /// The same, each with when it arrived (for latency benchmarks).
    pub fn writes_at(&self, table: Table, address: u16) -> Vec<(u16, Instant)> {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(t, a, ..)| *t == table && *a == address)
            .map(|(_, _, value, at)| (*value, *at))
            .collect()
    }
}

pub struct Plant {
    seed: u64,
    machines: Vec<Machine>,
    started: Instant,
}

impl Plant {
    pub fn new(seed: u64, machines: Vec<(MachineConfig, Vec<Point>)>) -> Self {
        let machines = machines
            .into_iter()
            .map(|(config, points)| Machine {
                load: Load::new(config.load.clone(), seed ^ u64::from(config.unit_id)),
                line: config
                    .line
                    .clone()
                    .map(|line| LineSim::new(line, seed ^ (u64::from(config.unit_id) << 8))),
                gauge: config
                    .gauge
                    .clone()
                    .map(|gauge| GaugeSim::new(gauge, seed ^ (u64::from(config.unit_id) << 16))),
                writes: Mutex::new(std::collections::VecDeque::new()),
                waveform_block: Default::default(),
                config,
                points,
                written: Mutex::new(HashMap::new()),
                powered: AtomicBool::new(true),
            })
            .collect();
        Plant {
            seed,
            machines,
            started: Instant::now(),
        }
    }

    pub fn machines(&self) -> &[Machine] {
        &self.machines
    }

    pub fn machine(&self, unit_id: u8) -> Option<&Machine> {
        self.machines.iter().find(|m| m.config.unit_id == unit_id)
    }

    /// Whether `unit_id` is a machine here and has power.
    pub fn is_powered(&self, unit_id: u8) -> bool {
        self.machine(unit_id)
            .is_some_and(|m| m.powered.load(Ordering::SeqCst))
    }

    /// Switches a machine's power, as a test of a power cycle: while off it answers like a unit
    /// that is not there, and it comes back with every written value forgotten (a relay module's
    /// coils drop out).
    pub fn set_powered(&self, unit_id: u8, on: bool) {
        if let Some(machine) = self.machine(unit_id) {
            if !on {
                machine
                    .written
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
            }
            machine.powered.store(on, Ordering::SeqCst);
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// A point's engineering value at `elapsed` (what the agent should decode, before any write).
    pub fn value(
        &self,
        machine: &Machine,
        point: usize,
        elapsed: Duration,
        wall: SystemTime,
    ) -> Value {
        let p = &machine.points[point];
        if let (Some(output), Some(line)) = (p.signal.line, &machine.line) {
            let v = line.value(output, elapsed);
            return match p.tag.data_type {
                DataType::Bool => Value::Bool(v >= 0.5),
                _ => Value::F64(v),
            };
        }
        if let (Some(output), Some(gauge)) = (p.signal.gauge, &machine.gauge) {
            return Value::F64(gauge.value(output, elapsed));
        }
        let stream = (u64::from(machine.config.unit_id) << 32) | point as u64;
        let fault = machine
            .config
            .fault
            .as_ref()
            .map_or(0.0, |f| f.progress(elapsed));
        let reading = signal::evaluate(
            &p.signal,
            machine.load.at(elapsed),
            fault,
            elapsed,
            wall,
            self.seed,
            stream,
        );
        match (reading, p.tag.data_type) {
            (Reading::Text(text), _) => Value::Text(text),
            (Reading::Number(v), DataType::Bool) => Value::Bool(v >= 0.5),
            (Reading::Number(v), _) => Value::F64(v),
        }
    }

    /// Registers (or bits, as 0/1) `start .. start + count` of `table` on `unit_id` at `elapsed`.
    /// A coil or discrete input is a one-slot point, so both kinds of table share this path.
    pub fn read(
        &self,
        unit_id: u8,
        table: Table,
        start: u16,
        count: u16,
        elapsed: Duration,
        wall: SystemTime,
    ) -> Result<Vec<u16>, ExceptionCode> {
        let machine = self
            .machine(unit_id)
            .ok_or(ExceptionCode::GatewayTargetDevice)?;
        let limit = if table.is_bits() {
            firmware_config::MAX_BITS_PER_READ
        } else {
            firmware_config::MAX_REGISTERS_PER_READ
        };
        let (first, end) = checked_range(start, count, limit)?;
        let mut words = vec![0u16; usize::from(count)];
        let mut mapped = vec![false; usize::from(count)];
        for (i, point) in machine.points.iter().enumerate() {
            let tag = &point.tag;
            if tag.table != table
                || u32::from(tag.last_address()) < first
                || u32::from(tag.address) >= end
            {
                continue;
            }
            let encoded = match tag.data_type {
                DataType::Bool => {
                    let on = matches!(self.value(machine, i, elapsed, wall), Value::Bool(true));
                    vec![u16::from(on) << tag.bit.unwrap_or(0)]
                }
                _ => codec::encode_registers(tag, &self.value(machine, i, elapsed, wall))
                    .unwrap_or_else(|_| vec![0; usize::from(tag.width())]),
            };
            for (k, word) in encoded.into_iter().enumerate() {
                let address = u32::from(tag.address) + k as u32;
                if (first..end).contains(&address) {
                    let slot = (address - first) as usize;
                    // Several bit points may share a register.
                    words[slot] = if tag.data_type == DataType::Bool {
                        words[slot] | word
                    } else {
                        word
                    };
                    mapped[slot] = true;
                }
            }
        }
        if let (Table::InputRegister, Some(waveform)) = (table, &machine.config.waveform) {
            let seed = self.seed ^ u64::from(machine.config.unit_id) << 32;
            machine.waveform_block.overlay(
                waveform,
                (elapsed, seed),
                first,
                &mut words,
                &mut mapped,
            );
        }
        apply_written(machine, table, first, &mut words, &mut mapped);
        if machine.config.strict && mapped.contains(&false) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        Ok(words)
    }

    /// Stores written holding registers or coils (as 0/1 words).
    pub fn write(
        &self,
        unit_id: u8,
        table: Table,
        start: u16,
        words: &[u16],
    ) -> Result<(), ExceptionCode> {
        let machine = self
            .machine(unit_id)
            .ok_or(ExceptionCode::GatewayTargetDevice)?;
        let limit = if table.is_bits() { 1968 } else { 123 };
        let count = u16::try_from(words.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
        checked_range(start, count, limit)?;
        let mut written = machine.written.lock().unwrap_or_else(|e| e.into_inner());
        let mut log = machine.writes.lock().unwrap_or_else(|e| e.into_inner());
        for (k, word) in words.iter().enumerate() {
            written.insert((table, start + k as u16), *word);
            if log.len() == WRITE_LOG {
                log.pop_front();
            }
            log.push_back((table, start + k as u16, *word, Instant::now()));
        }
        Ok(())
    }
}

fn checked_range(start: u16, count: u16, limit: u16) -> Result<(u32, u32), ExceptionCode> {
    if count == 0 || count > limit {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let end = u32::from(start) + u32::from(count);
    if end > 65_536 {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok((u32::from(start), end))
}

fn apply_written(
    machine: &Machine,
    table: Table,
    first: u32,
    words: &mut [u16],
    mapped: &mut [bool],
) {
    let written = machine.written.lock().unwrap_or_else(|e| e.into_inner());
    if written.is_empty() {
        return;
    }
    for (slot, (word, is_mapped)) in words.iter_mut().zip(mapped.iter_mut()).enumerate() {
        if let Some(value) = written.get(&(table, (first + slot as u32) as u16)) {
            *word = *value;
            *is_mapped = true;
        }
    }
}

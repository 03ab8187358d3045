//! Modbus devices, serial buses and tags: what the user writes (`*Config`, straight from TOML) and
//! what the agent runs (`Device`, `Tag`, `SerialBus`: validated, wire-level, 0-based).
//!
//! Invariants of a validated [`Device`]: every tag's wire range `address .. address + width` fits in
//! the 16-bit address space, lies outside every forbidden range, and its type fits its table; the
//! per-request limits are within the protocol's (125 registers, 2000 bits).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::duration::HumanDuration;
use crate::names::{self, topic_name_error, TopicUse};
use crate::source::{ConfigError, Document, Seg};

/// Protocol limit for FC 3/4 reads.
pub const MAX_REGISTERS_PER_READ: u16 = 125;
/// Protocol limit for FC 1/2 reads.
pub const MAX_BITS_PER_READ: u16 = 2000;

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// FC 1 read, FC 5/15 write; Modicon 0xxxx.
    #[serde(alias = "coils")]
    Coil,
    /// FC 2 read; Modicon 1xxxx.
    #[serde(alias = "discrete", alias = "discrete_inputs")]
    DiscreteInput,
    /// FC 4 read; Modicon 3xxxx.
    #[serde(alias = "input", alias = "input_registers")]
    InputRegister,
    /// FC 3 read, FC 6/16 write; Modicon 4xxxx.
    #[serde(alias = "holding", alias = "holding_registers")]
    HoldingRegister,
}

impl Table {
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete_input",
            Table::InputRegister => "input_register",
            Table::HoldingRegister => "holding_register",
        }
    }

    fn from_modicon_prefix(prefix: u32) -> Option<Table> {
        match prefix {
            0 => Some(Table::Coil),
            1 => Some(Table::DiscreteInput),
            3 => Some(Table::InputRegister),
            4 => Some(Table::HoldingRegister),
            _ => None,
        }
    }
}

/// How a value is laid out in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// A coil or discrete input, or one bit of a register (`bit = n`).
    Bool,
    /// Fixed-length ASCII/UTF-8 text, two characters per register (`length` characters).
    String,
}

impl DataType {
    /// Registers used by a numeric type; `None` for bool and string (they depend on the tag).
    pub fn registers(self) -> Option<u16> {
        match self {
            DataType::U16 | DataType::I16 => Some(1),
            DataType::U32 | DataType::I32 | DataType::F32 => Some(2),
            DataType::U64 | DataType::I64 | DataType::F64 => Some(4),
            DataType::Bool | DataType::String => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::Bool => "bool",
            DataType::String => "string",
        }
    }
}

/// Order of a value that spans two or more registers, named by where the bytes of the big-endian
/// value `ABCD` arrive: `ABCD` big-endian, `CDAB` word-swapped, `BADC` byte-swapped, `DCBA`
/// little-endian. For 64-bit values the same two switches apply to four words. A device's
/// `word_order` applies only to such values; one register's bytes follow [`ByteOrder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum WordOrder {
    #[default]
    ABCD,
    CDAB,
    BADC,
    DCBA,
}

impl WordOrder {
    /// The bytes inside each register arrive low byte first.
    pub fn swaps_bytes(self) -> bool {
        matches!(self, WordOrder::BADC | WordOrder::DCBA)
    }

    /// The registers of a value arrive least significant first.
    pub fn swaps_words(self) -> bool {
        matches!(self, WordOrder::CDAB | WordOrder::DCBA)
    }
}

/// Order of the two bytes inside one register, for values of one register (u16, i16), bits of a
/// register and strings: `AB` as Modbus sends them (high byte first), `BA` swapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ByteOrder {
    #[default]
    AB,
    BA,
}

impl ByteOrder {
    /// The same layout as a [`WordOrder`] (whose byte switch is all that matters for one
    /// register).
    pub fn as_word_order(self) -> WordOrder {
        match self {
            ByteOrder::AB => WordOrder::ABCD,
            ByteOrder::BA => WordOrder::BADC,
        }
    }
}

/// How the device's manual numbers its registers. There is no default: a wrong guess shifts
/// every value by one register, so the user must say which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Addressing {
    /// Protocol offsets as sent on the wire: the first holding register is 0.
    ZeroBased,
    /// 1-based numbers within each table: the first holding register is 1.
    OneBased,
    /// Modicon numbers with the table as the leading digit: 00001 coils, 10001 discrete inputs,
    /// 30001 input registers, 40001 holding registers (six-digit 400001 also accepted).
    Modicon,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    None,
    /// The Modbus RTU default.
    #[default]
    Even,
    Odd,
}

/// An RS-485/RS-232 line shared by the RTU devices that name it.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    pub name: String,
    /// Serial device; prefer a stable `/dev/serial/by-id/...` path, ttyUSB numbers change on reboot.
    pub path: String,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Silence kept between the end of one transaction and the next request (RS-485 turnaround).
    /// Default: 3.5 character times at this baud rate, 1.75 ms above 19200 baud.
    pub inter_frame_delay: Option<HumanDuration>,
}

/// A forbidden address range, in the device's own addressing, inclusive at both ends.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ForbiddenConfig {
    /// Required unless the device uses Modicon addressing, where the leading digit says it.
    pub table: Option<Table>,
    pub from: u32,
    pub to: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    #[serde(default = "default_backoff_initial")]
    pub initial: HumanDuration,
    /// The cap; its default depends on what reconnects (see [`DEVICE_BACKOFF_MAX`] and
    /// [`BROKER_BACKOFF_MAX`]).
    #[serde(default)]
    pub max: Option<HumanDuration>,
}

/// The default cap for devices (Modbus, OPC UA): a PLC that is down is asked again at least once
/// a minute.
pub const DEVICE_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(60);
/// The default cap for the broker: users expect the uplink back within seconds of the broker,
/// and one connection attempt every few seconds costs a broker nothing.
pub const BROKER_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(10);

impl BackoffConfig {
    pub fn max_or(&self, default_max: std::time::Duration) -> std::time::Duration {
        self.max.map_or(default_max, HumanDuration::get)
    }

    pub fn to_backoff(&self, default_max: std::time::Duration) -> Backoff {
        Backoff {
            initial: self.initial.get(),
            max: self.max_or(default_max),
        }
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: default_backoff_initial(),
            max: None,
        }
    }
}

/// A Modbus device: either TCP (`host`, `port`) or a unit on a serial bus (`bus`).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub name: String,
    /// Modbus TCP host name or IP address.
    pub host: Option<String>,
    /// Modbus TCP port (default 502).
    pub port: Option<u16>,
    /// Name of a `[[buses]]` entry, for Modbus RTU.
    pub bus: Option<String>,
    /// Unit (slave) id: 1–247 on a serial bus; TCP devices often use 1, 0 or 255.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    pub addressing: Addressing,
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// Time allowed for one request's answer.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Default order of this device's values of two or more registers (32- and 64-bit).
    #[serde(default)]
    pub word_order: WordOrder,
    /// Default order of the two bytes inside one register, for 16-bit values, bits of a register
    /// and strings.
    #[serde(default)]
    pub byte_order: ByteOrder,
    #[serde(default = "default_max_registers")]
    pub max_registers_per_request: u16,
    #[serde(default = "default_max_bits")]
    pub max_bits_per_request: u16,
    /// Largest run of unmapped registers (or bits) one request may read across to save a request.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Address ranges that must never be read.
    #[serde(default)]
    pub forbidden: Vec<ForbiddenConfig>,
    /// Read every tag with its own request (for devices that reject any multi-tag read).
    #[serde(default)]
    pub one_request_per_tag: bool,
    /// When a coalesced read is refused with "illegal data address", read its tags one by one
    /// from then on instead of failing them all.
    #[serde(default = "default_true")]
    pub split_rejected_reads: bool,
    /// Pause after connecting before the first request (some devices need it).
    #[serde(default)]
    pub connect_delay: HumanDuration,
    #[serde(default)]
    pub backoff: BackoffConfig,
    #[serde(default)]
    pub tags: Vec<TagConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TagConfig {
    /// Unique across the whole configuration; letters, digits and `_ - . : /`.
    pub name: String,
    /// Required unless the device uses Modicon addressing.
    pub table: Option<Table>,
    /// In the device's addressing (see `addressing`).
    pub address: u32,
    /// Default: `bool` for coils and discrete inputs, `u16` for registers.
    #[serde(rename = "type")]
    pub data_type: Option<DataType>,
    /// Overrides the device's `word_order`, for values of two or more registers.
    pub order: Option<WordOrder>,
    /// Overrides the device's `byte_order`, for 16-bit values, bits of a register and strings.
    pub byte_order: Option<ByteOrder>,
    /// For `bool` in a register: bit number 0 (least significant) to 15.
    pub bit: Option<u8>,
    /// For `string`: number of characters (bytes).
    pub length: Option<u16>,
    /// engineering value = raw × scale + offset
    pub scale: Option<f64>,
    pub offset: Option<f64>,
    /// Engineering unit, e.g. "bar", "°C", "mm/s".
    pub unit: Option<String>,
    /// Overrides the device's `poll_interval`.
    pub poll_interval: Option<HumanDuration>,
    /// A block of `count` values of `type` in consecutive registers (a waveform or a spectrum),
    /// read as one array sample; a block longer than `max_registers_per_request` is read in
    /// several requests, one after the other.
    pub count: Option<u32>,
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_unit_id() -> u8 {
    1
}
fn default_poll_interval() -> HumanDuration {
    HumanDuration::from_millis(1000)
}
fn default_timeout() -> HumanDuration {
    HumanDuration::from_millis(1000)
}
fn default_max_registers() -> u16 {
    MAX_REGISTERS_PER_READ
}
fn default_max_bits() -> u16 {
    MAX_BITS_PER_READ
}
fn default_max_gap() -> u16 {
    16
}
fn default_true() -> bool {
    true
}
fn default_backoff_initial() -> HumanDuration {
    HumanDuration::from_millis(1000)
}

/// A validated serial bus.
#[derive(Debug, Clone, PartialEq)]
pub struct SerialBus {
    pub name: String,
    pub path: String,
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
    pub inter_frame_delay: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    Tcp {
        host: String,
        port: u16,
    },
    /// Index into the plan's buses.
    Rtu {
        bus: usize,
    },
}

/// A validated, wire-level forbidden range (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden {
    pub table: Table,
    pub first: u16,
    pub last: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

/// A validated device.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub name: String,
    pub link: Link,
    pub unit_id: u8,
    pub addressing: Addressing,
    pub timeout: Duration,
    pub connect_delay: Duration,
    pub max_registers_per_request: u16,
    pub max_bits_per_request: u16,
    pub max_gap: u16,
    pub forbidden: Vec<Forbidden>,
    pub one_request_per_tag: bool,
    pub split_rejected_reads: bool,
    pub backoff: Backoff,
    /// Shared by the plan and the line that polls the device: one copy of each tag's
    /// configuration however many parts of the agent hold the device.
    pub tags: Arc<[Tag]>,
}

/// Linear conversion from the raw value to engineering units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaling {
    pub scale: f64,
    pub offset: f64,
}

/// A validated tag: wire address (0-based protocol offset), resolved type and order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub name: String,
    pub table: Table,
    /// 0-based protocol address.
    pub address: u16,
    /// The address as the user wrote it (shown by `read` so that an addressing mismatch is
    /// obvious).
    pub written_address: u32,
    pub data_type: DataType,
    /// The layout applied. For a value of two or more registers, the word order; for one register,
    /// a bit of one or a string, the tag's byte order (`ABCD` for `AB`, `BADC` for `BA`: only the
    /// byte switch matters).
    pub order: WordOrder,
    pub bit: Option<u8>,
    /// For strings: characters.
    pub length: u16,
    pub scaling: Option<Scaling>,
    pub unit: Option<String>,
    pub poll_interval: Duration,
    /// Values in the tag: 1, or a block's `count`.
    pub count: u16,
}

impl Tag {
    /// Whether the tag is a block of values (an array sample), not one value.
    pub fn is_block(&self) -> bool {
        self.count > 1
    }

    /// Registers one value of the tag occupies (a block's element).
    pub fn element_width(&self) -> u16 {
        if self.table.is_bits() {
            return 1;
        }
        match self.data_type {
            DataType::Bool => 1,
            DataType::String => self.length.div_ceil(2),
            numeric => numeric.registers().unwrap_or(1),
        }
    }

    /// Whether the tag's value spans two or more registers (and so follows a word order).
    pub fn spans_registers(&self) -> bool {
        !self.table.is_bits() && self.data_type.registers().is_some_and(|n| n > 1)
    }

    /// The order applied, as `read` shows it: `ABCD`… for multi-register values, `AB`/`BA` for
    /// one register, a bit of one and strings; `None` for coils and discrete inputs.
    pub fn order_label(&self) -> Option<&'static str> {
        if self.table.is_bits() {
            return None;
        }
        Some(match (self.spans_registers(), self.order) {
            (true, WordOrder::ABCD) => "ABCD",
            (true, WordOrder::CDAB) => "CDAB",
            (true, WordOrder::BADC) => "BADC",
            (true, WordOrder::DCBA) => "DCBA",
            (false, order) if order.swaps_bytes() => "BA",
            (false, _) => "AB",
        })
    }

    /// Registers (or bits, for coils and discrete inputs) this tag occupies.
    pub fn width(&self) -> u16 {
        self.element_width() * self.count
    }

    /// Last address occupied (inclusive).
    pub fn last_address(&self) -> u16 {
        self.address + (self.width() - 1)
    }
}

/// RTU's silent interval: 3.5 character times, fixed at 1.75 ms above 19200 baud.
pub fn default_inter_frame_delay(
    baud: u32,
    parity: Parity,
    data_bits: u8,
    stop_bits: u8,
) -> Duration {
    if baud > 19_200 || baud == 0 {
        return Duration::from_micros(1750);
    }
    let bits_per_char =
        1 + u32::from(data_bits) + u32::from(parity != Parity::None) + u32::from(stop_bits);
    Duration::from_micros(u64::from(bits_per_char) * 3_500_000 / 10 / u64::from(baud) * 10)
}

/// Collects validation errors for one document.
pub(crate) struct Checker<'d, 'i> {
    pub doc: &'d Document<'i>,
    pub errors: Vec<ConfigError>,
}

impl Checker<'_, '_> {
    pub fn err(&mut self, path: &[Seg<'_>], component: &str, message: impl Into<String>) {
        self.errors.push(self.doc.error(path, component, message));
    }

    pub fn err_key(&mut self, path: &[Seg<'_>], component: &str, message: impl Into<String>) {
        let span = self.doc.key_span(path);
        self.errors
            .push(self.doc.error_at(span, component, message));
    }

    fn positive(
        &mut self,
        path: &[Seg<'_>],
        component: &str,
        what: &str,
        value: Duration,
        min: Duration,
    ) {
        if value < min {
            self.err(
                path,
                component,
                format!(
                    "{what} must be at least {}",
                    humantime::format_duration(min)
                ),
            );
        }
    }
}

pub(crate) fn validate_buses(
    check: &mut Checker<'_, '_>,
    buses: &[(usize, BusConfig)],
) -> Vec<SerialBus> {
    let mut names = HashSet::new();
    let mut paths = HashMap::new();
    let mut valid = Vec::new();
    for (i, bus) in buses {
        let here = |key| [Seg::Key("buses"), Seg::Index(*i), Seg::Key(key)];
        let component = format!("bus {:?}", bus.name);
        if !names.insert(bus.name.clone()) {
            check.err(&here("name"), &component, "duplicate bus name");
        }
        if let Some(other) = paths.insert(bus.path.clone(), bus.name.clone()) {
            check.err(
                &here("path"),
                &component,
                format!("path {:?} is already used by bus {other:?}", bus.path),
            );
        }
        if bus.path.trim().is_empty() {
            check.err(&here("path"), &component, "path must name a serial device");
        }
        if bus.baud == 0 {
            check.err(&here("baud"), &component, "baud must be positive");
        }
        if !(5..=8).contains(&bus.data_bits) {
            check.err(
                &here("data_bits"),
                &component,
                "data_bits must be 5, 6, 7 or 8",
            );
        }
        if !(1..=2).contains(&bus.stop_bits) {
            check.err(&here("stop_bits"), &component, "stop_bits must be 1 or 2");
        }
        valid.push(SerialBus {
            name: bus.name.clone(),
            path: bus.path.clone(),
            baud: bus.baud,
            parity: bus.parity,
            data_bits: bus.data_bits,
            stop_bits: bus.stop_bits,
            inter_frame_delay: bus
                .inter_frame_delay
                .map(HumanDuration::get)
                .unwrap_or_else(|| {
                    default_inter_frame_delay(bus.baud, bus.parity, bus.data_bits, bus.stop_bits)
                }),
        });
    }
    valid
}

/// A device and its tags as read from the file.
pub(crate) type DeviceParts = crate::SourceParts<DeviceConfig, TagConfig>;

pub(crate) fn validate_devices(
    check: &mut Checker<'_, '_>,
    buses: &[SerialBus],
    devices: &[DeviceParts],
) -> Vec<Device> {
    let mut device_names = HashSet::new();
    let mut tag_names: HashMap<String, String> = HashMap::new();
    let mut valid = Vec::new();
    for parts in devices {
        let Some(device) = &parts.config else {
            continue;
        };
        let i = parts.index;
        let here = |key| [Seg::Key("devices"), Seg::Index(i), Seg::Key(key)];
        let component = format!("device {:?}", device.name);
        let before = check.errors.len();

        if !device_names.insert(device.name.clone()) {
            check.err(&here("name"), &component, "duplicate device name");
        } else if let Some(problem) = topic_name_error("device name", &device.name, TopicUse::Level)
        {
            check.err(&here("name"), &component, problem);
        }
        let link = match (&device.host, &device.bus) {
            (Some(host), None) => {
                if host.trim().is_empty() {
                    check.err(&here("host"), &component, "host must not be empty");
                }
                if device.port == Some(0) {
                    check.err(&here("port"), &component, "port must be 1–65535");
                }
                Some(Link::Tcp {
                    host: host.clone(),
                    port: device.port.unwrap_or(502),
                })
            }
            (None, Some(bus)) => {
                if device.port.is_some() {
                    check.err_key(
                        &here("port"),
                        &component,
                        "port is for Modbus TCP; this device is on a serial bus",
                    );
                }
                if !(1..=247).contains(&device.unit_id) {
                    check.err(
                        &here("unit_id"),
                        &component,
                        "unit_id on a serial bus must be 1–247 (0 is broadcast)",
                    );
                }
                match buses.iter().position(|b| &b.name == bus) {
                    Some(index) => Some(Link::Rtu { bus: index }),
                    None => {
                        let known: Vec<_> = buses.iter().map(|b| b.name.as_str()).collect();
                        check.err(
                            &here("bus"),
                            &component,
                            format!("unknown bus {bus:?} (defined buses: {known:?})"),
                        );
                        None
                    }
                }
            }
            (Some(_), Some(_)) => {
                check.err_key(
                    &here("bus"),
                    &component,
                    "give either host (Modbus TCP) or bus (Modbus RTU), not both",
                );
                None
            }
            (None, None) => {
                check.err(
                    &[Seg::Key("devices"), Seg::Index(i)],
                    &component,
                    "missing host (Modbus TCP) or bus (Modbus RTU)",
                );
                None
            }
        };
        check.positive(
            &here("poll_interval"),
            &component,
            "poll_interval",
            device.poll_interval.get(),
            Duration::from_millis(10),
        );
        check.positive(
            &here("timeout"),
            &component,
            "timeout",
            device.timeout.get(),
            Duration::from_millis(1),
        );
        if !(1..=MAX_REGISTERS_PER_READ).contains(&device.max_registers_per_request) {
            check.err(
                &here("max_registers_per_request"),
                &component,
                format!("max_registers_per_request must be 1–{MAX_REGISTERS_PER_READ}"),
            );
        }
        if !(1..=MAX_BITS_PER_READ).contains(&device.max_bits_per_request) {
            check.err(
                &here("max_bits_per_request"),
                &component,
                format!("max_bits_per_request must be 1–{MAX_BITS_PER_READ}"),
            );
        }
        check.positive(
            &here("backoff"),
            &component,
            "backoff.initial",
            device.backoff.initial.get(),
            Duration::from_millis(1),
        );
        if device.backoff.initial.get() > device.backoff.max_or(DEVICE_BACKOFF_MAX) {
            check.err(
                &here("backoff"),
                &component,
                "backoff.initial must not exceed backoff.max",
            );
        }

        let mut forbidden = Vec::new();
        for (k, range) in device.forbidden.iter().enumerate() {
            let path = [
                Seg::Key("devices"),
                Seg::Index(i),
                Seg::Key("forbidden"),
                Seg::Index(k),
            ];
            let first = resolve_address(device.addressing, range.table, range.from);
            let last = resolve_address(device.addressing, range.table, range.to);
            match (first, last) {
                (Ok((table, first)), Ok((last_table, last)))
                    if table == last_table && first <= last =>
                {
                    forbidden.push(Forbidden { table, first, last });
                }
                (Ok((table, _)), Ok((last_table, _))) if table != last_table => {
                    check.err(
                        &path,
                        &component,
                        "forbidden range starts and ends in different tables",
                    );
                }
                (Ok(_), Ok(_)) => check.err(&path, &component, "forbidden range has from > to"),
                (Err(e), _) | (_, Err(e)) => {
                    check.err(&path, &component, format!("forbidden range: {e}"))
                }
            }
        }

        let mut tags = Vec::new();
        for (j, tag) in &parts.tags {
            let path = |key| {
                [
                    Seg::Key("devices"),
                    Seg::Index(i),
                    Seg::Key("tags"),
                    Seg::Index(*j),
                    Seg::Key(key),
                ]
            };
            let component = format!("device {:?} tag {:?}", device.name, tag.name);
            let context = TagContext {
                addressing: device.addressing,
                word_order: device.word_order,
                byte_order: device.byte_order,
                poll_interval: device.poll_interval.get(),
                max_registers_per_request: device.max_registers_per_request,
                max_bits_per_request: device.max_bits_per_request,
                forbidden: &forbidden,
            };
            if let Some(tag) = validate_tag(check, &context, tag, &component, &path) {
                match tag_names.get(&tag.name) {
                    Some(owner) => check.err(
                        &path("name"),
                        &component,
                        format!("duplicate tag name (also on device {owner:?})"),
                    ),
                    None => {
                        tag_names.insert(tag.name.clone(), device.name.clone());
                    }
                }
                tags.push(tag);
            }
        }
        if parts.tag_count == 0 {
            check.err(
                &[Seg::Key("devices"), Seg::Index(i)],
                &component,
                "device has no tags ([[devices.tags]])",
            );
        }

        if let (Some(link), true) = (link, check.errors.len() == before) {
            valid.push(Device {
                name: device.name.clone(),
                link,
                unit_id: device.unit_id,
                addressing: device.addressing,
                timeout: device.timeout.get(),
                connect_delay: device.connect_delay.get(),
                max_registers_per_request: device.max_registers_per_request,
                max_bits_per_request: device.max_bits_per_request,
                max_gap: device.max_gap,
                forbidden,
                one_request_per_tag: device.one_request_per_tag,
                split_rejected_reads: device.split_rejected_reads,
                backoff: device.backoff.to_backoff(DEVICE_BACKOFF_MAX),
                tags: tags.into(),
            });
        }
    }
    valid
}

/// What a tag is resolved against: its device's conventions and limits.
#[derive(Debug, Clone, Copy)]
pub struct TagContext<'a> {
    pub addressing: Addressing,
    pub word_order: WordOrder,
    pub byte_order: ByteOrder,
    pub poll_interval: Duration,
    pub max_registers_per_request: u16,
    pub max_bits_per_request: u16,
    pub forbidden: &'a [Forbidden],
}

/// One problem with a tag: the field it concerns and whether to point at the key (the field
/// should not be there) or at its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagIssue {
    pub field: &'static str,
    pub message: String,
    pub at_key: bool,
}

impl TagIssue {
    fn value(field: &'static str, message: impl Into<String>) -> Self {
        TagIssue {
            field,
            message: message.into(),
            at_key: false,
        }
    }

    fn key(field: &'static str, message: impl Into<String>) -> Self {
        TagIssue {
            field,
            message: message.into(),
            at_key: true,
        }
    }
}

fn validate_tag<'p>(
    check: &mut Checker<'_, '_>,
    context: &TagContext<'_>,
    tag: &TagConfig,
    component: &str,
    path: &dyn Fn(&'p str) -> [Seg<'p>; 5],
) -> Option<Tag> {
    match resolve_tag(context, tag) {
        Ok(tag) => Some(tag),
        Err(issues) => {
            for issue in issues {
                if issue.at_key {
                    check.err_key(&path(issue.field), component, issue.message);
                } else {
                    check.err(&path(issue.field), component, issue.message);
                }
            }
            None
        }
    }
}

/// Checks a tag against its device and turns it into a wire-level [`Tag`].
pub fn resolve_tag(context: &TagContext<'_>, tag: &TagConfig) -> Result<Tag, Vec<TagIssue>> {
    let mut issues = Vec::new();
    if let Some(problem) = names::tag_name_problem(&tag.name) {
        issues.push(TagIssue::value("name", problem));
    }
    let (table, address) = resolve_address(context.addressing, tag.table, tag.address)
        .map_err(|message| vec![TagIssue::value("address", message)])?;
    let data_type = tag.data_type.unwrap_or(if table.is_bits() {
        DataType::Bool
    } else {
        DataType::U16
    });
    if table.is_bits() && data_type != DataType::Bool {
        issues.push(TagIssue::value(
            "type",
            format!(
                "{} holds single bits: type must be bool, not {}",
                table.name(),
                data_type.name()
            ),
        ));
    }
    if table.is_bits() {
        for (field, given) in [
            ("order", tag.order.is_some()),
            ("byte_order", tag.byte_order.is_some()),
        ] {
            if given {
                issues.push(TagIssue::key(
                    field,
                    format!("{field} does not apply to a {}", table.name()),
                ));
            }
        }
    }
    let spans_registers = !table.is_bits() && data_type.registers().is_some_and(|n| n > 1);
    if !table.is_bits() && !spans_registers && tag.order.is_some() {
        issues.push(TagIssue::key(
            "order",
            format!(
                "order is for values of two or more registers; a {} is one register{}, whose two bytes follow byte_order = \"AB\" (as sent) or \"BA\" (swapped)",
                data_type.name(),
                if data_type == DataType::String { " each" } else { "" }
            ),
        ));
    }
    if spans_registers && tag.byte_order.is_some() {
        issues.push(TagIssue::key(
            "byte_order",
            format!(
                "byte_order is for one register; a {} takes order = \"ABCD\", \"CDAB\", \"BADC\" (bytes swapped in each register) or \"DCBA\"",
                data_type.name()
            ),
        ));
    }
    match (tag.bit, data_type) {
        (Some(_), _) if table.is_bits() => {
            issues.push(TagIssue::key(
                "bit",
                format!(
                    "bit selects a bit of a register; a {} is already one bit",
                    table.name()
                ),
            ));
        }
        (Some(bit), DataType::Bool) if bit > 15 => {
            issues.push(TagIssue::value("bit", "bit must be 0–15"))
        }
        (Some(_), other) if other != DataType::Bool => {
            issues.push(TagIssue::key(
                "bit",
                format!("bit needs type = \"bool\", not {}", other.name()),
            ));
        }
        (None, DataType::Bool) if !table.is_bits() => {
            issues.push(TagIssue::value(
                "type",
                "a bool in a register needs bit = 0–15",
            ));
        }
        _ => {}
    }
    let length = match (data_type, tag.length) {
        (DataType::String, Some(0) | None) => {
            issues.push(TagIssue::value(
                "type",
                "a string needs length = number of characters (1 or more)",
            ));
            0
        }
        (DataType::String, Some(length)) => length,
        (_, Some(_)) => {
            issues.push(TagIssue::key(
                "length",
                "length applies only to type = \"string\"",
            ));
            0
        }
        (_, None) => 0,
    };
    let order = if spans_registers {
        tag.order.unwrap_or(context.word_order)
    } else {
        tag.byte_order.unwrap_or(context.byte_order).as_word_order()
    };
    let scaling = if tag.scale.is_some() || tag.offset.is_some() {
        if matches!(data_type, DataType::Bool | DataType::String) {
            let field = if tag.scale.is_some() {
                "scale"
            } else {
                "offset"
            };
            issues.push(TagIssue::key(
                field,
                format!(
                    "scale and offset apply to numbers, not {}",
                    data_type.name()
                ),
            ));
        }
        let scaling = Scaling {
            scale: tag.scale.unwrap_or(1.0),
            offset: tag.offset.unwrap_or(0.0),
        };
        if !scaling.scale.is_finite() || scaling.scale == 0.0 {
            issues.push(TagIssue::value(
                "scale",
                "scale must be a finite, non-zero number",
            ));
        }
        if !scaling.offset.is_finite() {
            issues.push(TagIssue::value("offset", "offset must be finite"));
        }
        Some(scaling)
    } else {
        None
    };
    let count = block_count(tag, table, data_type, &mut issues);
    let poll_interval = tag
        .poll_interval
        .map_or(context.poll_interval, HumanDuration::get);
    if poll_interval < Duration::from_millis(10) {
        issues.push(TagIssue::value(
            "poll_interval",
            "poll_interval must be at least 10ms",
        ));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let resolved = Tag {
        name: tag.name.clone(),
        table,
        address,
        written_address: tag.address,
        data_type,
        order,
        bit: tag.bit,
        length,
        scaling,
        unit: tag.unit.clone(),
        poll_interval,
        count,
    };
    if u32::from(resolved.address) + u32::from(resolved.width()) > 65_536 {
        return Err(vec![TagIssue::value(
            "address",
            format!(
                "{} occupies {} registers from offset {} and runs past 65535",
                data_type.name(),
                resolved.width(),
                address
            ),
        )]);
    }
    let limit = if table.is_bits() {
        context.max_bits_per_request
    } else {
        context.max_registers_per_request
    };
    // A block may take several requests; one value must fit in one.
    if !resolved.is_block() && resolved.width() > limit {
        return Err(vec![TagIssue::value(
            "length",
            format!(
                "tag needs {} registers but the device allows {limit} per request",
                resolved.width()
            ),
        )]);
    }
    if let Some(range) = context.forbidden.iter().find(|f| {
        f.table == table && f.first <= resolved.last_address() && resolved.address <= f.last
    }) {
        return Err(vec![TagIssue::value(
            "address",
            format!(
                "tag reads inside the forbidden range {}–{} (wire offsets) of {}",
                range.first,
                range.last,
                table.name()
            ),
        )]);
    }
    Ok(resolved)
}

/// A tag's number of values: 1, or a block's `count` (2 or more numbers in registers, at most
/// 65,535 registers in all).
fn block_count(
    tag: &TagConfig,
    table: Table,
    data_type: DataType,
    issues: &mut Vec<TagIssue>,
) -> u16 {
    let Some(count) = tag.count else { return 1 };
    let problem = if table.is_bits() {
        Some(format!(
            "count makes a block of registers; a {} holds single bits",
            table.name()
        ))
    } else if matches!(data_type, DataType::Bool | DataType::String) {
        Some(format!(
            "a block (count) holds numbers, not {}",
            data_type.name()
        ))
    } else if count < 2 {
        Some("count must be 2 or more (one value needs no count)".to_string())
    } else {
        let width = u32::from(data_type.registers().unwrap_or(1)) * count;
        (width > u32::from(u16::MAX)).then(|| {
            format!(
                "{count} values of {} take {width} registers; a block takes at most 65535",
                data_type.name()
            )
        })
    };
    match problem {
        Some(message) => {
            issues.push(TagIssue::value("count", message));
            1
        }
        None => count as u16,
    }
}

/// Turns an address in the device's convention into a table and a 0-based wire offset.
pub fn resolve_address(
    addressing: Addressing,
    table: Option<Table>,
    address: u32,
) -> Result<(Table, u16), String> {
    let explicit = |table: Option<Table>| {
        table.ok_or_else(|| "table is required with this device's addressing (coil, discrete_input, input_register or holding_register)".to_string())
    };
    match addressing {
        Addressing::ZeroBased => {
            let table = explicit(table)?;
            u16::try_from(address).map(|a| (table, a)).map_err(|_| {
                format!("address {address} is outside 0–65535 (device addressing is zero_based)")
            })
        }
        Addressing::OneBased => {
            let table = explicit(table)?;
            match address {
                1..=65_536 => Ok((table, (address - 1) as u16)),
                0 => Err("address 0 does not exist with one_based addressing (the first register is 1); did you mean addressing = \"zero_based\"?".into()),
                _ => Err(format!("address {address} is outside 1–65536 (device addressing is one_based)")),
            }
        }
        Addressing::Modicon => {
            let (prefix, index, digits) = if address >= 100_000 {
                (address / 100_000, address % 100_000, 6)
            } else {
                (address / 10_000, address % 10_000, 5)
            };
            let Some(modicon_table) = Table::from_modicon_prefix(prefix) else {
                return Err(format!("{address} is not a Modicon address: the leading digit must be 0 (coil), 1 (discrete input), 3 (input register) or 4 (holding register)"));
            };
            if index == 0 || (digits == 6 && index > 65_536) {
                return Err(format!("{address} is not a Modicon address: numbering within a table starts at 1 (e.g. 40001)"));
            }
            if let Some(table) = table {
                if table != modicon_table {
                    return Err(format!(
                        "{address} is a {} in Modicon notation but table = {}",
                        modicon_table.name(),
                        table.name()
                    ));
                }
            }
            Ok((modicon_table, (index - 1) as u16))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addressing_conventions_map_to_wire_offsets() {
        use Addressing::*;
        use Table::*;
        assert_eq!(
            resolve_address(ZeroBased, Some(HoldingRegister), 0),
            Ok((HoldingRegister, 0))
        );
        assert_eq!(
            resolve_address(OneBased, Some(InputRegister), 1),
            Ok((InputRegister, 0))
        );
        assert_eq!(
            resolve_address(OneBased, Some(InputRegister), 65_536),
            Ok((InputRegister, 65_535))
        );
        assert_eq!(
            resolve_address(Modicon, None, 40_001),
            Ok((HoldingRegister, 0))
        );
        assert_eq!(
            resolve_address(Modicon, None, 30_010),
            Ok((InputRegister, 9))
        );
        assert_eq!(
            resolve_address(Modicon, None, 10_005),
            Ok((DiscreteInput, 4))
        );
        assert_eq!(resolve_address(Modicon, None, 17), Ok((Coil, 16)));
        assert_eq!(
            resolve_address(Modicon, None, 465_536),
            Ok((HoldingRegister, 65_535))
        );
        assert!(resolve_address(Modicon, None, 20_001)
            .unwrap_err()
            .contains("leading digit"));
        assert!(resolve_address(Modicon, None, 40_000)
            .unwrap_err()
            .contains("starts at 1"));
        assert!(resolve_address(Modicon, Some(InputRegister), 40_001)
            .unwrap_err()
            .contains("table = input_register"));
        assert!(resolve_address(OneBased, Some(Coil), 0)
            .unwrap_err()
            .contains("zero_based"));
        assert!(resolve_address(ZeroBased, Some(Coil), 65_536).is_err());
        assert!(resolve_address(ZeroBased, None, 1)
            .unwrap_err()
            .contains("table is required"));
    }

    #[test]
    fn inter_frame_delay_is_three_and_a_half_characters() {
        // 9600 8E1: 11 bits per character → 3.5 × 11 / 9600 s ≈ 4.01 ms
        let d = default_inter_frame_delay(9600, Parity::Even, 8, 1);
        assert!((4000..=4020).contains(&d.as_micros()), "{d:?}");
        assert_eq!(
            default_inter_frame_delay(115_200, Parity::None, 8, 1),
            Duration::from_micros(1750)
        );
    }
}

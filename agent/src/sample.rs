//! What acquisition produces: a value of one tag at one moment, with a quality that says how far
//! to trust it. Transport failures and device answers are different qualities, never confused.

use std::fmt;
use std::time::SystemTime;

/// Index of a tag in the plan, in device order then tag order. Stable for one loaded plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagId(pub u32);

/// A decoded engineering value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Text(String),
}

impl Value {
    /// The value as a number, for features and limits (`true` is 1).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Bool(b) => Some(f64::from(u8::from(b))),
            Value::I64(v) => Some(v as f64),
            Value::U64(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            Value::Text(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            // Up to 6 significant decimals without trailing noise.
            Value::F64(v) => write!(f, "{}", (v * 1e6).round() / 1e6),
            Value::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// How far a sample can be trusted, and why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quality {
    Good,
    /// The device answered with a Modbus exception (the code is kept: 2 = illegal data address,
    /// 6 = device busy, ...). The line works; the request or the device state is the problem.
    Exception(u8),
    /// No answer within the timeout.
    Timeout,
    /// Connection refused, reset, serial port missing: the line is the problem.
    Transport,
    /// An answer that is not valid Modbus for this request (garbage, wrong length, wrong id).
    Malformed,
    /// Not read at its due time because the device is offline and waiting to reconnect.
    Stale,
}

impl Quality {
    pub fn is_good(self) -> bool {
        self == Quality::Good
    }

    /// Failures of the transport (timeout, connection, garbage) as opposed to device answers.
    pub fn is_transport_failure(self) -> bool {
        matches!(
            self,
            Quality::Timeout | Quality::Transport | Quality::Malformed
        )
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quality::Good => f.write_str("good"),
            Quality::Exception(code) => {
                write!(f, "exception {code:#04x} ({})", exception_name(*code))
            }
            Quality::Timeout => f.write_str("timeout"),
            Quality::Transport => f.write_str("transport error"),
            Quality::Malformed => f.write_str("malformed answer"),
            Quality::Stale => f.write_str("stale"),
        }
    }
}

/// The Modbus specification's names for exception codes.
pub fn exception_name(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        5 => "acknowledge",
        6 => "server device busy",
        8 => "memory parity error",
        0x0a => "gateway path unavailable",
        0x0b => "gateway target device failed to respond",
        _ => "unknown exception",
    }
}

/// One reading of one tag. `value` is present only when `quality` is good.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub tag: TagId,
    pub timestamp: SystemTime,
    pub value: Option<Value>,
    pub quality: Quality,
}

//! What acquisition produces: a value of one tag at one moment, with a quality that says how far
//! to trust it. Transport failures and device answers are different qualities, never confused.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// Index of a tag in the plan, in device order then tag order. Stable for one loaded plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagId(pub u32);

/// A decoded engineering value.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Value {
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Text(String),
    /// An OPC UA DateTime.
    Time(SystemTime),
    /// An OPC UA array (a waveform, a recipe): one sample, shared rather than copied by every
    /// consumer of the sample bus.
    Array(Arc<[Value]>),
}

impl Value {
    /// The value as a number, for features and limits (`true` is 1).
    #[inline(always)]
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Bool(b) => Some(f64::from(u8::from(b))),
            Value::I64(v) => Some(v as f64),
            Value::U64(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            Value::Text(_) | Value::Time(_) | Value::Array(_) => None,
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
            Value::Time(t) => write!(f, "{}", humantime::format_rfc3339_millis(*t)),
            Value::Array(items) => {
                // A waveform can hold thousands of points: show its length and the first few.
                const SHOWN: usize = 8;
                f.write_str("[")?;
                for (i, item) in items.iter().take(SHOWN).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                if items.len() > SHOWN {
                    write!(f, ", … ({} values)", items.len())?;
                }
                f.write_str("]")
            }
        }
    }
}

/// How far a sample can be trusted, and why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
    /// OPC UA: the server gave a value it is not sure of (the status code is kept, e.g.
    /// `UncertainLastUsableValue`). The value is present but feeds no score.
    Uncertain(u32),
    /// OPC UA: the server answered with a bad status for this node (e.g. `BadNodeIdUnknown`,
    /// `BadSensorFailure`, `BadUserAccessDenied`). The server works; the node is the problem.
    Bad(u32),
}

impl Quality {
    // Inlined by force, as are `as_f64` and the summaries' `badness`: every sample asks, and at
    // the release build's size optimisation a call each was about a twentieth of the agent's
    // instructions at 10,000 samples a second.
    #[inline(always)]
    pub fn is_good(self) -> bool {
        matches!(self, Quality::Good)
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
            Quality::Uncertain(code) | Quality::Bad(code) => {
                write!(f, "{} ({code:#010x})", status_name(*code))
            }
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

/// The OPC UA name of a status code (`BadNodeIdUnknown`), without its info bits.
pub fn status_name(code: u32) -> String {
    let name = opcua::types::StatusCode::from(code & 0xFFFF_0000).to_string();
    // The crate prints an unknown code as its number; say which family it belongs to.
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        match code >> 30 {
            0 => "Good".into(),
            1 => "Uncertain".into(),
            _ => "Bad".into(),
        }
    } else {
        name
    }
}

/// One reading of one tag. `value` is present when `quality` is good, and may be for uncertain.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub tag: TagId,
    /// When the value was measured: the device's (OPC UA source) timestamp when it gives one,
    /// else the moment the agent received it.
    pub timestamp: SystemTime,
    /// OPC UA: when the server last saw the value (kept beside the source timestamp).
    pub server_timestamp: Option<SystemTime>,
    pub value: Option<Value>,
    pub quality: Quality,
}

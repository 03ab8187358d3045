//! Values to and from Sparkplug metric values.
//!
//! Signed integers travel as two's complement of their width in the unsigned protobuf field
//! (`Int8` −1 is `int_value` 255, `Int32` −1 is 4294967295, `Int64` in `long_value`), as the
//! Sparkplug 3.0 specification and Eclipse Tahu do; decoding truncates to the width first, so
//! sign-extended values from other encoders read the same. `DateTime` is milliseconds since the
//! Unix epoch in `long_value`; `DoubleArray` is little-endian IEEE 754 doubles in `bytes_value`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::proto::{DataType, MetricValue};
use crate::sample::{Quality, Value};

/// The type a value travels as when the configuration does not say (OPC UA tags).
pub fn datatype_of(value: &Value) -> DataType {
    match value {
        Value::Bool(_) => DataType::Boolean,
        Value::I64(_) => DataType::Int64,
        Value::U64(_) => DataType::UInt64,
        Value::F64(_) => DataType::Double,
        Value::Text(_) => DataType::String,
        Value::Time(_) => DataType::DateTime,
        Value::Array(_) => DataType::DoubleArray,
    }
}

/// Milliseconds since the Unix epoch.
pub fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn integer(value: &Value) -> Option<i128> {
    match value {
        Value::Bool(b) => Some(i128::from(*b)),
        Value::I64(v) => Some(i128::from(*v)),
        Value::U64(v) => Some(i128::from(*v)),
        Value::F64(v) if v.is_finite() => Some(v.round() as i128),
        _ => None,
    }
}

/// `value` as a metric value of `datatype`; `None` when it cannot be one (the metric is then sent
/// as null).
pub fn encode(datatype: DataType, value: &Value) -> Option<MetricValue> {
    use DataType as T;
    Some(match datatype {
        T::Int8 => MetricValue::IntValue(u32::from(i8::try_from(integer(value)?).ok()? as u8)),
        T::Int16 => MetricValue::IntValue(u32::from(i16::try_from(integer(value)?).ok()? as u16)),
        T::Int32 => MetricValue::IntValue(i32::try_from(integer(value)?).ok()? as u32),
        T::Int64 => MetricValue::LongValue(i64::try_from(integer(value)?).ok()? as u64),
        T::UInt8 => MetricValue::IntValue(u32::from(u8::try_from(integer(value)?).ok()?)),
        T::UInt16 => MetricValue::IntValue(u32::from(u16::try_from(integer(value)?).ok()?)),
        T::UInt32 => MetricValue::IntValue(u32::try_from(integer(value)?).ok()?),
        T::UInt64 => MetricValue::LongValue(u64::try_from(integer(value)?).ok()?),
        T::Float => MetricValue::FloatValue(value.as_f64()? as f32),
        T::Double => MetricValue::DoubleValue(value.as_f64()?),
        T::Boolean => match value {
            Value::Bool(b) => MetricValue::BooleanValue(*b),
            other => MetricValue::BooleanValue(other.as_f64()? != 0.0),
        },
        T::String | T::Text => match value {
            Value::Text(text) => MetricValue::StringValue(text.clone()),
            other => MetricValue::StringValue(other.to_string()),
        },
        T::DateTime => match value {
            Value::Time(at) => MetricValue::LongValue(millis(*at)),
            _ => return None,
        },
        T::DoubleArray => match value {
            Value::Array(items) => MetricValue::BytesValue(
                items
                    .iter()
                    .flat_map(|v| v.as_f64().unwrap_or(f64::NAN).to_le_bytes())
                    .collect(),
            ),
            _ => return None,
        },
    })
}

/// A metric value of `datatype` as a value (what a host's DCMD asks to write).
pub fn decode(datatype: DataType, value: &MetricValue) -> Option<Value> {
    use DataType as T;
    use MetricValue as M;
    Some(match (datatype, value) {
        (T::Int8, M::IntValue(v)) => Value::I64(i64::from(*v as u8 as i8)),
        (T::Int16, M::IntValue(v)) => Value::I64(i64::from(*v as u16 as i16)),
        (T::Int32, M::IntValue(v)) => Value::I64(i64::from(*v as i32)),
        (T::Int64, M::LongValue(v)) => Value::I64(*v as i64),
        (T::UInt8 | T::UInt16 | T::UInt32, M::IntValue(v)) => Value::U64(u64::from(*v)),
        (T::UInt64, M::LongValue(v)) => Value::U64(*v),
        (T::Float, M::FloatValue(v)) => Value::F64(f64::from(*v)),
        (T::Double, M::DoubleValue(v)) => Value::F64(*v),
        (T::Boolean, M::BooleanValue(b)) => Value::Bool(*b),
        (T::String | T::Text, M::StringValue(s)) => Value::Text(s.clone()),
        (T::DateTime, M::LongValue(ms)) => Value::Time(UNIX_EPOCH + Duration::from_millis(*ms)),
        (T::DoubleArray, M::BytesValue(bytes)) if bytes.len() % 8 == 0 => Value::Array(
            bytes
                .chunks_exact(8)
                .map(|c| Value::F64(f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
                .collect(),
        ),
        _ => return None,
    })
}

/// The OPC quality code of the metric's `Quality` property (the convention Ignition and most
/// Sparkplug hosts read): 192 good, 64 uncertain, 24 bad with a communication failure (no
/// answer, a broken line, a garbled answer, a device waiting to reconnect), 0 bad (the device or
/// server refused the value).
pub fn quality_code(quality: Quality) -> u32 {
    match quality {
        Quality::Good => 192,
        Quality::Uncertain(_) => 64,
        Quality::Timeout | Quality::Transport | Quality::Malformed | Quality::Stale => 24,
        Quality::Exception(_) | Quality::Bad(_) => 0,
    }
}

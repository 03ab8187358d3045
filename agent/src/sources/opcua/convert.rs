//! Pure conversions between OPC UA and the agent: NodeIds from the configuration, data values to
//! samples, status codes to qualities.

use std::sync::Arc;
use std::time::SystemTime;

use ::opcua::types::{
    ByteString, DataValue, DateTime, Guid, Identifier as UaIdentifier, NodeId, StatusCode, Variant,
};
use firmware_config::{Identifier, Namespace, NodeRef};

use crate::sample::{Quality, Sample, TagId, Value};

/// Why a configured node names no NodeId on this server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("the server has no namespace {0:?}")]
    NoNamespace(String),
    #[error("invalid GUID {guid:?}: {reason}")]
    Guid { guid: String, reason: String },
    #[error("invalid base64 {0:?}")]
    Base64(String),
}

/// The NodeId a configured node names on this server. `namespace_index` resolves `nsu=` URIs
/// against the server's namespace array (read at each connection); `None` means the server does
/// not know the URI (yet).
pub fn node_id(
    node: &NodeRef,
    namespace_index: impl Fn(&str) -> Option<u16>,
) -> Result<NodeId, NodeError> {
    let namespace = match &node.namespace {
        Namespace::Index(index) => *index,
        Namespace::Uri(uri) => {
            namespace_index(uri).ok_or_else(|| NodeError::NoNamespace(uri.clone()))?
        }
    };
    let identifier = match &node.identifier {
        Identifier::Numeric(i) => UaIdentifier::Numeric(*i),
        Identifier::String(s) => UaIdentifier::String(s.as_str().into()),
        Identifier::Guid(g) => {
            UaIdentifier::Guid(g.parse::<Guid>().map_err(|e| NodeError::Guid {
                guid: g.clone(),
                reason: e.to_string(),
            })?)
        }
        Identifier::Opaque(b) => UaIdentifier::ByteString(
            ByteString::from_base64(b).ok_or_else(|| NodeError::Base64(b.clone()))?,
        ),
    };
    Ok(NodeId::new(namespace, identifier))
}

/// How far to trust a value with this status. The code is kept for uncertain and bad.
pub fn quality(status: StatusCode) -> Quality {
    if status.is_good() {
        Quality::Good
    } else if status.is_uncertain() {
        Quality::Uncertain(status.bits())
    } else {
        Quality::Bad(status.bits())
    }
}

pub fn system_time(time: &DateTime) -> Option<SystemTime> {
    if time.is_null() {
        return None;
    }
    Some(SystemTime::from(time.as_chrono()))
}

/// A value the agent does not decode, which the sample reports as bad rather than guessing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("an array with empty elements")]
    EmptyElement,
    #[error("unsupported type {0}")]
    Unsupported(String),
}

/// A variant as an engineering value. `Err` names a type the agent does not decode (a structure,
/// a NodeId, ...).
pub fn value(variant: &Variant) -> Result<Option<Value>, ValueError> {
    Ok(Some(match variant {
        Variant::Empty => return Ok(None),
        Variant::Boolean(b) => Value::Bool(*b),
        Variant::SByte(v) => Value::I64(i64::from(*v)),
        Variant::Byte(v) => Value::U64(u64::from(*v)),
        Variant::Int16(v) => Value::I64(i64::from(*v)),
        Variant::UInt16(v) => Value::U64(u64::from(*v)),
        Variant::Int32(v) => Value::I64(i64::from(*v)),
        Variant::UInt32(v) => Value::U64(u64::from(*v)),
        Variant::Int64(v) => Value::I64(*v),
        Variant::UInt64(v) => Value::U64(*v),
        Variant::Float(v) => Value::F64(f64::from(*v)),
        Variant::Double(v) => Value::F64(*v),
        Variant::String(s) => Value::Text(s.as_ref().to_string()),
        Variant::LocalizedText(t) => Value::Text(t.text.as_ref().to_string()),
        Variant::DateTime(t) => match system_time(t) {
            Some(t) => Value::Time(t),
            None => return Ok(None),
        },
        Variant::Array(array) => {
            let mut items = Vec::with_capacity(array.values.len());
            for item in &array.values {
                match value(item)? {
                    Some(v) => items.push(v),
                    None => return Err(ValueError::EmptyElement),
                }
            }
            Value::Array(Arc::from(items))
        }
        other => return Err(ValueError::Unsupported(format!("{:?}", other.type_id()))),
    }))
}

/// A data value from a read or a notification as a sample of `tag`. `received` stands in for a
/// missing source timestamp.
pub fn sample(tag: TagId, data: DataValue, received: SystemTime) -> Sample {
    let status = data.status.unwrap_or(StatusCode::Good);
    let mut quality = quality(status);
    let decoded = if quality.is_good() || matches!(quality, Quality::Uncertain(_)) {
        match data.value.as_ref().map(value) {
            Some(Ok(v)) => v,
            Some(Err(_)) => {
                quality = Quality::Bad(StatusCode::BadTypeMismatch.bits());
                None
            }
            None => None,
        }
    } else {
        None
    };
    // A good status without a value says nothing: report it rather than a good empty sample.
    if decoded.is_none() && quality.is_good() {
        quality = Quality::Bad(StatusCode::BadNoData.bits());
    }
    let server_timestamp = data.server_timestamp.as_ref().and_then(system_time);
    Sample {
        tag,
        timestamp: data
            .source_timestamp
            .as_ref()
            .and_then(system_time)
            .or(server_timestamp)
            .unwrap_or(received),
        server_timestamp,
        value: decoded,
        quality,
    }
}

/// A sample for a tag the server could not serve (a failed monitored item, a failed read).
pub fn failed(tag: TagId, status: StatusCode, now: SystemTime) -> Sample {
    Sample {
        tag,
        timestamp: now,
        server_timestamp: None,
        value: None,
        quality: quality(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::opcua::types::{Array, LocalizedText, VariantScalarTypeId};
    use std::time::Duration;

    fn node(text: &str) -> NodeRef {
        text.parse().expect("node id")
    }

    #[test]
    fn node_ids_resolve_every_identifier_and_namespace_uris() {
        let uris = |uri: &str| (uri == "urn:acme:plc").then_some(4);
        assert_eq!(node_id(&node("ns=2;i=7"), uris), Ok(NodeId::new(2, 7u32)));
        assert_eq!(
            node_id(&node("nsu=urn:acme:plc;s=Temp"), uris),
            Ok(NodeId::new(4, "Temp"))
        );
        let guid =
            node_id(&node("ns=1;g=72962b91-fa75-4ae6-8d28-b404dc7daf63"), uris).expect("guid");
        assert_eq!(
            guid.to_string(),
            "ns=1;g=72962b91-fa75-4ae6-8d28-b404dc7daf63"
        );
        let opaque = node_id(&node("ns=1;b=AQID"), uris).expect("opaque");
        assert_eq!(
            opaque.identifier,
            UaIdentifier::ByteString(ByteString::from(vec![1u8, 2, 3]))
        );
        let unknown = node_id(&node("nsu=urn:other;i=1"), uris).expect_err("unknown uri");
        assert_eq!(unknown, NodeError::NoNamespace("urn:other".into()));
    }

    #[test]
    fn every_scalar_type_becomes_a_value() {
        let t = DateTime::from(chrono_time(1_700_000_000));
        let cases: Vec<(Variant, Value)> = vec![
            (Variant::Boolean(true), Value::Bool(true)),
            (Variant::SByte(-5), Value::I64(-5)),
            (Variant::Byte(250), Value::U64(250)),
            (Variant::Int16(-300), Value::I64(-300)),
            (Variant::UInt16(60_000), Value::U64(60_000)),
            (Variant::Int32(-70_000), Value::I64(-70_000)),
            (Variant::UInt32(4_000_000_000), Value::U64(4_000_000_000)),
            (Variant::Int64(i64::MIN), Value::I64(i64::MIN)),
            (Variant::UInt64(u64::MAX), Value::U64(u64::MAX)),
            (Variant::Float(1.5), Value::F64(1.5)),
            (Variant::Double(-2.25), Value::F64(-2.25)),
            (Variant::from("running"), Value::Text("running".into())),
            (
                Variant::LocalizedText(Box::new(LocalizedText::new("en", "ok"))),
                Value::Text("ok".into()),
            ),
            (
                Variant::from(t),
                Value::Time(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            ),
        ];
        for (variant, expected) in cases {
            assert_eq!(value(&variant), Ok(Some(expected)), "{variant:?}");
        }
    }

    fn chrono_time(secs: i64) -> ::opcua::types::DateTimeUtc {
        ::opcua::types::DateTimeUtc::from_timestamp(secs, 0).expect("time")
    }

    #[test]
    fn arrays_arrive_as_one_value() {
        let waveform = Array::new(
            VariantScalarTypeId::Double,
            (0..512)
                .map(|i| Variant::Double(f64::from(i) * 0.5))
                .collect::<Vec<_>>(),
        )
        .expect("array");
        let Ok(Some(Value::Array(items))) = value(&Variant::Array(Box::new(waveform))) else {
            panic!("not an array");
        };
        assert_eq!(items.len(), 512);
        assert_eq!(items[3], Value::F64(1.5));
    }

    #[test]
    fn status_codes_become_qualities_with_the_code_kept() {
        assert_eq!(quality(StatusCode::Good), Quality::Good);
        let uncertain = StatusCode::UncertainLastUsableValue;
        assert_eq!(quality(uncertain), Quality::Uncertain(uncertain.bits()));
        let bad = StatusCode::BadNodeIdUnknown;
        assert_eq!(quality(bad), Quality::Bad(bad.bits()));
        assert_eq!(
            Quality::Bad(bad.bits()).to_string(),
            "BadNodeIdUnknown (0x80340000)"
        );
    }

    #[test]
    fn samples_keep_both_timestamps_and_prefer_the_source() {
        let source = DateTime::from(chrono_time(1_000));
        let server = DateTime::from(chrono_time(1_001));
        let received = SystemTime::UNIX_EPOCH + Duration::from_secs(5_000);
        let data = DataValue {
            value: Some(Variant::Double(3.5)),
            status: Some(StatusCode::Good),
            source_timestamp: Some(source),
            server_timestamp: Some(server),
            ..Default::default()
        };
        let s = sample(TagId(3), data, received);
        assert_eq!(s.value, Some(Value::F64(3.5)));
        assert_eq!(
            s.timestamp,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000)
        );
        assert_eq!(
            s.server_timestamp,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_001))
        );

        let no_times = sample(TagId(3), DataValue::new_now(1.0f64), received);
        assert_eq!(no_times.quality, Quality::Good);

        let bare = DataValue {
            value: Some(Variant::Double(1.0)),
            ..Default::default()
        };
        assert_eq!(sample(TagId(0), bare, received).timestamp, received);
    }

    #[test]
    fn bad_and_uncertain_values_are_reported_as_such() {
        let received = SystemTime::UNIX_EPOCH;
        let bad = DataValue {
            value: Some(Variant::Double(9.0)),
            status: Some(StatusCode::BadSensorFailure),
            ..Default::default()
        };
        let s = sample(TagId(0), bad, received);
        assert_eq!(s.quality, Quality::Bad(StatusCode::BadSensorFailure.bits()));
        assert_eq!(s.value, None, "a bad value is not passed on");

        let uncertain = DataValue {
            value: Some(Variant::Double(9.0)),
            status: Some(StatusCode::UncertainSensorNotAccurate),
            ..Default::default()
        };
        let s = sample(TagId(0), uncertain, received);
        assert!(matches!(s.quality, Quality::Uncertain(_)));
        assert_eq!(s.value, Some(Value::F64(9.0)), "an uncertain value is kept");

        let structure = DataValue {
            value: Some(Variant::from(NodeId::new(1, 1u32))),
            status: Some(StatusCode::Good),
            ..Default::default()
        };
        let s = sample(TagId(0), structure, received);
        assert_eq!(s.quality, Quality::Bad(StatusCode::BadTypeMismatch.bits()));

        let empty = DataValue::default();
        assert_eq!(
            sample(TagId(0), empty, received).quality,
            Quality::Bad(StatusCode::BadNoData.bits())
        );
    }
}

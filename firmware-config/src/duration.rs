//! Durations written the way people write them: `"100ms"`, `"1s"`, `"5m"`, `"1h 30m"`.

use std::fmt;
use std::time::Duration;

#[cfg(feature = "schema")]
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};

use crate::words;

/// A duration parsed from a human-readable string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_millis(ms: u64) -> Self {
        HumanDuration(Duration::from_millis(ms))
    }

    pub const fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// The longest duration a configuration may give: a year. Nothing the agent times needs more, and
/// values near `u64::MAX` seconds overflow the moment they are added to a clock reading.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

const EXAMPLES: &str = "a duration such as \"500ms\", \"5s\", \"10m\" or \"1h 30m\"";

/// Parses a duration as the configuration writes it, with a message a user can act on.
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "expected {EXAMPLES}, found {}: a number needs a unit (ms, s, m, h, d)",
            words::quote(text)
        ));
    }
    let duration = humantime::parse_duration(trimmed).map_err(|e| {
        let why = match e {
            humantime::DurationError::NumberOverflow => "far too long".to_string(),
            other => other.to_string(),
        };
        format!("expected {EXAMPLES}, found {} ({why})", words::quote(text))
    })?;
    if duration > MAX_DURATION {
        return Err(format!(
            "{} is too long: durations are at most 366 days",
            words::quote(text)
        ));
    }
    Ok(duration)
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HumanDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXAMPLES)
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<HumanDuration, E> {
                parse(text).map(HumanDuration).map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "expected {EXAMPLES}, found the bare number {n}: write it in quotes with a unit, e.g. \"{n}s\""
                )))
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "expected {EXAMPLES}, found the bare number {n}: write it in quotes with a unit, e.g. \"{n}s\""
                )))
            }

            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "expected {EXAMPLES}, found the bare number {n}: write it in quotes with a unit"
                )))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(feature = "schema")]
impl JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration such as \"250ms\", \"2s\", \"5m\" or \"1h 30m\".",
            "pattern": "^\\s*[0-9]+\\s*[a-zµ]+(\\s*[0-9]+\\s*[a-zµ]+)*\\s*$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit_and_a_sane_size() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse(" 1h 30m "), Ok(Duration::from_secs(5400)));
        assert!(parse("5").unwrap_err().contains("a number needs a unit"));
        assert!(parse("9223372036854775807s")
            .unwrap_err()
            .contains("at most 366 days"));
        assert!(parse("99999999999999999999999s")
            .unwrap_err()
            .contains("far too long"));
        assert!(parse("367d").unwrap_err().contains("at most 366 days"));
        assert_eq!(parse("366d"), Ok(MAX_DURATION));
        assert!(parse("soon")
            .unwrap_err()
            .starts_with("expected a duration such as"));
    }
}

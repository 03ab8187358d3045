//! Everything bound upstream: the durable outbox (`[outbox]`) and the MQTT uplink (`[mqtt]`).
//!
//! The outbox and the uplink run only when `[mqtt]` is present: without a broker there is nowhere
//! to forward to, and a buffer nobody drains would only fill up and drop.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::modbus::{BackoffConfig, Checker};
use crate::names::{self, TopicUse};
use crate::source::Seg;
use crate::sparkplug::{validate_formats, FormatConfig, Formats, SparkplugConfig};
use crate::{words, Backoff, HumanDuration};

/// The durable store-and-forward buffer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Directory of the sled store. Relative paths are relative to `agent.data_dir`.
    #[serde(default = "default_outbox_dir")]
    pub dir: PathBuf,
    /// Upper bound of the records kept, e.g. "64 MiB". When full, the oldest summaries are dropped
    /// first, then the oldest events; alerts only make room for alerts. Every drop is counted and
    /// reported upstream.
    #[serde(default = "default_max_size")]
    pub max_size: ByteSize,
    /// How often appended records are flushed to disk: the most a power cut can lose.
    #[serde(default = "default_flush_interval")]
    pub flush_interval: HumanDuration,
    /// Period of the per-device tag summaries (min, max, mean, last, count, worst quality).
    #[serde(default = "default_summary_interval")]
    pub summary_interval: HumanDuration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            dir: default_outbox_dir(),
            max_size: default_max_size(),
            flush_interval: default_flush_interval(),
            summary_interval: default_summary_interval(),
        }
    }
}

fn default_outbox_dir() -> PathBuf {
    "outbox".into()
}
fn default_max_size() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_flush_interval() -> HumanDuration {
    HumanDuration::from_millis(1000)
}
fn default_summary_interval() -> HumanDuration {
    HumanDuration::from_millis(60_000)
}

/// A validated outbox section.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbox {
    /// Absolute, or relative to the working directory when `agent.data_dir` is relative.
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub flush_interval: Duration,
    pub summary_interval: Duration,
}

/// The MQTT broker connection and topic layout.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host[:1883]` or `mqtts://host[:8883]` (TLS).
    pub url: String,
    /// MQTT client id; default: the agent's name.
    pub client_id: Option<String>,
    pub username: Option<String>,
    /// File holding the password (first line; keep it mode 0600).
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// PEM bundle of the certificate authorities to trust; default: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain for mutual TLS (with `client_key`).
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive: HumanDuration,
    /// How long a connection attempt (TCP, TLS and CONNACK) may take.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Delay between reconnection attempts (capped exponential, with jitter).
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// Backlog records (summaries and events) sent per second after a reconnect; alerts are not
    /// held back.
    #[serde(default = "default_drain_rate")]
    pub drain_rate: u32,
    /// QoS 1 messages awaiting their PUBACK at once.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    #[serde(default)]
    pub topics: TopicsConfig,
    /// Wire formats: `"uns"` (default), `"sparkplug"`, or `["uns", "sparkplug"]`.
    #[serde(default)]
    pub format: FormatConfig,
    /// The Sparkplug B edge node (needed by format "sparkplug").
    pub sparkplug: Option<SparkplugConfig>,
}

fn default_keep_alive() -> HumanDuration {
    HumanDuration::from_millis(30_000)
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration::from_millis(10_000)
}
fn default_drain_rate() -> u32 {
    1000
}
fn default_max_inflight() -> u16 {
    100
}

/// The Unified Namespace prefix every topic starts with: `{enterprise}/{site}/{area}/{line}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    #[serde(default = "default_enterprise")]
    pub enterprise: String,
    #[serde(default = "default_site")]
    pub site: String,
    #[serde(default = "default_area")]
    pub area: String,
    #[serde(default = "default_line")]
    pub line: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            enterprise: default_enterprise(),
            site: default_site(),
            area: default_area(),
            line: default_line(),
        }
    }
}

fn default_enterprise() -> String {
    "enterprise".into()
}
fn default_site() -> String {
    "site".into()
}
fn default_area() -> String {
    "area".into()
}
fn default_line() -> String {
    "line".into()
}

/// Where the password comes from. Only the source is kept in the plan; the secret itself is read
/// when connecting, so it never sits in a value that might be printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    File(PathBuf),
    Env(String),
}

impl PasswordSource {
    /// Reads the secret: the first line of the file, or the variable's value.
    pub fn read(&self) -> Result<Secret, String> {
        match self {
            PasswordSource::File(path) => std::fs::read_to_string(path)
                .map(|text| Secret(text.lines().next().unwrap_or("").to_string()))
                .map_err(|e| format!("cannot read the password file {}: {e}", path.display())),
            PasswordSource::Env(name) => std::env::var(name)
                .map(Secret)
                .map_err(|_| format!("the password variable {name} is not set")),
        }
    }
}

/// A password that does not print itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A validated MQTT section.
#[derive(Debug, Clone, PartialEq)]
pub struct Mqtt {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<PasswordSource>,
    pub ca_file: Option<PathBuf>,
    /// Certificate chain and key for mutual TLS.
    pub client_auth: Option<(PathBuf, PathBuf)>,
    pub keep_alive: Duration,
    pub connect_timeout: Duration,
    pub backoff: Backoff,
    pub drain_rate: u32,
    pub max_inflight: u16,
    /// `{enterprise}/{site}/{area}/{line}`.
    pub topic_prefix: String,
    pub formats: Formats,
}

/// Bytes written as a number or as "64 MiB", "512KiB", "1 GB".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// The largest size a configuration may give: 1 TiB, more than any gateway's flash.
pub const MAX_BYTE_SIZE: u64 = 1 << 40;

const SIZE_EXAMPLES: &str = "a size such as \"64 MiB\", \"512 KiB\" or a number of bytes";

impl ByteSize {
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("expected {SIZE_EXAMPLES}, found {}", words::quote(text)))?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            _ => {
                return Err(format!(
                    "unknown size unit in {}; use B, KiB, MiB, GiB, kB, MB or GB",
                    words::quote(text)
                ))
            }
        };
        ByteSize::checked(number * factor as f64, text)
    }

    fn checked(bytes: f64, written: &str) -> Result<ByteSize, String> {
        if !(0.0..=MAX_BYTE_SIZE as f64).contains(&bytes) {
            return Err(format!(
                "{} is out of range: sizes are from 0 to 1 TiB",
                words::quote(written)
            ));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(SIZE_EXAMPLES)
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ByteSize, E> {
                ByteSize::parse(text).map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                ByteSize::checked(n as f64, &n.to_string()).map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                ByteSize::checked(n as f64, &n.to_string()).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size in bytes, or a string such as \"64 MiB\".",
            "type": ["integer", "string"]
        })
    }
}

/// The smallest outbox worth running: a few thousand summaries.
pub const MIN_OUTBOX_BYTES: u64 = 64 << 10;

pub(crate) fn validate_outbox(
    check: &mut Checker<'_, '_>,
    outbox: &OutboxConfig,
    data_dir: &Path,
) -> Outbox {
    let at = |key| [Seg::Key("outbox"), Seg::Key(key)];
    if outbox.max_size.0 < MIN_OUTBOX_BYTES {
        check.err(
            &at("max_size"),
            "outbox",
            format!("max_size must be at least {} KiB", MIN_OUTBOX_BYTES >> 10),
        );
    }
    for (key, value, min) in [
        ("flush_interval", outbox.flush_interval, 10),
        ("summary_interval", outbox.summary_interval, 100),
    ] {
        if value.get() < Duration::from_millis(min) {
            check.err(
                &at(key),
                "outbox",
                format!("{key} must be at least {min}ms"),
            );
        }
    }
    Outbox {
        dir: data_dir.join(&outbox.dir),
        max_bytes: outbox.max_size.0,
        flush_interval: outbox.flush_interval.get(),
        summary_interval: outbox.summary_interval.get(),
    }
}

/// The password's source, from `password_file` or `password_env` under `base` (not both).
pub(crate) fn validate_password(
    check: &mut Checker<'_, '_>,
    base: &[Seg<'_>],
    component: &str,
    file: Option<&Path>,
    env: Option<&str>,
    config_dir: &Path,
) -> Option<PasswordSource> {
    let at = |key| {
        let mut path = base.to_vec();
        path.push(Seg::Key(key));
        path
    };
    match (file, env) {
        (Some(_), Some(_)) => {
            check.err(
                &at("password_env"),
                component,
                "give either password_file or password_env, not both",
            );
            None
        }
        (Some(file), None) => Some(PasswordSource::File(config_dir.join(file))),
        (None, Some("")) => {
            check.err(&at("password_env"), component, "password_env is empty");
            None
        }
        (None, Some(var)) => Some(PasswordSource::Env(var.to_string())),
        (None, None) => None,
    }
}

pub(crate) fn validate_mqtt(
    check: &mut Checker<'_, '_>,
    mqtt: &MqttConfig,
    agent_name: &str,
    config_dir: &Path,
) -> Option<Mqtt> {
    let before = check.errors.len();
    let at = |key| [Seg::Key("mqtt"), Seg::Key(key)];
    let endpoint = parse_url(&mqtt.url)
        .map_err(|message| check.err(&at("url"), "mqtt", message))
        .ok();
    let password = validate_password(
        check,
        &[Seg::Key("mqtt")],
        "mqtt",
        mqtt.password_file.as_deref(),
        mqtt.password_env.as_deref(),
        config_dir,
    );
    if password.is_some() && mqtt.username.is_none() {
        check.err(
            &at(if mqtt.password_file.is_some() {
                "password_file"
            } else {
                "password_env"
            }),
            "mqtt",
            "a password needs a username",
        );
    }
    let client_auth = match (&mqtt.client_cert, &mqtt.client_key) {
        (Some(cert), Some(key)) => Some((config_dir.join(cert), config_dir.join(key))),
        (None, None) => None,
        (Some(_), None) => {
            check.err(&at("client_cert"), "mqtt", "client_cert needs client_key");
            None
        }
        (None, Some(_)) => {
            check.err(&at("client_key"), "mqtt", "client_key needs client_cert");
            None
        }
    };
    let tls = endpoint.as_ref().is_some_and(|e| e.2);
    if !tls {
        for key in ["ca_file", "client_cert", "client_key"] {
            let given = match key {
                "ca_file" => mqtt.ca_file.is_some(),
                "client_cert" => mqtt.client_cert.is_some(),
                _ => mqtt.client_key.is_some(),
            };
            if given && endpoint.is_some() {
                check.err(
                    &at(key),
                    "mqtt",
                    format!("{key} needs an mqtts:// url (TLS)"),
                );
            }
        }
    }
    let client_id = mqtt.client_id.clone().unwrap_or_else(|| agent_name.into());
    if client_id.is_empty() || client_id.len() > 65535 {
        check.err(&at("client_id"), "mqtt", "client_id must not be empty");
    }
    if mqtt.keep_alive.get() < Duration::from_secs(5) {
        check.err(&at("keep_alive"), "mqtt", "keep_alive must be at least 5s");
    }
    if mqtt.connect_timeout.get() < Duration::from_millis(100) {
        check.err(
            &at("connect_timeout"),
            "mqtt",
            "connect_timeout must be at least 100ms",
        );
    }
    if mqtt.drain_rate == 0 {
        check.err(&at("drain_rate"), "mqtt", "drain_rate must be at least 1");
    }
    if mqtt.max_inflight == 0 {
        check.err(
            &at("max_inflight"),
            "mqtt",
            "max_inflight must be at least 1",
        );
    }
    let topics = &mqtt.topics;
    for (key, segment) in [
        ("enterprise", &topics.enterprise),
        ("site", &topics.site),
        ("area", &topics.area),
        ("line", &topics.line),
    ] {
        let problem = names::topic_name_error(&format!("topics.{key}"), segment, TopicUse::Level)
            .or_else(|| {
                (key == "enterprise" && segment.starts_with('$')).then(|| {
                    "topics.enterprise must not start with `$`: brokers reserve those topics ($SYS)"
                        .to_string()
                })
            });
        if let Some(problem) = problem {
            check.err(
                &[Seg::Key("mqtt"), Seg::Key("topics"), Seg::Key(key)],
                "mqtt",
                problem,
            );
        }
    }
    let formats = validate_formats(check, &mqtt.format, mqtt.sparkplug.as_ref(), agent_name);
    let (host, port, tls) = endpoint?;
    let formats = formats?;
    (check.errors.len() == before).then(|| Mqtt {
        host,
        port,
        tls,
        client_id,
        username: mqtt.username.clone(),
        password,
        ca_file: mqtt.ca_file.as_ref().map(|f| config_dir.join(f)),
        client_auth,
        keep_alive: mqtt.keep_alive.get(),
        connect_timeout: mqtt.connect_timeout.get(),
        backoff: mqtt.backoff.to_backoff(crate::modbus::BROKER_BACKOFF_MAX),
        drain_rate: mqtt.drain_rate,
        max_inflight: mqtt.max_inflight,
        topic_prefix: format!(
            "{}/{}/{}/{}",
            topics.enterprise, topics.site, topics.area, topics.line
        ),
        formats,
    })
}

/// `mqtt://host:port` → (host, port, tls).
fn parse_url(url: &str) -> Result<(String, u16, bool), String> {
    let (rest, tls, default_port) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (rest, true, 8883)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (rest, false, 1883)
    } else {
        return Err(format!(
            "url {url:?} must start with mqtt:// or mqtts:// (TLS)"
        ));
    };
    let authority = rest.trim_end_matches('/');
    if authority.contains(['/', '@', '?']) {
        return Err(format!(
            "url {url:?} must be mqtt[s]://host[:port] (credentials go in username and password_file)"
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        // An IPv6 literal without a port: [::1]
        Some((host, port)) if !port.ends_with(']') => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("url {url:?} has an invalid port {port:?}"))?;
            (host, port)
        }
        _ => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("url {url:?} has no host"));
    }
    Ok((host.to_string(), port, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_and_tls() {
        assert_eq!(
            parse_url("mqtt://broker.local"),
            Ok(("broker.local".into(), 1883, false))
        );
        assert_eq!(
            parse_url("mqtts://10.0.0.5:9883/"),
            Ok(("10.0.0.5".into(), 9883, true))
        );
        assert_eq!(
            parse_url("mqtt://[::1]:1884"),
            Ok(("::1".into(), 1884, false))
        );
        assert!(parse_url("tcp://x").is_err());
        assert!(parse_url("mqtt://user:pw@x").is_err());
        assert!(parse_url("mqtt://x:0").is_err());
        assert!(parse_url("mqtt://:1883").is_err());
    }

    #[test]
    fn sizes_accept_numbers_and_units() {
        assert_eq!(ByteSize::parse("64 MiB"), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("512KiB"), Ok(ByteSize(512 << 10)));
        assert_eq!(ByteSize::parse("1.5 GB"), Ok(ByteSize(1_500_000_000)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert!(ByteSize::parse("12 parsecs").is_err());
        assert!(ByteSize::parse("MiB").is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret("hunter2".into());
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2");
    }
}

//! OPC UA endpoints and their tags: what the user writes (`[[opcua]]`, `[[opcua.tags]]`) and what
//! the agent runs ([`OpcuaEndpoint`], [`OpcuaTag`]).
//!
//! Invariants of a validated endpoint: the URL is `opc.tcp://host[:port][/path]`; the security mode
//! is `None` exactly when the policy is `None`; every tag's NodeId parsed (namespace by index or by
//! URI, numeric, string, GUID or opaque identifier); a subscribed tag's deadband is within range;
//! intervals are positive.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::duration::HumanDuration;
use crate::modbus::{Backoff, BackoffConfig, Checker};
use crate::names;
use crate::source::Seg;
use crate::uplink::{validate_password, PasswordSource};

/// Message security policies the agent offers (OPC UA 1.04 profiles; the deprecated Basic128Rsa15
/// and Basic256 are left out on purpose).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum SecurityPolicy {
    #[default]
    None,
    Basic256Sha256,
    #[serde(rename = "Aes128_Sha256_RsaOaep")]
    Aes128Sha256RsaOaep,
    #[serde(rename = "Aes256_Sha256_RsaPss")]
    Aes256Sha256RsaPss,
}

impl SecurityPolicy {
    /// The name OPC UA uses (the end of the policy URI).
    pub fn name(self) -> &'static str {
        match self {
            SecurityPolicy::None => "None",
            SecurityPolicy::Basic256Sha256 => "Basic256Sha256",
            SecurityPolicy::Aes128Sha256RsaOaep => "Aes128_Sha256_RsaOaep",
            SecurityPolicy::Aes256Sha256RsaPss => "Aes256_Sha256_RsaPss",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum SecurityMode {
    #[default]
    None,
    Sign,
    SignAndEncrypt,
}

impl SecurityMode {
    pub fn name(self) -> &'static str {
        match self {
            SecurityMode::None => "None",
            SecurityMode::Sign => "Sign",
            SecurityMode::SignAndEncrypt => "SignAndEncrypt",
        }
    }
}

/// Who the agent logs in as. Without `[opcua.identity]` the session is anonymous.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    pub username: Option<String>,
    /// File holding the password (first line; keep it mode 0600).
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// X.509 user certificate (DER or PEM), with `private_key`.
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
}

/// An OPC UA server the agent reads from.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Unique across `[[devices]]` and `[[opcua]]`; used in topics, logs and `--endpoint`.
    pub name: String,
    /// `opc.tcp://host[:4840][/path]`
    pub url: String,
    #[serde(default)]
    pub security_policy: SecurityPolicy,
    /// `None` with the `None` policy; `Sign` or `SignAndEncrypt` with any other.
    #[serde(default)]
    pub security_mode: SecurityMode,
    pub identity: Option<IdentityConfig>,
    /// The agent's application instance certificate (DER) and key (PEM); default: generated on
    /// first start into `<data_dir>/pki/own` and `<data_dir>/pki/private`.
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// Application URI presented to the server; must match the certificate's SAN URI.
    /// Default: `urn:millwright:<agent name>`.
    pub application_uri: Option<String>,
    /// Accept a server certificate that does not name the URL's host (common with self-made
    /// certificates that name the machine while the URL says an IP address). The certificate
    /// itself must still be trusted. Off by default; `check` warns when it is on.
    #[serde(default)]
    pub accept_host_name_mismatch: bool,
    /// Time allowed for one service call (read, browse, create items).
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// Session lifetime the agent asks for; the server keeps subscriptions this long without us.
    #[serde(default = "default_session_timeout")]
    pub session_timeout: HumanDuration,
    /// A session read at this interval proves the connection alive; three failures close it.
    #[serde(default = "default_keep_alive")]
    pub keep_alive: HumanDuration,
    /// How often the server sends a subscription's queued notifications.
    #[serde(default = "default_publishing_interval")]
    pub publishing_interval: HumanDuration,
    /// Default sampling interval of subscribed tags.
    #[serde(default = "default_interval")]
    pub sampling_interval: HumanDuration,
    /// Default server-side queue of subscribed tags (values kept between publishes).
    #[serde(default = "default_queue_size")]
    pub queue_size: u32,
    /// Default interval of polled tags.
    #[serde(default = "default_interval")]
    pub poll_interval: HumanDuration,
    /// Monitored items created, or nodes read, per service call (servers limit this).
    #[serde(default = "default_max_items")]
    pub max_items_per_request: u32,
    /// How often nodes the server does not know yet (`BadNodeIdUnknown`) are tried again.
    #[serde(default = "default_node_retry")]
    pub node_retry_interval: HumanDuration,
    /// Delay between reconnection attempts (capped exponential, with jitter).
    #[serde(default)]
    pub backoff: BackoffConfig,
    #[serde(default)]
    pub tags: Vec<OpcuaTagConfig>,
}

/// How a tag's values are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum AcquisitionMode {
    /// A monitored item in a subscription: the server reports changes.
    #[default]
    Subscribe,
    /// Read at `poll_interval` (for servers that handle subscriptions badly).
    Poll,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct OpcuaTagConfig {
    /// Unique across the whole configuration; letters, digits and `_ - . : /`.
    pub name: String,
    /// `ns=2;s=Line1.Pump.Temp`, `ns=3;i=1001`, `ns=2;g=<guid>`, `ns=2;b=<base64>`, or with the
    /// namespace by URI: `nsu=urn:acme:plc;s=Temp`. Without `ns`/`nsu` the namespace is 0.
    pub node: String,
    #[serde(default)]
    pub mode: AcquisitionMode,
    /// Subscribed tags: overrides the endpoint's `sampling_interval`.
    pub sampling_interval: Option<HumanDuration>,
    /// Subscribed tags: overrides the endpoint's `queue_size`.
    pub queue_size: Option<u32>,
    /// Subscribed tags: report a change only when it exceeds this many engineering units.
    pub deadband_absolute: Option<f64>,
    /// Subscribed tags: report a change only when it exceeds this percentage of the node's EURange.
    pub deadband_percent: Option<f64>,
    /// Polled tags: overrides the endpoint's `poll_interval`.
    pub poll_interval: Option<HumanDuration>,
    /// Engineering unit, e.g. "bar", "°C", "mm/s".
    pub unit: Option<String>,
}

fn default_request_timeout() -> HumanDuration {
    HumanDuration::from_millis(5_000)
}
fn default_session_timeout() -> HumanDuration {
    HumanDuration::from_millis(60_000)
}
fn default_keep_alive() -> HumanDuration {
    HumanDuration::from_millis(5_000)
}
fn default_publishing_interval() -> HumanDuration {
    HumanDuration::from_millis(1_000)
}
fn default_interval() -> HumanDuration {
    HumanDuration::from_millis(1_000)
}
fn default_queue_size() -> u32 {
    1
}
fn default_max_items() -> u32 {
    500
}
fn default_node_retry() -> HumanDuration {
    HumanDuration::from_millis(10_000)
}

/// A validated identity. Secrets are read when connecting, never kept in the plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    Anonymous,
    UserName {
        username: String,
        password: PasswordSource,
    },
    Certificate {
        certificate: PathBuf,
        private_key: PathBuf,
    },
}

/// A validated OPC UA endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct OpcuaEndpoint {
    pub name: String,
    pub url: String,
    pub security_policy: SecurityPolicy,
    pub security_mode: SecurityMode,
    pub identity: Identity,
    /// Certificate and key given by the user, resolved against the config file's directory.
    pub application_certificate: Option<(PathBuf, PathBuf)>,
    pub application_uri: String,
    /// The server's certificate need not name the URL's host (see [`EndpointConfig`]).
    pub accept_host_name_mismatch: bool,
    pub request_timeout: Duration,
    pub session_timeout: Duration,
    pub keep_alive: Duration,
    pub publishing_interval: Duration,
    pub max_items_per_request: usize,
    pub node_retry_interval: Duration,
    pub backoff: Backoff,
    pub tags: Vec<OpcuaTag>,
}

/// Where a node's namespace is given: by index into the server's namespace array, or by URI
/// (resolved on each connection, so it survives a server that reorders its namespaces).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Namespace {
    Index(u16),
    Uri(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identifier {
    Numeric(u32),
    String(String),
    /// Canonical lowercase `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    Guid(String),
    /// Base64 as written (validated).
    Opaque(String),
}

/// A NodeId as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeRef {
    pub namespace: Namespace,
    pub identifier: Identifier,
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Namespace::Index(0) => {}
            Namespace::Index(ns) => write!(f, "ns={ns};")?,
            Namespace::Uri(uri) => write!(f, "nsu={uri};")?,
        }
        match &self.identifier {
            Identifier::Numeric(i) => write!(f, "i={i}"),
            Identifier::String(s) => write!(f, "s={s}"),
            Identifier::Guid(g) => write!(f, "g={g}"),
            Identifier::Opaque(b) => write!(f, "b={b}"),
        }
    }
}

impl std::str::FromStr for NodeRef {
    type Err = String;

    /// Parses the OPC UA text form (Part 6, 5.3.1.10), with `nsu=` for a namespace URI.
    fn from_str(text: &str) -> Result<NodeRef, String> {
        let text = text.trim();
        let (namespace, rest) = if let Some(rest) = text.strip_prefix("ns=") {
            let (index, rest) = rest
                .split_once(';')
                .ok_or_else(|| format!("{text:?}: expected ns=<index>;<type>=<identifier>"))?;
            let index = index
                .parse::<u16>()
                .map_err(|_| format!("{text:?}: namespace index {index:?} is not 0–65535"))?;
            (Namespace::Index(index), rest)
        } else if let Some(rest) = text.strip_prefix("nsu=") {
            // A URI may hold ';' only when escaped, so the last one separates the identifier.
            let (uri, rest) = rest
                .rsplit_once(';')
                .ok_or_else(|| format!("{text:?}: expected nsu=<uri>;<type>=<identifier>"))?;
            if uri.is_empty() {
                return Err(format!("{text:?}: the namespace URI is empty"));
            }
            (Namespace::Uri(uri.to_string()), rest)
        } else {
            (Namespace::Index(0), text)
        };
        let (kind, value) = rest
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: expected i=, s=, g= or b= before the identifier"))?;
        let identifier = match kind {
            "i" => Identifier::Numeric(
                value
                    .parse()
                    .map_err(|_| format!("{text:?}: numeric identifier {value:?} is not a u32"))?,
            ),
            "s" if value.is_empty() => return Err(format!("{text:?}: empty string identifier")),
            "s" => Identifier::String(value.to_string()),
            "g" => Identifier::Guid(parse_guid(value).ok_or_else(|| {
                format!("{text:?}: GUID must be xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hex)")
            })?),
            "b" if is_base64(value) => Identifier::Opaque(value.to_string()),
            "b" => return Err(format!("{text:?}: opaque identifier must be base64")),
            other => {
                return Err(format!(
                    "{text:?}: unknown identifier type {other:?} (i, s, g or b)"
                ))
            }
        };
        Ok(NodeRef {
            namespace,
            identifier,
        })
    }
}

fn parse_guid(text: &str) -> Option<String> {
    let groups: Vec<&str> = text.split('-').collect();
    let lengths = [8, 4, 4, 4, 12];
    let valid = groups.len() == 5
        && groups
            .iter()
            .zip(lengths)
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    valid.then(|| text.to_ascii_lowercase())
}

fn is_base64(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    !body.is_empty()
        && text.len() % 4 == 0
        && text.len() - body.len() <= 2
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Deadband {
    Absolute(f64),
    Percent(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Acquisition {
    Subscribe {
        sampling_interval: Duration,
        queue_size: u32,
        deadband: Option<Deadband>,
    },
    Poll {
        interval: Duration,
    },
}

/// A validated OPC UA tag.
#[derive(Debug, Clone, PartialEq)]
pub struct OpcuaTag {
    pub name: String,
    pub node: NodeRef,
    pub acquisition: Acquisition,
    pub unit: Option<String>,
}

/// An endpoint and its tags as read from the file.
pub(crate) type EndpointParts = crate::SourceParts<EndpointConfig, OpcuaTagConfig>;

/// Names already taken by Modbus devices and tags (source names and tag names share one space).
pub(crate) struct TakenNames<'a> {
    pub sources: &'a HashSet<String>,
    pub tags: &'a HashSet<String>,
}

pub(crate) fn validate_endpoints(
    check: &mut Checker<'_, '_>,
    endpoints: &[EndpointParts],
    taken: &TakenNames<'_>,
    agent_name: &str,
    config_dir: &Path,
) -> Vec<OpcuaEndpoint> {
    let mut names = HashSet::new();
    let mut tag_owner: HashMap<String, String> = HashMap::new();
    let mut valid = Vec::new();
    for parts in endpoints {
        let Some(endpoint) = &parts.config else {
            continue;
        };
        let i = parts.index;
        let here = |key| [Seg::Key("opcua"), Seg::Index(i), Seg::Key(key)];
        let component = format!("opcua {:?}", endpoint.name);
        let before = check.errors.len();

        if !names.insert(endpoint.name.clone()) {
            check.err(&here("name"), &component, "duplicate OPC UA endpoint name");
        } else if taken.sources.contains(&endpoint.name) {
            check.err(
                &here("name"),
                &component,
                "name is already used by a Modbus device",
            );
        } else if let Some(problem) =
            names::topic_name_error("endpoint name", &endpoint.name, names::TopicUse::Level)
        {
            check.err(&here("name"), &component, problem);
        }
        if let Err(message) = check_url(&endpoint.url) {
            check.err(&here("url"), &component, message);
        }
        let secure = endpoint.security_policy != SecurityPolicy::None;
        match (secure, endpoint.security_mode) {
            (false, SecurityMode::None) | (true, SecurityMode::Sign | SecurityMode::SignAndEncrypt) => {}
            (false, mode) => check.err(
                &here("security_mode"),
                &component,
                format!(
                    "security_mode {} needs a security_policy (Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss)",
                    mode.name()
                ),
            ),
            (true, _) => check.err(
                &here("security_policy"),
                &component,
                format!(
                    "security_policy {} needs security_mode Sign or SignAndEncrypt",
                    endpoint.security_policy.name()
                ),
            ),
        }
        let application_certificate = match (&endpoint.certificate, &endpoint.private_key) {
            (Some(cert), Some(key)) => Some((config_dir.join(cert), config_dir.join(key))),
            (None, None) => None,
            (Some(_), None) => {
                check.err(
                    &here("certificate"),
                    &component,
                    "certificate needs private_key",
                );
                None
            }
            (None, Some(_)) => {
                check.err(
                    &here("private_key"),
                    &component,
                    "private_key needs certificate",
                );
                None
            }
        };
        let identity = validate_identity(check, endpoint, i, &component, config_dir);
        for (key, value, min) in [
            ("request_timeout", endpoint.request_timeout, 1),
            ("session_timeout", endpoint.session_timeout, 1_000),
            ("keep_alive", endpoint.keep_alive, 100),
            ("publishing_interval", endpoint.publishing_interval, 10),
            ("poll_interval", endpoint.poll_interval, 10),
            ("node_retry_interval", endpoint.node_retry_interval, 100),
        ] {
            check_at_least(check, &here(key), &component, key, value.get(), min);
        }
        if endpoint.max_items_per_request == 0 {
            check.err(
                &here("max_items_per_request"),
                &component,
                "max_items_per_request must be at least 1",
            );
        }
        if endpoint.backoff.initial.get().is_zero()
            || endpoint.backoff.initial.get()
                > endpoint.backoff.max_or(crate::modbus::DEVICE_BACKOFF_MAX)
        {
            check.err(
                &here("backoff"),
                &component,
                "backoff.initial must be positive and not exceed backoff.max",
            );
        }

        let mut tags = Vec::new();
        for (j, tag) in &parts.tags {
            let path = |key| {
                [
                    Seg::Key("opcua"),
                    Seg::Index(i),
                    Seg::Key("tags"),
                    Seg::Index(*j),
                    Seg::Key(key),
                ]
            };
            let tag_component = format!("opcua {:?} tag {:?}", endpoint.name, tag.name);
            let errors_before = check.errors.len();
            if let Some(problem) = names::tag_name_problem(&tag.name) {
                check.err(&path("name"), &tag_component, problem);
            } else if taken.tags.contains(&tag.name) {
                check.err(
                    &path("name"),
                    &tag_component,
                    "duplicate tag name (also on a Modbus device)",
                );
            } else if let Some(owner) = tag_owner.get(&tag.name) {
                check.err(
                    &path("name"),
                    &tag_component,
                    format!("duplicate tag name (also on OPC UA endpoint {owner:?})"),
                );
            } else {
                tag_owner.insert(tag.name.clone(), endpoint.name.clone());
            }
            let node = tag
                .node
                .parse::<NodeRef>()
                .map_err(|message| check.err(&path("node"), &tag_component, message))
                .ok();
            let acquisition = resolve_acquisition(endpoint, tag)
                .map_err(|(key, message, at_key)| {
                    if at_key {
                        check.err_key(&path(key), &tag_component, message);
                    } else {
                        check.err(&path(key), &tag_component, message);
                    }
                })
                .ok();
            if let (Some(node), Some(acquisition), true) =
                (node, acquisition, check.errors.len() == errors_before)
            {
                tags.push(OpcuaTag {
                    name: tag.name.clone(),
                    node,
                    acquisition,
                    unit: tag.unit.clone(),
                });
            }
        }
        if parts.tag_count == 0 {
            check.err(
                &[Seg::Key("opcua"), Seg::Index(i)],
                &component,
                "endpoint has no tags ([[opcua.tags]])",
            );
        }
        if let (Some(identity), true) = (identity, check.errors.len() == before) {
            valid.push(OpcuaEndpoint {
                name: endpoint.name.clone(),
                url: endpoint.url.trim_end_matches('/').to_string(),
                security_policy: endpoint.security_policy,
                security_mode: endpoint.security_mode,
                identity,
                application_certificate,
                application_uri: endpoint
                    .application_uri
                    .clone()
                    .unwrap_or_else(|| default_application_uri(agent_name)),
                accept_host_name_mismatch: endpoint.accept_host_name_mismatch,
                request_timeout: endpoint.request_timeout.get(),
                session_timeout: endpoint.session_timeout.get(),
                keep_alive: endpoint.keep_alive.get(),
                publishing_interval: endpoint.publishing_interval.get(),
                max_items_per_request: endpoint.max_items_per_request as usize,
                node_retry_interval: endpoint.node_retry_interval.get(),
                backoff: endpoint
                    .backoff
                    .to_backoff(crate::modbus::DEVICE_BACKOFF_MAX),
                tags,
            });
        }
    }
    valid
}

/// The application URI of the certificate the agent generates for itself.
pub fn default_application_uri(agent_name: &str) -> String {
    let safe: String = agent_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("urn:millwright:{safe}")
}

fn check_at_least(
    check: &mut Checker<'_, '_>,
    path: &[Seg<'_>],
    component: &str,
    what: &str,
    value: Duration,
    min_ms: u64,
) {
    let min = Duration::from_millis(min_ms);
    if value < min {
        check.err(
            path,
            component,
            format!(
                "{what} must be at least {}",
                humantime::format_duration(min)
            ),
        );
    }
}

fn validate_identity(
    check: &mut Checker<'_, '_>,
    endpoint: &EndpointConfig,
    i: usize,
    component: &str,
    config_dir: &Path,
) -> Option<Identity> {
    let Some(identity) = &endpoint.identity else {
        return Some(Identity::Anonymous);
    };
    let base = [Seg::Key("opcua"), Seg::Index(i), Seg::Key("identity")];
    let at = |key| [base[0], base[1], base[2], Seg::Key(key)];
    let by_password = identity.username.is_some()
        || identity.password_file.is_some()
        || identity.password_env.is_some();
    let by_certificate = identity.certificate.is_some() || identity.private_key.is_some();
    match (by_password, by_certificate) {
        (true, true) => {
            check.err(
                &base,
                component,
                "give either username and password, or certificate and private_key, not both",
            );
            None
        }
        (true, false) => {
            let password = validate_password(
                check,
                &base,
                component,
                identity.password_file.as_deref(),
                identity.password_env.as_deref(),
                config_dir,
            );
            match (&identity.username, password) {
                (Some(username), Some(password)) if !username.is_empty() => {
                    Some(Identity::UserName {
                        username: username.clone(),
                        password,
                    })
                }
                (Some(_), Some(_)) => {
                    check.err(&at("username"), component, "username is empty");
                    None
                }
                (None, _) => {
                    check.err(&base, component, "a password needs a username");
                    None
                }
                (Some(_), None) => {
                    check.err(
                        &at("username"),
                        component,
                        "username needs password_file or password_env",
                    );
                    None
                }
            }
        }
        (false, true) => match (&identity.certificate, &identity.private_key) {
            (Some(certificate), Some(private_key)) => Some(Identity::Certificate {
                certificate: config_dir.join(certificate),
                private_key: config_dir.join(private_key),
            }),
            (Some(_), None) => {
                check.err(
                    &at("certificate"),
                    component,
                    "certificate needs private_key",
                );
                None
            }
            _ => {
                check.err(
                    &at("private_key"),
                    component,
                    "private_key needs certificate",
                );
                None
            }
        },
        (false, false) => {
            check.err(
                &base,
                component,
                "identity is empty: give username and password_file/password_env, or certificate and private_key (leave it out for anonymous)",
            );
            None
        }
    }
}

type FieldError = (&'static str, String, bool);

fn resolve_acquisition(
    endpoint: &EndpointConfig,
    tag: &OpcuaTagConfig,
) -> Result<Acquisition, FieldError> {
    match tag.mode {
        AcquisitionMode::Poll => {
            for (key, given) in [
                ("sampling_interval", tag.sampling_interval.is_some()),
                ("queue_size", tag.queue_size.is_some()),
                ("deadband_absolute", tag.deadband_absolute.is_some()),
                ("deadband_percent", tag.deadband_percent.is_some()),
            ] {
                if given {
                    return Err((
                        key,
                        format!("{key} is for subscribed tags (mode = \"poll\")"),
                        true,
                    ));
                }
            }
            let interval = tag.poll_interval.unwrap_or(endpoint.poll_interval).get();
            if interval < Duration::from_millis(10) {
                return Err((
                    "poll_interval",
                    "poll_interval must be at least 10ms".into(),
                    false,
                ));
            }
            Ok(Acquisition::Poll { interval })
        }
        AcquisitionMode::Subscribe => {
            if tag.poll_interval.is_some() {
                return Err((
                    "poll_interval",
                    "poll_interval is for polled tags; subscribed tags use sampling_interval"
                        .into(),
                    true,
                ));
            }
            let deadband = match (tag.deadband_absolute, tag.deadband_percent) {
                (Some(_), Some(_)) => {
                    return Err((
                        "deadband_percent",
                        "give deadband_absolute or deadband_percent, not both".into(),
                        true,
                    ))
                }
                (Some(a), None) if !(a.is_finite() && a >= 0.0) => {
                    return Err((
                        "deadband_absolute",
                        "deadband_absolute must be ≥ 0".into(),
                        false,
                    ))
                }
                (None, Some(p)) if !(0.0..=100.0).contains(&p) => {
                    return Err((
                        "deadband_percent",
                        "deadband_percent must be 0–100".into(),
                        false,
                    ))
                }
                (Some(a), None) => Some(Deadband::Absolute(a)),
                (None, Some(p)) => Some(Deadband::Percent(p)),
                (None, None) => None,
            };
            let queue_size = tag.queue_size.unwrap_or(endpoint.queue_size);
            if queue_size == 0 {
                return Err(("queue_size", "queue_size must be at least 1".into(), false));
            }
            Ok(Acquisition::Subscribe {
                sampling_interval: tag
                    .sampling_interval
                    .unwrap_or(endpoint.sampling_interval)
                    .get(),
                queue_size,
                deadband,
            })
        }
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("opc.tcp://") else {
        return Err(format!("url {url:?} must start with opc.tcp://"));
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.ends_with(']') => {
            port.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("url {url:?} has an invalid port {port:?}"))?;
            host
        }
        _ => authority,
    };
    if host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .is_empty()
    {
        return Err(format!("url {url:?} has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_parse_in_every_form() {
        let cases = [
            ("i=2258", Namespace::Index(0), Identifier::Numeric(2258)),
            (
                "ns=2;i=1001",
                Namespace::Index(2),
                Identifier::Numeric(1001),
            ),
            (
                "ns=3;s=Line1.Pump;Temp",
                Namespace::Index(3),
                Identifier::String("Line1.Pump;Temp".into()),
            ),
            (
                "ns=1;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63",
                Namespace::Index(1),
                Identifier::Guid("72962b91-fa75-4ae6-8d28-b404dc7daf63".into()),
            ),
            (
                "ns=1;b=M/RbKBsRVkePCePcx24oRA==",
                Namespace::Index(1),
                Identifier::Opaque("M/RbKBsRVkePCePcx24oRA==".into()),
            ),
            (
                "nsu=urn:acme:plc;s=Temp",
                Namespace::Uri("urn:acme:plc".into()),
                Identifier::String("Temp".into()),
            ),
        ];
        for (text, namespace, identifier) in cases {
            let node: NodeRef = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(node.namespace, namespace, "{text}");
            assert_eq!(node.identifier, identifier, "{text}");
        }
        assert_eq!(
            "nsu=urn:acme:plc;s=Temp"
                .parse::<NodeRef>()
                .map(|n| n.to_string()),
            Ok("nsu=urn:acme:plc;s=Temp".into())
        );
    }

    #[test]
    fn malformed_node_ids_say_what_is_wrong() {
        for (text, expected) in [
            ("ns=x;i=1", "namespace index"),
            ("ns=70000;i=1", "namespace index"),
            ("ns=2;i=abc", "not a u32"),
            ("ns=2;q=1", "unknown identifier type"),
            ("ns=2;g=1234", "GUID"),
            ("ns=2;b=***", "base64"),
            ("ns=2;s=", "empty string"),
            ("Temperature", "expected i=, s=, g= or b="),
            ("nsu=;s=x", "URI is empty"),
        ] {
            let error = text.parse::<NodeRef>().expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn urls_need_opc_tcp_and_a_host() {
        assert!(check_url("opc.tcp://plc:4840").is_ok());
        assert!(check_url("opc.tcp://10.0.0.5:4840/UA/Server").is_ok());
        assert!(check_url("opc.tcp://[::1]:4840").is_ok());
        assert!(check_url("http://plc:4840").is_err());
        assert!(check_url("opc.tcp://:4840").is_err());
        assert!(check_url("opc.tcp://plc:0").is_err());
    }
}

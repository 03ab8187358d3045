//! millwright's configuration.
//!
//! Parse → validate → build: the TOML text becomes typed `*Config` values (`deny_unknown_fields`),
//! validation collects every mistake with its `file:line:col` and the component's name, and only a
//! valid configuration becomes a [`Plan`], whose types are what the agent runs on (wire addresses,
//! resolved types, durations).
//!
//! Arrays of tables (`[[buses]]`, `[[devices]]`, `[[devices.tags]]`) are deserialized one element
//! at a time, so one bad element is reported without hiding the mistakes in the others.

pub mod alerts;
pub mod assets;
pub mod calendar;
pub mod duration;
pub mod http;
pub mod lines;
pub mod modbus;
pub mod names;
pub mod opcua;
pub mod quality;
pub mod source;
pub mod sparkplug;
pub mod uplink;
pub mod vibration;
pub mod words;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use alerts::{
    Alerting, AlertsConfig, GpioLine, Indication, IndicationConfig, Limit, LimitConfig, LimitKind,
    Output, OutputConfig, OutputTarget, Pattern, PatternValues, Severity, StateFilter, TagLimits,
    GATEWAY_PROFILES,
};
pub use assets::{
    Asset, AssetConfig, Foundation, InsulationClass, IsoGroup, Nameplate, Scoring, ScoringConfig,
    Signals, TagIndex, MAX_WINDOW,
};
pub use calendar::{Calendar, Shift, ShiftInstance};
pub use duration::HumanDuration;
pub use http::{Http, HttpConfig, Users};
pub use lines::{
    CounterSpec, Energy, Line, LineAlerts, LineConfig, MachineState, Material, StateSource,
};
pub use modbus::{
    Addressing, Backoff, BusConfig, ByteOrder, DataType, Device, DeviceConfig, Forbidden, Link,
    Parity, Scaling, SerialBus, Table, Tag, TagConfig, TagContext, TagIssue, WordOrder,
    MAX_BITS_PER_READ, MAX_REGISTERS_PER_READ,
};
pub use opcua::{
    Acquisition, AcquisitionMode, Deadband, EndpointConfig, Identifier, Identity, Namespace,
    NodeRef, OpcuaEndpoint, OpcuaTag, OpcuaTagConfig, SecurityMode, SecurityPolicy,
};
pub use source::{ConfigError, ConfigErrors};
pub use sparkplug::{Formats, Sparkplug};
pub use uplink::{
    ByteSize, Mqtt, MqttConfig, Outbox, OutboxConfig, PasswordSource, Secret, TopicsConfig,
};
pub use vibration::{
    AccelerationUnit, Bearing, BearingConfig, DefectFactors, IioSource, ShaftSpeed, Waveform,
    WaveformConfig, WaveformSource,
};

use modbus::{Checker, DeviceParts};
use serde::de::DeserializeOwned;
use source::{Document, Seg};

/// The whole configuration file, as written.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", schemars(title = "millwright configuration"))]
pub struct Config {
    #[serde(default)]
    pub agent: AgentConfig,
    /// Serial lines (RS-485/RS-232) for Modbus RTU devices.
    #[serde(default)]
    pub buses: Vec<BusConfig>,
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// OPC UA servers and the nodes read from them.
    #[serde(default)]
    pub opcua: Vec<EndpointConfig>,
    #[serde(default)]
    pub scoring: ScoringConfig,
    /// Equipment whose health is scored, with its signals mapped to tags.
    #[serde(default)]
    pub assets: Vec<AssetConfig>,
    /// The durable buffer of everything bound upstream (used when `[mqtt]` is set).
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// The MQTT broker the agent forwards summaries, assessments, alerts and events to.
    pub mqtt: Option<MqttConfig>,
    /// The local status page, `/api/status` and `/metrics` (off when absent).
    pub http: Option<HttpConfig>,
    /// Local alerting: lifecycle, agent-health thresholds, acknowledge input, gateway profile.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Alarm limits (hi-hi / hi / lo / lo-lo) on tags.
    #[serde(default)]
    pub limits: Vec<LimitConfig>,
    /// LEDs, GPIO lines and Modbus coils or registers that show alerts.
    #[serde(default)]
    pub outputs: Vec<OutputConfig>,
    /// Which alerts light which output in which pattern; per output, the first match wins.
    #[serde(default)]
    pub indications: Vec<IndicationConfig>,
    /// Production lines judged by OEE: state, counters, ideal cycle, shift calendar.
    #[serde(default)]
    pub lines: Vec<LineConfig>,
    /// Quality stations: characteristics with spec limits and control charts, a decision on
    /// every part, and the output that diverts a bad one.
    #[serde(default)]
    pub quality: Vec<quality::StationConfig>,
}

/// Settings of the agent itself.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Name of this gateway, used in logs and (later) topics.
    #[serde(default = "default_agent_name")]
    pub name: String,
    /// How often `run` logs each device's counters.
    #[serde(default = "default_summary_interval")]
    pub summary_interval: HumanDuration,
    /// Polls (one request's or notification's samples) buffered for each consumer of the sample
    /// bus before the oldest are dropped (and their samples counted).
    #[serde(default = "default_bus_capacity")]
    pub sample_bus_capacity: usize,
    /// Where the agent keeps its state (the outbox, the control socket). Relative paths are
    /// relative to this configuration file (in a [`Plan`], the path is already resolved).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            name: default_agent_name(),
            summary_interval: default_summary_interval(),
            sample_bus_capacity: default_bus_capacity(),
            data_dir: default_data_dir(),
        }
    }
}

fn default_agent_name() -> String {
    "millwright".into()
}
fn default_summary_interval() -> HumanDuration {
    HumanDuration::from_millis(60_000)
}
fn default_bus_capacity() -> usize {
    256
}
fn default_data_dir() -> PathBuf {
    "/var/lib/millwright".into()
}

/// A validated configuration: what the agent builds its stages from.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The configuration file it came from (for messages that tell the user what to run).
    pub file: PathBuf,
    pub agent: AgentConfig,
    pub buses: Vec<SerialBus>,
    /// Devices in file order. A tag's index in plan order (Modbus devices in order with their tags
    /// in order, then OPC UA endpoints likewise) is the agent's `TagId` and what [`Signals`] refer
    /// to.
    pub devices: Vec<Device>,
    pub opcua: Vec<OpcuaEndpoint>,
    pub scoring: Scoring,
    pub assets: Vec<Asset>,
    pub outbox: Outbox,
    pub mqtt: Option<Mqtt>,
    pub http: Option<Http>,
    pub alerting: Alerting,
    pub lines: Vec<Line>,
    pub quality: Vec<quality::Station>,
}

/// A source (Modbus device or OPC UA endpoint) and its tags' names and units, in `TagId` order.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceTags<'p> {
    pub source: &'p str,
    pub protocol: &'static str,
    pub tags: Vec<(&'p str, Option<&'p str>)>,
}

impl Plan {
    pub fn tag_count(&self) -> usize {
        self.devices.iter().map(|d| d.tags.len()).sum::<usize>()
            + self.opcua.iter().map(|e| e.tags.len()).sum::<usize>()
    }

    /// Every source in `TagId` order: Modbus devices, then OPC UA endpoints.
    pub fn sources(&self) -> Vec<SourceTags<'_>> {
        let modbus = self.devices.iter().map(|d| SourceTags {
            source: &d.name,
            protocol: "modbus",
            tags: d
                .tags
                .iter()
                .map(|t| (t.name.as_str(), t.unit.as_deref()))
                .collect(),
        });
        let opcua = self.opcua.iter().map(|e| SourceTags {
            source: &e.name,
            protocol: "opcua",
            tags: e
                .tags
                .iter()
                .map(|t| (t.name.as_str(), t.unit.as_deref()))
                .collect(),
        });
        modbus.chain(opcua).collect()
    }

    /// Settings that are valid but weaken a check, for `check` and the start-up log to say so.
    pub fn warnings(&self) -> Vec<String> {
        self.opcua
            .iter()
            .filter(|e| e.accept_host_name_mismatch && e.security_policy != SecurityPolicy::None)
            .map(|e| {
                format!(
                    "opcua {:?}: accept_host_name_mismatch = true: the server's certificate is not checked against the host in {} (it must still be trusted in pki/trusted/)",
                    e.name, e.url
                )
            })
            .chain(
                self.http
                    .iter()
                    .filter(|http| !http.listen.ip().is_loopback() && http.tls.is_none())
                    .map(|http| {
                        format!(
                            "http: {} is served without TLS: passwords and tokens cross the network in clear text (set tls_cert and tls_key)",
                            http.listen
                        )
                    }),
            )
            .collect()
    }

    /// Every file the configuration names that holds a secret: password files and private keys
    /// (for the uplink and for OPC UA), in the order they appear.
    pub fn secret_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let Some(mqtt) = &self.mqtt {
            if let Some(PasswordSource::File(path)) = &mqtt.password {
                files.push(path.clone());
            }
            if let Some((_, key)) = &mqtt.client_auth {
                files.push(key.clone());
            }
        }
        for endpoint in &self.opcua {
            match &endpoint.identity {
                Identity::UserName {
                    password: PasswordSource::File(path),
                    ..
                } => files.push(path.clone()),
                Identity::Certificate { private_key, .. } => files.push(private_key.clone()),
                _ => {}
            }
            if let Some((_, key)) = &endpoint.application_certificate {
                files.push(key.clone());
            }
        }
        if let Some(http) = &self.http {
            files.extend(http.users.as_ref().map(|u| u.file.clone()));
            files.extend(http.tls.as_ref().map(|(_, key)| key.clone()));
        }
        files
    }

    /// The first `TagId` of the OPC UA endpoint at `index` (its tags follow every Modbus tag).
    pub fn opcua_tag_base(&self, index: usize) -> usize {
        self.devices.iter().map(|d| d.tags.len()).sum::<usize>()
            + self.opcua[..index]
                .iter()
                .map(|e| e.tags.len())
                .sum::<usize>()
    }
}

/// The devices and tags a Sparkplug edge node publishes.
fn sparkplug_names<'a>(
    node: &Sparkplug,
    devices: &'a [Device],
    opcua: &'a [OpcuaEndpoint],
    assets: &'a [Asset],
    lines: &'a [Line],
    stations: &'a [quality::Station],
) -> sparkplug::DeviceNames<'a> {
    use sparkplug::{
        DeviceName, ASSET_METRICS, COMMAND_RESULT, LINE_METRICS, STATION_METRICS, VIBRATION_METRICS,
    };
    let names = |list: &[&str]| list.iter().map(|m| m.to_string()).collect::<Vec<_>>();
    let entry = |kind, table, index, name, metrics| DeviceName {
        kind,
        table,
        index,
        name,
        metrics,
    };
    let mut all = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let mut metrics: Vec<String> = d.tags.iter().map(|t| t.name.clone()).collect();
        if d.tags.iter().any(|t| node.writable.contains(&t.name)) {
            metrics.push(COMMAND_RESULT.into());
        }
        all.push(entry(
            "Modbus device",
            "devices",
            i,
            d.name.as_str(),
            metrics,
        ));
    }
    for (i, e) in opcua.iter().enumerate() {
        let metrics = e.tags.iter().map(|t| t.name.clone()).collect();
        all.push(entry(
            "OPC UA endpoint",
            "opcua",
            i,
            e.name.as_str(),
            metrics,
        ));
    }
    for (i, a) in assets.iter().enumerate() {
        let mut metrics = names(&ASSET_METRICS);
        if a.waveform.is_some() {
            metrics.extend(names(&VIBRATION_METRICS));
        }
        all.push(entry("asset", "assets", i, a.id.as_str(), metrics));
    }
    for (i, l) in lines.iter().enumerate() {
        all.push(entry(
            "line",
            "lines",
            i,
            l.name.as_str(),
            names(&LINE_METRICS),
        ));
    }
    for (i, s) in stations.iter().enumerate() {
        let mut metrics = names(&STATION_METRICS);
        metrics.extend(s.characteristics.iter().map(|c| format!("cpk/{}", c.name)));
        all.push(entry(
            "quality station",
            "quality",
            i,
            s.name.as_str(),
            metrics,
        ));
    }
    let tags = devices
        .iter()
        .flat_map(|d| d.tags.iter().map(|t| (t.name.as_str(), Some(t.table))))
        .chain(
            opcua
                .iter()
                .flat_map(|e| e.tags.iter().map(|t| (t.name.as_str(), None))),
        )
        .collect();
    sparkplug::DeviceNames { devices: all, tags }
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Plan, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors::unreadable(path, &e))?;
    load_str(path, &text)
}

/// Validates configuration text; `file` is only used in error messages.
pub fn load_str(file: &Path, text: &str) -> Result<Plan, ConfigErrors> {
    let doc = Document::parse(file, text)?;
    let mut errors = Vec::new();

    let root: Option<Config> = doc
        .deserialize_root(&[
            "buses",
            "devices",
            "opcua",
            "assets",
            "limits",
            "outputs",
            "indications",
            "lines",
            "quality",
        ])
        .map_err(|e| errors.extend(e))
        .ok();

    let buses: Vec<(usize, BusConfig)> = elements(&doc, "buses", "name", "bus", &mut errors);
    let devices: Vec<DeviceParts> = source_elements(&doc, "devices", "device", &mut errors);
    let endpoints: Vec<opcua::EndpointParts> = source_elements(&doc, "opcua", "opcua", &mut errors);

    let assets: Vec<(usize, AssetConfig)> = elements(&doc, "assets", "id", "asset", &mut errors);
    let limits: Vec<(usize, LimitConfig)> = elements(&doc, "limits", "tag", "limits", &mut errors);
    let outputs: Vec<(usize, OutputConfig)> =
        elements(&doc, "outputs", "name", "output", &mut errors);
    let indications: Vec<(usize, IndicationConfig)> =
        elements(&doc, "indications", "output", "indication", &mut errors);
    let lines: Vec<(usize, LineConfig)> = elements(&doc, "lines", "name", "line", &mut errors);
    let stations: Vec<(usize, quality::StationConfig)> =
        elements(&doc, "quality", "name", "quality station", &mut errors);
    let modbus_tag_names: HashSet<String> = devices
        .iter()
        .flat_map(|d| d.tags.iter().map(|(_, t)| t.name.clone()))
        .collect();
    let modbus_device_names: HashSet<String> = devices
        .iter()
        .filter_map(|d| d.config.as_ref().map(|d| d.name.clone()))
        .collect();
    let tag_names = modbus_tag_names
        .iter()
        .cloned()
        .chain(
            endpoints
                .iter()
                .flat_map(|e| e.tags.iter().map(|(_, t)| t.name.clone())),
        )
        .collect();

    let mut check = Checker { doc: &doc, errors };
    let buses = modbus::validate_buses(&mut check, &buses);
    let devices = modbus::validate_devices(&mut check, &buses, &devices);
    let scoring = root.as_ref().map(|root| {
        let dir = file.parent().unwrap_or_else(|| Path::new(""));
        assets::validate_scoring(&mut check, &root.scoring, dir)
    });
    let config_dir = file.parent().unwrap_or_else(|| Path::new(""));
    let uplink = root.as_ref().map(|root| {
        let data_dir = config_dir.join(&root.agent.data_dir);
        let outbox = uplink::validate_outbox(&mut check, &root.outbox, &data_dir);
        let mqtt = root
            .mqtt
            .as_ref()
            .map(|mqtt| uplink::validate_mqtt(&mut check, mqtt, &root.agent.name, config_dir));
        let http = root
            .http
            .as_ref()
            .map(|h| http::validate_http(&mut check, h, config_dir));
        (outbox, mqtt, http)
    });
    let agent_name = root
        .as_ref()
        .map_or_else(default_agent_name, |r| r.agent.name.clone());
    let opcua = opcua::validate_endpoints(
        &mut check,
        &endpoints,
        &opcua::TakenNames {
            sources: &modbus_device_names,
            tags: &modbus_tag_names,
        },
        &agent_name,
        config_dir,
    );
    let directory = assets::TagDirectory::new(&devices, &opcua, tag_names);
    let assets = assets::validate_assets(&mut check, &directory, &assets, config_dir);
    let line_names: HashSet<String> = lines.iter().map(|(_, l)| l.name.clone()).collect();
    let inspected: HashSet<String> = stations
        .iter()
        .filter_map(|(_, s)| s.line.clone())
        .collect();
    let lines = lines::validate_lines(&mut check, &directory, &lines, &inspected);
    let alerting = root.as_ref().map(|root| {
        let parts = alerts::AlertParts {
            alerts: &AlertsConfig {
                led_class_dir: config_dir.join(&root.alerts.led_class_dir),
                ..root.alerts.clone()
            },
            limits: &limits,
            outputs: &outputs,
            indications: &indications,
        };
        alerts::validate(&mut check, &parts, &directory, &devices)
    });
    let quality = alerting.as_ref().map(|alerting| {
        let context = quality::StationContext {
            lines: &lines,
            line_names: line_names.clone(),
            outputs: &alerting.outputs,
            indicated: alerting.indications.iter().map(|i| i.output).collect(),
            config_dir,
        };
        quality::validate_stations(&mut check, &directory, &context, &stations)
    });
    if let Some(root) = &root {
        if let Some(problem) =
            names::topic_name_error("agent name", &root.agent.name, names::TopicUse::Level)
        {
            check.err(&[Seg::Key("agent"), Seg::Key("name")], "agent", problem);
        }
        if root.agent.sample_bus_capacity == 0 {
            check.err(
                &[Seg::Key("agent"), Seg::Key("sample_bus_capacity")],
                "agent",
                "sample_bus_capacity must be at least 1",
            );
        }
    }

    if let (Some((_, Some(Some(mqtt)), _)), Some(quality)) = (&uplink, &quality) {
        if let Some(node) = &mqtt.formats.sparkplug {
            let names = sparkplug_names(node, &devices, &opcua, &assets, &lines, quality);
            sparkplug::validate_plan(&mut check, node, &names);
        }
    }

    let mut errors = check.errors;
    match (root, scoring, uplink, alerting, quality) {
        (Some(root), Some(scoring), Some((outbox, mqtt, http)), Some(alerting), Some(quality))
            if errors.is_empty() =>
        {
            Ok(Plan {
                file: file.to_path_buf(),
                agent: AgentConfig {
                    data_dir: config_dir.join(&root.agent.data_dir),
                    ..root.agent
                },
                buses,
                devices,
                opcua,
                scoring,
                assets,
                outbox,
                mqtt: mqtt.flatten(),
                http: http.flatten(),
                alerting,
                lines,
                quality,
            })
        }
        _ => {
            errors.sort_by_key(|e| e.position);
            errors.dedup();
            Err(ConfigErrors(errors))
        }
    }
}

/// Deserializes each element of `[[array]]` on its own, with its index in the file; `key` names
/// the element in errors.
fn elements<T: DeserializeOwned>(
    doc: &Document<'_>,
    array: &str,
    key: &str,
    kind: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<(usize, T)> {
    doc.elements(&[Seg::Key(array)], errors)
        .into_iter()
        .enumerate()
        .filter_map(|(i, value)| {
            let component = element_name(value.get_ref(), key, kind, array, i);
            doc.deserialize(value, &[], &component)
                .map_err(|e| errors.extend(e))
                .ok()
                .map(|element| (i, element))
        })
        .collect()
}

/// One element of an array of sources (`[[devices]]`, `[[opcua]]`) with its own `tags` array: the
/// element as deserialized (`None` when it did not), the tags that did, each with its index in the
/// file, and how many tags were written.
pub(crate) struct SourceParts<C, T> {
    pub index: usize,
    pub config: Option<C>,
    pub tags: Vec<(usize, T)>,
    pub tag_count: usize,
}

/// Deserializes `[[array]]` and each element's `[[array.tags]]` one by one, so that one bad
/// element or tag is reported without hiding the mistakes in the others.
fn source_elements<C: DeserializeOwned, T: DeserializeOwned>(
    doc: &Document<'_>,
    array: &str,
    kind: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<SourceParts<C, T>> {
    let mut parts = Vec::new();
    for (i, value) in doc
        .elements(&[Seg::Key(array)], errors)
        .into_iter()
        .enumerate()
    {
        let component = element_name(value.get_ref(), "name", kind, array, i);
        let config: Option<C> = doc
            .deserialize(value, &["tags"], &component)
            .map_err(|e| errors.extend(e))
            .ok();
        let tag_path = [Seg::Key(array), Seg::Index(i), Seg::Key("tags")];
        let tag_values = doc.elements(&tag_path, errors);
        let tag_count = tag_values.len();
        let tags = tag_values
            .into_iter()
            .enumerate()
            .filter_map(|(j, value)| {
                let tag_component = format!(
                    "{component} {}",
                    element_name(value.get_ref(), "name", "tag", "tags", j)
                );
                doc.deserialize(value, &[], &tag_component)
                    .map_err(|e| errors.extend(e))
                    .ok()
                    .map(|tag| (j, tag))
            })
            .collect();
        parts.push(SourceParts {
            index: i,
            config,
            tags,
            tag_count,
        });
    }
    parts
}

/// `device "pump-plc"` when the element has a readable name (its `key`), else `devices[3]`.
fn element_name(
    value: &toml::de::DeValue<'_>,
    key: &str,
    kind: &str,
    array: &str,
    index: usize,
) -> String {
    match value
        .as_table()
        .and_then(|t| t.get(key))
        .and_then(|n| n.get_ref().as_str())
    {
        Some(name) => format!("{kind} {name:?}"),
        None => format!("{array}[{index}]"),
    }
}

/// The JSON Schema of the configuration file, for editor completion (e.g. taplo, Even Better TOML).
#[cfg(feature = "schema")]
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default()
}

//! Every metric the edge node publishes, with its alias: the node's own metrics, then each device
//! (Modbus devices, OPC UA endpoints, assets, lines, quality stations, in the configuration's
//! order) with its metrics in order. Aliases are the metrics' positions in that order, so the same
//! configuration gives the same aliases after a restart, and a changed one gives fresh births.
//! Things of different kinds with one name are one device (a line named after its press's PLC):
//! the later ones' metrics join the first's (`check` refuses a metric name taken twice).

use std::collections::HashMap;

use firmware_config::{DataType as TagType, Plan, Sparkplug as NodeConfig, Tag};

use super::proto::DataType;
use crate::sample::TagId;

/// The node's own metrics, aliases 0.. in this order.
pub const BD_SEQ: &str = "bdSeq";
pub const REBIRTH: &str = "Node Control/Rebirth";
pub const VERSION: &str = "Properties/Version";
pub const CONFIG_HASH: &str = "Properties/Config Hash";
pub use firmware_config::sparkplug::{
    ASSET_METRICS, COMMAND_RESULT, LINE_METRICS, STATION_METRICS, VIBRATION_METRICS,
};

/// The datatypes of the figures named in `firmware_config::sparkplug`: an asset's, from its
/// assessment …
pub const ASSET_TYPES: [DataType; 6] = [
    DataType::Double,
    DataType::Double,
    DataType::String,
    DataType::String,
    DataType::Double,
    DataType::String,
];

/// … an asset's vibration figures, when it has a waveform …
pub const VIBRATION_TYPES: [DataType; 6] = [
    DataType::Double,
    DataType::Double,
    DataType::Double,
    DataType::Double,
    DataType::Double,
    DataType::String,
];

/// … a production line's, from its running report …
pub const LINE_TYPES: [DataType; 9] = [
    DataType::Double,
    DataType::Double,
    DataType::Double,
    DataType::Double,
    DataType::Double,
    DataType::Double,
    DataType::Double,
    DataType::String,
    DataType::String,
];

/// … and a quality station's, from its reports and part decisions (`cpk/…` are Double).
pub const STATION_TYPES: [DataType; 9] = [
    DataType::UInt64,
    DataType::UInt64,
    DataType::UInt64,
    DataType::UInt64,
    DataType::Double,
    DataType::Double,
    DataType::String,
    DataType::String,
    DataType::Double,
];

/// Where a metric's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    Node,
    /// A tag, with (for writable Modbus tags) the device index and its configuration.
    Tag {
        id: TagId,
        write: Option<(usize, Box<Tag>)>,
    },
    /// A figure of an asset, line or station, or a command result.
    Derived,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricDef {
    pub name: String,
    /// `None` until the first value says (OPC UA tags: the server decides the type).
    pub datatype: Option<DataType>,
    pub unit: Option<String>,
    /// `(scale, offset)` of a scaled Modbus tag.
    pub scaling: Option<(f64, f64)>,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Modbus,
    Opcua,
    Asset,
    Line,
    Station,
}

#[derive(Debug, Clone)]
pub struct DeviceDef {
    pub name: String,
    pub kind: DeviceKind,
    /// Aliases of its metrics, in order.
    pub aliases: Vec<usize>,
    pub by_name: HashMap<String, usize>,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    /// Indexed by alias.
    pub metrics: Vec<MetricDef>,
    /// The node's metrics' aliases.
    pub node: std::ops::Range<usize>,
    pub devices: Vec<DeviceDef>,
    pub by_device: HashMap<String, usize>,
}

impl Catalog {
    pub fn new(plan: &Plan, node: &NodeConfig) -> Catalog {
        let mut catalog = Catalog {
            metrics: Vec::new(),
            node: 0..0,
            devices: Vec::new(),
            by_device: HashMap::new(),
        };
        for (name, datatype) in [
            (BD_SEQ, DataType::UInt64),
            (REBIRTH, DataType::Boolean),
            (VERSION, DataType::String),
            (CONFIG_HASH, DataType::String),
        ] {
            catalog.metrics.push(derived(name, datatype, Origin::Node));
        }
        catalog.node = 0..catalog.metrics.len();
        let mut id = 0u32;
        for (index, device) in plan.devices.iter().enumerate() {
            let mut metrics: Vec<MetricDef> = device
                .tags
                .iter()
                .map(|tag| {
                    id += 1;
                    let write = node
                        .writable
                        .contains(&tag.name)
                        .then(|| (index, Box::new(tag.clone())));
                    modbus_metric(tag, TagId(id - 1), write)
                })
                .collect();
            if metrics
                .iter()
                .any(|m| matches!(&m.origin, Origin::Tag { write: Some(_), .. }))
            {
                metrics.push(derived(COMMAND_RESULT, DataType::String, Origin::Derived));
            }
            catalog.add(&device.name, DeviceKind::Modbus, metrics);
        }
        for endpoint in &plan.opcua {
            let metrics = endpoint
                .tags
                .iter()
                .map(|tag| {
                    id += 1;
                    MetricDef {
                        name: tag.name.clone(),
                        datatype: None,
                        unit: tag.unit.clone(),
                        scaling: None,
                        origin: Origin::Tag {
                            id: TagId(id - 1),
                            write: None,
                        },
                    }
                })
                .collect();
            catalog.add(&endpoint.name, DeviceKind::Opcua, metrics);
        }
        for asset in &plan.assets {
            let mut metrics = figures(&ASSET_METRICS, &ASSET_TYPES);
            if asset.waveform.is_some() {
                metrics.extend(figures(&VIBRATION_METRICS, &VIBRATION_TYPES));
            }
            catalog.add(&asset.id, DeviceKind::Asset, metrics);
        }
        for line in &plan.lines {
            catalog.add(
                &line.name,
                DeviceKind::Line,
                figures(&LINE_METRICS, &LINE_TYPES),
            );
        }
        for station in &plan.quality {
            let mut metrics = figures(&STATION_METRICS, &STATION_TYPES);
            metrics.extend(station.characteristics.iter().map(|c| {
                derived(
                    &format!("cpk/{}", c.name),
                    DataType::Double,
                    Origin::Derived,
                )
            }));
            catalog.add(&station.name, DeviceKind::Station, metrics);
        }
        catalog
    }

    /// Adds a device's metrics; to the device of that name when there is one already.
    fn add(&mut self, name: &str, kind: DeviceKind, metrics: Vec<MetricDef>) {
        let device = *self.by_device.entry(name.to_string()).or_insert_with(|| {
            self.devices.push(DeviceDef {
                name: name.to_string(),
                kind,
                aliases: Vec::new(),
                by_name: HashMap::new(),
            });
            self.devices.len() - 1
        });
        for metric in metrics {
            let alias = self.metrics.len();
            let def = &mut self.devices[device];
            def.aliases.push(alias);
            def.by_name.insert(metric.name.clone(), alias);
            self.metrics.push(metric);
        }
    }

    /// The alias of `metric` on `device`.
    pub fn alias(&self, device: usize, metric: &str) -> Option<usize> {
        self.devices.get(device)?.by_name.get(metric).copied()
    }
}

fn derived(name: &str, datatype: DataType, origin: Origin) -> MetricDef {
    MetricDef {
        name: name.to_string(),
        datatype: Some(datatype),
        unit: None,
        scaling: None,
        origin,
    }
}

fn figures(names: &[&str], types: &[DataType]) -> Vec<MetricDef> {
    names
        .iter()
        .zip(types)
        .map(|(name, datatype)| derived(name, *datatype, Origin::Derived))
        .collect()
}

fn modbus_metric(tag: &Tag, id: TagId, write: Option<(usize, Box<Tag>)>) -> MetricDef {
    let datatype = if tag.is_block() {
        DataType::DoubleArray
    } else if tag.scaling.is_some() {
        DataType::Double
    } else {
        match tag.data_type {
            TagType::U16 => DataType::UInt16,
            TagType::I16 => DataType::Int16,
            TagType::U32 => DataType::UInt32,
            TagType::I32 => DataType::Int32,
            TagType::U64 => DataType::UInt64,
            TagType::I64 => DataType::Int64,
            TagType::F32 => DataType::Float,
            TagType::F64 => DataType::Double,
            TagType::Bool => DataType::Boolean,
            TagType::String => DataType::String,
        }
    };
    MetricDef {
        name: tag.name.clone(),
        datatype: Some(datatype),
        unit: tag.unit.clone(),
        scaling: tag.scaling.map(|s| (s.scale, s.offset)),
        origin: Origin::Tag { id, write },
    }
}

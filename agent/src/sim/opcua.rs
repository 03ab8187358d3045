//! The simulated plant served over OPC UA: the same machines and signals as over Modbus, one
//! variable per point under a folder per machine, in the namespace [`NAMESPACE`] with string
//! NodeIds `<machine>.<point>` (e.g. `nsu=urn:millwright:sim;s=pump-1.vibration_velocity`; a point
//! already named with its machine's prefix keeps its name).
//!
//! Endpoints: `None`, and `Sign` / `SignAndEncrypt` with Basic256Sha256, Aes128_Sha256_RsaOaep
//! and Aes256_Sha256_RsaPss. The server's certificate is generated into its PKI directory on first
//! start; as a development tool it trusts every client certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::opcua::crypto::SecurityPolicy;
use ::opcua::server::diagnostics::NamespaceMetadata;
use ::opcua::server::node_manager::memory::{simple_node_manager, SimpleNodeManager};
use ::opcua::server::{ServerBuilder, ServerHandle, ServerUserToken, ANONYMOUS_USER_TOKEN_ID};
use ::opcua::types::{DataValue, DateTime, MessageSecurityMode, NodeId, ObjectId, Variant};
use anyhow::Context;
use firmware_config::DataType;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Plant;
use crate::sample::Value;

/// The namespace of the simulator's nodes.
pub const NAMESPACE: &str = "urn:millwright:sim";

/// How often point values are refreshed in the address space.
const UPDATE_EVERY: Duration = Duration::from_millis(100);

/// Who may log in besides anonymous users.
#[derive(Debug, Clone, Default)]
pub struct Users {
    /// User name and password pairs.
    pub passwords: Vec<(String, String)>,
    /// DER or PEM certificates of X.509 users.
    pub certificates: Vec<std::path::PathBuf>,
}

/// A running OPC UA simulator.
pub struct OpcuaServer {
    pub handle: ServerHandle,
    pub nodes: Arc<SimpleNodeManager>,
    pub namespace: u16,
    pub port: u16,
}

impl OpcuaServer {
    /// The NodeId of `name` in the simulator's namespace.
    pub fn node(&self, name: &str) -> NodeId {
        NodeId::new(self.namespace, name)
    }

    /// Adds a variable under the Objects folder (tests and benchmarks add nodes at run time).
    pub fn add_variable(&self, name: &str, value: impl Into<Variant>) -> NodeId {
        let node = self.node(name);
        let variable =
            ::opcua::server::address_space::Variable::new(&node, name, name, value.into());
        self.nodes
            .address_space()
            .write()
            .add_variables(vec![variable], &ObjectId::ObjectsFolder.into());
        node
    }

    /// Sets a node's value and notifies the subscriptions that monitor it.
    pub fn set(&self, node: &NodeId, value: impl Into<Variant>) {
        self.set_all([(node, value.into())]);
    }

    /// Sets many values at once (one lock of the address space).
    pub fn set_all<'a>(&self, values: impl IntoIterator<Item = (&'a NodeId, Variant)>) {
        let now = DateTime::now();
        let _ = self.nodes.set_values(
            self.handle.subscriptions(),
            values.into_iter().map(|(node, value)| {
                let data = DataValue {
                    value: Some(value),
                    status: Some(::opcua::types::StatusCode::Good),
                    source_timestamp: Some(now),
                    server_timestamp: Some(now),
                    ..Default::default()
                };
                (node, None, data)
            }),
        );
    }

    pub fn stop(&self) {
        self.handle.cancel();
    }
}

fn endpoints(builder: ServerBuilder, tokens: &[&str]) -> ServerBuilder {
    let mut builder = builder.add_endpoint(
        "none",
        ("/", SecurityPolicy::None, MessageSecurityMode::None, tokens),
    );
    for (name, policy) in [
        ("basic256sha256", SecurityPolicy::Basic256Sha256),
        ("aes128", SecurityPolicy::Aes128Sha256RsaOaep),
        ("aes256", SecurityPolicy::Aes256Sha256RsaPss),
    ] {
        for (suffix, mode) in [
            ("sign", MessageSecurityMode::Sign),
            ("sign_encrypt", MessageSecurityMode::SignAndEncrypt),
        ] {
            builder = builder.add_endpoint(format!("{name}_{suffix}"), ("/", policy, mode, tokens));
        }
    }
    builder
}

/// Serves `plant` on `listener` until `shutdown`, keeping its certificate in `pki`. Returns once
/// the server is listening; the server and the value updates run on spawned tasks.
pub async fn serve(
    listener: TcpListener,
    plant: Arc<Plant>,
    pki: &Path,
    users: &Users,
    shutdown: CancellationToken,
) -> anyhow::Result<OpcuaServer> {
    let address = listener.local_addr()?;
    let mut tokens = vec![ANONYMOUS_USER_TOKEN_ID.to_string()];
    let mut builder = ServerBuilder::new()
        .application_name("millwright simulator")
        .application_uri("urn:millwright:simulator")
        .product_uri("urn:millwright")
        .create_sample_keypair(true)
        .pki_dir(pki)
        .trust_client_certs(true)
        .host(address.ip().to_string())
        .port(address.port())
        .discovery_urls(vec![format!("opc.tcp://{address}/")])
        .token(shutdown.clone())
        .with_node_manager(simple_node_manager(
            NamespaceMetadata {
                namespace_uri: NAMESPACE.to_owned(),
                ..Default::default()
            },
            "millwright-sim",
        ));
    for (i, (user, password)) in users.passwords.iter().enumerate() {
        let id = format!("user{i}");
        builder = builder.add_user_token(&id, ServerUserToken::user_pass(user, password));
        tokens.push(id);
    }
    for (i, certificate) in users.certificates.iter().enumerate() {
        let id = format!("x509-{i}");
        builder = builder.add_user_token(&id, ServerUserToken::x509(&id, certificate));
        tokens.push(id);
    }
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut builder = endpoints(builder, &tokens);
    let limits = builder.limits_mut();
    limits.max_array_length = 1_000_000;
    // Thousands of monitored items answer the first publish with thousands of notifications.
    limits.max_message_size = 64 * 1024 * 1024;
    limits.max_chunk_count = 1024;
    limits.subscriptions.max_monitored_items_per_sub = 100_000;
    limits.operational.max_monitored_items_per_call = 100_000;
    limits.operational.max_nodes_per_read = 100_000;
    let (server, handle) = builder
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the OPC UA server: {e}"))?;
    let nodes = handle
        .node_managers()
        .get_of_type::<SimpleNodeManager>()
        .context("the simulator's node manager is missing")?;
    let namespace = nodes
        .namespaces()
        .iter()
        .find(|(_, uri)| uri.as_str() == NAMESPACE)
        .map(|(index, _)| *index)
        .context("the simulator's namespace is missing")?;
    let served = add_points(&nodes, namespace, &plant);
    let waveforms = add_waveforms(&nodes, namespace, &plant);
    tokio::spawn(async move {
        if let Err(error) = server.run_with(listener).await {
            tracing::warn!(%error, "OPC UA simulator stopped");
        }
    });
    let server = OpcuaServer {
        handle,
        nodes,
        namespace,
        port: address.port(),
    };
    let updates = (
        server.handle.clone(),
        Arc::clone(&server.nodes),
        Arc::clone(&plant),
    );
    tokio::spawn(update_points(updates, served, shutdown.clone()));
    for (node, machine) in waveforms {
        let updates = (
            server.handle.clone(),
            Arc::clone(&server.nodes),
            Arc::clone(&plant),
        );
        tokio::spawn(update_waveform(updates, node, machine, shutdown.clone()));
    }
    Ok(server)
}

/// A Float array variable `<machine>.waveform` for every machine with a waveform.
fn add_waveforms(nodes: &SimpleNodeManager, namespace: u16, plant: &Plant) -> Vec<(NodeId, usize)> {
    let mut space = nodes.address_space().write();
    let mut served = Vec::new();
    for (m, machine) in plant.machines().iter().enumerate() {
        let Some(config) = &machine.config.waveform else {
            continue;
        };
        let name = node_name(&machine.config.name, "waveform");
        let id = NodeId::new(namespace, name.as_str());
        let folder = NodeId::new(namespace, machine.config.name.as_str());
        let first = float_array(&config.generate(Duration::ZERO, 0));
        let variable =
            ::opcua::server::address_space::Variable::new(&id, name.as_str(), name.as_str(), first);
        space.add_variables(vec![variable], &folder);
        served.push((id, m));
    }
    served
}

fn float_array(values: &[f32]) -> Variant {
    let items: Vec<Variant> = values.iter().map(|&v| Variant::Float(v)).collect();
    match ::opcua::types::Array::new(::opcua::types::VariantScalarTypeId::Float, items) {
        Ok(array) => Variant::Array(Box::new(array)),
        Err(_) => Variant::Empty,
    }
}

/// Renews a machine's waveform every `every`, generated off the executor.
async fn update_waveform(
    (handle, nodes, plant): (ServerHandle, Arc<SimpleNodeManager>, Arc<Plant>),
    node: NodeId,
    machine: usize,
    shutdown: CancellationToken,
) {
    let Some(config) = plant.machines()[machine].config.waveform.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(config.every.get());
    for seed in 1u64.. {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let elapsed = plant.elapsed();
        let config = config.clone();
        // Each machine its own noise.
        let seed = seed ^ ((machine as u64) << 32);
        let Ok(values) = tokio::task::spawn_blocking(move || config.generate(elapsed, seed)).await
        else {
            break;
        };
        let value = good(float_array(&values), DateTime::now());
        let _ = nodes.set_values(
            handle.subscriptions(),
            std::iter::once((&node, None, value)),
        );
    }
}

/// Folders and variables for every machine's points; returns each point's NodeId.
fn add_points(nodes: &SimpleNodeManager, namespace: u16, plant: &Plant) -> Vec<Vec<NodeId>> {
    let mut space = nodes.address_space().write();
    let objects: NodeId = ObjectId::ObjectsFolder.into();
    let wall = SystemTime::now();
    plant
        .machines()
        .iter()
        .map(|machine| {
            let folder = NodeId::new(namespace, machine.config.name.as_str());
            space.add_folder(
                &folder,
                machine.config.name.as_str(),
                machine.config.name.as_str(),
                &objects,
            );
            let ids: Vec<NodeId> = machine
                .points
                .iter()
                .map(|p| NodeId::new(namespace, node_name(&machine.config.name, &p.tag.name)))
                .collect();
            let variables = machine
                .points
                .iter()
                .enumerate()
                .map(|(i, point)| {
                    let value = plant.value(machine, i, Duration::ZERO, wall);
                    ::opcua::server::address_space::Variable::new(
                        &ids[i],
                        point.tag.name.as_str(),
                        point.tag.name.as_str(),
                        variant(&value, point.tag.data_type),
                    )
                })
                .collect();
            space.add_variables(variables, &folder);
            ids
        })
        .collect()
}

async fn update_points(
    (handle, nodes, plant): (ServerHandle, Arc<SimpleNodeManager>, Arc<Plant>),
    ids: Vec<Vec<NodeId>>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(UPDATE_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let elapsed = plant.elapsed();
        let wall = SystemTime::now();
        let now = DateTime::now();
        let mut values = Vec::new();
        for (machine, ids) in plant.machines().iter().zip(&ids) {
            for (i, point) in machine.points.iter().enumerate() {
                let value = plant.value(machine, i, elapsed, wall);
                values.push((&ids[i], good(variant(&value, point.tag.data_type), now)));
            }
        }
        let _ = nodes.set_values(
            handle.subscriptions(),
            values.into_iter().map(|(id, v)| (id, None, v)),
        );
    }
}

/// A good value stamped `now` by source and server.
fn good(value: Variant, now: DateTime) -> DataValue {
    DataValue {
        value: Some(value),
        status: Some(::opcua::types::StatusCode::Good),
        source_timestamp: Some(now),
        server_timestamp: Some(now),
        ..Default::default()
    }
}

/// `<machine>.<point>`, unless the point's name already starts with its machine's (as in the demo).
pub fn node_name(machine: &str, point: &str) -> String {
    match point.strip_prefix(machine) {
        Some(rest) if rest.starts_with('.') => point.to_string(),
        _ => format!("{machine}.{point}"),
    }
}

/// A point's value in the OPC UA type its Modbus type stands for.
fn variant(value: &Value, data_type: DataType) -> Variant {
    let number = value.as_f64().unwrap_or(0.0);
    match (value, data_type) {
        (Value::Text(s), _) => Variant::from(s.as_str()),
        (_, DataType::Bool) => Variant::Boolean(number >= 0.5),
        (_, DataType::U16) => Variant::UInt16(number.round() as u16),
        (_, DataType::I16) => Variant::Int16(number.round() as i16),
        (_, DataType::U32) => Variant::UInt32(number.round() as u32),
        (_, DataType::I32) => Variant::Int32(number.round() as i32),
        (_, DataType::U64) => Variant::UInt64(number.round() as u64),
        (_, DataType::I64) => Variant::Int64(number.round() as i64),
        (_, DataType::F32) => Variant::Float(number as f32),
        (_, DataType::F64 | DataType::String) => Variant::Double(number),
    }
}

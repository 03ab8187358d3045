//! Commissioning helpers: `millwright trust` (fetch a server's certificate, show it, put it in
//! `pki/trusted/`) and `millwright browse` (walk the address space and list NodeIds, browse names
//! and data types).

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ::opcua::crypto::{CertificateStore, X509};
use ::opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowseResultMask, DataTypeId, NodeClass,
    NodeId, ObjectId, QualifiedName, ReadValueId, ReferenceTypeId, TimestampsToReturn, Variant,
};
use firmware_config::{NodeRef, OpcuaEndpoint, SecurityPolicy};

use super::client::{self, ConnectError, Connection};

/// A server certificate as `trust` shows it before the user decides.
#[derive(Debug, Clone)]
pub struct ServerCertificate {
    pub subject: String,
    pub application_uri: String,
    pub thumbprint: String,
    pub not_before: String,
    pub not_after: String,
    der: Vec<u8>,
    file_name: String,
}

impl std::fmt::Display for ServerCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "  subject:         {}", self.subject)?;
        writeln!(f, "  application URI: {}", self.application_uri)?;
        writeln!(
            f,
            "  valid:           {} to {}",
            self.not_before, self.not_after
        )?;
        write!(f, "  SHA-1 thumbprint: {}", self.thumbprint)
    }
}

/// Why a server's certificate cannot be fetched or trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("endpoint {0:?} uses security policy None: no certificate is exchanged, so there is nothing to trust")]
    NoSecurity(String),
    #[error(transparent)]
    Setup(#[from] client::SetupError),
    #[error("{url}: no answer within {within:?}")]
    Timeout {
        url: String,
        within: std::time::Duration,
    },
    #[error("{url}: cannot list the server's endpoints: {reason}")]
    Endpoints { url: String, reason: String },
    #[error("{0}: the server offers no certificate")]
    NoCertificate(String),
    #[error("the server's certificate cannot be read: {0}")]
    Unreadable(String),
    #[error("{path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Asks the server (over the unsecured discovery service, as every OPC UA client must for the
/// first contact) for the certificate of the endpoint matching the configured policy and mode.
pub async fn server_certificate(
    endpoint: &OpcuaEndpoint,
    pki: &Path,
) -> Result<ServerCertificate, TrustError> {
    if endpoint.security_policy == SecurityPolicy::None {
        return Err(TrustError::NoSecurity(endpoint.name.clone()));
    }
    let client = client::client(endpoint, pki, "millwright trust")?;
    let endpoints = tokio::time::timeout(
        endpoint.request_timeout * 2,
        client.get_server_endpoints_from_url(endpoint.url.as_str()),
    )
    .await
    .map_err(|_| TrustError::Timeout {
        url: endpoint.url.clone(),
        within: endpoint.request_timeout * 2,
    })?
    .map_err(|e| TrustError::Endpoints {
        url: endpoint.url.clone(),
        reason: e.to_string(),
    })?;
    let offered = endpoints
        .iter()
        .find(|e| {
            !e.server_certificate.is_null()
                && e.security_policy_uri
                    .as_ref()
                    .ends_with(endpoint.security_policy.name())
        })
        .or_else(|| endpoints.iter().find(|e| !e.server_certificate.is_null()))
        .ok_or_else(|| TrustError::NoCertificate(endpoint.url.clone()))?;
    let cert = X509::from_byte_string(&offered.server_certificate)
        .map_err(|e| TrustError::Unreadable(e.to_string()))?;
    describe(&cert, offered.server.application_uri.as_ref())
}

fn describe(cert: &X509, application_uri: &str) -> Result<ServerCertificate, TrustError> {
    Ok(ServerCertificate {
        subject: cert.common_name().unwrap_or_default(),
        application_uri: application_uri.to_string(),
        thumbprint: cert.thumbprint().as_hex_string(),
        not_before: cert
            .not_before()
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
        not_after: cert.not_after().map(|t| t.to_rfc3339()).unwrap_or_default(),
        der: cert
            .to_der()
            .map_err(|e| TrustError::Unreadable(e.to_string()))?,
        file_name: CertificateStore::cert_file_name(cert),
    })
}

/// Puts the certificate in `pki/trusted/` (and takes it out of `pki/rejected/`); returns the path.
pub fn trust(pki: &Path, certificate: &ServerCertificate) -> Result<PathBuf, TrustError> {
    let failed = |path: &Path| {
        let path = path.display().to_string();
        move |source| TrustError::Write { path, source }
    };
    let trusted = pki.join("trusted");
    std::fs::create_dir_all(&trusted).map_err(failed(&trusted))?;
    let path = trusted.join(&certificate.file_name);
    std::fs::write(&path, &certificate.der).map_err(failed(&path))?;
    let rejected = pki.join("rejected").join(&certificate.file_name);
    if rejected.exists() {
        std::fs::remove_file(&rejected).map_err(failed(&rejected))?;
    }
    Ok(path)
}

/// One node found by [`browse`].
#[derive(Debug, Clone, PartialEq)]
pub struct BrowsedNode {
    pub depth: usize,
    pub node_id: String,
    pub browse_name: String,
    pub class: String,
    /// For variables: the data type's name (`Double`, `Int32[]` for arrays).
    pub data_type: Option<String>,
}

/// Why a walk through the address space stopped.
#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("cannot read the server's namespaces: {0}")]
    Namespaces(String),
    #[error("--node {node}: {why}")]
    Start {
        node: String,
        why: super::convert::NodeError,
    },
    #[error("browse timed out")]
    Timeout,
    #[error("{call} {node}: {reason}")]
    Service {
        call: &'static str,
        node: String,
        reason: String,
    },
}

/// Walks the hierarchy below `start` (default: the Objects folder) depth-first, so that each
/// node's children are listed right under it, `depth` levels deep and at most `limit` nodes.
/// `start` may name its namespace by URI (`nsu=`), resolved against the server's namespaces.
pub async fn browse(
    endpoint: &OpcuaEndpoint,
    files: &client::ClientFiles,
    start: Option<&NodeRef>,
    depth: usize,
    limit: usize,
) -> Result<Vec<BrowsedNode>, BrowseError> {
    let connection = client::connect(endpoint, files, "millwright browse").await?;
    let result = match start {
        Some(node) => match start_node(&connection, node).await {
            Ok(start) => walk(&connection, endpoint, Some(start), depth, limit).await,
            Err(error) => Err(error),
        },
        None => walk(&connection, endpoint, None, depth, limit).await,
    };
    connection.close().await;
    result
}

async fn start_node(connection: &Connection, node: &NodeRef) -> Result<NodeId, BrowseError> {
    let namespaces = connection
        .session
        .read_namespace_array()
        .await
        .map_err(|e| BrowseError::Namespaces(e.to_string()))?;
    super::convert::node_id(node, |uri| namespaces.get_index(uri)).map_err(|why| {
        BrowseError::Start {
            node: node.to_string(),
            why,
        }
    })
}

/// A node's children, in the server's order: (node, browse name, class).
async fn children(
    connection: &Connection,
    node: &NodeId,
    timeout: std::time::Duration,
    namespaces: &::opcua::types::NamespaceMap,
) -> Result<Vec<(NodeId, String, NodeClass)>, BrowseError> {
    let failed = |call: &'static str| {
        move |e: ::opcua::types::Error| BrowseError::Service {
            call,
            node: node.to_string(),
            reason: e.to_string(),
        }
    };
    let session = &connection.session;
    let description = BrowseDescription {
        node_id: node.clone(),
        browse_direction: BrowseDirection::Forward,
        reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
        include_subtypes: true,
        node_class_mask: 0,
        result_mask: BrowseResultMask::All as u32,
    };
    let mut results = tokio::time::timeout(timeout, session.browse(&[description], 0, None))
        .await
        .map_err(|_| BrowseError::Timeout)?
        .map_err(failed("browse"))?;
    let mut references = Vec::new();
    while let Some(result) = results.pop() {
        references.extend(result.references.unwrap_or_default());
        if result.continuation_point.is_null() {
            break;
        }
        results = session
            .browse_next(false, &[result.continuation_point])
            .await
            .map_err(failed("browse next"))?;
    }
    Ok(references
        .into_iter()
        .filter_map(|reference| {
            let child = reference.node_id.try_resolve(namespaces)?.into_owned();
            Some((
                child,
                qualified(&reference.browse_name),
                reference.node_class,
            ))
        })
        .collect())
}

async fn walk(
    connection: &Connection,
    endpoint: &OpcuaEndpoint,
    start: Option<NodeId>,
    depth: usize,
    limit: usize,
) -> Result<Vec<BrowsedNode>, BrowseError> {
    let timeout = endpoint.request_timeout * 2;
    let start = start.unwrap_or_else(|| ObjectId::ObjectsFolder.into());
    // The server's namespace table, read once for the walk (not per reference).
    let namespaces = connection
        .session
        .encoding_context()
        .read()
        .namespaces()
        .clone();
    let mut found = Vec::new();
    let mut seen = HashSet::from([start.clone()]);
    if depth == 0 {
        return Ok(found);
    }
    // One frame per level being listed: the children still to print at that level.
    let first = children(connection, &start, timeout, &namespaces).await?;
    let mut stack: Vec<VecDeque<(NodeId, String, NodeClass)>> = vec![first.into()];
    while let Some(frame) = stack.last_mut() {
        let Some((node, browse_name, class)) = frame.pop_front() else {
            stack.pop();
            continue;
        };
        if found.len() >= limit {
            break;
        }
        if !seen.insert(node.clone()) {
            continue;
        }
        let level = stack.len() - 1;
        found.push(BrowsedNode {
            depth: level,
            node_id: node.to_string(),
            browse_name,
            class: format!("{class:?}"),
            data_type: None,
        });
        if class != NodeClass::Variable && level + 1 < depth {
            let below = children(connection, &node, timeout, &namespaces).await?;
            stack.push(below.into());
        }
    }
    add_data_types(connection, &mut found, endpoint).await;
    Ok(found)
}

fn qualified(name: &QualifiedName) -> String {
    if name.namespace_index == 0 {
        name.name.as_ref().to_string()
    } else {
        format!("{}:{}", name.namespace_index, name.name.as_ref())
    }
}

/// Reads DataType and ValueRank of every variable found (in batches) and names the type.
async fn add_data_types(
    connection: &Connection,
    found: &mut [BrowsedNode],
    endpoint: &OpcuaEndpoint,
) {
    let variables: Vec<usize> = (0..found.len())
        .filter(|&i| found[i].class == "Variable")
        .collect();
    for batch in variables.chunks(endpoint.max_items_per_request.max(2) / 2) {
        let mut reads = Vec::with_capacity(batch.len() * 2);
        for &i in batch {
            let Ok(node_id) = found[i].node_id.parse::<NodeId>() else {
                continue;
            };
            for attribute in [AttributeId::DataType, AttributeId::ValueRank] {
                reads.push(ReadValueId {
                    node_id: node_id.clone(),
                    attribute_id: attribute as u32,
                    ..Default::default()
                });
            }
        }
        let Ok(Ok(values)) = tokio::time::timeout(
            endpoint.request_timeout,
            connection
                .session
                .read(&reads, TimestampsToReturn::Neither, 0.0),
        )
        .await
        else {
            return;
        };
        for (&i, pair) in batch.iter().zip(values.chunks(2)) {
            let data_type = match pair.first().and_then(|v| v.value.as_ref()) {
                Some(Variant::NodeId(id)) => type_name(id),
                _ => continue,
            };
            let array = matches!(pair.get(1).and_then(|v| v.value.as_ref()), Some(Variant::Int32(rank)) if *rank >= 0);
            found[i].data_type = Some(if array {
                format!("{data_type}[]")
            } else {
                data_type
            });
        }
    }
}

fn type_name(id: &NodeId) -> String {
    match (&id.identifier, id.namespace) {
        (::opcua::types::Identifier::Numeric(n), 0) => DataTypeId::try_from(*n)
            .map(|t| format!("{t:?}"))
            .unwrap_or_else(|_| id.to_string()),
        _ => id.to_string(),
    }
}

/// The listing `browse` prints: one line per node, indented by depth.
pub fn format_browse(nodes: &[BrowsedNode]) -> String {
    let mut out = String::new();
    for node in nodes {
        let _ = writeln!(
            out,
            "{:indent$}{:<40} {:<14} {:<10} {}",
            "",
            node.node_id,
            node.class,
            node.data_type.as_deref().unwrap_or(""),
            node.browse_name,
            indent = node.depth * 2
        );
    }
    out
}

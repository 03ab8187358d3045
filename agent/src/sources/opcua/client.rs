//! One OPC UA session to one endpoint: the client's certificate store (`<data_dir>/pki`), the
//! security policy and mode, the user identity, and a connection attempt that either gives a live
//! session or a clear reason why not.
//!
//! Trust is never automatic: a server certificate that is not in `pki/trusted/` is refused, and the
//! library stores it in `pki/rejected/` so that `millwright trust` (or an administrator moving the
//! file) can trust it explicitly.
//!
//! The library's own reconnect is switched off: when the session ends, [`super::source`] builds a
//! new one with the agent's backoff and re-creates its subscriptions, so recovery is one code path
//! that the tests drive.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ::opcua::client::{Client, ClientBuilder, IdentityToken, Session};
use ::opcua::crypto::SecurityPolicy as UaPolicy;
use ::opcua::types::{MessageSecurityMode, StatusCode};
use firmware_config::{Identity, OpcuaEndpoint, SecurityMode, SecurityPolicy};
use tokio::task::JoinHandle;

/// Where the agent keeps its OPC UA certificates: `own/`, `private/`, `trusted/`, `rejected/`.
pub fn pki_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pki")
}

/// A live session and the task that drives it; the task ends when the connection is lost.
pub struct Connection {
    pub session: Arc<Session>,
    pub driver: JoinHandle<StatusCode>,
}

impl Connection {
    /// Closes the session politely (bounded by a timeout) and stops its driver.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.session.disconnect()).await;
        self.driver.abort();
    }
}

/// Why a connection attempt failed, worded for the person at the gateway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "the server's certificate is not trusted; it was saved to {rejected} — check its thumbprint and run `millwright trust -c <config> --endpoint {endpoint}`"
    )]
    Untrusted { endpoint: String, rejected: String },
    #[error("the server offers no endpoint with security policy {policy} and mode {mode}")]
    NoMatchingEndpoint { policy: String, mode: String },
    #[error("the server refused the user identity ({0})")]
    IdentityRejected(String),
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Status(String),
    #[error("no session within {0:?}")]
    Timeout(Duration),
}

impl ConnectError {
    /// Worth trying again after the backoff (as opposed to waiting for the user to act).
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectError::Status(_) | ConnectError::Timeout(_))
    }
}

fn ua_policy(policy: SecurityPolicy) -> UaPolicy {
    match policy {
        SecurityPolicy::None => UaPolicy::None,
        SecurityPolicy::Basic256Sha256 => UaPolicy::Basic256Sha256,
        SecurityPolicy::Aes128Sha256RsaOaep => UaPolicy::Aes128Sha256RsaOaep,
        SecurityPolicy::Aes256Sha256RsaPss => UaPolicy::Aes256Sha256RsaPss,
    }
}

fn ua_mode(mode: SecurityMode) -> MessageSecurityMode {
    match mode {
        SecurityMode::None => MessageSecurityMode::None,
        SecurityMode::Sign => MessageSecurityMode::Sign,
        SecurityMode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
    }
}

/// A client for `endpoint` with the agent's certificate store. On first use this generates the
/// application instance certificate (2048-bit RSA, the application URI in its SAN) unless the
/// endpoint names one, and keeps its private key readable by the agent's user only.
pub fn client(endpoint: &OpcuaEndpoint, pki: &Path, session_name: &str) -> Result<Client, String> {
    let pki = std::path::absolute(pki).map_err(|e| format!("{}: {e}", pki.display()))?;
    let mut builder = ClientBuilder::new()
        .application_name("millwright")
        .application_uri(endpoint.application_uri.as_str())
        .product_uri("urn:millwright")
        .pki_dir(&pki)
        .trust_server_certs(false)
        .verify_server_certs(true)
        .session_retry_limit(0)
        .recreate_subscriptions(false)
        .request_timeout(endpoint.request_timeout)
        .keep_alive_interval(endpoint.keep_alive)
        .max_failed_keep_alive_count(3)
        .session_timeout(u32::try_from(endpoint.session_timeout.as_millis()).unwrap_or(u32::MAX))
        .session_name(session_name)
        // Waveforms: up to a million elements per array value.
        .max_array_length(1_000_000)
        .max_message_size(64 * 1024 * 1024)
        .max_chunk_count(1024);
    builder = match &endpoint.application_certificate {
        Some((cert, key)) => builder
            .create_sample_keypair(false)
            .certificate_path(std::path::absolute(cert).map_err(|e| e.to_string())?)
            .private_key_path(std::path::absolute(key).map_err(|e| e.to_string())?),
        None => builder.create_sample_keypair(true),
    };
    let client = builder.client().map_err(|errors| errors.join("; "))?;
    if endpoint.application_certificate.is_none() {
        restrict_private_key(&pki.join("private/private.pem"));
    }
    if endpoint.security_policy != SecurityPolicy::None {
        let store = client.certificate_store().read();
        if store.read_own_cert().is_err() || store.read_own_pkey().is_err() {
            return Err(format!(
                "no usable application certificate in {} (own/cert.der and private/private.pem)",
                pki.display()
            ));
        }
    }
    Ok(client)
}

#[cfg(unix)]
fn restrict_private_key(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_private_key(_: &Path) {}

fn identity_token(identity: &Identity) -> Result<IdentityToken, String> {
    match identity {
        Identity::Anonymous => Ok(IdentityToken::Anonymous),
        Identity::UserName { username, password } => {
            let secret = password.read()?;
            Ok(IdentityToken::new_user_name(
                username.clone(),
                secret.expose().to_string(),
            ))
        }
        Identity::Certificate {
            certificate,
            private_key,
        } => IdentityToken::new_x509_path(certificate, private_key).map_err(|e| {
            format!(
                "cannot load the user certificate {} / {}: {e}",
                certificate.display(),
                private_key.display()
            )
        }),
    }
}

/// Opens a session: discovers the server's endpoints, picks the configured policy and mode,
/// checks the server certificate against `trusted/`, and activates the session with the identity.
pub async fn connect(
    endpoint: &OpcuaEndpoint,
    pki: &Path,
    session_name: &str,
) -> Result<Connection, ConnectError> {
    let mut client = client(endpoint, pki, session_name).map_err(ConnectError::Setup)?;
    let identity = identity_token(&endpoint.identity).map_err(ConnectError::Setup)?;
    let limit = endpoint.request_timeout * 3;
    let wanted = (
        endpoint.url.as_str(),
        ua_policy(endpoint.security_policy).to_str(),
        ua_mode(endpoint.security_mode),
    );
    let (session, event_loop) =
        match tokio::time::timeout(limit, client.connect_to_matching_endpoint(wanted, identity))
            .await
        {
            Err(_) => return Err(ConnectError::Timeout(limit)),
            Ok(Err(e)) if e.status() == StatusCode::BadTcpEndpointUrlInvalid => {
                return Err(ConnectError::NoMatchingEndpoint {
                    policy: endpoint.security_policy.name().into(),
                    mode: endpoint.security_mode.name().into(),
                })
            }
            Ok(Err(e)) => return Err(ConnectError::Status(e.to_string())),
            Ok(Ok(pair)) => pair,
        };
    session.disable_reconnects();
    let mut driver = event_loop.spawn();
    let outcome = tokio::time::timeout(limit, async {
        tokio::select! {
            connected = session.wait_for_connection() => connected.then_some(()).ok_or(StatusCode::BadConnectionClosed),
            ended = &mut driver => Err(ended.unwrap_or(StatusCode::BadUnexpectedError)),
        }
    })
    .await;
    match outcome {
        Ok(Ok(())) => Ok(Connection { session, driver }),
        Ok(Err(status)) => {
            driver.abort();
            Err(explain(status, endpoint, pki))
        }
        Err(_) => {
            driver.abort();
            Err(ConnectError::Timeout(limit))
        }
    }
}

fn explain(status: StatusCode, endpoint: &OpcuaEndpoint, pki: &Path) -> ConnectError {
    match status {
        StatusCode::BadCertificateUntrusted
        | StatusCode::BadSecurityChecksFailed
        | StatusCode::BadCertificateInvalid
            if endpoint.security_policy != SecurityPolicy::None =>
        {
            ConnectError::Untrusted {
                endpoint: endpoint.name.clone(),
                rejected: pki.join("rejected").display().to_string(),
            }
        }
        StatusCode::BadIdentityTokenRejected
        | StatusCode::BadIdentityTokenInvalid
        | StatusCode::BadUserAccessDenied => ConnectError::IdentityRejected(status.to_string()),
        other => ConnectError::Status(other.to_string()),
    }
}

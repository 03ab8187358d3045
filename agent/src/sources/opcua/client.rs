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
use ::opcua::core::comms::url::{hostname_from_url, url_with_replaced_hostname};
use ::opcua::crypto::SecurityPolicy as UaPolicy;
use ::opcua::types::{MessageSecurityMode, StatusCode};
use firmware_config::{Identity, OpcuaEndpoint, SecurityMode, SecurityPolicy};
use tokio::task::JoinHandle;

/// Where the agent keeps its OPC UA certificates: `own/`, `private/`, `trusted/`, `rejected/`.
pub fn pki_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pki")
}

/// The certificate store, and the configuration file to name in what the user should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFiles {
    pub pki: PathBuf,
    pub config: PathBuf,
}

impl ClientFiles {
    pub fn of(plan: &firmware_config::Plan) -> ClientFiles {
        ClientFiles {
            pki: pki_dir(&plan.agent.data_dir),
            config: plan.file.clone(),
        }
    }
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
        "the server's certificate is not trusted; it was saved to {rejected} — check its thumbprint and run `millwright trust -c {config} --endpoint {endpoint}`"
    )]
    Untrusted {
        endpoint: String,
        rejected: String,
        config: String,
    },
    #[error(
        "the server's certificate names {presented} but the endpoint's URL says {expected:?}: write the URL with one of those names, or, if this certificate is trusted anyway, set accept_host_name_mismatch = true on [[opcua]] {endpoint:?} (the certificate must still be in pki/trusted/)"
    )]
    HostNameMismatch {
        endpoint: String,
        expected: String,
        presented: String,
    },
    #[error(
        "this agent's OPC UA certificate ({certificate}) was made for {made_for:?}, but the application URI is now {configured:?} (was agent.name changed?); servers refuse the mismatch (BadCertificateUriInvalid). Make a new certificate with `millwright trust -c {config} --endpoint {endpoint} --renew-certificate` (servers must then trust the new one), or set application_uri = {made_for:?} on this [[opcua]] endpoint"
    )]
    OwnCertificateUri {
        endpoint: String,
        certificate: String,
        made_for: String,
        configured: String,
        config: String,
    },
    #[error("the server offers no endpoint with security policy {policy} and mode {mode}")]
    NoMatchingEndpoint { policy: String, mode: String },
    #[error("the server refused the user identity ({0})")]
    IdentityRejected(String),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("{0}")]
    Status(String),
    #[error("no session within {0:?}")]
    Timeout(Duration),
}

/// Why the agent's OPC UA client, its certificate or its identity cannot be set up: the user has
/// to act (a file, the configuration), trying again will not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error("{path}: {reason}")]
    Path { path: String, reason: String },
    /// async-opcua's own list of what is wrong with the client's settings.
    #[error("{0}")]
    Settings(String),
    #[error("no usable application certificate in {0} (own/cert.der and private/private.pem)")]
    NoOwnCertificate(String),
    #[error(
        "[[opcua]] {0:?} names its own certificate and private_key files: replace those yourself"
    )]
    OwnFiles(String),
    #[error("the new certificate cannot be read: {0}")]
    NewCertificate(String),
    #[error("cannot load the user certificate {certificate} / {key}: {reason}")]
    UserCertificate {
        certificate: String,
        key: String,
        reason: String,
    },
    /// The password file or variable.
    #[error("{0}")]
    Secret(String),
    #[error("{url}: {why}")]
    Url { url: String, why: String },
}

fn path_error(path: &Path) -> impl FnOnce(std::io::Error) -> SetupError + '_ {
    move |error| SetupError::Path {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
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
pub fn client(
    endpoint: &OpcuaEndpoint,
    pki: &Path,
    session_name: &str,
) -> Result<Client, SetupError> {
    let pki = std::path::absolute(pki).map_err(path_error(pki))?;
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
            .certificate_path(std::path::absolute(cert).map_err(path_error(cert))?)
            .private_key_path(std::path::absolute(key).map_err(path_error(key))?),
        None => builder.create_sample_keypair(true),
    };
    let client = builder
        .client()
        .map_err(|errors| SetupError::Settings(errors.join("; ")))?;
    if endpoint.application_certificate.is_none() {
        restrict_private_key(&pki.join("private/private.pem"));
    }
    if endpoint.security_policy != SecurityPolicy::None {
        let store = client.certificate_store().read();
        if store.read_own_cert().is_err() || store.read_own_pkey().is_err() {
            return Err(SetupError::NoOwnCertificate(pki.display().to_string()));
        }
    }
    Ok(client)
}

/// Replaces the generated application certificate with a new one for the endpoint's application
/// URI (after `agent.name` changed), keeping the old files beside it. Returns a description of the
/// new certificate. Servers that trusted the old one must trust the new one.
pub fn renew_certificate(
    endpoint: &OpcuaEndpoint,
    files: &ClientFiles,
) -> Result<String, SetupError> {
    if endpoint.application_certificate.is_some() {
        return Err(SetupError::OwnFiles(endpoint.name.clone()));
    }
    let own = ["own/cert.der", "private/private.pem"].map(|own| files.pki.join(own));
    let suffix = crate::files::aside_suffix(&[&own[0], &own[1]], "replaced");
    for path in own {
        if path.exists() {
            let mut aside = path.clone().into_os_string();
            aside.push(&suffix);
            std::fs::rename(&path, &aside).map_err(path_error(&path))?;
        }
    }
    let client = client(endpoint, &files.pki, "millwright trust")?;
    let store = client.certificate_store().read();
    let cert = store
        .read_own_cert()
        .map_err(|e| SetupError::NewCertificate(e.to_string()))?;
    Ok(format!(
        "new certificate {} for {} (SHA-1 thumbprint {}); the old one was kept as *{suffix}",
        files.pki.join("own/cert.der").display(),
        endpoint.application_uri,
        cert.thumbprint().as_hex_string()
    ))
}

/// The application URI the client's own certificate was made for, when it differs from the
/// endpoint's (a renamed agent with an old certificate). Servers refuse such a client with a bare
/// `BadCertificateUriInvalid`, so it is caught before connecting.
pub fn own_certificate_mismatch(client: &Client, endpoint: &OpcuaEndpoint) -> Option<String> {
    let store = client.certificate_store().read();
    let own = store.read_own_cert().ok()?;
    if own
        .is_application_uri_valid(&endpoint.application_uri)
        .is_ok()
    {
        return None;
    }
    let der = own.to_der().ok()?;
    let names = certificate_names(&der);
    Some(
        names
            .uris
            .first()
            .cloned()
            .unwrap_or_else(|| "no URI".into()),
    )
}

/// What a certificate's subject alternative names say: its URIs, and its host names and IP
/// addresses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CertificateNames {
    pub uris: Vec<String>,
    pub hosts: Vec<String>,
}

pub fn certificate_names(der: &[u8]) -> CertificateNames {
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::SubjectAltName;
    let mut names = CertificateNames::default();
    let Ok(certificate) = x509_cert::Certificate::from_der(der) else {
        return names;
    };
    let Ok(Some((_, SubjectAltName(general)))) =
        certificate.tbs_certificate.get::<SubjectAltName>()
    else {
        return names;
    };
    for name in general {
        match name {
            GeneralName::UniformResourceIdentifier(uri) => names.uris.push(uri.to_string()),
            GeneralName::DnsName(host) => names.hosts.push(host.to_string()),
            GeneralName::IpAddress(octets) => {
                let bytes = octets.as_bytes();
                let ip = match bytes.len() {
                    4 => <[u8; 4]>::try_from(bytes)
                        .ok()
                        .map(|b| std::net::IpAddr::from(b).to_string()),
                    16 => <[u8; 16]>::try_from(bytes)
                        .ok()
                        .map(|b| std::net::IpAddr::from(b).to_string()),
                    _ => None,
                };
                names.hosts.extend(ip);
            }
            _ => {}
        }
    }
    names
}

/// Connects to the configured URL whatever host name the endpoint description names (used when
/// the description was rewritten to the certificate's host name on the user's say-so).
struct ConfiguredUrl(String);

impl ::opcua::client::ConnectionSource for ConfiguredUrl {
    type Builder = String;

    fn get_connector(
        &self,
        _: &::opcua::types::EndpointDescription,
    ) -> Result<String, ::opcua::types::Error> {
        Ok(self.0.clone())
    }
}

#[cfg(unix)]
fn restrict_private_key(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_private_key(_: &Path) {}

fn identity_token(identity: &Identity) -> Result<IdentityToken, SetupError> {
    match identity {
        Identity::Anonymous => Ok(IdentityToken::Anonymous),
        Identity::UserName { username, password } => {
            let secret = password.read().map_err(SetupError::Secret)?;
            Ok(IdentityToken::new_user_name(
                username.clone(),
                secret.expose().to_string(),
            ))
        }
        Identity::Certificate {
            certificate,
            private_key,
        } => IdentityToken::new_x509_path(certificate, private_key).map_err(|e| {
            SetupError::UserCertificate {
                certificate: certificate.display().to_string(),
                key: private_key.display().to_string(),
                reason: e.to_string(),
            }
        }),
    }
}

/// Opens a session: discovers the server's endpoints, picks the configured policy and mode,
/// checks the server certificate against `trusted/` and the URL's host name, and activates the
/// session with the identity.
pub async fn connect(
    endpoint: &OpcuaEndpoint,
    files: &ClientFiles,
    session_name: &str,
) -> Result<Connection, ConnectError> {
    let (pki, config) = (files.pki.as_path(), files.config.as_path());
    let client = client(endpoint, pki, session_name)?;
    if endpoint.security_policy != SecurityPolicy::None
        && endpoint.application_certificate.is_none()
    {
        if let Some(made_for) = own_certificate_mismatch(&client, endpoint) {
            return Err(ConnectError::OwnCertificateUri {
                endpoint: endpoint.name.clone(),
                certificate: pki.join("own/cert.der").display().to_string(),
                made_for,
                configured: endpoint.application_uri.clone(),
                config: config.display().to_string(),
            });
        }
    }
    let identity = identity_token(&endpoint.identity)?;
    let limit = endpoint.request_timeout * 3;
    let description = tokio::time::timeout(limit, matching_endpoint(&client, endpoint))
        .await
        .map_err(|_| ConnectError::Timeout(limit))??;
    let (session, event_loop) = client
        .session_builder()
        .connect_to_endpoint_directly(description)
        .and_then(|builder| {
            builder
                .user_identity_token(identity)
                .with_connector(ConfiguredUrl(endpoint.url.clone()))
                .build(Arc::clone(client.certificate_store()))
        })
        .map_err(|e| ConnectError::Status(e.to_string()))?;
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
            Err(explain(status, endpoint, pki, config))
        }
        Err(_) => {
            driver.abort();
            Err(ConnectError::Timeout(limit))
        }
    }
}

/// The server's endpoint with the configured policy and mode, its URL on the configured host
/// (servers often advertise a name the gateway cannot reach). When the server's certificate does
/// not name that host, this says so, or, on the user's say-so, names the host the certificate
/// does (the connection still goes to the configured URL).
async fn matching_endpoint(
    client: &Client,
    endpoint: &OpcuaEndpoint,
) -> Result<::opcua::types::EndpointDescription, ConnectError> {
    let offered = client
        .get_server_endpoints_from_url(endpoint.url.as_str())
        .await
        .map_err(|e| ConnectError::Status(e.to_string()))?;
    let mut description = Client::find_matching_endpoint(
        &offered,
        &endpoint.url,
        ua_policy(endpoint.security_policy),
        ua_mode(endpoint.security_mode),
    )
    .ok_or_else(|| ConnectError::NoMatchingEndpoint {
        policy: endpoint.security_policy.name().into(),
        mode: endpoint.security_mode.name().into(),
    })?;
    if endpoint.security_policy == SecurityPolicy::None {
        return Ok(description);
    }
    let expected = hostname_from_url(&endpoint.url).map_err(|_| SetupError::Url {
        url: endpoint.url.clone(),
        why: "the URL has no host".into(),
    })?;
    // The URL writes an IPv6 host in brackets; a certificate names the bare address.
    let bare = expected.trim_start_matches('[').trim_end_matches(']');
    let presented = certificate_names(description.server_certificate.as_ref()).hosts;
    if presented.iter().any(|h| h.eq_ignore_ascii_case(bare)) {
        return Ok(description);
    }
    match presented.first() {
        Some(host) if endpoint.accept_host_name_mismatch => {
            let url =
                url_with_replaced_hostname(&endpoint.url, host).map_err(|e| SetupError::Url {
                    url: endpoint.url.clone(),
                    why: e.to_string(),
                })?;
            description.endpoint_url = url.into();
            Ok(description)
        }
        _ => Err(ConnectError::HostNameMismatch {
            endpoint: endpoint.name.clone(),
            expected,
            presented: if presented.is_empty() {
                "no host at all".into()
            } else {
                presented.join(", ")
            },
        }),
    }
}

fn explain(
    status: StatusCode,
    endpoint: &OpcuaEndpoint,
    pki: &Path,
    config: &Path,
) -> ConnectError {
    match status {
        StatusCode::BadCertificateUntrusted
        | StatusCode::BadSecurityChecksFailed
        | StatusCode::BadCertificateInvalid
            if endpoint.security_policy != SecurityPolicy::None =>
        {
            ConnectError::Untrusted {
                endpoint: endpoint.name.clone(),
                rejected: pki.join("rejected").display().to_string(),
                config: config.display().to_string(),
            }
        }
        StatusCode::BadIdentityTokenRejected
        | StatusCode::BadIdentityTokenInvalid
        | StatusCode::BadUserAccessDenied => ConnectError::IdentityRejected(status.to_string()),
        StatusCode::BadCertificateUriInvalid => ConnectError::Status(format!(
            "the server refused this agent's certificate: its application URI does not match {:?} (BadCertificateUriInvalid); see pki/own/cert.der",
            endpoint.application_uri
        )),
        other => ConnectError::Status(other.to_string()),
    }
}

/// Why a session's connection ended, in words: the library reports a server that closed the
/// connection cleanly as `Good`.
pub fn session_end(status: StatusCode) -> String {
    match status {
        StatusCode::Good => {
            "the server closed the connection (it shut down, restarted or dropped this client)"
                .into()
        }
        StatusCode::BadConnectionClosed | StatusCode::BadSecureChannelClosed => {
            format!("the connection was closed ({status})")
        }
        StatusCode::BadTimeout | StatusCode::BadRequestTimeout => {
            format!("the server stopped answering (keep-alive failed: {status})")
        }
        StatusCode::BadSessionIdInvalid | StatusCode::BadSessionClosed => {
            format!("the server no longer knows the session (it restarted?): {status}")
        }
        other => format!("the session ended: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_close_is_not_called_good() {
        assert!(session_end(StatusCode::Good).starts_with("the server closed the connection"));
        assert!(!session_end(StatusCode::Good).contains("Good"));
        assert!(session_end(StatusCode::BadTimeout).contains("stopped answering"));
    }
}

//! Why the broker cannot be reached, in words a user can act on: refused, which TLS check failed,
//! a timeout, a name that does not resolve, a client certificate the broker wants. rumqttc's own
//! texts ("Mqtt serialization/deserialization error: IO: received fatal alert: CertificateRequired")
//! name the layer that failed, not the cause.

use std::io;

use firmware_config::Mqtt;
use rumqttc::{ConnectReturnCode, ConnectionError, StateError};
use rustls::{AlertDescription, CertificateError};

use super::suspects::Loss;

/// What went wrong with a connection: a sentence for `status`, the log and the `agent/broker`
/// alert, and how it ended for blaming a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub text: String,
    pub loss: Loss,
}

impl Reason {
    pub fn other(text: String) -> Reason {
        Reason {
            text,
            loss: Loss::Other,
        }
    }
}

/// Explains a connection error for the broker configured in `mqtt`.
pub fn describe(error: &ConnectionError, mqtt: &Mqtt) -> Reason {
    let broker = format!("{}:{}", mqtt.host, mqtt.port);
    if let Some(tls) = find::<rustls::Error>(error) {
        return Reason::other(format!("TLS with {broker}: {}", tls_words(tls, mqtt)));
    }
    if let Some(text) = client_certificate_wanted(error) {
        return Reason::other(text);
    }
    let text = match error {
        ConnectionError::ConnectionRefused(code) => {
            format!("{broker} refused the connection: {}", refusal(*code))
        }
        ConnectionError::NetworkTimeout => format!(
            "timeout: {broker} did not answer within {}",
            humantime::format_duration(mqtt.connect_timeout)
        ),
        ConnectionError::MqttState(StateError::ConnectionAborted) => {
            return Reason {
                text: format!("{broker} closed the connection"),
                loss: Loss::ClosedByBroker,
            }
        }
        ConnectionError::MqttState(StateError::AwaitPingResp) => format!(
            "timeout: {broker} stopped answering (no ping response within keep_alive {})",
            humantime::format_duration(mqtt.keep_alive)
        ),
        ConnectionError::Tls(rumqttc::TlsError::NoValidCertInChain) => {
            "TLS: ca_file holds no usable CA certificate".into()
        }
        ConnectionError::Tls(rumqttc::TlsError::NoValidClientCertInChain) => {
            "TLS: client_cert holds no usable certificate".into()
        }
        ConnectionError::Tls(rumqttc::TlsError::NoValidKeyInChain) => {
            "TLS: client_key holds no usable private key".into()
        }
        other => match find::<io::Error>(other) {
            Some(io) => return io_words(io, &broker, &mqtt.host),
            None => other.to_string(),
        },
    };
    Reason::other(text)
}

/// The first error of type `E` in `error`'s source chain (TLS errors arrive wrapped in I/O
/// errors, themselves wrapped in rumqttc's).
fn find<E: std::error::Error + 'static>(error: &ConnectionError) -> Option<&E> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(found) = io.get_ref().and_then(|inner| inner.downcast_ref::<E>()) {
                return Some(found);
            }
        }
        current = e.source();
    }
    None
}

/// TLS 1.3 reports a missing client certificate only after the handshake, as an alert that
/// rumqttc turns into text.
fn client_certificate_wanted(error: &ConnectionError) -> Option<String> {
    error.to_string().contains("CertificateRequired").then(|| {
        "the broker requires a client certificate (set client_cert and client_key in [mqtt])".into()
    })
}

fn refusal(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::BadUserNamePassword => {
            "bad user name or password (username, password_file or password_env)"
        }
        ConnectReturnCode::NotAuthorized => {
            "not authorized (the broker's access rules do not admit this client)"
        }
        ConnectReturnCode::BadClientId => "client id rejected (client_id)",
        ConnectReturnCode::ServiceUnavailable => "service unavailable",
        ConnectReturnCode::RefusedProtocolVersion => {
            "protocol version refused (the agent speaks MQTT 3.1.1)"
        }
        ConnectReturnCode::Success => "no reason given",
    }
}

fn tls_words(error: &rustls::Error, mqtt: &Mqtt) -> String {
    let host = &mqtt.host;
    match error {
        rustls::Error::InvalidCertificate(certificate) => match certificate {
            CertificateError::UnknownIssuer => format!(
                "the broker's certificate is not signed by a trusted CA (UnknownIssuer; {})",
                match &mqtt.ca_file {
                    Some(ca) => format!("ca_file is {}", ca.display()),
                    None => "no ca_file: the system's roots were used".into(),
                }
            ),
            CertificateError::NotValidForName
            | CertificateError::NotValidForNameContext { .. } => format!(
                "the broker's certificate is not valid for the name {host:?} in the url (NotValidForName)"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the broker's certificate has expired (or this gateway's clock is wrong)".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the broker's certificate is not valid yet (or this gateway's clock is wrong)"
                    .into()
            }
            CertificateError::Revoked => "the broker's certificate has been revoked".into(),
            other => format!("the broker's certificate was refused ({other:?})"),
        },
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            "the broker requires a client certificate (set client_cert and client_key in [mqtt])"
                .into()
        }
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired),
        ) => format!("the broker refused the client certificate ({alert:?})"),
        rustls::Error::AlertReceived(alert) => format!("the broker ended the handshake ({alert:?})"),
        other => other.to_string(),
    }
}

fn io_words(error: &io::Error, broker: &str, host: &str) -> Reason {
    use io::ErrorKind::*;
    let text = error.to_string();
    let (words, loss) = match error.kind() {
        ConnectionRefused => (
            format!("connection refused: nothing accepts connections on {broker}"),
            Loss::Other,
        ),
        TimedOut => (format!("timeout connecting to {broker}"), Loss::Other),
        ConnectionReset | ConnectionAborted | UnexpectedEof | BrokenPipe => (
            format!("{broker} closed the connection ({text})"),
            Loss::ClosedByBroker,
        ),
        HostUnreachable | NetworkUnreachable => {
            (format!("{broker} cannot be reached: {text}"), Loss::Other)
        }
        _ if text.contains("lookup")
            || text.contains("resolve")
            || text.contains("Name or service") =>
        {
            (
                format!("DNS: the name {host:?} does not resolve ({text})"),
                Loss::Other,
            )
        }
        _ => (format!("{broker}: {text}"), Loss::Other),
    };
    Reason { text: words, loss }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn mqtt() -> Mqtt {
        let plan = firmware_config::load_str(
            std::path::Path::new("/etc/millwright/m.toml"),
            "[mqtt]\nurl = \"mqtts://broker.plant:8883\"\nca_file = \"ca.pem\"\n",
        )
        .expect("valid");
        plan.mqtt.expect("mqtt")
    }

    fn tls_io(error: rustls::Error) -> ConnectionError {
        ConnectionError::Tls(rumqttc::TlsError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            error,
        )))
    }

    #[test]
    fn tls_failures_name_the_check_that_failed() {
        let mqtt = mqtt();
        let unknown = describe(
            &tls_io(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
            &mqtt,
        );
        assert_eq!(unknown.text, format!("TLS with broker.plant:8883: the broker's certificate is not signed by a trusted CA (UnknownIssuer; ca_file is {})", PathBuf::from("/etc/millwright/ca.pem").display()));
        let name = describe(
            &tls_io(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            )),
            &mqtt,
        );
        assert!(
            name.text
                .contains("not valid for the name \"broker.plant\""),
            "{}",
            name.text
        );
        let expired = describe(
            &tls_io(rustls::Error::InvalidCertificate(CertificateError::Expired)),
            &mqtt,
        );
        assert!(expired.text.contains("expired"), "{}", expired.text);
        let wanted = describe(
            &tls_io(rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired,
            )),
            &mqtt,
        );
        assert!(
            wanted
                .text
                .contains("requires a client certificate (set client_cert and client_key"),
            "{}",
            wanted.text
        );
    }

    #[test]
    fn a_missing_client_certificate_seen_after_the_handshake_is_named() {
        // What rumqttc reports when TLS 1.3 refuses the client after the handshake.
        let error =
            ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::Io(
                io::Error::other("received fatal alert: CertificateRequired"),
            )));
        let reason = describe(&error, &mqtt());
        assert_eq!(
            reason.text,
            "the broker requires a client certificate (set client_cert and client_key in [mqtt])"
        );
    }

    #[test]
    fn refusals_timeouts_names_and_closes_are_told_apart() {
        let mqtt = mqtt();
        let refused = describe(
            &ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword),
            &mqtt,
        );
        assert!(refused
            .text
            .contains("refused the connection: bad user name or password"));
        let nothing = describe(
            &ConnectionError::Io(io::Error::from(io::ErrorKind::ConnectionRefused)),
            &mqtt,
        );
        assert!(nothing
            .text
            .starts_with("connection refused: nothing accepts connections on broker.plant:8883"));
        let dns = describe(
            &ConnectionError::Io(io::Error::other(
                "failed to lookup address information: Name or service not known",
            )),
            &mqtt,
        );
        assert!(
            dns.text
                .starts_with("DNS: the name \"broker.plant\" does not resolve"),
            "{}",
            dns.text
        );
        assert_eq!(dns.loss, Loss::Other);
        let timeout = describe(&ConnectionError::NetworkTimeout, &mqtt);
        assert!(timeout.text.starts_with("timeout"));
        let closed = describe(
            &ConnectionError::MqttState(StateError::ConnectionAborted),
            &mqtt,
        );
        assert_eq!(closed.loss, Loss::ClosedByBroker);
        let reset = describe(
            &ConnectionError::MqttState(StateError::Io(io::Error::from(
                io::ErrorKind::ConnectionReset,
            ))),
            &mqtt,
        );
        assert_eq!(reset.loss, Loss::ClosedByBroker);
        let ping = describe(
            &ConnectionError::MqttState(StateError::AwaitPingResp),
            &mqtt,
        );
        assert_eq!(ping.loss, Loss::Other);
    }
}

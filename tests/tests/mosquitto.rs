//! Interoperability with mosquitto (Debian's package, as on a plant's broker): TLS with a private
//! CA and a password file, mutual TLS with a client certificate, and clear errors for a wrong
//! password and an untrusted server. Certificates are made by the test.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use millwright_tests::mqtt::{records, Consumer, Mosquitto};
use millwright_tests::{AgentProcess, Sim};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rumqttc::{MqttOptions, TlsConfiguration, Transport};

const SIM: &str = r#"
[[machines]]
name = "fan"
kind = "fan"
unit_id = 1
[[machines.points]]
name = "speed"
table = "holding"
address = 0
type = "f32"
signal = { base = 1480.0 }
"#;

const PASSWORD: &str = "s3cret-Pa55";

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn make_pki(name: &str) -> Pki {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, name);
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let leaf = |san: Vec<String>, purpose| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(san).expect("params");
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &ca_cert, &ca_key).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca_cert.pem(),
        server: leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        client: leaf(vec!["gw".into()], ExtendedKeyUsagePurpose::ClientAuth),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

/// A TLS listener with a password file, in a fresh directory that the test's files join; with
/// `mutual`, client certificates are required too.
async fn broker(pki: &Pki, mutual: bool) -> (tempfile::TempDir, Mosquitto) {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path();
    let ca = write(dir, "ca.pem", &pki.ca);
    let cert = write(dir, "server.pem", &pki.server.0);
    let key = write(dir, "server.key", &pki.server.1);
    let passwords = dir.join("passwd");
    std::fs::write(&passwords, "").expect("passwd");
    for (user, password) in [("gw", PASSWORD), ("consumer", "consumer-pw")] {
        let status = std::process::Command::new("mosquitto_passwd")
            .args(["-b"])
            .arg(&passwords)
            .args([user, password])
            .status()
            .expect("mosquitto_passwd");
        assert!(status.success());
    }
    let passwords = passwords.display().to_string();
    let mosquitto = Mosquitto::start(dir, move |port| {
        format!(
            "user root\nper_listener_settings true\nlistener {port} 127.0.0.1\n\
             cafile {ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate {mutual}\n\
             allow_anonymous false\npassword_file {passwords}\n"
        )
    })
    .await;
    (temp, mosquitto)
}

fn tls_options(client_id: &str, port: u16, pki: &Pki) -> MqttOptions {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca.as_bytes()) {
        roots.add(cert.expect("ca pem")).expect("add ca");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_root_certificates(roots);
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(pki.client.0.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("client cert");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pki.client.1.as_bytes())
        .expect("client key");
    let config = builder
        .with_client_auth_cert(chain, key)
        .expect("client auth");
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options
        .set_credentials("consumer", "consumer-pw")
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(config),
        )));
    options
}

fn agent_config(dir: &Path, sim_port: u16, port: u16, mqtt_extra: &str) -> std::path::PathBuf {
    let data = dir.join("data");
    let text = format!(
        r#"
[agent]
name = "gw"
data_dir = {data:?}

[outbox]
summary_interval = "200ms"

[mqtt]
url = "mqtts://127.0.0.1:{port}"
username = "gw"
keep_alive = "5s"
connect_timeout = "2s"
backoff = {{ initial = "200ms", max = "1s" }}
topics = {{ enterprise = "acme", site = "plant1", area = "area", line = "line" }}
{mqtt_extra}

[[devices]]
name = "fan"
host = "127.0.0.1"
port = {sim_port}
unit_id = 1
addressing = "zero_based"
poll_interval = "100ms"

[[devices.tags]]
name = "fan.speed"
table = "holding_register"
address = 0
type = "f32"
unit = "rpm"
"#
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).expect("config");
    path
}

async fn summaries_arrive(consumer: &Consumer) -> bool {
    consumer
        .wait_until(Duration::from_secs(15), |m| {
            records(m).iter().any(|r| {
                r.2["kind"] == "tags" && r.2["data"]["tags"]["fan.speed"]["last"] == 1480.0
            })
        })
        .await
}

millwright_tests::needs! { mosquitto
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_password_file_and_mutual_tls_against_mosquitto() {
    let sim = Sim::start(SIM, 0).await;
    let pki = make_pki("millwright test CA");

    // TLS, private CA, password from a file.
    let (dir, mosquitto) = broker(&pki, false).await;
    let consumer = Consumer::connect(
        tls_options("consumer", mosquitto.port, &pki),
        "acme/plant1/area/line/#",
    )
    .await;
    let ca = write(dir.path(), "agent-ca.pem", &pki.ca);
    let secret = write(dir.path(), "mqtt.password", &format!("{PASSWORD}\n"));
    let config = agent_config(
        dir.path(),
        sim.addr.port(),
        mosquitto.port,
        &format!("password_file = {secret:?}\nca_file = {ca:?}"),
    );
    let agent = AgentProcess::spawn(&config);
    assert!(summaries_arrive(&consumer).await, "summaries over TLS");
    let log = agent.terminate().await;
    assert!(
        !log.transcript().contains(PASSWORD),
        "the password never appears in the log"
    );

    // Mutual TLS: a client certificate, the password from an environment variable.
    let (dir, mosquitto) = broker(&pki, true).await;
    let consumer = Consumer::connect(
        tls_options("consumer", mosquitto.port, &pki),
        "acme/plant1/area/line/#",
    )
    .await;
    let ca = write(dir.path(), "agent-ca.pem", &pki.ca);
    let cert = write(dir.path(), "client.pem", &pki.client.0);
    let key = write(dir.path(), "client.key", &pki.client.1);
    let config = agent_config(
        dir.path(),
        sim.addr.port(),
        mosquitto.port,
        &format!(
            "password_env = \"MW_TEST_MQTT_PASSWORD\"\nca_file = {ca:?}\nclient_cert = {cert:?}\nclient_key = {key:?}"
        ),
    );
    let mut command = AgentProcess::command(&config);
    command.env("MW_TEST_MQTT_PASSWORD", PASSWORD);
    let agent = AgentProcess::spawn_command(command);
    assert!(
        summaries_arrive(&consumer).await,
        "summaries over mutual TLS"
    );
    agent.terminate().await;
    sim.stop().await;
}
}

/// Runs an agent that cannot connect; its log must say why (`reason`), and it still stops cleanly.
async fn refused(
    dir: &Path,
    sim: &Sim,
    port: u16,
    mqtt: &str,
    reason: &str,
) -> millwright_tests::OutputLines {
    let config = agent_config(dir, sim.addr.port(), port, mqtt);
    let mut agent = AgentProcess::spawn(&config);
    let logged = agent
        .log
        .wait_for(Duration::from_secs(15), |l| {
            l.contains("MQTT connection unavailable") && l.contains(reason)
        })
        .await;
    assert!(logged.is_some(), "{}", agent.log.transcript());
    agent.terminate().await
}

millwright_tests::needs! { mosquitto
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_an_untrusted_server_are_reported_clearly() {
    let sim = Sim::start(SIM, 0).await;
    let pki = make_pki("millwright test CA");
    let (dir, mosquitto) = broker(&pki, false).await;

    let ca = write(dir.path(), "agent-ca.pem", &pki.ca);
    let wrong = write(dir.path(), "wrong.password", "not-the-password");
    let mqtt = format!("password_file = {wrong:?}\nca_file = {ca:?}");
    let log = refused(dir.path(), &sim, mosquitto.port, &mqtt, "refused").await;
    assert!(!log.transcript().contains("not-the-password"));

    // A server whose certificate chains to a CA the agent does not trust.
    let other = make_pki("some other CA");
    let untrusted = write(dir.path(), "other-ca.pem", &other.ca);
    let secret = write(dir.path(), "mqtt.password", PASSWORD);
    let mqtt = format!("password_file = {secret:?}\nca_file = {untrusted:?}");
    refused(dir.path(), &sim, mosquitto.port, &mqtt, "UnknownIssuer").await;

    // A broker that wants a client certificate, and an agent that has none: rumqttc's own words
    // were "Mqtt serialization/deserialization error: IO: received fatal alert: CertificateRequired".
    let (dir, mosquitto) = broker(&pki, true).await;
    let ca = write(dir.path(), "agent-ca.pem", &pki.ca);
    let secret = write(dir.path(), "mqtt.password", PASSWORD);
    let mqtt = format!("password_file = {secret:?}\nca_file = {ca:?}");
    refused(
        dir.path(),
        &sim,
        mosquitto.port,
        &mqtt,
        "the broker requires a client certificate (set client_cert and client_key in [mqtt])",
    )
    .await;
    sim.stop().await;
}
}

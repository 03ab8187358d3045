//! `[outbox]` and `[mqtt]`: a valid section becomes a plan; each kind of mistake is reported at its
//! line.

use std::path::Path;

use firmware_config::{load_str, PasswordSource};

mod common;
use common::one_error;

#[test]
fn a_complete_uplink_section_becomes_a_plan() {
    let plan = load_str(
        Path::new("/etc/millwright/plant.toml"),
        r#"
[agent]
name = "gw-7"
data_dir = "state"

[outbox]
max_size = "16 MiB"
flush_interval = "250ms"

[mqtt]
url = "mqtts://broker.plant:9883"
username = "gw-7"
password_file = "mqtt.password"
ca_file = "/etc/ssl/plant-ca.pem"
client_cert = "gw.pem"
client_key = "gw.key"
topics = { enterprise = "acme", site = "s1", area = "pack", line = "l3" }
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.agent.data_dir, Path::new("/etc/millwright/state"));
    assert_eq!(plan.outbox.dir, Path::new("/etc/millwright/state/outbox"));
    assert_eq!(plan.outbox.max_bytes, 16 << 20);
    let mqtt = plan.mqtt.expect("mqtt");
    assert_eq!(
        (mqtt.host.as_str(), mqtt.port, mqtt.tls),
        ("broker.plant", 9883, true)
    );
    assert_eq!(mqtt.client_id, "gw-7");
    assert_eq!(
        mqtt.password,
        Some(PasswordSource::File("/etc/millwright/mqtt.password".into()))
    );
    assert_eq!(mqtt.topic_prefix, "acme/s1/pack/l3");
    assert!(mqtt.client_auth.is_some());
}

#[test]
fn a_url_without_a_scheme() {
    one_error(
        "[mqtt]\nurl = \"broker:1883\"\n",
        "mqtt:// or mqtts://",
        "url",
    );
}

#[test]
fn credentials_in_the_url() {
    one_error(
        "[mqtt]\nurl = \"mqtt://u:p@broker\"\n",
        "username and password_file",
        "url",
    );
}

#[test]
fn two_password_sources() {
    one_error(
        "[mqtt]\nurl = \"mqtt://b\"\nusername = \"u\"\npassword_file = \"f\"\npassword_env = \"P\"\n",
        "not both",
        "password_env",
    );
}

#[test]
fn a_password_without_a_username() {
    one_error(
        "[mqtt]\nurl = \"mqtt://b\"\npassword_env = \"P\"\n",
        "needs a username",
        "password_env",
    );
}

#[test]
fn a_client_certificate_without_its_key() {
    one_error(
        "[mqtt]\nurl = \"mqtts://b\"\nclient_cert = \"c.pem\"\n",
        "needs client_key",
        "client_cert",
    );
}

#[test]
fn tls_files_without_tls() {
    one_error(
        "[mqtt]\nurl = \"mqtt://b\"\nca_file = \"ca.pem\"\n",
        "mqtts://",
        "ca_file",
    );
}

#[test]
fn a_topic_level_with_a_slash() {
    one_error(
        "[mqtt]\nurl = \"mqtt://b\"\ntopics = { site = \"a/b\" }\n",
        "topics.site \"a/b\" cannot be used in MQTT topics: it contains `/`",
        "topics",
    );
    one_error(
        "[mqtt]\nurl = \"mqtt://b\"\ntopics = { enterprise = \"$SYS\" }\n",
        "must not start with `$`",
        "topics",
    );
}

#[test]
fn an_outbox_too_small_and_a_size_that_is_not_one() {
    one_error(
        "[outbox]\nmax_size = \"4 KiB\"\n[mqtt]\nurl = \"mqtt://b\"\n",
        "at least 64 KiB",
        "max_size",
    );
    one_error(
        "[outbox]\nmax_size = \"lots\"\n[mqtt]\nurl = \"mqtt://b\"\n",
        "expected a size such as \"64 MiB\"",
        "max_size",
    );
}

#[test]
fn an_unknown_key() {
    one_error(
        "[mqtt]\nurl = \"mqtt://b\"\nqos = 2\n",
        "unknown key `qos`",
        "qos",
    );
}

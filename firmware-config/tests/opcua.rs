//! `[[opcua]]`: a valid endpoint becomes a plan; each kind of mistake is reported at its line.

use std::path::Path;
use std::time::Duration;

mod common;
use common::{errors_at, one_error};
use firmware_config::{
    load_str, Acquisition, Deadband, Identifier, Identity, Namespace, PasswordSource, SecurityMode,
    SecurityPolicy,
};

const ENDPOINT: &str = r#"
[agent]
name = "gw-7"

[[opcua]]
name = "press"
url = "opc.tcp://10.0.0.5:4840"
"#;

fn with(extra: &str, tags: &str) -> String {
    format!("{ENDPOINT}{extra}\n{tags}")
}

const TAG: &str = "\n[[opcua.tags]]\nname = \"temp\"\nnode = \"ns=2;s=Press.Temp\"\n";

#[test]
fn a_complete_endpoint_becomes_a_plan() {
    let text = with(
        r#"security_policy = "Aes256_Sha256_RsaPss"
security_mode = "SignAndEncrypt"
publishing_interval = "500ms"
max_items_per_request = 200

[opcua.identity]
username = "operator"
password_file = "opcua.pass"
"#,
        r#"
[[opcua.tags]]
name = "temp"
node = "nsu=urn:acme:press;s=Press.Temp"
sampling_interval = "250ms"
deadband_percent = 2.0
unit = "°C"

[[opcua.tags]]
name = "waveform"
node = "ns=3;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63"
mode = "poll"
poll_interval = "10s"
"#,
    );
    let plan =
        load_str(Path::new("/etc/millwright/plant.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let endpoint = &plan.opcua[0];
    assert_eq!(endpoint.security_policy, SecurityPolicy::Aes256Sha256RsaPss);
    assert_eq!(endpoint.security_mode, SecurityMode::SignAndEncrypt);
    assert_eq!(endpoint.application_uri, "urn:millwright:gw-7");
    assert_eq!(endpoint.max_items_per_request, 200);
    assert_eq!(
        endpoint.identity,
        Identity::UserName {
            username: "operator".into(),
            password: PasswordSource::File("/etc/millwright/opcua.pass".into()),
        }
    );
    let temp = &endpoint.tags[0];
    assert_eq!(temp.node.namespace, Namespace::Uri("urn:acme:press".into()));
    assert_eq!(
        temp.acquisition,
        Acquisition::Subscribe {
            sampling_interval: Duration::from_millis(250),
            queue_size: 1,
            deadband: Some(Deadband::Percent(2.0)),
        }
    );
    let waveform = &endpoint.tags[1];
    assert!(matches!(waveform.node.identifier, Identifier::Guid(_)));
    assert_eq!(
        waveform.acquisition,
        Acquisition::Poll {
            interval: Duration::from_secs(10)
        }
    );
    assert_eq!(plan.tag_count(), 2);
    assert_eq!(plan.opcua_tag_base(0), 0);
}

#[test]
fn a_url_that_is_not_opc_tcp() {
    let text = with("", TAG).replace("opc.tcp://10.0.0.5:4840", "http://10.0.0.5:4840");
    one_error(&text, "must start with opc.tcp://", "url");
}

#[test]
fn a_security_policy_without_a_mode_and_a_mode_without_a_policy() {
    one_error(
        &with("security_policy = \"Basic256Sha256\"", TAG),
        "needs security_mode Sign or SignAndEncrypt",
        "security_policy",
    );
    one_error(
        &with("security_mode = \"Sign\"", TAG),
        "needs a security_policy",
        "security_mode",
    );
}

#[test]
fn an_unknown_security_policy_is_named() {
    let errors = errors_at(&with("security_policy = \"Basic128Rsa15\"", TAG));
    assert!(errors[0].1.contains("Basic128Rsa15"), "{errors:?}");
}

#[test]
fn a_malformed_node_id_is_reported_at_the_node() {
    one_error(
        &with(
            "",
            "\n[[opcua.tags]]\nname = \"temp\"\nnode = \"ns=2;x=Temp\"\n",
        ),
        "unknown identifier type",
        "node",
    );
}

#[test]
fn poll_settings_on_a_subscribed_tag_and_the_reverse() {
    one_error(
        &with("", &format!("{TAG}poll_interval = \"1s\"\n")),
        "poll_interval is for polled tags",
        "poll_interval",
    );
    one_error(
        &with(
            "",
            &format!("{TAG}mode = \"poll\"\ndeadband_absolute = 0.5\n"),
        ),
        "deadband_absolute is for subscribed tags",
        "deadband_absolute",
    );
    one_error(
        &with("", &format!("{TAG}deadband_percent = 150.0\n")),
        "deadband_percent must be 0–100",
        "deadband_percent",
    );
}

#[test]
fn an_identity_with_a_username_but_no_password() {
    one_error(
        &with("[opcua.identity]\nusername = \"operator\"\n", TAG),
        "username needs password_file or password_env",
        "username",
    );
}

#[test]
fn a_tag_name_shared_with_a_modbus_device() {
    let text = format!(
        "{}\n[[devices]]\nname = \"plc\"\nhost = \"10.0.0.9\"\naddressing = \"zero_based\"\n[[devices.tags]]\nname = \"temp\"\ntable = \"holding_register\"\naddress = 0\n",
        with("", TAG)
    );
    let errors = errors_at(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .1
            .contains("duplicate tag name (also on a Modbus device)"),
        "{errors:?}"
    );
}

#[test]
fn an_endpoint_without_tags() {
    let errors = errors_at(ENDPOINT);
    assert!(errors[0].1.contains("endpoint has no tags"), "{errors:?}");
}

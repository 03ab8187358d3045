//! `[mqtt] format` and `[mqtt.sparkplug]`: the edge node resolves its ids, deadbands and writable
//! tags, and each mistake is reported once, at its line in the file.

mod common;

use std::time::Duration;

use common::{errors_at, one_error};
use firmware_config::load_str;

const NODE: &str = include_str!("../../agent/tests/fixtures/sparkplug-node.toml");

#[test]
fn the_node_resolves_its_formats_ids_deadbands_and_writable_tags() {
    let plan = load_str(std::path::Path::new("node.toml"), NODE).expect("valid");
    let formats = &plan.mqtt.as_ref().expect("mqtt").formats;
    assert!(formats.uns);
    let node = formats.sparkplug.as_ref().expect("sparkplug");
    assert_eq!(node.group_id, "plant");
    assert_eq!(node.edge_node, "gw-sp", "the agent's name by default");
    assert_eq!(node.primary_host.as_deref(), Some("scada"));
    assert_eq!(node.data_interval, Duration::from_millis(100));
    assert_eq!((node.deadband("f64"), node.deadband("f32")), (2.5, 0.1));
    assert!(node.writable.contains("u16") && node.writable.contains("run"));
}

#[test]
fn uns_alone_is_the_default() {
    let text = NODE
        .replace("format = [\"uns\", \"sparkplug\"]\n", "")
        .split("[mqtt.sparkplug]")
        .next()
        .expect("text")
        .to_string();
    let plan = load_str(std::path::Path::new("node.toml"), &text).expect("valid");
    let formats = &plan.mqtt.expect("mqtt").formats;
    assert!(formats.uns && formats.sparkplug.is_none());
}

#[test]
fn an_unknown_format() {
    let text = NODE.replace(
        "format = [\"uns\", \"sparkplug\"]",
        "format = [\"uns\", \"spb\"]",
    );
    one_error(&text, "unknown format \"spb\"", "format =");
}

#[test]
fn sparkplug_without_its_section() {
    let text = NODE
        .split("[mqtt.sparkplug]")
        .next()
        .expect("text")
        .to_string();
    one_error(&text, "needs a [mqtt.sparkplug] section", "format =");
}

#[test]
fn a_section_the_format_does_not_use() {
    let text = NODE.replace("format = [\"uns\", \"sparkplug\"]", "format = \"uns\"");
    one_error(
        &text,
        "format does not include \"sparkplug\"",
        "[mqtt.sparkplug]",
    );
}

#[test]
fn a_group_id_that_breaks_the_topic() {
    let text = NODE.replace("group_id = \"plant\"", "group_id = \"plant/a\"");
    one_error(&text, "would split it into two topic levels", "group_id");
}

#[test]
fn a_writable_tag_that_is_read_only_or_missing() {
    let text = NODE.replace(
        "writable = [\"u16\", \"run\"]",
        "writable = [\"pressure\", \"ghost\", \"ua.temperature\"]",
    );
    let errors = errors_at(&text);
    let messages: Vec<&str> = errors.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(errors.len(), 3, "{messages:#?}");
    assert!(
        messages[0].contains("\"ghost\", which is not a tag"),
        "{messages:?}"
    );
    assert!(
        messages[1]
            .contains("\"pressure\", which is in the input_register table, which is read-only"),
        "{messages:?}"
    );
    assert!(messages[2].contains("OPC UA tag"), "{messages:?}");
}

#[test]
fn a_deadband_for_a_tag_that_does_not_exist_or_below_zero() {
    let text = NODE.replace(
        "deadbands = { \"f64\" = 2.5 }",
        "deadbands = { \"f46\" = 2.5 }",
    );
    one_error(
        &text,
        "deadbands names \"f46\", which is not a tag",
        "deadbands",
    );
    let text = NODE.replace("deadband = 0.1", "deadband = -1.0");
    one_error(&text, "finite number ≥ 0", "deadband =");
}

#[test]
fn things_of_one_name_are_one_device_unless_a_metric_name_is_taken_twice() {
    let merged = NODE.replace("id = \"P-1\"", "id = \"plc\"");
    load_str(std::path::Path::new("node.toml"), &merged).expect("an asset named after its PLC");
    let clash = merged.replace("name = \"i16\"", "name = \"health\"");
    one_error(
        &clash,
        "the Modbus device and the asset named \"plc\" are one Sparkplug device, and both have a metric \"health\"",
        "id = \"plc\"",
    );
}

#[test]
fn a_device_name_that_breaks_the_topic() {
    let text = NODE.replace("id = \"P-1\"", "id = \"P+1\"");
    one_error(&text, "an MQTT wildcard", "id = \"P+1\"");
}

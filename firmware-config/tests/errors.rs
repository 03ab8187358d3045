//! One test per kind of configuration mistake: the message and the line it points at.

use std::path::Path;

use firmware_config::{load_str, ConfigError};

const GOOD_DEVICE: &str = r#"
[[devices]]
name = "plc"
host = "127.0.0.1"
addressing = "zero_based"

[[devices.tags]]
name = "flow"
table = "holding"
address = 0
type = "f32"
"#;

fn errors(text: &str) -> Vec<ConfigError> {
    match load_str(Path::new("plant.toml"), text) {
        Ok(plan) => panic!(
            "expected errors, got a plan with {} devices",
            plan.devices.len()
        ),
        Err(e) => e.0,
    }
}

/// Asserts exactly one error, containing `needle`, on `line`.
fn one_error(text: &str, line: usize, needle: &str) -> ConfigError {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let error = errors.into_iter().next().expect("one error");
    assert!(
        error.message.contains(needle),
        "{:?} does not contain {needle:?}",
        error.message
    );
    assert_eq!(error.position.map(|p| p.0), Some(line), "{error}");
    error
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle in text")
        + 1
}

#[test]
fn good_config_builds_a_plan() {
    let plan = load_str(Path::new("plant.toml"), GOOD_DEVICE).expect("valid");
    assert_eq!(plan.devices[0].tags[0].name, "flow");
    assert_eq!(plan.devices[0].tags[0].width(), 2);
}

#[test]
fn toml_syntax_error() {
    let text = format!("{GOOD_DEVICE}\nscale = = 3\n");
    let errors = errors(&text);
    assert!(errors[0].message.starts_with("TOML syntax"), "{errors:?}");
    assert_eq!(errors[0].position.map(|p| p.0), Some(line_of(&text, "= =")));
}

#[test]
fn unknown_field_names_the_component() {
    let text = GOOD_DEVICE.replace("type = \"f32\"", "type = \"f32\"\nscael = 0.1");
    let e = one_error(&text, line_of(&text, "scael"), "unknown field `scael`");
    assert_eq!(e.component, "device \"plc\" tag \"flow\"");
    assert!(e
        .to_string()
        .starts_with(&format!("plant.toml:{}:", line_of(&text, "scael"))));
}

#[test]
fn wrong_value_type() {
    let text = GOOD_DEVICE.replace("address = 0", "address = \"zero\"");
    one_error(&text, line_of(&text, "address = \"zero\""), "invalid type");
}

#[test]
fn unknown_enum_value() {
    let text = GOOD_DEVICE.replace("\"f32\"", "\"float\"");
    one_error(
        &text,
        line_of(&text, "\"float\""),
        "unknown variant `float`",
    );
}

#[test]
fn missing_required_field() {
    let text = GOOD_DEVICE.replace("addressing = \"zero_based\"\n", "");
    // reported at the table that lacks it
    let e = one_error(
        &text,
        line_of(&text, "[[devices]]"),
        "missing field `addressing`",
    );
    assert_eq!(e.component, "device \"plc\"");
}

#[test]
fn bad_duration() {
    let text = GOOD_DEVICE.replace("addressing", "poll_interval = \"fast\"\naddressing");
    one_error(&text, line_of(&text, "\"fast\""), "invalid duration");
}

#[test]
fn address_out_of_range_for_addressing() {
    let text = GOOD_DEVICE.replace("\"zero_based\"", "\"one_based\"");
    one_error(
        &text,
        line_of(&text, "address = 0"),
        "address 0 does not exist with one_based",
    );
}

#[test]
fn modicon_table_mismatch() {
    let text = GOOD_DEVICE
        .replace("\"zero_based\"", "\"modicon\"")
        .replace("table = \"holding\"", "table = \"input\"")
        .replace("address = 0", "address = 40001");
    one_error(
        &text,
        line_of(&text, "40001"),
        "holding_register in Modicon notation but table = input_register",
    );
}

#[test]
fn value_past_end_of_address_space() {
    let text = GOOD_DEVICE.replace("address = 0", "address = 65535");
    one_error(&text, line_of(&text, "65535"), "runs past 65535");
}

#[test]
fn type_does_not_fit_table() {
    let text = GOOD_DEVICE.replace("\"holding\"", "\"coil\"");
    one_error(&text, line_of(&text, "\"f32\""), "coil holds single bits");
}

#[test]
fn bool_in_register_needs_bit() {
    let text = GOOD_DEVICE.replace("\"f32\"", "\"bool\"");
    one_error(&text, line_of(&text, "\"bool\""), "needs bit");
}

#[test]
fn string_needs_length_and_no_word_swap() {
    let text = GOOD_DEVICE.replace("\"f32\"", "\"string\"");
    one_error(&text, line_of(&text, "\"string\""), "needs length");
    let text = GOOD_DEVICE.replace(
        "type = \"f32\"",
        "type = \"string\"\nlength = 8\norder = \"CDAB\"",
    );
    one_error(
        &text,
        line_of(&text, "CDAB"),
        "strings take order ABCD or BADC",
    );
}

#[test]
fn scale_on_bool_and_zero_scale() {
    let text = GOOD_DEVICE.replace("type = \"f32\"", "type = \"f32\"\nscale = 0.0");
    one_error(&text, line_of(&text, "scale"), "non-zero");
    let text = GOOD_DEVICE
        .replace("\"holding\"", "\"coil\"")
        .replace("type = \"f32\"", "scale = 2.0");
    one_error(&text, line_of(&text, "scale"), "apply to numbers, not bool");
}

#[test]
fn duplicate_tag_names_across_devices() {
    let second = GOOD_DEVICE.replace("\"plc\"", "\"plc2\"");
    let text = format!("{GOOD_DEVICE}{second}");
    let last_flow = text
        .rmatch_indices("name = \"flow\"")
        .next()
        .expect("second")
        .0;
    let line = text[..last_flow].matches('\n').count() + 1;
    one_error(&text, line, "duplicate tag name (also on device \"plc\")");
}

#[test]
fn tag_inside_forbidden_range() {
    let text = GOOD_DEVICE.replace(
        "addressing = \"zero_based\"",
        "addressing = \"zero_based\"\nforbidden = [{ table = \"holding\", from = 1, to = 9 }]",
    );
    one_error(
        &text,
        line_of(&text, "address = 0"),
        "inside the forbidden range 1–9",
    );
}

#[test]
fn host_and_bus_conflict_and_unknown_bus() {
    let text = GOOD_DEVICE.replace(
        "host = \"127.0.0.1\"",
        "host = \"127.0.0.1\"\nbus = \"rs485\"",
    );
    one_error(&text, line_of(&text, "bus = "), "either host");
    let text = GOOD_DEVICE.replace("host = \"127.0.0.1\"", "bus = \"rs485\"");
    one_error(&text, line_of(&text, "bus = "), "unknown bus \"rs485\"");
}

#[test]
fn rtu_unit_id_range() {
    let text = format!(
        "[[buses]]\nname = \"rs485\"\npath = \"/dev/ttyUSB0\"\n{}",
        GOOD_DEVICE.replace("host = \"127.0.0.1\"", "bus = \"rs485\"\nunit_id = 0")
    );
    one_error(&text, line_of(&text, "unit_id = 0"), "1–247");
}

#[test]
fn request_limit_above_protocol_limit() {
    let text = GOOD_DEVICE.replace("addressing", "max_registers_per_request = 200\naddressing");
    one_error(&text, line_of(&text, "200"), "1–125");
}

#[test]
fn every_mistake_is_reported_at_once() {
    let second = GOOD_DEVICE
        .replace("\"plc\"", "\"plc2\"")
        .replace("\"flow\"", "\"level\"")
        .replace("\"f32\"", "\"f33\"");
    let third = GOOD_DEVICE
        .replace("\"plc\"", "\"plc3\"")
        .replace("\"flow\"", "\"speed\"")
        .replace("address = 0", "address = 70000");
    let text = format!("[agent]\nnmae = \"x\"\n{GOOD_DEVICE}{second}{third}");
    let errors = errors(&text);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].message.contains("unknown field `nmae`"));
    assert!(errors[1].message.contains("f33"));
    assert!(errors[2].message.contains("70000"));
    assert!(errors.windows(2).all(|w| w[0].position < w[1].position));
}

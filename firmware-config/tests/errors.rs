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

/// The line of the error whose message contains `needle`.
fn line_with(errors: &[ConfigError], needle: &str) -> Option<usize> {
    errors
        .iter()
        .find(|e| e.message.contains(needle))
        .unwrap_or_else(|| panic!("no error with {needle:?} in {errors:#?}"))
        .position
        .map(|p| p.0)
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
    let e = one_error(
        &text,
        line_of(&text, "scael"),
        "unknown key `scael`; did you mean `scale`?",
    );
    assert_eq!(e.component, "device \"plc\" tag \"flow\"");
    assert!(e
        .to_string()
        .starts_with(&format!("plant.toml:{}:", line_of(&text, "scael"))));
}

#[test]
fn wrong_value_type() {
    let text = GOOD_DEVICE.replace("address = 0", "address = \"zero\"");
    one_error(
        &text,
        line_of(&text, "address = \"zero\""),
        "expected a whole number from 0 to 4294967295, found the text \"zero\"",
    );
}

#[test]
fn unknown_enum_value() {
    let text = GOOD_DEVICE.replace("\"f32\"", "\"float\"");
    one_error(
        &text,
        line_of(&text, "\"float\""),
        "\"float\" is not one of \"u16\", \"i16\"",
    );
}

#[test]
fn missing_required_field() {
    let text = GOOD_DEVICE.replace("addressing = \"zero_based\"\n", "");
    // reported at the table that lacks it
    let e = one_error(
        &text,
        line_of(&text, "[[devices]]"),
        "missing key `addressing`",
    );
    assert_eq!(e.component, "device \"plc\"");
}

#[test]
fn bad_duration() {
    let text = GOOD_DEVICE.replace("addressing", "poll_interval = \"fast\"\naddressing");
    one_error(
        &text,
        line_of(&text, "\"fast\""),
        "expected a duration such as \"500ms\", \"5s\"",
    );
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
        "a string is one register each, whose two bytes follow byte_order",
    );
}

#[test]
fn word_order_is_for_multi_register_values_and_byte_order_for_one_register() {
    // A device whose floats are byte-swapped (BADC) and whose 16-bit values are as sent: the
    // device's word_order must not swap the u16, nor the bits of its register.
    let text = GOOD_DEVICE
        .replace("addressing = \"zero_based\"", "addressing = \"zero_based\"\nword_order = \"BADC\"")
        .replace(
            "type = \"f32\"",
            "type = \"f32\"\n\n[[devices.tags]]\nname = \"speed\"\ntable = \"holding\"\naddress = 2\n\n[[devices.tags]]\nname = \"running\"\ntable = \"holding\"\naddress = 3\ntype = \"bool\"\nbit = 0\n\n[[devices.tags]]\nname = \"status\"\ntable = \"holding\"\naddress = 4\nbyte_order = \"BA\"",
        );
    let plan = load_str(Path::new("plant.toml"), &text).expect("valid");
    let labels: Vec<_> = plan.devices[0]
        .tags
        .iter()
        .map(|t| (t.name.as_str(), t.order_label()))
        .collect();
    assert_eq!(
        labels,
        [
            ("flow", Some("BADC")),
            ("speed", Some("AB")),
            ("running", Some("AB")),
            ("status", Some("BA"))
        ]
    );
    // Each switch is refused where it has no meaning, with the one that does named.
    let text = GOOD_DEVICE.replace("type = \"f32\"", "type = \"u16\"\norder = \"BADC\"");
    one_error(
        &text,
        line_of(&text, "order"),
        "byte_order = \"AB\" (as sent) or \"BA\" (swapped)",
    );
    let text = GOOD_DEVICE.replace("type = \"f32\"", "type = \"f32\"\nbyte_order = \"BA\"");
    one_error(
        &text,
        line_of(&text, "byte_order"),
        "a f32 takes order = \"ABCD\"",
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
    assert!(errors[0]
        .message
        .contains("unknown key `nmae`; did you mean `name`?"));
    assert!(errors[1].message.contains("f33"));
    assert!(errors[2].message.contains("70000"));
    assert!(errors.windows(2).all(|w| w[0].position < w[1].position));
}

#[test]
fn every_mistake_in_one_table_is_reported() {
    // A typo in one key used to hide a wrong type two lines below it, and everything after.
    let text = GOOD_DEVICE
        .replace(
            "addressing = \"zero_based\"",
            "adressing = \"zero_based\"\nport = 70000\ntimeout = 5\nunit_id = \"one\"",
        )
        .replace(
            "type = \"f32\"",
            "type = \"f32\"\nscale = \"x\"\nunti = \"bar\"",
        );
    let errors = errors(&text);
    let at = |needle: &str| line_with(&errors, needle);
    assert_eq!(
        at("unknown key `adressing`; did you mean `addressing`?"),
        Some(line_of(&text, "adressing"))
    );
    assert_eq!(
        at("70000 is out of range: expected a whole number from 0 to 65535"),
        Some(line_of(&text, "70000"))
    );
    assert_eq!(
        at("found the bare number 5"),
        Some(line_of(&text, "timeout = 5"))
    );
    assert_eq!(
        at("expected a whole number from 0 to 255, found the text \"one\""),
        Some(line_of(&text, "\"one\""))
    );
    assert_eq!(
        at("expected a number, found the text \"x\""),
        Some(line_of(&text, "scale"))
    );
    assert_eq!(
        at("unknown key `unti`; did you mean `unit`?"),
        Some(line_of(&text, "unti"))
    );
    // The device lost its addressing to a typo: that is one mistake, and the missing key is
    // reported too because it really is missing.
    assert!(errors
        .iter()
        .any(|e| e.message.contains("missing key `addressing`")));
    assert_eq!(errors.len(), 7, "{errors:#?}");
}

#[test]
fn root_tables_report_every_mistake() {
    let text = format!(
        "[agent]\nsummary_interval = 30\nsample_bus_capacity = -4\n[outbox]\nmax_size = true\nflush_interval = \"1\"\n{GOOD_DEVICE}"
    );
    let errors = errors(&text);
    let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(errors.len(), 4, "{messages:#?}");
    assert!(
        messages[0].contains("found the bare number 30"),
        "{messages:#?}"
    );
    assert!(
        messages[1].contains("-4 is out of range: expected a whole number (0 or more)"),
        "{messages:#?}"
    );
    assert!(
        messages[2].contains("expected a size such as \"64 MiB\""),
        "{messages:#?}"
    );
    assert!(
        messages[3].contains("a number needs a unit"),
        "{messages:#?}"
    );
}

#[test]
fn durations_and_sizes_have_sane_bounds() {
    // About 9.2e18 s passed `check` once, and `run` aborted on "overflow when adding durations".
    let text = GOOD_DEVICE.replace(
        "addressing",
        "timeout = \"9223372036854775807s\"\naddressing",
    );
    one_error(
        &text,
        line_of(&text, "9223372036854775807s"),
        "durations are at most 366 days",
    );
    let text = format!("[outbox]\nmax_size = \"5000 GiB\"\n{GOOD_DEVICE}");
    one_error(
        &text,
        line_of(&text, "5000 GiB"),
        "sizes are from 0 to 1 TiB",
    );
    let text = format!("[outbox]\nmax_size = -1\n{GOOD_DEVICE}");
    one_error(
        &text,
        line_of(&text, "max_size"),
        "sizes are from 0 to 1 TiB",
    );
}

#[test]
fn a_huge_value_is_quoted_short() {
    let huge = "x".repeat(2 << 20);
    let text = GOOD_DEVICE.replace("\"zero_based\"", &format!("\"{huge}\""));
    let errors = errors(&text);
    let printed = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(printed.len() < 1_000, "{} bytes of errors", printed.len());
    assert!(printed.contains("characters)"), "{printed}");
    let text = GOOD_DEVICE.replace("\"plc\"", &format!("\"{huge}\""));
    let printed = errors_text(&text);
    assert!(printed.len() < 2_000, "{} bytes of errors", printed.len());
}

fn errors_text(text: &str) -> String {
    errors(text)
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn names_that_would_break_a_topic_are_refused_where_they_are_written() {
    // Each of these once passed `check` and then stalled or flapped the uplink at run time.
    let text = GOOD_DEVICE
        .replace("name = \"plc\"", "name = \"plc#1\"")
        .replace("name = \"flow\"", "name = \"line//flow\"");
    let text = format!(
        "[agent]\nname = \"gw/7\"\n{text}\n[[devices]]\nname = \"drive\\u0000\"\nhost = \"h\"\naddressing = \"zero_based\"\n[[devices.tags]]\nname = \"speed\"\ntable = \"holding\"\naddress = 1\n\n[[opcua]]\nname = \"press+\"\nurl = \"opc.tcp://h:4840\"\n[[opcua.tags]]\nname = \"t\"\nnode = \"ns=2;i=1\"\n"
    );
    let errors = errors(&text);
    let at = |needle: &str| line_with(&errors, needle);
    assert_eq!(
        at("agent name \"gw/7\" cannot be used in MQTT topics: it contains `/` (character 3)"),
        Some(line_of(&text, "gw/7"))
    );
    assert_eq!(
        at("device name \"plc#1\" cannot be used in MQTT topics: it contains `#` (character 4), an MQTT wildcard"),
        Some(line_of(&text, "plc#1"))
    );
    assert_eq!(
        at("contains the control character U+0000 (character 6)"),
        Some(line_of(&text, "drive\\u0000"))
    );
    assert_eq!(
        at("endpoint name \"press+\""),
        Some(line_of(&text, "press+"))
    );
    assert_eq!(
        at("has an empty topic level"),
        Some(line_of(&text, "line//flow"))
    );
    assert_eq!(errors.len(), 5, "{errors:#?}");
}

#[test]
fn an_asset_id_that_would_break_a_topic() {
    let text = format!(
        "{GOOD_DEVICE}\n[[assets]]\nid = \"P#101\"\ntype = \"pump\"\nsignals = {{ pressure = \"flow\" }}\n"
    );
    let found = errors(&text);
    assert!(
        found.iter().any(|e| e
            .message
            .contains("asset id \"P#101\" cannot be used in MQTT topics")
            && e.position.map(|p| p.0) == Some(line_of(&text, "P#101"))),
        "{found:#?}"
    );
}

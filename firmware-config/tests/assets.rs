//! `[[assets]]` and `[scoring]`: roles resolve to tags in plan order, and each kind of mistake is
//! reported once, at its line.

use std::path::Path;

use firmware_config::{load_str, ConfigError, Foundation, InsulationClass, IsoGroup};

const DEVICES: &str = r#"
[[devices]]
name = "plc"
host = "127.0.0.1"
addressing = "zero_based"

[[devices.tags]]
name = "pump.vibration"
table = "holding"
address = 0
type = "f32"
unit = "mm/s"

[[devices.tags]]
name = "pump.bearing_temp"
table = "holding"
address = 2
type = "i16"
scale = 0.1
unit = "°C"

[[devices.tags]]
name = "pump.current_l1"
table = "holding"
address = 3
unit = "A"

[[devices.tags]]
name = "pump.current_l2"
table = "holding"
address = 4
unit = "A"

[[devices.tags]]
name = "pump.current_l3"
table = "holding"
address = 5
unit = "A"

[[devices.tags]]
name = "pump.pressure"
table = "holding"
address = 6
type = "f32"
unit = "bar"

[[devices.tags]]
name = "pump.running"
table = "holding"
address = 8
type = "bool"
bit = 0

[[devices.tags]]
name = "pump.flow_raw"
table = "holding"
address = 9
"#;

const ASSET: &str = r#"
[[assets]]
id = "P-101"
type = "pump"
signals = { vibration = "pump.vibration", bearing_temperature = "pump.bearing_temp", currents = ["pump.current_l1", "pump.current_l2", "pump.current_l3"], pressure = "pump.pressure" }
nameplate = { iso_group = 2, foundation = "rigid", insulation_class = "F", rated_current = 42.0, pressure_range = [3.0, 6.0] }
"#;

fn errors(text: &str) -> Vec<ConfigError> {
    match load_str(Path::new("plant.toml"), text) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.0,
    }
}

fn one_error(text: &str, needle: &str) -> ConfigError {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let error = errors.into_iter().next().expect("one");
    assert!(error.message.contains(needle), "{error}");
    error
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle")
        + 1
}

#[test]
fn an_asset_resolves_roles_to_tags_in_plan_order() {
    let plan = load_str(Path::new("plant.toml"), &format!("{DEVICES}{ASSET}")).expect("valid");
    let asset = &plan.assets[0];
    assert_eq!(asset.id, "P-101");
    assert_eq!(asset.kind, "pump");
    assert_eq!(asset.signals.vibration, Some(0));
    assert_eq!(asset.signals.bearing_temperature, Some(1));
    assert_eq!(asset.signals.currents, vec![2, 3, 4]);
    assert_eq!(asset.signals.pressure, Some(5));
    assert_eq!(
        asset.nameplate.vibration_class,
        Some((IsoGroup::Group2, Foundation::Rigid))
    );
    assert_eq!(asset.nameplate.insulation_class, Some(InsulationClass::F));
    assert_eq!(asset.nameplate.pressure_range, Some((3.0, 6.0)));
    assert_eq!(asset.nameplate.bearing_temperature_limit, 95.0);
    assert_eq!(plan.scoring.window, 120);
    assert_eq!(plan.scoring.immediate_above, 0.7);
    assert_eq!(plan.scoring.scheduled_above, 0.5);
}

#[test]
fn a_role_mapped_to_a_missing_tag() {
    let text = format!(
        "{DEVICES}{}",
        ASSET.replace("\"pump.pressure\" }", "\"pump.presure\" }")
    );
    let error = one_error(&text, "pressure: no tag named \"pump.presure\"");
    assert_eq!(
        error.position.map(|p| p.0),
        Some(line_of(&text, "pump.presure"))
    );
    assert!(error.to_string().contains("asset \"P-101\""), "{error}");
}

#[test]
fn a_unit_that_does_not_fit_the_role() {
    let text = format!("{DEVICES}{ASSET}").replace("unit = \"mm/s\"", "unit = \"in/s\"");
    one_error(&text, "vibration: tag \"pump.vibration\" is in \"in/s\", which does not fit the role (accepted: mm/s)");
}

#[test]
fn a_role_tag_without_a_unit() {
    let text = format!(
        "{DEVICES}{}",
        ASSET.replace(
            "pressure = \"pump.pressure\"",
            "pressure = \"pump.flow_raw\""
        )
    );
    one_error(
        &text,
        "tag \"pump.flow_raw\" has no unit; set unit = \"bar\"",
    );
}

#[test]
fn a_role_mapped_to_a_bool() {
    let text = format!(
        "{DEVICES}{}",
        ASSET.replace(
            "vibration = \"pump.vibration\"",
            "vibration = \"pump.running\""
        )
    );
    one_error(
        &text,
        "vibration: tag \"pump.running\" is not numeric (bool)",
    );
}

#[test]
fn vibration_without_iso_class() {
    let text = format!(
        "{DEVICES}{}",
        ASSET.replace("iso_group = 2, foundation = \"rigid\", ", "")
    );
    one_error(&text, "vibration needs nameplate.iso_group");
}

#[test]
fn an_iso_group_that_does_not_exist() {
    let text = format!(
        "{DEVICES}{}",
        ASSET.replace("iso_group = 2", "iso_group = 3")
    );
    one_error(&text, "ISO 10816-3 has group 1 (>300 kW) and group 2");
}

#[test]
fn pressure_without_a_range_and_an_inverted_range() {
    let text = format!(
        "{DEVICES}{}",
        ASSET.replace(", pressure_range = [3.0, 6.0]", "")
    );
    one_error(&text, "pressure needs nameplate.pressure_range");
    let text = format!("{DEVICES}{}", ASSET.replace("[3.0, 6.0]", "[6.0, 3.0]"));
    one_error(&text, "pressure_range is [low, high] with low < high");
}

#[test]
fn two_currents_are_neither_one_nor_three_phases() {
    let text = format!("{DEVICES}{}", ASSET.replace(", \"pump.current_l3\"", ""));
    one_error(&text, "currents takes one tag, or three");
}

#[test]
fn duplicate_asset_ids_and_a_type_that_is_not_a_name() {
    let second = ASSET.replace("type = \"pump\"", "type = \"Big Pump\"");
    let text = format!("{DEVICES}{ASSET}{second}");
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors
        .iter()
        .any(|e| e.message.contains("another asset has this id")));
    assert!(errors
        .iter()
        .any(|e| e.message.contains("type must be a lowercase name")));
}

#[test]
fn an_asset_with_nothing_to_score() {
    let text = format!(
        "{DEVICES}\n[[assets]]\nid = \"M-1\"\ntype = \"motor\"\nsignals = {{ speed = \"pump.flow_raw\" }}\n"
    );
    let errors = errors(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("no signal to score")),
        "{errors:#?}"
    );
}

#[test]
fn scoring_thresholds_must_be_ordered_and_the_window_bounded() {
    let text = format!("{DEVICES}\n[scoring]\nscheduled_above = 0.8\nwindow = 1000\n");
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors
        .iter()
        .any(|e| e.message.contains("window must be between 2 and 256")));
    assert!(errors.iter().any(|e| e
        .message
        .contains("scheduled_above must be below immediate_above")));
}

#[test]
fn an_unknown_role_is_rejected_with_its_position() {
    let text = format!(
        "{DEVICES}{}",
        ASSET.replace(
            "pressure = \"pump.pressure\" }",
            "pressure = \"pump.pressure\", torque = \"x\" }"
        )
    );
    let error = one_error(&text, "torque");
    assert_eq!(error.position.map(|p| p.0), Some(line_of(&text, "torque")));
}

//! Every shipped example configuration passes `check`.

use std::path::Path;

#[test]
fn every_example_passes_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("examples dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let plan = firmware_config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                plan.tag_count() > 0,
                "{} has devices or OPC UA endpoints",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "found {checked} examples");
}

/// Every key of the configuration (as `millwright schema` lists them) in the objects of `value`.
fn schema_keys(value: &serde_json::Value, keys: &mut std::collections::BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                if key == "properties" {
                    if let Some(properties) = inner.as_object() {
                        keys.extend(properties.keys().cloned());
                    }
                }
                schema_keys(inner, keys);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| schema_keys(i, keys)),
        _ => {}
    }
}

fn toml_keys(value: &toml::Value, keys: &mut std::collections::BTreeSet<String>) {
    match value {
        toml::Value::Table(table) => {
            for (key, inner) in table {
                keys.insert(key.clone());
                toml_keys(inner, keys);
            }
        }
        toml::Value::Array(items) => items.iter().for_each(|i| toml_keys(i, keys)),
        _ => {}
    }
}

#[test]
fn plant_toml_shows_every_option() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plant.toml");
    let text = std::fs::read_to_string(&path).expect("plant.toml");
    let mut used = std::collections::BTreeSet::new();
    let table: toml::Table = toml::from_str(&text).expect("toml");
    toml_keys(&toml::Value::Table(table), &mut used);
    let mut every = std::collections::BTreeSet::new();
    schema_keys(&firmware_config::json_schema(), &mut every);
    let missing: Vec<&String> = every.difference(&used).collect();
    assert!(
        missing.is_empty(),
        "plant.toml is described as showing every option, but lacks {missing:?}"
    );
}

#[test]
fn json_schema_describes_devices_and_tags() {
    let schema = firmware_config::json_schema();
    let text = schema.to_string();
    for needle in [
        "\"devices\"",
        "\"addressing\"",
        "\"max_gap\"",
        "\"CDAB\"",
        "\"holding_register\"",
    ] {
        assert!(text.contains(needle), "schema lacks {needle}");
    }
}

/// The packaged `/etc/millwright/millwright.toml` polls nothing as shipped, and its commented
/// examples are valid once uncommented (users start from them).
#[test]
fn packaged_default_config_is_valid_as_shipped_and_uncommented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cross/debian/millwright.toml");
    let shipped = firmware_config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(shipped.devices.is_empty());

    let text = std::fs::read_to_string(&path).expect("read");
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if rest.starts_with('[') || rest.split_once(" = ").is_some() => rest,
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let plan = firmware_config::load_str(&path, &uncommented).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.devices.len(), 1);
    assert_eq!(plan.buses.len(), 1);
    assert_eq!(plan.devices[0].tags.len(), 2);
    assert_eq!(plan.opcua.len(), 1);
    assert_eq!(plan.opcua[0].tags.len(), 1);
    assert_eq!(
        plan.alerting.limits.len(),
        2,
        "a limit and a discrete alarm"
    );
    assert_eq!(plan.alerting.indications.len(), 2);
    assert!(plan.alerting.outputs.iter().any(|o| o.name == "user1_red"));
    assert!(plan
        .alerting
        .outputs
        .iter()
        .any(|o| o.name == "stack_light"));
}

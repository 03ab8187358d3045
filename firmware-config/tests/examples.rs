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
            assert!(!plan.devices.is_empty(), "{} has devices", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 2, "found {checked} examples");
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

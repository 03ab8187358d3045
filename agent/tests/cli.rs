//! The `millwright` binary on its own: exit codes and what `check` and `schema` print. (Tests that
//! need a simulated plant live in the workspace's `tests/` crate; cargo builds this binary for
//! them because of this file.)

use std::process::{Command, Output, Stdio};

const CONFIG: &str = r#"
[agent]
summary_interval = "500ms"

[[devices]]
name = "pump"
host = "127.0.0.1"
port = 502
addressing = "modicon"
poll_interval = "100ms"
timeout = "300ms"

[[devices.tags]]
name = "pump.pressure"
address = 40001
type = "f32"
order = "CDAB"
unit = "bar"
"#;

fn millwright(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_millwright"))
        .args(args)
        .args(["--log-format", "compact"])
        .stdin(Stdio::null())
        .output()
        .expect("runs")
}

fn write_config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plant.toml");
    std::fs::write(&path, text).expect("write");
    let path = path.to_str().expect("utf8").to_string();
    (dir, path)
}

#[test]
fn check_prints_every_mistake_with_position_and_exits_3() {
    let broken = CONFIG.replace("type = \"f32\"", "type = \"f33\"").replace(
        "addressing = \"modicon\"",
        "addressing = \"modicon\"\ntimeuot = \"1s\"",
    );
    let (_dir, path) = write_config(&broken);
    let out = millwright(&["check", "-c", &path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(
            "plant.toml:10:1: device \"pump\": unknown key `timeuot`; did you mean `timeout`?"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "plant.toml:17:8: device \"pump\" tag \"pump.pressure\": \"f33\" is not one of \"u16\""
        ),
        "{stderr}"
    );
    assert!(stderr.contains("2 mistake(s)"), "{stderr}");
}

#[test]
fn check_refuses_names_that_would_break_a_topic_and_names_the_character() {
    // `pump#1` once passed `check` and stopped the summary stream at run time; a NUL made the
    // broker drop the connection on every attempt.
    for (name, said) in [
        ("pump#1", "contains `#` (character 5), an MQTT wildcard"),
        (
            "pump\\u0000",
            "contains the control character U+0000 (character 5)",
        ),
        (
            "line/pump",
            "contains `/` (character 5), which would split it into two topic levels",
        ),
    ] {
        let (_dir, path) =
            write_config(&CONFIG.replace("name = \"pump\"", &format!("name = \"{name}\"")));
        let out = millwright(&["check", "-c", &path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(
            stderr.contains("plant.toml:6:8: device ")
                && stderr.contains("cannot be used in MQTT topics")
                && stderr.contains(said),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn check_reports_a_huge_value_in_a_few_lines() {
    // A 2 MB string once produced 4 MB of stderr.
    let huge = "x".repeat(2 << 20);
    let (_dir, path) = write_config(&CONFIG.replace("\"modicon\"", &format!("\"{huge}\"")));
    let out = millwright(&["check", "-c", &path]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        out.stderr.len() < 2_000,
        "{} bytes of stderr",
        out.stderr.len()
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("(2097152 characters)"));
}

#[test]
fn check_warns_about_credentials_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("mqtt.password");
    std::fs::write(&secret, "s3cret").expect("write");
    let path = dir.path().join("plant.toml");
    std::fs::write(
        &path,
        format!(
            "{CONFIG}\n[mqtt]\nurl = \"mqtt://b\"\nusername = \"gw\"\npassword_file = {secret:?}\n"
        ),
    )
    .expect("write");
    let set = |p: &std::path::Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    set(&path, 0o640);
    set(&secret, 0o640);
    let path_text = path.to_str().expect("utf8");
    let quiet = millwright(&["check", "-c", path_text]);
    assert_eq!(quiet.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&quiet.stdout).contains("warning"));
    set(&path, 0o644);
    set(&secret, 0o666);
    let out = millwright(&["check", "-c", path_text]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "a warning, not a mistake");
    assert!(
        stdout.contains("plant.toml is readable by every user (mode 0644)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("mqtt.password is readable and writable by every user (mode 0666)"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret"));
}

#[test]
fn check_prints_the_request_plan_for_a_valid_config() {
    let (_dir, path) = write_config(CONFIG);
    let out = millwright(&["check", "-c", &path]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout.contains("1 Modbus read request(s) per full cycle"),
        "{stdout}"
    );
    assert!(
        stdout.contains("every 100ms: 1 request(s): holding 0..1"),
        "{stdout}"
    );
}

#[test]
fn a_missing_config_file_is_a_config_error() {
    let out = millwright(&["check", "-c", "/nonexistent/plant.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr.contains("/nonexistent/plant.toml: cannot read"),
        "{stderr}"
    );
}

#[test]
fn schema_is_json_and_usage_errors_exit_2() {
    let out = millwright(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.trim_start().starts_with('{') && text.contains("\"max_registers_per_request\""));
    assert_eq!(millwright(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(millwright(&["--version"]).status.code(), Some(0));
}

#[test]
fn check_loads_the_models_and_reports_a_missing_one_and_exits_3() {
    let with_asset = format!(
        "{CONFIG}\n[scoring]\nmodels = {{ default = \"models/none.onnx\" }}\n\n[[assets]]\nid = \"P-1\"\ntype = \"pump\"\nsignals = {{ pressure = \"pump.pressure\" }}\nnameplate = {{ pressure_range = [3.0, 6.0] }}\n"
    );
    let (_dir, path) = write_config(&with_asset);
    let out = millwright(&["check", "-c", &path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("scoring.models.default:")
            && stderr.contains("none.toml: cannot read the model's manifest"),
        "{stderr}"
    );

    // The shipped model loads and is named in the report.
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default.onnx");
    let (_dir, path) = write_config(&with_asset.replace(
        "\"models/none.onnx\"",
        &format!("{:?}", shipped.to_str().expect("utf8")),
    ));
    let out = millwright(&["check", "-c", &path]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("asset \"P-1\" (pump): pressure; rules + model \"default\" (9 inputs)"),
        "{stdout}"
    );
}

#[test]
fn help_and_readme_agree() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README");
    let help = String::from_utf8(millwright(&["--help"]).stdout).expect("utf8");
    // Every command is in the README's command table.
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 15, "{help}");
    let table: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("| `millwright "))
        .collect();
    for command in commands {
        assert!(
            table.iter().any(|row| {
                row.contains(&format!("`millwright {command} "))
                    || row.contains(&format!("`millwright {command}`"))
            }),
            "`millwright {command}` is missing from the README's command table"
        );
    }
    // The verbosity switches say the same in both.
    let verbose = "-vv also the OPC UA library's own log (trace level in debug builds)";
    assert!(help.contains(verbose), "{help}");
    assert!(
        readme.replace('`', "").contains(verbose),
        "the README's global options differ from --help"
    );
    let simulate = String::from_utf8(millwright(&["simulate", "--help"]).stdout).expect("utf8");
    assert!(
        simulate.contains("--opcua") && simulate.contains("OPC UA with --opcua"),
        "{simulate}"
    );
}

//! `millwright replay` as users run it: a history file, a failures file, JSON lines out.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const PUMP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/replay-pump.toml"
);

fn replay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_millwright"))
        .args(["replay", "-c", PUMP])
        .args(args)
        .args(["--log-format", "compact"])
        .stdin(Stdio::null())
        .output()
        .expect("runs")
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().expect("utf8").to_string()
}

/// Two days of a pump whose vibration climbs into zone D from noon of day 2, at one row per
/// 10 s and tag, with two bad rows and one row a little late.
fn history() -> String {
    let start = 1_709_251_200u64; // 2024-03-01T00:00:00Z
    let mut csv = String::from("timestamp,tag,value,quality\n");
    for i in 0..(2 * 8640u64) {
        let t = start + i * 10;
        let hours = (i * 10) as f64 / 3600.0;
        let vibration = if hours < 36.0 {
            2.0
        } else {
            2.0 + (hours - 36.0) * 0.8
        };
        let _ = writeln!(csv, "{},pump.vibration,{vibration:.3},good", t);
        let _ = writeln!(csv, "{},pump.pressure,4.5,", t);
        if i == 100 {
            csv.push_str("2024-03-01T00:16:40Z,pump.speed,1,good\n");
            csv.push_str("2024-03-01T00:16:40Z,pump.pressure,high,good\n");
            let _ = writeln!(csv, "{},pump.pressure,4.4,good", t - 5);
        }
    }
    csv
}

#[test]
fn replay_reports_what_the_agent_would_have_said_and_how_early() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, failures, out) = (
        path(dir.path(), "history.csv"),
        path(dir.path(), "failures.csv"),
        path(dir.path(), "report.jsonl"),
    );
    std::fs::write(&input, history()).expect("write");
    std::fs::write(&failures, "asset,time\nP-1,2024-03-02T20:00:00Z\n").expect("write");
    let run = replay(&[
        "--input",
        &input,
        "--failures",
        &failures,
        "--out",
        &out,
        "--horizon",
        "7d",
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("replayed 34563 rows (34561 samples)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 rows skipped, 1 samples out of order"),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 204: unknown tag \"pump.speed\"")
            && stdout.contains("line 205: value \"high\" is not a number"),
        "{stdout}"
    );
    assert!(
        stdout.contains("failure of P-1 at 2024-03-02T20:00:00.000Z: warned"),
        "{stdout}"
    );

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .expect("report")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let kinds = |kind: &str| lines.iter().filter(|l| l["kind"] == kind).count();
    assert!(kinds("health") > 17_000, "an assessment every 10 s");
    assert!(kinds("action_change") >= 1 && kinds("alert") >= 1);
    let change = lines
        .iter()
        .find(|l| l["kind"] == "action_change")
        .expect("change");
    assert_eq!(change["asset"], "P-1");
    assert_eq!(change["from"], "routine_monitoring");
    let alert = lines.iter().find(|l| l["kind"] == "alert").expect("alert");
    assert_eq!(alert["data"]["alert_id"], "P-1/maintenance");
    assert_eq!(alert["data"]["transition"], "raised");
    let summary = lines.last().expect("summary");
    assert_eq!(summary["kind"], "summary");
    assert_eq!(summary["skipped"], 2);
    let failure = &summary["failures"][0];
    let lead = failure["lead_time_hours"].as_f64().expect("warned");
    assert!(
        (1.0..=8.0).contains(&lead),
        "warned hours before, not days: {failure}"
    );
    assert_eq!(summary["assets"][0]["false_alarms"], 0, "{summary}");
}

#[test]
fn replay_refuses_a_file_it_cannot_read_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = path(dir.path(), "wide.csv");
    std::fs::write(
        &input,
        "timestamp,pump.vibration,pump.vibraton\n1709251200,2,2\n",
    )
    .expect("write");
    let run = replay(&["--input", &input]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "wide.csv: line 1: column(s) \"pump.vibraton\" name no tag of the configuration"
        ),
        "{stderr}"
    );
    let missing = replay(&["--input", &path(dir.path(), "nope.csv")]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
    let failures = path(dir.path(), "failures.csv");
    std::fs::write(&failures, "asset,time\nP-2,2024-03-02T20:00:00Z\n").expect("write");
    let unknown = replay(&["--input", &input, "--failures", &failures]);
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("failures.csv: line 2: no asset \"P-2\""),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let speed = replay(&["--input", &input, "--speed", "fast"]);
    assert_eq!(speed.status.code(), Some(2));
}

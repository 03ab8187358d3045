//! `[[quality]]`: a station resolves its tags, charts and divert output, and each mistake a user
//! makes with one is reported once, at its line in the file.

mod common;

use std::time::Duration;

use common::one_error;
use firmware_config::load_str;
use firmware_config::quality::{Chart, ControlLimits, Rule, Trigger};

const GAUGE: &str = include_str!("../../agent/tests/fixtures/quality-gauge.toml");

#[test]
fn the_gauge_station_resolves_its_tags_charts_and_output() {
    let plan = load_str(std::path::Path::new("gauge.toml"), GAUGE).expect("valid");
    let station = &plan.quality[0];
    assert_eq!(station.trigger, Trigger::Counter(0));
    assert_eq!(station.part_id, Some(1));
    assert_eq!((station.review_above, station.reject_above), (0.5, 0.8));
    let divert = station.divert.expect("divert");
    assert_eq!(plan.alerting.outputs[divert.output].name, "reject-gate");
    assert_eq!(divert.pulse, Duration::from_millis(300));
    let [bore, weight] = &station.characteristics[..] else {
        panic!("two characteristics")
    };
    assert_eq!(bore.target, Some(25.0), "the middle of the spec");
    assert_eq!(
        (bore.chart, bore.limits, bore.baseline),
        (Chart::Imr, None, 25)
    );
    assert_eq!(bore.rules.len(), 8);
    assert_eq!(weight.chart, Chart::XbarR { n: 5 });
    assert_eq!(
        weight.limits,
        Some(ControlLimits {
            center: 120.0,
            sigma: 0.4
        })
    );
    assert_eq!(weight.rules, Rule::WESTERN_ELECTRIC.to_vec(), "the default");
    assert_eq!(
        station.alert_ids(),
        [
            "gauge-1/bore/spc",
            "gauge-1/weight/spc",
            "gauge-1/bore/cpk",
            "gauge-1/weight/cpk",
            "gauge-1/reject_rate"
        ]
    );
}

#[test]
fn lsl_at_or_above_usl() {
    let text = GAUGE.replace("usl = 25.05", "usl = 24.95");
    one_error(
        &text,
        "lsl (24.95) must be below usl (24.95)",
        "lsl = 24.95",
    );
}

#[test]
fn a_subgroup_too_small_for_an_xbar_r_chart() {
    let text = GAUGE.replace("subgroup = 5", "subgroup = 1");
    one_error(&text, "needs `subgroup` between 2 and 25", "subgroup = 1");
}

#[test]
fn a_subgroup_on_an_individuals_chart() {
    let text = GAUGE.replace("chart = \"imr\"", "chart = \"imr\"\nsubgroup = 4");
    one_error(&text, "`subgroup` does not apply", "subgroup = 4");
}

#[test]
fn a_trigger_tag_that_is_not_an_integer() {
    let text = GAUGE.replace(
        "trigger = { counter = \"gauge.parts\" }",
        "trigger = { counter = \"gauge.weight\" }",
    );
    one_error(&text, "must be an integer", "trigger = ");
}

#[test]
fn a_rule_number_that_does_not_exist() {
    let text = GAUGE.replace("nelson = [1, 2, 3, 4, 5, 6, 7, 8]", "nelson = [1, 9]");
    one_error(&text, "there is no Nelson rule 9 (1 to 8)", "rules = ");
    let text = GAUGE.replace(
        "nelson = [1, 2, 3, 4, 5, 6, 7, 8]",
        "western_electric = [5]",
    );
    one_error(
        &text,
        "there is no Western Electric rule 5 (1 to 4)",
        "rules = ",
    );
}

#[test]
fn run_rules_on_an_ewma_chart() {
    let text = GAUGE.replace("chart = \"imr\"", "chart = \"ewma\"\nlambda = 0.2");
    one_error(&text, "run rules apply to I-MR", "rules = ");
}

#[test]
fn a_one_sided_spec_needs_a_target() {
    let text = GAUGE.replace("target = 120.0\n", "");
    one_error(
        &text,
        "a one-sided spec needs a `target`",
        "name = \"weight\"",
    );
}

#[test]
fn a_divert_output_that_also_shows_alerts() {
    let text =
        format!("{GAUGE}\n[[indications]]\noutput = \"reject-gate\"\npattern = \"steady\"\n");
    one_error(&text, "also shows alerts", "divert = ");
}

#[test]
fn a_divert_output_that_does_not_exist() {
    let text = GAUGE.replace(
        "output = \"reject-gate\", pulse",
        "output = \"gate\", pulse",
    );
    one_error(&text, "no [[outputs]] entry named \"gate\"", "divert = ");
}

#[test]
fn review_above_reject() {
    let text = GAUGE.replace("settle = \"0s\"", "settle = \"0s\"\nreview_above = 0.9");
    one_error(
        &text,
        "review_above (0.9) must not be above reject_above (0.8)",
        "review_above",
    );
}

/// The gauge station on a line that counts only its total: the station's rejects count.
const LINE: &str = r#"
[[lines]]
name = "turning-1"
running = "gauge.parts"
total = { tag = "gauge.parts", width = 16 }
ideal_cycle = "1s"
time_zone = "UTC"

[[lines.shifts]]
name = "day"
start = "06:00"
end = "14:00"
"#;

#[test]
fn a_line_with_a_total_only_takes_its_rejects_from_the_station_that_names_it() {
    let text = format!(
        "{}{LINE}",
        GAUGE.replace(
            "name = \"gauge-1\"\n",
            "name = \"gauge-1\"\nline = \"turning-1\"\n"
        )
    );
    let plan = load_str(std::path::Path::new("gauge.toml"), &text).expect("valid");
    assert!(plan.lines[0].rejects_from_quality);
    assert_eq!(
        plan.quality[0].line.as_ref().map(|(name, _)| name.as_str()),
        Some("turning-1")
    );
    let alone = format!("{GAUGE}{LINE}");
    one_error(
        &alone,
        "a [[quality]] station that names the line",
        "name = \"turning-1\"",
    );
}

#[test]
fn a_station_on_a_line_that_does_not_exist() {
    let text = GAUGE.replace(
        "name = \"gauge-1\"\n",
        "name = \"gauge-1\"\nline = \"turning-9\"\n",
    );
    one_error(&text, "no [[lines]] entry named \"turning-9\"", "line = ");
}

//! `[[lines]]`: tags resolve in plan order, and each mistake a user makes with a line is reported
//! once, at its line in the file.

mod common;

use std::time::Duration;

use common::one_error;
use firmware_config::{load_str, Energy, MachineState, StateSource};

const PRESS: &str = include_str!("../../agent/tests/fixtures/line-press.toml");

#[test]
fn the_press_line_resolves_its_tags_and_calendar() {
    let plan = load_str(std::path::Path::new("press.toml"), PRESS).expect("valid");
    let line = &plan.lines[0];
    let StateSource::Tag { tag, map, other } = &line.state else {
        panic!("a state tag")
    };
    assert_eq!(
        (*tag, map.get(&3), *other),
        (0, Some(&MachineState::Fault), None)
    );
    assert_eq!(
        line.reason.as_ref().map(|(t, c)| (*t, c[&12].as_str())),
        Some((1, "jam at infeed"))
    );
    assert_eq!(line.total.map(|c| (c.tag, c.max)), Some((2, Some(65_535))));
    assert_eq!(line.ideal_cycle, Duration::from_secs(2));
    assert_eq!(line.fastest_cycle(), Duration::from_secs(1), "product 7");
    assert_eq!(line.energy, Some(Energy::Power(5)));
    assert_eq!(line.calendar.shifts[0].breaks.len(), 1);
    assert_eq!(line.micro_stop, Duration::from_secs(300));
}

#[test]
fn a_time_zone_that_does_not_exist() {
    let text = PRESS.replace("time_zone = \"UTC\"", "time_zone = \"Europe/Berln\"");
    one_error(
        &text,
        "time zone \"Europe/Berln\" is not in the gateway's tzdata",
        "time_zone",
    );
}

#[test]
fn overlapping_shifts() {
    let text =
        format!("{PRESS}\n[[lines.shifts]]\nname = \"late\"\nstart = \"13:30\"\nend = \"22:00\"\n");
    one_error(
        &text,
        "shift \"late\" overlaps shift \"day\" on mon",
        "start = \"13:30\"",
    );
}

#[test]
fn a_shift_cannot_take_the_name_of_the_time_between_shifts() {
    let text = PRESS.replace("name = \"day\"", "name = \"unscheduled\"");
    one_error(
        &text,
        "\"unscheduled\" names the time between shifts",
        "name = \"unscheduled\"",
    );
}

#[test]
fn a_counter_tag_that_is_not_an_integer() {
    let text = PRESS.replace(
        "total = { tag = \"press.total\"",
        "total = { tag = \"press.power\"",
    );
    one_error(&text, "tag \"press.power\" is a real number", "total = ");
}

#[test]
fn a_state_map_that_leaves_a_value_unmapped() {
    let text = PRESS.replace("\"2\" = \"idle\", ", "");
    one_error(&text, "leaves 2 unmapped between 0 and 4", "state = ");
    let with_other = text.replace("} }\nreason", "}, other = \"fault\" }\nreason");
    assert!(
        load_str(std::path::Path::new("p.toml"), &with_other).is_ok(),
        "`other` covers the gap"
    );
}

#[test]
fn a_break_outside_its_shift_and_a_bad_weekday() {
    let text = PRESS.replace(
        "start = \"10:00\", end = \"10:15\"",
        "start = \"15:00\", end = \"15:15\"",
    );
    one_error(
        &text,
        "break 15:00–15:15 does not lie inside shift \"day\"",
        "breaks = ",
    );
    let text = PRESS.replace("\"fri\"]", "\"fry\"]");
    one_error(&text, "\"fry\" is not a weekday", "days = ");
}

#[test]
fn one_counter_is_not_enough_and_the_ideal_cycle_is_needed() {
    let text = PRESS.replace("good = { tag = \"press.good\", width = 16 }\n", "");
    one_error(
        &text,
        "at least two of the part counters",
        "name = \"press-1\"",
    );
    let text = PRESS.replace("ideal_cycle = \"2s\"\n", "");
    one_error(&text, "needs its ideal cycle time", "name = \"press-1\"");
    let text = PRESS.replace("width = 16 }\ngood", "width = 12 }\ngood");
    one_error(&text, "width 12 is not a counter width", "total = ");
}

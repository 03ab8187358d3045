//! `[alerts]`, `[[limits]]`, `[[outputs]]`, `[[indications]]`: a valid setup becomes a plan with
//! the gateway profile merged in; each kind of mistake is reported at its line.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;
use common::{errors_at, one_error};
use firmware_config::{
    load_str, GpioLine, LimitKind, OutputTarget, Pattern, PatternValues, Severity, StateFilter,
};

const BASE: &str = r#"
[[devices]]
name = "plc"
host = "10.0.0.5"
addressing = "modicon"
[[devices.tags]]
name = "temperature"
address = 40001
type = "f32"
unit = "°C"
[[devices.tags]]
name = "running"
address = 1
type = "bool"

[[buses]]
name = "rs485"
path = "/dev/ttyUSB0"
baud = 19200

[[devices]]
name = "meter"
bus = "rs485"
addressing = "zero_based"
[[devices.tags]]
name = "kwh"
address = 0
table = "holding_register"
type = "u32"
"#;

fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

#[test]
fn a_complete_setup_becomes_a_plan_with_the_gateway_profile() {
    let text = with(
        r#"
[alerts]
gateway = "siemens-iot2050"
acknowledge_tag = "running"
max_shelve = "2h"

[[limits]]
tag = "temperature"
hi_hi = 95.0
hi = 85.0
lo = 5.0
deadband = 1.5
on_delay = "10s"
off_delay = "1m"
latching = true
severity_hi_hi = "critical"

[[outputs]]
name = "horn"
modbus = { device = "plc", address = 17 }
on_shutdown = "off"

[[outputs]]
name = "tower"
modbus = { device = "plc", address = 40101, values = { off = 0, steady = 10, slow_blink = 20, fast_blink = 30 } }
idle = "steady"

[[outputs]]
name = "relay"
gpio = { chip = "gpiochip1", line = 4, active_low = true }

[[outputs]]
name = "user1_red"
led = "custom-red"

[[indications]]
output = "user1_red"
severity = ["critical", "high"]
state = "unacknowledged"
pattern = "fast_blink"

[[indications]]
output = "horn"
pattern = "steady"
"#,
    );
    let plan =
        load_str(Path::new("/etc/millwright/plant.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let alerting = &plan.alerting;
    assert_eq!(alerting.acknowledge_tag, Some(("running".into(), 1)));
    assert_eq!(alerting.max_shelve, Duration::from_secs(7200));
    let limits = &alerting.limits[0];
    assert_eq!(limits.tag_index, 0);
    assert_eq!(limits.limits.len(), 3);
    assert_eq!(limits.limits[0].kind, LimitKind::HiHi);
    assert_eq!(limits.limits[0].severity, Severity::Critical);
    assert_eq!(limits.limits[2].severity, Severity::Medium);
    assert_eq!(limits.on_delay, Duration::from_secs(10));
    assert_eq!(limits.off_delay, Duration::from_secs(60));
    // Profile outputs the file does not replace come first; the file's own follow.
    let names: Vec<&str> = alerting.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "user1_green",
            "user2_red",
            "user2_green",
            "horn",
            "tower",
            "relay",
            "user1_red"
        ]
    );
    assert_eq!(
        alerting.outputs[0].target,
        OutputTarget::Led(PathBuf::from("/sys/class/leds/user-led1-green"))
    );
    assert_eq!(
        alerting.outputs[6].target,
        OutputTarget::Led(PathBuf::from("/sys/class/leds/custom-red"))
    );
    assert_eq!(
        alerting.outputs[3].target,
        OutputTarget::ModbusCoil {
            device: 0,
            address: 16
        }
    );
    assert_eq!(
        alerting.outputs[4].target,
        OutputTarget::ModbusRegister {
            device: 0,
            address: 100,
            values: PatternValues {
                off: 0,
                steady: 10,
                slow_blink: 20,
                fast_blink: 30
            }
        }
    );
    assert_eq!(alerting.outputs[4].idle, Pattern::Steady);
    assert_eq!(
        alerting.outputs[5].target,
        OutputTarget::Gpio {
            line: GpioLine::Offset {
                chip: "/dev/gpiochip1".into(),
                offset: 4
            },
            active_low: true
        }
    );
    assert_eq!(alerting.indications[0].output, 6);
    assert_eq!(alerting.indications[0].state, StateFilter::Unacknowledged);
    assert_eq!(alerting.indications[1].output, 3);
    assert!(alerting.indications[1].severities.is_empty());
}

#[test]
fn limit_mistakes_are_reported_at_their_line() {
    one_error(
        &with("\n[[limits]]\ntag = \"pressure\"\nhi = 3.0\n"),
        "no tag named \"pressure\"",
        "tag = \"pressure\"",
    );
    one_error(
        &with("\n[[limits]]\ntag = \"running\"\nhi = 3.0\n"),
        "not numeric (bool); for a discrete alarm give alarm_when = true",
        "tag = \"running\"",
    );
    one_error(
        &with("\n[[limits]]\ntag = \"running\"\nalarm_when = true\nhi = 3.0\n"),
        "a discrete alarm (alarm_when) takes no hi_hi, hi, lo or lo_lo",
        "hi = 3.0",
    );
    one_error(
        &with("\n[[limits]]\ntag = \"running\"\nalarm_when = false\ndeadband = 1.0\n"),
        "a discrete alarm (alarm_when) has no deadband",
        "deadband",
    );
    one_error(
        &with("\n[[limits]]\ntag = \"temperature\"\nhi = 80.0\nseverity = \"low\"\n"),
        "severity applies to a discrete alarm",
        "severity",
    );
    one_error(
        &with("\n[[limits]]\ntag = \"temperature\"\nhi_hi = 80.0\nhi = 90.0\n"),
        "hi_hi (80) must be above hi (90)",
        "hi_hi",
    );
    one_error(
        &with("\n[[limits]]\ntag = \"temperature\"\ndeadband = -1.0\nhi = 1.0\n"),
        "deadband must be zero or positive",
        "deadband",
    );
    let text = with(
        "\n[[limits]]\ntag = \"temperature\"\nhi = 80.0\n\n[[limits]]\ntag = \"temperature\"\nlo = 5.0\n",
    );
    let second = text
        .lines()
        .collect::<Vec<_>>()
        .iter()
        .rposition(|l| *l == "tag = \"temperature\"")
        .expect("line")
        + 1;
    let errors = errors_at(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, second);
    assert!(
        errors[0]
            .1
            .contains("another [[limits]] entry has this tag"),
        "{errors:?}"
    );
    let errors = errors_at(&with("\n[[limits]]\ntag = \"temperature\"\n"));
    assert!(
        errors[0].1.contains("at least one of hi_hi, hi, lo, lo_lo"),
        "{errors:?}"
    );
}

#[test]
fn output_mistakes_are_reported_at_their_line() {
    one_error(
        &with("\n[[outputs]]\nname = \"x\"\nled = \"../../etc/passwd\"\n"),
        "is not an LED name",
        "led",
    );
    one_error(
        &with("\n[[outputs]]\nname = \"x\"\ngpio = { chip = \"/dev/ttyS0\", line = 3 }\n"),
        "not a GPIO character device",
        "gpio",
    );
    one_error(
        &with("\n[[outputs]]\nname = \"x\"\ngpio = { line = 3 }\n"),
        "give chip and line (offset), or the line's name",
        "gpio",
    );
    one_error(
        &with("\n[[outputs]]\nname = \"x\"\nled = \"a\"\ngpio = { name = \"GPIO17\" }\n"),
        "exactly one of led, gpio, modbus",
        "name = \"x\"",
    );
    one_error(
        &with("\n[[outputs]]\nname = \"x\"\nmodbus = { device = \"nope\", address = 1 }\n"),
        "no Modbus device named \"nope\"",
        "modbus",
    );
    one_error(
        &with("\n[[outputs]]\nname = \"x\"\nmodbus = { device = \"plc\", address = 30001 }\n"),
        "input_register tables are read-only",
        "modbus",
    );
    one_error(
        &with("\n[[outputs]]\nname = \"x\"\nmodbus = { device = \"plc\", address = 1, values = { off = 0, steady = 1, slow_blink = 2, fast_blink = 3 } }\n"),
        "values applies to a holding register",
        "modbus",
    );
    let text = with(
        "\n[[outputs]]\nname = \"x\"\nled = \"a\"\n\n[[outputs]]\nname = \"x\"\nled = \"b\"\n",
    );
    let second = text
        .lines()
        .collect::<Vec<_>>()
        .iter()
        .rposition(|l| *l == "name = \"x\"")
        .expect("line")
        + 1;
    assert_eq!(
        errors_at(&text),
        [(second, "another output has this name".to_string())]
    );
}

#[test]
fn mapping_and_alerts_mistakes_are_reported_at_their_line() {
    one_error(
        &with("\n[[outputs]]\nname = \"red\"\nled = \"red\"\n\n[[indications]]\noutput = \"blue\"\npattern = \"steady\"\n"),
        "no output named \"blue\" (outputs: red)",
        "output = \"blue\"",
    );
    one_error(
        &with("\n[[outputs]]\nname = \"red\"\nled = \"red\"\n\n[[indications]]\noutput = \"red\"\npattern = \"off\"\n"),
        "pattern off lights nothing",
        "pattern",
    );
    let errors = errors_at(&with(
        "\n[[outputs]]\nname = \"red\"\nled = \"red\"\n\n[[indications]]\noutput = \"red\"\npattern = \"strobe\"\n",
    ));
    assert!(errors[0].1.contains("strobe"), "{errors:?}");
    one_error(
        &with("\n[alerts]\ngateway = \"toaster\"\n"),
        "unknown gateway \"toaster\"; built in: raspberry-pi",
        "gateway",
    );
    one_error(
        &with("\n[alerts]\nacknowledge_tag = \"nope\"\n"),
        "no tag named \"nope\"",
        "acknowledge_tag",
    );
    one_error(
        &with("\n[alerts]\noutbox_filling_percent = 0\n"),
        "1–100",
        "outbox_filling_percent",
    );
}

#[test]
fn an_output_on_a_serial_bus_device_is_written_through_its_bus() {
    let text = with(
        "\n[[outputs]]\nname = \"relay\"\nmodbus = { device = \"meter\", address = 1, table = \"coil\" }\n",
    );
    let plan = load_str(Path::new("a.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let meter = plan.devices.iter().position(|d| d.name == "meter");
    let relay = plan.alerting.outputs.iter().find(|o| o.name == "relay");
    assert!(
        matches!(
            (relay.map(|o| &o.target), meter),
            (Some(OutputTarget::ModbusCoil { device, address: 1 }), Some(meter)) if *device == meter
        ),
        "{relay:?}"
    );
}

#[test]
fn a_discrete_alarm_on_a_bool_or_a_status_word() {
    let text = with(
        r#"
[[limits]]
tag = "running"
alarm_when = false
on_delay = "5s"
latching = true

[[limits]]
tag = "kwh"
alarm_when = true
severity = "low"
"#,
    );
    let plan = load_str(Path::new("a.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let limits = &plan.alerting.limits;
    assert_eq!(limits.len(), 2);
    assert_eq!(limits[0].tag, "running");
    assert_eq!(limits[0].limits.len(), 1);
    assert_eq!(limits[0].limits[0].kind, LimitKind::Alarm);
    assert_eq!(limits[0].limits[0].value, 0.0, "alarm while false");
    assert_eq!(limits[0].limits[0].severity, Severity::High);
    assert_eq!(limits[0].on_delay, Duration::from_secs(5));
    assert!(limits[0].latching);
    assert_eq!(limits[1].limits[0].value, 1.0);
    assert_eq!(limits[1].limits[0].severity, Severity::Low);
}

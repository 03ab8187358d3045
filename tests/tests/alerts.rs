//! Local alerts end to end: the `millwright` binary polling a simulated PLC, raising limit alerts,
//! lighting LEDs in a temporary directory shaped like `/sys/class/leds` and a coil and a register
//! on the simulator, publishing every transition to rumqttd, taking acknowledgements from the CLI,
//! MQTT and an acknowledge button, keeping its alerts through a SIGKILL, and setting its shutdown
//! patterns on SIGTERM.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use firmware_config::Table;
use millwright::control;
use millwright_tests::mqtt::{local_options, records, start_broker, Consumer};
use millwright_tests::{eventually, run_cli, AgentProcess, Sim};
use serde_json::json;

const SIM: &str = r#"
[[machines]]
name = "press"
kind = "motor"
unit_id = 1
[[machines.points]]
name = "temperature"
table = "holding_register"
address = 0
type = "f32"
signal = { base = 50.0 }
[[machines.points]]
name = "ack_button"
table = "coil"
address = 0
signal = { base = 0.0 }
[[machines.points]]
name = "overload"
table = "coil"
address = 1
signal = { base = 0.0 }
"#;

const PREFIX: &str = "acme/plant1/area/line";
const LEDS: [&str; 2] = ["red:alarm", "amber:warning"];

fn config(dir: &Path, sim_port: u16, mqtt_port: u16, closed_port: u16) -> String {
    let leds = dir.join("leds");
    let data = dir.join("data");
    format!(
        r#"
[agent]
name = "gw"
data_dir = {data:?}

[alerts]
acknowledge_tag = "ack_button"
led_class_dir = {leds:?}
device_down_after = "1s"

[[devices]]
name = "plc"
host = "127.0.0.1"
port = {sim_port}
unit_id = 1
addressing = "zero_based"
poll_interval = "100ms"
timeout = "500ms"
[[devices.tags]]
name = "temperature"
table = "holding_register"
address = 0
type = "f32"
unit = "°C"
[[devices.tags]]
name = "ack_button"
table = "coil"
address = 0
type = "bool"
[[devices.tags]]
name = "overload"
table = "coil"
address = 1
type = "bool"

[[devices]]
name = "ghost"
host = "127.0.0.1"
port = {closed_port}
addressing = "zero_based"
timeout = "200ms"
backoff = {{ initial = "100ms", max = "200ms" }}
[[devices.tags]]
name = "ghost.level"
table = "holding_register"
address = 0
type = "u16"

[[devices]]
name = "plc9"
host = "127.0.0.1"
port = {sim_port}
unit_id = 9
addressing = "zero_based"
poll_interval = "1s"
timeout = "500ms"
[[devices.tags]]
name = "plc9.word"
table = "holding_register"
address = 0
type = "u16"

[[limits]]
tag = "temperature"
hi_hi = 95.0
hi = 80.0
deadband = 2.0
latching = true
severity_hi = "low"

[[limits]]
tag = "overload"
alarm_when = true

[[outputs]]
name = "red"
led = "red:alarm"

[[outputs]]
name = "amber"
led = "amber:warning"
on_shutdown = "slow_blink"

[[outputs]]
name = "horn"
modbus = {{ device = "plc", address = 100, table = "coil" }}

[[outputs]]
name = "tower"
modbus = {{ device = "plc", address = 200, table = "holding_register" }}

[[outputs]]
name = "missing"
led = "not-there"

[[outputs]]
name = "beacon"
modbus = {{ device = "plc9", address = 5, table = "coil" }}

[[indications]]
output = "red"
severity = ["high", "critical"]
state = "unacknowledged"
pattern = "fast_blink"

[[indications]]
output = "red"
severity = ["high", "critical"]
pattern = "steady"

[[indications]]
output = "amber"
severity = ["low"]
state = "active"
pattern = "steady"

[[indications]]
output = "horn"
severity = ["high", "critical"]
state = "unacknowledged"
pattern = "steady"

[[indications]]
output = "tower"
severity = ["high"]
state = "unacknowledged"
pattern = "fast_blink"

[[indications]]
output = "tower"
severity = ["high"]
pattern = "steady"

[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
keep_alive = "5s"
connect_timeout = "1s"
backoff = {{ initial = "100ms", max = "500ms" }}
topics = {{ enterprise = "acme", site = "plant1", area = "area", line = "line" }}
"#
    )
}

/// What an LED shows, read back from its files.
fn led(dir: &Path, name: &str) -> (String, String, String) {
    let read = |file: &str| {
        std::fs::read_to_string(dir.join("leds").join(name).join(file))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    (read("trigger"), read("brightness"), read("delay_on"))
}

fn steady() -> (String, String, String) {
    ("none".into(), "1".into(), String::new())
}

fn off() -> (String, String, String) {
    ("none".into(), "0".into(), String::new())
}

fn blinking(ms: &str) -> (String, String, String) {
    ("timer".into(), "1".into(), ms.into())
}

async fn wait_led(dir: &Path, name: &str, want: (String, String, String), within: Duration) {
    let shown = eventually(within, || async {
        let mut now = led(dir, name);
        // delay_on is left behind by a previous blink; only compare it while blinking.
        if now.0 != "timer" {
            now.2 = String::new();
        }
        if now == want {
            Ok(())
        } else {
            Err(now)
        }
    })
    .await;
    if let Err(now) = shown {
        panic!("LED {name} shows {now:?}, not {want:?}, after {within:?}");
    }
}

fn plc_word(sim: &Sim, table: Table, address: u16) -> u16 {
    sim.plant
        .read(1, table, address, 1, Duration::ZERO, SystemTime::now())
        .map(|w| w[0])
        .unwrap_or(u16::MAX)
}

async fn wait_plc(sim: &Sim, table: Table, address: u16, want: u16, what: &str) {
    let written = eventually(Duration::from_secs(10), || async {
        match plc_word(sim, table, address) {
            word if word == want => Ok(()),
            word => Err(word),
        }
    })
    .await;
    if let Err(word) = written {
        panic!("{what}: {address} stays {word}, not {want}");
    }
}

fn set_temperature(sim: &Sim, celsius: f32) {
    let bits = celsius.to_bits();
    sim.plant
        .write(
            1,
            Table::HoldingRegister,
            0,
            &[(bits >> 16) as u16, bits as u16],
        )
        .expect("write temperature");
}

async fn status(data: &Path) -> Option<serde_json::Value> {
    control::request(&control::socket_path(data), "status", json!({}))
        .await
        .map(|reply| reply["result"].clone())
}

fn alert_state(status: &serde_json::Value, id: &str) -> Option<String> {
    status["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["alert_id"] == id)
        .map(|a| a["state"].as_str().unwrap_or("").to_string())
}

async fn wait_alert(data: &Path, id: &str, want: Option<&str>) -> serde_json::Value {
    eventually(Duration::from_secs(15), || async {
        match status(data).await {
            Some(status) if alert_state(&status, id).as_deref() == want => Ok(status),
            other => Err(other),
        }
    })
    .await
    .unwrap_or_else(|last| panic!("alert {id} never became {want:?}: {last:#?}"))
}

fn published(consumer: &Consumer, id: &str, state: &str) -> bool {
    records(&consumer.messages()).iter().any(|r| {
        r.2["kind"] == "alert" && r.2["data"]["alert_id"] == id && r.2["data"]["state"] == state
    })
}

async fn wait_published(consumer: &Consumer, id: &str, state: &str) {
    assert!(
        consumer
            .wait_until(Duration::from_secs(10), |m| {
                records(m).iter().any(|r| {
                    r.2["kind"] == "alert"
                        && r.2["data"]["alert_id"] == id
                        && r.2["data"]["state"] == state
                })
            })
            .await,
        "alert {id} published as {state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_alerts_light_outputs_survive_a_kill_and_are_acknowledged_three_ways() {
    let broker = start_broker().await;
    let consumer =
        Consumer::connect(local_options("consumer", broker), &format!("{PREFIX}/#")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    for name in LEDS {
        let led = dir.path().join("leds").join(name);
        std::fs::create_dir_all(&led).expect("mkdir led");
        std::fs::write(led.join("max_brightness"), "1\n").expect("max_brightness");
    }
    let sim = Sim::start(SIM, 0).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, config_text(dir.path(), &sim, broker, closed_port)).expect("config");
    let data = dir.path().join("data");

    let (ok, report) = run_cli(&config, &["check"]).await;
    assert!(ok, "{report}");
    assert!(
        report.contains("limits on \"temperature\": hi_hi 95°C (high), hi 80°C (low)"),
        "{report}"
    );
    assert!(report.contains("output \"red\" (led "), "{report}");
    assert!(
        report.contains(
            "fast_blink when high/critical Unacknowledged, then steady when high/critical Any"
        ),
        "{report}"
    );
    assert!(
        report.contains("acknowledge input: tag \"ack_button\""),
        "{report}"
    );
    assert!(
        report.contains("limits on \"overload\": alarm when true (high); on-delay 0s"),
        "{report}"
    );

    let agent = AgentProcess::spawn(&config);
    // Outputs are written at start (their state before is unknown).
    wait_led(dir.path(), "red:alarm", off(), Duration::from_secs(10)).await;
    wait_led(dir.path(), "amber:warning", off(), Duration::from_secs(10)).await;
    wait_plc(&sim, Table::Coil, 100, 0, "horn off").await;
    // A failing output and a device that never answers are agent-health alerts, not crashes.
    wait_alert(&data, "agent/output/missing", Some("active_unacknowledged")).await;
    wait_alert(&data, "agent/device/ghost", Some("active_unacknowledged")).await;
    // A PLC that refuses the coil write (an exception from a unit that is not there).
    let refused = wait_alert(&data, "agent/output/beacon", Some("active_unacknowledged")).await;
    let reason = refused["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["alert_id"] == "agent/output/beacon"))
        .map(|a| a["reason"].to_string())
        .unwrap_or_default();
    assert!(
        reason.contains("output beacon") && reason.contains("unit 9"),
        "{reason}"
    );

    set_temperature(&sim, 97.0);
    wait_led(
        dir.path(),
        "red:alarm",
        blinking("125"),
        Duration::from_secs(10),
    )
    .await;
    wait_led(
        dir.path(),
        "amber:warning",
        steady(),
        Duration::from_secs(10),
    )
    .await;
    wait_plc(&sim, Table::Coil, 100, 1, "horn on").await;
    wait_plc(&sim, Table::HoldingRegister, 200, 3, "tower fast blink").await;
    wait_published(&consumer, "temperature/hi_hi", "active_unacknowledged").await;
    wait_published(&consumer, "temperature/hi", "active_unacknowledged").await;
    let raised = records(&consumer.messages())
        .into_iter()
        .find(|r| r.2["kind"] == "alert" && r.2["data"]["alert_id"] == "temperature/hi_hi")
        .expect("raised");
    assert_eq!(raised.2["data"]["severity"], "high");
    assert_eq!(raised.2["data"]["source"], "temperature");
    assert_eq!(raised.2["data"]["value"], 97.0);
    assert!(
        consumer
            .messages()
            .iter()
            .any(|m| m.topic == format!("{PREFIX}/temperature/alert")),
        "limit alerts go to the tag's alert topic"
    );

    // A power cut while unacknowledged: after the restart the alert is still unacknowledged and
    // the outputs show it again.
    let _ = agent.kill().await;
    std::fs::write(dir.path().join("leds/red:alarm/trigger"), "none").expect("reset");
    std::fs::write(dir.path().join("leds/red:alarm/brightness"), "0").expect("reset");
    let agent = AgentProcess::spawn(&config);
    let restored = wait_alert(&data, "temperature/hi_hi", Some("active_unacknowledged")).await;
    assert_eq!(
        alert_state(&restored, "temperature/hi").as_deref(),
        Some("active_unacknowledged")
    );
    wait_led(
        dir.path(),
        "red:alarm",
        blinking("125"),
        Duration::from_secs(10),
    )
    .await;

    // Acknowledged from the CLI through the control socket.
    let (ok, text) = run_cli(&config, &["ack", "temperature/hi_hi", "--by", "j.doe"]).await;
    assert!(ok, "{text}");
    wait_led(dir.path(), "red:alarm", steady(), Duration::from_secs(10)).await;
    wait_plc(&sim, Table::Coil, 100, 0, "horn silenced").await;
    wait_plc(&sim, Table::HoldingRegister, 200, 1, "tower steady").await;
    wait_published(&consumer, "temperature/hi_hi", "active_acknowledged").await;
    let (ok, text) = run_cli(&config, &["ack", "temperature/hi_hi"]).await;
    assert!(
        !ok && text.contains("already acknowledged (by j.doe)"),
        "{text}"
    );
    let (ok, listing) = run_cli(&config, &["alerts"]).await;
    assert!(
        ok && listing.contains("temperature/hi_hi") && listing.contains("active_acknowledged"),
        "{listing}"
    );

    // Shelved over MQTT: amber (the low hi alert) goes dark; unshelved from the CLI, it is back.
    consumer
        .client
        .publish(
            format!("{PREFIX}/gw/cmd/shelve-alert"),
            rumqttc::QoS::AtLeastOnce,
            false,
            br#"{"alert_id": "temperature/hi", "duration": "1h", "by": "night shift"}"#.to_vec(),
        )
        .await
        .expect("publish");
    wait_led(dir.path(), "amber:warning", off(), Duration::from_secs(10)).await;
    let (ok, text) = run_cli(&config, &["shelve", "temperature/hi", "--for", "30d"]).await;
    assert!(!ok && text.contains("limited to 8h"), "{text}");
    let (ok, text) = run_cli(&config, &["unshelve", "temperature/hi"]).await;
    assert!(ok, "{text}");
    wait_led(
        dir.path(),
        "amber:warning",
        steady(),
        Duration::from_secs(10),
    )
    .await;

    // The acknowledge button: a rising edge acknowledges what is left.
    sim.plant.write(1, Table::Coil, 0, &[1]).expect("press");
    let pressed = wait_alert(&data, "temperature/hi", Some("active_acknowledged")).await;
    let by = pressed["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["alert_id"] == "temperature/hi"))
        .map(|a| a["acknowledged_by"].clone());
    assert_eq!(by, Some(json!("input ack_button")));

    // Back to normal: the acknowledged alerts clear (latching only holds unacknowledged ones).
    set_temperature(&sim, 50.0);
    wait_alert(&data, "temperature/hi_hi", None).await;
    wait_led(dir.path(), "red:alarm", off(), Duration::from_secs(10)).await;
    wait_published(&consumer, "temperature/hi_hi", "normal").await;

    // A latching alert that clears unacknowledged waits for acknowledgement, still blinking.
    set_temperature(&sim, 99.0);
    wait_alert(&data, "temperature/hi_hi", Some("active_unacknowledged")).await;
    set_temperature(&sim, 50.0);
    wait_alert(&data, "temperature/hi_hi", Some("cleared_unacknowledged")).await;
    wait_led(
        dir.path(),
        "red:alarm",
        blinking("125"),
        Duration::from_secs(10),
    )
    .await;
    let (ok, text) = run_cli(&config, &["ack", "--all"]).await;
    assert!(ok, "{text}");
    wait_alert(&data, "temperature/hi_hi", None).await;
    wait_led(dir.path(), "red:alarm", off(), Duration::from_secs(10)).await;
    assert!(published(
        &consumer,
        "temperature/hi_hi",
        "cleared_unacknowledged"
    ));

    // A discrete alarm: the motor's overload trip bit.
    sim.plant.write(1, Table::Coil, 1, &[1]).expect("trip");
    let tripped = wait_alert(&data, "overload/alarm", Some("active_unacknowledged")).await;
    assert!(
        tripped
            .to_string()
            .contains("overload is true (alarm when true)"),
        "{tripped}"
    );
    wait_led(
        dir.path(),
        "red:alarm",
        blinking("125"),
        Duration::from_secs(10),
    )
    .await;
    wait_published(&consumer, "overload/alarm", "active_unacknowledged").await;
    sim.plant.write(1, Table::Coil, 1, &[0]).expect("reset");
    wait_alert(&data, "overload/alarm", None).await;
    wait_led(dir.path(), "red:alarm", off(), Duration::from_secs(10)).await;

    // Shutdown patterns.
    let log = agent.terminate().await;
    assert!(log
        .transcript()
        .contains("outputs set to their shutdown patterns"));
    wait_led(
        dir.path(),
        "amber:warning",
        blinking("500"),
        Duration::from_secs(1),
    )
    .await;
    wait_led(dir.path(), "red:alarm", off(), Duration::from_secs(1)).await;
    sim.stop().await;
}

fn config_text(dir: &Path, sim: &Sim, broker: u16, closed_port: u16) -> String {
    config(dir, sim.addr.port(), broker, closed_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leds_test_cycles_every_output_and_names_the_failing_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in LEDS {
        std::fs::create_dir_all(dir.path().join("leds").join(name)).expect("mkdir led");
    }
    let sim = Sim::start(SIM, 0).await;
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, config_text(dir.path(), &sim, 1, 1)).expect("config");
    let (ok, text) = run_cli(&config, &["leds", "test", "--hold", "50ms"]).await;
    assert!(!ok, "the missing LED fails the test: {text}");
    for line in ["red ", "amber ", "horn ", "tower "] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(line) && l.ends_with("ok (on 50ms, then off)")),
            "{line}: {text}"
        );
    }
    assert!(
        text.contains("missing") && text.contains("FAILED: no LED at"),
        "{text}"
    );
    assert!(
        text.contains("beacon") && text.contains("2 output(s) failed"),
        "{text}"
    );
    assert_eq!(led(dir.path(), "red:alarm").1, "0");
    assert_eq!(plc_word(&sim, Table::Coil, 100), 0);
    sim.stop().await;
}

millwright_tests::needs! { gpio_sim
/// GPIO through the kernel's gpio-sim (configfs): needs root and the gpio-sim module.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpio_output_drives_a_gpio_sim_line() {
    let chip = GpioSim::create().expect("a gpio-sim chip in configfs");
    let line = firmware_config::GpioLine::Offset {
        chip: chip.device.clone(),
        offset: 3,
    };
    let gpio = millwright::outputs::gpio::Gpio::open(&line, false).expect("request line");
    gpio.set(true).expect("on");
    assert_eq!(chip.value(3), Some(true));
    gpio.set(false).expect("off");
    assert_eq!(chip.value(3), Some(false));
    drop(gpio);
    let inverted = millwright::outputs::gpio::Gpio::open(&line, true).expect("request line");
    inverted.set(true).expect("on");
    assert_eq!(chip.value(3), Some(false), "active low");
}
}

/// A simulated GPIO chip of 8 lines, removed when dropped.
struct GpioSim {
    config: PathBuf,
    device: PathBuf,
    sysfs: PathBuf,
}

impl GpioSim {
    fn create() -> Option<GpioSim> {
        let root = Path::new("/sys/kernel/config/gpio-sim");
        if !root.is_dir() {
            return None;
        }
        let config = root.join(format!("millwright-{}", std::process::id()));
        let bank = config.join("bank0");
        std::fs::create_dir(&config).ok()?;
        let made = (|| {
            std::fs::create_dir(&bank).ok()?;
            std::fs::write(bank.join("num_lines"), "8").ok()?;
            std::fs::write(config.join("live"), "1").ok()?;
            let chip = std::fs::read_to_string(bank.join("chip_name")).ok()?;
            let device = std::fs::read_to_string(config.join("dev_name")).ok()?;
            Some((chip.trim().to_string(), device.trim().to_string()))
        })();
        let Some((chip, device)) = made else {
            let _ = std::fs::remove_dir(&bank);
            let _ = std::fs::remove_dir(&config);
            return None;
        };
        Some(GpioSim {
            device: PathBuf::from("/dev").join(&chip),
            sysfs: Path::new("/sys/devices/platform").join(device).join(chip),
            config,
        })
    }

    fn value(&self, offset: u32) -> Option<bool> {
        let text =
            std::fs::read_to_string(self.sysfs.join(format!("sim_gpio{offset}/value"))).ok()?;
        Some(text.trim() == "1")
    }
}

impl Drop for GpioSim {
    fn drop(&mut self) {
        let _ = std::fs::write(self.config.join("live"), "0");
        let _ = std::fs::remove_dir(self.config.join("bank0"));
        let _ = std::fs::remove_dir(&self.config);
    }
}

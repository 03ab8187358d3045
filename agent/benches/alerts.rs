//! Alert latency: a sample beyond a limit arriving on the sample bus → the LED written (a file in a
//! directory shaped like /sys/class/leds) and → the alert record received from a local mosquitto
//! by a subscriber. The real stages run in-process: the alert task, the outputs task, the sled
//! outbox with its flusher and the MQTT uplink at QoS 1.
//!
//!     cargo bench -p millwright --bench alerts
//!
//! Prints the median and the 99th percentile of 200 raise/clear cycles. A thread reads the LED's
//! brightness file every 50 µs (plus the sleep's overshoot: the resolution is about 0.1 ms).
//! Needs `mosquitto` on the PATH for the MQTT figure (LED only otherwise).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use millwright::bus::SampleBus;
use millwright::clock::{Clock, SystemClock};
use millwright::decisions::alerts::{self, Alerts};
use millwright::sample::{Quality, Sample, TagId, Value};
use millwright::store::{Outbox, SledStore};
use millwright::uplink::{Identity, Uplink, UplinkParts, UplinkStats};
use tokio_util::sync::CancellationToken;

mod common;
use common::{free_port, median, mosquitto, percentile};

const CYCLES: usize = 200;

fn config(dir: &Path, mqtt_port: Option<u16>) -> String {
    let mqtt = mqtt_port.map_or(String::new(), |port| {
        format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ntopics = {{ enterprise = \"e\", site = \"s\", area = \"a\", line = \"l\" }}\n"
        )
    });
    format!(
        r#"
[agent]
name = "bench"
data_dir = {data:?}

[alerts]
led_class_dir = {leds:?}

[[devices]]
name = "plc"
host = "127.0.0.1"
addressing = "zero_based"
[[devices.tags]]
name = "temperature"
table = "holding_register"
address = 0
type = "f32"
unit = "°C"

[[limits]]
tag = "temperature"
hi = 80.0
deadband = 1.0

[[outputs]]
name = "red"
led = "red"

[[indications]]
output = "red"
pattern = "steady"

{mqtt}"#,
        data = dir.join("data"),
        leds = dir.join("leds"),
    )
}

fn sample(value: f64) -> Sample {
    Sample {
        tag: TagId(0),
        timestamp: SystemTime::now(),
        server_timestamp: None,
        value: Some(Value::F64(value)),
        quality: Quality::Good,
    }
}

/// When the LED's brightness file last changed to each level, seen by a polling thread.
struct LedWatch {
    lit_at: Mutex<Option<(bool, Instant)>>,
    stop: AtomicBool,
}

fn main() {
    let temp = tempfile::tempdir().expect("tempdir");
    let led_dir = temp.path().join("leds/red");
    std::fs::create_dir_all(&led_dir).expect("led dir");
    std::fs::write(led_dir.join("brightness"), "0").expect("brightness");
    let port = free_port();
    let broker = mosquitto(port, temp.path());
    if broker.is_none() {
        println!("mosquitto not installed: MQTT latency skipped");
    }
    let plan = firmware_config::load_str(
        &temp.path().join("bench.toml"),
        &config(temp.path(), broker.as_ref().map(|_| port)),
    )
    .expect("config");

    // One worker, as the agent runs by default.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (led, mqtt) = runtime.block_on(async {
        std::fs::create_dir_all(&plan.agent.data_dir).expect("data dir");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let stop = CancellationToken::new();
        let bus = SampleBus::new(4096);
        let (_assessments, assessment_feed) = tokio::sync::broadcast::channel(4);
        let mut outbox = None;
        // The subscriber's arrivals: (raised?, when).
        let arrivals: Arc<Mutex<Vec<(bool, Instant)>>> = Arc::default();
        if let Some(mqtt) = &plan.mqtt {
            let (store, _) = SledStore::open_or_recover(&plan.outbox.dir).expect("store");
            let store =
                Arc::new(Outbox::new(Box::new(store), plan.outbox.max_bytes).expect("outbox"));
            outbox = Some(Arc::clone(&store));
            tokio::spawn(millwright::app::flush_periodically(
                Arc::clone(&store),
                plan.outbox.flush_interval,
                Arc::clone(&clock),
                stop.clone(),
            ));
            tokio::spawn(
                Uplink::uns(
                    mqtt.clone(),
                    Identity {
                        agent: "bench".into(),
                        version: "bench".into(),
                        config_hash: "0".into(),
                    },
                    UplinkParts {
                        outbox: Arc::clone(&store),
                        stats: Arc::new(UplinkStats::default()),
                        commands: Arc::new(millwright::uplink::Refusing("benchmark")),
                        clock: Arc::clone(&clock),
                    },
                )
                .run(stop.clone()),
            );
            let mut options = rumqttc::MqttOptions::new("bench-subscriber", "127.0.0.1", port);
            options.set_max_packet_size(1 << 20, 1 << 20);
            let (client, mut events) = rumqttc::AsyncClient::new(options, 100);
            client
                .subscribe(
                    format!("{}/temperature/alert", mqtt.topic_prefix),
                    rumqttc::QoS::AtLeastOnce,
                )
                .await
                .expect("subscribe");
            let arrivals = Arc::clone(&arrivals);
            tokio::spawn(async move {
                while let Ok(event) = events.poll().await {
                    if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish)) = event {
                        let at = Instant::now();
                        let body: serde_json::Value =
                            serde_json::from_slice(&publish.payload).unwrap_or_default();
                        let raised = body["data"]["state"] == "active_unacknowledged";
                        arrivals.lock().expect("lock").push((raised, at));
                    }
                }
                drop(client);
            });
        }
        let book = Alerts::open(&plan.agent.data_dir, outbox.clone());
        let view = book.subscribe();
        let (report, reported) = alerts::reporting();
        tokio::spawn(alerts::run(
            millwright::decisions::conditions::Conditions::new(&plan.alerting),
            plan.alerting.clone(),
            book,
            alerts::Inputs {
                samples: Some(bus.subscribe()),
                assessments: assessment_feed,
                devices: Vec::new(),
                outbox: outbox.as_ref().map(|o| o.level()),
                broker: None,
                reported,
            },
            Arc::clone(&clock),
            stop.clone(),
        ));
        tokio::spawn(millwright::outputs::run(
            plan.alerting.clone(),
            Vec::new(),
            Vec::new(), // LED outputs only: no Modbus writers
            view,
            report,
            stop.clone(),
            CancellationToken::new(),
        ));
        let watch = Arc::new(LedWatch {
            lit_at: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let poller = {
            let watch = Arc::clone(&watch);
            let file = led_dir.join("brightness");
            std::thread::spawn(move || {
                let mut last = None;
                while !watch.stop.load(Ordering::Relaxed) {
                    let lit = std::fs::read_to_string(&file).is_ok_and(|s| s.trim() == "1");
                    if last != Some(lit) {
                        last = Some(lit);
                        *watch.lit_at.lock().expect("lock") = Some((lit, Instant::now()));
                    }
                    // Not a spin: the machine has two cores, and the agent's tasks need them.
                    std::thread::sleep(Duration::from_micros(50));
                }
            })
        };
        // Settle: the first value reports the limit inside, and the uplink connects.
        bus.publish(sample(50.0));
        tokio::time::sleep(Duration::from_secs(2)).await;

        let mut led_ms = Vec::new();
        let mut mqtt_ms = Vec::new();
        for _ in 0..CYCLES {
            for (value, lit) in [(90.0, true), (50.0, false)] {
                let sent = Instant::now();
                bus.publish(sample(value));
                let deadline = sent + Duration::from_secs(5);
                let (mut led_at, mut mqtt_at) = (None, plan.mqtt.is_none().then_some(sent));
                while (led_at.is_none() || mqtt_at.is_none()) && Instant::now() < deadline {
                    if let Some((state, at)) = *watch.lit_at.lock().expect("lock") {
                        if state == lit && at >= sent {
                            led_at = Some(at);
                        }
                    }
                    if mqtt_at.is_none() {
                        mqtt_at = arrivals
                            .lock()
                            .expect("lock")
                            .iter()
                            .find(|(raised, at)| *raised == lit && *at >= sent)
                            .map(|(_, at)| *at);
                    }
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                let (Some(led_at), Some(mqtt_at)) = (led_at, mqtt_at) else {
                    panic!("no LED change or alert within 5 s");
                };
                if lit {
                    led_ms.push((led_at - sent).as_secs_f64() * 1e3);
                    mqtt_ms.push((mqtt_at - sent).as_secs_f64() * 1e3);
                }
                arrivals.lock().expect("lock").clear();
                // Let the outbox acknowledge and the next cycle start from quiet.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        watch.stop.store(true, Ordering::Relaxed);
        let _ = poller.join();
        stop.cancel();
        (led_ms, mqtt_ms)
    });
    println!(
        "sample → LED written: median {:.3} ms, p99 {:.3} ms ({CYCLES} raises)",
        median(led.clone()),
        percentile(led, 0.99)
    );
    if let Some(mut broker) = broker {
        println!(
            "sample → alert received from mosquitto (QoS 1, sled outbox, flushed at once): median {:.3} ms, p99 {:.3} ms ({CYCLES} raises)",
            median(mqtt.clone()),
            percentile(mqtt, 0.99)
        );
        let _ = broker.kill();
    }
}

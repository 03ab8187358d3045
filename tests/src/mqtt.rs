//! MQTT test helpers: an in-process rumqttd broker, a TCP relay that can cut and restore the
//! agent's way to the broker, a consumer that records what arrives, and checks on record ids.
//! Every wait is bounded.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A port that was free a moment ago (for servers that cannot report the port they bound).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until something accepts connections on `port`.
pub async fn wait_listening(port: u16, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing listens on port {port} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts an in-process rumqttd broker (MQTT 3.1.1) on a free loopback port; it lives as long as
/// the test process.
pub async fn start_broker() -> u16 {
    start_broker_with_limit(1 << 20).await
}

/// A broker that closes the connection of a client sending a packet larger than `max_payload`
/// bytes (as brokers with a smaller packet limit than the agent's do).
pub async fn start_broker_with_limit(max_payload: usize) -> u16 {
    let port = free_port();
    let config = format!(
        r#"
id = 0
[router]
max_connections = 100
max_outgoing_packet_count = 1000
max_segment_size = 10485760
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = {max_payload}
max_inflight_count = 500
dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&config).expect("broker config");
    std::thread::spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        if let Err(error) = broker.start() {
            eprintln!("rumqttd stopped: {error}");
        }
    });
    wait_listening(port, Duration::from_secs(10)).await;
    port
}

/// A TCP relay on a loopback port in front of `target`: cutting it closes the listener and every
/// relayed connection (the broker vanishes for the agent), restoring it listens again on the same
/// port.
pub struct Relay {
    pub port: u16,
    target: SocketAddr,
    running: Option<CancellationToken>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        let mut relay = Relay {
            port,
            target,
            running: None,
        };
        relay.serve(listener);
        relay
    }

    fn serve(&mut self, listener: TcpListener) {
        let stop = CancellationToken::new();
        self.running = Some(stop.clone());
        let target = self.target;
        tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
            // Dropping the set aborts every relayed connection.
        });
    }

    pub fn cut(&mut self) {
        if let Some(stop) = self.running.take() {
            stop.cancel();
        }
    }

    pub async fn restore(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(error) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "cannot listen on {} again: {error}",
                        self.port
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.serve(listener);
    }
}

/// One message as the consumer received it.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Message {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }
}

/// An MQTT client subscribed to a filter at QoS 1, recording everything that arrives.
pub struct Consumer {
    pub client: AsyncClient,
    messages: Arc<Mutex<Vec<Message>>>,
}

impl Consumer {
    /// Connects and subscribes; returns once the subscription is acknowledged.
    pub async fn connect(mut options: MqttOptions, filter: &str) -> Consumer {
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(options, 1000);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (subscribed, on_suback) = tokio::sync::oneshot::channel();
        let sink = Arc::clone(&messages);
        tokio::spawn(async move {
            let mut subscribed = Some(subscribed);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        sink.lock().expect("lock").push(Message {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(error) => {
                        eprintln!("consumer: {error}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), on_suback)
            .await
            .expect("SUBACK within 10 s")
            .expect("consumer running");
        Consumer { client, messages }
    }

    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().expect("lock").clone()
    }

    /// Waits until `done` holds for what has arrived; false when `within` runs out.
    pub async fn wait_until(&self, within: Duration, done: impl Fn(&[Message]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if done(&self.messages.lock().expect("lock")) {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn local_options(client_id: &str, port: u16) -> MqttOptions {
    MqttOptions::new(client_id, "127.0.0.1", port)
}

/// The outbox stream a record belongs to, by its envelope's kind.
pub fn stream_of(kind: &str) -> &'static str {
    match kind {
        "alert" => "alert",
        "event" => "event",
        _ => "summary",
    }
}

/// Records (envelopes with an `id`) in arrival order: (stream, id, envelope).
pub fn records(messages: &[Message]) -> Vec<(&'static str, u64, serde_json::Value)> {
    messages
        .iter()
        .filter_map(|m| {
            let json = m.json();
            let id = json.get("id")?.as_u64()?;
            let kind = json.get("kind")?.as_str()?;
            Some((stream_of(kind), id, json))
        })
        .collect()
}

/// Checks delivery order: within each stream, the first arrival of each id comes in increasing id
/// order (repeats of an id already seen are the duplicates QoS 1 allows). Returns the set of ids.
pub fn assert_stream_order(messages: &[Message]) -> HashSet<u64> {
    let mut seen = HashSet::new();
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for (stream, id, _) in records(messages) {
        if !seen.insert(id) {
            continue;
        }
        if let Some(previous) = last.insert(stream, id) {
            assert!(
                id > previous,
                "stream {stream}: record {id} arrived first after record {previous}"
            );
        }
    }
    seen
}

/// A mosquitto broker run from Debian's package, on a free loopback port; killed when dropped.
pub struct Mosquitto {
    pub port: u16,
    child: std::process::Child,
}

impl Mosquitto {
    /// Starts mosquitto with the configuration `conf(port)` written into `dir`.
    pub async fn start(dir: &std::path::Path, conf: impl Fn(u16) -> String) -> Mosquitto {
        Mosquitto::start_on(dir, free_port(), conf).await
    }

    /// Starts mosquitto on `port` (a restart: the port of the broker stopped before).
    pub async fn start_on(
        dir: &std::path::Path,
        port: u16,
        conf: impl Fn(u16) -> String,
    ) -> Mosquitto {
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, conf(port)).expect("write mosquitto.conf");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("mosquitto.log"))
            .expect("log file");
        let child = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&path)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        let broker = Mosquitto { port, child };
        wait_listening(port, Duration::from_secs(10)).await;
        broker
    }

    /// SIGTERM, as a service manager stops it: mosquitto saves its persistent sessions first.
    pub fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

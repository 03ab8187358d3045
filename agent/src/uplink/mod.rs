//! The MQTT uplink: forwards the outbox to the broker and answers commands.
//!
//! Invariants:
//! - **Removal only on PUBACK.** rumqttc's `publish` only queues a request. The uplink notes each
//!   publish it queues, learns its packet id from the event loop's `Outgoing::Publish(pkid)` event
//!   (emitted in request order), and removes the record from the outbox only when the broker's
//!   `PubAck` for that packet id arrives.
//! - **Order within a stream.** Each class is published in id order over one connection. After a
//!   connection is lost, every stream restarts from its oldest unacknowledged record, so a record
//!   may be delivered twice (QoS 1 allows it; consumers de-duplicate by the envelope's `id`) but
//!   never out of order or not at all.
//! - **Nothing replayed behind our back.** Each connection gets a fresh rumqttc event loop, so
//!   rumqttc never re-sends a publish the uplink no longer tracks.
//! - **Alerts first.** Alerts are published before anything else and are not rate limited; events
//!   and summaries drain at most at `drain_rate` per second, events before summaries.
//! - **Bounded.** At most `max_inflight` records await their PUBACK; the outbox, not memory, holds
//!   the backlog.
//! - **Never stuck behind one record.** A record that cannot be published (its topic is not a valid
//!   MQTT topic, it is larger than a packet may be, or the broker closes the connection on it again
//!   and again: see [`suspects`]) is moved to the outbox's dead-letter area with its reason, logged,
//!   counted and raised as the `agent/dead_letters` alert; its stream goes on. A PUBACK that does
//!   not come within [`ack_timeout`] ends the connection, so a broker that silently drops a record
//!   cannot stall the stream either.

pub mod encode;
pub mod reason;
pub mod suspects;
pub mod tls;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use firmware_config::Mqtt;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff;
use crate::clock::Clock;
use crate::sources::modbus::DeviceWriter;
use crate::store::{Class, Outbox, Record};
pub use encode::{timestamp, Encoder, Identity, Message, TagWrite, Topics, PAYLOAD_SCHEMA};
use reason::Reason;
use suspects::{InFlight, Loss, Suspects};

/// Records read from the outbox per stream at a time.
const READ_BATCH: usize = 64;

/// Largest MQTT packet the uplink sends or accepts.
const MAX_PACKET: usize = 1 << 20;

/// How long a clean shutdown waits for outstanding acknowledgements.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long the `offline` status and the DISCONNECT may take after that.
const FAREWELL_GRACE: Duration = Duration::from_secs(1);

/// Why a connection cannot even be attempted: the user has to fix a file.
#[derive(Debug, thiserror::Error)]
pub enum SessionSetupError {
    /// The password file or variable (firmware-config says which and why).
    #[error("{0}")]
    Password(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Why a command was not carried out: the reply's `error`.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command {name:?}; known: {known}")]
    Unknown { name: String, known: String },
    /// The payload or an argument is wrong; says what was expected.
    #[error("{0}")]
    Arguments(String),
    #[error(transparent)]
    Alert(#[from] crate::decisions::lifecycle::AlertError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The command does not apply to this agent (no outbox without `[mqtt]`), or to this caller.
    #[error("{0}")]
    Refused(String),
}

/// A command's result, or what was wrong with it, once the stage that owns what it changes has
/// answered.
pub type Answer<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<serde_json::Value, CommandError>> + Send + 'a>,
>;

/// Answers commands arriving on `.../{agent}/cmd/{name}` (and through the local control socket).
pub trait CommandHandler: Send + Sync {
    fn handle<'a>(&'a self, name: &'a str, args: &'a serde_json::Value) -> Answer<'a>;
}

/// Refuses every command with the same reason (for a caller who may not command, and where
/// commands have no business).
pub struct Refusing(pub &'static str);

impl CommandHandler for Refusing {
    fn handle<'a>(&'a self, _: &'a str, _: &'a serde_json::Value) -> Answer<'a> {
        Box::pin(async { Err(CommandError::Refused(self.0.into())) })
    }
}

#[derive(Serialize)]
struct Reply<'a> {
    schema: u32,
    command: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<serde_json::Value>,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    time: String,
}

/// Runs one command from its raw payload (JSON object, or empty) and builds the reply payload.
/// Never fails: malformed input gets an error reply.
pub async fn answer(
    handler: &dyn CommandHandler,
    name: &str,
    payload: &[u8],
    now: SystemTime,
) -> Vec<u8> {
    let args = if payload.iter().all(u8::is_ascii_whitespace) {
        Ok(serde_json::Value::Object(Default::default()))
    } else {
        serde_json::from_slice::<serde_json::Value>(payload)
            .map_err(|e| CommandError::Arguments(format!("the payload is not JSON: {e}")))
            .and_then(|v| {
                if v.is_object() {
                    Ok(v)
                } else {
                    Err(CommandError::Arguments(
                        "the payload must be a JSON object".into(),
                    ))
                }
            })
    };
    let request_id = args
        .as_ref()
        .ok()
        .and_then(|a| a.get("request_id"))
        .cloned();
    let outcome = match args {
        Ok(args) => handler.handle(name, &args).await,
        Err(error) => Err(error),
    };
    let (ok, result, error) = match outcome {
        Ok(result) => (true, Some(result), None),
        Err(error) => (false, None, Some(error.to_string())),
    };
    serde_json::to_vec(&Reply {
        schema: PAYLOAD_SCHEMA,
        command: name,
        request_id,
        ok,
        result,
        error,
        time: timestamp(now),
    })
    .unwrap_or_default()
}

/// The broker connection as the uplink last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerLink {
    pub connected: bool,
    /// Why the broker is unreachable, as the last failed attempt said.
    pub last_error: Option<String>,
}

/// Counters of the uplink, shared with `status`; the connection state is announced on
/// [`UplinkStats::link`], which is how the agent's health hears of it.
#[derive(Debug, Default)]
pub struct UplinkStats {
    link: watch::Sender<BrokerLink>,
    pub connects: AtomicU64,
    pub connection_losses: AtomicU64,
    pub published: AtomicU64,
    pub acknowledged: AtomicU64,
    pub commands: AtomicU64,
    /// Records moved to the dead letters by this run.
    pub dead_lettered: AtomicU64,
}

impl UplinkStats {
    /// The connection state, announced on every change.
    pub fn link(&self) -> watch::Receiver<BrokerLink> {
        self.link.subscribe()
    }

    /// Announces the connection state.
    pub fn set_link(&self, connected: bool, error: Option<String>) {
        self.link.send_if_modified(|link| {
            let changed =
                link.connected != connected || (error.is_some() && link.last_error != error);
            link.connected = connected;
            if error.is_some() {
                link.last_error = error;
            }
            changed
        });
    }

    pub fn snapshot(&self) -> crate::status::UplinkStatus {
        let link = self.link.borrow().clone();
        crate::status::UplinkStatus {
            connected: link.connected,
            connects: self.connects.load(Ordering::Relaxed),
            connection_losses: self.connection_losses.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            acknowledged: self.acknowledged.load(Ordering::Relaxed),
            commands: self.commands.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            last_error: link.last_error,
        }
    }
}

/// What a request stands for once the broker acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    /// These records: removed from the outbox on the acknowledgement. A QoS 1 publish carries its
    /// own record; a fence carries the records whose messages were all QoS 0.
    Records(Vec<(Class, u64)>),
    /// Births, command replies, subscriptions: acknowledged by the broker, nothing to remove.
    Other,
    /// A QoS 0 publish: written to the connection, never acknowledged.
    Unacknowledged,
}

impl Sent {
    fn record_count(&self) -> usize {
        match self {
            Sent::Records(records) => records.len(),
            Sent::Other | Sent::Unacknowledged => 0,
        }
    }
}

/// The two kinds of request whose packet ids the uplink follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Publish,
    Subscribe,
}

/// A request not yet handed to rumqttc.
#[derive(Debug, Clone, PartialEq)]
enum Request {
    Publish(Message),
    /// A subscription; also the fence after QoS 0 publishes (see [`FENCE_TOPIC`]).
    Subscribe(String),
}

/// A SUBSCRIBE sent after QoS 0 publishes: brokers handle one connection's packets in order, so
/// its SUBACK says the broker has read them, as a PUBACK would. Nobody publishes on it.
pub const FENCE_TOPIC: &str = "millwright/fence";

/// Matches acknowledgements to records: requests are handed to rumqttc in order, learn their
/// packet id from the `Outgoing::Publish`/`Outgoing::Subscribe` events (which rumqttc emits in
/// request order), and are resolved by `PubAck`/`SubAck`. Each remembers when it was handed over
/// (on the clock's monotonic time), for the ack timeout and for blaming a record. Requests wait in
/// `unsent` while rumqttc's request queue is full, so a burst of births is never cut short.
#[derive(Debug, Default)]
struct Inflight {
    unsent: VecDeque<(Request, Sent)>,
    awaiting_id: VecDeque<(Kind, Sent, Duration)>,
    awaiting_ack: HashMap<(Kind, u16), (Sent, Duration)>,
    /// Records among all three, kept so the window check stays O(1).
    records: usize,
}

impl Inflight {
    fn queue(&mut self, request: Request, sent: Sent) {
        self.records += sent.record_count();
        self.unsent.push_back((request, sent));
    }

    /// Queues a message; QoS 0 ones are never acknowledged. A message no broker can take (a
    /// birth larger than a packet may be) is dropped with an error rather than handed to rumqttc,
    /// which would end the connection on it, again after every reconnect. Records are checked
    /// before they get here, and go to the dead letters.
    fn queue_message(&mut self, message: Message, sent: Sent) {
        if let Some(why) = undeliverable(&message.topic, message.payload.len()) {
            error!(topic = %message.topic.escape_debug(), reason = %why, "message dropped: no broker can take it");
            return;
        }
        let sent = if message.qos == QoS::AtMostOnce {
            Sent::Unacknowledged
        } else {
            sent
        };
        self.queue(Request::Publish(message), sent);
    }

    /// Hands what rumqttc takes to it.
    fn hand_over(&mut self, client: &AsyncClient, now: Duration) {
        while let Some((request, sent)) = self.unsent.pop_front() {
            let taken = match request {
                Request::Publish(m) => {
                    let (topic, qos, retain) = (m.topic, m.qos, m.retain);
                    client
                        .try_publish(topic.clone(), qos, retain, m.payload)
                        .map(|()| Kind::Publish)
                        .map_err(|error| {
                            let payload = match error {
                                rumqttc::ClientError::TryRequest(rumqttc::Request::Publish(p))
                                | rumqttc::ClientError::Request(rumqttc::Request::Publish(p)) => {
                                    p.payload.to_vec()
                                }
                                _ => Vec::new(),
                            };
                            Request::Publish(Message {
                                topic,
                                payload,
                                retain,
                                qos,
                            })
                        })
                }
                Request::Subscribe(topic) => client
                    .try_subscribe(topic.clone(), QoS::AtLeastOnce)
                    .map(|()| Kind::Subscribe)
                    .map_err(|_| Request::Subscribe(topic)),
            };
            match taken {
                Ok(kind) => self.awaiting_id.push_back((kind, sent, now)),
                Err(request) => {
                    debug!("request queue full; retrying after the next event");
                    self.unsent.push_front((request, sent));
                    return;
                }
            }
        }
    }

    fn sent(&mut self, kind: Kind, pkid: u16) {
        let Some(at) = self.awaiting_id.iter().position(|(k, _, _)| *k == kind) else {
            return;
        };
        let Some((_, sent, queued)) = self.awaiting_id.remove(at) else {
            return;
        };
        if sent != Sent::Unacknowledged {
            self.awaiting_ack.insert((kind, pkid), (sent, queued));
        }
    }

    fn acknowledged(&mut self, kind: Kind, pkid: u16) -> Option<Sent> {
        let (sent, _) = self.awaiting_ack.remove(&(kind, pkid))?;
        self.records -= sent.record_count();
        Some(sent)
    }

    fn records(&self) -> usize {
        self.records
    }

    fn is_empty(&self) -> bool {
        self.unsent.is_empty() && self.awaiting_id.is_empty() && self.awaiting_ack.is_empty()
    }

    /// The records not yet acknowledged, with their class, and how long ago each was sent.
    fn records_in_flight(&self, now: Duration) -> Vec<(Class, InFlight)> {
        let unsent = self.unsent.iter().map(|(_, sent)| (sent, now));
        let sent = self
            .awaiting_id
            .iter()
            .map(|(_, sent, at)| (sent, *at))
            .chain(self.awaiting_ack.values().map(|(sent, at)| (sent, *at)));
        unsent
            .chain(sent)
            .flat_map(|(sent, at)| match sent {
                Sent::Records(records) => records
                    .iter()
                    .map(|(class, id)| {
                        (
                            *class,
                            InFlight {
                                id: *id,
                                sent_ago: now.saturating_sub(at),
                            },
                        )
                    })
                    .collect(),
                Sent::Other | Sent::Unacknowledged => Vec::new(),
            })
            .collect()
    }

    /// When the oldest request still awaiting its acknowledgement was handed over.
    fn oldest(&self) -> Option<Duration> {
        self.awaiting_id
            .iter()
            .filter(|(_, sent, _)| *sent != Sent::Unacknowledged)
            .map(|(_, _, at)| *at)
            .chain(self.awaiting_ack.values().map(|(_, at)| *at))
            .min()
    }
}

/// How long a PUBACK may take before the connection is given up: a broker that keeps the
/// connection but never acknowledges a record would otherwise hold its stream for ever.
pub fn ack_timeout(keep_alive: Duration) -> Duration {
    (keep_alive * 2).max(Duration::from_secs(30))
}

/// Why a record cannot be published at all, whatever the broker: checked before it is sent.
pub fn undeliverable(topic: &str, payload_len: usize) -> Option<String> {
    if let Some(problem) = firmware_config::names::publish_topic_problem(topic) {
        return Some(format!("{problem}; no broker accepts it"));
    }
    let packet = payload_len + topic.len() + 16;
    (packet > MAX_PACKET).then(|| {
        format!(
            "the record is {packet} bytes, larger than an MQTT packet may be ({MAX_PACKET}); split the device's tags"
        )
    })
}

/// Token bucket for the backlog: `rate` per second, bursts of a tenth of a second.
#[derive(Debug)]
struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Duration,
}

impl RateLimit {
    fn new(rate: u32, now: Duration) -> RateLimit {
        let rate = f64::from(rate.max(1));
        let burst = (rate / 10.0).max(1.0);
        RateLimit {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// Takes one token if there is one.
    fn take(&mut self, now: Duration) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until the next token.
    fn wait(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / self.rate).max(0.0))
    }
}

/// Each class's read position and the records read ahead.
#[derive(Debug, Default)]
struct Streams {
    fetched_through: [Option<u64>; 3],
    ahead: [VecDeque<Record>; 3],
}

impl Streams {
    fn peek(&mut self, outbox: &Outbox, class: Class) -> Option<&Record> {
        let slot = class as usize;
        if self.ahead[slot].is_empty() {
            match outbox.next_after(class, self.fetched_through[slot], READ_BATCH) {
                Ok(records) => {
                    if let Some(last) = records.last() {
                        self.fetched_through[slot] = Some(last.id);
                    }
                    self.ahead[slot].extend(records);
                }
                Err(error) => warn!(%error, "cannot read the outbox"),
            }
        }
        self.ahead[slot].front()
    }

    fn pop(&mut self, class: Class) -> Option<Record> {
        self.ahead[class as usize].pop_front()
    }
}

pub struct Uplink {
    pub mqtt: Mqtt,
    pub identity: Identity,
    /// The command and reply topics.
    pub topics: Topics,
    /// Decides each record's messages, and the births, will and farewell. Used by the session's
    /// task alone; the lock is never held across an await.
    pub encoder: Mutex<Box<dyn Encoder>>,
    pub clock: Arc<dyn Clock>,
    pub outbox: Arc<Outbox>,
    pub stats: Arc<UplinkStats>,
    pub commands: Arc<dyn CommandHandler>,
    /// Each Modbus device's writer (plan order), for the writes a host may ask for.
    pub writers: Vec<DeviceWriter>,
}

enum SessionEnd {
    Stopped,
    /// The connection could not be made (nothing was in flight).
    Failed(Reason),
    /// The connection was lost with these records awaiting their PUBACK.
    Lost(Reason, Vec<(Class, InFlight)>),
    /// The encoder asked for a new session (the primary host went offline).
    Again,
}

/// What an uplink forwards from and reports to.
pub struct UplinkParts {
    pub outbox: Arc<Outbox>,
    pub stats: Arc<UplinkStats>,
    pub commands: Arc<dyn CommandHandler>,
    pub clock: Arc<dyn Clock>,
}

/// What the session loop does after an event.
enum Flow {
    Continue,
    Again,
}

/// The results of the writes hosts asked for.
type Written = (TagWrite, Result<(), String>);

impl Uplink {
    /// The uplink of `identity.agent`, in UNS JSON under `mqtt.topic_prefix`.
    pub fn uns(mqtt: Mqtt, identity: Identity, parts: UplinkParts) -> Uplink {
        let topics = Topics::new(&mqtt.topic_prefix, &identity.agent);
        let encoder = Box::new(encode::UnsJson {
            topics: topics.clone(),
        });
        Uplink::with_encoder(mqtt, identity, parts, encoder)
    }

    /// The uplink with `encoder` as its wire format.
    pub fn with_encoder(
        mqtt: Mqtt,
        identity: Identity,
        parts: UplinkParts,
        encoder: Box<dyn Encoder>,
    ) -> Uplink {
        Uplink {
            topics: Topics::new(&mqtt.topic_prefix, &identity.agent),
            encoder: Mutex::new(encoder),
            mqtt,
            identity,
            clock: parts.clock,
            outbox: parts.outbox,
            stats: parts.stats,
            commands: parts.commands,
            writers: Vec::new(),
        }
    }

    fn wire(&self) -> std::sync::MutexGuard<'_, Box<dyn Encoder>> {
        self.encoder.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn options(&self) -> Result<MqttOptions, SessionSetupError> {
        let mqtt = &self.mqtt;
        let mut options = MqttOptions::new(&mqtt.client_id, &mqtt.host, mqtt.port);
        options
            .set_keep_alive(mqtt.keep_alive)
            .set_clean_session(true)
            .set_inflight(mqtt.max_inflight.saturating_add(8))
            .set_request_channel_capacity(usize::from(mqtt.max_inflight) + 64)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_last_will({
                let will = self.wire().will(&self.identity, self.clock.now());
                LastWill::new(will.topic, will.payload, will.qos, will.retain)
            });
        if let Some(username) = &mqtt.username {
            let password = match &mqtt.password {
                Some(source) => source
                    .read()
                    .map_err(SessionSetupError::Password)?
                    .expose()
                    .to_string(),
                None => String::new(),
            };
            options.set_credentials(username, password);
        }
        if mqtt.tls {
            let config = tls::client_config(mqtt)?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        }
        Ok(options)
    }

    /// Connects, forwards and reconnects until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let mut failures = 0u32;
        let mut suspects = Suspects::default();
        loop {
            if stop.is_cancelled() {
                break;
            }
            let end = match self.options() {
                Ok(options) => {
                    self.session(options, &stop, &mut failures, &mut suspects)
                        .await
                }
                Err(error) => SessionEnd::Failed(Reason::other(error.to_string())),
            };
            self.stats.set_link(false, None);
            let reason = match end {
                SessionEnd::Stopped => break,
                SessionEnd::Again => continue,
                SessionEnd::Failed(reason) => reason,
                SessionEnd::Lost(reason, in_flight) => {
                    self.blame(&mut suspects, &reason, &in_flight);
                    reason
                }
            };
            failures = failures.saturating_add(1);
            let delay = backoff::delay(&self.mqtt.backoff, failures, fastrand::f64());
            warn!(
                broker = %format!("{}:{}", self.mqtt.host, self.mqtt.port),
                error = %reason.text,
                retry_in = ?delay,
                queued = self.outbox.depth(),
                "MQTT connection unavailable; records stay in the outbox"
            );
            self.stats.set_link(false, Some(reason.text));
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Tells the suspects how the connection ended; a record that earned it goes to the dead
    /// letters.
    fn blame(&self, suspects: &mut Suspects, reason: &Reason, in_flight: &[(Class, InFlight)]) {
        let flying: Vec<InFlight> = in_flight.iter().map(|(_, r)| *r).collect();
        let Some((id, strikes)) = suspects.lost(&flying, reason.loss) else {
            return;
        };
        let Some((class, _)) = in_flight.iter().find(|(_, r)| r.id == id) else {
            return;
        };
        let why = format!(
            "the broker ended the connection {strikes} times in a row while this record alone was in flight (last: {})",
            reason.text
        );
        match self.outbox.next_after(*class, id.checked_sub(1), 1) {
            Ok(records) => match records.into_iter().find(|r| r.id == id) {
                Some(record) => {
                    let topic = self.wire().topic(&record);
                    self.bury(&record, &topic, &why)
                }
                None => debug!(id, "the condemned record is no longer in the outbox"),
            },
            Err(error) => warn!(%error, id, "cannot read the record to move to the dead letters"),
        }
    }

    /// Moves a record to the dead-letter area, loudly.
    fn bury(&self, record: &Record, topic: &str, why: &str) {
        error!(
            id = record.id,
            kind = %record.payload.kind(),
            topic = %topic.escape_debug(),
            reason = %why,
            "record cannot be delivered: moved to the outbox's dead letters (see `millwright outbox --dead-letters`); the stream goes on"
        );
        if let Err(error) = self.outbox.bury(record, topic, why, self.clock.now()) {
            error!(%error, id = record.id, "cannot move the record to the dead letters");
        }
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// Subscriptions and births of a new connection.
    fn greet(&self, inflight: &mut Inflight) {
        let mut wire = self.wire();
        let mut topics = wire.subscriptions();
        if !topics.contains(&self.topics.commands()) {
            topics.push(self.topics.commands());
        }
        for topic in topics {
            inflight.queue(Request::Subscribe(topic), Sent::Other);
        }
        for message in wire.connected(&self.identity, self.clock.now()) {
            inflight.queue_message(message, Sent::Other);
        }
    }

    async fn session(
        &self,
        options: MqttOptions,
        stop: &CancellationToken,
        failures: &mut u32,
        suspects: &mut Suspects,
    ) -> SessionEnd {
        let (client, mut events) =
            AsyncClient::new(options, usize::from(self.mqtt.max_inflight) + 64);
        let connected = tokio::select! {
            () = stop.cancelled() => return SessionEnd::Stopped,
            connected = tokio::time::timeout(self.mqtt.connect_timeout, wait_connack(&mut events)) => connected,
        };
        match connected {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return SessionEnd::Failed(reason::describe(&error, &self.mqtt)),
            Err(_) => {
                return SessionEnd::Failed(Reason::other(format!(
                    "timeout: no CONNACK from {}:{} within {}",
                    self.mqtt.host,
                    self.mqtt.port,
                    humantime::format_duration(self.mqtt.connect_timeout)
                )))
            }
        }
        *failures = 0;
        self.stats.set_link(true, None);
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        info!(
            broker = %format!("{}:{}", self.mqtt.host, self.mqtt.port),
            tls = self.mqtt.tls,
            queued = self.outbox.depth(),
            probation = suspects.on_probation(),
            "MQTT connected"
        );

        let mut inflight = Inflight::default();
        let mut streams = Streams::default();
        let mut rate = RateLimit::new(self.mqtt.drain_rate, self.clock.elapsed());
        self.greet(&mut inflight);
        let ack_timeout = ack_timeout(self.mqtt.keep_alive);
        let mut ack_check = crate::clock::ticker(Duration::from_secs(1));
        let (written_tx, mut written) = tokio::sync::mpsc::channel::<Written>(16);

        loop {
            let throttled = self.fill(&mut inflight, &mut streams, &mut rate, suspects);
            inflight.hand_over(&client, self.clock.elapsed());
            let mut session = Session {
                client: &client,
                events: &mut events,
                inflight: &mut inflight,
                streams: &mut streams,
            };
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    self.close(&mut session, suspects).await;
                    return SessionEnd::Stopped;
                }
                event = session.events.poll() => match event {
                    Ok(event) => {
                        if let Flow::Again = self.on_event(event, session.inflight, suspects, &written_tx).await {
                            self.close(&mut session, suspects).await;
                            return SessionEnd::Again;
                        }
                    }
                    Err(error) => {
                        self.stats.connection_losses.fetch_add(1, Ordering::Relaxed);
                        let reason = reason::describe(&error, &self.mqtt);
                        return SessionEnd::Lost(reason, inflight.records_in_flight(self.clock.elapsed()));
                    }
                },
                () = self.outbox.appended.notified() => {}
                Some((write, result)) = written.recv() => {
                    let messages = self.wire().written(&write, result, self.clock.now());
                    for message in messages {
                        inflight.queue_message(message, Sent::Other);
                    }
                }
                () = tokio::time::sleep(throttled.unwrap_or_default()), if throttled.is_some() => {}
                _ = ack_check.tick() => {
                    for message in self.wire().tick(self.clock.now()) {
                        inflight.queue_message(message, Sent::Other);
                    }
                    let now = self.clock.elapsed();
                    if inflight.oldest().is_some_and(|at| now.saturating_sub(at) > ack_timeout) {
                        self.stats.connection_losses.fetch_add(1, Ordering::Relaxed);
                        let reason = Reason {
                            text: format!(
                                "no acknowledgement from the broker within {}; reconnecting",
                                humantime::format_duration(ack_timeout)
                            ),
                            loss: Loss::NoAck,
                        };
                        return SessionEnd::Lost(reason, inflight.records_in_flight(now));
                    }
                }
            }
        }
    }

    /// Queues what the window and the rate allow. Returns how long until the rate allows more,
    /// when it is the rate that holds the backlog back.
    fn fill(
        &self,
        inflight: &mut Inflight,
        streams: &mut Streams,
        rate: &mut RateLimit,
        suspects: &mut Suspects,
    ) -> Option<Duration> {
        let mut wire = self.wire();
        if !wire.ready() {
            return None;
        }
        // Records whose messages were all QoS 0, confirmed together by one fence.
        let mut fenced = Vec::new();
        let mut throttled = None;
        while inflight.records() + fenced.len()
            < suspects.window(usize::from(self.mqtt.max_inflight))
        {
            let class = if streams.peek(&self.outbox, Class::Alert).is_some() {
                Class::Alert
            } else if let Some(class) = [Class::Event, Class::Summary]
                .into_iter()
                .find(|c| streams.peek(&self.outbox, *c).is_some())
            {
                if !rate.take(self.clock.elapsed()) {
                    throttled = Some(rate.wait());
                    break;
                }
                class
            } else {
                break;
            };
            let Some(record) = streams.pop(class) else {
                break;
            };
            let messages = wire.encode(&record, &self.identity.agent);
            // rumqttc refuses such a publish with the same error as a full queue, and a broker
            // closes the connection on it: either way the stream would stop here.
            if let Some((topic, why)) = messages.iter().find_map(|m| {
                undeliverable(&m.topic, m.payload.len()).map(|why| (m.topic.clone(), why))
            }) {
                self.bury(&record, &topic, &why);
                suspects.forget(record.id);
                continue;
            }
            self.stats.published.fetch_add(1, Ordering::Relaxed);
            let mine = vec![(class, record.id)];
            let Some(last_acknowledged) = messages.iter().rposition(|m| m.qos != QoS::AtMostOnce)
            else {
                if messages.is_empty() {
                    // Nothing this format carries: done with it.
                    self.acknowledged(Sent::Records(mine), suspects);
                } else {
                    messages
                        .into_iter()
                        .for_each(|m| inflight.queue_message(m, Sent::Other));
                    fenced.push((class, record.id));
                }
                continue;
            };
            for (i, message) in messages.into_iter().enumerate() {
                let sent = if i == last_acknowledged {
                    Sent::Records(mine.clone())
                } else {
                    Sent::Other
                };
                inflight.queue_message(message, sent);
            }
        }
        if !fenced.is_empty() {
            inflight.queue(
                Request::Subscribe(FENCE_TOPIC.into()),
                Sent::Records(fenced),
            );
        }
        throttled
    }

    /// Removes acknowledged records from the outbox.
    fn acknowledged(&self, sent: Sent, suspects: &mut Suspects) {
        let Sent::Records(records) = sent else {
            return;
        };
        for (class, id) in records {
            self.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
            suspects.acknowledged(id);
            if let Err(error) = self.outbox.acknowledge(class, id) {
                error!(%error, id, "cannot remove an acknowledged record from the outbox");
            }
        }
    }

    async fn on_event(
        &self,
        event: Event,
        inflight: &mut Inflight,
        suspects: &mut Suspects,
        written: &tokio::sync::mpsc::Sender<Written>,
    ) -> Flow {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => inflight.sent(Kind::Publish, pkid),
            Event::Outgoing(Outgoing::Subscribe(pkid)) => inflight.sent(Kind::Subscribe, pkid),
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(sent) = inflight.acknowledged(Kind::Publish, ack.pkid) {
                    self.acknowledged(sent, suspects);
                }
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                if let Some(sent) = inflight.acknowledged(Kind::Subscribe, ack.pkid) {
                    self.acknowledged(sent, suspects);
                }
            }
            Event::Incoming(Packet::Publish(publish)) => {
                if let Some(name) = self.topics.command_name(&publish.topic) {
                    self.command(name, &publish.payload, inflight).await;
                    return Flow::Continue;
                }
                let incoming = self.wire().incoming(
                    &self.identity,
                    &publish.topic,
                    &publish.payload,
                    self.clock.now(),
                );
                for message in incoming.publish {
                    inflight.queue_message(message, Sent::Other);
                }
                for write in incoming.writes {
                    self.write(write, written.clone());
                }
                if incoming.reconnect {
                    return Flow::Again;
                }
            }
            _ => {}
        }
        Flow::Continue
    }

    /// Answers a command on the UNS command topic.
    async fn command(&self, name: &str, payload: &[u8], inflight: &mut Inflight) {
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        info!(command = name, "command received");
        let reply = answer(self.commands.as_ref(), name, payload, self.clock.now()).await;
        inflight.queue_message(
            Message {
                topic: self.topics.reply(name),
                payload: reply,
                retain: false,
                qos: QoS::AtLeastOnce,
            },
            Sent::Other,
        );
    }

    /// Carries out a write a host asked for, off the session's loop; the result comes back on
    /// `written`.
    fn write(&self, write: TagWrite, written: tokio::sync::mpsc::Sender<Written>) {
        let Some(writer) = self.writers.get(write.device).cloned() else {
            let _ = written.try_send((write, Err("the device has no writer".into())));
            return;
        };
        info!(tag = %write.tag.name, value = %write.value, "writing for the Sparkplug host (DCMD)");
        tokio::spawn(async move {
            let result = match crate::sources::modbus::write::encode(&write.tag, &write.value) {
                Ok(request) => writer.write(request).await.map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            if let Err(error) = &result {
                warn!(tag = %write.tag.name, %error, "DCMD write failed");
            }
            let _ = written.send((write, result)).await;
        });
    }

    /// Clean shutdown: what is queued (`agent_stopping` among it) is delivered without the drain
    /// rate for up to [`SHUTDOWN_GRACE`], then the farewell (retained `offline`, Sparkplug's
    /// NDEATH), its acknowledgement and DISCONNECT for up to [`FAREWELL_GRACE`].
    async fn close(&self, session: &mut Session<'_>, suspects: &mut Suspects) {
        let mut unthrottled = RateLimit::new(u32::MAX, self.clock.elapsed());
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let delivered = tokio::time::timeout(SHUTDOWN_GRACE, async {
            loop {
                let (client, inflight, streams) = (
                    session.client,
                    &mut *session.inflight,
                    &mut *session.streams,
                );
                self.fill(inflight, streams, &mut unthrottled, suspects);
                inflight.hand_over(client, self.clock.elapsed());
                let queued = self.wire().ready()
                    && Class::ALL
                        .into_iter()
                        .any(|class| streams.peek(&self.outbox, class).is_some());
                if !queued && inflight.is_empty() {
                    return true;
                }
                match session.events.poll().await {
                    Ok(event) => {
                        self.on_event(event, inflight, suspects, &tx).await;
                    }
                    Err(error) => {
                        warn!(
                            %error,
                            queued = self.outbox.depth(),
                            "stopping: the connection ended before everything queued was delivered; the rest stays in the outbox"
                        );
                        return false;
                    }
                }
            }
        })
        .await;
        match delivered {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => warn!(
                queued = self.outbox.depth(),
                "stopping: not everything queued was delivered within {}; the rest stays in the outbox",
                humantime::format_duration(SHUTDOWN_GRACE)
            ),
        }
        let farewell = self.wire().farewell(&self.identity, self.clock.now());
        let (client, inflight) = (session.client, &mut *session.inflight);
        for message in farewell {
            inflight.queue_message(message, Sent::Other);
        }
        let _ = tokio::time::timeout(FAREWELL_GRACE, async {
            loop {
                inflight.hand_over(client, self.clock.elapsed());
                if inflight.is_empty() {
                    break;
                }
                match session.events.poll().await {
                    Ok(event) => {
                        self.on_event(event, inflight, suspects, &tx).await;
                    }
                    Err(_) => break,
                }
            }
            let _ = client.try_disconnect();
            while session.events.poll().await.is_ok() {}
        })
        .await;
    }
}

/// A connected session's moving parts, as the shutdown uses them.
struct Session<'a> {
    client: &'a AsyncClient,
    events: &'a mut EventLoop,
    inflight: &'a mut Inflight,
    streams: &'a mut Streams,
}

async fn wait_connack(events: &mut EventLoop) -> Result<(), ConnectionError> {
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = events.poll().await? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl CommandHandler for Echo {
        fn handle<'a>(&'a self, name: &'a str, args: &'a serde_json::Value) -> Answer<'a> {
            Box::pin(async move {
                match name {
                    "echo" => Ok(args.clone()),
                    other => Err(CommandError::Unknown {
                        name: other.into(),
                        known: "echo".into(),
                    }),
                }
            })
        }
    }

    fn reply(name: &str, payload: &[u8]) -> serde_json::Value {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let answered = runtime.block_on(answer(&Echo, name, payload, SystemTime::UNIX_EPOCH));
        serde_json::from_slice(&answered).expect("json")
    }

    #[test]
    fn commands_get_a_reply_whatever_they_carry() {
        let ok = reply("echo", br#"{"request_id": "r-7", "x": 1}"#);
        assert_eq!(ok["ok"], true);
        assert_eq!(ok["request_id"], "r-7");
        assert_eq!(ok["result"]["x"], 1);
        assert_eq!(
            reply("echo", b"")["ok"],
            true,
            "empty payload = no arguments"
        );
        let garbage = reply("echo", b"\xff{not json");
        assert_eq!(garbage["ok"], false);
        assert!(garbage["error"]
            .as_str()
            .expect("error")
            .contains("not JSON"));
        assert!(reply("echo", b"[1,2]")["error"]
            .as_str()
            .expect("error")
            .contains("object"));
        let unknown = reply("reboot", b"{}");
        assert_eq!(unknown["ok"], false);
        assert!(unknown["error"].as_str().expect("error").contains("reboot"));
    }

    fn message(qos: QoS) -> Message {
        Message {
            topic: "t".into(),
            payload: b"x".to_vec(),
            retain: false,
            qos,
        }
    }

    fn record(class: Class, id: u64) -> Sent {
        Sent::Records(vec![(class, id)])
    }

    /// A client whose requests go nowhere: enough to hand requests over.
    fn client() -> (AsyncClient, EventLoop) {
        AsyncClient::new(MqttOptions::new("test", "localhost", 1883), 64)
    }

    #[test]
    fn packet_ids_map_back_to_records_in_request_order() {
        let (client, _events) = client();
        let mut inflight = Inflight::default();
        let at = Duration::from_secs(100);
        inflight.queue_message(message(QoS::AtLeastOnce), Sent::Other);
        inflight.queue_message(message(QoS::AtMostOnce), record(Class::Event, 9));
        inflight.queue_message(message(QoS::AtLeastOnce), record(Class::Summary, 10));
        inflight.queue(
            Request::Subscribe(FENCE_TOPIC.into()),
            record(Class::Event, 12),
        );
        inflight.queue_message(message(QoS::AtLeastOnce), record(Class::Alert, 11));
        assert_eq!(inflight.records(), 3, "a QoS 0 publish carries no record");
        inflight.hand_over(&client, at);
        // rumqttc's events, in request order: QoS 0 has packet id 0 and no acknowledgement.
        inflight.sent(Kind::Publish, 1);
        inflight.sent(Kind::Publish, 0);
        inflight.sent(Kind::Publish, 2);
        inflight.sent(Kind::Subscribe, 3);
        inflight.sent(Kind::Publish, 4);
        assert_eq!(
            inflight.acknowledged(Kind::Publish, 4),
            Some(record(Class::Alert, 11))
        );
        assert_eq!(
            inflight.acknowledged(Kind::Publish, 4),
            None,
            "one ack per packet id"
        );
        assert_eq!(
            inflight.acknowledged(Kind::Publish, 3),
            None,
            "packet id 3 is the fence's: a PUBACK cannot resolve it"
        );
        assert_eq!(
            inflight.acknowledged(Kind::Subscribe, 3),
            Some(record(Class::Event, 12))
        );
        assert_eq!(
            inflight.acknowledged(Kind::Publish, 2),
            Some(record(Class::Summary, 10))
        );
        assert_eq!(inflight.acknowledged(Kind::Publish, 1), Some(Sent::Other));
        assert!(inflight.is_empty());
        assert_eq!(inflight.records(), 0);
    }

    #[test]
    fn records_no_broker_can_take_are_known_before_they_are_sent() {
        assert_eq!(undeliverable("e/s/a/l/plc/tags", 1000), None);
        assert!(undeliverable("e/s/a/l/plc#1/tags", 10)
            .expect("wildcard")
            .contains("contains `#`"));
        assert!(undeliverable("e/s/a/l/plc\0/tags", 10)
            .expect("NUL")
            .contains("U+0000"));
        assert!(undeliverable("e/s/a/l/plc/tags", MAX_PACKET)
            .expect("too large")
            .contains("larger than an MQTT packet may be"));
    }

    #[test]
    fn a_message_no_broker_can_take_is_never_handed_over() {
        let mut inflight = Inflight::default();
        let mut huge = message(QoS::AtMostOnce);
        huge.payload = vec![0; MAX_PACKET];
        inflight.queue_message(huge, Sent::Other);
        assert!(inflight.is_empty(), "it would end every connection");
        inflight.queue_message(message(QoS::AtMostOnce), Sent::Other);
        assert!(!inflight.is_empty());
    }

    #[test]
    fn records_in_flight_say_how_long_ago_they_were_sent() {
        let (client, _events) = client();
        let mut inflight = Inflight::default();
        let start = Duration::from_secs(100);
        inflight.queue_message(message(QoS::AtLeastOnce), record(Class::Summary, 5));
        inflight.hand_over(&client, start);
        inflight.queue_message(message(QoS::AtLeastOnce), Sent::Other);
        inflight.hand_over(&client, start + Duration::from_secs(1));
        inflight.queue_message(message(QoS::AtLeastOnce), record(Class::Alert, 6));
        inflight.hand_over(&client, start + Duration::from_secs(2));
        inflight.queue(
            Request::Subscribe(FENCE_TOPIC.into()),
            Sent::Records(vec![(Class::Event, 7), (Class::Summary, 8)]),
        );
        inflight.sent(Kind::Publish, 1);
        assert_eq!(inflight.oldest(), Some(start));
        let mut flying = inflight.records_in_flight(start + Duration::from_secs(3));
        flying.sort_by_key(|(_, r)| r.id);
        let at = |class, id, ago| {
            (
                class,
                InFlight {
                    id,
                    sent_ago: Duration::from_secs(ago),
                },
            )
        };
        assert_eq!(
            flying,
            [
                at(Class::Summary, 5, 3),
                at(Class::Alert, 6, 1),
                at(Class::Event, 7, 0),
                at(Class::Summary, 8, 0)
            ],
            "a fence stands for every record it confirms; one not handed over yet was sent just now"
        );
        assert_eq!(ack_timeout(Duration::from_secs(5)), Duration::from_secs(30));
        assert_eq!(
            ack_timeout(Duration::from_secs(60)),
            Duration::from_secs(120)
        );
    }

    #[test]
    fn the_backlog_rate_refills_at_the_configured_rate() {
        let start = Duration::from_secs(100);
        let mut rate = RateLimit::new(100, start);
        let burst = (0..50).take_while(|_| rate.take(start)).count();
        assert_eq!(burst, 10, "a tenth of a second's worth at once");
        assert!(!rate.take(start));
        assert!(rate.wait() <= Duration::from_millis(10));
        let later = start + Duration::from_millis(50);
        let refilled = (0..50).take_while(|_| rate.take(later)).count();
        assert_eq!(refilled, 5);
    }
}

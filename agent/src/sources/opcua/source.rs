//! The acquisition task of one OPC UA endpoint: connect, subscribe and poll, notice the loss,
//! reconnect with backoff, and build everything again.
//!
//! Invariants:
//! - Every tag gets a sample whenever its state changes in a way a consumer must see: each value
//!   the server reports; a bad sample when its monitored item or read fails (with the status);
//!   a `transport` sample for every tag when the connection is lost.
//! - Monitored items are created in batches of `max_items_per_request`; an item the server
//!   refused (`BadNodeIdUnknown` while its address space loads, a namespace URI it does not know
//!   yet, ...) is tried again every `node_retry_interval` for as long as the session lives, and
//!   again after every reconnect. Nothing is given up. Some servers accept the item and report
//!   `BadNodeIdUnknown` in its notifications instead, and never sample it again once the node
//!   exists: such an item is deleted and created again at the next retry.
//! - A client handle is the tag's index within the endpoint plus one, so a notification maps to
//!   its tag without a lookup table that could go stale across reconnects.

use std::collections::{BTreeMap, HashMap, HashSet};

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::opcua::client::{MonitoredItemMap, OnSubscriptionNotificationCore, Session};
use ::opcua::types::{
    AttributeId, DataChangeFilter, DataChangeNotification, DataChangeTrigger, DeadbandType,
    ExtensionObject, MonitoredItemCreateRequest, MonitoringMode, MonitoringParameters, NodeId,
    NotificationMessage, QualifiedName, ReadValueId, StatusCode, TimestampsToReturn,
};
use firmware_config::{Acquisition, Deadband, OpcuaEndpoint};
use tokio::time::{Instant, MissedTickBehavior};

use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::client::{self, ClientFiles, ConnectError, Connection};
use super::convert;
use crate::backoff;
use crate::bus::SampleBus;
use crate::clock::Clock;
use crate::liveness::Heartbeat;
use crate::sample::{Quality, Sample, TagId};
use crate::sources::DeviceStats;

/// One endpoint's acquisition.
pub struct EndpointSource {
    endpoint: OpcuaEndpoint,
    tag_base: u32,
    files: ClientFiles,
    session_name: String,
    clock: Arc<dyn Clock>,
    bus: SampleBus,
    stats: Arc<DeviceStats>,
    heartbeat: Arc<Heartbeat>,
    rng: fastrand::Rng,
}

/// A session that ends sooner than this counts as a failure for the backoff.
const SHORT_SESSION: Duration = Duration::from_secs(30);

/// Why a session was lost (it is opened again after the backoff).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionLost {
    /// A service call the session cannot go on without failed: what, and the server's words.
    #[error("{what} failed: {reason}")]
    Failed { what: &'static str, reason: String },
    #[error("{0} timed out")]
    TimedOut(&'static str),
    /// The session or its channel ended (async-opcua's status, in words).
    #[error("{0}")]
    Ended(String),
    /// No session could be opened (`read`).
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

fn failed<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> SessionLost {
    move |error| SessionLost::Failed {
        what,
        reason: error.to_string(),
    }
}

/// Why a session ended.
enum Ended {
    Shutdown,
    Lost(SessionLost),
}

impl EndpointSource {
    pub fn new(
        endpoint: OpcuaEndpoint,
        tag_base: u32,
        files: ClientFiles,
        session_name: String,
        clock: Arc<dyn Clock>,
        bus: SampleBus,
        stats: Arc<DeviceStats>,
    ) -> EndpointSource {
        EndpointSource {
            heartbeat: Heartbeat::new(Arc::clone(&clock)),
            endpoint,
            tag_base,
            files,
            session_name,
            clock,
            bus,
            stats,
            rng: fastrand::Rng::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.endpoint.name
    }

    pub fn heartbeat(&self) -> Arc<Heartbeat> {
        Arc::clone(&self.heartbeat)
    }

    /// The longest a healthy task goes without a beat: a connection attempt (bounded by three
    /// request timeouts), the longest backoff and a batch of service calls, doubled.
    pub fn stall_limit(&self) -> Duration {
        let e = &self.endpoint;
        (e.request_timeout * 6 + e.backoff.max + e.node_retry_interval + Duration::from_secs(1)) * 2
    }

    fn tag(&self, index: usize) -> TagId {
        TagId(self.tag_base + index as u32)
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        let mut connected_before = false;
        let mut last_error: Option<String> = None;
        loop {
            self.heartbeat.beat();
            let attempt = tokio::select! {
                () = shutdown.cancelled() => break,
                attempt = client::connect(&self.endpoint, &self.files, &self.session_name) => attempt,
            };
            match attempt {
                Ok(connection) => {
                    if connected_before {
                        self.stats.reconnects.fetch_add(1, Relaxed);
                    }
                    connected_before = true;
                    last_error = None;
                    let established = Instant::now();
                    info!(endpoint = %self.endpoint.name, url = %self.endpoint.url, policy = self.endpoint.security_policy.name(), mode = self.endpoint.security_mode.name(), "OPC UA session established");
                    let mut connection = connection;
                    let ended = self.serve(&mut connection, &shutdown).await;
                    self.stats.online.store(false, Relaxed);
                    match ended {
                        Ended::Shutdown => {
                            connection.close().await;
                            break;
                        }
                        Ended::Lost(reason) => {
                            // A session the server ends at once (it refuses the subscription, it
                            // restarts in a loop) backs off like a failed connection.
                            if established.elapsed() < SHORT_SESSION {
                                failures += 1;
                            } else {
                                failures = 0;
                            }
                            connection.driver.abort();
                            warn!(endpoint = %self.endpoint.name, %reason, "OPC UA connection lost; reconnecting");
                            self.publish_all(Quality::Transport);
                        }
                    }
                }
                Err(error) => {
                    failures += 1;
                    self.stats.transport_errors.fetch_add(1, Relaxed);
                    let text = error.to_string();
                    // Repeating the same failure every few seconds helps nobody: log it once.
                    if last_error.as_deref() != Some(text.as_str()) {
                        if matches!(
                            error,
                            ConnectError::Untrusted { .. }
                                | ConnectError::IdentityRejected(_)
                                | ConnectError::Setup(_)
                                | ConnectError::NoMatchingEndpoint { .. }
                        ) {
                            error!(endpoint = %self.endpoint.name, url = %self.endpoint.url, error = %text, "OPC UA connection refused");
                        } else {
                            warn!(endpoint = %self.endpoint.name, url = %self.endpoint.url, error = %text, "OPC UA connection failed");
                        }
                        if failures == 1 {
                            self.publish_all(Quality::Transport);
                        }
                        last_error = Some(text);
                    }
                }
            }
            let wait = if failures == 0 {
                self.endpoint.backoff.initial
            } else {
                backoff::delay(&self.endpoint.backoff, failures, self.rng.f64())
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        self.stats.online.store(false, Relaxed);
    }

    /// `millwright read`: one session, every tag (subscribed ones too) read once through the poll
    /// path, each sample published on the bus. The tags whose NodeId cannot be resolved, with why;
    /// the connection's error when there is no session.
    pub async fn read_all_once(&self) -> Result<Vec<(usize, convert::NodeError)>, SessionLost> {
        let connection = client::connect(&self.endpoint, &self.files, "millwright read").await?;
        let namespaces = connection
            .session
            .read_namespace_array()
            .await
            .unwrap_or_default();
        let tags: Vec<usize> = (0..self.endpoint.tags.len()).collect();
        let unresolved = tags
            .iter()
            .filter_map(|&i| {
                convert::node_id(&self.endpoint.tags[i].node, |uri| namespaces.get_index(uri))
                    .err()
                    .map(|why| (i, why))
            })
            .collect();
        let mut nodes = vec![None; tags.len()];
        self.resolve_poll_nodes(&tags, &mut nodes, &namespaces);
        let polled = self.poll(&connection.session, &tags, &nodes).await;
        connection.close().await;
        polled.map(|()| unresolved)
    }

    fn publish_all(&self, quality: Quality) {
        let now = self.clock.now();
        let samples = (0..self.endpoint.tags.len())
            .map(|index| Sample {
                tag: self.tag(index),
                timestamp: now,
                server_timestamp: None,
                value: None,
                quality,
            })
            .collect();
        self.bus.publish_all(samples);
    }

    fn publish_failed(&self, index: usize, status: StatusCode) {
        self.bus
            .publish(convert::failed(self.tag(index), status, self.clock.now()));
    }

    /// Runs one session until it is lost or the agent stops.
    async fn serve(&mut self, connection: &mut Connection, shutdown: &CancellationToken) -> Ended {
        let Connection { session, driver } = connection;
        let mut subscribed = Subscribed::default();
        let subscription = match self.create_subscription(session, &subscribed.unknown).await {
            Ok(id) => id,
            Err(reason) => return Ended::Lost(reason),
        };
        self.stats.online.store(true, Relaxed);
        let mut namespaces = match session.read_namespace_array().await {
            Ok(map) => map,
            Err(e) => return Ended::Lost(failed("reading the namespace array")(e)),
        };
        let polled = self.poll_groups();
        let mut poll_nodes: Vec<Vec<Option<NodeId>>> = polled
            .iter()
            .map(|(_, tags)| tags.iter().map(|_| None).collect())
            .collect();
        if let Some(id) = subscription {
            subscribed.pending = self.subscribed_tags();
            if let Err(reason) = self
                .create_items(session, id, &namespaces, &mut subscribed)
                .await
            {
                return Ended::Lost(reason);
            }
        }
        let mut poll_due: Vec<Instant> = polled.iter().map(|_| Instant::now()).collect();
        let mut retry = tokio::time::interval_at(
            Instant::now() + self.endpoint.node_retry_interval,
            self.endpoint.node_retry_interval,
        );
        retry.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        loop {
            self.heartbeat.beat();
            tokio::select! {
                () = shutdown.cancelled() => return Ended::Shutdown,
                ended = &mut *driver => {
                    let status = ended.unwrap_or(StatusCode::BadUnexpectedError);
                    return Ended::Lost(SessionLost::Ended(client::session_end(status)));
                }
                group = next_due(&mut poll_due, &polled) => {
                    let (_, tags) = &polled[group];
                    if poll_nodes[group].iter().any(Option::is_none) {
                        self.resolve_poll_nodes(tags, &mut poll_nodes[group], &namespaces);
                    }
                    if let Err(reason) = self.poll(session, tags, &poll_nodes[group]).await {
                        return Ended::Lost(reason);
                    }
                }
                _ = retry.tick() => {
                    let unresolved_namespace = subscribed.pending.iter().any(|(_, s)| *s == StatusCode::BadNodeIdUnknown)
                        || poll_nodes.iter().flatten().any(Option::is_none);
                    if unresolved_namespace {
                        if let Ok(map) = session.read_namespace_array().await {
                            namespaces = map;
                        }
                    }
                    if let Some(id) = subscription {
                        if let Err(reason) = subscribed.recreate_unknown(session, id).await {
                            return Ended::Lost(reason);
                        }
                    }
                    if let (Some(id), false) = (subscription, subscribed.pending.is_empty()) {
                        if let Err(reason) = self.create_items(session, id, &namespaces, &mut subscribed).await {
                            return Ended::Lost(reason);
                        }
                    }
                }
                _ = beat.tick() => {}
            }
        }
    }

    /// One subscription for all subscribed tags (none when every tag is polled).
    async fn create_subscription(
        &self,
        session: &Arc<Session>,
        unknown: &Arc<Mutex<Vec<usize>>>,
    ) -> Result<Option<u32>, SessionLost> {
        let any_subscribed = self
            .endpoint
            .tags
            .iter()
            .any(|t| matches!(t.acquisition, Acquisition::Subscribe { .. }));
        if !any_subscribed {
            return Ok(None);
        }
        let publishing = self.endpoint.publishing_interval;
        // The server closes the subscription after lifetime × publishing without a publish
        // request; keep-alives every 10 publishing intervals at most.
        let keep_alive_count = 10;
        let lifetime_count = (self.endpoint.session_timeout.as_millis()
            / publishing.as_millis().max(1))
        .clamp(u128::from(keep_alive_count * 3), 100_000) as u32;
        let handler = Notifications {
            tag_base: self.tag_base,
            endpoint: self.endpoint.name.clone(),
            names: self.endpoint.tags.iter().map(|t| t.name.clone()).collect(),
            missing: HashSet::new(),
            bus: self.bus.clone(),
            stats: Arc::clone(&self.stats),
            clock: Arc::clone(&self.clock),
            unknown: Arc::clone(unknown),
        };
        session
            .create_subscription(
                publishing,
                lifetime_count,
                keep_alive_count,
                0,
                0,
                true,
                handler,
            )
            .await
            .map(Some)
            .map_err(failed("creating a subscription"))
    }

    fn subscribed_tags(&self) -> Vec<(usize, StatusCode)> {
        self.endpoint
            .tags
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(t.acquisition, Acquisition::Subscribe { .. }))
            .map(|(i, _)| (i, StatusCode::Good))
            .collect()
    }

    /// Polled tags grouped by interval, in a stable order.
    fn poll_groups(&self) -> Vec<(Duration, Vec<usize>)> {
        let mut groups: BTreeMap<Duration, Vec<usize>> = BTreeMap::new();
        for (i, tag) in self.endpoint.tags.iter().enumerate() {
            if let Acquisition::Poll { interval } = tag.acquisition {
                groups.entry(interval).or_default().push(i);
            }
        }
        groups.into_iter().collect()
    }

    /// Creates the pending monitored items in batches; what the server refuses stays pending.
    async fn create_items(
        &self,
        session: &Arc<Session>,
        subscription: u32,
        namespaces: &::opcua::types::NamespaceMap,
        subscribed: &mut Subscribed,
    ) -> Result<(), SessionLost> {
        let pending = std::mem::take(&mut subscribed.pending);
        let mut requests = Vec::with_capacity(pending.len());
        for (index, previous) in pending {
            let tag = &self.endpoint.tags[index];
            match convert::node_id(&tag.node, |uri| namespaces.get_index(uri)) {
                Ok(node) => requests.push((index, previous, self.item_request(index, node))),
                Err(reason) => {
                    if previous != StatusCode::BadNodeIdUnknown {
                        warn!(endpoint = %self.endpoint.name, tag = %tag.name, node = %tag.node, %reason, "node not available yet; retrying");
                        self.publish_failed(index, StatusCode::BadNodeIdUnknown);
                    }
                    subscribed
                        .pending
                        .push((index, StatusCode::BadNodeIdUnknown));
                }
            }
        }
        let mut created = 0usize;
        for batch in requests.chunks(self.endpoint.max_items_per_request) {
            // Thousands of items take many calls: each one is progress for the watchdog.
            self.heartbeat.beat();
            let started = Instant::now();
            self.stats.requests.fetch_add(1, Relaxed);
            let items = batch.iter().map(|(_, _, r)| r.clone()).collect();
            let results = match tokio::time::timeout(
                self.endpoint.request_timeout * 2,
                session.create_monitored_items(subscription, TimestampsToReturn::Both, items),
            )
            .await
            {
                Ok(Ok(results)) => results,
                Ok(Err(e)) => return Err(failed("creating monitored items")(e)),
                Err(_) => return Err(SessionLost::TimedOut("creating monitored items")),
            };
            self.stats.responses.fetch_add(1, Relaxed);
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.stats.latency_us_total.fetch_add(us, Relaxed);
            self.stats.latency_us_max.fetch_max(us, Relaxed);
            for ((index, previous, _), result) in batch.iter().zip(results) {
                let status = result.result.status_code;
                if status.is_good() {
                    created += 1;
                    subscribed
                        .created
                        .insert(*index, result.result.monitored_item_id);
                    if *previous != StatusCode::Good {
                        info!(endpoint = %self.endpoint.name, tag = %self.endpoint.tags[*index].name, "node available now");
                    }
                    continue;
                }
                if *previous != status {
                    let tag = &self.endpoint.tags[*index];
                    warn!(endpoint = %self.endpoint.name, tag = %tag.name, node = %tag.node, status = %status, "monitored item refused; retrying every {}", humantime::format_duration(self.endpoint.node_retry_interval));
                    self.publish_failed(*index, status);
                }
                subscribed.pending.push((*index, status));
            }
        }
        if created > 0 || !subscribed.pending.is_empty() {
            debug!(endpoint = %self.endpoint.name, created, pending = subscribed.pending.len(), "monitored items");
        }
        Ok(())
    }

    fn item_request(&self, index: usize, node: NodeId) -> MonitoredItemCreateRequest {
        let Acquisition::Subscribe {
            sampling_interval,
            queue_size,
            deadband,
        } = self.endpoint.tags[index].acquisition
        else {
            unreachable!("only subscribed tags are monitored")
        };
        let filter = match deadband {
            None => ExtensionObject::null(),
            Some(deadband) => {
                let (kind, value) = match deadband {
                    Deadband::Absolute(v) => (DeadbandType::Absolute, v),
                    Deadband::Percent(v) => (DeadbandType::Percent, v),
                };
                ExtensionObject::from_message(DataChangeFilter {
                    trigger: DataChangeTrigger::StatusValue,
                    deadband_type: kind as u32,
                    deadband_value: value,
                })
            }
        };
        MonitoredItemCreateRequest {
            item_to_monitor: read_value_id(node),
            monitoring_mode: MonitoringMode::Reporting,
            requested_parameters: MonitoringParameters {
                client_handle: index as u32 + 1,
                sampling_interval: sampling_interval.as_secs_f64() * 1000.0,
                filter,
                queue_size,
                discard_oldest: true,
            },
        }
    }

    fn resolve_poll_nodes(
        &self,
        tags: &[usize],
        nodes: &mut [Option<NodeId>],
        namespaces: &::opcua::types::NamespaceMap,
    ) {
        for (slot, &index) in nodes.iter_mut().zip(tags) {
            if slot.is_none() {
                *slot = convert::node_id(&self.endpoint.tags[index].node, |uri| {
                    namespaces.get_index(uri)
                })
                .ok();
            }
        }
    }

    /// Reads a group of polled tags in batches. A failed service call ends the session only when
    /// it is the connection that failed; a refused node is a bad sample.
    async fn poll(
        &self,
        session: &Arc<Session>,
        tags: &[usize],
        nodes: &[Option<NodeId>],
    ) -> Result<(), SessionLost> {
        let readable: Vec<(usize, ReadValueId)> = tags
            .iter()
            .zip(nodes)
            .filter_map(|(&index, node)| match node {
                Some(node) => Some((index, read_value_id(node.clone()))),
                None => {
                    self.publish_failed(index, StatusCode::BadNodeIdUnknown);
                    None
                }
            })
            .collect();
        for batch in readable.chunks(self.endpoint.max_items_per_request) {
            let ids: Vec<ReadValueId> = batch.iter().map(|(_, r)| r.clone()).collect();
            let started = Instant::now();
            let answer = tokio::time::timeout(
                self.endpoint.request_timeout,
                session.read(&ids, TimestampsToReturn::Both, 0.0),
            )
            .await;
            let latency = started.elapsed();
            let received = self.clock.now();
            match answer {
                Ok(Ok(values)) => {
                    self.stats.record(Quality::Good, latency);
                    let samples = batch.iter().zip(values);
                    self.bus.publish_all(
                        samples
                            .map(|((index, _), value)| {
                                convert::sample(self.tag(*index), value, received)
                            })
                            .collect(),
                    );
                }
                Ok(Err(e)) if is_connection_failure(e.status()) => {
                    return Err(failed("read")(e));
                }
                Ok(Err(e)) => {
                    self.stats.record(Quality::Bad(e.status().bits()), latency);
                    self.bus.publish_all(
                        batch
                            .iter()
                            .map(|(index, _)| {
                                convert::failed(self.tag(*index), e.status(), received)
                            })
                            .collect(),
                    );
                }
                Err(_) => {
                    self.stats.record(Quality::Timeout, latency);
                    self.bus.publish_all(
                        batch
                            .iter()
                            .map(|(index, _)| Sample {
                                tag: self.tag(*index),
                                timestamp: received,
                                server_timestamp: None,
                                value: None,
                                quality: Quality::Timeout,
                            })
                            .collect(),
                    );
                }
            }
        }
        Ok(())
    }
}

fn read_value_id(node_id: NodeId) -> ReadValueId {
    ReadValueId {
        node_id,
        attribute_id: AttributeId::Value as u32,
        index_range: Default::default(),
        data_encoding: QualifiedName::null(),
    }
}

/// Service results that mean the session or its channel is gone, not that a node was refused.
fn is_connection_failure(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BadConnectionClosed
            | StatusCode::BadNotConnected
            | StatusCode::BadSessionClosed
            | StatusCode::BadSessionIdInvalid
            | StatusCode::BadSecureChannelClosed
            | StatusCode::BadSecureChannelIdInvalid
            | StatusCode::BadCommunicationError
            | StatusCode::BadServerHalted
    )
}

/// Waits for the poll group that is due first and schedules its next poll; a group that fell
/// behind skips the polls it missed rather than bursting (pending forever without groups).
async fn next_due(due: &mut [Instant], groups: &[(Duration, Vec<usize>)]) -> usize {
    let Some((group, &at)) = due.iter().enumerate().min_by_key(|(_, at)| **at) else {
        return std::future::pending().await;
    };
    tokio::time::sleep_until(at).await;
    let interval = groups[group].0;
    let mut next = at + interval;
    let now = Instant::now();
    if next <= now {
        next = now + interval;
    }
    due[group] = next;
    group
}

/// The subscription's items: those still to create (with the status of their last attempt),
/// those created (tag index → monitored item id), and those whose notifications said the server
/// does not know the node.
#[derive(Default)]
struct Subscribed {
    pending: Vec<(usize, StatusCode)>,
    created: HashMap<usize, u32>,
    unknown: Arc<Mutex<Vec<usize>>>,
}

impl Subscribed {
    /// Deletes the items reported unknown so that they are created afresh.
    async fn recreate_unknown(
        &mut self,
        session: &Session,
        subscription: u32,
    ) -> Result<(), SessionLost> {
        let unknown: Vec<usize> =
            std::mem::take(&mut *self.unknown.lock().unwrap_or_else(|e| e.into_inner()));
        let ids: Vec<(usize, u32)> = unknown
            .into_iter()
            .filter_map(|index| self.created.remove(&index).map(|id| (index, id)))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let items: Vec<u32> = ids.iter().map(|(_, id)| *id).collect();
        session
            .delete_monitored_items(subscription, &items)
            .await
            .map_err(failed("deleting monitored items"))?;
        // Created again as if new: the notifications, not the creation, tell whether it exists.
        self.pending
            .extend(ids.into_iter().map(|(index, _)| (index, StatusCode::Good)));
        Ok(())
    }
}

/// The subscription's callback: data changes become samples on the bus.
struct Notifications {
    tag_base: u32,
    endpoint: String,
    /// Tag names, by index within the endpoint (for the log).
    names: Vec<String>,
    /// Items whose notifications last said the server does not know the node.
    missing: HashSet<usize>,
    bus: SampleBus,
    stats: Arc<DeviceStats>,
    clock: Arc<dyn Clock>,
    unknown: Arc<Mutex<Vec<usize>>>,
}

impl OnSubscriptionNotificationCore for Notifications {
    fn on_subscription_notification(
        &mut self,
        notification: NotificationMessage,
        _items: MonitoredItemMap<'_>,
    ) {
        let Some(data) = notification.notification_data else {
            return;
        };
        let received = self.clock.now();
        for object in data {
            // Event notifications and status changes carry no tag values.
            let Some(changes) = object.into_inner_as::<DataChangeNotification>() else {
                continue;
            };
            let mut samples = Vec::new();
            for change in changes.monitored_items.into_iter().flatten() {
                let handle = change.client_handle as usize;
                if handle == 0 || handle > self.names.len() {
                    continue;
                }
                let index = handle - 1;
                self.stats.notifications.fetch_add(1, Relaxed);
                let status = change.value.status.unwrap_or(StatusCode::Good);
                if status == StatusCode::BadNodeIdUnknown || status == StatusCode::BadNodeIdInvalid
                {
                    if self.missing.insert(index) {
                        warn!(endpoint = %self.endpoint, tag = %self.names[index], %status, "the server does not know this node; retrying");
                    }
                    self.unknown
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(index);
                } else if self.missing.remove(&index) {
                    info!(endpoint = %self.endpoint, tag = %self.names[index], "node available now");
                }
                let tag = TagId(self.tag_base + index as u32);
                samples.push(convert::sample(tag, change.value, received));
            }
            self.bus.publish_all(samples);
        }
    }
}

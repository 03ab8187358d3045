//! OPC UA acquisition (async-opcua, imported as `opcua`): sessions with the configured security,
//! subscriptions and polled reads, recovery after a lost connection, and the commissioning
//! helpers behind `millwright browse` and `millwright trust`.

pub mod browse;
pub mod client;
pub mod convert;
pub mod source;

use std::sync::Arc;

use firmware_config::Plan;

use crate::bus::SampleBus;
use crate::clock::Clock;
use crate::sources::DeviceStats;

pub use source::EndpointSource;

/// A task per OPC UA endpoint of `plan`, with each endpoint's counters.
pub fn endpoints(
    plan: &Plan,
    clock: &Arc<dyn Clock>,
    bus: &SampleBus,
) -> (Vec<EndpointSource>, Vec<(String, Arc<DeviceStats>)>) {
    let files = client::ClientFiles::of(plan);
    plan.opcua
        .iter()
        .enumerate()
        .map(|(i, endpoint)| {
            let stats = Arc::new(DeviceStats::default());
            let source = EndpointSource::new(
                endpoint.clone(),
                plan.opcua_tag_base(i) as u32,
                files.clone(),
                plan.agent.name.clone(),
                Arc::clone(clock),
                bus.clone(),
                Arc::clone(&stats),
            );
            (source, (endpoint.name.clone(), stats))
        })
        .unzip()
}

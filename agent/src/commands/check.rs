//! `millwright check`: what a valid configuration plans to do.

use std::fmt::Write as _;

use firmware_config::{Link, Table};

use crate::sources::modbus::plan;

/// What `check` prints for a valid plan: devices, tags and the planned requests per poll.
pub fn check_report(loaded: &crate::app::Loaded) -> String {
    let plan = &loaded.plan;
    let mut out = String::new();
    let total: usize = plan
        .devices
        .iter()
        .map(|d| {
            plan::plan_device(d)
                .iter()
                .flat_map(|g| &g.requests)
                .map(|r| r.reads(d.max_registers_per_request))
                .sum::<usize>()
        })
        .sum();
    let _ = writeln!(
        out,
        "ok: {} device(s), {} bus(es), {} OPC UA endpoint(s), {} tag(s), {} Modbus read request(s) per full cycle",
        plan.devices.len(),
        plan.buses.len(),
        plan.opcua.len(),
        plan.tag_count(),
        total
    );
    for endpoint in &plan.opcua {
        let subscribed = endpoint
            .tags
            .iter()
            .filter(|t| {
                matches!(
                    t.acquisition,
                    firmware_config::Acquisition::Subscribe { .. }
                )
            })
            .count();
        let identity = match &endpoint.identity {
            firmware_config::Identity::Anonymous => "anonymous".to_string(),
            firmware_config::Identity::UserName { username, .. } => format!("user {username:?}"),
            firmware_config::Identity::Certificate { certificate, .. } => {
                format!("certificate {}", certificate.display())
            }
        };
        let _ = writeln!(
            out,
            "opcua {:?} ({}, {} {}, {identity}): {} tags, {subscribed} subscribed, {} polled",
            endpoint.name,
            endpoint.url,
            endpoint.security_policy.name(),
            endpoint.security_mode.name(),
            endpoint.tags.len(),
            endpoint.tags.len() - subscribed,
        );
    }
    for device in &plan.devices {
        let link = match &device.link {
            Link::Tcp { host, port } => format!("tcp {host}:{port}"),
            Link::Rtu { bus } => format!("rtu bus {:?}", plan.buses[*bus].name),
        };
        let _ = writeln!(
            out,
            "device {:?} ({link}, unit {}, {} tags):",
            device.name,
            device.unit_id,
            device.tags.len()
        );
        for group in plan::plan_device(device) {
            let spans: Vec<String> = group
                .requests
                .iter()
                .map(|r| {
                    let reads = r.reads(device.max_registers_per_request);
                    let parts = if reads > 1 {
                        format!(" (a block, in {reads} requests)")
                    } else {
                        String::new()
                    };
                    format!(
                        "{} {}..{}{parts}",
                        short_table(r.table),
                        r.start,
                        u32::from(r.start) + u32::from(r.count) - 1
                    )
                })
                .collect();
            let reads: usize = group
                .requests
                .iter()
                .map(|r| r.reads(device.max_registers_per_request))
                .sum();
            let _ = writeln!(
                out,
                "  every {}: {reads} request(s): {}",
                humantime::format_duration(group.interval),
                spans.join(", ")
            );
        }
    }
    for asset in &plan.assets {
        let s = &asset.signals;
        let roles: Vec<String> = [
            ("vibration", s.vibration.is_some()),
            ("bearing_temperature", s.bearing_temperature.is_some()),
            ("winding_temperature", s.winding_temperature.is_some()),
            ("ambient_temperature", s.ambient_temperature.is_some()),
            ("pressure", s.pressure.is_some()),
            ("speed", s.speed.is_some()),
            ("power", s.power.is_some()),
        ]
        .into_iter()
        .filter(|(_, mapped)| *mapped)
        .map(|(role, _)| role.to_string())
        .chain((!s.currents.is_empty()).then(|| format!("{} current(s)", s.currents.len())))
        .chain(
            asset
                .waveform
                .as_ref()
                .map(|w| waveform_line(w, &asset.bearings)),
        )
        .collect();
        let model = loaded.models.for_type(&asset.kind).map_or_else(
            || "rules only".to_string(),
            |m| {
                format!(
                    "rules + model {:?} ({} inputs)",
                    m.manifest.name,
                    m.manifest.inputs.len()
                )
            },
        );
        let _ = writeln!(
            out,
            "asset {:?} ({}): {}; {model}; assessed every {}",
            asset.id,
            asset.kind,
            roles.join(", "),
            humantime::format_duration(plan.scoring.assess_interval)
        );
    }
    let alerting = &plan.alerting;
    for limits in &alerting.limits {
        let unit = limits.unit.as_deref().unwrap_or("");
        let levels: Vec<String> = limits
            .limits
            .iter()
            .map(|l| match l.kind {
                firmware_config::LimitKind::Alarm => {
                    format!("alarm when {} ({})", l.value != 0.0, l.severity.name())
                }
                kind => format!("{} {}{unit} ({})", kind.name(), l.value, l.severity.name()),
            })
            .collect();
        let discrete = limits
            .limits
            .iter()
            .all(|l| l.kind == firmware_config::LimitKind::Alarm);
        let deadband = if discrete {
            String::new()
        } else {
            format!("deadband {}{unit}, ", limits.deadband)
        };
        let off_delay = if limits.off_delay.is_zero() {
            String::new()
        } else {
            format!(
                ", off-delay {}",
                humantime::format_duration(limits.off_delay)
            )
        };
        let _ = writeln!(
            out,
            "limits on {:?}: {}; {deadband}on-delay {}{off_delay}{}",
            limits.tag,
            levels.join(", "),
            humantime::format_duration(limits.on_delay),
            if limits.latching { ", latching" } else { "" }
        );
    }
    for (index, output) in alerting.outputs.iter().enumerate() {
        let shows: Vec<String> = alerting
            .indications
            .iter()
            .filter(|i| i.output == index)
            .map(|i| {
                let severities: Vec<&str> = i.severities.iter().map(|s| s.name()).collect();
                format!(
                    "{} when {} {:?}",
                    i.pattern.name(),
                    if severities.is_empty() {
                        "any".to_string()
                    } else {
                        severities.join("/")
                    },
                    i.state
                )
            })
            .collect();
        if let Some(station) = plan
            .quality
            .iter()
            .find(|s| s.divert.is_some_and(|d| d.output == index))
        {
            let _ = writeln!(
                out,
                "output {:?} ({}): divert output of quality station {:?}; off otherwise and on shutdown",
                output.name,
                crate::outputs::describe(&output.target, &plan.devices),
                station.name
            );
            continue;
        }
        let _ = writeln!(
            out,
            "output {:?} ({}): {}; otherwise {}, {} on shutdown",
            output.name,
            crate::outputs::describe(&output.target, &plan.devices),
            if shows.is_empty() {
                "no indications".to_string()
            } else {
                shows.join(", then ")
            },
            output.idle.name(),
            output.on_shutdown.name()
        );
    }
    if let Some((tag, _)) = &alerting.acknowledge_tag {
        let _ = writeln!(
            out,
            "acknowledge input: tag {tag:?} (rising edge acknowledges all)"
        );
    }
    if let Some(mqtt) = &plan.mqtt {
        let auth = match (&mqtt.username, &mqtt.client_auth) {
            (Some(user), Some(_)) => format!("user {user:?} + client certificate"),
            (Some(user), None) => format!("user {user:?}"),
            (None, Some(_)) => "client certificate".to_string(),
            (None, None) => "anonymous".to_string(),
        };
        let formats = match (mqtt.formats.uns, &mqtt.formats.sparkplug) {
            (true, None) => format!("UNS JSON, topics under {}/", mqtt.topic_prefix),
            (true, Some(_)) => format!("UNS JSON under {}/ and Sparkplug B", mqtt.topic_prefix),
            (false, _) => "Sparkplug B".to_string(),
        };
        let _ = writeln!(
            out,
            "uplink: {}://{}:{} as {:?} ({auth}), {formats}",
            if mqtt.tls { "mqtts" } else { "mqtt" },
            mqtt.host,
            mqtt.port,
            mqtt.client_id,
        );
        if let Some(node) = &mqtt.formats.sparkplug {
            out.push_str(&sparkplug_plan(plan, node));
        }
        let _ = writeln!(
            out,
            "outbox: {} (at most {} MiB, flushed every {}, summaries every {})",
            plan.outbox.dir.display(),
            plan.outbox.max_bytes >> 20,
            humantime::format_duration(plan.outbox.flush_interval),
            humantime::format_duration(plan.outbox.summary_interval)
        );
    }
    out
}

/// The Sparkplug edge node's plan: its topics, devices, metrics, host and writes.
fn sparkplug_plan(plan: &firmware_config::Plan, node: &firmware_config::Sparkplug) -> String {
    let catalog = crate::uplink::encode::sparkplug::catalog::Catalog::new(plan, node);
    let devices: Vec<&str> = catalog.devices.iter().map(|d| d.name.as_str()).collect();
    let host = match &node.primary_host {
        Some(host) => format!("births wait for primary host {host:?} (spBv1.0/STATE/{host})"),
        None => "no primary host (births at once)".to_string(),
    };
    let mut writable: Vec<&String> = node.writable.iter().collect();
    writable.sort();
    let writes = if writable.is_empty() {
        "no DCMD writes".to_string()
    } else {
        format!("DCMD may write {writable:?}")
    };
    format!(
        "sparkplug: edge node spBv1.0/{}/…/{}; {} device(s) {devices:?}, {} metric(s) with aliases 0..{}; {host}; DDATA at most every {} per device, deadband {}; {writes}\n",
        node.group_id,
        node.edge_node,
        devices.len(),
        catalog.metrics.len(),
        catalog.metrics.len().saturating_sub(1),
        humantime::format_duration(node.data_interval),
        node.deadband,
    )
}

/// Each production line's plan: its tags by role, its states, and its shifts for the coming week
/// from `now` (local times in the line's zone, with their length: a shift across a DST change
/// shows it).
pub fn lines_report(plan: &firmware_config::Plan, now: std::time::SystemTime) -> String {
    let mut out = String::new();
    let names = tag_names(plan);
    let name = |tag: u32| names.get(tag as usize).copied().unwrap_or("?");
    for line in &plan.lines {
        let state = match &line.state {
            firmware_config::StateSource::Tag { tag, map, other } => {
                let states: Vec<String> = map
                    .iter()
                    .map(|(v, s)| format!("{v}={}", s.name()))
                    .collect();
                let rest = other.map_or(String::new(), |o| format!(", others={}", o.name()));
                format!("state {:?} ({}{rest})", name(*tag), states.join(", "))
            }
            firmware_config::StateSource::Flags {
                running,
                fault,
                planned,
            } => {
                let flag = |label: &str, tag: &Option<u32>| {
                    tag.map_or(String::new(), |t| format!(", {label} {:?}", name(t)))
                };
                format!(
                    "running {:?}{}{}",
                    name(*running),
                    flag("fault", fault),
                    flag("planned", planned)
                )
            }
        };
        let counters: Vec<String> = [
            ("total", line.total),
            ("good", line.good),
            ("reject", line.reject),
        ]
        .into_iter()
        .filter_map(|(role, c)| {
            let c = c?;
            let wrap = match (c.max, c.reset) {
                (Some(max), true) => format!("rolls over after {max}, may reset"),
                (Some(max), false) => format!("rolls over after {max}"),
                (None, true) => "may reset".to_string(),
                (None, false) => "never goes back".to_string(),
            };
            Some(format!("{role} {:?} ({wrap})", name(c.tag)))
        })
        .collect();
        let mut extras = Vec::new();
        if let Some((tag, codes)) = &line.reason {
            extras.push(format!("reason {:?} ({} codes)", name(*tag), codes.len()));
        }
        if let Some((tag, cycles)) = &line.product {
            extras.push(format!(
                "product {:?} ({} with their own cycle)",
                name(*tag),
                cycles.len()
            ));
        }
        match line.energy {
            Some(firmware_config::Energy::Counter(c)) => {
                extras.push(format!("energy {:?} (kWh counter)", name(c.tag)))
            }
            Some(firmware_config::Energy::Power(tag)) => {
                extras.push(format!("energy {:?} (kW, integrated)", name(tag)))
            }
            None => {}
        }
        for m in &line.materials {
            extras.push(format!(
                "material {} {:?} ({})",
                m.name,
                name(m.counter.tag),
                m.unit
            ));
        }
        let ids = crate::production::line::alert_ids(line);
        if !ids.is_empty() {
            extras.push(format!("alerts {}", ids.join(", ")));
        }
        let extras = if extras.is_empty() {
            String::new()
        } else {
            format!("; {}", extras.join(", "))
        };
        let _ = writeln!(
            out,
            "line {:?}: {state}; {}{extras}; ideal cycle {}; micro-stops under {}, debounce {}, report every {}",
            line.name,
            counters.join(", "),
            humantime::format_duration(line.ideal_cycle),
            humantime::format_duration(line.micro_stop),
            humantime::format_duration(line.debounce),
            humantime::format_duration(line.report_interval),
        );
        let Ok(from) = jiff::Timestamp::try_from(now) else {
            continue;
        };
        let week = from
            .checked_add(jiff::SignedDuration::from_hours(24 * 7))
            .unwrap_or(from);
        let zone = &line.calendar.zone;
        for shift in line.calendar.instances(from, week) {
            let local = |t: jiff::Timestamp| {
                t.to_zoned(zone.clone())
                    .strftime("%a %Y-%m-%d %H:%M %Z")
                    .to_string()
            };
            let hours = shift.end.duration_since(shift.start).as_secs_f64() / 3600.0;
            let _ = writeln!(
                out,
                "  shift {:?}: {} → {} ({hours:.1} h, {} break(s))",
                shift.name,
                local(shift.start),
                local(shift.end),
                shift.breaks.len()
            );
        }
    }
    out
}

/// Each quality station's plan: its trigger, characteristics with their spec, chart, limits and
/// rules, its thresholds, divert output and alerts.
pub fn quality_report(plan: &firmware_config::Plan) -> String {
    use firmware_config::quality::Trigger;
    let mut out = String::new();
    let names = tag_names(plan);
    let name = |tag: u32| names.get(tag as usize).copied().unwrap_or("?");
    for station in &plan.quality {
        let trigger = match station.trigger {
            Trigger::Counter(tag) => format!("a part per increment of {:?}", name(tag)),
            Trigger::PartDone(tag) => format!("a part per rising edge of {:?}", name(tag)),
        };
        let id = station
            .part_id
            .map_or(String::new(), |t| format!(", part id {:?}", name(t)));
        let line = station.line.as_ref().map_or(String::new(), |(l, _)| {
            format!(" on line {l:?} (reports per shift)")
        });
        let divert = station.divert.map_or("no divert output".to_string(), |d| {
            format!(
                "divert {:?} for {} per {}",
                plan.alerting.outputs[d.output].name,
                humantime::format_duration(d.pulse),
                if d.review {
                    "review or reject"
                } else {
                    "reject"
                }
            )
        });
        let _ = writeln!(
            out,
            "quality {:?}{line}: {trigger}{id}, read {} after it; review above {}, reject above {}; {divert}; report every {}",
            station.name,
            humantime::format_duration(station.settle),
            station.review_above,
            station.reject_above,
            humantime::format_duration(station.report_interval),
        );
        for c in &station.characteristics {
            let unit = c.unit.as_deref().unwrap_or("");
            let bound = |x: Option<f64>| x.map_or("—".to_string(), |x| format!("{x}{unit}"));
            let limits = c.limits.map_or(
                format!("limits learned from {} subgroup(s)", c.baseline),
                |l| {
                    format!(
                        "limits given: centre {}{unit}, σ {}{unit}",
                        l.center, l.sigma
                    )
                },
            );
            let rules: Vec<String> = c.rules.iter().map(|r| r.label()).collect();
            let _ = writeln!(
                out,
                "  {} {:?}: spec {} .. {} (target {}), {} chart (subgroup {}), {limits}{}",
                c.name,
                name(c.tag),
                bound(c.lsl),
                bound(c.usl),
                bound(c.target),
                c.chart.name(),
                c.chart.subgroup(),
                if rules.is_empty() {
                    String::new()
                } else {
                    format!(", rules {}", rules.join(", "))
                }
            );
        }
        if let Some(images) = &station.images {
            let _ = writeln!(
                out,
                "  camera images from {} (linked by {}, waited for {}, looked for every {}, kept {} days), scored by {}",
                images.folder.display(),
                match images.link {
                    firmware_config::quality::ImageLink::PartId => "part id in the file name",
                    firmware_config::quality::ImageLink::Arrival => "order of arrival",
                    firmware_config::quality::ImageLink::Time => "the time it was written",
                },
                humantime::format_duration(images.wait),
                humantime::format_duration(images.poll),
                images.keep.as_secs() / 86_400,
                images.model.display()
            );
        }
        if let Some(model) = &station.model {
            let _ = writeln!(
                out,
                "  defect model {} (the higher of its score and the spec limits' counts)",
                model.display()
            );
        }
        let ids = station.alert_ids();
        if !ids.is_empty() {
            let _ = writeln!(out, "  alerts {}", ids.join(", "));
        }
    }
    out
}

/// Every tag's name, in `TagId` order.
fn tag_names(plan: &firmware_config::Plan) -> Vec<&str> {
    plan.sources()
        .into_iter()
        .flat_map(|s| s.tags.into_iter().map(|(name, _)| name))
        .collect()
}

fn short_table(table: Table) -> &'static str {
    match table {
        Table::Coil => "coils",
        Table::DiscreteInput => "discrete",
        Table::InputRegister => "input",
        Table::HoldingRegister => "holding",
    }
}

/// `waveform at 25600 Hz (up to 65536 samples), bearing DE: BPFO 3.59×, BPFI 5.41×, …`
fn waveform_line(w: &firmware_config::Waveform, bearings: &[firmware_config::Bearing]) -> String {
    let from = match &w.source {
        firmware_config::WaveformSource::Tag(_) => String::new(),
        firmware_config::WaveformSource::Folder { path, .. } => {
            format!(" from recordings in {}", path.display())
        }
        firmware_config::WaveformSource::Iio(iio) => format!(
            " captured from IIO {} {} every {}",
            iio.device,
            iio.channel,
            humantime::format_duration(iio.every)
        ),
    };
    let rate = if w.sample_rate_tag.is_some() {
        " (nominal; each waveform's from sample_rate_tag)"
    } else {
        ""
    };
    let mut line = format!(
        "waveform at {} Hz{rate} (up to {} samples){from}",
        w.sample_rate, w.max_samples
    );
    for b in bearings {
        let f = b.factors;
        let _ = write!(
            line,
            ", bearing {}: BPFO {:.2}×, BPFI {:.2}×, BSF {:.2}×, FTF {:.3}×",
            b.name, f.bpfo, f.bpfi, f.bsf, f.ftf
        );
    }
    line
}

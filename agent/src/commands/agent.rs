//! Asking the running agent (`alerts`, `ack`, `shelve`, `outbox`) through its control socket.

use crate::clock::Clock;

/// Sends an alert command (`ack-alert`, `shelve-alert`, `unshelve-alert`, `status`) to the running
/// agent and returns its reply's result.
pub async fn ask_running_agent(
    plan: &firmware_config::Plan,
    command: &str,
    args: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let socket = crate::control::socket_path(&plan.agent.data_dir);
    let reply = crate::control::request(&socket, command, args)
        .await
        .ok_or_else(|| anyhow::anyhow!("no agent answers on {} (is `millwright run` running with this configuration, and may this user open the socket?)", socket.display()))?;
    if reply["ok"] == true {
        Ok(reply["result"].clone())
    } else {
        anyhow::bail!("{}", reply["error"].as_str().unwrap_or("the agent refused"))
    }
}

/// The alerts as `millwright alerts` lists them.
pub fn format_alerts(alerts: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let list = alerts.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        return "no alerts\n".into();
    }
    let mut out = String::new();
    for alert in list {
        let text = |key: &str| alert[key].as_str().unwrap_or("").to_string();
        let shelved = alert["shelved_until"]
            .as_str()
            .map(|until| format!(" (shelved until {until})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<32} {:<8} {:<22} since {}{shelved}\n    {}",
            text("alert_id"),
            text("severity"),
            text("state"),
            text("raised"),
            text("reason")
        );
    }
    out
}

/// What `millwright outbox` does besides showing the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxAction {
    Show,
    /// List the dead letters with their reasons.
    DeadLetters,
    /// Append every dead letter to its stream again (after the cause was fixed).
    RetryDeadLetters,
    /// Remove every dead letter.
    DropDeadLetters,
}

impl OutboxAction {
    /// The control command that does it.
    fn command(self) -> &'static str {
        match self {
            OutboxAction::Show => "status",
            OutboxAction::DeadLetters => "dead-letters",
            OutboxAction::RetryDeadLetters => "retry-dead-letters",
            OutboxAction::DropDeadLetters => "drop-dead-letters",
        }
    }
}

/// What `millwright outbox` prints: asked of the running agent through its control socket, or done
/// on the store itself when no agent runs (showing changes nothing; retrying or dropping dead
/// letters changes only them).
pub async fn outbox_report(
    plan: &firmware_config::Plan,
    action: OutboxAction,
    clock: &dyn Clock,
) -> anyhow::Result<String> {
    use crate::store::sled_store::{OpenError, SledStore};
    use crate::store::{Outbox, OutboxStats};

    let dir = &plan.outbox.dir;
    let socket = crate::control::socket_path(&plan.agent.data_dir);
    let now = clock.now();
    if let Some(reply) =
        crate::control::request(&socket, action.command(), serde_json::json!({})).await
    {
        let result = &reply["result"];
        match action {
            OutboxAction::Show => {
                if let Ok(stats) = serde_json::from_value::<OutboxStats>(result["outbox"].clone()) {
                    let mut shown = format_outbox(dir, &stats, "the running agent", now);
                    if let Ok(storage) = serde_json::from_value(result["storage"].clone()) {
                        shown.push_str(&format_storage(&storage));
                    }
                    return Ok(shown);
                }
            }
            _ if reply["ok"] == true => return Ok(format_dead_letter_result(action, result)),
            _ => anyhow::bail!(
                "the running agent refused: {}",
                reply["error"].as_str().unwrap_or("no reason given")
            ),
        }
    }
    if !dir.exists() {
        anyhow::bail!(
            "no outbox at {} (the agent has not run with [mqtt] and this data_dir yet)",
            dir.display()
        );
    }
    let store = SledStore::open(dir).map_err(|e| match e {
        OpenError::Locked(_) => anyhow::anyhow!(
            "{e}; it does not answer on {}, so it may be starting or stuck",
            socket.display()
        ),
        other => other.into(),
    })?;
    let outbox = Outbox::new(Box::new(store), plan.outbox.max_bytes)?;
    if action == OutboxAction::Show {
        return Ok(format_outbox(
            dir,
            &outbox.stats(),
            "the store (no agent running)",
            now,
        ));
    }
    let result = crate::control::dead_letter_command(&outbox, action.command())
        .map_err(anyhow::Error::msg)?;
    outbox.flush()?;
    Ok(format_dead_letter_result(action, &result))
}

fn format_dead_letter_result(action: OutboxAction, result: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    match action {
        OutboxAction::RetryDeadLetters => format!(
            "{} dead letter(s) appended to their streams again\n",
            result["retried"]
        ),
        OutboxAction::DropDeadLetters => {
            format!("{} dead letter(s) dropped\n", result["dropped"])
        }
        _ => {
            let stats = &result["stats"];
            let mut out =
                format!(
                "dead letters: {} kept ({} bytes of at most {}), {} ever, {} dropped for room\n",
                stats["depth"], stats["bytes"], stats["max_bytes"], stats["total"], stats["dropped"]
            );
            for letter in result["dead_letters"].as_array().into_iter().flatten() {
                let text = |key: &str| letter[key].as_str().unwrap_or("").to_string();
                let _ = writeln!(
                    out,
                    "  #{} {} {} on {:?} ({} bytes), made {}, moved {}: {}",
                    letter["id"],
                    text("class"),
                    text("kind"),
                    text("topic"),
                    letter["bytes"],
                    text("created"),
                    text("buried"),
                    text("reason")
                );
            }
            out
        }
    }
}

/// The agent's writes to storage, for people who count flash wear.
fn format_storage(storage: &crate::status::StorageStatus) -> String {
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    match storage.bytes_per_day {
        Some(per_day) => format!(
            "  written to storage by the agent: {:.1} MiB since it started, {:.0} MiB/day at this rate\n",
            mib(storage.bytes_written),
            mib(per_day)
        ),
        None => format!(
            "  written to storage by the agent: {:.1} MiB since it started\n",
            mib(storage.bytes_written)
        ),
    }
}

fn format_outbox(
    dir: &std::path::Path,
    stats: &crate::store::OutboxStats,
    source: &str,
    now: std::time::SystemTime,
) -> String {
    use crate::store::Class;
    use std::fmt::Write as _;

    let kib = |bytes: u64| match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1048576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1048576.0),
    };
    let mut out = String::new();
    let _ = writeln!(out, "outbox {} (from {source})", dir.display());
    let _ = writeln!(
        out,
        "  {:<10} {:>10} {:>12} {:>10}",
        "class", "queued", "size", "dropped"
    );
    for class in Class::ALL {
        let c = stats.class(class);
        let _ = writeln!(
            out,
            "  {:<10} {:>10} {:>12} {:>10}",
            class.name(),
            c.depth,
            kib(c.bytes),
            c.dropped
        );
    }
    let used = 100.0 * stats.bytes as f64 / stats.max_bytes.max(1) as f64;
    let _ = writeln!(
        out,
        "  total      {:>10} {:>12} {:>10}   ({used:.1} % of {}; {} on disk)",
        stats.depth(),
        kib(stats.bytes),
        stats.dropped(),
        kib(stats.max_bytes),
        kib(stats.size_on_disk)
    );
    match &stats.oldest {
        Some(oldest) => {
            let age = humantime::parse_rfc3339(oldest)
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .map(|d| {
                    humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
                        .to_string()
                })
                .unwrap_or_else(|| "?".into());
            let _ = writeln!(out, "  oldest record {oldest} ({age} old)");
        }
        None => {
            let _ = writeln!(out, "  empty: everything was delivered");
        }
    }
    let _ = writeln!(
        out,
        "  last id {}; corrupt records removed {}; store errors {}",
        stats.last_id, stats.corrupt, stats.store_errors
    );
    let dead = &stats.dead_letters;
    if dead.depth > 0 || dead.total > 0 {
        let _ = writeln!(
            out,
            "  dead letters {} ({}; {} ever, {} dropped for room){}",
            dead.depth,
            kib(dead.bytes),
            dead.total,
            dead.dropped,
            match (&dead.last_reason, &dead.last_at) {
                (Some(reason), Some(at)) => format!("; last at {at}: {reason}"),
                _ => String::new(),
            }
        );
        if dead.depth > 0 {
            let _ = writeln!(
                out,
                "  see them with --dead-letters; --retry-dead-letters once the cause is fixed, or --drop-dead-letters"
            );
        }
    }
    out
}

/// `millwright quality relearn <station>/<characteristic>`: through the running agent, or in the
/// saved limits file when none answers.
pub async fn relearn(plan: &firmware_config::Plan, which: &str) -> anyhow::Result<String> {
    let Some((station, name)) = which.split_once('/') else {
        anyhow::bail!("give the characteristic as <station>/<characteristic>, e.g. gauge-1/bore");
    };
    let Some(config) = plan.quality.iter().find(|s| s.name == station) else {
        anyhow::bail!("no quality station {station:?} in {}", plan.file.display());
    };
    let Some(c) = config.characteristics.iter().find(|c| c.name == name) else {
        anyhow::bail!("station {station:?} has no characteristic {name:?}");
    };
    if c.limits.is_some() {
        anyhow::bail!("{which} has its limits given in the configuration; change them there");
    }
    let socket = crate::control::socket_path(&plan.agent.data_dir);
    let args = serde_json::json!({ "station": station, "characteristic": name });
    match crate::control::request(&socket, "quality-relearn", args).await {
        Some(reply) if reply["ok"] == true => Ok(format!(
            "{}\n",
            reply["result"]["message"].as_str().unwrap_or("relearning")
        )),
        Some(reply) => anyhow::bail!("{}", reply["error"].as_str().unwrap_or("the agent refused")),
        None => {
            let forgot = crate::quality::forget_saved(&plan.agent.data_dir, station, name)?;
            Ok(if forgot {
                format!("no agent runs: {which}'s saved limits are removed; they are learned again at the next start\n")
            } else {
                format!("no agent runs, and {which} has no saved limits: they are learned at the next start anyway\n")
            })
        }
    }
}

//! The agent's commands (`status`, `ack-alert`, `shelve-alert`, `unshelve-alert`) and the local
//! control socket that serves them to the CLI on the gateway (`millwright outbox`, `millwright
//! ack`, `millwright shelve`), beside the MQTT command topic. The socket runs with or without
//! `[mqtt]`.
//!
//! The socket speaks one JSON line each way: `{"command": "status", ...arguments}` in, the same
//! reply document the MQTT command topic gets out.
//!
//! Who may use it: root, the user the agent runs as and members of its group — and nobody else,
//! whatever the umask or the data directory's mode. The socket is made 0660 (so the group can,
//! under the package's `UMask=0027` too), and each peer's credentials are checked against the
//! socket's owner and group before a command is read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::decisions::alerts::{Acknowledged, AlertDesk};
use crate::status::{Board, Status};
use crate::store::Outbox;
use crate::uplink::{
    answer, Answer, CommandError, CommandHandler, Identity, Refusing, UplinkStats,
};

/// The commands every agent answers.
pub const COMMANDS: [&str; 9] = [
    "status",
    "ack-alert",
    "shelve-alert",
    "unshelve-alert",
    "dead-letters",
    "retry-dead-letters",
    "drop-dead-letters",
    "quality-relearn",
    "spectrum",
];

/// Dead letters listed by one `dead-letters` command.
const DEAD_LETTERS_LISTED: usize = 100;

/// Socket file name inside the data directory.
pub const SOCKET: &str = "control.sock";

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// Longest request line accepted on the socket.
const MAX_REQUEST: u64 = 64 * 1024;

pub struct AgentCommands {
    pub identity: std::sync::Mutex<Identity>,
    pub clock: Arc<dyn Clock>,
    /// [`Clock::elapsed`] when the agent started.
    pub started: Duration,
    /// The outbox and the uplink's counters, when `[mqtt]` is set.
    pub upstream: Option<(Arc<Outbox>, Arc<UplinkStats>)>,
    /// Where alert requests go to the decisions stage, which owns the alerts.
    pub alerts: std::sync::Mutex<AlertDesk>,
    /// What the running configuration's stages show.
    pub board: std::sync::Mutex<Board>,
    /// Where relearning requests go to the quality stage of the running configuration.
    pub quality: std::sync::Mutex<Option<crate::quality::Desk>>,
}

fn text<'a>(args: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    args.get(key).and_then(|v| v.as_str())
}

fn alert_id<'a>(args: &'a serde_json::Value, command: &str) -> Result<&'a str, CommandError> {
    text(args, "alert_id").ok_or_else(|| {
        CommandError::Arguments(format!(
            "{command} needs {{\"alert_id\": \"<id>\"}} (see `status` for the alerts present)"
        ))
    })
}

/// What one configuration generation gives the commands.
pub struct Attached {
    pub identity: Identity,
    pub alerts: AlertDesk,
    pub quality: crate::quality::Desk,
    pub board: Board,
}

impl AgentCommands {
    /// Commands with nothing attached yet: no devices, no alerts.
    pub fn new(
        identity: Identity,
        clock: Arc<dyn Clock>,
        upstream: Option<(Arc<Outbox>, Arc<UplinkStats>)>,
        alerts: AlertDesk,
    ) -> AgentCommands {
        AgentCommands {
            identity: std::sync::Mutex::new(identity),
            started: clock.elapsed(),
            clock,
            upstream,
            alerts: std::sync::Mutex::new(alerts),
            board: std::sync::Mutex::new(Board::default()),
            quality: std::sync::Mutex::new(None),
        }
    }

    /// Commands for one pipeline without an uplink (the demo, benchmarks): its stages attached.
    pub fn of_pipeline(
        loaded: &crate::app::Loaded,
        clock: Arc<dyn Clock>,
        alerts: AlertDesk,
        pipeline: &crate::pipeline::Pipeline,
    ) -> Arc<AgentCommands> {
        let identity = crate::app::identity(loaded);
        let commands = AgentCommands::new(identity.clone(), clock, None, alerts.clone());
        commands.attach(Attached {
            identity,
            alerts,
            quality: pipeline.quality.clone(),
            board: pipeline.board.clone(),
        });
        Arc::new(commands)
    }

    /// Points the commands at a (new) configuration's stages.
    pub fn attach(&self, generation: Attached) {
        fn set<T>(slot: &std::sync::Mutex<T>, value: T) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = value;
        }
        set(&self.quality, Some(generation.quality));
        set(&self.board, generation.board);
        set(&self.identity, generation.identity);
        set(&self.alerts, generation.alerts);
    }

    pub fn status(&self) -> Status {
        let board = self.board.lock().unwrap_or_else(|e| e.into_inner()).read();
        let uptime = self.clock.elapsed().saturating_sub(self.started);
        let identity = self
            .identity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Status {
            schema: crate::status::SCHEMA,
            agent: identity.agent,
            version: identity.version,
            config_hash: identity.config_hash,
            uptime_s: uptime.as_secs(),
            time: crate::uplink::timestamp(self.clock.now()),
            devices: board.devices,
            samples: board.samples,
            assets: board.assets,
            alerts: self.desk().snapshot(),
            lines: board.lines,
            quality: board.quality,
            outbox: self.upstream.as_ref().map(|(outbox, _)| outbox.stats()),
            uplink: self.upstream.as_ref().map(|(_, uplink)| uplink.snapshot()),
            storage: crate::status::StorageStatus::of_this_process(uptime),
            process: crate::status::ProcessStatus::of_this_process(),
        }
    }
}

impl CommandHandler for AgentCommands {
    fn handle<'a>(&'a self, name: &'a str, args: &'a serde_json::Value) -> Answer<'a> {
        Box::pin(async move {
            match name {
                "status" => serde_json::to_value(self.status())
                    .map_err(|e| CommandError::Refused(e.to_string())),
                "ack-alert" | "shelve-alert" | "unshelve-alert" => {
                    self.alert_command(name, args).await
                }
                "quality-relearn" => self.relearn(args).await,
                "spectrum" => self.spectrum(args),
                "dead-letters" | "retry-dead-letters" | "drop-dead-letters" => {
                    let (outbox, _) = self.upstream.as_ref().ok_or_else(|| {
                        CommandError::Refused("there is no outbox: [mqtt] is not configured".into())
                    })?;
                    dead_letter_command(outbox, name)
                }
                other => Err(CommandError::Unknown {
                    name: other.into(),
                    known: COMMANDS.join(", "),
                }),
            }
        })
    }
}

impl AgentCommands {
    /// The latest spectra of one asset: `{"asset": "<id>", "envelope_max_hz": <Hz>}` (the
    /// envelope spectrum is cut at 1 kHz unless asked otherwise: the defect lines and their
    /// harmonics sit below it on most machines).
    fn spectrum(&self, args: &serde_json::Value) -> Result<serde_json::Value, CommandError> {
        let book = self
            .board
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spectra
            .clone();
        let known = || {
            let assets = book.assets();
            if assets.is_empty() {
                "no asset has had a waveform analysed yet".to_string()
            } else {
                format!("assets with spectra: {}", assets.join(", "))
            }
        };
        let asset = text(args, "asset").ok_or_else(|| {
            CommandError::Arguments(format!(
                "spectrum needs {{\"asset\": \"<id>\"}} ({})",
                known()
            ))
        })?;
        let envelope_max_hz = args
            .get("envelope_max_hz")
            .and_then(serde_json::Value::as_f64)
            .filter(|hz| hz.is_finite() && *hz > 0.0)
            .unwrap_or(1000.0);
        let latest = book.get(asset).ok_or_else(|| {
            CommandError::Refused(format!("no spectrum for asset {asset:?} ({})", known()))
        })?;
        Ok(latest.to_json(asset, envelope_max_hz))
    }

    async fn relearn(&self, args: &serde_json::Value) -> Result<serde_json::Value, CommandError> {
        let (Some(station), Some(characteristic)) =
            (text(args, "station"), text(args, "characteristic"))
        else {
            return Err(CommandError::Arguments(
                "quality-relearn needs {\"station\": \"<name>\", \"characteristic\": \"<name>\"}"
                    .into(),
            ));
        };
        let desk = self
            .quality
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| CommandError::Refused("no quality stage runs".into()))?;
        let message = desk
            .relearn(station, characteristic)
            .await
            .map_err(CommandError::Refused)?;
        Ok(json!({ "message": message }))
    }

    fn desk(&self) -> AlertDesk {
        self.alerts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn alert_command(
        &self,
        name: &str,
        args: &serde_json::Value,
    ) -> Result<serde_json::Value, CommandError> {
        let by = text(args, "by").unwrap_or("mqtt");
        match name {
            "ack-alert" => {
                let all = args.get("all").and_then(|v| v.as_bool()) == Some(true);
                let id = if all {
                    None
                } else {
                    Some(alert_id(args, name)?)
                };
                Ok(match self.desk().acknowledge(id, by).await? {
                    Acknowledged::All(count) => json!({ "acknowledged": count }),
                    Acknowledged::One(alert) => {
                        json!({ "alert_id": alert.id, "acknowledged_by": by })
                    }
                })
            }
            "shelve-alert" => {
                let id = alert_id(args, name)?;
                let duration = text(args, "duration")
                    .ok_or("shelve-alert needs a duration, such as {\"duration\": \"2h\"}")
                    .and_then(|d| {
                        humantime::parse_duration(d)
                            .map_err(|_| "duration is not a duration such as \"30m\" or \"2h\"")
                    })
                    .map_err(|why| CommandError::Arguments(why.into()))?;
                let alert = self.desk().shelve(id, duration, by).await?;
                Ok(json!({
                    "alert_id": alert.id,
                    "shelved_until": alert.shelved_until.map(crate::uplink::timestamp),
                }))
            }
            _ => {
                let alert = self.desk().unshelve(alert_id(args, name)?, by).await?;
                Ok(json!({ "alert_id": alert.id, "shelved_until": null }))
            }
        }
    }
}

/// Lists, retries or drops the outbox's dead letters.
pub fn dead_letter_command(outbox: &Outbox, name: &str) -> Result<serde_json::Value, CommandError> {
    match name {
        "retry-dead-letters" => {
            let retried = outbox.retry_dead_letters()?;
            Ok(json!({ "retried": retried }))
        }
        "drop-dead-letters" => {
            let dropped = outbox.drop_dead_letters()?;
            Ok(json!({ "dropped": dropped }))
        }
        _ => {
            let letters = outbox.dead_letters(DEAD_LETTERS_LISTED)?;
            Ok(json!({
                "stats": outbox.stats().dead_letters,
                "dead_letters": letters.iter().map(crate::store::DeadLetter::describe).collect::<Vec<_>>(),
            }))
        }
    }
}

/// Who may talk to the socket: root, its owner (the agent's user) and its group's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub owner: u32,
    pub group: u32,
}

impl Admission {
    /// The socket's owner and group, as the agent created it.
    fn of(path: &Path) -> std::io::Result<Admission> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok(Admission {
            owner: meta.uid(),
            group: meta.gid(),
        })
    }

    /// Whether the peer `uid`/`gid` may send commands. Group membership is the peer's primary
    /// group or its user's entry in the group database; `databases` gives the passwd(5) and
    /// group(5) texts and is only read when the ids alone do not admit the peer.
    pub fn admits(&self, uid: u32, gid: u32, databases: impl FnOnce() -> (String, String)) -> bool {
        if uid == 0 || uid == self.owner || gid == self.group {
            return true;
        }
        let (passwd, group) = databases();
        user_name(&passwd, uid)
            .is_some_and(|name| group_members(&group, self.group).any(|m| m == name))
    }
}

/// The name of `uid` in passwd(5) text.
fn user_name(passwd: &str, uid: u32) -> Option<&str> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == uid).then_some(name)
    })
}

/// The members listed for `gid` in group(5) text.
fn group_members(group: &str, gid: u32) -> impl Iterator<Item = &str> {
    group
        .lines()
        .filter(move |line| line.split(':').nth(2).and_then(|g| g.parse::<u32>().ok()) == Some(gid))
        .flat_map(|line| line.split(':').nth(3).unwrap_or("").split(','))
        .filter(|m| !m.is_empty())
}

/// Serves the socket until `stop`. A stale socket file from a crashed agent is replaced.
pub async fn serve(
    path: PathBuf,
    handler: Arc<dyn CommandHandler>,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(listener) => listener,
        Err(error) => {
            warn!(path = %path.display(), %error, "cannot open the control socket; `millwright outbox` will read the store directly");
            return;
        }
    };
    let admission = match crate::files::set_mode(&path, crate::files::SOCKET_MODE)
        .and_then(|()| Admission::of(&path))
    {
        Ok(admission) => admission,
        Err(error) => {
            warn!(path = %path.display(), %error, "cannot set the control socket's mode; closing it");
            let _ = std::fs::remove_file(&path);
            return;
        }
    };
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    debug!(%error, "control socket accept failed");
                    continue;
                }
            },
        };
        let handler = Arc::clone(&handler);
        let admission = admission.clone();
        let clock = Arc::clone(&clock);
        tokio::spawn(async move {
            let conversation = converse(stream, handler, admission, clock);
            let _ = tokio::time::timeout(Duration::from_secs(5), conversation).await;
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn converse(
    stream: UnixStream,
    handler: Arc<dyn CommandHandler>,
    admission: Admission,
    clock: Arc<dyn Clock>,
) -> std::io::Result<()> {
    let peer = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    // Read the request even from a stranger: closing on unread data would reset the connection
    // before the refusal is read.
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    let databases = || {
        let read = |path| std::fs::read_to_string(path).unwrap_or_default();
        (read("/etc/passwd"), read("/etc/group"))
    };
    if !admission.admits(peer.uid(), peer.gid(), databases) {
        warn!(
            uid = peer.uid(),
            gid = peer.gid(),
            "control socket: refused a user who is neither root, the agent's user, nor in its group"
        );
        let mut reply = answer(&REFUSED, "", b"", clock.now()).await;
        reply.push(b'\n');
        write.write_all(&reply).await?;
        return write.shutdown().await;
    }
    let request: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|_| json!({ "command": "" }));
    let name = request
        .get("command")
        .and_then(|c| c.as_str())
        .unwrap_or("")
        .to_string();
    let mut reply = answer(handler.as_ref(), &name, line.as_bytes(), clock.now()).await;
    reply.push(b'\n');
    write.write_all(&reply).await?;
    write.shutdown().await
}

/// The answer to a peer the socket does not admit.
const REFUSED: Refusing = Refusing(
    "not allowed: only root, the agent's user and members of its group may use the control socket",
);

/// Sends one command to a running agent; `None` when no agent answers on that socket.
pub async fn request(
    path: &Path,
    command: &str,
    args: serde_json::Value,
) -> Option<serde_json::Value> {
    let exchange = async {
        let mut stream = UnixStream::connect(path).await.ok()?;
        let mut request = args;
        request["command"] = json!(command);
        let mut line = request.to_string();
        line.push('\n');
        stream.write_all(line.as_bytes()).await.ok()?;
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply).await.ok()?;
        serde_json::from_str(&reply).ok()
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nmillwright:x:998:998::/var/lib/millwright:/usr/sbin/nologin\nalice:x:1000:1000::/home/alice:/bin/bash\nbob:x:1001:1001::/home/bob:/bin/bash\n";
    const GROUP: &str = "root:x:0:\nmillwright:x:998:alice\nalice:x:1000:\nbob:x:1001:\n";

    #[test]
    fn root_the_agents_user_and_its_group_are_admitted_and_nobody_else() {
        let socket = Admission {
            owner: 998,
            group: 998,
        };
        let files = || (PASSWD.to_string(), GROUP.to_string());
        let never = || -> (String, String) { panic!("the ids alone decide") };
        assert!(socket.admits(0, 0, never), "root");
        assert!(socket.admits(998, 998, never), "the agent's user");
        assert!(socket.admits(1001, 998, never), "primary group");
        assert!(socket.admits(1000, 1000, files), "alice is in the group");
        assert!(!socket.admits(1001, 1001, files), "bob is not");
        assert!(!socket.admits(4242, 4242, files), "an unknown user");
        assert!(
            !socket.admits(1001, 1001, || (String::new(), String::new())),
            "no databases: no membership"
        );
    }
}

//! The agent's commands (`status`, `ack-alert`) and the local control socket that serves them to
//! the CLI on the gateway (`millwright outbox`), beside the MQTT command topic.
//!
//! The socket speaks one JSON line each way: `{"command": "status", ...arguments}` in, the same
//! reply document the MQTT command topic gets out. It lives in the data directory, so only the
//! service user (and its group) can reach it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::reports::{self, Alerts};
use crate::sources::DeviceStats;
use crate::store::Outbox;
use crate::uplink::{answer, CommandHandler, Identity, Topics, UplinkStats};

/// The commands every agent answers.
pub const COMMANDS: [&str; 2] = ["status", "ack-alert"];

/// Socket file name inside the data directory.
pub const SOCKET: &str = "control.sock";

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// Longest request line accepted on the socket.
const MAX_REQUEST: u64 = 64 * 1024;

pub struct AgentCommands {
    pub identity: std::sync::Mutex<Identity>,
    pub started: Instant,
    pub topics: Topics,
    pub outbox: Arc<Outbox>,
    pub alerts: Arc<Alerts>,
    pub uplink: Arc<UplinkStats>,
    pub devices: std::sync::Mutex<Vec<(String, Arc<DeviceStats>)>>,
}

impl AgentCommands {
    fn status(&self) -> serde_json::Value {
        let devices: Vec<serde_json::Value> = self
            .devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, stats)| {
                let s = stats.snapshot();
                json!({
                    "device": name,
                    "online": s.online,
                    "requests": s.requests,
                    "errors": s.errors(),
                    "reconnects": s.reconnects,
                    "notifications": s.notifications,
                })
            })
            .collect();
        let identity = self
            .identity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        json!({
            "agent": identity.agent,
            "version": identity.version,
            "config_hash": identity.config_hash,
            "uptime_s": self.started.elapsed().as_secs(),
            "devices": devices,
            "outbox": self.outbox.stats(),
            "uplink": self.uplink.snapshot(),
            "alerts": self.alerts.snapshot(),
        })
    }
}

impl CommandHandler for AgentCommands {
    fn handle(&self, name: &str, args: &serde_json::Value) -> Result<serde_json::Value, String> {
        match name {
            "status" => Ok(self.status()),
            "ack-alert" => {
                let id = args
                    .get("alert_id")
                    .and_then(|v| v.as_str())
                    .ok_or("ack-alert needs {\"alert_id\": \"<asset>/maintenance\"}")?;
                let by = args.get("by").and_then(|v| v.as_str()).unwrap_or("mqtt");
                let record = self
                    .alerts
                    .acknowledge(&self.topics, id, by, SystemTime::now())?;
                reports::append(&self.outbox, record);
                Ok(json!({ "alert_id": id, "state": "acknowledged" }))
            }
            other => Err(format!(
                "unknown command {other:?}; known: {}",
                COMMANDS.join(", ")
            )),
        }
    }
}

/// Serves the socket until `stop`. A stale socket file from a crashed agent is replaced.
pub async fn serve(path: PathBuf, handler: Arc<dyn CommandHandler>, stop: CancellationToken) {
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(listener) => listener,
        Err(error) => {
            warn!(path = %path.display(), %error, "cannot open the control socket; `millwright outbox` will read the store directly");
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
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), converse(stream, handler)).await;
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn converse(stream: UnixStream, handler: Arc<dyn CommandHandler>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    let request: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|_| json!({ "command": "" }));
    let name = request
        .get("command")
        .and_then(|c| c.as_str())
        .unwrap_or("")
        .to_string();
    let mut reply = answer(handler.as_ref(), &name, line.as_bytes(), SystemTime::now());
    reply.push(b'\n');
    write.write_all(&reply).await?;
    write.shutdown().await
}

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

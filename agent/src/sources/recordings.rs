//! A waveform asset's recordings folder: each finished WAV or CSV file dropped into it is read
//! (on the blocking pool, never beyond `max_samples`), handed to the scorer, and moved to `done/`
//! — or to `rejected/` when it cannot be read as a waveform, with the reason logged and counted.
//! Files in both are deleted after `keep`. For commissioning (drop a recording made with a
//! portable analyser) and for replaying recorded data (drop them in order).
//!
//! Invariants: a file is handed on once (see [`super::folder`]); a file that cannot be read is
//! handed on with its error, never retried forever; a file that cannot be moved away is still
//! handed on once while the agent runs (and logged).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::folder::{self, Announcements, Seen};
use crate::clock::Clock;
use crate::vibration::{read_recording, Recorded};

/// Recording files by extension.
const EXTENSIONS: [&str; 2] = ["wav", "csv"];
/// Where handled recordings go, below the folder.
pub const DONE: &str = "done";
pub const REJECTED: &str = "rejected";
/// How often old recordings are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

fn is_recording(name: &str) -> bool {
    folder::is_finished_name(name, &EXTENSIONS)
}

/// One asset's folder and what to do with its files.
#[derive(Debug, Clone)]
pub struct RecordingsFolder {
    pub asset: usize,
    pub path: PathBuf,
    pub poll: Duration,
    pub keep: Duration,
    pub max_samples: usize,
}

/// Watches the folder until `stop`, handing each recording to the scorer on `out`.
pub async fn watch(
    folder: RecordingsFolder,
    out: mpsc::Sender<Recorded>,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    for sub in [DONE, REJECTED] {
        if let Err(error) = std::fs::create_dir_all(folder.path.join(sub)) {
            warn!(%error, folder = %folder.path.display(), "cannot make the recordings folder's subfolders");
        }
    }
    info!(folder = %folder.path.display(), "watching for waveform recordings");
    let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
    let mut announced = Announcements::open(&folder.path, "recordings folder");
    let mut look = tokio::time::interval(folder.poll);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep_tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        let finished = tokio::select! {
            () = stop.cancelled() => break,
            _ = sweep_tick.tick() => {
                let (path, keep, now) = (folder.path.clone(), folder.keep, clock.now());
                let deleted = tokio::task::spawn_blocking(move || {
                    folder::sweep(&path, &[DONE, REJECTED], keep, now)
                })
                .await
                .unwrap_or(0);
                if deleted > 0 {
                    info!(deleted, folder = %folder.path.display(), "old recordings deleted");
                }
                continue;
            }
            finished = announced.next() => {
                if finished.is_empty() {
                    continue;
                }
                finished
            }
            _ = look.tick() => Default::default(),
        };
        let path = folder.path.clone();
        let mut listed = std::mem::take(&mut seen);
        let (found, listed) = tokio::task::spawn_blocking(move || {
            let found = folder::ready(&path, &mut listed, &finished, &is_recording);
            (found, listed)
        })
        .await
        .unwrap_or_default();
        seen = listed;
        for (file, _) in found {
            if let Some(s) = seen.get_mut(&file) {
                s.sent = true;
            }
            let recorded = take(&folder, file).await;
            if out.send(recorded).await.is_err() {
                return;
            }
        }
    }
}

/// Reads one recording and moves it aside.
async fn take(folder: &RecordingsFolder, file: PathBuf) -> Recorded {
    let (asset, max) = (folder.asset, folder.max_samples);
    let read = tokio::task::spawn_blocking(move || {
        let recording = read_recording(&file, max).map_err(|e| format!("{e:#}"));
        let to = if recording.is_ok() { DONE } else { REJECTED };
        if let Err(error) = folder::move_into(&file, to) {
            warn!(%error, file = %file.display(), "cannot move the recording aside");
        }
        Recorded {
            asset,
            file,
            recording,
        }
    })
    .await;
    read.unwrap_or_else(|error| Recorded {
        asset,
        file: PathBuf::new(),
        recording: Err(format!("reading failed: {error}")),
    })
}

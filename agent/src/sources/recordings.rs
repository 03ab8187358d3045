//! A waveform asset's recordings folder: each finished WAV or CSV file dropped into it is read
//! (on the blocking pool, never beyond `max_samples`), handed to the scorer, and moved to `done/`
//! — or to `rejected/` when it cannot be read as a waveform, with the reason logged and counted.
//! Files in both are deleted after `keep`. For commissioning (drop a recording made with a
//! portable analyser) and for replaying recorded data (drop them in order).
//!
//! Invariants: a file is handed on once (see [`super::folder`]); a file that cannot be read is
//! handed on with its error, never retried forever; a file that cannot be moved away is still
//! handed on once while the agent runs (and logged).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::folder;
use crate::clock::Clock;
use crate::vibration::{read_recording, Recorded};

/// Recording files by extension.
const EXTENSIONS: [&str; 2] = ["wav", "csv"];
/// Where handled recordings go, below the folder.
pub const DONE: &str = "done";
pub const REJECTED: &str = "rejected";

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
    let watched = folder::Watched {
        path: folder.path.clone(),
        what: "recordings folder",
        subfolders: &[DONE, REJECTED],
        keep: folder.keep,
        poll: folder.poll,
        accept: is_recording,
    };
    let mut watcher = folder::Watcher::new(watched, clock);
    // Said once the folder and its subfolders exist and inotify is open: files may be dropped now.
    info!(folder = %folder.path.display(), "watching for waveform recordings");
    while let Some(found) = watcher.next(&stop).await {
        for (file, _) in found {
            if out.send(take(&folder, file).await).await.is_err() {
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

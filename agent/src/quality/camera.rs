//! A station's camera folder: new images found, scored by the station's image model, and handed
//! to the quality stage; the stage moves each one to `pass/`, `review/`, `reject/` or
//! `unmatched/` once its part is decided; files there older than `keep` are deleted.
//!
//! Where the kernel's inotify works (the folder is on the gateway's own disk, an FTP server
//! running there writes into it), a file closed after writing or moved into the folder is taken
//! at once. The folder is also looked at every `poll` (a directory listing: the same on a local
//! disk and on an SMB or NFS mount, where inotify sees nothing of writes made on the server's
//! side). Invariants: an image is handed on once; a file is taken when inotify says it was closed
//! or moved in, or when its size held across two looks, and never under a temporary upload name
//! (half-written files wait); a file that cannot be read or decoded is handed on with its error
//! (its part goes to review), never dropped or retried forever; at most [`MAX_IMAGE_BYTES`] are
//! read per file; scoring runs on the blocking pool, so a slow model never holds up decisions.

use std::path::PathBuf;
use std::sync::Arc;

use firmware_config::quality::Images;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::image::ImageModel;
use super::station::ImageVerdict;
use crate::sources::folder;

/// The largest image file read.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// Image files by extension.
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Whether `name` is a finished image file by its name (not a dotfile or an upload in progress).
pub fn is_image_name(name: &str) -> bool {
    folder::is_finished_name(name, &IMAGE_EXTENSIONS)
}

/// Where decided images go, below the camera folder.
pub const SUBFOLDERS: [&str; 4] = ["pass", "review", "reject", "unmatched"];

/// Watches the station's camera folder until `stop`, handing each scored image on as
/// `(station, verdict)`.
pub async fn watch(
    images: Images,
    model: Arc<ImageModel>,
    station: usize,
    out: mpsc::Sender<(usize, ImageVerdict)>,
    clock: Arc<dyn crate::clock::Clock>,
    stop: CancellationToken,
) {
    let watched = folder::Watched {
        path: images.folder.clone(),
        what: "camera folder",
        subfolders: &SUBFOLDERS,
        keep: images.keep,
        poll: images.poll,
        accept: is_image_name,
    };
    let mut watcher = folder::Watcher::new(watched, clock);
    // Said once the folder and its subfolders exist and inotify is open: files may be dropped now.
    info!(folder = %images.folder.display(), model = %model.path.display(), "watching for camera images");
    while let Some(found) = watcher.next(&stop).await {
        if !hand_on(found, &model, station, &out).await {
            return;
        }
    }
}

/// Scores the files found and hands them on; false when the stage is gone.
async fn hand_on(
    found: Vec<(PathBuf, u64)>,
    model: &Arc<ImageModel>,
    station: usize,
    out: &mpsc::Sender<(usize, ImageVerdict)>,
) -> bool {
    for (file, size) in found {
        let verdict = score(Arc::clone(model), file, size).await;
        if out.send((station, verdict)).await.is_err() {
            return false;
        }
    }
    true
}

async fn score(model: Arc<ImageModel>, file: PathBuf, size: u64) -> ImageVerdict {
    let path = file.clone();
    let scored = tokio::task::spawn_blocking(move || {
        if size > MAX_IMAGE_BYTES {
            return Err(format!(
                "{size} bytes is more than the {MAX_IMAGE_BYTES} read"
            ));
        }
        let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
        model.score(&bytes).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(format!("scoring failed: {e}")));
    let written = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
    if let Err(error) = &scored {
        warn!(file = %file.display(), %error, "camera image not scored; its part goes to review");
    }
    ImageVerdict {
        file,
        written,
        score: scored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_camera_takes_png_and_jpeg_only() {
        // What counts as finished (not a dotfile or an upload in progress) is sources::folder's.
        for name in ["part-1234.png", "IMG_0001.JPG", "a.jpeg"] {
            assert!(is_image_name(name), "{name}");
        }
        for name in ["notes.txt", "rec.wav", ".part-1.png"] {
            assert!(!is_image_name(name), "{name}");
        }
    }
}

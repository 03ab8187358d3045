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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use firmware_config::quality::Images;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::image::ImageModel;
use super::station::ImageVerdict;

/// The largest image file read.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// Where decided images go, below the camera folder.
pub const SUBFOLDERS: [&str; 4] = ["pass", "review", "reject", "unmatched"];

/// How often old images are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Whether `name` is a finished image file by its name (not a dotfile or an upload in progress).
pub fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let temporary = lower.starts_with('.')
        || lower.ends_with(".tmp")
        || lower.ends_with(".part")
        || lower.ends_with('~')
        || lower.contains(".filepart");
    !temporary && (lower.ends_with(".png") || lower.ends_with(".jpg") || lower.ends_with(".jpeg"))
}

/// Moves a decided image to `to/` beside it.
pub fn move_image(file: &Path, to: &str) -> std::io::Result<PathBuf> {
    let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
        return Err(std::io::Error::other("not a file path"));
    };
    let target = dir.join(to);
    std::fs::create_dir_all(&target)?;
    let destination = target.join(name);
    std::fs::rename(file, &destination)?;
    Ok(destination)
}

/// Deletes files in the subfolders older than `keep` (by modification time, against `now`);
/// how many.
pub fn sweep(folder: &Path, keep: Duration, now: SystemTime) -> usize {
    let mut deleted = 0;
    for sub in SUBFOLDERS {
        let Ok(entries) = std::fs::read_dir(folder.join(sub)) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > keep);
            if old && std::fs::remove_file(entry.path()).is_ok() {
                deleted += 1;
            }
        }
    }
    deleted
}

/// What the watcher remembers of a file: its size at the last look, and whether it went on.
#[derive(Debug, Clone, Copy)]
struct Seen {
    size: u64,
    sent: bool,
}

/// The images in `folder` ready to be taken now: listed twice with the same size, or named in
/// `finished` (closed after writing, by inotify).
fn ready(
    folder: &Path,
    seen: &mut HashMap<PathBuf, Seen>,
    finished: &std::collections::HashSet<std::ffi::OsString>,
) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut present = Vec::new();
    let mut out = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().to_string();
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || !is_image_name(&name) {
            continue;
        }
        let path = entry.path();
        let size = meta.len();
        present.push(path.clone());
        let previous = seen.insert(path.clone(), Seen { size, sent: false });
        match previous {
            Some(p) if p.sent => {
                seen.insert(path, p);
            }
            Some(p) if p.size == size && size > 0 => out.push((path, size)),
            _ if size > 0 && finished.contains(&entry.file_name()) => out.push((path, size)),
            _ => {}
        }
    }
    seen.retain(|path, _| present.contains(path));
    out.sort();
    out
}

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
    for sub in SUBFOLDERS {
        if let Err(error) = std::fs::create_dir_all(images.folder.join(sub)) {
            warn!(%error, folder = %images.folder.display(), "cannot make the camera folder's subfolders");
        }
    }
    info!(folder = %images.folder.display(), model = %model.path.display(), "watching for camera images");
    let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
    let mut announced = Announcements::open(&images.folder);
    let mut look = tokio::time::interval(images.poll);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep_tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        let finished = tokio::select! {
            () = stop.cancelled() => break,
            _ = sweep_tick.tick() => {
                let (folder, keep, now) = (images.folder.clone(), images.keep, clock.now());
                let deleted = tokio::task::spawn_blocking(move || sweep(&folder, keep, now)).await.unwrap_or(0);
                if deleted > 0 {
                    info!(deleted, folder = %images.folder.display(), "old camera images deleted");
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
        let folder = images.folder.clone();
        let mut listed = std::mem::take(&mut seen);
        let (found, listed) = tokio::task::spawn_blocking(move || {
            let found = ready(&folder, &mut listed, &finished);
            (found, listed)
        })
        .await
        .unwrap_or_default();
        seen = listed;
        if !hand_on(found, &mut seen, &model, station, &out).await {
            return;
        }
    }
}

/// Scores the files found and hands them on; false when the stage is gone.
async fn hand_on(
    found: Vec<(PathBuf, u64)>,
    seen: &mut HashMap<PathBuf, Seen>,
    model: &Arc<ImageModel>,
    station: usize,
    out: &mpsc::Sender<(usize, ImageVerdict)>,
) -> bool {
    for (file, size) in found {
        if let Some(s) = seen.get_mut(&file) {
            s.sent = true;
        }
        let verdict = score(Arc::clone(model), file, size).await;
        if out.send((station, verdict)).await.is_err() {
            return false;
        }
    }
    true
}

/// Files the kernel says were finished in the folder (closed after writing, or moved in).
struct Announcements {
    events: Option<inotify::EventStream<Vec<u8>>>,
}

impl Announcements {
    /// Watches `folder`; without inotify (not Linux, no watches left) the folder is polled only.
    fn open(folder: &Path) -> Announcements {
        let opened = inotify::Inotify::init().and_then(|inotify| {
            inotify.watches().add(
                folder,
                inotify::WatchMask::CLOSE_WRITE | inotify::WatchMask::MOVED_TO,
            )?;
            inotify.into_event_stream(vec![0; 4096])
        });
        let events = match opened {
            Ok(events) => Some(events),
            Err(error) => {
                info!(%error, folder = %folder.display(), "no inotify on the camera folder; polling it only");
                None
            }
        };
        Announcements { events }
    }

    /// The names announced by the next event (waits for one; forever without inotify).
    async fn next(&mut self) -> std::collections::HashSet<std::ffi::OsString> {
        use futures_core::Stream;
        let Some(events) = &mut self.events else {
            return std::future::pending().await;
        };
        let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *events).poll_next(cx)).await;
        match next {
            Some(Ok(event)) => event.name.into_iter().collect(),
            Some(Err(error)) => {
                warn!(%error, "inotify failed; polling the camera folder only");
                self.events = None;
                Default::default()
            }
            None => {
                self.events = None;
                Default::default()
            }
        }
    }
}

/// Reads and scores one image on the blocking pool.
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
    fn only_finished_image_files_are_taken() {
        for name in ["part-1234.png", "IMG_0001.JPG", "a.jpeg"] {
            assert!(is_image_name(name), "{name}");
        }
        for name in [
            ".part-1.png",
            "part-1.png.tmp",
            "part-1.png.part",
            "x.png~",
            "notes.txt",
            "p.png.filepart",
        ] {
            assert!(!is_image_name(name), "{name}");
        }
    }

    #[test]
    fn a_file_is_ready_once_its_size_holds_and_only_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut seen = HashMap::new();
        let none = std::collections::HashSet::new();
        let file = dir.path().join("part-7.png");
        std::fs::write(&file, b"half").expect("write");
        assert!(
            ready(dir.path(), &mut seen, &none).is_empty(),
            "first look: size unknown"
        );
        std::fs::write(&file, b"half and the rest").expect("write");
        assert!(
            ready(dir.path(), &mut seen, &none).is_empty(),
            "still growing"
        );
        let found = ready(dir.path(), &mut seen, &none);
        assert_eq!(found, vec![(file.clone(), 17)]);
        seen.get_mut(&file).expect("seen").sent = true;
        assert!(
            ready(dir.path(), &mut seen, &none).is_empty(),
            "handed on once"
        );
        let moved = move_image(&file, "pass").expect("moved");
        assert_eq!(moved, dir.path().join("pass").join("part-7.png"));
        assert!(ready(dir.path(), &mut seen, &none).is_empty());
        assert!(seen.is_empty(), "forgotten once gone");
    }

    #[test]
    fn old_images_are_swept_from_the_subfolders_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("reject")).expect("mkdir");
        std::fs::write(dir.path().join("reject/old.png"), b"x").expect("write");
        std::fs::write(dir.path().join("new.png"), b"x").expect("write");
        let written = std::fs::metadata(dir.path().join("new.png"))
            .and_then(|m| m.modified())
            .expect("mtime");
        let later = written + Duration::from_secs(31 * 86_400);
        assert_eq!(
            sweep(dir.path(), Duration::from_secs(30 * 86_400), later),
            1
        );
        assert!(dir.path().join("new.png").exists(), "undecided images stay");
    }

    #[test]
    fn a_file_announced_finished_is_taken_at_the_first_look() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut seen = HashMap::new();
        std::fs::write(dir.path().join("part-8.png"), b"whole").expect("write");
        let finished = std::collections::HashSet::from([std::ffi::OsString::from("part-8.png")]);
        assert_eq!(ready(dir.path(), &mut seen, &finished).len(), 1);
    }

    #[tokio::test]
    async fn inotify_announces_an_upload_closed_or_moved_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut announced = Announcements::open(dir.path());
        assert!(
            announced.events.is_some(),
            "inotify works on every Linux kernel this runs on"
        );
        std::fs::write(dir.path().join(".part-9.png.tmp"), b"image").expect("write");
        std::fs::rename(
            dir.path().join(".part-9.png.tmp"),
            dir.path().join("part-9.png"),
        )
        .expect("rename");
        let names = tokio::time::timeout(Duration::from_secs(5), async {
            let mut all = std::collections::HashSet::new();
            while !all.contains(std::ffi::OsStr::new("part-9.png")) {
                all.extend(announced.next().await);
            }
            all
        })
        .await
        .expect("announced within 5 s");
        assert!(names.contains(std::ffi::OsStr::new("part-9.png")));
    }
}

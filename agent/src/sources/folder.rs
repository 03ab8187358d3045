//! Folders that other programs drop finished files into (camera images, waveform recordings):
//! what counts as finished, the watcher's memory of sizes, inotify's announcements, moving a
//! handled file aside and sweeping old ones.
//!
//! Where the kernel's inotify works (the folder is on the gateway's own disk), a file closed after
//! writing or moved into the folder is taken at once; every folder is also listed now and then (the
//! same on SMB or NFS mounts, where inotify sees nothing of writes made on the server's side). A
//! file is taken when announced or when its size held across two looks, never under a temporary
//! upload name, and once.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::Clock;

/// Whether `name` is a finished file with one of `extensions` (lowercase), by its name: not a
/// dotfile or an upload in progress.
pub fn is_finished_name(name: &str, extensions: &[&str]) -> bool {
    let lower = name.to_ascii_lowercase();
    let temporary = lower.starts_with('.')
        || lower.ends_with(".tmp")
        || lower.ends_with(".part")
        || lower.ends_with('~')
        || lower.contains(".filepart");
    let extension = lower.rsplit_once('.').map(|(_, e)| e);
    !temporary && extension.is_some_and(|e| extensions.contains(&e))
}

/// Moves a file into the subfolder `to/` beside it (made if missing).
pub fn move_into(file: &Path, to: &str) -> std::io::Result<PathBuf> {
    let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
        return Err(std::io::Error::other("not a file path"));
    };
    let target = dir.join(to);
    std::fs::create_dir_all(&target)?;
    let destination = target.join(name);
    std::fs::rename(file, &destination)?;
    Ok(destination)
}

/// Deletes files in `subfolders` of `folder` older than `keep` (by modification time, against `now`);
/// how many.
pub fn sweep(folder: &Path, subfolders: &[&str], keep: Duration, now: SystemTime) -> usize {
    let mut deleted = 0;
    for sub in subfolders {
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
pub struct Seen {
    size: u64,
    /// Set once the file went on: it is not taken again.
    pub sent: bool,
}

/// The files in `folder` that `accept` takes by name, ready to be taken now: listed twice with the
/// same size, or named in `finished` (closed after writing, by inotify).
pub fn ready(
    folder: &Path,
    seen: &mut HashMap<PathBuf, Seen>,
    finished: &HashSet<OsString>,
    accept: &dyn Fn(&str) -> bool,
) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut present = Vec::new();
    let mut out = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().to_string();
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || !accept(&name) {
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

/// Files the kernel says were finished in the folder (closed after writing, or moved in).
pub struct Announcements {
    events: Option<inotify::EventStream<Vec<u8>>>,
}

impl Announcements {
    /// Watches `folder`; without inotify (not Linux, no watches left) the folder is polled only.
    pub fn open(folder: &Path, what: &'static str) -> Announcements {
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
                info!(%error, folder = %folder.display(), what, "no inotify on the folder; polling it only");
                None
            }
        };
        Announcements { events }
    }

    /// The names announced by the next event (waits for one; forever without inotify).
    pub async fn next(&mut self) -> HashSet<OsString> {
        use futures_core::Stream;
        let Some(events) = &mut self.events else {
            return std::future::pending().await;
        };
        let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *events).poll_next(cx)).await;
        match next {
            Some(Ok(event)) => event.name.into_iter().collect(),
            Some(Err(error)) => {
                warn!(%error, "inotify failed; polling the folder only");
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
/// How often a watched folder's subfolders are swept of old files.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// One watched folder: announcements, periodic listings and sweeps, and the memory of what went on.
pub struct Watcher {
    path: PathBuf,
    what: &'static str,
    subfolders: &'static [&'static str],
    keep: Duration,
    accept: fn(&str) -> bool,
    seen: HashMap<PathBuf, Seen>,
    announced: Announcements,
    look: tokio::time::Interval,
    sweep: tokio::time::Interval,
    clock: Arc<dyn Clock>,
}

/// What a [`Watcher`] watches and how.
pub struct Watched {
    pub path: PathBuf,
    /// For logs: "camera folder", "recordings folder".
    pub what: &'static str,
    /// Where handled files go, swept of files older than `keep`.
    pub subfolders: &'static [&'static str],
    pub keep: Duration,
    pub poll: Duration,
    /// Which finished names to take.
    pub accept: fn(&str) -> bool,
}

impl Watcher {
    /// Makes the subfolders and starts watching.
    pub fn new(watched: Watched, clock: Arc<dyn Clock>) -> Watcher {
        for sub in watched.subfolders {
            if let Err(error) = std::fs::create_dir_all(watched.path.join(sub)) {
                warn!(%error, folder = %watched.path.display(), what = watched.what, "cannot make the folder's subfolders");
            }
        }
        let mut look = tokio::time::interval(watched.poll);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Watcher {
            announced: Announcements::open(&watched.path, watched.what),
            path: watched.path,
            what: watched.what,
            subfolders: watched.subfolders,
            keep: watched.keep,
            accept: watched.accept,
            seen: HashMap::new(),
            look,
            sweep: tokio::time::interval(SWEEP_EVERY),
            clock,
        }
    }

    /// The next files ready, each handed out once (in name order); `None` once `stop` fires.
    pub async fn next(&mut self, stop: &CancellationToken) -> Option<Vec<(PathBuf, u64)>> {
        loop {
            let finished = tokio::select! {
                () = stop.cancelled() => return None,
                _ = self.sweep.tick() => {
                    self.sweep_old().await;
                    continue;
                }
                finished = self.announced.next() => {
                    if finished.is_empty() {
                        continue;
                    }
                    finished
                }
                _ = self.look.tick() => HashSet::new(),
            };
            let (path, accept) = (self.path.clone(), self.accept);
            let mut listed = std::mem::take(&mut self.seen);
            let (found, listed) = tokio::task::spawn_blocking(move || {
                let found = ready(&path, &mut listed, &finished, &accept);
                (found, listed)
            })
            .await
            .unwrap_or_default();
            self.seen = listed;
            for (file, _) in &found {
                if let Some(s) = self.seen.get_mut(file) {
                    s.sent = true;
                }
            }
            if !found.is_empty() {
                return Some(found);
            }
        }
    }

    async fn sweep_old(&mut self) {
        let (path, subfolders, keep, now) = (
            self.path.clone(),
            self.subfolders,
            self.keep,
            self.clock.now(),
        );
        let deleted = tokio::task::spawn_blocking(move || sweep(&path, subfolders, keep, now))
            .await
            .unwrap_or(0);
        if deleted > 0 {
            info!(deleted, folder = %self.path.display(), what = self.what, "old files deleted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finished_files_with_the_extensions_are_taken() {
        let images = ["png", "jpg", "jpeg"];
        for name in ["part-1234.png", "IMG_0001.JPG", "a.jpeg"] {
            assert!(is_finished_name(name, &images), "{name}");
        }
        for name in [
            ".part-1.png",
            "part-1.png.tmp",
            "part-1.png.part",
            "x.png~",
            "notes.txt",
            "p.png.filepart",
            "png",
        ] {
            assert!(!is_finished_name(name, &images), "{name}");
        }
        assert!(is_finished_name("rec-1.WAV", &["wav", "csv"]));
    }

    #[test]
    fn a_file_is_ready_once_its_size_holds_and_only_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut seen = HashMap::new();
        let png = |name: &str| is_finished_name(name, &["png"]);
        let none = std::collections::HashSet::new();
        let file = dir.path().join("part-7.png");
        std::fs::write(&file, b"half").expect("write");
        assert!(
            ready(dir.path(), &mut seen, &none, &png).is_empty(),
            "first look: size unknown"
        );
        std::fs::write(&file, b"half and the rest").expect("write");
        assert!(
            ready(dir.path(), &mut seen, &none, &png).is_empty(),
            "still growing"
        );
        let found = ready(dir.path(), &mut seen, &none, &png);
        assert_eq!(found, vec![(file.clone(), 17)]);
        seen.get_mut(&file).expect("seen").sent = true;
        assert!(
            ready(dir.path(), &mut seen, &none, &png).is_empty(),
            "handed on once"
        );
        let moved = move_into(&file, "pass").expect("moved");
        assert_eq!(moved, dir.path().join("pass").join("part-7.png"));
        assert!(ready(dir.path(), &mut seen, &none, &png).is_empty());
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
            sweep(
                dir.path(),
                &["reject"],
                Duration::from_secs(30 * 86_400),
                later
            ),
            1
        );
        assert!(dir.path().join("new.png").exists(), "undecided images stay");
    }

    #[test]
    fn a_file_announced_finished_is_taken_at_the_first_look() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut seen = HashMap::new();
        let png = |name: &str| is_finished_name(name, &["png"]);
        std::fs::write(dir.path().join("part-8.png"), b"whole").expect("write");
        let finished = std::collections::HashSet::from([std::ffi::OsString::from("part-8.png")]);
        assert_eq!(ready(dir.path(), &mut seen, &finished, &png).len(), 1);
    }

    #[tokio::test]
    async fn inotify_announces_an_upload_closed_or_moved_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut announced = Announcements::open(dir.path(), "test folder");
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

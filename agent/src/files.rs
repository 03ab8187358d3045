//! The agent's files and their modes, whatever the process umask.
//!
//! Invariants:
//! - The data directory is at most 0750 (created so, and tightened at start when it is looser and
//!   the agent owns it); everything the agent keeps lives inside it, so other users reach none of
//!   it. State files are written 0640, the control socket is 0660 (owner and the service group, as
//!   the package's `UMask=0027` would otherwise refuse the group), private keys 0600.
//! - Secrets are never logged; a configuration or key file that other users can read or write is
//!   reported (by `check` and at start), not silently used.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the data directory.
pub const DATA_DIR_MODE: u32 = 0o750;
/// Mode of state files (the alert book, certificates the agent writes).
pub const STATE_FILE_MODE: u32 = 0o640;
/// Mode of the control socket: the service user and its group.
pub const SOCKET_MODE: u32 = 0o660;

/// Creates the data directory 0750, or tightens an existing one that is looser (never loosens a
/// stricter one). Returns what it changed, for the log.
pub fn prepare_data_dir(dir: &Path) -> std::io::Result<Option<String>> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        set_mode(dir, DATA_DIR_MODE)?;
        return Ok(None);
    }
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    let tightened = mode & DATA_DIR_MODE;
    if tightened == mode {
        return Ok(None);
    }
    set_mode(dir, tightened)?;
    Ok(Some(format!(
        "{} was {mode:04o}; now {tightened:04o} (only the service user and its group may read it)",
        dir.display()
    )))
}

/// A suffix `.{tag}-{n}` that names no existing file beside any of `paths` (n from 1): where files
/// are moved aside without overwriting an earlier set, and without reading the time.
pub fn aside_suffix(paths: &[&Path], tag: &str) -> String {
    (1u32..)
        .map(|n| format!(".{tag}-{n}"))
        .find(|suffix| {
            paths.iter().all(|path| {
                let mut aside = path.as_os_str().to_os_string();
                aside.push(suffix);
                !Path::new(&aside).exists()
            })
        })
        .unwrap_or_default()
}

pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Runs blocking file I/O (a synced write) without holding up the tasks queued behind the caller
/// (the outputs task just woken by the alert view is one): on a multi-thread runtime the worker
/// hands its queue to another thread for the duration.
pub fn off_the_worker<T>(io: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(io),
        _ => io(),
    }
}

/// Saves a stage's state as JSON at `path` (its directory made if missing), atomically and synced,
/// off the async worker.
pub fn save_state(path: &Path, state: &impl serde::Serialize) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    off_the_worker(|| write_atomically(path, &bytes, STATE_FILE_MODE))
}

/// Reads a stage's state saved by [`save_state`]: `None` when there is none (a first start),
/// when it cannot be read (logged), or when it is corrupt (set aside as `.corrupt-N`, logged):
/// the stage starts afresh rather than not at all. `what` names the state in the logs.
pub fn restore_state<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Option<T> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "cannot read {what}; starting afresh");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(state) => Some(state),
        Err(error) => {
            let extension = path
                .extension()
                .map_or_else(String::new, |e| e.to_string_lossy().to_string());
            let aside =
                path.with_extension(format!("{extension}{}", aside_suffix(&[path], "corrupt")));
            let _ = std::fs::rename(path, &aside);
            tracing::warn!(%error, path = %path.display(), aside = %aside.display(), "{what} is corrupt; set aside, starting afresh");
            None
        }
    }
}

/// Writes `bytes` to `path` atomically (a temporary file, synced, renamed over it, the directory
/// synced) with `mode`, so a power cut leaves the old file or the new one, never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let temporary = path.with_file_name(name);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)?;
    // The mode given to open() passes through the umask, and a leftover file keeps its own.
    out.set_permissions(std::fs::Permissions::from_mode(mode))?;
    out.write_all(bytes)?;
    out.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Why `path` is too open for a file holding secrets: readable or writable by other users.
pub fn too_open(path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    let what = match (mode & 0o004 != 0, mode & 0o002 != 0) {
        (true, true) => "readable and writable",
        (true, false) => "readable",
        (false, true) => "writable",
        (false, false) => return None,
    };
    Some(format!(
        "{} is {what} by every user (mode {mode:04o}); it holds credentials: chmod o-rwx {}",
        path.display(),
        path.display()
    ))
}

/// The configuration file and every password or key file it names that other users can read or
/// write, as warnings for `check` and the start-up log.
pub fn exposure_warnings(config: &Path, plan: &firmware_config::Plan) -> Vec<String> {
    let mut files: Vec<PathBuf> = vec![config.to_path_buf()];
    files.extend(plan.secret_files());
    files.dedup();
    files.iter().filter_map(|path| too_open(path)).collect()
}

/// Everything `check` and the start-up log warn about: settings that weaken a check, and files
/// holding credentials that others can read or write.
pub fn warnings(config: &Path, plan: &firmware_config::Plan) -> Vec<String> {
    let mut warnings = plan.warnings();
    warnings.extend(exposure_warnings(config, plan));
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
    }

    #[test]
    fn the_data_dir_is_created_private_and_a_loose_one_tightened() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("data");
        assert_eq!(prepare_data_dir(&dir).expect("create"), None);
        assert_eq!(mode(&dir), 0o750);
        set_mode(&dir, 0o777).expect("loosen");
        let said = prepare_data_dir(&dir).expect("tighten").expect("changed");
        assert!(said.contains("was 0777; now 0750"), "{said}");
        assert_eq!(mode(&dir), 0o750);
        set_mode(&dir, 0o700).expect("stricter");
        assert_eq!(prepare_data_dir(&dir).expect("keep"), None);
        assert_eq!(mode(&dir), 0o700, "a stricter mode stays");
    }

    #[test]
    fn state_files_get_their_mode_whatever_was_there() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = temp.path().join("alerts.json");
        // A leftover temporary file with a careless mode.
        std::fs::write(temp.path().join("alerts.json.tmp"), b"old").expect("leftover");
        set_mode(&temp.path().join("alerts.json.tmp"), 0o666).expect("chmod");
        write_atomically(&path, b"{}", STATE_FILE_MODE).expect("write");
        assert_eq!(mode(&path), 0o640);
        assert_eq!(std::fs::read(&path).expect("read"), b"{}");
        assert!(!temp.path().join("alerts.json.tmp").exists());
    }

    #[test]
    fn files_others_can_read_or_write_are_named() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = temp.path().join("mqtt.password");
        std::fs::write(&path, "secret").expect("write");
        set_mode(&path, 0o640).expect("chmod");
        assert_eq!(too_open(&path), None);
        set_mode(&path, 0o644).expect("chmod");
        assert!(too_open(&path)
            .expect("open")
            .contains("readable by every user (mode 0644)"));
        set_mode(&path, 0o662).expect("chmod");
        assert!(too_open(&path)
            .expect("open")
            .contains("writable by every user"));
        assert_eq!(too_open(&temp.path().join("missing")), None);
    }
}

//! The container's exit status, kept in the bundle so that it outlives the shim.
//!
//! When a shim dies, containerd runs `containerd-shim-tether-v2 delete` and reports what that
//! prints as the task's exit. Without a record the answer can only be a guess: containerd's
//! runc shim said 137 (SIGKILL) with pid 0 up to 2.3. From 2.4 on it writes `exit.json` in the
//! bundle when the init process's exit is reported (after the exits of its execs, just before
//! the TaskExit event), and its `delete` prefers that record. tether does the same, with the
//! same file name and format (go-runc's `Exit` as Go's `encoding/json` writes it):
//!
//! ```text
//! {"Timestamp":"2026-12-01T16:05:01.123456789Z","Pid":4242,"Status":3}
//! ```
//!
//! The file is made empty, mode 0600, by Create's worker ([`placeholder`]) and kept open
//! in the container's record; the loop writes the record into it at the init's exit
//! ([`write_into`]: one `pwrite`, no file made or renamed on the loop, which on an ext4
//! `/run` took 0.2-0.5 ms that the next call waited for). A reader takes the empty file
//! for no record. Without the open file (a shim that took the container over in a live
//! upgrade, or a placeholder that could not be made) the record is written atomically
//! instead (`fifo::write_atomic_with`). Neither is fsynced ([`fifo::Durability::Process`]):
//! the record must survive the shim, not the machine (after a reboot the containers are
//! gone and containerd cleans the bundles up anyway), and the loop must not stall on a
//! disk.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The file's name in the bundle (the one containerd 2.4's runc shim uses).
pub const EXIT_FILE: &str = "exit.json";

/// A record is a few dozen bytes; a larger file is garbage and not read whole.
const MAX_EXIT_FILE: usize = 4096;

/// Go's zero `time.Time` (0001-01-01T00:00:00Z) as seconds before the Unix epoch: a record
/// holding it has no exit time, and is refused as Go's `ReadExitStatus` refuses it.
const GO_ZERO_TIME_SECS: u64 = 62_135_596_800;

/// An exit as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedExit {
    /// The init process's pid.
    pub pid: u32,
    /// Its exit status (128+N when killed by signal N).
    pub status: u32,
    /// When it exited.
    pub exited_at: SystemTime,
}

/// Why the record could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ExitFileError {
    /// A file system call failed (`fifo::Error::Io`: "create", "chmod", "write",
    /// "rename", "read", with its path).
    #[error(transparent)]
    File(#[from] fifo::Error),
    /// The file holds something that is not a valid record.
    #[error("{}: not a valid exit record: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The JSON shape: go-runc's `Exit{Timestamp time.Time; Pid int; Status int}`.
#[derive(Serialize, Deserialize)]
struct GoExit {
    #[serde(rename = "Timestamp")]
    timestamp: String,
    #[serde(rename = "Pid")]
    pid: i64,
    #[serde(rename = "Status")]
    status: i64,
}

/// The record's JSON.
fn encode(bundle: &Path, exit: &RecordedExit) -> Result<Vec<u8>, ExitFileError> {
    serde_json::to_vec(&GoExit {
        timestamp: fifo::rfc3339::format(exit.exited_at),
        pid: i64::from(exit.pid),
        status: i64::from(exit.status),
    })
    .map_err(|e| ExitFileError::Invalid {
        path: bundle.join(EXIT_FILE),
        reason: e.to_string(),
    })
}

/// Makes `<bundle>/exit.json` empty (mode 0600; it must not be a symlink) and returns it
/// open for [`write_into`]: done off the loop, when the container is created, so that
/// recording its exit later makes no file.
pub fn placeholder(bundle: &Path) -> Result<File, ExitFileError> {
    let path = bundle.join(EXIT_FILE);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| fifo::Error::io("create", &path, e).into())
}

/// Records `exit` in the empty [`placeholder`] `file` of the container in `bundle`: one
/// positioned write of a few dozen bytes (a reader sees the empty file or the record).
pub fn write_into(file: &File, bundle: &Path, exit: &RecordedExit) -> Result<(), ExitFileError> {
    let json = encode(bundle, exit)?;
    file.write_all_at(&json, 0)
        .map_err(|e| fifo::Error::io("write", bundle.join(EXIT_FILE), e).into())
}

/// Records `exit` in `<bundle>/exit.json`, replacing any earlier record. A reader sees no
/// file, the old one or the whole new one, never a partial one; on failure the temp file is
/// removed.
pub fn write(bundle: &Path, exit: &RecordedExit) -> Result<(), ExitFileError> {
    let json = encode(bundle, exit)?;
    fifo::write_atomic_with(
        &bundle.join(EXIT_FILE),
        &json,
        0o600,
        fifo::Durability::Process,
    )?;
    Ok(())
}

/// Reads `<bundle>/exit.json`: `Ok(None)` when there is none or it is empty (the
/// [`placeholder`]); [`ExitFileError::Invalid`] when
/// it is not JSON of the shape above, or (as containerd's `ReadExitStatus` checks) the pid is
/// not positive, the status is negative or the time is Go's zero time. Never panics.
pub fn read(bundle: &Path) -> Result<Option<RecordedExit>, ExitFileError> {
    let path = bundle.join(EXIT_FILE);
    let Some(bytes) = fifo::read_small_file(&path, MAX_EXIT_FILE)? else {
        return Ok(None);
    };
    let invalid = |reason: String| ExitFileError::Invalid {
        path: path.clone(),
        reason,
    };
    // The placeholder made at Create: the init has not exited (or the shim died first).
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.len() > MAX_EXIT_FILE {
        return Err(invalid(format!("longer than {MAX_EXIT_FILE} bytes")));
    }
    let raw: GoExit = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    let pid = u32::try_from(raw.pid)
        .ok()
        .filter(|&p| p > 0 && p <= i32::MAX as u32)
        .ok_or_else(|| invalid(format!("pid {}", raw.pid)))?;
    let status =
        u32::try_from(raw.status).map_err(|_| invalid(format!("status {}", raw.status)))?;
    let exited_at = fifo::rfc3339::parse(&raw.timestamp).map_err(|e| invalid(e.to_string()))?;
    if UNIX_EPOCH.duration_since(exited_at).ok() == Some(Duration::from_secs(GO_ZERO_TIME_SECS)) {
        return Err(invalid("no exit time".into()));
    }
    Ok(Some(RecordedExit {
        pid,
        status,
        exited_at,
    }))
}

/// Records the init process's exit of a container whose bundle is `bundle`, into its
/// [`placeholder`] `file` when there is one; a failure is logged (the exit is still
/// reported over ttrpc: only a later shim crash would miss it).
pub fn record(bundle: &Path, file: Option<&File>, pid: i32, exit: &fifo::ExitRecord) {
    let Some(pid) = u32::try_from(pid).ok().filter(|&p| p > 0) else {
        return;
    };
    let recorded = RecordedExit {
        pid,
        status: u32::try_from(exit.code).unwrap_or(fifo::UNKNOWN_EXIT_CODE as u32),
        exited_at: exit.exited_at,
    };
    let written = match file {
        Some(file) => write_into(file, bundle, &recorded),
        None => write(bundle, &recorded),
    };
    if let Err(e) = written {
        log::warn!("cannot record the exit status: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn round_trip_and_format() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let e = RecordedExit {
            pid: 4242,
            status: 3,
            exited_at: at(1_796_083_200, 123_456_789),
        };
        write(dir.path(), &e).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(e));
        let text = std::fs::read_to_string(dir.path().join(EXIT_FILE)).unwrap();
        assert_eq!(
            text,
            r#"{"Timestamp":"2026-12-01T00:00:00.123456789Z","Pid":4242,"Status":3}"#
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(EXIT_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Replaced whole; no temp file left.
        let e2 = RecordedExit { status: 137, ..e };
        write(dir.path(), &e2).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(e2));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_placeholder_is_no_record_until_written_into() {
        let dir = tempfile::tempdir().unwrap();
        let file = placeholder(dir.path()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None, "empty: no record yet");
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let e = RecordedExit {
            pid: 77,
            status: 137,
            exited_at: at(1_796_083_200, 5),
        };
        write_into(&file, dir.path(), &e).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(e));
        // No other file was made.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_placeholder_is_not_made_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, dir.path().join(EXIT_FILE)).unwrap();
        assert!(placeholder(dir.path()).is_err());
        assert!(!target.exists());
    }

    #[test]
    fn reads_what_containerd_2_4_runc_shim_writes() {
        // json.Marshal(runc.Exit{Timestamp: time.Date(2026, 12, 1, 16, 5, 1, 5e8,
        // time.FixedZone("", 3600)), Pid: 77, Status: 143}): Go keeps the zone offset.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(EXIT_FILE),
            br#"{"Timestamp":"2026-12-01T16:05:01.5+01:00","Pid":77,"Status":143}"#,
        )
        .unwrap();
        assert_eq!(
            read(dir.path()).unwrap(),
            Some(RecordedExit {
                pid: 77,
                status: 143,
                exited_at: at(1_796_137_501, 500_000_000),
            })
        );
    }

    #[test]
    fn invalid_records_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // (An empty file is the placeholder, no record: see the test above.)
        for bad in [
            &b"{"[..],
            b"null",
            br#"{"Timestamp":"2026-12-01T00:00:00Z","Pid":0,"Status":0}"#,
            br#"{"Timestamp":"2026-12-01T00:00:00Z","Pid":-1,"Status":0}"#,
            br#"{"Timestamp":"2026-12-01T00:00:00Z","Pid":1,"Status":-1}"#,
            br#"{"Timestamp":"0001-01-01T00:00:00Z","Pid":1,"Status":0}"#,
            br#"{"Timestamp":"yesterday","Pid":1,"Status":0}"#,
            br#"{"Pid":1,"Status":0}"#,
        ] {
            std::fs::write(dir.path().join(EXIT_FILE), bad).unwrap();
            assert!(
                matches!(read(dir.path()), Err(ExitFileError::Invalid { .. })),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        std::fs::write(dir.path().join(EXIT_FILE), vec![b' '; 10_000]).unwrap();
        assert!(read(dir.path()).is_err());
    }

    #[test]
    fn record_skips_unknown_pids() {
        let dir = tempfile::tempdir().unwrap();
        let exit = fifo::ExitRecord {
            code: 0,
            exited_at: at(1_796_083_200, 0),
        };
        record(dir.path(), None, 0, &exit);
        record(dir.path(), None, -1, &exit);
        assert_eq!(read(dir.path()).unwrap(), None);
        record(dir.path(), None, 9, &exit);
        assert_eq!(read(dir.path()).unwrap().map(|e| e.pid), Some(9));
    }
}

//! Files replaced atomically: a reader sees no file, the old one or the whole new one,
//! never a partial one, and a symlink planted at the name is replaced, never followed.
//! The one way tether writes a record others read while it may be rewritten (`exitcode`,
//! `starttime`, `spool-dropped`, a pea's files, containerd's `exit.json`).

use std::fs::{OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// How far [`write_atomic_with`] goes before it renames the new file into place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file first: the new content survives a crash of the machine.
    Fsync,
    /// No fsync: the file survives its writer (a killed process), not the machine. For a
    /// writer that must not stall on a disk (an event loop), and a record that means
    /// nothing after a reboot.
    Process,
}

/// [`write_atomic_with`] with [`Durability::Fsync`].
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_atomic_with(path, bytes, mode, Durability::Fsync)
}

/// Writes `bytes` to `path` atomically with permission bits exactly `mode`: a temp file
/// next to it (`.<name>.<pid>.<n>.tmp`) is created with `O_EXCL|O_NOFOLLOW` (never through
/// a symlink; a stale one of a dead writer with our pid is removed first), fchmod'ed,
/// written, fsynced as `durability` says, and renamed over `path` (rename replaces a
/// symlink, never follows it). On failure the temp file is removed. Errors: `Error::Io`
/// ("create", "chmod", "write", "fsync", "rename").
pub fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
) -> Result<()> {
    let tmp = temp_name(path);
    let result = write_then_rename(&tmp, path, bytes, mode, durability);
    if result.is_err() {
        // Best effort: the original error is what matters.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temp_name(path: &Path) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

fn write_then_rename(
    tmp: &Path,
    path: &Path,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
) -> Result<()> {
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(mode & 0o7777)
            .open(tmp)
    };
    let mut file = match create() {
        // Left by a writer that died with our pid (the counter restarts with the process):
        // unlinking never follows a symlink, and the next create is exclusive again.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(tmp);
            create()
        }
        other => other,
    }
    .map_err(|e| Error::io("create", tmp, e))?;
    // The mode went through the umask.
    file.set_permissions(Permissions::from_mode(mode & 0o7777))
        .map_err(|e| Error::io("chmod", tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io("write", tmp, e))?;
    if durability == Durability::Fsync {
        file.sync_all().map_err(|e| Error::io("fsync", tmp, e))?;
    }
    drop(file);
    std::fs::rename(tmp, path).map_err(|e| Error::io("rename", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn write_atomic_replaces_a_symlink_instead_of_following_it() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let target = tmp.path().join("f");
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        write_atomic(&target, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert!(!std::fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn the_mode_is_exact_and_no_temp_file_is_left() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("record");
        for durability in [Durability::Fsync, Durability::Process] {
            for mode in [0o600, 0o644, 0o640] {
                write_atomic_with(&path, format!("{mode:o}").as_bytes(), mode, durability).unwrap();
                assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, mode);
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    format!("{mode:o}").as_bytes()
                );
            }
        }
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_stale_temp_file_does_not_block_the_write() {
        // A writer that died with our pid left the temp name this write picks.
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("record");
        let stale = temp_name(&path);
        std::fs::write(&stale, b"old").unwrap();
        write_then_rename(&stale, &path, b"new", 0o600, Durability::Process).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!stale.exists());
    }

    #[test]
    fn a_write_into_a_missing_directory_fails_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("missing").join("record");
        assert!(matches!(
            write_atomic(&path, b"x", 0o600),
            Err(Error::Io { op: "create", .. })
        ));
    }
}

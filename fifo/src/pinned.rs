//! A directory pinned by an open descriptor, so that a path swapped under it (a directory
//! renamed away and a symlink put in its place) cannot steer what is written "in" it.
//!
//! [`PinnedDir::open`] opens the directory once, with `O_DIRECTORY|O_NOFOLLOW` (its last
//! component must not be a symlink), and [`PinnedDir::path`] then names it as
//! `/proc/<our pid>/fd/<fd>`: the kernel resolves that to the opened directory itself,
//! never looking at the original path again, for this process and for the children it
//! hands such paths to (runc's `--pid-file` and `--log`). Entries are reached as
//! `path().join(name)`: one more component, which the writers in this crate open with
//! `O_NOFOLLOW` or `O_EXCL` and replace with `rename` ([`crate::write_atomic`]), none of
//! which follows a symlink.

use std::fs::{File, OpenOptions, Permissions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A directory held open; see the module documentation.
#[derive(Debug)]
pub struct PinnedDir {
    dir: File,
    origin: PathBuf,
    path: PathBuf,
}

impl PinnedDir {
    /// Opens the directory at `path` without following a symlink in its last component.
    /// Errors: `Error::NotFound`, `Error::NotADirectory` (also for a symlink, even to a
    /// directory), `Error::Io` ("open").
    pub fn open(path: &Path) -> Result<Self> {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) => Error::NotFound { path: path.into() },
                Some(libc::ENOTDIR) | Some(libc::ELOOP) => {
                    Error::NotADirectory { path: path.into() }
                }
                _ => Error::io("open", path, e),
            })?;
        Ok(PinnedDir::named_through(dir, path))
    }

    /// The open directory `dir`, named from now on through this process's descriptor
    /// table (`/proc/<pid>/fd/<n>`), whatever happens to `origin`.
    fn named_through(dir: File, origin: &Path) -> Self {
        let via = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            dir.as_raw_fd()
        ));
        PinnedDir {
            dir,
            origin: origin.into(),
            path: via,
        }
    }

    /// A directory already open as `dir` (pinned by another process, which handed the
    /// descriptor over): from now on named through this process's descriptor table.
    /// `origin` names it in messages. Errors: `Error::NotADirectory` if `dir` is not one,
    /// `Error::Io` ("fstat").
    pub fn from_file(dir: File, origin: &Path) -> Result<Self> {
        let meta = dir.metadata().map_err(|e| Error::io("fstat", origin, e))?;
        if !meta.is_dir() {
            return Err(Error::NotADirectory {
                path: origin.into(),
            });
        }
        Ok(PinnedDir::named_through(dir, origin))
    }

    /// The directory, as a path that resolves through the descriptor (valid while `self`
    /// lives, in this process and in its children).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path it was opened at (for messages).
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Sets the directory's permission bits exactly (fchmod: no umask, no path).
    pub fn chmod(&self, mode: u32) -> Result<()> {
        self.dir
            .set_permissions(Permissions::from_mode(mode & 0o7777))
            .map_err(|e| Error::io("chmod", &self.origin, e))
    }

    /// Changes the directory's owner (fchown; `None` leaves that id unchanged).
    pub fn chown(&self, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        std::os::unix::fs::fchown(&self.dir, uid, gid)
            .map_err(|e| Error::io("chown", &self.origin, e))
    }

    /// `(owner uid, permission bits)` of the directory.
    pub fn owner_and_mode(&self) -> Result<(u32, u32)> {
        let meta = self
            .dir
            .metadata()
            .map_err(|e| Error::io("fstat", &self.origin, e))?;
        Ok((meta.uid(), meta.mode() & 0o7777))
    }

    /// fsyncs the directory (makes a rename in it durable).
    pub fn sync(&self) -> Result<()> {
        self.dir
            .sync_all()
            .map_err(|e| Error::io("fsync", &self.origin, e))
    }
}

impl AsFd for PinnedDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_land_in_the_opened_directory_after_a_swap() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let pinned = PinnedDir::open(&dir).unwrap();
        // The directory is renamed away and a symlink to elsewhere takes its name.
        let moved = tmp.path().join("moved");
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::rename(&dir, &moved).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
        crate::write_atomic(&pinned.path().join("f"), b"x", 0o640).unwrap();
        assert_eq!(std::fs::read(moved.join("f")).unwrap(), b"x");
        assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none());
        let meta = std::fs::metadata(moved.join("f")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        // No temp file left.
        assert_eq!(std::fs::read_dir(&moved).unwrap().count(), 1);
    }

    #[test]
    fn a_symlink_is_not_opened_as_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        assert!(matches!(
            PinnedDir::open(&link),
            Err(Error::NotADirectory { .. })
        ));
        assert!(matches!(
            PinnedDir::open(&tmp.path().join("missing")),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn a_handed_over_descriptor_pins_the_directory_it_names() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let file = File::open(&dir).unwrap();
        let pinned = PinnedDir::from_file(file, &dir).unwrap();
        assert_eq!(pinned.origin(), dir);
        std::fs::rename(&dir, tmp.path().join("moved")).unwrap();
        crate::write_atomic(&pinned.path().join("f"), b"x", 0o600).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("moved/f")).unwrap(), b"x");
        // Not a directory: refused.
        std::fs::write(tmp.path().join("plain"), b"").unwrap();
        let plain = File::open(tmp.path().join("plain")).unwrap();
        assert!(matches!(
            PinnedDir::from_file(plain, &tmp.path().join("plain")),
            Err(Error::NotADirectory { .. })
        ));
    }

    #[test]
    fn chmod_is_exact() {
        let tmp = tempfile::tempdir().unwrap();
        let pinned = PinnedDir::open(tmp.path()).unwrap();
        pinned.chmod(0o711).unwrap();
        assert_eq!(pinned.owner_and_mode().unwrap().1, 0o711);
        pinned.chmod(0o700).unwrap();
        assert_eq!(pinned.owner_and_mode().unwrap().1, 0o700);
    }
}

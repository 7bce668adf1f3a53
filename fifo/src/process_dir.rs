//! The per-process directory of DESIGN.md ("The process directory"): the dadoo contract.
//!
//! ```text
//! <parent>/<id>/        0700
//!   stdin stdout stderr FIFOs, fifo_mode (0600), owned by IoUid/IoGid if set
//!   winsz               FIFO, fifo_mode, owned by IoUid/IoGid if set
//!   exit                FIFO, fifo_mode; held open (RDWR) by the supervisor while the process lives
//!   exitcode            file, written atomically (ExitRecord format)
//!   pidfile             file, written by `runc --pid-file`
//!   log.json            file, runc's JSON log
//!   starttime           file, "<pid> <start ticks>": tells the process from a recycled pid
//! ```
//!
//! Nothing about a process lives only in the supervisor's memory: a manager that restarts
//! finds everything here.

use std::fs::{DirBuilder, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::atomic_file::write_atomic;
use crate::error::{Error, Result};
use crate::exit::ExitRecord;
use crate::id::validate_id;
use crate::pinned::PinnedDir;
use crate::start_time::StartRecord;
use crate::{open, pidfile, small_file};

/// The process's stdin FIFO.
pub const STDIN: &str = "stdin";
/// The process's stdout FIFO.
pub const STDOUT: &str = "stdout";
/// The process's stderr FIFO.
pub const STDERR: &str = "stderr";
/// The window-size FIFO (a stream of JSON objects).
pub const WINSZ: &str = "winsz";
/// The FIFO whose EOF tells that the process has exited and `exitcode` is final.
pub const EXIT: &str = "exit";
/// The exit code record.
pub const EXITCODE: &str = "exitcode";
/// The pid file runc writes.
pub const PIDFILE: &str = "pidfile";
/// runc's JSON log.
pub const LOG_JSON: &str = "log.json";
/// The process's pid and start time ([`StartRecord`]), written by its supervisor.
pub const STARTTIME: &str = "starttime";

/// Mode of the process directory itself.
const DIR_MODE: u32 = 0o700;
/// FIFO mode when `ProcessDirOptions::fifo_mode` is 0.
const DEFAULT_FIFO_MODE: u32 = 0o600;
/// Mode of the `exitcode` file.
const EXITCODE_MODE: u32 = 0o644;
/// An exit record is two short lines; more than this is garbage.
const MAX_EXITCODE: usize = 4096;

/// What is known of a process whose supervisor records nothing more (see
/// [`ProcessDir::fate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It exited; the record is final.
    Exited(ExitRecord),
    /// It still runs as this pid (checked against its start time).
    Running(i32),
    /// It is gone (or no record tells which process it was) and its exit status was not
    /// recorded: the pid it had, if known.
    Lost(Option<i32>),
}

/// How to create a process directory.
#[derive(Debug, Clone, Default)]
pub struct ProcessDirOptions {
    /// Permission bits of the FIFOs; 0 means 0o600.
    pub fifo_mode: u32,
    /// `(uid, gid)` given to the stdin, stdout, stderr and winsz FIFOs (containerd's
    /// IoUid/IoGid). The `exit` FIFO and the directory stay owned by the creator.
    pub owner: Option<(u32, u32)>,
}

/// A process directory: a handle on a path, holding no open files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessDir {
    path: PathBuf,
}

impl ProcessDir {
    /// Validates `id` with [`validate_id`], creates `parent/id` (mode exactly 0700) and in it
    /// the FIFOs stdin, stdout, stderr, winsz and exit (see [`ProcessDirOptions`]).
    ///
    /// Errors: `Error::InvalidId` (nothing touched); `Error::NotFound { path: parent }` or
    /// `Error::NotADirectory` if `parent` is missing or not a directory;
    /// `Error::AlreadyExists { path }` if `parent/id` exists (it is left alone);
    /// `Error::Io` otherwise. On any failure after the directory was made, it is removed
    /// again with whatever was created in it. Never blocks.
    pub fn create(parent: &Path, id: &str, opts: &ProcessDirOptions) -> Result<Self> {
        Self::create_with(parent, id, opts, open::create)
    }

    /// `create`, with the FIFO maker injectable so that tests can make it fail midway.
    fn create_with(
        parent: &Path,
        id: &str,
        opts: &ProcessDirOptions,
        mut make_fifo: impl FnMut(&Path, u32, Option<(u32, u32)>) -> Result<()>,
    ) -> Result<Self> {
        validate_id(id)?;
        check_dir(parent)?;
        let path = parent.join(id);
        DirBuilder::new()
            .mode(DIR_MODE)
            .create(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Error::AlreadyExists { path: path.clone() },
                _ => Error::io("mkdir", &path, e),
            })?;
        let dir = ProcessDir { path };
        if let Err(e) = dir.populate(opts, &mut make_fifo) {
            if let Err(cleanup) = dir.remove() {
                log::warn!("after failing to create {}: {cleanup}", dir.path.display());
            }
            return Err(e);
        }
        Ok(dir)
    }

    /// Sets the directory's mode and makes the FIFOs, through a descriptor of the
    /// directory just made (nothing is re-resolved through `parent`).
    fn populate(
        &self,
        opts: &ProcessDirOptions,
        make_fifo: &mut impl FnMut(&Path, u32, Option<(u32, u32)>) -> Result<()>,
    ) -> Result<()> {
        let pinned = PinnedDir::open(&self.path)?;
        // mkdir's mode went through the umask: make it exact.
        pinned.chmod(DIR_MODE)?;
        let mode = match opts.fifo_mode {
            0 => DEFAULT_FIFO_MODE,
            m => m,
        };
        for name in [STDIN, STDOUT, STDERR, WINSZ] {
            make_fifo(&pinned.path().join(name), mode, opts.owner).map_err(|e| self.unpinned(e))?;
        }
        make_fifo(&pinned.path().join(EXIT), mode, None).map_err(|e| self.unpinned(e))
    }

    /// `e` with a path through a [`PinnedDir`] of this directory replaced by the real one.
    fn unpinned(&self, e: Error) -> Error {
        let fix = |p: PathBuf| match p.file_name() {
            Some(name) if p.starts_with("/proc") => self.path.join(name),
            _ => p,
        };
        match e {
            Error::Io { op, path, source } => Error::Io {
                op,
                path: fix(path),
                source,
            },
            Error::NotAFifo { path } => Error::NotAFifo { path: fix(path) },
            Error::NoReader { path } => Error::NoReader { path: fix(path) },
            other => other,
        }
    }

    /// Opens the existing directory `parent/id`. Validates `id`; `Error::NotFound { path }`
    /// if it is missing, `Error::NotADirectory` if it is not a directory. Does not check
    /// which entries it holds.
    pub fn open(parent: &Path, id: &str) -> Result<Self> {
        validate_id(id)?;
        Self::from_path(&parent.join(id))
    }

    /// Opens the existing process directory at `path` (for a manager that only knows the
    /// directory). `Error::NotFound { path }` if it is missing, `Error::NotADirectory` if it
    /// is not a directory.
    pub fn from_path(path: &Path) -> Result<Self> {
        check_dir(path)?;
        Ok(ProcessDir { path: path.into() })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path of the `stdin` FIFO.
    pub fn stdin(&self) -> PathBuf {
        self.path.join(STDIN)
    }

    /// Path of the `stdout` FIFO.
    pub fn stdout(&self) -> PathBuf {
        self.path.join(STDOUT)
    }

    /// Path of the `stderr` FIFO.
    pub fn stderr(&self) -> PathBuf {
        self.path.join(STDERR)
    }

    /// Path of the `winsz` FIFO.
    pub fn winsz(&self) -> PathBuf {
        self.path.join(WINSZ)
    }

    /// Path of the `exit` FIFO.
    pub fn exit(&self) -> PathBuf {
        self.path.join(EXIT)
    }

    /// Path of the `exitcode` file.
    pub fn exitcode(&self) -> PathBuf {
        self.path.join(EXITCODE)
    }

    /// Path of the `pidfile` file (pass it to `runc --pid-file`).
    pub fn pidfile(&self) -> PathBuf {
        self.path.join(PIDFILE)
    }

    /// Path of the `log.json` file (pass it to `runc --log`).
    pub fn log_json(&self) -> PathBuf {
        self.path.join(LOG_JSON)
    }

    /// Writes `exitcode` atomically: the record goes to a temp file in the same directory,
    /// is fsynced, and is renamed over `exitcode` (then the directory is fsynced), so a
    /// reader sees either no file, the old one, or the whole new one. Replaces an existing
    /// record. On failure the temp file is removed. Errors: `Error::Io` ("create", "write",
    /// "fsync", "rename").
    pub fn write_exit(&self, record: &ExitRecord) -> Result<()> {
        write_atomic(&self.exitcode(), record.encode().as_bytes(), EXITCODE_MODE)?;
        // Make the rename itself durable.
        File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync", &self.path, e))
    }

    /// Path of the `starttime` record.
    pub fn starttime(&self) -> PathBuf {
        self.path.join(STARTTIME)
    }

    /// Writes the `starttime` record (atomically, mode 0644, as `exitcode`).
    pub fn write_start(&self, record: &StartRecord) -> Result<()> {
        write_atomic(&self.starttime(), record.encode().as_bytes(), EXITCODE_MODE)
    }

    /// Reads the `starttime` record: `Ok(None)` if there is none, `Error::BadStartRecord`
    /// on garbage, `Error::Io` ("read") if unreadable.
    pub fn read_start(&self) -> Result<Option<StartRecord>> {
        let Some(bytes) = small_file::read(&self.starttime(), MAX_EXITCODE)? else {
            return Ok(None);
        };
        StartRecord::decode(&String::from_utf8_lossy(&bytes)).map(Some)
    }

    /// What the directory alone tells about its process, for when its supervisor is gone
    /// and will record nothing more: its exit (`exitcode`), or whether the pid recorded
    /// in `starttime` still names it.
    pub fn fate(&self) -> Result<Fate> {
        if let Some(exit) = self.read_exit()? {
            return Ok(Fate::Exited(exit));
        }
        Ok(match self.read_start()? {
            Some(start) if start.is_running() => Fate::Running(start.pid),
            Some(start) => Fate::Lost(Some(start.pid)),
            None => Fate::Lost(self.read_pid().ok().flatten()),
        })
    }

    /// Reads `exitcode`. `Ok(None)` when there is none yet; `Error::BadExitCode` (with the
    /// path) on garbage, non-UTF-8 or over-long content; `Error::Io` ("read") if unreadable.
    pub fn read_exit(&self) -> Result<Option<ExitRecord>> {
        let path = self.exitcode();
        let Some(bytes) = small_file::read(&path, MAX_EXITCODE)? else {
            return Ok(None);
        };
        let bad = |reason: String| Error::BadExitCode {
            path: Some(path.clone()),
            reason,
        };
        if bytes.len() > MAX_EXITCODE {
            return Err(bad(format!("longer than {MAX_EXITCODE} bytes")));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| bad("not UTF-8".into()))?;
        match ExitRecord::decode(text) {
            Ok(record) => Ok(Some(record)),
            Err(Error::BadExitCode { reason, .. }) => Err(bad(reason)),
            Err(other) => Err(other),
        }
    }

    /// Reads `pidfile` (see [`pidfile::read_pid_file`]): `Ok(None)` if absent,
    /// `Error::BadPidFile` if garbage or not positive.
    pub fn read_pid(&self) -> Result<Option<i32>> {
        pidfile::read_pid_file(&self.pidfile())
    }

    /// Removes the directory with everything in it: the FIFOs, the files, any leftover temp
    /// file, and whatever else was put there. Symlinks inside are removed, not followed.
    /// A missing directory is fine (idempotent). Errors: `Error::Io` ("remove").
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &self.path, e)),
        }
    }
}

/// Ok if `path` is an existing directory (following symlinks).
fn check_dir(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::NotADirectory { path: path.into() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::NotFound { path: path.into() })
        }
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn fifo_names() -> Vec<String> {
        let mut v: Vec<String> = [STDIN, STDOUT, STDERR, WINSZ, EXIT]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn create_makes_all_fifos() {
        let parent = tempfile::tempdir().unwrap();
        let pd = ProcessDir::create(parent.path(), "init", &ProcessDirOptions::default()).unwrap();
        assert_eq!(pd.path(), parent.path().join("init"));
        let meta = std::fs::metadata(pd.path()).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o7777, 0o700);
        assert_eq!(entries(pd.path()), fifo_names());
        for p in [pd.stdin(), pd.stdout(), pd.stderr(), pd.winsz(), pd.exit()] {
            let meta = std::fs::symlink_metadata(&p).unwrap();
            assert!(meta.file_type().is_fifo(), "{}", p.display());
            assert_eq!(meta.mode() & 0o7777, 0o600, "{}", p.display());
        }
        assert_eq!(pd.exitcode(), pd.path().join("exitcode"));
        assert_eq!(pd.pidfile(), pd.path().join("pidfile"));
        assert_eq!(pd.log_json(), pd.path().join("log.json"));
    }

    #[test]
    fn create_applies_mode_and_owner() {
        if test_skip::unless_root() {
            return; // chown
        }
        let parent = tempfile::tempdir().unwrap();
        let opts = ProcessDirOptions {
            fifo_mode: 0o660,
            owner: Some((1000, 1001)),
        };
        let pd = ProcessDir::create(parent.path(), "p", &opts).unwrap();
        for p in [pd.stdin(), pd.stdout(), pd.stderr(), pd.winsz()] {
            let meta = std::fs::symlink_metadata(&p).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (1000, 1001), "{}", p.display());
            assert_eq!(meta.mode() & 0o7777, 0o660);
        }
        let meta = std::fs::symlink_metadata(pd.exit()).unwrap();
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
        assert_eq!(meta.mode() & 0o7777, 0o660);
        let meta = std::fs::metadata(pd.path()).unwrap();
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    }

    #[test]
    fn create_twice_fails() {
        let parent = tempfile::tempdir().unwrap();
        let opts = ProcessDirOptions::default();
        let pd = ProcessDir::create(parent.path(), "p", &opts).unwrap();
        pd.write_exit(&ExitRecord {
            code: 1,
            exited_at: UNIX_EPOCH,
        })
        .unwrap();
        match ProcessDir::create(parent.path(), "p", &opts) {
            Err(Error::AlreadyExists { path }) => assert_eq!(path, pd.path()),
            other => panic!("{other:?}"),
        }
        // The existing directory was left alone.
        assert_eq!(pd.read_exit().unwrap().unwrap().code, 1);
    }

    #[test]
    fn create_rejects_bad_id_and_touches_nothing() {
        let parent = tempfile::tempdir().unwrap();
        for id in ["", ".", "..", "a/b", "../escape", "a\nb"] {
            match ProcessDir::create(parent.path(), id, &ProcessDirOptions::default()) {
                Err(Error::InvalidId { id: got, .. }) => assert_eq!(got, id),
                other => panic!("{id:?}: {other:?}"),
            }
        }
        assert!(entries(parent.path()).is_empty());
    }

    #[test]
    fn create_needs_parent() {
        let parent = tempfile::tempdir().unwrap();
        let missing = parent.path().join("missing");
        match ProcessDir::create(&missing, "p", &ProcessDirOptions::default()) {
            Err(e @ Error::NotFound { .. }) => {
                assert!(e.to_string().contains(&missing.display().to_string()))
            }
            other => panic!("{other:?}"),
        }
        let file = parent.path().join("file");
        std::fs::write(&file, b"").unwrap();
        match ProcessDir::create(&file, "p", &ProcessDirOptions::default()) {
            Err(Error::NotADirectory { path }) => assert_eq!(path, file),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failure_midway_leaves_nothing() {
        let parent = tempfile::tempdir().unwrap();
        let mut calls = 0;
        let res = ProcessDir::create_with(
            parent.path(),
            "p",
            &ProcessDirOptions::default(),
            |path, mode, owner| {
                calls += 1;
                if calls == 3 {
                    Err(Error::NotAFifo { path: path.into() })
                } else {
                    open::create(path, mode, owner)
                }
            },
        );
        match res {
            Err(Error::NotAFifo { path }) => assert_eq!(path, parent.path().join("p").join(STDERR)),
            other => panic!("{other:?}"),
        }
        assert_eq!(calls, 3);
        assert!(entries(parent.path()).is_empty());

        // Failing on the last FIFO too.
        let res = ProcessDir::create_with(
            parent.path(),
            "q",
            &ProcessDirOptions::default(),
            |path, mode, owner| {
                if path.ends_with(EXIT) {
                    Err(Error::NoReader { path: path.into() })
                } else {
                    open::create(path, mode, owner)
                }
            },
        );
        assert!(matches!(res, Err(Error::NoReader { .. })));
        assert!(entries(parent.path()).is_empty());
    }

    #[test]
    fn open_existing() {
        let parent = tempfile::tempdir().unwrap();
        let pd = ProcessDir::create(parent.path(), "p", &ProcessDirOptions::default()).unwrap();
        assert_eq!(ProcessDir::open(parent.path(), "p").unwrap(), pd);
        assert_eq!(ProcessDir::from_path(pd.path()).unwrap(), pd);
        match ProcessDir::open(parent.path(), "nope") {
            Err(Error::NotFound { path }) => assert_eq!(path, parent.path().join("nope")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ProcessDir::open(parent.path(), "../p"),
            Err(Error::InvalidId { .. })
        ));
        assert!(matches!(
            ProcessDir::from_path(&pd.stdin()),
            Err(Error::NotADirectory { .. })
        ));
    }

    #[test]
    fn exit_round_trip_is_atomic() {
        let parent = tempfile::tempdir().unwrap();
        let pd = ProcessDir::create(parent.path(), "p", &ProcessDirOptions::default()).unwrap();
        assert_eq!(pd.read_exit().unwrap(), None);
        let rec = ExitRecord {
            code: 137,
            exited_at: UNIX_EPOCH + Duration::new(1_795_404_285, 123_456_789),
        };
        pd.write_exit(&rec).unwrap();
        assert_eq!(pd.read_exit().unwrap(), Some(rec));
        let mut want = fifo_names();
        want.push(EXITCODE.to_string());
        want.sort();
        assert_eq!(entries(pd.path()), want, "no temp file left behind");
        // Shell-friendly.
        let text = std::fs::read_to_string(pd.exitcode()).unwrap();
        assert_eq!(text.lines().next(), Some("137"));

        // Overwrite.
        let rec2 = ExitRecord {
            code: 0,
            exited_at: SystemTime::now(),
        };
        pd.write_exit(&rec2).unwrap();
        assert_eq!(pd.read_exit().unwrap(), Some(rec2));
        assert_eq!(entries(pd.path()), want);
    }

    #[test]
    fn write_exit_failure_reports_and_cleans() {
        let parent = tempfile::tempdir().unwrap();
        let pd = ProcessDir::create(parent.path(), "p", &ProcessDirOptions::default()).unwrap();
        // A directory in the way of the rename.
        std::fs::create_dir(pd.exitcode()).unwrap();
        std::fs::write(pd.exitcode().join("x"), b"").unwrap();
        let rec = ExitRecord {
            code: 1,
            exited_at: UNIX_EPOCH,
        };
        match pd.write_exit(&rec) {
            Err(Error::Io {
                op: "rename", path, ..
            }) => assert_eq!(path, pd.exitcode()),
            other => panic!("{other:?}"),
        }
        let mut want = fifo_names();
        want.push(EXITCODE.to_string());
        want.sort();
        assert_eq!(entries(pd.path()), want, "temp file removed");
        // Reading a directory is an I/O error, not "no record".
        assert!(matches!(pd.read_exit(), Err(Error::Io { op: "read", .. })));
    }

    #[test]
    fn read_exit_garbage() {
        let parent = tempfile::tempdir().unwrap();
        let pd = ProcessDir::create(parent.path(), "p", &ProcessDirOptions::default()).unwrap();
        for content in [&b"garbage\n"[..], b"", b"-1\n", b"\xff\xfe", &[b'1'; 5000]] {
            std::fs::write(pd.exitcode(), content).unwrap();
            match pd.read_exit() {
                Err(Error::BadExitCode { path, .. }) => assert_eq!(path, Some(pd.exitcode())),
                other => panic!("{content:?}: {other:?}"),
            }
        }
        // dadoo's old format.
        std::fs::write(pd.exitcode(), b"42").unwrap();
        let rec = pd.read_exit().unwrap().unwrap();
        assert_eq!((rec.code, rec.exited_at), (42, UNIX_EPOCH));
    }

    #[test]
    fn read_pid_variants() {
        let parent = tempfile::tempdir().unwrap();
        let pd = ProcessDir::create(parent.path(), "p", &ProcessDirOptions::default()).unwrap();
        assert_eq!(pd.read_pid().unwrap(), None);
        std::fs::write(pd.pidfile(), b"4242").unwrap();
        assert_eq!(pd.read_pid().unwrap(), Some(4242));
        std::fs::write(pd.pidfile(), b"4242\n").unwrap();
        assert_eq!(pd.read_pid().unwrap(), Some(4242));
        for bad in [&b"0"[..], b"-1", b"pid", b""] {
            std::fs::write(pd.pidfile(), bad).unwrap();
            match pd.read_pid() {
                Err(Error::BadPidFile { path, .. }) => assert_eq!(path, pd.pidfile()),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn remove_is_idempotent() {
        let parent = tempfile::tempdir().unwrap();
        let pd = ProcessDir::create(parent.path(), "p", &ProcessDirOptions::default()).unwrap();
        pd.write_exit(&ExitRecord {
            code: 0,
            exited_at: UNIX_EPOCH,
        })
        .unwrap();
        std::fs::write(pd.pidfile(), b"1").unwrap();
        std::fs::write(pd.log_json(), b"{}").unwrap();
        std::fs::write(pd.path().join(".exitcode.1.2.tmp"), b"1").unwrap();
        // A symlink out of the directory must not be followed.
        let outside = parent.path().join("outside");
        std::fs::write(&outside, b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, pd.path().join("link")).unwrap();

        pd.remove().unwrap();
        assert!(!pd.path().exists());
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
        pd.remove().unwrap();
        assert_eq!(entries(parent.path()), ["outside"]);
    }

    #[test]
    fn fifos_work_for_reattach() {
        // The supervisor holds `exit` RDWR; a manager reading it sees EOF only once that
        // end is closed.
        use std::io::Read;
        let parent = tempfile::tempdir().unwrap();
        let pd = ProcessDir::create(parent.path(), "p", &ProcessDirOptions::default()).unwrap();
        let held = open::open_rdwr(&pd.exit()).unwrap();
        let mut manager = open::open_read(&pd.exit(), true).unwrap();
        let mut buf = [0u8; 1];
        let err = manager.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        drop(held);
        assert_eq!(manager.read(&mut buf).unwrap(), 0);
    }
}

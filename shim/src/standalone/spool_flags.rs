//! `run`/`exec --spool-limit N [--spool-policy block|drop-oldest]`: the output spool of
//! the supervised process (issue 13, [`crate::process_core::spool`]). While no manager reads,
//! the process's output goes to a spool file (unlinked, 0600) in its process directory up
//! to N bytes per stream; at the limit the process blocks (`block`) or the oldest spooled
//! bytes are dropped (`drop-oldest`), counted in the process directory's `spool-dropped`
//! (`stdout N` and `stderr N` lines) and the supervisor's log.

use super::args::Parsed;
use super::errors::{CliError, CliResult};
use crate::process_core::process_stdio::{ProcessStdio, Stream};
use crate::process_core::spool::{self, SpoolConfig, SpoolPolicy};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The options, as `args::Spec::valued` entries (no short aliases).
pub const LIMIT_FLAG: &str = "--spool-limit";
/// See [`LIMIT_FLAG`].
pub const POLICY_FLAG: &str = "--spool-policy";
/// The file in the process directory that counts what `drop-oldest` dropped.
pub const DROPPED_FILE: &str = "spool-dropped";

/// The paragraph `run --help` and `exec --help` add.
pub const HELP: &str = "\
--spool-limit N (bytes, K/M/G suffixes; default 64M; 0: none) --spool-policy block|drop-oldest
(default block): while no manager reads, each output stream goes to a spool file in the
process directory, up to N bytes; then the process blocks (block) or the oldest spooled
bytes are dropped (drop-oldest), counted in the process directory's spool-dropped.";

/// The spool settings of a supervised process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolFlags {
    pub limit: u64,
    pub policy: SpoolPolicy,
}

impl Default for SpoolFlags {
    fn default() -> Self {
        SpoolFlags {
            limit: spool::DEFAULT_LIMIT,
            policy: SpoolPolicy::Block,
        }
    }
}

impl SpoolFlags {
    /// The settings the flags in `p` ask for (the defaults for those not given); a usage
    /// error names a value that cannot be parsed.
    pub fn from_args(p: &Parsed) -> CliResult<Self> {
        let mut flags = SpoolFlags::default();
        if let Some(v) = p.value(LIMIT_FLAG) {
            flags.limit =
                spool::parse_limit(v).map_err(|e| CliError::Usage(format!("{LIMIT_FLAG}: {e}")))?;
        }
        if let Some(v) = p.value(POLICY_FLAG) {
            flags.policy = v
                .parse()
                .map_err(|e| CliError::Usage(format!("{POLICY_FLAG}: {e}")))?;
        }
        Ok(flags)
    }

    /// The flags again, for the supervisor's command line.
    pub fn to_args(self) -> Vec<OsString> {
        let policy = match self.policy {
            SpoolPolicy::Block => "block",
            SpoolPolicy::DropOldest => "drop-oldest",
        };
        vec![
            LIMIT_FLAG.into(),
            self.limit.to_string().into(),
            POLICY_FLAG.into(),
            policy.into(),
        ]
    }

    /// The spool configuration of the process whose directory is `dir`; `None` with a
    /// limit of 0.
    pub fn config(self, name: &str, dir: &Path) -> Option<SpoolConfig> {
        (self.limit > 0).then(|| SpoolConfig {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            limit: self.limit,
            policy: self.policy,
        })
    }
}

/// Keeps `spool-dropped` up to date with what the process's spools dropped.
#[derive(Debug)]
pub struct DropReport {
    dir: PathBuf,
    /// Per output stream (stdout, stderr): the count last written.
    written: [u64; 2],
    /// The highest count seen (a pump's count goes with it when it ends).
    seen: [u64; 2],
    last_write: Option<Instant>,
}

/// Writes are at most this frequent while drop-oldest drops.
const REPORT_EVERY: Duration = Duration::from_millis(200);

impl DropReport {
    pub fn new(dir: &Path) -> Self {
        DropReport {
            dir: dir.to_path_buf(),
            written: [0; 2],
            seen: [0; 2],
            last_write: None,
        }
    }

    /// A report carried across a live upgrade: the counts [`DropReport::counts`] gave.
    pub fn with_counts(dir: &Path, written: [u64; 2], seen: [u64; 2]) -> Self {
        DropReport {
            written,
            seen,
            ..DropReport::new(dir)
        }
    }

    /// The counts last written and the highest seen, per output stream.
    pub fn counts(&self) -> ([u64; 2], [u64; 2]) {
        (self.written, self.seen)
    }

    /// Takes in the counts of `stdio`'s spools; rewrites the file when they changed (at
    /// most every 200 ms).
    pub fn update(&mut self, stdio: &ProcessStdio) {
        for (i, stream) in Stream::OUTPUTS.into_iter().enumerate() {
            self.seen[i] = self.seen[i].max(stdio.dropped(stream));
        }
        let due = self
            .last_write
            .is_none_or(|at| at.elapsed() >= REPORT_EVERY);
        if self.seen != self.written && due {
            self.write();
        }
    }

    /// The supervisor leaves: what is still spooled is dropped too; the final counts are
    /// written (and logged) if anything was dropped.
    pub fn finish(&mut self, stdio: &ProcessStdio) {
        self.update(stdio);
        for (i, stream) in Stream::OUTPUTS.into_iter().enumerate() {
            self.seen[i] += stdio.spooled(stream);
        }
        if self.seen != self.written {
            log::warn!(
                "output dropped: stdout {} bytes, stderr {} bytes",
                self.seen[0],
                self.seen[1]
            );
            self.write();
        }
    }

    fn write(&mut self) {
        self.last_write = Some(Instant::now());
        match write_dropped(&self.dir, self.seen[0], self.seen[1]) {
            Ok(()) => self.written = self.seen,
            Err(e) => log::warn!("{}: {e}", self.dir.join(DROPPED_FILE).display()),
        }
    }
}

/// Mode of `spool-dropped`: readable by a manager, as `exitcode` is.
const DROPPED_MODE: u32 = 0o644;

/// Writes the counts of dropped bytes into `dir`'s `spool-dropped`, atomically and without
/// following a symlink (`fifo::write_atomic_with`); not fsynced: the supervisor's loop
/// writes it, and the counts mean nothing after a reboot.
pub fn write_dropped(dir: &Path, stdout: u64, stderr: u64) -> Result<(), fifo::Error> {
    fifo::write_atomic_with(
        &dir.join(DROPPED_FILE),
        format!("stdout {stdout}\nstderr {stderr}\n").as_bytes(),
        DROPPED_MODE,
        fifo::Durability::Process,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standalone::args::{self, Spec};

    const SPEC: Spec = Spec {
        valued: &[(LIMIT_FLAG, None), (POLICY_FLAG, None)],
        flags: &[],
    };

    fn parse(a: &[&str]) -> CliResult<SpoolFlags> {
        let v: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        SpoolFlags::from_args(&args::parse(&v, SPEC)?)
    }

    #[test]
    fn defaults_parses_and_round_trips() {
        assert_eq!(parse(&[]).unwrap(), SpoolFlags::default());
        let f = parse(&["--spool-limit", "1M", "--spool-policy", "drop-oldest"]).unwrap();
        assert_eq!(
            f,
            SpoolFlags {
                limit: 1 << 20,
                policy: SpoolPolicy::DropOldest
            }
        );
        let back: Vec<String> = f
            .to_args()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        let back: Vec<&str> = back.iter().map(String::as_str).collect();
        assert_eq!(parse(&back).unwrap(), f);
        assert!(parse(&["--spool-limit", "0"])
            .unwrap()
            .config("x", Path::new("/"))
            .is_none());
        assert!(parse(&["--spool-limit", "x"]).is_err());
        assert!(parse(&["--spool-policy", "drop"]).is_err());
    }

    #[test]
    fn a_symlink_in_the_process_directory_is_never_written_through() {
        // Before: the counts went to a fixed temp name with std::fs::write, which follows
        // a symlink planted there, and the symlink was then renamed into place.
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        for name in [".spool-dropped.tmp", DROPPED_FILE] {
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }
        write_dropped(dir.path(), 7, 1).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let written = dir.path().join(DROPPED_FILE);
        assert!(!std::fs::symlink_metadata(&written)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            std::fs::read_to_string(written).unwrap(),
            "stdout 7\nstderr 1\n"
        );
    }

    #[test]
    fn writes_the_dropped_counts() {
        let dir = tempfile::tempdir().unwrap();
        write_dropped(dir.path(), 5, 0).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(DROPPED_FILE)).unwrap(),
            "stdout 5\nstderr 0\n"
        );
    }
}

//! A bounded on-disk spool for one output stream: where a process's output goes while its
//! reader (containerd, a standalone manager) is away or slow, so the process never blocks
//! in `write` and nothing it wrote is lost (issue 13).
//!
//! The spool is a FIFO queue of bytes in one file: appended at `end`, drained from
//! `start`, oldest first. Bytes enter by splice(2) from the process's pipe (or by
//! `pwrite` from a pump's buffer, for a pty) and leave through a 64 KiB buffer into the
//! destination FIFO (see [`Spool::drain_into`] for why not splice): they live in the page
//! cache, never in the shim's memory, whose RSS does not grow with what is spooled. When the queue empties the file is
//! truncated to nothing; while a reader drains it without ever catching up, the drained
//! head is punched out (`FALLOC_FL_PUNCH_HOLE`) so the disk used stays near the limit.
//!
//! The file is created unlinked (`O_TMPFILE`, mode 0600) in the configured directory (the
//! bundle, the standalone process directory): it goes away with the last fd, also if the
//! shim is killed, and no other process can open it by name.
//!
//! At the limit the [`SpoolPolicy`] decides: `Block` stops taking bytes (the process
//! blocks, as without a spool), `DropOldest` discards the oldest spooled bytes to make
//! room and counts them ([`Spool::dropped`]). A full disk (`ENOSPC`, `EDQUOT`, `EFBIG`)
//! always blocks: nothing is lost, and it is logged once per episode.

use nix::errno::Errno;
use nix::fcntl::{fallocate, splice, FallocateFlags, SpliceFFlags};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Bytes moved per splice call (as the pump's direct path).
const CHUNK: usize = 1 << 20;
/// Buffer of the drain (allocated while the spool holds bytes).
const DRAIN_BUFFER: usize = 64 * 1024;
/// A drained head at least this long is punched out of the file.
const PUNCH_AFTER: u64 = 4 << 20;
/// Default per-stream limit when a face enables the spool without naming one.
pub const DEFAULT_LIMIT: u64 = 64 << 20;

/// What a full spool does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SpoolPolicy {
    /// Take no more bytes: the process blocks in `write` until the reader catches up.
    #[default]
    Block,
    /// Discard the oldest spooled bytes to make room (counted and reported).
    DropOldest,
}

impl std::str::FromStr for SpoolPolicy {
    type Err = SpoolConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "block" => Ok(SpoolPolicy::Block),
            "drop-oldest" => Ok(SpoolPolicy::DropOldest),
            other => Err(SpoolConfigError::Policy(other.to_string())),
        }
    }
}

/// A spool setting that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolConfigError {
    #[error("spool policy {0:?}: expected \"block\" or \"drop-oldest\"")]
    Policy(String),
    #[error("spool limit {0:?}: expected a byte count, optionally with a K, M or G suffix (KiB, MiB, GiB)")]
    Limit(String),
}

/// Parses a spool limit: a byte count with an optional `K`/`M`/`G` suffix (binary units,
/// `KiB`/`MiB`/`GiB` accepted too). `0` disables the spool.
pub fn parse_limit(s: &str) -> Result<u64, SpoolConfigError> {
    let t = s.trim();
    let err = || SpoolConfigError::Limit(s.to_string());
    let upper = t.to_ascii_uppercase();
    let digits_end = upper
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(upper.len());
    let (num, unit) = upper.split_at(digits_end);
    let n: u64 = num.parse().map_err(|_| err())?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(err()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(err)
}

/// Where and how a stream spools. A limit of 0 means no spool (today's blocking).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpoolConfig {
    /// What the spool belongs to, in log lines (e.g. `container/exec`).
    pub name: String,
    /// Directory of the spool files (they are created unlinked there).
    pub dir: PathBuf,
    /// Most bytes a stream's spool holds.
    pub limit: u64,
    pub policy: SpoolPolicy,
}

impl SpoolConfig {
    /// Whether a spool is to be made at all.
    pub fn enabled(&self) -> bool {
        self.limit > 0
    }
}

/// How an attempt to append to the spool went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// This many bytes were appended.
    Moved(usize),
    /// The source is at EOF.
    Eof,
    /// The source has nothing now.
    Empty,
    /// At the limit under `Block`, or the disk is full: the writer waits.
    Full,
    /// The source cannot be spliced (not a pipe): use [`Spool::append`].
    NotSpliceable,
    /// The source failed (a pty whose other side closed): treat as EOF.
    Failed,
}

/// How an attempt to drain the spool went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    Moved(usize),
    /// The destination is full.
    Full,
    /// The destination is gone (EPIPE): nothing more can be delivered.
    Gone,
}

/// One stream's spool. See the module documentation.
#[derive(Debug)]
pub struct Spool {
    file: File,
    /// Label for log lines (e.g. `container/exec stdout`).
    label: String,
    limit: u64,
    policy: SpoolPolicy,
    /// Offset of the oldest spooled byte.
    start: u64,
    /// Offset past the newest spooled byte.
    end: u64,
    /// Offset up to which the file's head has been punched out.
    punched: u64,
    dropped: u64,
    /// Set while the disk is full (logged once per episode).
    disk_full: bool,
    /// Whether anything was ever spooled (logged once).
    used: bool,
    /// The drain's buffer: empty while the spool is.
    buf: Vec<u8>,
    /// `buf[..buffered]` holds the spool's bytes from offset `buffered_at` (read, not yet
    /// written); stale once `start` has moved elsewhere (drop-oldest).
    buffered: usize,
    buffered_at: Option<u64>,
}

/// Opens an unlinked, mode 0600 file in `dir`: `O_TMPFILE` where the filesystem has it,
/// else a fresh name that is unlinked at once.
fn open_unlinked(dir: &Path) -> io::Result<File> {
    let tmp = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir);
    match tmp {
        Ok(f) => return Ok(f),
        Err(e)
            if !matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
            ) =>
        {
            return Err(e)
        }
        Err(_) => {}
    }
    for n in 0..100u32 {
        let path = dir.join(format!(".spool-{}-{n}", std::process::id()));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => {
                std::fs::remove_file(&path)?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no free spool file name in {}", dir.display()),
    ))
}

fn is_disk_full(e: Errno) -> bool {
    matches!(e, Errno::ENOSPC | Errno::EDQUOT | Errno::EFBIG)
}

fn to_off(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Spool {
    /// A spool for the stream named `label` per `cfg` (whose limit must be > 0).
    pub fn open(cfg: &SpoolConfig, label: impl Into<String>) -> io::Result<Spool> {
        let file = open_unlinked(&cfg.dir).map_err(|e| {
            io::Error::new(e.kind(), format!("spool in {}: {e}", cfg.dir.display()))
        })?;
        Ok(Spool::from_file(file, cfg.limit, cfg.policy, label))
    }

    /// A spool over `file` (empty, read-write): for tests on a chosen filesystem.
    pub fn from_file(
        file: File,
        limit: u64,
        policy: SpoolPolicy,
        label: impl Into<String>,
    ) -> Spool {
        Spool {
            file,
            label: label.into(),
            limit,
            policy,
            start: 0,
            end: 0,
            punched: 0,
            dropped: 0,
            disk_full: false,
            used: false,
            buf: Vec::new(),
            buffered: 0,
            buffered_at: None,
        }
    }

    /// Bytes waiting in the spool.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Bytes discarded by `DropOldest` so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// How many bytes may be appended now, after `DropOldest` made room for up to `want`.
    fn room_for(&mut self, want: usize) -> usize {
        let want = want.max(1) as u64;
        let room = self.limit.saturating_sub(self.len());
        if room >= want || self.policy == SpoolPolicy::Block {
            return usize::try_from(room.min(want)).unwrap_or(CHUNK);
        }
        // Drop just enough of the oldest bytes for `want` (or all, if the limit is
        // smaller than that).
        let drop = (want - room).min(self.len());
        if self.dropped == 0 {
            log::warn!(
                "{}: spool full ({} bytes): dropping the oldest output (drop-oldest)",
                self.label,
                self.limit
            );
        }
        self.start += drop;
        self.dropped += drop;
        self.compact();
        usize::try_from(self.limit.saturating_sub(self.len()).min(want)).unwrap_or(CHUNK)
    }

    /// Appends what `src` (a pipe) holds, up to the room left: by splice, so the bytes
    /// never enter the shim's memory.
    pub fn fill_from(&mut self, src: &File) -> Fill {
        let pending = crate::process_core::fionread::pending(src.as_fd()).unwrap_or(CHUNK);
        let want = pending.clamp(1, CHUNK);
        let room = self.room_for(want);
        if room == 0 {
            return Fill::Full;
        }
        let mut off = to_off(self.end);
        loop {
            match splice(
                src,
                None,
                &self.file,
                Some(&mut off),
                room,
                SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE,
            ) {
                Ok(0) => return Fill::Eof,
                Ok(n) => {
                    self.appended(n);
                    return Fill::Moved(n);
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Fill::Empty,
                Err(Errno::EINVAL) | Err(Errno::ENOSYS) => return Fill::NotSpliceable,
                Err(e) if is_disk_full(e) => {
                    self.disk_full_now(e);
                    return Fill::Full;
                }
                Err(_) => return Fill::Failed,
            }
        }
    }

    /// Appends from `bytes` what fits; `Ok(0)` when full (limit under `Block`, or disk).
    pub fn append(&mut self, bytes: &[u8]) -> usize {
        let room = self.room_for(bytes.len());
        if room == 0 {
            return 0;
        }
        loop {
            match self
                .file
                .write_at(&bytes[..room.min(bytes.len())], self.end)
            {
                Ok(n) => {
                    self.appended(n);
                    return n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.disk_full_now(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)));
                    return 0;
                }
            }
        }
    }

    /// Moves the oldest spooled bytes into `dst` (a FIFO, or any file).
    ///
    /// Through a small buffer, not splice: a splice from a file into a pipe passes
    /// references to the file's page-cache pages, which the reader may take much later;
    /// the spool truncates and punches its file as it drains, and a page truncated under
    /// a pipe reads as zeros (or fails). The copy costs little next to the disk write the
    /// bytes already took, and only bytes that had to wait take this path.
    pub fn drain_into(&mut self, mut dst: &File) -> Drain {
        use std::io::Write;
        if self.is_empty() {
            return Drain::Moved(0);
        }
        if self.buf.is_empty() {
            self.buf = vec![0u8; DRAIN_BUFFER];
        }
        // Bytes read earlier and refused by a full destination are written from the
        // buffer, not read again: a writer that keeps the source busy wakes the pump
        // often while the destination stays full.
        if self.buffered_at != Some(self.start) || self.buffered == 0 {
            let want = usize::try_from(self.len())
                .unwrap_or(DRAIN_BUFFER)
                .min(DRAIN_BUFFER);
            let n = loop {
                match self.file.read_at(&mut self.buf[..want], self.start) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::warn!("{}: reading the spool: {e}", self.label);
                        return Drain::Gone;
                    }
                }
            };
            if n == 0 {
                // The file is shorter than the queue says (truncated under us): nothing
                // more can come out of it.
                log::warn!("{}: spool file ended early", self.label);
                self.start = self.end;
                self.compact();
                return Drain::Gone;
            }
            self.buffered_at = Some(self.start);
            self.buffered = n;
        }
        let moved = loop {
            match dst.write(&self.buf[..self.buffered]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drain::Full,
                Err(_) => return Drain::Gone,
            }
        };
        if moved < self.buffered {
            self.buf.copy_within(moved..self.buffered, 0);
            self.buffered -= moved;
            self.buffered_at = Some(self.start + moved as u64);
        } else {
            self.buffered = 0;
        }
        self.start += moved as u64;
        self.compact();
        Drain::Moved(moved)
    }

    /// Frees the disk the drained head uses: the whole file once empty, else the head in
    /// large steps.
    fn compact(&mut self) {
        if self.is_empty() {
            if self.end > 0 {
                if let Err(e) = self.file.set_len(0) {
                    log::debug!("{}: truncating the spool: {e}", self.label);
                }
            }
            self.start = 0;
            self.end = 0;
            self.punched = 0;
            self.buf = Vec::new();
            self.buffered = 0;
            self.buffered_at = None;
            return;
        }
        let head = self.start & !4095;
        if head >= self.punched + PUNCH_AFTER {
            let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
            match fallocate(
                self.file.as_raw_fd(),
                flags,
                to_off(self.punched),
                to_off(head - self.punched),
            ) {
                Ok(()) => self.punched = head,
                // A filesystem without hole punching: the space comes back when the
                // spool next empties.
                Err(_) => self.punched = head,
            }
        }
    }

    fn appended(&mut self, n: usize) {
        if self.end == 0 && self.start == 0 && !self.used {
            log::info!(
                "{}: the reader is not keeping up: output spooled (logged once)",
                self.label
            );
            self.used = true;
        }
        self.end += n as u64;
        self.disk_full_over();
    }

    fn disk_full_now(&mut self, e: Errno) {
        if !self.disk_full {
            log::warn!(
                "{}: cannot spool ({e}): the process blocks until its reader catches up; \
                 nothing is lost",
                self.label
            );
            self.disk_full = true;
        }
    }

    fn disk_full_over(&mut self) {
        if self.disk_full {
            log::info!("{}: spooling again", self.label);
            self.disk_full = false;
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.is_empty() {
            log::warn!(
                "{}: {} spooled bytes dropped unread (the process was deleted)",
                self.label,
                self.len()
            );
        }
        if self.dropped > 0 {
            log::warn!(
                "{}: {} bytes dropped in all by drop-oldest",
                self.label,
                self.dropped
            );
        }
    }
}

mod snapshot;
pub use snapshot::*;

/// A spool in `dir`, as a face makes one by default (64 MiB, `block`): for the tests of
/// the modules that pump into one.
#[cfg(test)]
pub(crate) fn test_spool_in(dir: &std::path::Path) -> Spool {
    let cfg = SpoolConfig {
        name: "t".into(),
        dir: dir.to_path_buf(),
        limit: DEFAULT_LIMIT,
        policy: SpoolPolicy::Block,
    };
    Spool::open(&cfg, "t").unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process_core::pump::{set_nonblocking, Direction, Pump, PumpState};
    use crate::process_core::test_fds::pipe;
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;
    use std::time::Duration;

    fn cfg(dir: &Path, limit: u64, policy: SpoolPolicy) -> SpoolConfig {
        SpoolConfig {
            name: "test".into(),
            dir: dir.to_path_buf(),
            limit,
            policy,
        }
    }

    /// Numbered 8-byte records `00000000`, `00000001`...: order and gaps are visible.
    fn records(from: usize, n: usize) -> Vec<u8> {
        (from..from + n)
            .flat_map(|i| format!("{i:07}\n").into_bytes())
            .collect()
    }

    /// A pump from a pipe into a pipe, with a spool; returns the writer (non-blocking)
    /// and the destination's reader (non-blocking).
    fn spooled_pump(spool: Spool) -> (Pump, File, File) {
        let (src_r, src_w) = pipe();
        let (dst_r, dst_w) = pipe();
        let pump = Pump::new(Direction::Output, src_r, dst_w, None)
            .unwrap()
            .with_spool(spool);
        set_nonblocking(src_w.as_fd()).unwrap();
        set_nonblocking(dst_r.as_fd()).unwrap();
        (pump, File::from(src_w), File::from(dst_r))
    }

    /// Writes all of `data` while nobody reads the destination, running the pump whenever
    /// the source pipe is full; returns how much the writer could write before it would
    /// have blocked (the pump, having moved all it could, left the pipe full).
    fn write_unread(pump: &mut Pump, writer: &mut File, data: &[u8]) -> usize {
        let mut off = 0;
        let mut stuck = false;
        while off < data.len() {
            match writer.write(&data[off..(off + 65536).min(data.len())]) {
                Ok(n) => {
                    off += n;
                    stuck = false;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if stuck {
                        // Declined while the reader was active a moment ago: the face
                        // runs the pump again at `recheck_at`, as here.
                        match pump.recheck_at() {
                            Some(at) => {
                                std::thread::sleep(
                                    at.saturating_duration_since(std::time::Instant::now()),
                                );
                                assert_ne!(pump.run(), PumpState::Done);
                                continue;
                            }
                            None => return off,
                        }
                    }
                    assert_ne!(pump.run(), PumpState::Done);
                    stuck = true;
                }
                Err(e) => panic!("write: {e}"),
            }
        }
        assert_ne!(pump.run(), PumpState::Done);
        off
    }

    /// Reads the destination until the pump is done (the writer must be closed).
    /// Reads a non-blocking `reader` to EOF; a child another test is spawning may hold a
    /// copy of the writer until its exec (process_core::test_fds), so EOF may come late.
    fn read_to_eof(reader: &mut File, out: &mut Vec<u8>) {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < until, "no EOF");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn read_all(mut pump: Pump, reader: &mut File) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let state = pump.run();
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if state == PumpState::Done {
                        drop(pump);
                        read_to_eof(reader, &mut out);
                        return out;
                    }
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        out
    }

    #[test]
    fn parses_limits_and_policies() {
        assert_eq!(parse_limit("0"), Ok(0));
        assert_eq!(parse_limit("4096"), Ok(4096));
        assert_eq!(parse_limit("64M"), Ok(64 << 20));
        assert_eq!(parse_limit("64MiB"), Ok(64 << 20));
        assert_eq!(parse_limit("1k"), Ok(1024));
        assert_eq!(parse_limit("2G"), Ok(2 << 30));
        assert!(parse_limit("").is_err());
        assert!(parse_limit("-1").is_err());
        assert!(parse_limit("1T").is_err());
        assert!(parse_limit("99999999999999999999G").is_err());
        assert_eq!("block".parse(), Ok(SpoolPolicy::Block));
        assert_eq!("drop-oldest".parse(), Ok(SpoolPolicy::DropOldest));
        assert!("drop".parse::<SpoolPolicy>().is_err());
    }

    #[test]
    fn the_file_is_unlinked_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&cfg(dir.path(), 1 << 20, SpoolPolicy::Block), "t").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mode = spool.file.metadata().unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn a_writer_nobody_reads_never_blocks_and_order_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&cfg(dir.path(), 64 << 20, SpoolPolicy::Block), "t").unwrap();
        let (mut pump, mut writer, mut reader) = spooled_pump(spool);
        // 8 MiB: many times what the two pipes hold.
        let data = records(0, 1 << 20);
        assert_eq!(write_unread(&mut pump, &mut writer, &data), data.len());
        assert!(pump.spooled() > 4 << 20, "spooled {}", pump.spooled());
        // A reader takes some, more comes, through the spool behind the older bytes.
        let mut head = vec![0u8; 100_000];
        let n = reader.read(&mut head).unwrap();
        let more = records(1 << 20, 1000);
        assert_eq!(write_unread(&mut pump, &mut writer, &more), more.len());
        drop(writer);
        let mut out = head[..n].to_vec();
        out.extend(read_all(pump, &mut reader));
        let mut want = data;
        want.extend(more);
        assert!(out == want, "{} bytes out, {} in", out.len(), want.len());
    }

    #[test]
    fn the_spool_empties_and_the_direct_path_takes_over() {
        let dir = tempfile::tempdir().unwrap();
        empties_and_takes_over(dir.path());
    }

    /// On tmpfs, where a page truncated while a pipe still referenced it read as zeros
    /// when the drain spliced (it copies now).
    #[test]
    fn the_spool_empties_and_the_direct_path_takes_over_on_tmpfs() {
        if !Path::new("/dev/shm").is_dir() {
            test_skip::skip("no /dev/shm");
            return;
        }
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        empties_and_takes_over(dir.path());
    }

    fn empties_and_takes_over(dir: &Path) {
        let spool = Spool::open(&cfg(dir, 64 << 20, SpoolPolicy::Block), "t").unwrap();
        let (mut pump, mut writer, mut reader) = spooled_pump(spool);
        let mut want = Vec::new();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        for round in 0..5 {
            let data = records(round * 400_000, 400_000);
            assert_eq!(write_unread(&mut pump, &mut writer, &data), data.len());
            want.extend(data);
            // Read until the spool is empty (truncated: the file is 0 bytes again).
            while pump.spooled() > 0 || out.len() < want.len() {
                pump.run();
                if let Ok(n) = reader.read(&mut buf) {
                    out.extend_from_slice(&buf[..n]);
                }
            }
            assert_eq!(pump.spooled(), 0);
            // The direct path: a small write goes straight through.
            let small = records(2_000_000 + round, 1);
            writer.write_all(&small).unwrap();
            assert_ne!(pump.run(), PumpState::Done);
            assert_eq!(pump.spooled(), 0, "went straight to the destination");
            want.extend(small);
        }
        drop(writer);
        out.extend(read_all(pump, &mut reader));
        assert!(out == want);
    }

    #[test]
    fn drop_oldest_counts_exactly_what_it_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&cfg(dir.path(), 1 << 20, SpoolPolicy::DropOldest), "t").unwrap();
        let (mut pump, mut writer, mut reader) = spooled_pump(spool);
        let data = records(0, 1 << 20); // 8 MiB
        assert_eq!(write_unread(&mut pump, &mut writer, &data), data.len());
        assert!(pump.spooled() <= 1 << 20 && pump.spooled() >= 512 << 10);
        let dropped = pump.dropped();
        assert!(dropped > 0);
        drop(writer);
        let out = read_all(pump, &mut reader);
        assert_eq!(out.len() as u64 + dropped, data.len() as u64);
        // What arrived is the head the FIFO held, then the newest bytes (a gap, no
        // reordering): the tail of the output is exactly the tail of what was written.
        let tail = 512 << 10;
        assert!(out[out.len() - tail..] == data[data.len() - tail..]);
        assert!(out[..4096] == data[..4096]);
    }

    #[test]
    fn block_at_the_limit_blocks_the_writer_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&cfg(dir.path(), 256 << 10, SpoolPolicy::Block), "t").unwrap();
        let (mut pump, mut writer, mut reader) = spooled_pump(spool);
        let data = records(0, 1 << 20);
        let written = write_unread(&mut pump, &mut writer, &data);
        assert!(written < data.len(), "the writer must block");
        assert_eq!(pump.spooled(), 256 << 10);
        assert_eq!(pump.dropped(), 0);
        drop(writer);
        let out = read_all(pump, &mut reader);
        assert!(out == data[..written]);
    }

    #[test]
    fn a_full_disk_blocks_instead_of_losing() {
        if test_skip::unless_root() {
            return; // mounting a tmpfs
        }
        let dir = tempfile::tempdir().unwrap();
        if let Err(e) = nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=256k"),
        ) {
            test_skip::skip(&format!("mount tmpfs: {e}"));
            return;
        }
        let result = std::panic::catch_unwind(|| {
            let spool = Spool::open(&cfg(dir.path(), 64 << 20, SpoolPolicy::Block), "t").unwrap();
            let (mut pump, mut writer, mut reader) = spooled_pump(spool);
            let data = records(0, 1 << 20);
            let written = write_unread(&mut pump, &mut writer, &data);
            assert!(written < data.len(), "the writer must block");
            assert!(pump.spooled() <= 256 << 10);
            assert_eq!(pump.dropped(), 0);
            drop(writer);
            let out = read_all(pump, &mut reader);
            assert!(out == data[..written], "{} of {written}", out.len());
        });
        let _ = nix::mount::umount2(dir.path(), nix::mount::MntFlags::MNT_DETACH);
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    }

    #[test]
    fn a_buffered_source_spools_through_append() {
        // A socket source is not spliceable: the pump's buffer path appends to the spool.
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&cfg(dir.path(), 64 << 20, SpoolPolicy::Block), "t").unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (dst_r, dst_w) = pipe();
        let mut pump = Pump::new(Direction::Output, OwnedFd::from(b), dst_w, None)
            .unwrap()
            .with_spool(spool);
        let mut writer = File::from(OwnedFd::from(a));
        set_nonblocking(writer.as_fd()).unwrap();
        let mut reader = File::from(dst_r);
        set_nonblocking(reader.as_fd()).unwrap();
        let data = records(0, 400_000);
        assert_eq!(write_unread(&mut pump, &mut writer, &data), data.len());
        assert!(pump.spooled() > 0);
        drop(writer);
        let out = read_all(pump, &mut reader);
        assert!(out == data);
    }
}

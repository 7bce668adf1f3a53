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
//!
//! The settings a face gives (limit, policy) and their parsers are in `spool/config.rs`.

use nix::errno::Errno;
use nix::fcntl::{fallocate, splice, FallocateFlags, SpliceFFlags};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Bytes moved per splice call (as the pump's direct path).
const CHUNK: usize = 1 << 20;
/// Buffer of the drain (allocated while the spool holds bytes).
const DRAIN_BUFFER: usize = 64 * 1024;
/// A drained head at least this long is punched out of the file.
const PUNCH_AFTER: u64 = 4 << 20;

mod config;
pub use config::{parse_limit, SpoolConfig, SpoolConfigError, SpoolPolicy, DEFAULT_LIMIT};

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
    /// The source failed (a pty whose other side closed: EIO): treat as EOF.
    Failed(Errno),
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
                Err(e) => return Fill::Failed(e),
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
mod tests;

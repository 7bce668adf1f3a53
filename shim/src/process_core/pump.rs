//! Non-blocking byte pumps between two fds, driven by the event loop.
//!
//! Container output travels `container pipe -> pump -> FIFO`. Where both ends are pipes
//! (the common case) the pump uses splice(2), so bytes move between pipe buffers inside
//! the kernel without being copied through the shim. Other sources (a pty master) fall
//! back to read/write through a buffer allocated only for them.
//!
//! An output pump may have a [`Spool`]: when the destination is full, the source's bytes
//! go to the spool instead of waiting in the process's pipe, and leave it, oldest first,
//! as soon as the destination has room; while the spool holds anything, newer bytes queue
//! behind them there (order is kept, nothing is moved twice). While the reader keeps up
//! the spool is never touched.

use crate::process_core::fionread;
use crate::process_core::spool::{Drain, Fill, Spool};
use nix::errno::Errno;
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// Bytes moved per splice call: large enough to drain a full 1 MiB pipe in one call.
const SPLICE_CHUNK: usize = 1 << 20;
/// Buffer of the read/write fallback.
const COPY_BUFFER: usize = 32 * 1024;

/// Whether a pump can make more progress later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PumpState {
    /// Waiting for the source to have data or the destination to have room.
    Open,
    /// The source reached EOF and all it gave is in the destination or the spool; the
    /// spool still holds bytes, which move on as the destination takes them.
    SourceEnded,
    /// The source reached EOF and everything read was written (or the destination went
    /// away); the pump can be dropped, which closes both ends.
    Done,
}

/// How a pump's source ended, for the end-of-output debug line: a pty master's EIO at the
/// end is its slave side closing, EOF a pipe's last writer gone; an error of the splice
/// path may also be the destination's (EPIPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceEnd {
    /// The call that saw the end.
    pub by: EndedBy,
    /// Its error; `None` for EOF (the call gave 0 bytes).
    pub errno: Option<Errno>,
}

/// The call in which a pump saw its source end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// `splice` from the source to the destination.
    Splice,
    /// `splice` from the source into the spool's file.
    SpoolFill,
    /// `read` of the buffered path.
    Read,
}

impl std::fmt::Display for SourceEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let by = match self.by {
            EndedBy::Splice => "splice",
            EndedBy::SpoolFill => "splice into the spool",
            EndedBy::Read => "read",
        };
        match self.errno {
            None => write!(f, "EOF from {by}"),
            Some(e) => write!(f, "{e} from {by}"),
        }
    }
}

/// Which way a pump moves a process's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Manager to process (stdin): ends when the manager closes stdin.
    Input,
    /// Process to manager (stdout, stderr, a terminal): must drain before a delete.
    Output,
}

/// An output pump's spool and when it takes bytes. Boxed in the pump: most pumps have
/// none, and a pump lives inline in its process's table.
#[derive(Debug)]
struct Spooling {
    spool: Spool,
    /// The source pipe's capacity (see `Pump::should_spool`); `None`: not a pipe.
    src_capacity: Option<usize>,
    /// Spool whatever the source holds once the destination is full (after the exit).
    eager: bool,
    /// When the destination last took bytes (as of the end of the last run, or the
    /// last EAGAIN: the clock is read once a run, not once a splice).
    last_progress: Instant,
    /// The destination took bytes since `last_progress` was last set.
    progress_unstamped: bool,
    /// Set when the pump declined to spool because the reader was active a moment ago.
    recheck_at: Option<Instant>,
}

impl Spooling {
    /// Records that the destination took bytes by `now`, if it took any since the last
    /// record.
    fn stamp_progress(&mut self, now: Instant) {
        if std::mem::take(&mut self.progress_unstamped) {
            self.last_progress = now;
        }
    }
}

/// How long a reader may take no bytes, while the writer is about to block, before the
/// spool takes over: shorter stalls pace the writer as without a spool (a slow reader,
/// streaming), longer ones are a reader that is away.
pub const STALL: Duration = Duration::from_millis(100);

/// Moves bytes from `src` to `dst` until `src` reaches EOF.
#[derive(Debug)]
pub struct Pump {
    direction: Direction,
    src: File,
    dst: File,
    /// Held, never read: a read end of a destination FIFO so writes never fail with EPIPE
    /// while the real reader (containerd, a manager) is away. Dropped with the pump, or
    /// taken by its owner to keep looking at the FIFO ([`Pump::take_keepalive`]).
    keepalive: Option<File>,
    splice: bool,
    buf: Vec<u8>,
    pending: std::ops::Range<usize>,
    src_eof: bool,
    /// How the source ended, once it has (not carried across a live upgrade).
    src_end: Option<SourceEnd>,
    /// Bytes taken from the source so far.
    src_read: u64,
    moved: u64,
    spool: Option<Box<Spooling>>,
    /// Whether [`PumpState::SourceEnded`] (or `Done`) has been reported (by the caller).
    end_reported: bool,
}

/// Puts `fd`'s open file description into non-blocking mode (shared by everyone holding
/// it: callers own the fd or restore the flag).
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(raw, FcntlArg::F_GETFL)?);
    fcntl(raw, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

impl Pump {
    /// A pump from `src` to `dst`; both are switched to non-blocking mode.
    pub fn new(
        direction: Direction,
        src: OwnedFd,
        dst: OwnedFd,
        keepalive: Option<File>,
    ) -> io::Result<Self> {
        set_nonblocking(src.as_fd())?;
        set_nonblocking(dst.as_fd())?;
        Ok(Pump {
            direction,
            src: File::from(src),
            dst: File::from(dst),
            keepalive,
            splice: true,
            buf: Vec::new(),
            pending: 0..0,
            src_eof: false,
            src_end: None,
            src_read: 0,
            moved: 0,
            spool: None,
            end_reported: false,
        })
    }

    /// This pump spools into `spool` when its destination is full (output pumps only).
    pub fn with_spool(mut self, spool: Spool) -> Self {
        let src_capacity = fcntl(self.src.as_raw_fd(), FcntlArg::F_GETPIPE_SZ)
            .ok()
            .and_then(|n| usize::try_from(n).ok());
        self.spool = Some(Box::new(Spooling {
            spool,
            src_capacity,
            eager: false,
            last_progress: Instant::now(),
            progress_unstamped: false,
            recheck_at: None,
        }));
        self
    }

    /// From now on, everything the source holds goes to the spool when the destination
    /// is full (the writer has exited: nothing is gained by leaving bytes in its pipe).
    pub fn spool_eagerly(&mut self) {
        if let Some(s) = self.spool.as_mut() {
            s.eager = true;
        }
    }

    /// The destination is full or the source empty (splice said EAGAIN): whether the
    /// source's bytes go to the spool now. Only when they would otherwise block the
    /// writer — its pipe is at least half full — and the reader has taken nothing for
    /// [`STALL`], or after the writer's exit: a reader that is merely slower than the
    /// writer (streaming) then paces it as before, without a disk write. A source that is
    /// not a pipe spools whatever it holds.
    ///
    /// While the reader took bytes less than [`STALL`] ago, the answer is no without
    /// looking at the source: this runs on every EAGAIN of a stream (the hot path), and
    /// the pump only asks to be run again once the reader has been quiet that long
    /// (`recheck_at`: at most one wakeup per quiet spell), which is when the source's
    /// fill is looked at.
    fn should_spool(&mut self) -> bool {
        let Some(s) = self.spool.as_mut() else {
            return false;
        };
        if !s.eager && s.src_capacity.is_some() {
            let now = Instant::now();
            s.stamp_progress(now);
            let quiet_until = s.last_progress + STALL;
            if now < quiet_until {
                s.recheck_at = Some(quiet_until);
                return false;
            }
        }
        let pending = fionread::pending(self.src.as_fd()).unwrap_or(0);
        if pending == 0 {
            return false;
        }
        match s.src_capacity {
            Some(cap) if !s.eager => pending >= cap / 2,
            _ => true,
        }
    }

    /// When the pump wants to be run again without an event (see `should_spool`).
    pub fn recheck_at(&self) -> Option<Instant> {
        self.spool.as_ref().and_then(|s| s.recheck_at)
    }

    /// Bytes taken from the source so far (in the destination, the spool or the pump's
    /// buffer): beside [`Pump::moved`], where a stream's bytes stopped.
    pub fn read_from_source(&self) -> u64 {
        self.src_read
    }

    /// How the source ended, once it has.
    pub fn source_end(&self) -> Option<SourceEnd> {
        self.src_end
    }

    /// The source ended in `by` (`errno`: `None` for EOF); the first end is kept.
    fn source_ended_in(&mut self, by: EndedBy, errno: Option<Errno>) {
        self.src_eof = true;
        self.note_end(by, errno);
    }

    /// Keeps how the pump ended, the first time, without marking the source at EOF (a
    /// splice error ends the pump at once: it may be the destination's).
    fn note_end(&mut self, by: EndedBy, errno: Option<Errno>) {
        self.src_end.get_or_insert(SourceEnd { by, errno });
    }

    /// `n` bytes reached the destination (the time is taken by the end of the run).
    fn progressed(&mut self, n: usize) {
        self.moved += n as u64;
        if let Some(s) = self.spool.as_mut() {
            s.progress_unstamped = true;
        }
    }

    /// Bytes waiting in the spool.
    pub fn spooled(&self) -> u64 {
        self.spool.as_ref().map_or(0, |s| s.spool.len())
    }

    /// When the destination last took bytes, with a spool (`None` without one): whether
    /// a reader is taking what is spooled.
    pub fn last_taken(&self) -> Option<Instant> {
        self.spool.as_ref().map(|s| s.last_progress)
    }

    /// Bytes the spool discarded under `drop-oldest`.
    pub fn dropped(&self) -> u64 {
        self.spool.as_ref().map_or(0, |s| s.spool.dropped())
    }

    /// Whether the source's end has been reported ([`Pump::report_end`]): everything it
    /// gave is in the destination or the spool.
    pub fn source_ended(&self) -> bool {
        self.end_reported
    }

    /// Marks the source's end as reported; true the first time.
    pub(crate) fn report_end(&mut self) -> bool {
        !std::mem::replace(&mut self.end_reported, true)
    }

    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The source fd (to register for readability).
    pub fn src_fd(&self) -> BorrowedFd<'_> {
        self.src.as_fd()
    }

    /// The destination fd (to register for writability).
    pub fn dst_fd(&self) -> BorrowedFd<'_> {
        self.dst.as_fd()
    }

    /// A read end of the destination FIFO (none for a file or a pipe the face made):
    /// `FIONREAD` on it says how much the reader has not taken yet.
    pub fn keepalive(&self) -> Option<BorrowedFd<'_>> {
        self.keepalive.as_ref().map(File::as_fd)
    }

    /// Takes the destination FIFO's read end out of a pump about to be dropped: held, it
    /// keeps what the FIFO still holds there for a reader (a pipe's buffer goes with its
    /// last open end), and never delays the reader's EOF (only writers do).
    pub(crate) fn take_keepalive(&mut self) -> Option<File> {
        self.keepalive.take()
    }

    /// Bytes moved so far.
    pub fn moved(&self) -> u64 {
        self.moved
    }

    /// Moves everything that can move now. Call on every readiness event of either fd
    /// (the loop registers both edge-triggered): returns only once the source is empty
    /// (or at EOF) and the destination full or nothing is left to move, so the next
    /// edge of either fd is what it waits for.
    pub fn run(&mut self) -> PumpState {
        let state = self.run_until_blocked();
        if let Some(s) = self.spool.as_mut() {
            if s.progress_unstamped {
                s.stamp_progress(Instant::now());
            }
        }
        state
    }

    fn run_until_blocked(&mut self) -> PumpState {
        // Set when the destination refused bytes in this call: its next writable edge
        // will wake us, so nothing more is tried on it until then.
        let mut dst_full = false;
        if let Some(s) = self.spool.as_mut() {
            s.recheck_at = None;
        }
        loop {
            // The oldest bytes first: the spool's.
            if !dst_full && self.spooled() > 0 {
                let Some(spool) = self.spool.as_mut() else {
                    unreachable!("spooled() > 0 without a spool")
                };
                match spool.spool.drain_into(&self.dst) {
                    Drain::Moved(n) => {
                        self.progressed(n);
                        continue;
                    }
                    Drain::Full => dst_full = true,
                    Drain::Gone => return PumpState::Done,
                }
            }
            let spooling = dst_full || self.spooled() > 0;
            if self.src_eof && self.pending.is_empty() {
                return if self.spooled() == 0 {
                    PumpState::Done
                } else {
                    PumpState::SourceEnded
                };
            }
            if self.splice && self.pending.is_empty() && !self.src_eof {
                if spooling {
                    let Some(spool) = self.spool.as_mut() else {
                        return PumpState::Open;
                    };
                    match spool.spool.fill_from(&self.src) {
                        Fill::Moved(n) => {
                            self.src_read += n as u64;
                            continue;
                        }
                        Fill::Eof => {
                            self.source_ended_in(EndedBy::SpoolFill, None);
                            continue;
                        }
                        Fill::Failed(e) => {
                            self.source_ended_in(EndedBy::SpoolFill, Some(e));
                            continue;
                        }
                        Fill::Empty | Fill::Full => return PumpState::Open,
                        Fill::NotSpliceable => {
                            self.splice = false;
                            continue;
                        }
                    }
                }
                match splice(
                    &self.src,
                    None,
                    &self.dst,
                    None,
                    SPLICE_CHUNK,
                    SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE,
                ) {
                    Ok(0) => {
                        self.source_ended_in(EndedBy::Splice, None);
                        continue;
                    }
                    Ok(n) => {
                        self.src_read += n as u64;
                        self.progressed(n);
                        continue;
                    }
                    // The source is empty, or the destination full: with a spool, which
                    // one decides whether the bytes go there.
                    Err(Errno::EAGAIN) => {
                        if self.spool.is_some() && self.should_spool() {
                            dst_full = true;
                            continue;
                        }
                        return PumpState::Open;
                    }
                    Err(Errno::EINTR) => continue,
                    // Not spliceable (e.g. a tty): copy through a buffer from now on.
                    Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {
                        self.splice = false;
                        continue;
                    }
                    // EIO: a pty master whose slave side closed. EPIPE: the reader went
                    // away and nothing keeps the pipe alive. Either way, nothing more
                    // can flow.
                    Err(e) => {
                        self.note_end(EndedBy::Splice, Some(e));
                        return PumpState::Done;
                    }
                }
            }
            // Buffered path: flush what is pending (into the spool while it holds
            // anything: those bytes are older), then read more.
            if !self.pending.is_empty() {
                if spooling {
                    let Some(spool) = self.spool.as_mut() else {
                        return PumpState::Open;
                    };
                    match spool.spool.append(&self.buf[self.pending.clone()]) {
                        0 => return PumpState::Open,
                        n => {
                            self.pending.start += n;
                            continue;
                        }
                    }
                }
                match self.dst.write(&self.buf[self.pending.clone()]) {
                    Ok(0) => return PumpState::Done,
                    Ok(n) => {
                        self.pending.start += n;
                        self.progressed(n);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if self.spool.is_some() {
                            dst_full = true;
                            continue;
                        }
                        return PumpState::Open;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return PumpState::Done,
                }
            }
            if self.src_eof {
                continue;
            }
            if self.buf.len() < COPY_BUFFER {
                self.buf.resize(COPY_BUFFER, 0);
            }
            match self.src.read(&mut self.buf) {
                Ok(0) => {
                    self.source_ended_in(EndedBy::Read, None);
                    continue;
                }
                Ok(n) => {
                    self.src_read += n as u64;
                    self.pending = 0..n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return PumpState::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
                    self.source_ended_in(EndedBy::Read, Some(errno));
                    continue;
                }
            }
        }
    }
}

mod snapshot;
pub use snapshot::*;

#[cfg(test)]
mod tests {
    use super::*;

    use crate::process_core::test_fds::{close_writer, pipe, read_all_now};

    #[test]
    fn splices_between_pipes_until_eof() {
        let (src_r, src_w) = pipe();
        let (dst_r, dst_w) = pipe();
        let hangup = src_r.try_clone().unwrap();
        let mut pump = Pump::new(Direction::Output, src_r, dst_w, None).unwrap();
        let mut writer = File::from(src_w);
        writer.write_all(b"hello ").unwrap();
        assert_eq!(pump.run(), PumpState::Open);
        writer.write_all(b"world").unwrap();
        close_writer(writer, hangup.as_fd());
        assert_eq!(pump.run(), PumpState::Done);
        assert_eq!(pump.moved(), 11);
        drop(pump);
        let mut out = String::new();
        File::from(dst_r).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
    }

    #[test]
    fn a_pipe_source_is_said_to_end_in_eof() {
        let (src_r, src_w) = pipe();
        let (_dst_r, dst_w) = pipe();
        let hangup = src_r.try_clone().unwrap();
        let mut pump = Pump::new(Direction::Output, src_r, dst_w, None).unwrap();
        assert_eq!(pump.source_end(), None);
        close_writer(File::from(src_w), hangup.as_fd());
        assert_eq!(pump.run(), PumpState::Done);
        let end = pump.source_end().expect("ended");
        assert_eq!(end.errno, None);
        assert_eq!(end.to_string(), "EOF from splice");
    }

    #[test]
    fn a_pty_source_is_said_to_end_in_eio_once_its_slave_closed() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let (dst_r, dst_w) = pipe();
        let watch = pty.master.try_clone().unwrap();
        let mut pump = Pump::new(Direction::Output, pty.master, dst_w, None).unwrap();
        let mut slave = File::from(pty.slave);
        slave.write_all(b"last words").unwrap();
        drop(slave);
        // The pty's input is moved by the kernel's worker: run whenever the master says
        // it has something (input or the hang-up), until the pump says it ended.
        let mut state = pump.run();
        for _ in 0..100 {
            if state == PumpState::Done {
                break;
            }
            let mut fds = [nix::poll::PollFd::new(
                watch.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16)).unwrap();
            state = pump.run();
        }
        assert_eq!(state, PumpState::Done);
        assert_eq!(pump.read_from_source(), 10);
        let end = pump.source_end().expect("ended");
        assert_eq!(end.errno, Some(Errno::EIO), "{end}");
        drop(pump);
        assert_eq!(read_all_now(File::from(dst_r)), 10);
    }

    #[test]
    fn waits_when_the_destination_is_full() {
        let (src_r, src_w) = pipe();
        let (dst_r, dst_w) = pipe();
        let mut pump = Pump::new(Direction::Output, src_r, dst_w, None).unwrap();
        let mut writer = File::from(src_w);
        set_nonblocking(writer.as_fd()).unwrap();
        let mut reader = File::from(dst_r);
        let chunk = vec![7u8; 16 * 1024];
        let mut written = 0usize;
        // Fill both pipes: the pump must report Open, not lose data.
        for _ in 0..64 {
            match writer.write(&chunk) {
                Ok(n) => written += n,
                Err(_) => {
                    assert_eq!(pump.run(), PumpState::Open);
                }
            }
        }
        drop(writer);
        let mut total = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        // Open means the destination is full, or (briefly) that a child another test is
        // forking still holds a copy of the source's writer: read without blocking and go
        // on until the pump sees EOF; Done means everything is in the destination.
        set_nonblocking(reader.as_fd()).unwrap();
        while pump.run() == PumpState::Open {
            match reader.read(&mut buf) {
                Ok(n) => total += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        drop(pump);
        // The rest, still without blocking: a test forking meanwhile may hold a copy of
        // the destination's writer, so EOF is not a given.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while total < written && std::time::Instant::now() < until {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        assert_eq!(total, written);
    }

    #[test]
    fn moves_bytes_from_a_socket_source() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (dst_r, dst_w) = pipe();
        let mut pump = Pump::new(Direction::Output, OwnedFd::from(b), dst_w, None).unwrap();
        let mut a = a;
        a.write_all(b"through a buffer").unwrap();
        drop(a);
        while pump.run() == PumpState::Open {}
        drop(pump);
        let mut out = String::new();
        File::from(dst_r).read_to_string(&mut out).unwrap();
        assert_eq!(out, "through a buffer");
    }
}

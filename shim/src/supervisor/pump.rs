//! Non-blocking byte pumps between two fds, driven by the event loop.
//!
//! Container output travels `container pipe -> pump -> FIFO`. Where both ends are pipes
//! (the common case) the pump uses splice(2), so bytes move between pipe buffers inside
//! the kernel without being copied through the shim. Other sources (a pty master) fall
//! back to read/write through a buffer allocated only for them.

use nix::errno::Errno;
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// Bytes moved per splice call: large enough to drain a full 1 MiB pipe in one call.
const SPLICE_CHUNK: usize = 1 << 20;
/// Buffer of the read/write fallback.
const COPY_BUFFER: usize = 32 * 1024;

/// Whether a pump can make more progress later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PumpState {
    /// Waiting for the source to have data or the destination to have room.
    Open,
    /// The source reached EOF and everything read was written (or the destination went
    /// away); the pump can be dropped, which closes both ends.
    Done,
}

/// Which way a pump moves a process's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Manager to process (stdin): ends when the manager closes stdin.
    Input,
    /// Process to manager (stdout, stderr, a terminal): must drain before a delete.
    Output,
}

/// Moves bytes from `src` to `dst` until `src` reaches EOF.
#[derive(Debug)]
pub struct Pump {
    direction: Direction,
    src: File,
    dst: File,
    /// Held, never read: a read end of a destination FIFO so writes never fail with EPIPE
    /// while the real reader (containerd, a manager) is away. Dropped with the pump.
    _keepalive: Option<File>,
    splice: bool,
    buf: Vec<u8>,
    pending: std::ops::Range<usize>,
    src_eof: bool,
    moved: u64,
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
            _keepalive: keepalive,
            splice: true,
            buf: Vec::new(),
            pending: 0..0,
            src_eof: false,
            moved: 0,
        })
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

    /// Bytes moved so far.
    pub fn moved(&self) -> u64 {
        self.moved
    }

    /// Moves everything that can move now. Call on every readiness event of either fd
    /// (the loop registers both edge-triggered).
    pub fn run(&mut self) -> PumpState {
        loop {
            if self.splice && self.pending.is_empty() {
                match splice(
                    &self.src,
                    None,
                    &self.dst,
                    None,
                    SPLICE_CHUNK,
                    SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE,
                ) {
                    Ok(0) => return PumpState::Done,
                    Ok(n) => {
                        self.moved += n as u64;
                        continue;
                    }
                    Err(Errno::EAGAIN) => return PumpState::Open,
                    Err(Errno::EINTR) => continue,
                    // Not spliceable (e.g. a tty): copy through a buffer from now on.
                    Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {
                        self.splice = false;
                        continue;
                    }
                    // EIO: a pty master whose slave side closed. EPIPE: the reader went
                    // away and nothing keeps the pipe alive. Either way, nothing more
                    // can flow.
                    Err(_) => return PumpState::Done,
                }
            }
            // Buffered path: flush what is pending, then read more.
            if !self.pending.is_empty() {
                match self.dst.write(&self.buf[self.pending.clone()]) {
                    Ok(0) => return PumpState::Done,
                    Ok(n) => {
                        self.pending.start += n;
                        self.moved += n as u64;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return PumpState::Open,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return PumpState::Done,
                }
            }
            if self.src_eof {
                return PumpState::Done;
            }
            if self.buf.len() < COPY_BUFFER {
                self.buf.resize(COPY_BUFFER, 0);
            }
            match self.src.read(&mut self.buf) {
                Ok(0) => {
                    self.src_eof = true;
                    return PumpState::Done;
                }
                Ok(n) => self.pending = 0..n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return PumpState::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.src_eof = true;
                    return PumpState::Done;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::OFlag;

    /// Close-on-exec pipes: tests run in parallel with tests that spawn children, which
    /// must not inherit a write end (the pump would never see EOF).
    fn pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
        nix::unistd::pipe2(OFlag::O_CLOEXEC)
    }

    #[test]
    fn splices_between_pipes_until_eof() {
        let (src_r, src_w) = pipe().unwrap();
        let (dst_r, dst_w) = pipe().unwrap();
        let mut pump = Pump::new(Direction::Output, src_r, dst_w, None).unwrap();
        let mut writer = File::from(src_w);
        writer.write_all(b"hello ").unwrap();
        assert_eq!(pump.run(), PumpState::Open);
        writer.write_all(b"world").unwrap();
        drop(writer);
        assert_eq!(pump.run(), PumpState::Done);
        assert_eq!(pump.moved(), 11);
        drop(pump);
        let mut out = String::new();
        File::from(dst_r).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
    }

    #[test]
    fn waits_when_the_destination_is_full() {
        let (src_r, src_w) = pipe().unwrap();
        let (dst_r, dst_w) = pipe().unwrap();
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
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        total += rest.len();
        assert_eq!(total, written);
    }

    #[test]
    fn moves_bytes_from_a_socket_source() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (dst_r, dst_w) = pipe().unwrap();
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

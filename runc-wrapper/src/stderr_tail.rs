//! The last bytes of what a runtime wrote to a stderr pipe, read only when the pipe has
//! something (never blocking), kept within a bound however much the runtime writes.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Bytes kept: the end of the output, where a runtime's final error line is.
pub(crate) const KEEP: usize = 4 << 10;
/// Bytes read at most from a pipe found full after a failure (a large pipe holds MiBs).
const MAX_READ_AFTER: usize = 1 << 20;

/// The bounded tail of a stream.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    buf: Vec<u8>,
}

impl Tail {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(KEEP)..];
        let over = (self.buf.len() + bytes.len()).saturating_sub(KEEP);
        self.buf.drain(..over.min(self.buf.len()));
        self.buf.extend_from_slice(bytes);
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Whether `fd` has something to read (or its writers are gone) within `timeout`.
pub(crate) fn readable(fd: &impl AsFd, timeout: PollTimeout) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, timeout) {
        Ok(0) | Err(Errno::EINTR) => Ok(false),
        Ok(_) => Ok(fds[0].revents().is_some_and(|r| !r.is_empty())),
        Err(e) => Err(e.into()),
    }
}

/// One read from `pipe`, which [`readable`] said has data or is at EOF (so it does not
/// block), into `tail`. False at EOF.
pub(crate) fn read_once(pipe: &mut File, tail: &mut Tail) -> io::Result<bool> {
    let mut chunk = [0u8; 8192];
    loop {
        match pipe.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                tail.push(&chunk[..n]);
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The tail of what waits in `pipe` now, without blocking (its writers may live on).
pub(crate) fn read_available(pipe: OwnedFd) -> Vec<u8> {
    let mut pipe = File::from(pipe);
    let mut tail = Tail::default();
    let mut read = 0;
    while read < MAX_READ_AFTER {
        let before = tail.buf.len();
        match readable(&pipe, PollTimeout::ZERO).and_then(|ready| {
            if ready {
                read_once(&mut pipe, &mut tail)
            } else {
                Ok(false)
            }
        }) {
            Ok(true) => read += tail.buf.len().saturating_sub(before).max(1),
            _ => break,
        }
    }
    tail.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_tail_keeps_the_last_bytes_only() {
        let mut t = Tail::default();
        t.push(b"abc");
        t.push(&vec![b'x'; KEEP]);
        t.push(b"end");
        let bytes = t.into_bytes();
        assert_eq!(bytes.len(), KEEP);
        assert!(bytes.ends_with(b"xxend"));
        let mut t = Tail::default();
        t.push(&vec![b'y'; 3 * KEEP]);
        assert_eq!(t.into_bytes().len(), KEEP);
    }

    #[test]
    fn reading_what_waits_never_blocks() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut w = File::from(w);
        w.write_all(b"first line\nthe error\n").unwrap();
        // The writer stays open: no EOF, yet the read returns.
        assert_eq!(read_available(r), b"first line\nthe error\n");
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert!(read_available(r).is_empty());
    }
}

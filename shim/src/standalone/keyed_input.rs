//! `attach`'s stdin forwarding while detach keys are in effect: our stdin is read into a
//! small buffer, scanned by a [`Matcher`], and written to the process's `stdin` FIFO.
//!
//! The splice pump the containerd face also uses cannot do this (splice never shows the
//! bytes), so this path exists in the standalone face only, and only with detach keys.
//! Single-threaded and allocation-free per read: one fixed read buffer, one output
//! buffer sized once for the matcher's worst case.
//!
//! Backpressure: while the FIFO is full, our stdin is taken out of the poller (nothing is
//! read that could not be passed on) and the FIFO gets writable interest; once it has
//! room, what is pending is written and reading resumes. Both registrations are
//! level-triggered, so a call may return early (a read budget) without losing a wakeup.

use super::detach_keys::{DetachKeys, Fed, Matcher};
use crate::process_core::epoll::{Poller, Token};
use crate::process_core::pump::set_nonblocking;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};

/// Bytes read from our stdin at a time: a terminal delivers a few per keystroke, and a
/// pipe is throttled by the FIFO anyway.
const READ_BUFFER: usize = 4096;
/// Reads per [`KeyedInput::run`]: a source that never runs dry (a fast pipe while the
/// FIFO is gone and its bytes are dropped) must not starve the output pumps.
const READS_PER_RUN: usize = 16;

/// Where forwarding stands after [`KeyedInput::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Waiting for our stdin to have data or the FIFO to have room.
    Open,
    /// Our stdin ended and everything read from it was passed on (or could not be: the
    /// process's stdin went away). Close it with [`KeyedInput::close`].
    Done,
    /// The detach keys were typed. What came before them was passed on if the FIFO had
    /// room at once; nothing after them was read. Close it with [`KeyedInput::close`].
    Detach,
}

/// Our stdin forwarded to the process's `stdin` FIFO through a detach-key [`Matcher`].
#[derive(Debug)]
pub struct KeyedInput {
    src: File,
    src_token: Token,
    /// `None` once the FIFO has no reader (the process's stdin was closed, or its
    /// supervisor is gone): our stdin is still read, for the detach keys alone.
    dst: Option<File>,
    dst_token: Token,
    matcher: Matcher,
    buf: Box<[u8]>,
    /// What the matcher passed on; `out[sent..]` is still to be written.
    out: Vec<u8>,
    sent: usize,
    /// Our stdin is registered with the poller (not paused, not at EOF).
    reading: bool,
    /// The FIFO is registered with writable interest (it was full).
    awaiting_room: bool,
    src_eof: bool,
}

impl KeyedInput {
    /// Forwards `src` (a duplicate of our stdin) into `dst` (the FIFO's write end, or
    /// `None` if it has no reader), detaching on `keys`. Both are made non-blocking and
    /// registered level-triggered: `src` readable as `src_token`, `dst` as `dst_token`
    /// (no interest until it is full, but its error, no reader left, is reported). On an
    /// error nothing stays registered.
    pub fn new(
        poller: &Poller,
        src: OwnedFd,
        src_token: Token,
        dst: Option<OwnedFd>,
        dst_token: Token,
        keys: DetachKeys,
    ) -> io::Result<Self> {
        set_nonblocking(src.as_fd())?;
        if let Some(d) = &dst {
            set_nonblocking(d.as_fd())?;
        }
        let matcher = Matcher::new(keys);
        let mut input = KeyedInput {
            src: File::from(src),
            src_token,
            dst: dst.map(File::from),
            dst_token,
            out: Vec::with_capacity(matcher.max_output(READ_BUFFER)),
            matcher,
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            sent: 0,
            reading: false,
            awaiting_room: false,
            src_eof: false,
        };
        poller.add_readable(input.src.as_fd(), src_token)?;
        input.reading = true;
        if let Some(d) = &input.dst {
            if let Err(e) = poller.add_readable(d.as_fd(), dst_token) {
                input.close(poller);
                return Err(e);
            }
        }
        Ok(input)
    }

    /// Whether bytes read from our stdin may still reach the process: our stdin has not
    /// ended (or has, and some are pending) and the FIFO still has a reader.
    pub fn passing_on(&self) -> bool {
        self.dst.is_some() && !(self.src_eof && self.sent == self.out.len())
    }

    /// Deregisters both fds and closes them. Needed before dropping: `src` is a duplicate
    /// of our stdin, whose open file description (still open as fd 0) would otherwise
    /// keep the registration alive.
    pub fn close(self, poller: &Poller) {
        if self.reading {
            poller.remove(self.src.as_fd());
        }
        if let Some(d) = &self.dst {
            poller.remove(d.as_fd());
        }
    }

    /// Moves what can move now: writes what is pending, then reads and scans our stdin
    /// until it would block, the FIFO is full, the keys are typed, or the read budget is
    /// spent. Call on every readiness of either token. Errors are the poller's only.
    pub fn run(&mut self, poller: &Poller) -> io::Result<Progress> {
        let mut reads = 0;
        loop {
            if !self.flush(poller)? {
                return Ok(Progress::Open);
            }
            if self.src_eof {
                return Ok(Progress::Done);
            }
            if reads == READS_PER_RUN {
                // Level-triggered: still readable, so the loop calls again.
                return Ok(Progress::Open);
            }
            reads += 1;
            match self.src.read(&mut self.buf) {
                Ok(n) if n > 0 => {
                    if self.matcher.feed(&self.buf[..n], &mut self.out) == Fed::Detach {
                        self.write_once();
                        return Ok(Progress::Detach);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Progress::Open),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // EOF, or EIO from a terminal that hung up: a partial match can no longer
                // complete, so its bytes are the process's.
                _ => {
                    self.src_eof = true;
                    if self.reading {
                        poller.remove(self.src.as_fd());
                        self.reading = false;
                    }
                    self.matcher.finish(&mut self.out);
                }
            }
        }
    }

    /// Writes what is pending. Returns true once nothing is (then reading is resumed if it
    /// was paused), false if the FIFO is full (then reading is paused until it has room).
    fn flush(&mut self, poller: &Poller) -> io::Result<bool> {
        while self.sent < self.out.len() {
            let Some(dst) = &mut self.dst else {
                // Nobody reads the process's stdin any more: drop what it would get.
                break;
            };
            match dst.write(&self.out[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.await_room(poller)?;
                    return Ok(false);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // EPIPE: the reader went away (close-stdin, or the supervisor ended).
                Err(_) => self.lose_dst(poller),
            }
        }
        self.out.clear();
        self.sent = 0;
        if let (Some(d), true) = (&self.dst, self.awaiting_room) {
            poller.set_writable_interest(d.as_fd(), self.dst_token, false)?;
            self.awaiting_room = false;
        }
        if !self.reading && !self.src_eof {
            poller.add_readable(self.src.as_fd(), self.src_token)?;
            self.reading = true;
        }
        Ok(true)
    }

    /// The FIFO is full: stop reading our stdin and wait for room.
    fn await_room(&mut self, poller: &Poller) -> io::Result<()> {
        if self.reading {
            poller.remove(self.src.as_fd());
            self.reading = false;
        }
        if let (Some(d), false) = (&self.dst, self.awaiting_room) {
            poller.set_writable_interest(d.as_fd(), self.dst_token, true)?;
            self.awaiting_room = true;
        }
        Ok(())
    }

    /// The FIFO lost its reader: close our end (its error would keep waking the loop).
    fn lose_dst(&mut self, poller: &Poller) {
        if let Some(d) = self.dst.take() {
            poller.remove(d.as_fd());
        }
        self.awaiting_room = false;
    }

    /// Called on the FIFO's token reporting an error or hangup: its reader is gone.
    pub fn fifo_hung_up(&mut self, poller: &Poller) {
        self.lose_dst(poller);
    }

    /// One non-blocking attempt to write what is pending, whatever it achieves: before
    /// detaching, keys typed ahead of the detach keys reach the process if there is room,
    /// but a full FIFO must not keep us from detaching.
    fn write_once(&mut self) {
        if let Some(dst) = &mut self.dst {
            let _ = dst.write(&self.out[self.sent..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process_core::epoll::Ready;
    use crate::standalone::detach_keys;

    const SRC: Token = Token::face(250, 1);
    const DST: Token = Token::face(250, 2);

    fn pipe() -> (File, File) {
        let (r, w) = crate::process_core::test_fds::pipe();
        (File::from(r), File::from(w))
    }

    fn keyed(poller: &Poller, src: File, dst: File) -> KeyedInput {
        let keys = detach_keys::parse(detach_keys::DEFAULT).unwrap().unwrap();
        KeyedInput::new(poller, src.into(), SRC, Some(dst.into()), DST, keys).unwrap()
    }

    fn read_available(r: &mut File) -> Vec<u8> {
        set_nonblocking(r.as_fd()).unwrap();
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return all,
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn forwards_held_bytes_then_detaches() {
        let poller = Poller::new().unwrap();
        let (src_r, mut src_w) = pipe();
        let (mut dst_r, dst_w) = pipe();
        let mut input = keyed(&poller, src_r, dst_w);
        src_w.write_all(b"ab\x10").unwrap();
        assert_eq!(input.run(&poller).unwrap(), Progress::Open);
        assert_eq!(read_available(&mut dst_r), b"ab");
        src_w.write_all(b"x\x10").unwrap();
        assert_eq!(input.run(&poller).unwrap(), Progress::Open);
        assert_eq!(read_available(&mut dst_r), b"\x10x");
        src_w.write_all(b"\x11after").unwrap();
        assert_eq!(input.run(&poller).unwrap(), Progress::Detach);
        input.close(&poller);
        assert_eq!(read_available(&mut dst_r), b"", "nothing of the keys");
    }

    #[test]
    fn pauses_while_the_fifo_is_full_and_loses_nothing() {
        let poller = Poller::new().unwrap();
        let (src_r, mut src_w) = pipe();
        let (mut dst_r, dst_w) = pipe();
        let mut input = keyed(&poller, src_r, dst_w);
        set_nonblocking(src_w.as_fd()).unwrap();
        let mut sent = Vec::new();
        let mut received = Vec::new();
        let mut ready: Vec<Ready> = Vec::new();
        // Fill our "stdin" and the FIFO until the input pauses: the FIFO is full.
        let mut i = 0u8;
        while input.reading {
            let chunk = [b'a' + i % 26; 1000];
            i = i.wrapping_add(1);
            match src_w.write(&chunk) {
                Ok(n) => sent.extend_from_slice(&chunk[..n]),
                Err(e) => assert_eq!(e.kind(), ErrorKind::WouldBlock),
            }
            assert_eq!(input.run(&poller).unwrap(), Progress::Open);
            assert!(sent.len() < 1 << 20, "never paused");
        }
        poller.wait(Some(0), &mut ready).unwrap();
        assert!(ready.is_empty(), "nothing to do while full: {ready:?}");
        received.extend(read_available(&mut dst_r));
        poller.wait(Some(1000), &mut ready).unwrap();
        assert!(ready.iter().any(|r| r.token == DST && r.writable), "room");
        drop(src_w);
        while input.run(&poller).unwrap() == Progress::Open {
            received.extend(read_available(&mut dst_r));
        }
        input.close(&poller);
        received.extend(read_available(&mut dst_r));
        assert_eq!(received.len(), sent.len());
        assert!(received == sent, "in order");
    }

    #[test]
    fn keeps_watching_for_the_keys_after_the_fifo_loses_its_reader() {
        let poller = Poller::new().unwrap();
        let (src_r, mut src_w) = pipe();
        let (dst_r, dst_w) = pipe();
        let mut input = keyed(&poller, src_r, dst_w);
        drop(dst_r);
        // A child another test is spawning may hold a copy of the read end until its
        // exec (process_core::test_fds): wait for the hang-up, bounded.
        let mut ready: Vec<Ready> = Vec::new();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !ready.iter().any(|r| r.token == DST && r.hangup) {
            assert!(std::time::Instant::now() < until, "no hang-up: {ready:?}");
            poller.wait(Some(100), &mut ready).unwrap();
        }
        input.fifo_hung_up(&poller);
        assert!(!input.passing_on());
        src_w.write_all(b"dropped\x10\x11").unwrap();
        assert_eq!(input.run(&poller).unwrap(), Progress::Detach);
        input.close(&poller);
    }
}

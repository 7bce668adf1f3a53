//! A thin epoll wrapper with typed tokens and a cross-thread waker.

use crate::process_core::stream::Stream;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

/// What an epoll registration stands for. Encoded in the event's 64 bits: the kind in
/// bits 32..40, a stream or a face's kind in bits 40..48, an index in the low 32 bits.
///
/// The core's own kinds are here; a descriptor only one face handles (the containerd
/// face's listener and connections, the standalone supervisor's FIFOs) is a
/// [`Token::Face`], which each face defines for itself (an enum of its kinds turned into
/// and out of a [`FaceToken`]), so neither face's loop sees the other's kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Token {
    Signals,
    Waker,
    /// A pump of a process's stdio: the process's slot in its face's table, and the stream
    /// (see [`crate::process_core::process_stdio`]).
    Stdio(u32, Stream),
    /// A descriptor of one face's own (see [`FaceToken`]).
    Face(FaceToken),
}

/// A face's own token, opaque to the core: a kind the face numbers as it likes and an
/// index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaceToken {
    kind: u8,
    n: u32,
}

impl FaceToken {
    pub const fn new(kind: u8, n: u32) -> Self {
        FaceToken { kind, n }
    }

    pub const fn kind(self) -> u8 {
        self.kind
    }

    pub const fn index(self) -> u32 {
        self.n
    }
}

impl Token {
    /// A face's token of `kind` and index `n`.
    pub const fn face(kind: u8, n: u32) -> Token {
        Token::Face(FaceToken::new(kind, n))
    }

    fn encode(self) -> u64 {
        let (kind, high, n): (u64, u8, u32) = match self {
            Token::Signals => (2, 0, 0),
            Token::Waker => (3, 0, 0),
            Token::Stdio(n, s) => (5, s.to_bits(), n),
            Token::Face(f) => (8, f.kind, f.n),
        };
        (u64::from(high) << 40) | (kind << 32) | u64::from(n)
    }

    fn decode(raw: u64) -> Option<Token> {
        let n = (raw & 0xffff_ffff) as u32;
        let high = ((raw >> 40) & 0xff) as u8;
        Some(match (raw >> 32) & 0xff {
            2 => Token::Signals,
            3 => Token::Waker,
            5 => Token::Stdio(n, Stream::from_bits(high)?),
            8 => Token::face(high, n),
            _ => return None,
        })
    }
}

/// An epoll instance; `&self` methods are safe to call from any thread (epoll_ctl is).
#[derive(Debug)]
pub struct Poller {
    epoll: Epoll,
}

/// Readiness reported for one token.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub token: Token,
    pub readable: bool,
    pub writable: bool,
    pub hangup: bool,
}

impl Poller {
    /// A new close-on-exec epoll instance.
    pub fn new() -> io::Result<Self> {
        Ok(Poller {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
        })
    }

    /// Level-triggered interest in readability.
    pub fn add_readable(&self, fd: BorrowedFd<'_>, token: Token) -> io::Result<()> {
        self.epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token.encode()))?;
        Ok(())
    }

    /// Edge-triggered interest in readability and/or writability (the pumps drain until
    /// EAGAIN on every wakeup, so edges are enough and idle fds never spin the loop).
    pub fn add_edge(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        read: bool,
        write: bool,
    ) -> io::Result<()> {
        let mut flags = EpollFlags::EPOLLET | EpollFlags::EPOLLRDHUP;
        if read {
            flags |= EpollFlags::EPOLLIN;
        }
        if write {
            flags |= EpollFlags::EPOLLOUT;
        }
        self.epoll.add(fd, EpollEvent::new(flags, token.encode()))?;
        Ok(())
    }

    /// Switches a level-triggered registration between read-only and read+write interest.
    pub fn set_writable_interest(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        write: bool,
    ) -> io::Result<()> {
        self.set_interest(fd, token, true, write)
    }

    /// Sets what a level-triggered registration waits for. With neither, only a hangup or
    /// an error is reported (the kernel always reports those).
    pub fn set_interest(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        read: bool,
        write: bool,
    ) -> io::Result<()> {
        let mut flags = EpollFlags::empty();
        if read {
            flags |= EpollFlags::EPOLLIN;
        }
        if write {
            flags |= EpollFlags::EPOLLOUT;
        }
        let mut event = EpollEvent::new(flags, token.encode());
        self.epoll.modify(fd, &mut event)?;
        Ok(())
    }

    /// Removes a registration; a missing one is fine (the fd may already be closed).
    pub fn remove(&self, fd: BorrowedFd<'_>) {
        let _ = self.epoll.delete(fd);
    }

    /// Waits for events (retrying EINTR) and returns them decoded.
    pub fn wait(&self, timeout_ms: Option<u16>, out: &mut Vec<Ready>) -> io::Result<()> {
        let mut events = [EpollEvent::empty(); 32];
        let timeout = match timeout_ms {
            Some(ms) => EpollTimeout::from(ms),
            None => EpollTimeout::NONE,
        };
        let n = loop {
            match self.epoll.wait(&mut events, timeout) {
                Ok(n) => break n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        out.clear();
        for ev in events.iter().take(n) {
            if let Some(token) = Token::decode(ev.data()) {
                let f = ev.events();
                out.push(Ready {
                    token,
                    readable: f.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLPRI),
                    writable: f.contains(EpollFlags::EPOLLOUT),
                    hangup: f.intersects(
                        EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR | EpollFlags::EPOLLRDHUP,
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Wakes the loop from another thread (an eventfd registered as [`Token::Waker`]).
#[derive(Debug)]
pub struct Waker {
    fd: EventFd,
}

impl Waker {
    /// A non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<Self> {
        Ok(Waker {
            fd: EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
        })
    }

    /// Makes the loop's next wait return. Never blocks.
    pub fn wake(&self) {
        let _ = self.fd.arm();
    }

    /// Resets the counter after a wakeup.
    pub fn drain(&self) {
        let _ = self.fd.read();
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for t in [
            Token::Signals,
            Token::Waker,
            Token::Stdio(u32::MAX, Stream::Stdin),
            Token::Stdio(0, Stream::Stdout),
            Token::Stdio(3, Stream::Stderr),
            Token::face(0, 7),
            Token::face(255, u32::MAX),
        ] {
            assert_eq!(Token::decode(t.encode()), Some(t));
        }
        assert_eq!(Token::decode(99 << 32), None);
        assert_eq!(Token::decode((5 << 32) | (9 << 40)), None, "no such stream");
    }

    #[test]
    fn waker_wakes_the_poller() {
        let poller = Poller::new().unwrap();
        let waker = Waker::new().unwrap();
        poller.add_readable(waker.as_fd(), Token::Waker).unwrap();
        let mut out = Vec::new();
        poller.wait(Some(0), &mut out).unwrap();
        assert!(out.is_empty());
        waker.wake();
        poller.wait(Some(1000), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].token, Token::Waker);
        waker.drain();
        poller.wait(Some(0), &mut out).unwrap();
        assert!(out.is_empty());
    }
}

//! Descriptors a process hands to the image it re-executes (a live upgrade: the same pid
//! runs a new binary), named by number in the state it writes, and taken back by number
//! on the other side.
//!
//! The saving side lists every descriptor it names ([`FdsOut::carry`]) and clears their
//! close-on-exec flag right before `execve` ([`FdsOut::keep_across_exec`]); every other
//! descriptor stays close-on-exec and is gone in the new image. The receiving side takes
//! each listed descriptor exactly once ([`FdsIn::take`]): a number that was not listed,
//! is taken twice or is not open is an error, never a descriptor someone else owns.
//! Times travel as offsets from the moment of saving (`CLOCK_MONOTONIC` goes on across
//! `execve`, but `Instant` cannot be rebuilt from its raw value).
#![allow(unsafe_code)]

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Why a carried descriptor cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum CarryError {
    #[error("descriptor {0} is not one the saved state lists")]
    NotListed(RawFd),
    #[error("descriptor {0} is named twice in the saved state")]
    TakenTwice(RawFd),
    #[error("descriptor {fd} is not open: {source}")]
    NotOpen { fd: RawFd, source: io::Error },
    #[error("restoring {what}: {source}")]
    Rebuild {
        what: &'static str,
        source: io::Error,
    },
}

/// The descriptors a saved state names, in the order they were named.
#[derive(Debug, Default)]
pub struct FdsOut {
    fds: Vec<RawFd>,
}

impl FdsOut {
    /// Names `fd` in the state: returns its number. The caller keeps `fd` open until the
    /// `execve` (or until it gives up and resumes).
    pub fn carry(&mut self, fd: impl AsFd) -> RawFd {
        let raw = fd.as_fd().as_raw_fd();
        self.fds.push(raw);
        raw
    }

    /// Every number named so far.
    pub fn fds(&self) -> &[RawFd] {
        &self.fds
    }

    /// Clears close-on-exec on every named descriptor (right before `execve`). On
    /// failure, sets it again on those it cleared.
    pub fn keep_across_exec(&self) -> io::Result<()> {
        for (i, fd) in self.fds.iter().enumerate() {
            if let Err(e) = set_cloexec(*fd, false) {
                for done in &self.fds[..i] {
                    let _ = set_cloexec(*done, true);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Sets close-on-exec again on every named descriptor (the `execve` failed, or was
    /// not done: the process resumes as it was).
    pub fn restore_cloexec(&self) {
        for fd in &self.fds {
            let _ = set_cloexec(*fd, true);
        }
    }
}

/// The descriptors a saved state names, as received across `execve`.
#[derive(Debug, Default)]
pub struct FdsIn {
    listed: BTreeSet<RawFd>,
    taken: BTreeSet<RawFd>,
}

impl FdsIn {
    /// Descriptors `listed` by the saved state (the saving image's [`FdsOut::fds`]).
    pub fn new(listed: &[RawFd]) -> Self {
        FdsIn {
            listed: listed.iter().copied().collect(),
            taken: BTreeSet::new(),
        }
    }

    /// Takes descriptor `fd`: it becomes this image's, close-on-exec again.
    pub fn take(&mut self, fd: RawFd) -> Result<OwnedFd, CarryError> {
        if !self.listed.contains(&fd) {
            return Err(CarryError::NotListed(fd));
        }
        if !self.taken.insert(fd) {
            return Err(CarryError::TakenTwice(fd));
        }
        set_cloexec(fd, true).map_err(|source| CarryError::NotOpen { fd, source })?;
        // SAFETY: `fd` is open (F_SETFD just succeeded), was listed by the image that
        // exec'd this one as a descriptor it handed over, and is taken once (checked
        // above): nothing else in this process owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// [`FdsIn::take`] for an optional number.
    pub fn take_opt(&mut self, fd: Option<RawFd>) -> Result<Option<OwnedFd>, CarryError> {
        fd.map(|fd| self.take(fd)).transpose()
    }

    /// Listed descriptors nobody took (closed by the caller, or a sign of a mismatch).
    pub fn untaken(&self) -> Vec<RawFd> {
        self.listed.difference(&self.taken).copied().collect()
    }
}

/// Copies of every descriptor a saved state lists, made before the new image takes any.
/// Should taking the state over fail midway, what was built from the descriptors taken so
/// far is dropped with the error, closing them; [`Spares::put_back`] puts a copy at each
/// listed number again, so that the old image, executed again
/// (`process_core::rollback::back`), finds every descriptor where the state says.
#[derive(Debug)]
pub struct Spares {
    copies: Vec<(RawFd, OwnedFd)>,
}

impl FdsIn {
    /// A copy of every listed descriptor (close-on-exec, at numbers of the kernel's
    /// choosing). Errors: a listed number that is not open, or no descriptor left.
    pub fn spares(&self) -> Result<Spares, CarryError> {
        let copies = self
            .listed
            .iter()
            .map(|&fd| {
                let copy = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
                    .map_err(|e| CarryError::NotOpen {
                        fd,
                        source: io::Error::from(e),
                    })?;
                // SAFETY: F_DUPFD_CLOEXEC has just made `copy`, a new descriptor nobody
                // else refers to.
                Ok((fd, unsafe { OwnedFd::from_raw_fd(copy) }))
            })
            .collect::<Result<_, CarryError>>()?;
        Ok(Spares { copies })
    }
}

impl Spares {
    /// Puts each copy back at the number the state lists it under (whatever holds that
    /// number now is closed: the process is about to execute the old image). Goes on past
    /// a failure and returns the first.
    pub fn put_back(&self) -> io::Result<()> {
        let mut first = Ok(());
        for (fd, copy) in &self.copies {
            if let Err(e) = nix::unistd::dup2(copy.as_raw_fd(), *fd) {
                if first.is_ok() {
                    first = Err(io::Error::from(e));
                }
            }
        }
        first
    }
}

fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number with integer arguments only; a number that is
    // not open fails with EBADF and changes nothing.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A moment as an offset in milliseconds from `now` (negative: in the past).
pub fn offset_of(at: Instant, now: Instant) -> i64 {
    if at >= now {
        i64::try_from(at.duration_since(now).as_millis()).unwrap_or(i64::MAX)
    } else {
        -i64::try_from(now.duration_since(at).as_millis()).unwrap_or(i64::MAX)
    }
}

/// The moment `offset` milliseconds from `now` (see [`offset_of`]).
pub fn at_offset(offset: i64, now: Instant) -> Instant {
    let d = Duration::from_millis(offset.unsigned_abs());
    if offset >= 0 {
        now.checked_add(d).unwrap_or(now)
    } else {
        now.checked_sub(d).unwrap_or(now)
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: comparable across `execve` (an `Instant` is
/// not carried).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the struct it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_descriptor_is_taken_once_and_close_on_exec_again() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        let mut out = FdsOut::default();
        let n = out.carry(&r);
        out.keep_across_exec().unwrap();
        let flags = nix::fcntl::fcntl(n, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_eq!(flags & libc::FD_CLOEXEC, 0, "kept across exec");
        std::mem::forget(r); // handed over, as across execve
        let mut fds = FdsIn::new(out.fds());
        let taken = fds.take(n).unwrap();
        let flags = nix::fcntl::fcntl(taken.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        assert!(matches!(fds.take(n), Err(CarryError::TakenTwice(_))));
        assert!(matches!(fds.take(n + 1000), Err(CarryError::NotListed(_))));
        assert!(fds.untaken().is_empty());
    }

    #[test]
    fn spares_put_taken_and_dropped_descriptors_back_at_their_numbers() {
        use std::io::{Read, Write};
        // High numbers: other tests' threads, which take the lowest free ones, never get
        // them between the drop and the putting back.
        let (r, w) = nix::unistd::pipe().unwrap();
        let high = |fd: &OwnedFd| {
            nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(700)).unwrap()
        };
        let (rn, wn) = (high(&r), high(&w));
        drop((r, w));
        let mut out = FdsOut::default();
        // SAFETY: the two numbers were just made by F_DUPFD_CLOEXEC (this test owns them) and are
        // handed over here, as across execve.
        let (rh, wh) = unsafe { (OwnedFd::from_raw_fd(rn), OwnedFd::from_raw_fd(wn)) };
        out.carry(&rh);
        out.carry(&wh);
        std::mem::forget((rh, wh));
        let mut fds = FdsIn::new(out.fds());
        let spares = fds.spares().unwrap();
        // Taken, then dropped with a failed rebuild: closed.
        drop(fds.take(rn).unwrap());
        drop(fds.take(wn).unwrap());
        assert!(nix::fcntl::fcntl(rn, nix::fcntl::FcntlArg::F_GETFD).is_err());
        spares.put_back().unwrap();
        // The same pipe is at the same numbers again.
        let mut again = FdsIn::new(&[rn, wn]);
        let mut w = std::fs::File::from(again.take(wn).unwrap());
        let mut r = std::fs::File::from(again.take(rn).unwrap());
        w.write_all(b"x").unwrap();
        let mut got = [0u8; 1];
        r.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
        assert!(matches!(
            FdsIn::new(&[900_001]).spares(),
            Err(CarryError::NotOpen { fd: 900_001, .. })
        ));
    }

    #[test]
    fn a_listed_number_that_is_not_open_is_refused() {
        let mut fds = FdsIn::new(&[900_000]);
        assert!(matches!(fds.take(900_000), Err(CarryError::NotOpen { .. })));
    }

    #[test]
    fn offsets_round_trip_both_ways() {
        let now = Instant::now() + Duration::from_secs(100);
        for ms in [-5000i64, -1, 0, 1, 2500] {
            assert_eq!(offset_of(at_offset(ms, now), now), ms);
        }
    }
}

//! The logger while `start` still cares about it: to kill it if it is not ready in time,
//! and to tell whether it is exiting (a pidfd where the kernel has them, else
//! `/proc/PID/stat`), so that a dead logger's pipes are judged only once its exit is done.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// The logger while the shim still cares: to kill it if it fails to get ready, and to
/// tell whether it is dying, never by a recycled pid where pidfds exist.
pub(super) struct Handle {
    pid: i32,
    kind: HandleKind,
}

enum HandleKind {
    Pidfd(OwnedFd),
    /// No pidfd_open (kernel < 5.3): the pid, still unreaped in all likelihood.
    Pid,
    /// Already reaped.
    Gone,
}

/// `PF_EXITING` in the flags field of /proc/PID/stat: the task is in do_exit.
const PF_EXITING: u64 = 0x4;

impl Handle {
    pub(super) fn new(pid: i32) -> Self {
        let kind = match crate::process_core::pidfd::open(pid) {
            Ok(fd) => HandleKind::Pidfd(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => HandleKind::Pid,
            Err(_) => HandleKind::Gone,
        };
        Handle { pid, kind }
    }

    pub(super) fn kill(&self) {
        let _ = match &self.kind {
            HandleKind::Pidfd(fd) => crate::process_core::pidfd::send_signal(fd, libc::SIGKILL),
            HandleKind::Pid => nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .map_err(io::Error::from),
            HandleKind::Gone => Ok(()),
        };
    }

    /// Whether the logger has exited or is exiting.
    pub(super) fn exiting(&self) -> bool {
        match &self.kind {
            HandleKind::Gone => true,
            HandleKind::Pidfd(fd) if exited(fd, Duration::ZERO) => true,
            _ => stat_says_exiting(self.pid),
        }
    }

    /// Waits (until `deadline` at most) for an exiting logger to have finished exiting:
    /// a zombie has released all its files.
    pub(super) fn wait_exited(&self, deadline: Instant) {
        match &self.kind {
            HandleKind::Gone => {}
            HandleKind::Pidfd(fd) => {
                exited(fd, deadline.saturating_duration_since(Instant::now()));
            }
            HandleKind::Pid => {
                while Instant::now() < deadline && !stat_says_exited(self.pid) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}

/// Whether the process behind `pidfd` has exited (a pidfd polls readable then), waiting
/// up to `timeout`.
fn exited(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let ms = PollTimeout::try_from(timeout.as_millis()).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, ms), Ok(n) if n > 0)
}

/// State and flags from /proc/PID/stat; None when the pid is gone (reaped).
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp session tty_nr tpgid flags ...": comm may hold spaces
    // and parentheses, so split after the last ')'.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let flags = fields.nth(5)?.parse().ok()?;
    Some((state, flags))
}

fn stat_says_exiting(pid: i32) -> bool {
    match proc_stat(pid) {
        None => true,
        Some((state, flags)) => matches!(state, 'Z' | 'X' | 'x') || flags & PF_EXITING != 0,
    }
}

fn stat_says_exited(pid: i32) -> bool {
    match proc_stat(pid) {
        None => true,
        Some((state, _)) => matches!(state, 'Z' | 'X' | 'x'),
    }
}

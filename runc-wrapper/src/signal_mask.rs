//! runc starts with no signal blocked, whatever the calling thread blocks.
//!
//! A supervisor that takes its signals through a signalfd blocks them (SIGCHLD, SIGTERM, …)
//! in every thread, and a child inherits the signal mask across `exec`; std's `Command`
//! leaves it as it is. runc, crun or a `BinaryName` wrapper would then start with SIGCHLD
//! and SIGTERM blocked: a wrapper shell's `wait` for a background job never returns, and a
//! runtime that does not reset the mask itself passes it on to the container. containerd's
//! Go shim starts runc with an empty mask; so does this crate.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};

/// Makes `cmd`'s child clear its signal mask just before `exec`.
///
/// This takes std off its `posix_spawn` path onto fork + exec: when that `exec` fails, std
/// waits for the child inside `spawn`, so a [`crate::ProcessMonitor`] whose reaper runs
/// `waitpid(-1)` must not collect a child it does not know while its `start` runs (see the
/// trait's documentation).
pub(crate) fn start_unblocked(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child between fork and exec. It only builds an
    // empty sigset on the stack and calls pthread_sigmask, which is async-signal-safe: no
    // allocation, no lock, nothing another thread of the parent could have held at fork.
    unsafe {
        cmd.pre_exec(|| {
            pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use std::process::Stdio;

    #[test]
    fn the_child_starts_with_no_signal_blocked() {
        // In a thread of its own: the mask is per thread, and the test harness's other
        // threads must not be touched.
        let out = std::thread::spawn(|| {
            let mut blocked = SigSet::empty();
            blocked.add(Signal::SIGCHLD);
            blocked.add(Signal::SIGTERM);
            pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None).unwrap();
            let mut plain = Command::new("grep");
            plain
                .args(["SigBlk", "/proc/self/status"])
                .stdout(Stdio::piped());
            let inherited = plain.output().unwrap();
            let mut cmd = Command::new("grep");
            cmd.args(["SigBlk", "/proc/self/status"])
                .stdout(Stdio::piped());
            start_unblocked(&mut cmd);
            (inherited, cmd.output().unwrap())
        })
        .join()
        .unwrap();
        let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).trim().to_owned();
        // What std alone does (why this module exists): SIGTERM (15) and SIGCHLD (17).
        assert_eq!(text(&out.0), "SigBlk:\t0000000000014000");
        assert_eq!(text(&out.1), "SigBlk:\t0000000000000000");
    }

    #[test]
    fn a_binary_that_cannot_be_executed_is_an_error_not_a_panic() {
        let mut cmd = Command::new("/nonexistent/runc");
        start_unblocked(&mut cmd);
        let err = cmd.spawn().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}

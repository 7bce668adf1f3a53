//! What a supervised process keeps should its supervisor be SIGKILLed (an OOM kill, an
//! operator's mistake): its life, and as much truth about it as can be had.
//!
//! * [`protect_from_oom`]: the supervisor asks the OOM killer to spare it
//!   (`oom_score_adj` -999, as conmon does), once the process has started, so that
//!   neither runc nor the process inherits the score. Lowering it needs
//!   `CAP_SYS_RESOURCE`; without it the score stays as it was and that is logged, not
//!   fatal.
//! * [`spawn_keeper`]: a forked copy of the supervisor that holds copies of the process's
//!   output ends (the read ends of its stdout and stderr pipes, or the pty master) until
//!   the process exits (its pidfd polls readable) and then exits. The supervisor held the
//!   only copies; with it gone the process's next write would raise SIGPIPE (a terminal
//!   would hang up, SIGHUP). With the keeper, writes go on into the pipe and, once its
//!   1 MiB is full, block: the process is paused, not killed. The output written after
//!   the supervisor's death is not delivered to anyone.
//!
//! Not kept: stdin (the keeper holds no write end of it, or `close-stdin` could never
//! reach the process: it reads EOF once the supervisor is gone), and the exit status (only
//! the parent, the supervisor, could reap it): the `starttime` record lets `wait`,
//! `attach`, `ps` and `delete` tell whether the process still runs or is gone with its
//! status lost ([`fifo::ProcessDir::fate`]).
#![allow(unsafe_code)]

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// The score the supervisor asks for: the OOM killer picks it last (-1000 would exempt it
/// entirely; conmon uses -999 too, so that it is not unkillable).
pub const OOM_SCORE_ADJ: i32 = -999;

const OOM_SCORE_ADJ_PATH: &str = "/proc/self/oom_score_adj";

/// Lowers our `oom_score_adj` to [`OOM_SCORE_ADJ`]. Returns the score we have afterwards;
/// a refusal (no `CAP_SYS_RESOURCE`, e.g. root in a user namespace) is logged and leaves
/// the score as it was.
pub fn protect_from_oom() -> Option<i32> {
    let write = std::fs::OpenOptions::new()
        .write(true)
        .open(OOM_SCORE_ADJ_PATH)
        .and_then(|mut f| f.write_all(format!("{OOM_SCORE_ADJ}\n").as_bytes()));
    let now = std::fs::read_to_string(OOM_SCORE_ADJ_PATH)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    if let Err(e) = write {
        log::warn!(
            "cannot lower the supervisor's oom_score_adj to {OOM_SCORE_ADJ} ({e}); it stays {}",
            now.map_or_else(|| "unknown".to_string(), |n: i32| n.to_string())
        );
    }
    now
}

/// Forks the keeper: it holds `keep` (the process's output ends) until `pidfd` (the
/// process's) polls readable, then exits; every other descriptor it inherited is closed
/// first (above all the FIFOs' ends, so that a reader still sees EOF when the supervisor
/// goes). Returns its pid; an error if we have more than one thread (a forked child of a
/// multi-threaded process may only call async-signal-safe functions) or fork fails.
pub fn spawn_keeper(keep: &[BorrowedFd<'_>], pidfd: &OwnedFd) -> std::io::Result<i32> {
    if thread_count() != Some(1) {
        return Err(std::io::Error::other(
            "the supervisor is not single-threaded: no keeper forked",
        ));
    }
    let mut kept: Vec<i32> = keep.iter().map(AsRawFd::as_raw_fd).collect();
    kept.push(pidfd.as_raw_fd());
    // SAFETY: we are single-threaded (checked above), so the child is an ordinary copy of
    // this process: no lock can be held by a thread that does not exist in it, and it may
    // allocate. The child never returns from `keep_until_exit`.
    match unsafe { nix::unistd::fork() }.map_err(std::io::Error::from)? {
        nix::unistd::ForkResult::Child => keep_until_exit(&kept, pidfd.as_fd()),
        nix::unistd::ForkResult::Parent { child } => Ok(child.as_raw()),
    }
}

/// The keeper's life: close everything but `kept`, wait for the process's exit, exit.
fn keep_until_exit(kept: &[i32], pidfd: BorrowedFd<'_>) -> ! {
    let _ = nix::sys::prctl::set_name(c"tether-keeper");
    let open: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    for fd in open {
        if !kept.contains(&fd) {
            // SAFETY: closing a descriptor number; none of them is used by anything in
            // this process any more (we only poll the pidfd below, which is kept).
            unsafe { libc::close(fd) };
        }
    }
    loop {
        let mut fds = [nix::poll::PollFd::new(pidfd, nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Ok(n) if n > 0 => break,
            Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
            Err(_) => break,
        }
    }
    // SAFETY: _exit ends the process without running anything of the parent's copy
    // (atexit handlers, buffered output that is the supervisor's).
    unsafe { libc::_exit(0) }
}

/// Our number of threads, from /proc/self/status.
fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_count_is_read() {
        assert!(thread_count().is_some_and(|n| n >= 1));
    }

    #[test]
    fn no_fork_from_a_multi_threaded_process() {
        // The test harness runs tests on threads: there are at least two, and a forked
        // child could deadlock on a lock another thread held. It must refuse.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        let fd = crate::supervisor::pidfd::open(nix::unistd::getpid().as_raw()).unwrap();
        let err = spawn_keeper(&[], &fd).unwrap_err();
        assert!(err.to_string().contains("single-threaded"), "{err}");
        drop(tx);
        let _ = other.join();
    }
}

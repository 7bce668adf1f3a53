//! What a supervised process keeps should its supervisor be SIGKILLed (the OOM killer's
//! pick, an operator's mistake): its life, its output and its exit status.
//!
//! * [`protect_from_oom`]: the supervisor asks the OOM killer to spare it
//!   (`oom_score_adj` -999, as conmon does), once the process has started, so that
//!   neither runc nor the process inherits the score. Lowering it needs
//!   `CAP_SYS_RESOURCE`; without it the score stays as it was and that is logged, not
//!   fatal.
//! * [`fork_keeper`]: `supervise` forks first thing, while it is one small thread; the
//!   parent becomes the keeper, the child goes on as the supervisor. The keeper is a child
//!   subreaper and the supervisor's parent: when the supervisor dies, the kernel
//!   reparents the supervisor's children (the process, running or a zombie) to the
//!   keeper. Once the process runs the supervisor hands the keeper copies of the process
//!   directory, `exit`, the process's output ends and the output FIFOs' ends
//!   ([`link`]). From then on:
//!   - while the supervisor lives the keeper only listens; the supervisor tells it the
//!     exit status before it reaps the process, and lets it go once `exitcode` is
//!     written (the keeper holds `exit` until then too, so EOF still means "final");
//!   - should the supervisor die, the keeper delivers the process's output to the FIFOs
//!     (what the process wrote before the death and after it), reaps the process, writes
//!     `exitcode` (the real status) and only then closes `exit`; it stays until a manager
//!     has read the output (or a termination signal after the exit, as `delete` sends),
//!     then goes. The process's output ends held by the keeper also spare it SIGPIPE (a
//!     terminal its SIGHUP).
//!
//!   Not kept: stdin (the process reads EOF once its supervisor is gone), `winsz` and
//!   `control` (resizes and `close-stdin` reach only a supervisor), a pea's runc
//!   container (the keeper runs no runc: `delete` removes it), output a spool held
//!   (it was the supervisor's memory and files). The keeper is small: one thread, no
//!   runc, a few descriptors; it forks before the supervisor allocates anything much.
//!
//! Only when the keeper is killed too is the status lost: the `starttime` record then lets
//! `wait`, `attach`, `ps` and `delete` tell whether the process still runs or is gone
//! ([`fifo::ProcessDir::fate`]).
#![allow(unsafe_code)]

mod life;
pub mod link;

use super::errors::CliError;
use fifo::ExitRecord;
use link::{LinkError, Message};
pub use link::{Output, Role};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

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

/// The supervisor's end of the line to its keeper.
#[derive(Debug)]
pub struct KeeperLink {
    sock: OwnedFd,
    pid: i32,
}

impl KeeperLink {
    /// The link carried across a live upgrade: the supervisor's end of the socket pair,
    /// and the keeper's pid.
    pub fn from_parts(sock: OwnedFd, pid: i32) -> Self {
        KeeperLink { sock, pid }
    }

    /// The keeper's pid (our parent's).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The supervisor's end of the socket pair (to carry it across a live upgrade).
    pub fn sock(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Hands over what the keeper needs to take process `pid` over: each descriptor with
    /// its role. Call once, before reporting the process started.
    pub fn hand_over(&self, pid: i32, fds: &[(Role, BorrowedFd<'_>)]) -> Result<(), LinkError> {
        let roles = fds.iter().map(|(r, _)| *r).collect();
        let fds: Vec<BorrowedFd<'_>> = fds.iter().map(|(_, fd)| *fd).collect();
        link::send(self.sock.as_fd(), &Message::Handover { pid, roles }, &fds)
    }

    /// Tells the exit of the process, before the supervisor reaps it.
    pub fn exited(&self, exit: &ExitRecord) -> Result<(), LinkError> {
        link::send(self.sock.as_fd(), &Message::Exited { exit: *exit }, &[])
    }

    /// `exitcode` is written and the supervisor's `exit` closed: the keeper may go.
    pub fn recorded(&self) -> Result<(), LinkError> {
        link::send(self.sock.as_fd(), &Message::Recorded, &[])
    }
}

/// Forks the keeper (see the module doc): returns in the child, which goes on as the
/// supervisor, with its link; the parent becomes the keeper and never returns (it exits
/// with the supervisor's status if the supervisor dies before handing anything over,
/// else 0). `origin` is the process directory, for the keeper's log lines.
///
/// Errors (the caller goes on without a keeper): we have more than one thread (a forked
/// child of a multi-threaded process may only call async-signal-safe functions), or the
/// socket pair, the subreaper setting or the fork failed.
pub fn fork_keeper(origin: &Path) -> Result<KeeperLink, CliError> {
    if thread_count() != Some(1) {
        return Err(CliError::Failed(
            "the supervisor is not single-threaded: no keeper forked".into(),
        ));
    }
    let (ours, theirs) = link::pair()?;
    // In the parent (the keeper to be) before the fork: the supervisor's orphans must
    // never reach anyone else, however early it dies. Not inherited by the child.
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| CliError::Failed(format!("keeper: subreaper: {e}")))?;
    // SAFETY: we are single-threaded (checked above), so the child is an ordinary copy of
    // this process: no lock can be held by a thread that does not exist in it, and it may
    // allocate. The parent never returns from `become_keeper`.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(theirs);
            Ok(KeeperLink {
                sock: ours,
                pid: nix::unistd::getppid().as_raw(),
            })
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(ours);
            become_keeper(theirs, child.as_raw(), origin)
        }
        Err(e) => {
            let _ = nix::sys::prctl::set_child_subreaper(false);
            Err(CliError::Failed(format!("keeper: fork: {e}")))
        }
    }
}

/// The keeper's life, in the parent of the fork.
fn become_keeper(link: OwnedFd, supervisor: i32, origin: &Path) -> ! {
    let _ = nix::sys::prctl::set_name(c"tether-keeper");
    // Our stdout is the caller's readiness pipe (the supervisor reports on it) and stdin
    // its spec: neither is ours to hold.
    crate::standalone::supervise::detach_stdio();
    protect_from_oom();
    let code = life::keep(link, supervisor, origin.to_path_buf());
    // SAFETY: _exit ends the process without running anything of the parent's copy
    // (atexit handlers, buffered output that is the supervisor's).
    unsafe { libc::_exit(code) }
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
        let err = fork_keeper(Path::new("/nonexistent")).unwrap_err();
        assert!(err.to_string().contains("single-threaded"), "{err}");
        drop(tx);
        let _ = other.join();
    }
}

//! How runc child processes are started and waited for.

use std::io;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::spawn::{RuntimeChild, RuntimeCommand};

/// How runc child processes are started and waited for.
///
/// A supervisor that is a child subreaper and reaps with `waitpid(-1)` must never steal a runc
/// invocation's exit status: it supplies its own monitor, which registers the pid with its reaper
/// before the reaper can see the exit, and hands the status back in [`ProcessMonitor::wait`].
///
/// Every runc invocation of this crate goes through exactly one `start` and, if that succeeded,
/// one or more `wait_until` followed, unless one of them returned the status, by exactly one
/// `wait` on the returned child (all from the same thread). `wait` is called after the crate
/// has taken and finished with the child's piped stdio, if any.
pub trait ProcessMonitor: Send + Sync + std::fmt::Debug {
    /// Starts `cmd` (stdio and arguments are already configured) with
    /// [`RuntimeCommand::spawn`] and returns the child. A child whose `execve` fails is
    /// reaped inside `spawn`: a monitor whose reaper could take it first keeps the reaper
    /// off it meanwhile (by a lock the reaper takes before it reaps).
    fn start(&self, cmd: &RuntimeCommand) -> io::Result<RuntimeChild>;
    /// Waits for `child` to exit and returns its exit status.
    fn wait(&self, child: &mut RuntimeChild) -> io::Result<ExitStatus>;

    /// Waits for `child` to exit, but not past `deadline`: `Some(status)` once it exited (it
    /// is reaped then, as by [`ProcessMonitor::wait`]), `None` when it still ran at the
    /// deadline (not reaped: the caller kills it and calls `wait`).
    ///
    /// The default polls [`RuntimeChild::try_wait`], which is right only for a monitor whose
    /// `wait` is [`RuntimeChild::wait`]; a monitor that reaps on its own must override it.
    fn wait_until(
        &self,
        child: &mut RuntimeChild,
        deadline: Instant,
    ) -> io::Result<Option<ExitStatus>> {
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// The deadline of the caller's current operation, if it has one: an invocation started
    /// through this monitor is killed when it passes (see [`crate::Runc::with_deadline`],
    /// which takes precedence). The default is none.
    fn deadline(&self) -> Option<Instant> {
        None
    }
}

/// [`RuntimeCommand::spawn`] + [`RuntimeChild::wait`]: for callers that do not reap children
/// on their own.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultMonitor;

impl ProcessMonitor for DefaultMonitor {
    fn start(&self, cmd: &RuntimeCommand) -> io::Result<RuntimeChild> {
        cmd.spawn()
    }

    fn wait(&self, child: &mut RuntimeChild) -> io::Result<ExitStatus> {
        child.wait()
    }
}

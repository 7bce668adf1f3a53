//! How runc child processes are started and waited for.

use std::io;
use std::process::{Child, Command, ExitStatus};

/// How runc child processes are started and waited for.
///
/// A supervisor that is a child subreaper and reaps with `waitpid(-1)` must never steal a runc
/// invocation's exit status: it supplies its own monitor, which registers the pid with its reaper
/// before the reaper can see the exit, and hands the status back in [`ProcessMonitor::wait`].
///
/// Every runc invocation of this crate goes through exactly one `start` and, if that succeeded,
/// exactly one `wait` on the returned child (from the same thread). `wait` is called after the
/// crate has taken and finished with the child's piped stdio, if any.
pub trait ProcessMonitor: Send + Sync + std::fmt::Debug {
    /// Starts `cmd` (stdio and arguments are already configured) and returns the child.
    fn start(&self, cmd: &mut Command) -> io::Result<Child>;
    /// Waits for `child` to exit and returns its exit status.
    fn wait(&self, child: &mut Child) -> io::Result<ExitStatus>;
}

/// [`Command::spawn`] + [`Child::wait`]: for callers that do not reap children on their own.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultMonitor;

impl ProcessMonitor for DefaultMonitor {
    fn start(&self, cmd: &mut Command) -> io::Result<Child> {
        cmd.spawn()
    }

    fn wait(&self, child: &mut Child) -> io::Result<ExitStatus> {
        child.wait()
    }
}

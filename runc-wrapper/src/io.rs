//! The stdio a verb that hands its stdio to the container (create, run, exec, restore) runs with.

use crate::spawn::{ChildStdio, RuntimeCommand};
use std::os::fd::OwnedFd;

/// The stdio runc itself is started with.
///
/// For create/run/exec/restore without a terminal the container process inherits these, so they
/// are the container's stdio. Each `None` means `/dev/null`. The wrapper never reads from or
/// writes to them; they are handed to runc and closed in this process once runc has been started.
#[derive(Debug, Default)]
pub struct ProcessIo {
    /// runc's (and so the container's) stdin; `None` = `/dev/null`.
    pub stdin: Option<OwnedFd>,
    /// runc's (and so the container's) stdout; `None` = `/dev/null`.
    pub stdout: Option<OwnedFd>,
    /// runc's (and so the container's) stderr; `None` = `/dev/null`.
    pub stderr: Option<OwnedFd>,
    /// The read end of the pipe given as `stderr`, when it is one the caller reads: if runc
    /// fails before the process runs (`create`, or a detached `exec`/`run`/`restore`), what
    /// is waiting in the pipe is the runtime's own, and its tail is read (bounded, without
    /// blocking) for the error message when the log has none. Closed after the call.
    pub stderr_reader: Option<OwnedFd>,
}

impl ProcessIo {
    /// Uses the given file descriptors (ownership is taken; `None` = `/dev/null`).
    pub fn from_fds(
        stdin: Option<OwnedFd>,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    ) -> Self {
        ProcessIo {
            stdin,
            stdout,
            stderr,
            stderr_reader: None,
        }
    }

    /// Installs these as `cmd`'s stdio, `/dev/null` for each `None` (`stderr_reader` is
    /// the caller's to take first).
    pub(crate) fn apply(self, cmd: &mut RuntimeCommand) {
        let lead = |fd: Option<OwnedFd>| fd.map_or(ChildStdio::Null, ChildStdio::Fd);
        cmd.stdin(lead(self.stdin));
        cmd.stdout(lead(self.stdout));
        cmd.stderr(lead(self.stderr));
    }
}

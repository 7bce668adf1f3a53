//! Starting runc through the [`ProcessMonitor`](crate::ProcessMonitor), collecting its output,
//! and turning a failed invocation into an [`Error`].

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::io::ProcessIo;
use crate::monitor::ProcessMonitor;
use crate::runtime_log;
use crate::spawn::{ChildStdio, RuntimeChild, RuntimeCommand};
use crate::stderr_tail;

/// Output beyond this many bytes on stdout makes the call fail instead of growing without bound.
const MAX_STDOUT: usize = 64 << 20;
/// Only the last this-many bytes of stderr are kept (enough for the final error line).
const MAX_STDERR: usize = 64 << 10;

/// Where the stderr of a verb whose process inherits runc's stdio may be read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StderrAccess {
    /// The process gets a terminal (`--console-socket`), not runc's stdio: an unset stderr can
    /// be a pipe of ours, read until runc exits.
    pub terminal: bool,
    /// runc fails before the process runs (`create`; `exec`, `run`, `restore` with
    /// `--detach`): after a failure, what waits in [`ProcessIo::stderr_reader`] is runc's.
    pub fails_before_process: bool,
}

/// What a finished invocation left behind.
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Option<Vec<u8>>,
    /// Where this invocation's part of the log file begins, when a log is configured.
    pub log_offset: Option<u64>,
}

/// What starting one runc invocation needs of its [`Runc`](crate::Runc): the binary, the
/// log file, the monitor that starts and waits for it, and the deadline. `Runc` builds one
/// per call (`Runc::invoker`), so this layer knows nothing of the verbs above it.
pub(crate) struct Invoker<'a> {
    /// The runc-compatible binary.
    pub binary: &'a Path,
    /// runc's `--log` file, where its own error messages are read from.
    pub log: Option<&'a Path>,
    /// Starts and waits for runc (a reaping supervisor's, so runc's status is never lost).
    pub monitor: &'a dyn ProcessMonitor,
    /// When runc must be done by; see [`Runc::with_deadline`](crate::Runc::with_deadline).
    pub deadline: Option<Instant>,
}

impl Invoker<'_> {
    /// runc with `args`; started, it has no blocked or ignored signal of ours (nor,
    /// through it, the container): a supervisor blocks the ones its signalfd reads.
    fn command(&self, args: &[OsString]) -> RuntimeCommand {
        log::debug!("exec {:?} {:?}", self.binary, args);
        let mut cmd = RuntimeCommand::new(self.binary);
        cmd.args(args);
        cmd
    }

    fn log_offset(&self) -> Option<u64> {
        self.log.map(runtime_log::log_offset)
    }

    /// Starts `cmd`; with a `deadline`, in a process group of its own (so that whatever runc
    /// starts and has not detached yet is killed with it), and not at all once it has passed.
    fn spawn(
        &self,
        command: &'static str,
        cmd: &mut RuntimeCommand,
        deadline: Option<Instant>,
    ) -> Result<RuntimeChild> {
        if let Some(deadline) = deadline {
            if Instant::now() >= deadline {
                return Err(Error::DeadlineExceeded {
                    command,
                    binary: self.binary.to_owned(),
                    ran: None,
                });
            }
            cmd.new_process_group();
        }
        self.monitor.start(cmd).map_err(|source| Error::Spawn {
            binary: self.binary.to_owned(),
            source,
        })
    }

    fn wait(&self, command: &'static str, child: &mut RuntimeChild) -> Result<ExitStatus> {
        self.monitor
            .wait(child)
            .map_err(|e| Error::io(format!("cannot wait for runc {command}"), e))
    }

    /// Waits for runc, killing it at `deadline` (see [`Invoker::expire`]).
    fn wait_within(
        &self,
        command: &'static str,
        child: &mut RuntimeChild,
        deadline: Option<Instant>,
        started: Instant,
    ) -> Result<ExitStatus> {
        let Some(deadline) = deadline else {
            return self.wait(command, child);
        };
        match self.monitor.wait_until(child, deadline) {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err(self.expire(command, child, started)),
            Err(e) => Err(Error::io(format!("cannot wait for runc {command}"), e)),
        }
    }

    /// runc ran past its deadline: SIGKILLs its process group (runc leads it, see
    /// [`Invoker::spawn`]), reaps runc, and describes what happened.
    fn expire(&self, command: &'static str, child: &mut RuntimeChild, started: Instant) -> Error {
        // runc is not reaped yet (its monitor hands its status to `wait` only), so its pid
        // still names its group; a member it left (e.g. a container init between `create`'s
        // steps) keeps the group's id in use after runc is gone.
        let group = Pid::from_raw(child.id().cast_signed());
        if let Err(e) = killpg(group, Signal::SIGKILL) {
            log::warn!("runc {command}: cannot kill process group {group}: {e}");
        }
        if let Err(e) = self.wait(command, child) {
            log::warn!("{e}");
        }
        log::warn!(
            "runc {command} still ran at its deadline after {:?}: killed",
            started.elapsed()
        );
        Error::DeadlineExceeded {
            command,
            binary: self.binary.to_owned(),
            ran: Some(started.elapsed()),
        }
    }

    /// Runs runc with its stdio taken from `io` and waits for it.
    ///
    /// For verbs whose process inherits runc's stdio: runc's stderr is the process's, so it is
    /// read only where that cannot take the process's output or wait for the process (see
    /// [`StderrAccess`]); otherwise errors come from the log file alone.
    pub(crate) fn run_with_io(
        &self,
        command: &'static str,
        args: &[OsString],
        mut io: ProcessIo,
        access: StderrAccess,
    ) -> Result<Finished> {
        let log_offset = self.log_offset();
        let deadline = self.deadline;
        let started = Instant::now();
        let reader = io.stderr_reader.take();
        let capture = if access.terminal && io.stderr.is_none() {
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
                .map_err(|e| Error::io(format!("cannot pipe runc {command}'s stderr"), e.into()))?;
            io.stderr = Some(w);
            Some(r)
        } else {
            None
        };
        let mut child = {
            let mut cmd = self.command(args);
            io.apply(&mut cmd);
            self.spawn(command, &mut cmd, deadline)?
            // `cmd` is dropped here, closing this process's copies of the stdio fds.
        };
        let (status, mut stderr) = match capture {
            Some(pipe) => {
                let (status, tail) =
                    self.wait_reading_stderr(command, &mut child, pipe, deadline, started)?;
                (status, Some(tail))
            }
            None => (
                self.wait_within(command, &mut child, deadline, started)?,
                None,
            ),
        };
        if !status.success() && access.fails_before_process {
            if let (None, Some(reader)) = (&stderr, reader) {
                stderr = Some(stderr_tail::read_available(reader));
            }
        }
        Ok(Finished {
            status,
            stdout: Vec::new(),
            stderr,
            log_offset,
        })
    }

    /// Waits for runc while keeping the tail of its stderr `pipe`, until EOF or, should
    /// something runc started hold the pipe open, until runc itself has exited.
    fn wait_reading_stderr(
        &self,
        command: &'static str,
        child: &mut RuntimeChild,
        pipe: std::os::fd::OwnedFd,
        deadline: Option<Instant>,
        started: Instant,
    ) -> Result<(ExitStatus, Vec<u8>)> {
        const LOOK_FOR_EXIT: std::time::Duration = std::time::Duration::from_millis(50);
        let mut pipe = std::fs::File::from(pipe);
        let mut tail = stderr_tail::Tail::default();
        let read_error = |e| Error::io(format!("cannot read stderr of runc {command}"), e);
        loop {
            let step = match deadline {
                Some(d) if Instant::now() >= d => return Err(self.expire(command, child, started)),
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(LOOK_FOR_EXIT),
                None => LOOK_FOR_EXIT,
            };
            let timeout = PollTimeout::try_from(step.max(std::time::Duration::from_millis(1)))
                .unwrap_or(PollTimeout::MAX);
            if stderr_tail::readable(&pipe, timeout).map_err(read_error)? {
                if !stderr_tail::read_once(&mut pipe, &mut tail).map_err(read_error)? {
                    break;
                }
                continue;
            }
            let exited = self
                .monitor
                .wait_until(child, Instant::now())
                .map_err(|e| Error::io(format!("cannot wait for runc {command}"), e))?;
            if let Some(status) = exited {
                let mut rest = stderr_tail::read_available(pipe.into());
                let mut all = tail.into_bytes();
                all.append(&mut rest);
                let mut tail = stderr_tail::Tail::default();
                tail.push(&all);
                return Ok((status, tail.into_bytes()));
            }
        }
        let status = self.wait_within(command, child, deadline, started)?;
        Ok((status, tail.into_bytes()))
    }

    /// Runs runc with stdout and stderr piped (and `input` written to its stdin, else stdin is
    /// `/dev/null`), collects both without deadlocking, and waits for it.
    pub(crate) fn run_captured(
        &self,
        command: &'static str,
        args: &[OsString],
        input: Option<&[u8]>,
    ) -> Result<Finished> {
        let log_offset = self.log_offset();
        let deadline = self.deadline;
        let started = Instant::now();
        let mut child = {
            let mut cmd = self.command(args);
            cmd.stdin(if input.is_some() {
                ChildStdio::Piped
            } else {
                ChildStdio::Null
            });
            cmd.stdout(ChildStdio::Piped);
            cmd.stderr(ChildStdio::Piped);
            self.spawn(command, &mut cmd, deadline)?
        };
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        // Whatever happened while communicating, the child must be waited for.
        let collected = communicate(stdin, input.unwrap_or_default(), stdout, stderr, deadline);
        if let Ok(None) = collected {
            return Err(self.expire(command, &mut child, started));
        }
        let status = self.wait_within(command, &mut child, deadline, started)?;
        let (stdout, stderr) = collected
            .map_err(|e| Error::io(format!("cannot read output of runc {command}"), e))?
            .unwrap_or_default();
        Ok(Finished {
            status,
            stdout,
            stderr: Some(stderr),
            log_offset,
        })
    }

    /// The error for a failed invocation: log message, else stderr message, else the status.
    pub(crate) fn failure(&self, command: &'static str, finished: &Finished) -> Error {
        let message = self
            .logged_error(finished)
            .or_else(|| {
                finished
                    .stderr
                    .as_deref()
                    .and_then(runtime_log::stderr_message)
            })
            .unwrap_or_else(|| describe_status(finished.status));
        // runc prefixes its own messages with "runc <verb> failed: "; our Display adds the
        // same words, so drop runc's to keep the message readable.
        let own_prefix = format!("runc {command} failed: ");
        let message = match message.strip_prefix(&own_prefix) {
            Some(rest) if !rest.is_empty() => rest.to_string(),
            _ => message,
        };
        Error::Runtime {
            command,
            status: finished.status.code(),
            message,
        }
    }

    /// runc's last error message in this invocation's part of the log file, if any.
    pub(crate) fn logged_error(&self, finished: &Finished) -> Option<String> {
        let path = self.log?;
        runtime_log::last_error_since(path, finished.log_offset?)
    }

    /// `Ok(finished)` if runc exited 0, else the [`Error::Runtime`] describing the failure.
    /// The exit code of a `runc run`/`exec` that ran the process in the foreground (its own
    /// code unless runc logged an error); with `detach`, any non-zero status is runc's failure.
    pub(crate) fn exit_code(
        &self,
        command: &'static str,
        detach: bool,
        finished: Finished,
    ) -> Result<i32> {
        match finished.status.code() {
            Some(0) => Ok(0),
            Some(code) if !detach && self.logged_error(&finished).is_none() => Ok(code),
            _ => Err(self.failure(command, &finished)),
        }
    }

    pub(crate) fn check(&self, command: &'static str, finished: Finished) -> Result<Finished> {
        if finished.status.success() {
            Ok(finished)
        } else {
            Err(self.failure(command, &finished))
        }
    }
}

/// `exit status N` / `killed by signal N`.
pub(crate) fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => format!("{status}"),
    }
}

fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(raw, FcntlArg::F_GETFL)?);
    fcntl(raw, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Reads whatever is available from `src` into `buf`; returns false at EOF (or on a read error
/// other than would-block, which is treated as EOF after being reported).
fn drain(src: &mut impl Read, buf: &mut Vec<u8>, keep_tail: Option<usize>) -> io::Result<bool> {
    let mut chunk = [0u8; 8192];
    loop {
        match src.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                match keep_tail {
                    Some(max) if buf.len() > max => {
                        let excess = buf.len() - max;
                        buf.drain(..excess);
                    }
                    None if buf.len() > MAX_STDOUT => {
                        return Err(io::Error::other(format!(
                            "more than {MAX_STDOUT} bytes of output"
                        )))
                    }
                    _ => {}
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Feeds `input` to `stdin` and collects `stdout` and the tail of `stderr`, all at once, until
/// both outputs reach EOF. A child that stops reading its stdin early is not an error.
/// `Ok(None)` when `deadline` passed first.
fn communicate(
    mut stdin: Option<File>,
    input: &[u8],
    mut stdout: Option<File>,
    mut stderr: Option<File>,
    deadline: Option<Instant>,
) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    if let Some(s) = &stdin {
        set_nonblocking(s)?;
    }
    if let Some(s) = &stdout {
        set_nonblocking(s)?;
    }
    if let Some(s) = &stderr {
        set_nonblocking(s)?;
    }
    let mut written = 0;
    if input.is_empty() {
        stdin = None;
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while stdin.is_some() || stdout.is_some() || stderr.is_some() {
        let (in_ready, out_ready, err_ready) = {
            let mut fds = Vec::with_capacity(3);
            let in_idx = stdin.as_ref().map(|s| {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLOUT));
                fds.len() - 1
            });
            let out_idx = stdout.as_ref().map(|s| {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let err_idx = stderr.as_ref().map(|s| {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    // Rounded up: a poll that returns just before the deadline comes back
                    // here once more instead of spinning.
                    PollTimeout::try_from(left + std::time::Duration::from_millis(1))
                        .unwrap_or(PollTimeout::MAX)
                }
            };
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let ready = |idx: Option<usize>| {
                idx.and_then(|i| fds[i].revents())
                    .is_some_and(|r| !r.is_empty())
            };
            (ready(in_idx), ready(out_idx), ready(err_idx))
        };
        if in_ready {
            if let Some(s) = stdin.as_mut() {
                match s.write(&input[written..]) {
                    Ok(n) => written += n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    // The child closed its stdin (EPIPE) or something else went wrong: it will
                    // tell us through its exit status.
                    Err(_) => written = input.len(),
                }
                if written >= input.len() {
                    stdin = None; // closes the pipe: EOF for the child
                }
            }
        }
        if out_ready {
            if let Some(s) = stdout.as_mut() {
                if !drain(s, &mut out, None)? {
                    stdout = None;
                }
            }
        }
        if err_ready {
            if let Some(s) = stderr.as_mut() {
                if !drain(s, &mut err, Some(MAX_STDERR))? {
                    stderr = None;
                }
            }
        }
    }
    Ok(Some((out, err)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_descriptions() {
        assert_eq!(
            describe_status(ExitStatus::from_raw(1 << 8)),
            "exit status 1"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(9)),
            "killed by signal 9"
        );
    }
}

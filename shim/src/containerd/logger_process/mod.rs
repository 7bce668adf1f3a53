//! `binary://` and `binary-v2://` loggers: containerd's pluggable logging binaries.
//!
//! A stdio URI `binary:///path/to/logger?key=value&env.NAME=value` makes the shim start
//! `/path/to/logger` with, as containerd does:
//! - argv: every query key followed by its (first) value, even an empty one; containerd
//!   iterates a Go map, so its order is unspecified: here the pairs are sorted by key;
//! - environment: only `CONTAINER_ID`, `CONTAINER_NAMESPACE` (given by the caller) and the
//!   `env.NAME=value` query parameters (containerd 2.x), nothing from the shim's own;
//! - fd 3: the read end of the container's stdout pipe, fd 4: of its stderr pipe, fd 5:
//!   the write end of a "ready" pipe; fds 0-2 are `/dev/null`; no other fd.
//!
//! The shim waits until the logger closes fd 5 or writes to it (bounded by
//! [`READY_TIMEOUT`]; containerd waits forever). `binary-v2://` (containerd 2.2+, same
//! syntax) is stricter, as containerd's runc shim: the logger must write a byte to fd 5 (its
//! library's `ready()` writes one and closes it), and EOF without one means it crashed or
//! exited before it was ready, a failure; plain `binary://` counts EOF as ready, for the
//! loggers written before. Then the shim hands the write ends of the two pipes
//! to the container (with a terminal, [`Streams::Terminal`]: the stdout pipe's to the pty
//! master's pump, and the stderr pipe gets no writer) and forgets the logger: it holds the read ends itself and exits when
//! the container's last writer is gone. The shim never waits for it; its subreaper loop
//! reaps it like any unknown child.
//!
//! The logger is started with `posix_spawn(3)`, not `std::process::Command` + `pre_exec`:
//! std's fork path reports exec errors through a pipe that may land on fd 3, 4 or 5 in the
//! child (and be clobbered by the remapping), and it `waitpid`s a child whose exec failed
//! and panics on ECHILD, which the shim's `waitpid(-1)` reaper can cause. glibc's
//! posix_spawn reports errors through shared memory and tolerates the reaper. The spawn
//! itself is runc-wrapper's (`posix_spawn`, `FileActions`, `SpawnAttr`), the one place the
//! shim calls it; only the logger's own descriptors and signal set are made here (in
//! `spawn.rs`, the one file of this module allowed `unsafe`).
//!
//! This file starts a logger and waits for it to be ready; the URI is parsed in `uri.rs`,
//! and the started logger is watched through a `Handle` (`handle.rs`) until it is ready.

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::pipe2;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

mod handle;
mod spawn;
mod uri;

use handle::Handle;
use spawn::{above_stdio, spawn};
pub use uri::{is_logger_uri, parse, LoggerSpec};

/// How long a logger may take to signal that it is ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the logger is given to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streams {
    /// The container's stdout and stderr: two pipes it writes itself (fds 3 and 4).
    Pipes,
    /// A terminal's one stream: the pty master's output, which the shim copies into the
    /// stdout pipe (fd 3). The stderr pipe (fd 4) has no writer, so the logger reads EOF
    /// there at once, as from containerd's runc shim, which leaves it empty.
    Terminal,
}

/// A logger that signalled ready, and the pipe ends it reads from.
#[derive(Debug)]
pub struct Started {
    /// The logger's pid. Nobody waits for it: the reaper collects it.
    pub pid: i32,
    /// Write end of the pipe the logger reads as fd 3: the container's stdout.
    pub stdout: OwnedFd,
    /// Write end of the pipe the logger reads as fd 4: the container's stderr
    /// ([`Streams::Pipes`] only).
    pub stderr: Option<OwnedFd>,
}

/// Starts the logger `spec` names, with `env` (`CONTAINER_ID`, `CONTAINER_NAMESPACE`) as
/// its environment, to read `streams`, and waits up to [`READY_TIMEOUT`] for it to be
/// ready.
pub fn start(spec: &LoggerSpec, env: &[(String, String)], streams: Streams) -> io::Result<Started> {
    start_with_timeout(spec, env, streams, READY_TIMEOUT)
}

/// [`start`] with the ready timeout as a parameter. A logger that is not ready in time,
/// or that is gone by then (none of the pipes it is to read has a reader), is killed and
/// an error returned.
pub fn start_with_timeout(
    spec: &LoggerSpec,
    env: &[(String, String)],
    streams: Streams,
    timeout: Duration,
) -> io::Result<Started> {
    let name = spec.path.display().to_string();
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC)?;
    let devnull = File::options().read(true).write(true).open("/dev/null")?;
    let argv = argv(spec)?;
    let envp = envp(spec, env)?;
    let pid = spawn(
        &argv,
        &envp,
        [
            above_stdio(devnull.into())?,
            above_stdio(out_r)?,
            above_stdio(err_r)?,
            above_stdio(ready_w)?,
        ],
    )
    .map_err(|e| io::Error::new(e.kind(), format!("start binary logger {name}: {e}")))?;
    // Our copies of the child's ends are closed now (spawn consumed them): the ready pipe
    // reaches EOF once the logger closes fd 5, and only the logger reads the output pipes.
    let err_w = match streams {
        Streams::Pipes => Some(err_w),
        Streams::Terminal => None,
    };
    let handle = Handle::new(pid);
    let deadline = Instant::now() + timeout;
    match wait_ready(&ready_r, timeout) {
        Ok(Ready::Byte) => {}
        Ok(Ready::Eof) if !spec.strict_ready => {}
        Ok(Ready::Eof) => {
            handle.kill();
            return Err(io::Error::other(format!(
                "binary logger {name} closed fd 5 without writing to it: it did not signal \
                 ready (a binary-v2:// logger writes a byte first), it may have crashed or \
                 exited prematurely"
            )));
        }
        Err(e) => {
            handle.kill();
            return Err(io::Error::new(
                e.kind(),
                format!("binary logger {name}: {e}"),
            ));
        }
    }
    // A logger that died closed fd 5 as it exited, and the kernel may release its fds 3
    // and 4 a moment later: let the exit finish before asking whether the pipes still have
    // readers. Processes forked meanwhile hold copies of the read ends until their exec:
    // for a logger that exited, give those a moment to go too.
    let grace = if handle.exiting() {
        handle.wait_exited(deadline);
        EXITED_GRACE
    } else {
        Duration::ZERO
    };
    let (out_gone, err_gone) = match &err_w {
        Some(err_w) => {
            let [out, err] = readers_gone([&out_w, err_w], grace)?;
            (out, err)
        }
        None => (readers_gone([&out_w], grace)?[0], true),
    };
    if out_gone && err_gone {
        handle.kill();
        return Err(io::Error::other(format!(
            "binary logger {name} exited (or closed {}) instead of reading the \
             container's output",
            if err_w.is_some() {
                "fds 3 and 4"
            } else {
                "fd 3"
            }
        )));
    }
    if err_w.is_some() && (out_gone || err_gone) {
        log::warn!(
            "binary logger {name} (pid {pid}) closed fd {}: the container's {} has no reader",
            if out_gone { 3 } else { 4 },
            if out_gone { "stdout" } else { "stderr" },
        );
    }
    Ok(Started {
        pid,
        stdout: out_w,
        stderr: err_w,
    })
}

fn argv(spec: &LoggerSpec) -> io::Result<Vec<CString>> {
    let mut argv = vec![cstring(spec.path.as_os_str().as_bytes())?];
    for a in &spec.args {
        argv.push(cstring(a.as_bytes())?);
    }
    Ok(argv)
}

/// The caller's variables first (they win), then the URI's `env.` ones not already set.
fn envp(spec: &LoggerSpec, env: &[(String, String)]) -> io::Result<Vec<CString>> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for (k, v) in env.iter().chain(&spec.env) {
        if k.is_empty() || k.contains('=') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad environment variable name {k:?}"),
            ));
        }
        if seen.contains(&k.as_str()) {
            continue;
        }
        seen.push(k);
        out.push(cstring(format!("{k}={v}").as_bytes())?);
    }
    Ok(out)
}

fn cstring(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argv"))
}

/// How a logger signalled that it is ready.
enum Ready {
    /// It wrote (at least) a byte to fd 5.
    Byte,
    /// fd 5 reached EOF with nothing written: it closed it, or exited.
    Eof,
}

/// Waits up to `timeout` for the first byte or EOF on the ready pipe.
fn wait_ready(ready: &OwnedFd, timeout: Duration) -> io::Result<Ready> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = PollTimeout::try_from(left.as_millis().max(1)).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(ready.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) => {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "not ready after {timeout:?} (a logger closes fd 5, or writes \
                             to it, once it is ready)"
                        ),
                    ));
                }
            }
            Ok(_) => {
                let mut byte = [0u8; 1];
                let mut f = File::from(ready.try_clone()?);
                return match f.read(&mut byte) {
                    Ok(0) => Ok(Ready::Eof),
                    Ok(_) => Ok(Ready::Byte),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// How long the readers of a dead logger's pipes may take to go away.
const EXITED_GRACE: Duration = Duration::from_millis(250);

/// Whether each pipe the write ends `ws` feed has no reader left (poll reports POLLERR
/// then, and wakes on the last reader's close), waiting up to `grace` for all to be gone.
fn readers_gone<const N: usize>(ws: [&OwnedFd; N], grace: Duration) -> io::Result<[bool; N]> {
    let deadline = Instant::now() + grace;
    let mut gone = [false; N];
    loop {
        // No events asked for: only POLLERR (no reader) and POLLHUP are reported.
        let open: Vec<usize> = (0..N).filter(|&i| !gone[i]).collect();
        let mut fds: Vec<PollFd> = open
            .iter()
            .map(|&i| PollFd::new(ws[i].as_fd(), PollFlags::empty()))
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = PollTimeout::try_from(left.as_millis()).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(_) => {
                for (fd, &i) in fds.iter().zip(&open) {
                    gone[i] |= fd.revents().is_some_and(|r| r.contains(PollFlags::POLLERR));
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        if gone.iter().all(|g| *g) || Instant::now() >= deadline {
            return Ok(gone);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

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
//! shim calls it; only the logger's own descriptors and signal set are made here.
#![allow(unsafe_code)]

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::SigSet;
use nix::unistd::pipe2;
use runc_wrapper::{FileActions, SpawnAttr};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a logger may take to signal that it is ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Query parameters with this prefix are environment variables of the logger.
const ENV_PREFIX: &str = "env.";
/// Set from the caller's ids only; `env.` parameters cannot override them (as containerd).
const RESERVED_ENV: [&str; 2] = ["CONTAINER_ID", "CONTAINER_NAMESPACE"];

/// The legacy scheme: EOF on fd 5 counts as ready.
const SCHEME: &str = "binary://";
/// The strict scheme: ready only once a byte arrived on fd 5.
const SCHEME_V2: &str = "binary-v2://";

/// Whether `uri` names a logging binary (`binary://` or `binary-v2://`).
pub fn is_logger_uri(uri: &str) -> bool {
    uri.starts_with(SCHEME) || uri.starts_with(SCHEME_V2)
}

/// A parsed `binary://` or `binary-v2://` URI: what to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggerSpec {
    /// The logger binary (absolute).
    pub path: PathBuf,
    /// argv\[1..\]: the query's keys and values, flattened, sorted by key.
    pub args: Vec<String>,
    /// `env.NAME=value` parameters, sorted by name.
    pub env: Vec<(String, String)>,
    /// `binary-v2://`: the logger is ready only once it wrote a byte to fd 5.
    pub strict_ready: bool,
}

fn invalid(uri: &str, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("stdio {uri:?}: {why}"))
}

/// Parses `binary:///abs/path?k=v&...` or `binary-v2:///abs/path?k=v&...` (the scheme must
/// be there). Percent-escapes are decoded (and `+` in the query is a space), as Go's
/// `net/url` does; a host part, an empty path, bad escapes, `;` separators and NUL bytes are
/// refused.
pub fn parse(uri: &str) -> io::Result<LoggerSpec> {
    let (scheme, rest, strict_ready) = if let Some(rest) = uri.strip_prefix(SCHEME_V2) {
        (SCHEME_V2, rest, true)
    } else if let Some(rest) = uri.strip_prefix(SCHEME) {
        (SCHEME, rest, false)
    } else {
        return Err(invalid(uri, "not a binary:// or binary-v2:// URI"));
    };
    let rest = rest.split('#').next().unwrap_or(rest);
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !location.is_empty() && !location.starts_with('/') {
        return Err(invalid(
            uri,
            format!("a {scheme} logger URI has no host: write {scheme}/absolute/path"),
        ));
    }
    let path = unescape(location, false).map_err(|e| invalid(uri, e))?;
    if path.is_empty() {
        return Err(invalid(uri, "no logger path"));
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        if part.contains(';') {
            return Err(invalid(uri, "';' is not a query separator (use '&')"));
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k = unescape(k, true).map_err(|e| invalid(uri, e))?;
        let v = unescape(v, true).map_err(|e| invalid(uri, e))?;
        // Go keeps every value and containerd uses the first.
        if !k.is_empty() && !pairs.iter().any(|(seen, _)| *seen == k) {
            pairs.push((k, v));
        }
    }
    pairs.sort();
    let mut spec = LoggerSpec {
        path: PathBuf::from(path),
        args: Vec::new(),
        env: Vec::new(),
        strict_ready,
    };
    for (k, v) in pairs {
        if let Some(name) = k.strip_prefix(ENV_PREFIX) {
            if name.is_empty() || name.contains('=') {
                return Err(invalid(uri, format!("bad environment name {name:?}")));
            }
            if !RESERVED_ENV.contains(&name) {
                spec.env.push((name.to_string(), v));
            }
        } else {
            spec.args.push(k);
            spec.args.push(v);
        }
    }
    Ok(spec)
}

/// Why a part of a logger URI does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum UnescapeError {
    /// A `%` not followed by two hex digits.
    #[error("bad escape in {0:?}")]
    BadEscape(String),
    /// `%00` somewhere: no NUL can reach argv or the environment.
    #[error("NUL byte in {0:?}")]
    Nul(String),
    /// The decoded bytes are not UTF-8.
    #[error("{0:?} is not UTF-8 once decoded")]
    NotUtf8(String),
}

/// Decodes `%XX` escapes (and `+` as a space in a query) into UTF-8 without NUL.
fn unescape(s: &str, query: bool) -> Result<String, UnescapeError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| UnescapeError::BadEscape(s.to_string()))?;
                out.push(hex);
                i += 3;
            }
            b'+' if query => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    if out.contains(&0) {
        return Err(UnescapeError::Nul(s.to_string()));
    }
    String::from_utf8(out).map_err(|_| UnescapeError::NotUtf8(s.to_string()))
}

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

/// The lowest fd the child's ends may have in the parent: above 0-5, the targets, so the
/// remapping never overwrites a source it still needs and every dup2 copies between two
/// different fds (which leaves the copy without FD_CLOEXEC).
const FIRST_FREE_FD: RawFd = 6;

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= FIRST_FREE_FD {
        return Ok(fd);
    }
    let copy = fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(FIRST_FREE_FD))?;
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) just returned this new fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// posix_spawn(3) of `argv[0]` with `envp`, fds 0-2 = `fds[0]`, 3-5 = `fds[1..]` and no
/// other fd (with glibc), an empty signal mask and every signal at its default action.
/// Returns the pid.
fn spawn(argv: &[CString], envp: &[CString], fds: [OwnedFd; 4]) -> io::Result<i32> {
    let targets: [(usize, RawFd); 6] = [(0, 0), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5)];
    let mut actions = FileActions::new()?;
    for (src, dst) in targets {
        // (the source stays open in `fds` until posix_spawn has returned)
        actions.dup2(fds[src].as_raw_fd(), dst)?;
    }
    // Every fd the shim opens is close-on-exec; closing all above 5 in the child as well
    // means no fd made without it (a library's, a test's) can reach a long-lived logger,
    // where a pipe write end would keep another stream from ever seeing EOF.
    #[cfg(target_env = "gnu")]
    actions.close_from(FIRST_FREE_FD)?;
    let mut attr = SpawnAttr::new()?;
    attr.set_signals(SigSet::empty().as_ref(), SigSet::all().as_ref())?;
    attr.apply_flags()?;
    let pid = runc_wrapper::posix_spawn(argv, envp, false, &actions, &attr)?;
    drop(fds);
    Ok(pid)
}

/// The logger while the shim still cares: to kill it if it fails to get ready, and to
/// tell whether it is dying, never by a recycled pid where pidfds exist.
struct Handle {
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
    fn new(pid: i32) -> Self {
        let kind = match crate::process_core::pidfd::open(pid) {
            Ok(fd) => HandleKind::Pidfd(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => HandleKind::Pid,
            Err(_) => HandleKind::Gone,
        };
        Handle { pid, kind }
    }

    fn kill(&self) {
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
    fn exiting(&self) -> bool {
        match &self.kind {
            HandleKind::Gone => true,
            HandleKind::Pidfd(fd) if exited(fd, Duration::ZERO) => true,
            _ => stat_says_exiting(self.pid),
        }
    }

    /// Waits (until `deadline` at most) for an exiting logger to have finished exiting:
    /// a zombie has released all its files.
    fn wait_exited(&self, deadline: Instant) {
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

/// Waits until `ready` has a byte to read or reaches EOF.
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
pub(crate) mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::Pid;
    use std::io::Write;
    use std::path::Path;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_path_args_and_env() {
        let spec = parse("binary:///usr/bin/log%20ger?z=1&--driver=awslogs&a=&z=2&env.TZ=UTC&env.CONTAINER_ID=no&b=x+y%26").unwrap();
        assert_eq!(spec.path, PathBuf::from("/usr/bin/log ger"));
        // Sorted by key, first value of a repeated key, empty values kept.
        assert_eq!(
            spec.args,
            s(&["--driver", "awslogs", "a", "", "b", "x y&", "z", "1"])
        );
        assert_eq!(spec.env, vec![("TZ".to_string(), "UTC".to_string())]);
        let bare = parse("binary:///bin/logger").unwrap();
        assert_eq!(bare.path, PathBuf::from("/bin/logger"));
        assert!(bare.args.is_empty() && bare.env.is_empty());
        assert_eq!(parse("binary:///l?flag").unwrap().args, s(&["flag", ""]));
        assert!(!bare.strict_ready);
        // binary-v2: the same syntax, strict readiness.
        let v2 = parse("binary-v2:///usr/bin/log%20ger?z=1&env.TZ=UTC").unwrap();
        assert_eq!(v2.path, PathBuf::from("/usr/bin/log ger"));
        assert_eq!(v2.args, s(&["z", "1"]));
        assert_eq!(v2.env, vec![("TZ".to_string(), "UTC".to_string())]);
        assert!(v2.strict_ready);
        assert!(is_logger_uri("binary:///x") && is_logger_uri("binary-v2:///x"));
        assert!(!is_logger_uri("file:///x") && !is_logger_uri("/run/x/binary://"));
    }

    #[test]
    fn refuses_bad_uris() {
        for (uri, why) in [
            ("binary://", "no logger path"),
            ("binary://?a=b", "no logger path"),
            ("binary://host/usr/bin/x", "no host"),
            ("binary:///x%zz", "bad escape"),
            ("binary:///x?a=%4", "bad escape"),
            ("binary:///x?a=%+1", "bad escape"),
            ("binary:///x?a=1;b=2", "';'"),
            ("binary:///x?a=%00", "NUL"),
            ("binary:///x?env.=1", "environment name"),
            ("binary-v2://", "no logger path"),
            ("binary-v2://host/x", "binary-v2:///absolute"),
            ("binary-v3:///x", "not a binary"),
            ("file:///x", "not a binary"),
        ] {
            let e = parse(uri).unwrap_err().to_string();
            assert!(e.contains(why), "{uri}: {e}");
            assert!(e.contains(uri), "{uri}: {e}");
        }
    }

    /// Percent-encodes everything but a few safe characters.
    pub(crate) fn encode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    /// A logger URI running `/bin/sh -c SCRIPT dir DIR` (keys sort `-c` before `dir`, so
    /// the script sees `$0` = "dir", `$1` = DIR). The loggers are never files the tests
    /// write: exec'ing a file just written fails with ETXTBSY while another test's fork
    /// still holds the write fd.
    pub(crate) fn sh_logger(script: &str, dir: &Path) -> String {
        format!(
            "binary:///bin/sh?dir={}&-c={}",
            encode(&dir.display().to_string()),
            encode(script)
        )
    }

    /// Copies fd 3 and 4 into DIR/out and DIR/err; records argv, the environment and its
    /// open fds (without opening any while it looks).
    pub(crate) const COPYING_LOGGER: &str = r#"d=$1
fds= n=0
while [ $n -lt 1024 ]; do [ -e /proc/$$/fd/$n ] && fds="$fds $n"; n=$((n+1)); done
echo $fds > "$d/fds"
env > "$d/env"
printf '%s\n' "$0" "$@" > "$d/args"
PATH=/usr/bin:/bin
cat <&3 > "$d/out" 4<&- 5>&- &
cat <&4 > "$d/err" 3<&- 5>&- &
exec 3<&- 4<&- 5>&-
wait
"#;

    fn exit_status(pid: i32) -> WaitStatus {
        waitpid(Pid::from_raw(pid), None).unwrap()
    }

    #[test]
    fn a_logger_gets_the_output_its_args_and_the_ids() {
        let dir = tempfile::tempdir().unwrap();
        let spec = parse(&sh_logger(COPYING_LOGGER, dir.path())).unwrap();
        assert_eq!(spec.path, PathBuf::from("/bin/sh"));
        assert_eq!(spec.args[0], "-c");
        assert_eq!(spec.args[1], COPYING_LOGGER);
        let env = [
            ("CONTAINER_ID".to_string(), "c1".to_string()),
            ("CONTAINER_NAMESPACE".to_string(), "ns1".to_string()),
        ];
        // Not close-on-exec, as a careless library would make it: must not reach the logger.
        let leak = nix::unistd::pipe().unwrap();
        let started = start(&spec, &env, Streams::Pipes).unwrap();
        drop(leak);
        let mut out = File::from(started.stdout);
        let mut err = File::from(started.stderr.expect("a stderr pipe"));
        out.write_all(b"hello\n").unwrap();
        err.write_all(b"oops\n").unwrap();
        out.write_all(b"world\n").unwrap();
        drop((out, err));
        assert_eq!(
            exit_status(started.pid),
            WaitStatus::Exited(Pid::from_raw(started.pid), 0)
        );
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
        assert_eq!(read("out"), "hello\nworld\n");
        assert_eq!(read("err"), "oops\n");
        assert_eq!(read("fds"), "0 1 2 3 4 5\n");
        assert_eq!(read("args"), format!("dir\n{}\n", dir.path().display()));
        let env = read("env");
        assert!(env.lines().any(|l| l == "CONTAINER_ID=c1"), "{env}");
        assert!(env.lines().any(|l| l == "CONTAINER_NAMESPACE=ns1"), "{env}");
        if std::env::var_os("CARGO_MANIFEST_DIR").is_some() {
            assert!(
                !env.contains("CARGO_MANIFEST_DIR="),
                "shim env leaked: {env}"
            );
        }
    }

    #[test]
    fn a_terminal_logger_reads_one_stream_and_eof_on_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let spec = parse(&sh_logger(COPYING_LOGGER, dir.path())).unwrap();
        let started = start(&spec, &[], Streams::Terminal).unwrap();
        assert!(started.stderr.is_none());
        let mut out = File::from(started.stdout);
        out.write_all(b"from the pty\r\n").unwrap();
        drop(out);
        assert!(matches!(exit_status(started.pid), WaitStatus::Exited(_, 0)));
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
        assert_eq!(read("out"), "from the pty\r\n");
        assert_eq!(read("err"), "");
    }

    #[test]
    fn a_logger_may_signal_ready_by_writing() {
        let dir = tempfile::tempdir().unwrap();
        // Stays alive with fd 5 open after writing to it; exits at EOF on fd 3.
        let script = "echo ready >&5; exec cat <&3 >/dev/null";
        let spec = parse(&sh_logger(script, dir.path())).unwrap();
        let started =
            start_with_timeout(&spec, &[], Streams::Pipes, Duration::from_secs(5)).unwrap();
        drop((started.stdout, started.stderr));
        assert!(matches!(exit_status(started.pid), WaitStatus::Exited(_, 0)));
    }

    /// `sh_logger` for the strict scheme.
    fn sh_logger_v2(script: &str, dir: &Path) -> String {
        sh_logger(script, dir).replacen("binary://", "binary-v2://", 1)
    }

    #[test]
    fn a_binary_v2_logger_is_ready_once_it_writes_a_byte() {
        let dir = tempfile::tempdir().unwrap();
        // What containerd's logging.Run does: one zero byte, then close fd 5.
        let script = r#"printf '\0' >&5; exec 5>&-; exec cat <&3 >"$1/out""#;
        let spec = parse(&sh_logger_v2(script, dir.path())).unwrap();
        let started =
            start_with_timeout(&spec, &[], Streams::Pipes, Duration::from_secs(5)).unwrap();
        let mut out = File::from(started.stdout);
        out.write_all(b"v2\n").unwrap();
        drop((out, started.stderr));
        assert!(matches!(exit_status(started.pid), WaitStatus::Exited(_, 0)));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out")).unwrap(),
            "v2\n"
        );
    }

    #[test]
    fn a_binary_v2_logger_that_closes_fd_5_without_a_byte_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        // Alive and reading, but never said ready: the legacy scheme takes it, v2 does not.
        let script = r#"echo $$ > "$1/pid"; exec 5>&-; exec cat <&3 >/dev/null"#;
        let legacy = parse(&sh_logger(script, dir.path())).unwrap();
        let started =
            start_with_timeout(&legacy, &[], Streams::Pipes, Duration::from_secs(5)).unwrap();
        drop((started.stdout, started.stderr));
        assert!(matches!(exit_status(started.pid), WaitStatus::Exited(_, 0)));

        let strict = parse(&sh_logger_v2(script, dir.path())).unwrap();
        let e =
            start_with_timeout(&strict, &[], Streams::Pipes, Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("did not signal ready"), "{e}");
        let pid: i32 = std::fs::read_to_string(dir.path().join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            matches!(
                exit_status(pid),
                WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)
            ),
            "the logger is killed"
        );
        // One that exits before saying anything fails too.
        let spec = parse(&sh_logger_v2("exit 0", dir.path())).unwrap();
        assert!(start_with_timeout(&spec, &[], Streams::Pipes, Duration::from_secs(5)).is_err());
    }

    #[test]
    fn a_logger_that_is_never_ready_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let spec = parse(&sh_logger(
            r#"echo $$ > "$1/pid"; exec sleep 30"#,
            dir.path(),
        ))
        .unwrap();
        // Long enough for the shell to write its pid even in an emulated guest (200 ms
        // was not: the logger was killed before it ran, and left no pid to check).
        let t0 = Instant::now();
        let e = start_with_timeout(&spec, &[], Streams::Pipes, Duration::from_secs(2)).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        let msg = e.to_string();
        assert!(msg.contains("/bin/sh") && msg.contains("fd 5"), "{msg}");
        let pid: i32 = std::fs::read_to_string(dir.path().join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            matches!(
                exit_status(pid),
                WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)
            ),
            "the logger is killed"
        );
    }

    #[test]
    fn a_logger_that_exits_at_once_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let spec = parse(&sh_logger("exit 3", dir.path())).unwrap();
        let e = start_with_timeout(&spec, &[], Streams::Pipes, Duration::from_secs(5)).unwrap_err();
        assert!(
            e.to_string().contains("/bin/sh") && e.to_string().contains("exited"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_logger_is_a_clear_error() {
        let spec = parse("binary:///nonexistent/tether-logger").unwrap();
        let e = start(&spec, &[], Streams::Pipes).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("/nonexistent/tether-logger"), "{e}");
    }
}

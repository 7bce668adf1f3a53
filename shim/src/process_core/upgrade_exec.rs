//! The two steps of a live upgrade that run the new binary, without a thread (the
//! standalone supervisor is single-threaded and stays so): the dry run, which has the new
//! binary read the saved state and say whether it takes it over, and the `execve` itself,
//! with the state's memfd and the carried descriptors kept open across it.
//!
//! The state is handed over in a memfd (plain data; descriptors named by number, see
//! [`super::carried_fds`]). The dry run reads it through a read-only open file of its own
//! (`/proc/self/fd/N` opened again: its own offset, no write access), so nothing has to
//! be written to a pipe while the child runs; the child's exit is awaited through a pidfd,
//! bounded.

use crate::process_core::carried_fds::FdsOut;
use crate::process_core::pidfd;
use crate::process_core::rollback::{ROLLBACK_ENV, STATE_FD_ENV};
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The subcommand that checks a state (`upgrade-check`).
pub const CHECK_COMMAND: &str = "upgrade-check";
/// What a dry run prints first when the binary takes the state over.
pub const DRY_RUN_OK: &str = "ok";
/// How long the new binary's dry run may take.
pub const DRY_RUN_LIMIT: Duration = Duration::from_secs(10);
/// Most bytes of the dry run's stdout and of its stderr kept for the answer.
const MAX_SAID: u64 = 4096;

/// Why the new binary was not run, or did not take the state over.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{path}: {source}")]
    Missing {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not an executable file")]
    NotExecutable(PathBuf),
    #[error("open the state for the dry run: {0}")]
    OpenState(#[source] std::io::Error),
    #[error("dry run of {binary}: {source}")]
    DryRunSpawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("the dry run of {0} did not finish within {DRY_RUN_LIMIT:?}")]
    DryRunTimeout(PathBuf),
    #[error("{binary} cannot take the state over ({status}): {said}")]
    DryRunRefused {
        binary: PathBuf,
        status: std::process::ExitStatus,
        said: String,
    },
    #[error("{0}: not a path execve takes")]
    BadPath(PathBuf),
    #[error("keep the descriptors across execve: {0}")]
    KeepFds(#[source] std::io::Error),
    #[error("execve {binary}: {errno}")]
    Exec {
        binary: PathBuf,
        errno: nix::errno::Errno,
    },
}

/// Whether `binary` is a file that can be executed (a clear refusal before anything else
/// happens).
pub fn executable(binary: &Path) -> Result<(), ExecError> {
    let meta = std::fs::metadata(binary).map_err(|source| ExecError::Missing {
        path: binary.to_path_buf(),
        source,
    })?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(ExecError::NotExecutable(binary.to_path_buf()));
    }
    Ok(())
}

/// Runs `binary upgrade-check` with the state held in `state` (a memfd, written from its
/// start) as its stdin, and waits at most [`DRY_RUN_LIMIT`] for it. Returns what it said
/// when it takes the state over (exit 0 and a first word [`DRY_RUN_OK`]), else why not.
/// A dry run that prints more than its pipes hold before it exits runs into the limit.
pub fn dry_run(binary: &Path, state: &impl AsFd) -> Result<String, ExecError> {
    let own = File::open(format!("/proc/self/fd/{}", state.as_fd().as_raw_fd()))
        .map_err(ExecError::OpenState)?;
    let mut child = Command::new(binary)
        .arg(CHECK_COMMAND)
        .stdin(Stdio::from(own))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ExecError::DryRunSpawn {
            binary: binary.to_path_buf(),
            source,
        })?;
    let pid = i32::try_from(child.id()).unwrap_or(-1);
    // The child is ours and not reaped: its pid is its own until `wait` below.
    let exited = pidfd::open(pid)
        .map(|fd| wait_readable(&fd, Instant::now() + DRY_RUN_LIMIT))
        .unwrap_or(true);
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        return Err(ExecError::DryRunTimeout(binary.to_path_buf()));
    }
    let status = child.wait().map_err(|source| ExecError::DryRunSpawn {
        binary: binary.to_path_buf(),
        source,
    })?;
    let out = said(child.stdout.take().map(OwnedFd::from));
    let err = said(child.stderr.take().map(OwnedFd::from));
    if status.success() && out.split_whitespace().next() == Some(DRY_RUN_OK) {
        return Ok(out);
    }
    let why = [out.as_str(), err.as_str()]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or("it said nothing")
        .to_string();
    Err(ExecError::DryRunRefused {
        binary: binary.to_path_buf(),
        status,
        said: why,
    })
}

/// What the dry run left in one of its pipes (at most [`MAX_SAID`] bytes), read without
/// waiting: a child of the dry run may still hold the pipe open.
fn said(pipe: Option<OwnedFd>) -> String {
    let Some(fd) = pipe else {
        return String::new();
    };
    let nonblocking = nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut bytes = Vec::new();
    if nonblocking.is_ok() {
        let _ = File::from(fd).take(MAX_SAID).read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// Waits until `fd` polls readable (a pidfd: its process has exited) or `deadline`
/// passes; true if readable.
fn wait_readable(fd: &OwnedFd, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return true,
            Ok(_) if left.is_zero() => return false,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
}

/// Executes `binary` in place of this image: the same pid, the same argv, the same
/// environment plus [`STATE_FD_ENV`] naming `state`, whose close-on-exec flag is cleared
/// as it is on every descriptor in `fds`. Returns only if that failed, with why; every
/// flag is then set again and the process goes on as it was.
pub fn exec(binary: &Path, state: &OwnedFd, fds: &FdsOut) -> ExecError {
    let argv: Vec<CString> = std::env::args_os()
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != STATE_FD_ENV && k != ROLLBACK_ENV)
        .filter_map(|(k, v)| {
            let mut kv: OsString = k;
            kv.push("=");
            kv.push(v);
            CString::new(kv.as_bytes()).ok()
        })
        .collect();
    env.extend(CString::new(format!("{STATE_FD_ENV}={}", state.as_raw_fd())).ok());
    let Ok(path) = CString::new(binary.as_os_str().as_bytes()) else {
        return ExecError::BadPath(binary.to_path_buf());
    };
    if let Err(e) = fds.keep_across_exec() {
        return ExecError::KeepFds(e);
    }
    let cloexec = |on: bool| {
        let flags = if on {
            nix::fcntl::FdFlag::FD_CLOEXEC
        } else {
            nix::fcntl::FdFlag::empty()
        };
        nix::fcntl::fcntl(state.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(flags))
    };
    if let Err(e) = cloexec(false) {
        fds.restore_cloexec();
        return ExecError::KeepFds(e.into());
    }
    let errno = nix::unistd::execve(&path, &argv, &env).unwrap_err();
    let _ = cloexec(true);
    fds.restore_cloexec();
    ExecError::Exec {
        binary: binary.to_path_buf(),
        errno,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn memfd(bytes: &[u8]) -> OwnedFd {
        let fd = nix::sys::memfd::memfd_create(
            c"test-state",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .unwrap();
        let mut f = File::from(fd);
        f.write_all(bytes).unwrap();
        OwnedFd::from(f)
    }

    fn script(dir: &Path, body: &str) -> std::path::PathBuf {
        let path = dir.join("binary");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_dry_run_reads_the_state_and_says_ok_or_why_not() {
        let tmp = tempfile::tempdir().unwrap();
        let state = memfd(b"{\"format\":1}");
        // It reads the whole state from the start (its own offset), says ok.
        let ok = script(
            tmp.path(),
            "[ \"$1\" = upgrade-check ] || exit 9; read s; echo \"ok $s\"",
        );
        assert_eq!(dry_run(&ok, &state).unwrap(), "ok {\"format\":1}");
        // Twice: the first run did not move the state's offset for the second.
        assert_eq!(dry_run(&ok, &state).unwrap(), "ok {\"format\":1}");
        let refuses = script(tmp.path(), "echo 'format 1 is not mine' >&2; exit 1");
        let why = dry_run(&refuses, &state).unwrap_err().to_string();
        assert!(
            why.contains("cannot take the state over") && why.contains("is not mine"),
            "{why}"
        );
        // A child of the dry run that keeps its stdout open does not hold the answer.
        let pid_file = tmp.path().join("sleeper.pid");
        let lingering = script(
            tmp.path(),
            &format!(
                "echo ok lingering; sleep 30 & echo $! > {}",
                pid_file.display()
            ),
        );
        let t0 = Instant::now();
        let said = dry_run(&lingering, &state);
        let sleeper: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(sleeper),
            nix::sys::signal::Signal::SIGKILL,
        );
        assert_eq!(said.unwrap(), "ok lingering");
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "waited for the grandchild"
        );
        let silent = script(tmp.path(), "exit 0");
        assert!(dry_run(&silent, &state)
            .unwrap_err()
            .to_string()
            .contains("it said nothing"));
        let missing = dry_run(Path::new("/nonexistent/tether"), &state)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("No such file"), "{missing}");
    }

    #[test]
    fn only_executable_files_are_taken() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(executable(tmp.path())
            .unwrap_err()
            .to_string()
            .contains("not an executable file"));
        let plain = tmp.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        assert!(executable(&plain).is_err());
        assert!(executable(&script(tmp.path(), "exit 0")).is_ok());
    }
}

//! pidfds: process handles that can never name a recycled pid.
//!
//! A plain `kill(pid)` after the process was reaped can hit an unrelated process that got
//! the same pid. Signalling through a pidfd fails with ESRCH instead. Kernels without
//! pidfd_open (< 5.3) fall back to the pid, guarded by the reaper lock.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Opens a pidfd for `pid`. The caller must make sure `pid` still names its process (for
/// a supervisor: the child has not been reaped yet).
pub fn open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is
    // passed to the kernel.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(ret)
        .map_err(|_| io::Error::other(format!("pidfd_open returned {ret}, not an fd")))?;
    // SAFETY: the kernel just returned this fd to us and nobody else owns it; pidfds are
    // close-on-exec by default.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` through `pidfd`. ESRCH means the process is gone.
pub fn send_signal(pidfd: &OwnedFd, signal: i32) -> io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, a null siginfo (the kernel fills in a
    // default one, as kill(2) does) and no flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Signals a process: through its pidfd when there is one, else by `pid` (the caller
/// knows the pid has not been reaped: it is the only reaper, or the process is its
/// unreaped child). ESRCH means the process is gone; EINVAL, a bad signal number.
pub fn signal_process(pidfd: Option<&OwnedFd>, pid: i32, signal: i32) -> io::Result<()> {
    match pidfd {
        Some(fd) => send_signal(fd, signal),
        None if pid > 0 => {
            // SAFETY: kill(2) takes a pid and a signal number; no memory is passed.
            let ret = unsafe { libc::kill(pid, signal) };
            if ret < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }
        None => Err(io::Error::from_raw_os_error(libc::ESRCH)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_a_live_child_and_refuses_a_reaped_one() {
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let fd = open(i32::try_from(child.id()).unwrap()).expect("pidfd_open");
        send_signal(&fd, libc::SIGKILL).expect("signal");
        child.wait().unwrap();
        let err = send_signal(&fd, libc::SIGKILL).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    }
}

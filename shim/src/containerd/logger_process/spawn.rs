//! The logger's `posix_spawn(3)`: its descriptors laid out as fds 0-5 and nothing else,
//! its signals reset. The one place in this module that needs `unsafe` (taking ownership
//! of a descriptor `fcntl` returned), so the opt-out is this file's alone.
#![allow(unsafe_code)]

use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::signal::SigSet;
use runc_wrapper::{FileActions, SpawnAttr};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The lowest fd the child's ends may have in the parent: above 0-5, the targets, so the
/// remapping never overwrites a source it still needs and every dup2 copies between two
/// different fds (which leaves the copy without FD_CLOEXEC).
const FIRST_FREE_FD: RawFd = 6;

pub(super) fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
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
pub(super) fn spawn(argv: &[CString], envp: &[CString], fds: [OwnedFd; 4]) -> io::Result<i32> {
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

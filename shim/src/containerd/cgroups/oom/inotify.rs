//! The few inotify calls the v2 watcher needs. nix's `inotify` feature is not
//! enabled in this workspace, so they go through libc directly.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;

pub(super) const IN_MODIFY: u32 = libc::IN_MODIFY;

/// A non-blocking, close-on-exec inotify instance.
pub(super) fn init() -> Result<OwnedFd, Errno> {
    // SAFETY: inotify_init1 takes only flags and touches no memory of ours.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    let fd = Errno::result(fd)?;
    // SAFETY: `fd` was just returned by inotify_init1, is open, and is
    // owned by nothing else; OwnedFd takes sole ownership and closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds a watch for `mask` on `path`.
pub(super) fn add_watch(fd: BorrowedFd<'_>, path: &Path, mask: u32) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c_path` is a NUL-terminated string alive for the whole
    // call; `fd` is a live descriptor borrowed for the call; the kernel
    // only reads the path.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c_path.as_ptr(), mask) };
    if wd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads every pending event without blocking; returns whether any says
/// the watch is gone (`IN_IGNORED`, `IN_DELETE_SELF`, `IN_UNMOUNT`).
pub(super) fn drain(fd: BorrowedFd<'_>) -> Result<bool, Errno> {
    // Room for many events; each is a 16-byte header plus a name, and a
    // file watch carries no name.
    let mut buf = [0u8; 4096];
    let mut removed = false;
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) | Err(Errno::EAGAIN) => return Ok(removed),
            Ok(n) => removed |= events_say_removed(&buf[..n.min(buf.len())]),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Walks `struct inotify_event { i32 wd; u32 mask; u32 cookie; u32 len; char name[len]; }` records.
fn events_say_removed(mut bytes: &[u8]) -> bool {
    let gone = libc::IN_IGNORED | libc::IN_DELETE_SELF | libc::IN_UNMOUNT;
    let mut removed = false;
    while bytes.len() >= 16 {
        let word =
            |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let mask = word(4);
        let len = word(12) as usize;
        removed |= mask & gone != 0;
        let Some(rest) = bytes.get(16usize.saturating_add(len)..) else {
            break;
        };
        bytes = rest;
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inotify_records() {
        let mut rec = Vec::new();
        for (mask, len) in [(libc::IN_MODIFY, 0u32), (libc::IN_MODIFY, 16)] {
            rec.extend_from_slice(&1i32.to_ne_bytes());
            rec.extend_from_slice(&mask.to_ne_bytes());
            rec.extend_from_slice(&0u32.to_ne_bytes());
            rec.extend_from_slice(&len.to_ne_bytes());
            rec.resize(rec.len() + len as usize, 0);
        }
        assert!(!events_say_removed(&rec));
        let mut with_ignored = rec.clone();
        with_ignored.extend_from_slice(&1i32.to_ne_bytes());
        with_ignored.extend_from_slice(&libc::IN_IGNORED.to_ne_bytes());
        with_ignored.extend_from_slice(&[0; 8]);
        assert!(events_say_removed(&with_ignored));
        // Truncated or lying lengths do not panic.
        assert!(!events_say_removed(&rec[..20]));
        let mut lying = rec[..16].to_vec();
        lying[12..16].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(!events_say_removed(&lying));
    }
}

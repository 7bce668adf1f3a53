//! How many bytes wait unread in a pipe, FIFO or pty (`FIONREAD`): whether a manager has
//! read what a supervisor left in a FIFO, whether a process's output source is idle.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd};

nix::ioctl_read_bad!(fionread_raw, libc::FIONREAD, libc::c_int);

/// Bytes readable from `fd` now (for a pipe or FIFO, from either end: they share one
/// buffer); `None` if the fd does not support FIONREAD.
pub fn unread(fd: impl AsFd) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at a live local
    // for the duration of the call; an fd that does not support it makes the kernel
    // return an error and write nothing.
    match unsafe { fionread_raw(fd.as_fd().as_raw_fd(), &mut n) } {
        Ok(_) => usize::try_from(n).ok(),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn counts_bytes_in_a_pipe_from_either_end() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        assert_eq!(unread(&r), Some(0));
        let mut w = std::fs::File::from(w);
        w.write_all(b"hello").unwrap();
        assert_eq!(unread(&r), Some(5));
        assert_eq!(unread(&w), Some(5), "the writer sees what waits too");
    }

    #[test]
    fn a_regular_file_says_what_is_left_or_nothing() {
        let tmp = tempfile::tempfile().unwrap();
        // Files answer FIONREAD too (bytes past the offset); a socket-less, pipe-less
        // fd such as /dev/null may not: either way no panic.
        assert_eq!(unread(&tmp), Some(0));
        let _ = unread(std::fs::File::open("/dev/null").unwrap());
    }
}

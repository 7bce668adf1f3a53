//! How many bytes wait unread in a pipe, FIFO or pty (`FIONREAD`): whether an output
//! source is idle (see `process_stdio`), and whether a manager has read what the
//! standalone supervisor buffered in a FIFO.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

nix::ioctl_read_bad!(fionread_raw, libc::FIONREAD, libc::c_int);

/// Bytes readable from `fd` now; `None` if the fd does not support FIONREAD.
pub fn pending(fd: BorrowedFd<'_>) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at a live local
    // for the duration of the call; an fd that does not support it makes the kernel
    // return an error and write nothing.
    match unsafe { fionread_raw(fd.as_raw_fd(), &mut n) } {
        Ok(_) => usize::try_from(n).ok(),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn counts_bytes_in_a_pipe() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        assert_eq!(pending(r.as_fd()), Some(0));
        std::fs::File::from(w).write_all(b"hello").unwrap();
        assert_eq!(pending(r.as_fd()), Some(5));
    }
}

//! How many bytes wait unread in a pipe, FIFO or pty (`FIONREAD`): whether an output
//! source is idle (see `process_stdio`), and whether a manager has read what the
//! standalone supervisor buffered in a FIFO. The ioctl itself is the `fifo` crate's
//! ([`fifo::unread`]).

use std::os::fd::BorrowedFd;

/// Bytes readable from `fd` now; `None` if the fd does not support FIONREAD.
pub fn pending(fd: BorrowedFd<'_>) -> Option<usize> {
    fifo::unread(fd)
}

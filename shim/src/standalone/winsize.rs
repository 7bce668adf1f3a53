//! Our terminal's window size (`TIOCGWINSZ`): what `attach` sends on a tty process's
//! `winsz` FIFO, so the process lays its output out for the terminal it is shown on.
#![allow(unsafe_code)]

use fifo::WindowSize;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, libc::winsize);

/// The window size of the terminal behind `fd`; `None` if it reports none (0x0: a serial
/// line or a terminal that never set one), which is better left unsent than sent.
pub fn of(fd: BorrowedFd<'_>) -> io::Result<Option<WindowSize>> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points at a live
    // local for the duration of the call; a non-tty fd makes the kernel return ENOTTY and
    // write nothing.
    unsafe { tiocgwinsz(fd.as_raw_fd(), &mut ws) }.map_err(io::Error::from)?;
    Ok((ws.ws_col != 0 || ws.ws_row != 0).then_some(WindowSize {
        columns: ws.ws_col,
        rows: ws.ws_row,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn reads_a_pty_size_and_refuses_a_non_tty() {
        let size = nix::pty::Winsize {
            ws_row: 43,
            ws_col: 132,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).unwrap();
        let want = Some(WindowSize {
            columns: 132,
            rows: 43,
        });
        assert_eq!(of(pty.slave.as_fd()).unwrap(), want);
        assert_eq!(of(pty.master.as_fd()).unwrap(), want);
        let unset = nix::pty::openpty(None, None).unwrap();
        assert_eq!(of(unset.slave.as_fd()).unwrap(), None);
        let file = tempfile::tempfile().unwrap();
        assert!(of(file.as_fd()).is_err());
    }
}

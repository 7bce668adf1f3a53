//! Terminal size changes on a pty master.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);

/// Sets the window size of the pty behind `master`; the foreground process group gets
/// SIGWINCH from the kernel.
pub fn resize(master: BorrowedFd<'_>, columns: u16, rows: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which points at a live
    // local for the duration of the call; a non-tty fd makes the kernel return ENOTTY.
    unsafe { tiocswinsz(master.as_raw_fd(), &size) }.map_err(io::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn resizes_a_pty_and_refuses_a_non_tty() {
        let pty = nix::pty::openpty(None, None).unwrap();
        resize(pty.master.as_fd(), 132, 43).unwrap();
        let out = std::process::Command::new("stty")
            .arg("size")
            .stdin(std::fs::File::from(pty.slave))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "43 132");
        let file = tempfile::tempfile().unwrap();
        assert!(resize(file.as_fd(), 1, 1).is_err());
    }
}

//! Our terminal in raw mode while `attach` is connected to a tty process.
//!
//! The process has a terminal of its own (the pty the supervisor holds), whose line
//! discipline already echoes, edits lines and turns Ctrl-C into SIGINT. Ours must pass
//! every key through untouched, or each keystroke would be echoed and edited twice and
//! Ctrl-C would kill `attach` instead of reaching the process. The guard restores the
//! saved settings when dropped, so every way out of `attach` that unwinds (success,
//! error, a termination signal turned into a return) leaves the terminal as it found it.

use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Restores a terminal's saved settings when dropped.
#[derive(Debug)]
pub struct RawMode {
    /// A duplicate of the terminal fd: settings belong to the terminal, not to the fd,
    /// and owning one keeps it valid for as long as the guard lives.
    tty: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// Saves the settings of the terminal behind `fd` and switches it to raw mode
    /// (`cfmakeraw`: no echo, no line editing, no signal keys, no output processing).
    /// Fails with ENOTTY if `fd` is not a terminal; then nothing was changed.
    pub fn enter(fd: BorrowedFd<'_>) -> std::io::Result<Self> {
        let tty = fd.try_clone_to_owned()?;
        let saved = tcgetattr(&tty)?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        // TCSANOW: nothing is pending on our side that raw mode could garble.
        tcsetattr(&tty, SetArg::TCSANOW, &raw)?;
        Ok(RawMode { tty, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // TCSANOW, not TCSADRAIN: draining waits for whoever reads the terminal's output,
        // and a stalled reader (a hung-up pty) must not keep us from exiting.
        let _ = tcsetattr(self.tty.as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::termios::{InputFlags, LocalFlags, OutputFlags};

    #[test]
    fn raw_while_held_and_restored_when_dropped() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let before = tcgetattr(&pty.slave).unwrap();
        assert!(before
            .local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO));
        let guard = RawMode::enter(pty.slave.as_fd()).unwrap();
        let raw = tcgetattr(&pty.slave).unwrap();
        assert!(!raw
            .local_flags
            .intersects(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG));
        assert!(!raw.input_flags.contains(InputFlags::ICRNL));
        assert!(!raw.output_flags.contains(OutputFlags::OPOST));
        drop(guard);
        assert_eq!(tcgetattr(&pty.slave).unwrap(), before);
    }

    #[test]
    fn a_non_terminal_is_refused_and_left_alone() {
        let file = tempfile::tempfile().unwrap();
        let err = RawMode::enter(file.as_fd()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
    }
}

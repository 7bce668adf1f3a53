//! End of input for a tty process: what closing its stdin means when that is a pty.
//!
//! A pty has no "close" for its input side short of closing the master, which would hang
//! up the process and end its output too. A terminal's end of input is its EOF character
//! (Ctrl-D unless the process changed it): in canonical mode, typed at the start of a line
//! it makes the reader's `read` return 0. After a pending partial line it only delivers
//! that line, exactly as Ctrl-D typed by a person would.

use nix::sys::termios::{tcgetattr, LocalFlags, SpecialCharacterIndices};
use std::os::fd::BorrowedFd;

/// What [`send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The EOF character was written.
    Eof,
    /// The process's terminal is in raw mode, where there is no end of input: a byte
    /// would only be one more keystroke, so nothing was written.
    RawMode,
}

/// Writes the EOF character of the pty behind `master` to its input. The master reports
/// the slave's settings (Linux), so the character and the mode are the process's own.
pub fn send(master: BorrowedFd<'_>) -> nix::Result<Sent> {
    let termios = tcgetattr(master)?;
    if !termios.local_flags.contains(LocalFlags::ICANON) {
        return Ok(Sent::RawMode);
    }
    let eof = termios.control_chars[SpecialCharacterIndices::VEOF as usize];
    loop {
        match nix::unistd::write(master, &[eof]) {
            Ok(_) => return Ok(Sent::Eof),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::termios::{cfmakeraw, tcsetattr, SetArg};
    use std::io::Read;
    use std::os::fd::AsFd;

    #[test]
    fn a_canonical_reader_sees_eof() {
        let pty = nix::pty::openpty(None, None).unwrap();
        assert_eq!(send(pty.master.as_fd()).unwrap(), Sent::Eof);
        let mut slave = std::fs::File::from(pty.slave);
        let mut buf = [0u8; 16];
        assert_eq!(slave.read(&mut buf).unwrap(), 0, "read returns EOF");
    }

    #[test]
    fn a_raw_terminal_gets_nothing() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let mut raw = tcgetattr(&pty.slave).unwrap();
        cfmakeraw(&mut raw);
        tcsetattr(&pty.slave, SetArg::TCSANOW, &raw).unwrap();
        assert_eq!(send(pty.master.as_fd()).unwrap(), Sent::RawMode);
        assert_eq!(
            crate::process_core::fionread::pending(pty.slave.as_fd()),
            Some(0)
        );
    }
}

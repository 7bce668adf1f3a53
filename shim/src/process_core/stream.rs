//! The names of a process's three standard streams, shared by the stdio pumps
//! (`process_stdio`) and the epoll tokens that carry them (`epoll`).

use crate::process_core::pump::Direction;

/// One of a process's standard streams. With a terminal, the pty's output is `Stdout`
/// and its input `Stdin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Stream {
    Stdin,
    Stdout,
    Stderr,
}

impl Stream {
    /// Every stream, in index order.
    pub const ALL: [Stream; 3] = [Stream::Stdin, Stream::Stdout, Stream::Stderr];
    /// The streams that carry the process's output.
    pub const OUTPUTS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

    /// Which way the stream's bytes move.
    pub fn direction(self) -> Direction {
        match self {
            Stream::Stdin => Direction::Input,
            Stream::Stdout | Stream::Stderr => Direction::Output,
        }
    }

    /// The stream's index (0, 1, 2: stdin, stdout, stderr).
    pub(crate) fn index(self) -> usize {
        match self {
            Stream::Stdin => 0,
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }

    /// The stream's number in an epoll token.
    pub(crate) fn to_bits(self) -> u8 {
        match self {
            Stream::Stdin => 0,
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }

    /// The stream numbered `bits` by [`Stream::to_bits`].
    pub(crate) fn from_bits(bits: u8) -> Option<Stream> {
        Stream::ALL.get(usize::from(bits)).copied()
    }
}

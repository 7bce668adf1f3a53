//! The descriptors the standalone face's loops register besides the core's (signals,
//! pumps): the supervisor's `winsz` and `control` FIFOs, a pea's pidfd of the outer
//! container's init, the keeper's link, and `attach`'s stdin FIFO.

use crate::process_core::epoll::Token;

/// One of the standalone face's own descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnFd {
    Winsz,
    Control,
    OuterInit,
    KeeperLink,
    AttachStdin,
}

impl OwnFd {
    /// Its epoll token (a constant: loops match on it).
    pub const fn token(self) -> Token {
        Token::face(self as u8, 0)
    }
}

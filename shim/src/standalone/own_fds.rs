//! The descriptors the standalone face's loops register besides the core's (signals,
//! pumps): the supervisor's `winsz` and `control` FIFOs, a pea's pidfd of the outer
//! container's init, the keeper's link, `attach`'s stdin FIFO, and a supervisor's
//! `upgrade.sock` and the callers it accepted.

use crate::process_core::epoll::Token;

/// One of the standalone face's own descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnFd {
    Winsz,
    Control,
    OuterInit,
    KeeperLink,
    AttachStdin,
    UpgradeDoor,
    /// One of several: the index tells which (`OwnFd::nth`).
    UpgradeCaller,
}

impl OwnFd {
    /// Its epoll token (a constant: loops match on it).
    pub const fn token(self) -> Token {
        Token::face(self as u8, 0)
    }

    /// The token of the `n`th descriptor of this kind.
    pub const fn nth(self, n: u32) -> Token {
        Token::face(self as u8, n)
    }

    /// Which descriptor of this kind `token` is, if it is one.
    pub fn index_of(self, token: Token) -> Option<u32> {
        match token {
            Token::Face(f) if f.kind() == self as u8 => Some(f.index()),
            _ => None,
        }
    }
}

//! The descriptors the containerd face's loop registers besides the core's (signals, the
//! waker, pumps): its listening socket, each ttrpc connection, and each container's OOM
//! watcher (under its init's key).

use crate::process_core::epoll::{FaceToken, Token};

/// One of the loop's own descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShimFd {
    Listener,
    Conn(u32),
    Oom(u32),
}

impl ShimFd {
    /// Its epoll token.
    pub const fn token(self) -> Token {
        match self {
            ShimFd::Listener => Token::face(0, 0),
            ShimFd::Conn(n) => Token::face(1, n),
            ShimFd::Oom(n) => Token::face(2, n),
        }
    }

    /// The descriptor a face token names, if it is one of this face's.
    pub fn from_face(f: FaceToken) -> Option<ShimFd> {
        match f.kind() {
            0 => Some(ShimFd::Listener),
            1 => Some(ShimFd::Conn(f.index())),
            2 => Some(ShimFd::Oom(f.index())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        for fd in [ShimFd::Listener, ShimFd::Conn(7), ShimFd::Oom(u32::MAX)] {
            let Token::Face(f) = fd.token() else {
                panic!("not a face token")
            };
            assert_eq!(ShimFd::from_face(f), Some(fd));
        }
    }
}

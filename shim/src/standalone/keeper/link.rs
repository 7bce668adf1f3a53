//! The line between a supervisor and its keeper: a `SOCK_SEQPACKET` socket pair made
//! before the fork, one message per datagram (JSON, so no hand-written parser), the
//! descriptors a message names passed along with it (`SCM_RIGHTS`).
//!
//! The supervisor sends, in this order:
//! 1. [`Message::Handover`] once the process runs, before it reports `started`: its pid
//!    and copies of what the keeper needs to take the process over (the pinned process
//!    directory, `exit`, the process's output ends, the output FIFOs' ends, a pea's pidfd
//!    of the outer init);
//! 2. [`Message::Exited`] while the exited process is still an unreaped zombie (its
//!    status peeked with `WNOWAIT`): from then on the keeper knows the status, so a
//!    supervisor killed between reaping and writing `exitcode` loses nothing;
//! 3. [`Message::Recorded`] once `exitcode` is written and the supervisor has closed its
//!    `exit`: the keeper closes its copies and leaves.

use super::super::errors::CliError;
use fifo::ExitRecord;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Longest message (a handover names at most [`MAX_FDS`] roles: ~200 bytes).
const MAX_MESSAGE: usize = 1024;
/// Most descriptors one message carries.
pub const MAX_FDS: usize = 12;

/// An output stream of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    Stdout,
    Stderr,
}

impl Output {
    /// Both, in the order of `Stream::OUTPUTS`.
    pub const BOTH: [Output; 2] = [Output::Stdout, Output::Stderr];

    /// Its index in the supervisor's output arrays.
    pub fn index(self) -> usize {
        match self {
            Output::Stdout => 0,
            Output::Stderr => 1,
        }
    }
}

/// What a descriptor passed with a [`Message::Handover`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The process directory, pinned (`fifo::PinnedDir`).
    Dir,
    /// The `exit` FIFO, read-write.
    Exit,
    /// The process's end of an output: its pipe's read end, or the pty master (stdout).
    Source(Output),
    /// The write end of an output FIFO.
    Fifo(Output),
    /// The keep-alive read end of an output FIFO.
    Keepalive(Output),
    /// A pidfd of a pea's outer init.
    OuterInit,
}

/// One message from the supervisor to its keeper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// The process runs as `pid`; the descriptors come in the order of `roles`.
    Handover { pid: i32, roles: Vec<Role> },
    /// The process has exited with `exit` and is not reaped yet.
    Exited { exit: ExitRecord },
    /// `exitcode` is written and the supervisor's `exit` closed: the keeper may go.
    Recorded,
}

/// Why a message could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("keeper link: {0}")]
    Io(#[from] nix::Error),
    #[error("keeper link: bad message: {0}")]
    Encoding(#[from] serde_json::Error),
    #[error("keeper link: message or descriptors truncated")]
    Truncated,
    #[error("keeper link: a handover names {named} descriptors and carries {got}")]
    Descriptors { named: usize, got: usize },
}

/// The two ends of a new link, close-on-exec (the supervisor's first, then the keeper's).
pub fn pair() -> Result<(OwnedFd, OwnedFd), CliError> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| CliError::Failed(format!("keeper socket pair: {e}")))
}

/// Sends `msg` with `fds` (their number must match a handover's roles), without waiting:
/// a keeper that does not read (stopped, gone) makes it fail instead of blocking the
/// supervisor.
pub fn send(sock: BorrowedFd<'_>, msg: &Message, fds: &[BorrowedFd<'_>]) -> Result<(), LinkError> {
    let bytes = serde_json::to_vec(msg)?;
    if bytes.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
        return Err(LinkError::Truncated);
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(&bytes)],
        cmsgs,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// What [`receive`] got.
#[derive(Debug)]
pub enum Received {
    /// A message and the descriptors that came with it (close-on-exec).
    Message(Message, Vec<OwnedFd>),
    /// Nothing waiting.
    Nothing,
    /// The supervisor's end is closed: it has exited (or been killed).
    Closed,
}

/// Receives one message without waiting. A handover's descriptors are checked against
/// its roles; descriptors that came with a message that cannot be used are closed.
pub fn receive(sock: BorrowedFd<'_>) -> Result<Received, LinkError> {
    let mut buf = [0u8; MAX_MESSAGE];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let (bytes, truncated, fds) = {
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) => return Ok(Received::Nothing),
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        let cmsgs = msg.cmsgs();
        let ctrunc = cmsgs.is_err();
        for c in cmsgs.into_iter().flatten() {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel has just installed these descriptors in our table
                // for this message (SCM_RIGHTS); nothing else refers to them, so each
                // becomes owned exactly once, here.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let truncated = ctrunc || msg.flags.contains(MsgFlags::MSG_TRUNC);
        (msg.bytes, truncated, fds)
    };
    if truncated {
        return Err(LinkError::Truncated);
    }
    if bytes == 0 && fds.is_empty() {
        return Ok(Received::Closed);
    }
    let msg: Message = serde_json::from_slice(&buf[..bytes])?;
    let named = match &msg {
        Message::Handover { roles, .. } => roles.len(),
        _ => 0,
    };
    if named != fds.len() {
        return Err(LinkError::Descriptors {
            named,
            got: fds.len(),
        });
    }
    Ok(Received::Message(msg, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::time::SystemTime;

    fn rec(code: i32) -> ExitRecord {
        ExitRecord {
            code,
            exited_at: SystemTime::UNIX_EPOCH + std::time::Duration::new(1_795_404_285, 7),
        }
    }

    #[test]
    fn messages_and_descriptors_arrive_whole_and_in_order() {
        let (sup, keeper) = pair().unwrap();
        assert!(matches!(receive(keeper.as_fd()), Ok(Received::Nothing)));
        let (r, w) = crate::process_core::test_fds::pipe();
        let handover = Message::Handover {
            pid: 42,
            roles: vec![Role::Source(Output::Stdout), Role::Fifo(Output::Stdout)],
        };
        send(sup.as_fd(), &handover, &[r.as_fd(), w.as_fd()]).unwrap();
        send(sup.as_fd(), &Message::Exited { exit: rec(7) }, &[]).unwrap();
        send(sup.as_fd(), &Message::Recorded, &[]).unwrap();
        let Received::Message(msg, fds) = receive(keeper.as_fd()).unwrap() else {
            panic!("no handover")
        };
        assert_eq!(msg, handover);
        // The descriptors are the pipe's ends, in the roles' order.
        let mut w2 = std::fs::File::from(fds.into_iter().nth(1).unwrap());
        w2.write_all(b"x").unwrap();
        let mut got = [0u8; 1];
        std::fs::File::from(r).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
        match receive(keeper.as_fd()).unwrap() {
            Received::Message(Message::Exited { exit }, fds) => {
                assert_eq!(exit, rec(7));
                assert!(fds.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            receive(keeper.as_fd()).unwrap(),
            Received::Message(Message::Recorded, _)
        ));
        // shutdown, not only drop: a child another test is spawning may hold a copy of
        // the descriptor until its exec (process_core::test_fds).
        nix::sys::socket::shutdown(sup.as_raw_fd(), nix::sys::socket::Shutdown::Both).unwrap();
        drop(sup);
        assert!(matches!(receive(keeper.as_fd()), Ok(Received::Closed)));
    }

    #[test]
    fn a_handover_whose_descriptors_do_not_match_its_roles_is_refused() {
        let (sup, keeper) = pair().unwrap();
        let handover = Message::Handover {
            pid: 42,
            roles: vec![Role::Dir, Role::Exit],
        };
        let (r, _w) = crate::process_core::test_fds::pipe();
        send(sup.as_fd(), &handover, &[r.as_fd()]).unwrap();
        assert!(matches!(
            receive(keeper.as_fd()),
            Err(LinkError::Descriptors { named: 2, got: 1 })
        ));
        // Garbage is an error, not a panic.
        nix::sys::socket::send(sup.as_raw_fd(), b"{\"Nope\":1}", MsgFlags::empty()).unwrap();
        assert!(matches!(
            receive(keeper.as_fd()),
            Err(LinkError::Encoding(_))
        ));
    }

    #[test]
    fn sending_to_a_gone_keeper_fails_without_a_signal() {
        let (sup, keeper) = pair().unwrap();
        // shutdown, not only drop (a spawning child may hold a copy: test_fds).
        nix::sys::socket::shutdown(keeper.as_raw_fd(), nix::sys::socket::Shutdown::Both).unwrap();
        drop(keeper);
        assert!(send(sup.as_fd(), &Message::Recorded, &[]).is_err());
    }
}

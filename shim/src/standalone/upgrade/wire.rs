//! How root asks a standalone supervisor to move onto another binary, both ends: the
//! supervisor listens on `upgrade.sock` in its process directory, a `SOCK_SEQPACKET`
//! socket, so each side sends one message (JSON: the containerd face's `UpgradeRequest`
//! and `UpgradeReport`, which the operator command prints the same way for both faces)
//! and no framing needs parsing.
//!
//! Only root may ask, twice over: the socket is made mode 0600, owned by root, whatever
//! `--io-uid` gave the manager (connecting needs write permission on it), and the
//! supervisor checks each caller's uid (`SO_PEERCRED`) and refuses anyone else.
//!
//! The socket is reached through a descriptor of its directory (`/proc/self/fd/N/...`,
//! the pinned path on the supervisor's side): a depot's paths may be longer than a socket
//! address holds (108 bytes).

use crate::containerd::upgrade::protocol::{UpgradeReport, UpgradeRequest};
use nix::sys::socket::{
    self, accept4, bind, getsockopt, listen, recv, send, socket, sockopt, AddressFamily, Backlog,
    MsgFlags, SockFlag, SockType, UnixAddr,
};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

/// The socket's name in the process directory.
pub const SOCKET: &str = "upgrade.sock";
/// Longest message either way (a request names a path; a report a version and a reason).
const MAX_MESSAGE: usize = 16 * 1024;
/// How many callers may wait to be accepted.
const BACKLOG: i32 = 4;

/// Why a message could not go through.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{op} {path}: {source}")]
    Path {
        op: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the supervisor closed the connection without answering")]
    Closed,
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("the message is not valid: {0}")]
    Bad(#[from] serde_json::Error),
    #[error("the message is longer than {MAX_MESSAGE} bytes")]
    TooLong,
}

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from(e)
}

/// Makes and listens on `dir/upgrade.sock` (`dir`: the supervisor's pinned path), mode
/// 0600: non-blocking and close-on-exec, as the loop and a live upgrade want it. A stale
/// socket of that name is an error (`EADDRINUSE`): process directories are new.
pub fn listen_in(dir: &Path) -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(nix_io)?;
    let addr = UnixAddr::new(&dir.join(SOCKET)).map_err(nix_io)?;
    // The socket file's mode is 0777 less the umask: 0600 from the start, no window in
    // which it is anyone else's to connect to. Single-threaded: nobody else creates a
    // file meanwhile.
    let before = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = bind(fd.as_raw_fd(), &addr);
    nix::sys::stat::umask(before);
    bound.map_err(nix_io)?;
    listen(&fd, Backlog::new(BACKLOG).map_err(nix_io)?).map_err(nix_io)?;
    Ok(fd)
}

/// Accepts a caller, if one waits: non-blocking and close-on-exec.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    match accept4(
        listener.as_raw_fd(),
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    ) {
        // SAFETY: accept4 has just returned this descriptor; nothing else owns it.
        #[allow(unsafe_code)]
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::ECONNABORTED) => Ok(None),
        Err(nix::errno::Errno::EINTR) => accept(listener),
        Err(e) => Err(nix_io(e)),
    }
}

/// The uid of the process at the other end of `conn` (when it connected).
pub fn peer_uid(conn: BorrowedFd<'_>) -> io::Result<u32> {
    getsockopt(&conn, sockopt::PeerCredentials)
        .map(|c| c.uid())
        .map_err(nix_io)
}

/// Receives a request without waiting: `None` if none has arrived yet.
pub fn receive_request(conn: BorrowedFd<'_>) -> Result<Option<UpgradeRequest>, WireError> {
    match receive(conn, MsgFlags::MSG_DONTWAIT) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(WireError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sends the answer, without waiting (the caller's buffer is empty: one message fits).
pub fn send_report(conn: BorrowedFd<'_>, report: &UpgradeReport) -> Result<(), WireError> {
    send_message(conn, &serde_json::to_vec(report)?)
}

fn send_message(conn: BorrowedFd<'_>, bytes: &[u8]) -> Result<(), WireError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(WireError::TooLong);
    }
    send(
        conn.as_raw_fd(),
        bytes,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    )
    .map_err(nix_io)?;
    Ok(())
}

fn receive(conn: BorrowedFd<'_>, flags: MsgFlags) -> Result<Vec<u8>, WireError> {
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    loop {
        match recv(conn.as_raw_fd(), &mut buf, flags) {
            Ok(0) => return Err(WireError::Closed),
            Ok(n) if n > MAX_MESSAGE => return Err(WireError::TooLong),
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            // Closed with our message unread: the same as closed.
            Err(nix::errno::Errno::ECONNRESET) => return Err(WireError::Closed),
            Err(e) => return Err(WireError::Io(nix_io(e))),
        }
    }
}

/// Asks the supervisor of the process directory `dir` (the operator's side): connects to
/// its socket, sends `request`, and waits up to `wait` for the answer.
pub fn ask(
    dir: &Path,
    request: &UpgradeRequest,
    wait: Duration,
) -> Result<UpgradeReport, WireError> {
    let at = |op, source| WireError::Path {
        op,
        path: dir.join(SOCKET).display().to_string(),
        source,
    };
    let pinned = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| at("open", e))?;
    let conn = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| at("socket", nix_io(e)))?;
    let timeout = nix::sys::time::TimeVal::new(
        i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
        i64::from(wait.subsec_micros()),
    );
    // The send timeout bounds `connect` too (a supervisor that accepts nobody).
    socket::setsockopt(&conn, sockopt::SendTimeout, &timeout).map_err(nix_io)?;
    socket::setsockopt(&conn, sockopt::ReceiveTimeout, &timeout).map_err(nix_io)?;
    let via = format!("/proc/self/fd/{}/{SOCKET}", pinned.as_raw_fd());
    let addr = UnixAddr::new(via.as_str()).map_err(|e| at("connect", nix_io(e)))?;
    socket::connect(conn.as_raw_fd(), &addr).map_err(|e| at("connect", nix_io(e)))?;
    // A supervisor that closed the connection before the request went out (it accepted
    // and went away) shows as a broken pipe or a reset here, not as EOF later.
    match send_message(conn.as_fd(), &serde_json::to_vec(request)?) {
        Err(WireError::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) =>
        {
            return Err(WireError::Closed)
        }
        other => other?,
    }
    match receive(conn.as_fd(), MsgFlags::empty()) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
        Err(WireError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
            Err(WireError::TimedOut(wait))
        }
        Err(WireError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
            Err(WireError::Closed)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerd::upgrade::protocol::Outcome;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    fn report(outcome: Outcome) -> UpgradeReport {
        UpgradeReport {
            pid: 1,
            from: "a".into(),
            to: "b".into(),
            binary: "/bin/x".into(),
            pause_us: 3,
            outcome,
        }
    }

    /// A request goes in, a report comes out, through a socket whose path is longer than
    /// a socket address holds.
    #[test]
    fn a_request_and_its_answer_through_a_long_path() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d".repeat(120));
        std::fs::create_dir(&dir).unwrap();
        let pinned = fifo::PinnedDir::open(&dir).unwrap();
        let listener = listen_in(pinned.path()).unwrap();
        let meta = std::fs::metadata(dir.join(SOCKET)).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(accept(listener.as_fd()).unwrap().is_none(), "nobody yet");
        let asked = UpgradeRequest {
            binary: Some("/usr/bin/new".into()),
            timeout_ms: 1000,
            fault: None,
        };
        std::thread::scope(|s| {
            let asker = s.spawn(|| ask(&dir, &asked, Duration::from_secs(10)));
            let conn = loop {
                if let Some(c) = accept(listener.as_fd()).unwrap() {
                    break c;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            assert_eq!(
                peer_uid(conn.as_fd()).unwrap(),
                nix::unistd::getuid().as_raw()
            );
            let got = loop {
                if let Some(r) = receive_request(conn.as_fd()).unwrap() {
                    break r;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            assert_eq!(got, asked);
            send_report(conn.as_fd(), &report(Outcome::Upgraded)).unwrap();
            assert_eq!(asker.join().unwrap().unwrap(), report(Outcome::Upgraded));
        });
    }

    #[test]
    fn a_supervisor_that_closes_or_says_nothing_is_an_error_not_a_hang() {
        let tmp = tempfile::tempdir().unwrap();
        let listener = listen_in(tmp.path()).unwrap();
        let request = UpgradeRequest::default();
        std::thread::scope(|s| {
            let asker = s.spawn(|| ask(tmp.path(), &request, Duration::from_secs(10)));
            let conn = loop {
                if let Some(c) = accept(listener.as_fd()).unwrap() {
                    break c;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            drop(conn);
            assert!(matches!(asker.join().unwrap(), Err(WireError::Closed)));
            let asker = s.spawn(|| ask(tmp.path(), &request, Duration::from_millis(200)));
            let _conn = loop {
                if let Some(c) = accept(listener.as_fd()).unwrap() {
                    break c;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            assert!(matches!(asker.join().unwrap(), Err(WireError::TimedOut(_))));
        });
        let none = ask(&tmp.path().join("nope"), &request, Duration::from_secs(1)).unwrap_err();
        assert!(none.to_string().contains("No such file"), "{none}");
    }
}

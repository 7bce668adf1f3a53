//! A listening unix socket for `runc --console-socket`.
//!
//! This module needs `unsafe` for exactly one thing: taking ownership of the file descriptors the
//! kernel installed in this process while receiving an `SCM_RIGHTS` message.
#![allow(unsafe_code)]

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::error::{Error, Result};

/// Maximum length of a unix socket path, excluding the terminating NUL (`sun_path` is 108 bytes).
const MAX_SOCKET_PATH: usize = 107;

/// A listening unix socket for `runc --console-socket`: runc connects and sends the pty master
/// over `SCM_RIGHTS`.
///
/// The listening socket is close-on-exec, so it never leaks into runc or anything else started by
/// this process. Dropping it removes the socket file, and the private directory if
/// [`ConsoleSocket::new`] made one.
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl ConsoleSocket {
    /// Binds a fresh, uniquely named socket inside `dir`.
    ///
    /// Fails with [`Error::Console`] if the resulting path does not fit in `sun_path`
    /// (107 bytes), and with [`Error::Io`] if binding fails.
    pub fn new_in(dir: &Path) -> Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let mut attempts = 0;
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("c{pid:x}-{n:x}.sock"));
            let len = path.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(Error::Console(format!(
                    "socket path {path:?} is {len} bytes long, the maximum is {MAX_SOCKET_PATH}"
                )));
            }
            match UnixListener::bind(&path) {
                Ok(listener) => {
                    return Ok(ConsoleSocket {
                        listener,
                        path,
                        dir: None,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts < 100 => {
                    attempts += 1;
                }
                Err(e) => return Err(Error::io(format!("cannot bind console socket {path:?}"), e)),
            }
        }
    }

    /// Binds inside a new private (mode 0700) directory under [`std::env::temp_dir`], which is
    /// removed again on drop.
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("runc-console-")
            .tempdir()
            .map_err(|e| Error::io("cannot create console socket directory", e))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("cannot restrict console socket directory", e))?;
        let mut socket = Self::new_in(dir.path())?;
        socket.dir = Some(dir);
        Ok(socket)
    }

    /// The socket's path, to pass as `console_socket`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts one connection (waiting at most `timeout` in total) and receives the pty master fd
    /// it carries; the returned fd is close-on-exec.
    ///
    /// Fails with [`Error::Console`] on timeout, when the peer closes without sending, or when the
    /// message carries no fd. Any extra fds in the message are closed.
    pub fn receive_master(&self, timeout: Duration) -> Result<OwnedFd> {
        let deadline = Instant::now() + timeout;
        wait_readable(self.listener.as_fd(), deadline, "a connection from runc")?;
        let (stream, _) = self
            .listener
            .accept()
            .map_err(|e| Error::io("cannot accept on console socket", e))?;
        wait_readable(stream.as_fd(), deadline, "runc to send the pty master")?;
        receive_fd(&stream)
    }
}

impl AsFd for ConsoleSocket {
    /// The listening socket, e.g. to register with a poller (readable = runc connected).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        // `dir`, if any, is removed by its own drop.
    }
}

/// Waits until `fd` is readable (or hung up), failing with a console error at `deadline`.
fn wait_readable(fd: BorrowedFd<'_>, deadline: Instant, what: &str) -> Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Round up so that a sub-millisecond remainder still waits instead of spinning.
        let ms = left.as_micros().div_ceil(1000);
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) if Instant::now() >= deadline => {
                return Err(Error::Console(format!("timed out waiting for {what}")))
            }
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(Error::io("cannot poll console socket", e.into())),
        }
    }
}

/// Receives one message from `stream` and returns the first fd it carries.
fn receive_fd(stream: &UnixStream) -> Result<OwnedFd> {
    let mut data = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut data)];
    let mut cmsg = nix::cmsg_space!([RawFd; 8]);
    let msg = loop {
        match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::io("cannot receive from console socket", e.into())),
            Ok(msg) => break msg,
        }
    };
    let mut received: Vec<OwnedFd> = Vec::new();
    let cmsgs = msg
        .cmsgs()
        .map_err(|e| Error::io("cannot decode console socket message", e.into()))?;
    for c in cmsgs {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel has just installed `fd` in this process's fd table while
                // delivering this SCM_RIGHTS message; nothing else knows about it, so taking sole
                // ownership here is sound (and ensures it is closed if unused).
                received.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    let bytes = msg.bytes;
    let mut fds = received.into_iter();
    match fds.next() {
        Some(fd) => Ok(fd),
        None if truncated => Err(Error::Console(
            "control message truncated, no pty master received".into(),
        )),
        None if bytes == 0 => Err(Error::Console(
            "runc closed the console socket without sending the pty master".into(),
        )),
        None => Err(Error::Console(
            "message on console socket carries no file descriptor".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{sendmsg, ControlMessage};
    use std::io::{IoSlice, Write};

    #[test]
    fn receives_an_fd() {
        let sock = ConsoleSocket::new().unwrap();
        let path = sock.path().to_owned();
        let dir = path.parent().unwrap().to_owned();
        assert!(path.exists());
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let sender = std::thread::spawn({
            let path = path.clone();
            move || {
                let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
                let s = UnixStream::connect(&path).unwrap();
                let fds = [w.as_raw_fd()];
                sendmsg::<()>(
                    s.as_raw_fd(),
                    &[IoSlice::new(b"/dev/pts/0")],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::empty(),
                    None,
                )
                .unwrap();
                r
            }
        });
        let fd = sock.receive_master(Duration::from_secs(10)).unwrap();
        let r = sender.join().unwrap();
        let mut f = std::fs::File::from(fd);
        f.write_all(b"hi").unwrap();
        drop(f);
        let mut buf = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut buf).unwrap();
        assert_eq!(buf, "hi");
        drop(sock);
        assert!(!path.exists());
        assert!(!dir.exists());
    }

    #[test]
    fn times_out_without_connection() {
        let dir = tempfile::tempdir().unwrap();
        let sock = ConsoleSocket::new_in(dir.path()).unwrap();
        let start = Instant::now();
        let err = sock.receive_master(Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, Error::Console(_)), "{err}");
        assert!(err.to_string().contains("timed out"), "{err}");
        assert!(start.elapsed() >= Duration::from_millis(100));
        let path = sock.path().to_owned();
        drop(sock);
        assert!(!path.exists());
        assert!(dir.path().exists());
    }

    #[test]
    fn times_out_when_peer_sends_nothing() {
        let sock = ConsoleSocket::new().unwrap();
        let _s = UnixStream::connect(sock.path()).unwrap();
        let err = sock.receive_master(Duration::from_millis(100)).unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
    }

    #[test]
    fn message_without_fd_is_an_error() {
        let sock = ConsoleSocket::new().unwrap();
        let mut s = UnixStream::connect(sock.path()).unwrap();
        s.write_all(b"/dev/pts/0").unwrap();
        let err = sock.receive_master(Duration::from_secs(10)).unwrap_err();
        assert!(matches!(err, Error::Console(_)), "{err}");
        assert!(err.to_string().contains("no file descriptor"), "{err}");

        let sock = ConsoleSocket::new().unwrap();
        drop(UnixStream::connect(sock.path()).unwrap());
        let err = sock.receive_master(Duration::from_secs(10)).unwrap_err();
        assert!(err.to_string().contains("without sending"), "{err}");
    }

    #[test]
    fn unique_names_and_long_paths() {
        let dir = tempfile::tempdir().unwrap();
        let a = ConsoleSocket::new_in(dir.path()).unwrap();
        let b = ConsoleSocket::new_in(dir.path()).unwrap();
        assert_ne!(a.path(), b.path());
        let long = dir.path().join("x".repeat(120));
        let err = ConsoleSocket::new_in(&long).unwrap_err();
        assert!(matches!(err, Error::Console(_)), "{err}");
        assert!(err.to_string().contains("maximum is 107"), "{err}");
        let err = ConsoleSocket::new_in(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }
}

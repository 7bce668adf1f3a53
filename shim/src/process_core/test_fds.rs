//! Descriptors for unit tests that run beside tests which spawn children.
//!
//! A child another test is spawning holds a copy of every descriptor of this process
//! from its fork (or vfork) until its exec closes the close-on-exec ones. A test that
//! drops a pipe's write end (or one end of a socket pair) and then looks once for EOF
//! can miss it in that window: the copy keeps the pipe open. Tests here close a write end
//! with [`close_writer`] (which waits, bounded, until the kernel says no writer is left)
//! and end a socket with `shutdown`, which acts on the socket, not on one descriptor.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// How long a child being spawned may hold a copy of a write end: an exec takes
/// milliseconds; a loaded machine may stretch that a long way.
const COPY_GONE_WITHIN: Duration = Duration::from_secs(10);

/// A close-on-exec pipe (read end, write end): a child spawned by another test must not
/// keep a write end after its exec, or a reader would never see EOF.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2")
}

/// Reads `r` until its end, or until a read fails (EAGAIN on a non-blocking end: empty
/// for now); returns how many bytes it read.
pub fn read_all_now(mut r: impl std::io::Read) -> usize {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0;
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n;
    }
    total
}

/// Drops `writer` and returns once `reader` (the same pipe's read end) reports a hang-up,
/// i.e. no copy of any write end is left anywhere. Panics after [`COPY_GONE_WITHIN`].
pub fn close_writer(writer: impl Into<OwnedFd>, reader: BorrowedFd<'_>) {
    drop(writer.into());
    let until = Instant::now() + COPY_GONE_WITHIN;
    loop {
        let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
        // A pipe's read end reports POLLHUP once every writer is gone, with or without
        // bytes still in it; POLLIN alone (bytes, a writer left) is not the end.
        let _ = poll(&mut fds, PollTimeout::from(10u16));
        let hung_up = fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP));
        if hung_up {
            return;
        }
        assert!(
            Instant::now() < until,
            "a copy of the pipe's write end outlived {COPY_GONE_WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn close_writer_returns_once_a_childs_copy_is_gone() {
        let (reader, writer) = pipe();
        let started = Instant::now();
        // The child holds a copy of the write end, as one being spawned does until exec.
        let mut child = Command::new("sleep")
            .arg("0.3")
            .stdout(Stdio::from(writer.try_clone().unwrap()))
            .spawn()
            .unwrap();
        close_writer(writer, reader.as_fd());
        // The copy lives until the child's sleep ends: never sooner.
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(child.wait().unwrap().success());
    }
}

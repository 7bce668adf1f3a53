//! A ttrpc server that does nothing, shaped like a shim's loop: one thread, nonblocking
//! unix sockets served by `epoll_wait`; on a readable connection it reads what is there
//! until `EAGAIN` and answers every whole request with an empty, successful response, one
//! `send` for all of them: the `epoll_wait` → `recvfrom` → `recvfrom` (`EAGAIN`) →
//! `sendto` of tether's State turn, without decoding anything. Run in a process of its own
//! (the `floor_server` binary), it is what any shim's call costs at the bench's pacing
//! before the shim does anything: the paced floor ([`super::paced_floor`]).
//!
//! It ends when the descriptor its parent holds the other end of (a pipe, its stdin)
//! reports end of file or hang-up, that is when the bench ends however it ends, and
//! removes its socket then.

use super::framing::{empty_response, next_frame, FrameError, HEADER, REQUEST};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The largest request body answered; a longer one closes its connection (the bench's
/// floor calls are State requests of a few dozen bytes).
pub const MAX_REQUEST: usize = 64 << 10;
/// The most bytes a connection may have sent and not yet had answered: a client that
/// writes more before reading its answers is dropped.
const MAX_PENDING: usize = 2 * (HEADER + MAX_REQUEST);
/// The most connections held at once; one more is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 16;
/// How much one `recv` takes.
const CHUNK: usize = 4096;

/// epoll tokens: the parent's pipe, the listener; connections count up from `FIRST`.
const PARENT: u64 = 0;
const LISTENER: u64 = 1;
const FIRST: u64 = 2;

/// Why a connection was closed (none of them ends the server).
#[derive(Debug, PartialEq, Eq)]
enum Closed {
    /// The client closed it, or it failed.
    Gone,
    /// It sent more than [`MAX_PENDING`] bytes unanswered.
    Flooded,
    /// It sent a frame longer than [`MAX_REQUEST`].
    Malformed(FrameError),
    /// Its answers did not fit the socket at once (the client does not read them).
    Stalled,
}

/// Takes every whole frame from the front of `pending` and returns the answers to the
/// requests among them, in order, each an empty response on the request's stream; other
/// frame types are dropped unanswered and a trailing partial frame is left in `pending`.
/// A frame longer than [`MAX_REQUEST`] is an error (the connection is to be closed; what
/// came before it is not answered).
pub fn answers(pending: &mut Vec<u8>) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    let mut used = 0;
    while let Some((header, len)) = next_frame(&pending[used..], MAX_REQUEST)? {
        if header.kind == REQUEST {
            out.extend_from_slice(&empty_response(header.stream));
        }
        used += len;
    }
    pending.drain(..used);
    Ok(out)
}

/// One client's connection and the bytes it sent that are not a whole frame yet.
struct Connection {
    sock: UnixStream,
    pending: Vec<u8>,
}

impl Connection {
    /// Reads until `EAGAIN`, then answers every whole request in one `send`.
    fn turn(&mut self) -> Result<(), Closed> {
        let fd = self.sock.as_raw_fd();
        let mut chunk = [0u8; CHUNK];
        loop {
            match recv(fd, &mut chunk, MsgFlags::empty()) {
                Ok(0) => return Err(Closed::Gone),
                Ok(n) => {
                    if self.pending.len() + n > MAX_PENDING {
                        return Err(Closed::Flooded);
                    }
                    self.pending.extend_from_slice(&chunk[..n]);
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(_) => return Err(Closed::Gone),
            }
        }
        let reply = answers(&mut self.pending).map_err(Closed::Malformed)?;
        if reply.is_empty() {
            return Ok(());
        }
        // A few bytes into an empty socket buffer: all of it goes, or the client has
        // stopped reading and is dropped rather than buffered for.
        match send(fd, &reply, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) if n == reply.len() => Ok(()),
            Ok(_) | Err(Errno::EAGAIN) => Err(Closed::Stalled),
            Err(_) => Err(Closed::Gone),
        }
    }
}

/// Removes the socket file when the server ends, by any return.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Serves at `socket` (replacing a file there) until `parent` (the read end of a pipe
/// whose write end the parent holds) is readable or hung up; the socket is removed when
/// this returns. Errors are those of setting up (bind, epoll) and of `epoll_wait`; a
/// connection's own trouble (a malformed or oversized frame, a client that does not read)
/// only closes that connection.
pub fn serve(socket: &Path, parent: BorrowedFd<'_>) -> io::Result<()> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    let _remove = RemoveOnDrop(socket.to_path_buf());
    listener.set_nonblocking(true)?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(parent, EpollEvent::new(EpollFlags::EPOLLIN, PARENT))?;
    epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
    let mut conns: HashMap<u64, Connection> = HashMap::new();
    let mut next = FIRST;
    let mut events = [EpollEvent::empty(); 16];
    loop {
        let n = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        for event in &events[..n] {
            match event.data() {
                PARENT => return Ok(()),
                LISTENER => {
                    for sock in accept_all(&listener) {
                        if conns.len() >= MAX_CONNECTIONS {
                            continue;
                        }
                        let token = next;
                        next += 1;
                        if epoll
                            .add(&sock, EpollEvent::new(EpollFlags::EPOLLIN, token))
                            .is_ok()
                        {
                            let pending = Vec::new();
                            conns.insert(token, Connection { sock, pending });
                        }
                    }
                }
                token => {
                    let Some(conn) = conns.get_mut(&token) else {
                        continue;
                    };
                    if conn.turn().is_err() {
                        let _ = epoll.delete(&conn.sock);
                        conns.remove(&token);
                    }
                }
            }
        }
    }
}

/// Every connection waiting on the nonblocking `listener`, each made nonblocking; one
/// that cannot be is dropped.
fn accept_all(listener: &UnixListener) -> Vec<UnixStream> {
    let mut out = Vec::new();
    loop {
        match listener.accept() {
            Ok((sock, _)) => {
                if sock.set_nonblocking(true).is_ok() {
                    out.push(sock);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // WouldBlock: all taken; anything else: the next readiness retries.
            Err(_) => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::framing::{Header, RESPONSE};
    use super::super::wire_client::{BenchClient, ClientKind};
    use super::*;
    use containerd_shim_protos::api::StateRequest;
    use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::time::Duration;

    fn request(stream: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Header::request(stream, body.len()).expect("fits").to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn every_whole_request_is_answered_in_order_and_a_partial_one_kept() {
        let mut pending = request(1, b"one");
        pending.extend(request(3, b""));
        // Not a request: taken, not answered.
        let mut other = request(5, b"x");
        other[8] = RESPONSE;
        pending.extend(&other);
        let partial = request(7, b"seven");
        pending.extend(&partial[..12]);
        let out = answers(&mut pending).expect("valid");
        let mut want = empty_response(1).to_vec();
        want.extend(empty_response(3));
        assert_eq!(out, want);
        assert_eq!(pending, &partial[..12]);
        pending.extend(&partial[12..]);
        assert_eq!(answers(&mut pending).expect("valid"), empty_response(7));
        assert!(pending.is_empty());
    }

    #[test]
    fn an_oversized_frame_is_refused() {
        let mut pending = Header::request(1, MAX_REQUEST + 1).expect("fits").to_vec();
        assert!(answers(&mut pending).is_err());
    }

    /// The server answers the bench's client, drops a malformed connection without
    /// ending, and ends, removing its socket, when its parent's pipe closes.
    #[test]
    fn serves_until_the_parent_pipe_closes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("floor.sock");
        let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
        let at = path.clone();
        let server = std::thread::spawn(move || serve(&at, read_end.as_fd()));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !path.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // A frame longer than the server takes: that connection is closed.
        let mut bad = UnixStream::connect(&path).expect("connect");
        bad.write_all(&Header::request(1, MAX_REQUEST + 1).expect("fits"))
            .expect("write");
        let mut rest = Vec::new();
        bad.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert_eq!(bad.read_to_end(&mut rest).expect("closed"), 0);
        let mut client =
            BenchClient::connect(ClientKind::Wire, &path, Duration::from_secs(5)).expect("connect");
        for _ in 0..3 {
            client
                .call::<_, Empty>("State", &StateRequest::new(), Duration::from_secs(5))
                .expect("an empty answer");
        }
        drop(write_end);
        server.join().expect("no panic").expect("served");
        assert!(!path.exists(), "the socket is removed");
    }
}

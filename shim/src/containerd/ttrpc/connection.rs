//! The server side of the ttrpc wire protocol on non-blocking unix sockets, driven by the
//! shim's single event loop (the ttrpc crate's own server spends several threads per
//! connection; a shim resident for every container cannot afford that).
//!
//! Frames are read and written with the one codec, [`super::codec`].

use super::codec::{append_frame, FrameHeader, MessageType, OversizedFrame, HEADER_LEN};
use protobuf::{Message, MessageField};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use ttrpc::proto::{Code, Request, Response, Status};

/// Bytes read from one connection per readiness: a client that writes without pause is
/// served in turns with the others, and what it sent waits in its socket, not here.
const READ_BUDGET: usize = 64 << 10;
/// Calls of one connection that may wait for a worker at once; beyond, the connection is
/// not read until some are answered.
pub const MAX_CALLS_IN_FLIGHT: usize = 64;
/// Reply bytes that may wait for a connection that does not read them; beyond, the
/// connection is not read until it takes them (the Go shim stops at about 200 KB).
pub const MAX_UNSENT: usize = 256 << 10;

/// A decoded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub stream_id: u32,
    /// e.g. `containerd.task.v2.Task`
    pub service: String,
    /// e.g. `Create`
    pub method: String,
    pub payload: Vec<u8>,
    /// The caller's timeout (ttrpc's `timeout_nano`): 0 for none, negative when it had
    /// passed already (see `call_deadline`).
    pub timeout_nano: i64,
}

/// The outcome of a call, as sent back.
pub type Reply = Result<Vec<u8>, Status>;

/// Builds a ttrpc status.
pub fn status(code: Code, message: impl Into<String>) -> Status {
    let mut s = Status::new();
    s.code = code.into();
    s.message = message.into();
    s
}

/// One client connection: buffered reads, buffered non-blocking writes.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    /// Calls read from it whose reply is still to come from a worker.
    pub calls_in_flight: usize,
    /// What the event loop currently asks epoll for on it.
    pub reading: bool,
    pub writing: bool,
    /// Not read while an upgrade waits (see [`Connection::hold`]).
    held: bool,
}

/// What reading produced.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    pub requests: Vec<Incoming>,
    /// Requests that could not be decoded, answered with an error right away.
    pub rejected: Vec<(u32, Status)>,
    /// The peer closed the connection or broke the protocol: drop it.
    pub closed: bool,
}

impl Connection {
    /// Wraps an accepted stream (switched to non-blocking).
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Connection {
            stream,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            calls_in_flight: 0,
            reading: true,
            writing: false,
            held: false,
        })
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Reply bytes queued and not yet taken by the peer.
    pub fn unsent(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Whether the connection may be read: it takes its replies, has room for calls and
    /// is not held.
    pub fn wants_to_read(&self) -> bool {
        !self.held && self.calls_in_flight < MAX_CALLS_IN_FLIGHT && self.unsent() < MAX_UNSENT
    }

    /// Reads what is available, at most [`READ_BUDGET`] bytes, and decodes complete frames.
    pub fn read(&mut self) -> ReadOutcome {
        let mut out = ReadOutcome::default();
        let mut chunk = [0u8; 16 * 1024];
        let mut budget = READ_BUDGET;
        while budget > 0 {
            let want = budget.min(chunk.len());
            match self.stream.read(&mut chunk[..want]) {
                Ok(0) => {
                    out.closed = true;
                    break;
                }
                Ok(n) => {
                    self.rbuf.extend_from_slice(&chunk[..n]);
                    budget -= n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    out.closed = true;
                    break;
                }
            }
        }
        if decode_frames(&mut self.rbuf, &mut out).is_err() {
            out.closed = true;
        }
        out
    }

    /// Queues a response and writes what the socket takes now.
    /// Returns true when bytes remain queued (the loop should wait for writability).
    pub fn respond(&mut self, stream_id: u32, reply: Reply) -> io::Result<bool> {
        let mut response = Response::new();
        match reply {
            Ok(payload) => {
                response.status = MessageField::some(status(Code::OK, ""));
                response.payload = payload;
            }
            Err(st) => response.status = MessageField::some(st),
        }
        let body = response
            .write_to_bytes()
            .map_err(|e| io::Error::other(format!("encode ttrpc response: {e}")))?;
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        }
        append_frame(&mut self.wbuf, stream_id, MessageType::Response, &body)
            .map_err(io::Error::other)?;
        self.flush()
    }

    /// Writes queued bytes; returns true while some remain.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        // Do not keep a large buffer around after a burst.
        if self.wbuf.capacity() > 64 * 1024 {
            self.wbuf.shrink_to(4096);
        }
        Ok(false)
    }
}

/// Decodes the complete frames at the front of `buf` (removing them) into `out`: requests,
/// and undecodable requests as rejections; other frame types are skipped. Never panics.
/// Err means the peer broke the protocol (an oversized frame): the connection must be
/// dropped.
pub fn decode_frames(buf: &mut Vec<u8>, out: &mut ReadOutcome) -> Result<(), OversizedFrame> {
    let mut pos = 0;
    while let Some(header) = FrameHeader::decode(&buf[pos..])? {
        let FrameHeader { len, stream_id, .. } = header;
        let Some(body) = buf.get(pos + HEADER_LEN..pos + HEADER_LEN + len) else {
            break;
        };
        pos += HEADER_LEN + len;
        if header.message_type() != Some(MessageType::Request) {
            // Data frames belong to streaming RPCs, which the task service has none of.
            continue;
        }
        match Request::parse_from_bytes(body) {
            Ok(req) => out.requests.push(Incoming {
                stream_id,
                service: req.service,
                method: req.method,
                payload: req.payload,
                timeout_nano: req.timeout_nano,
            }),
            Err(e) => out.rejected.push((
                stream_id,
                status(Code::INVALID_ARGUMENT, format!("bad ttrpc request: {e}")),
            )),
        }
    }
    buf.drain(..pos);
    if buf.capacity() > 64 * 1024 && buf.len() < 4096 {
        buf.shrink_to(4096);
    }
    Ok(())
}

/// A connection as it is carried across a live upgrade: its socket (by number), what it
/// read that is not a whole frame yet, and the reply bytes the peer has not taken.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnectionSnapshot {
    pub fd: std::os::fd::RawFd,
    pub unread: Vec<u8>,
    pub unsent: Vec<u8>,
}

impl Connection {
    /// The connection's state; its socket is named in `fds`. Calls in flight are not
    /// carried: a connection is saved only when it has none.
    pub fn save(&self, fds: &mut crate::process_core::carried_fds::FdsOut) -> ConnectionSnapshot {
        ConnectionSnapshot {
            fd: fds.carry(&self.stream),
            unread: self.rbuf.clone(),
            unsent: self.wbuf[self.wpos..].to_vec(),
        }
    }

    /// The connection [`Connection::save`] described, its socket taken from `fds`.
    pub fn restore(
        s: ConnectionSnapshot,
        fds: &mut crate::process_core::carried_fds::FdsIn,
    ) -> Result<Connection, crate::process_core::carried_fds::CarryError> {
        let stream = UnixStream::from(fds.take(s.fd)?);
        let mut conn = Connection::new(stream).map_err(|source| {
            crate::process_core::carried_fds::CarryError::Rebuild {
                what: "a ttrpc connection",
                source,
            }
        })?;
        conn.rbuf = s.unread;
        conn.wbuf = s.unsent;
        Ok(conn)
    }

    /// Stops the loop from reading it (an upgrade waits for the calls in flight): what the
    /// peer sends meanwhile waits in the socket.
    pub fn hold(&mut self) -> bool {
        std::mem::replace(&mut self.held, true)
    }

    /// Reads it again after [`Connection::hold`].
    pub fn release(&mut self) {
        self.held = false;
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::{frame, read_frame, MAX_MESSAGE};
    use super::*;

    fn request_frame(stream_id: u32, method: &str, payload: &[u8]) -> Vec<u8> {
        let mut req = Request::new();
        req.service = "containerd.task.v2.Task".into();
        req.method = method.into();
        req.payload = payload.to_vec();
        let body = req.write_to_bytes().unwrap();
        frame(stream_id, MessageType::Request, &body).unwrap()
    }

    #[test]
    fn decodes_frames_split_anywhere() {
        let mut wire = request_frame(1, "State", b"abc");
        wire.extend(request_frame(3, "Pids", b""));
        for split in 0..wire.len() {
            let mut buf = wire[..split].to_vec();
            let mut out = ReadOutcome::default();
            decode_frames(&mut buf, &mut out).unwrap();
            buf.extend_from_slice(&wire[split..]);
            decode_frames(&mut buf, &mut out).unwrap();
            assert_eq!(out.requests.len(), 2, "split at {split}");
            assert_eq!(out.requests[0].method, "State");
            assert_eq!(out.requests[0].payload, b"abc");
            assert_eq!(out.requests[1].stream_id, 3);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn the_callers_timeout_is_decoded() {
        let mut req = Request::new();
        req.service = "containerd.task.v2.Task".into();
        req.method = "Kill".into();
        req.timeout_nano = 1_000_000_000;
        let body = req.write_to_bytes().unwrap();
        let mut buf = frame(5, MessageType::Request, &body).unwrap();
        buf.extend(request_frame(7, "State", b""));
        let mut out = ReadOutcome::default();
        decode_frames(&mut buf, &mut out).unwrap();
        assert_eq!(out.requests[0].timeout_nano, 1_000_000_000);
        assert_eq!(out.requests[1].timeout_nano, 0, "no timeout sent: none");
    }

    #[test]
    fn rejects_oversized_frames_and_bad_bodies() {
        let mut buf = frame(1, MessageType::Request, &[]).unwrap();
        buf[..4].copy_from_slice(&(u32::try_from(MAX_MESSAGE).unwrap() + 1).to_be_bytes());
        assert!(decode_frames(&mut buf, &mut ReadOutcome::default()).is_err());

        let mut buf = frame(5, MessageType::Request, &[0xff, 0xff, 0xff]).unwrap();
        let mut out = ReadOutcome::default();
        decode_frames(&mut buf, &mut out).unwrap();
        assert!(out.requests.is_empty());
        assert_eq!(out.rejected.len(), 1);
        assert_eq!(out.rejected[0].0, 5);
    }

    #[test]
    fn one_read_takes_at_most_its_budget() {
        let (client, server) = UnixStream::pair().unwrap();
        let mut conn = Connection::new(server).unwrap();
        let frame = request_frame(1, "State", &[7u8; 1000]);
        let frames = 3 * READ_BUDGET / frame.len();
        client.set_nonblocking(true).unwrap();
        let mut sent = 0;
        for _ in 0..frames {
            if (&client).write_all(&frame).is_err() {
                break;
            }
            sent += 1;
        }
        let first = conn.read();
        assert!(!first.closed);
        assert!(first.requests.len() * frame.len() <= READ_BUDGET);
        let mut total = first.requests.len();
        for _ in 0..16 {
            total += conn.read().requests.len();
        }
        assert_eq!(total, sent, "the rest is read on the next turns");
    }

    #[test]
    fn a_connection_that_takes_no_replies_is_not_read() {
        let (_client, server) = UnixStream::pair().unwrap();
        let mut conn = Connection::new(server).unwrap();
        assert!(conn.wants_to_read());
        let big = vec![0u8; 64 << 10];
        while conn.unsent() < MAX_UNSENT {
            conn.respond(1, Ok(big.clone())).unwrap();
        }
        assert!(!conn.wants_to_read());
        let mut conn2 = Connection::new(UnixStream::pair().unwrap().1).unwrap();
        conn2.calls_in_flight = MAX_CALLS_IN_FLIGHT;
        assert!(!conn2.wants_to_read());
    }

    #[test]
    fn round_trip_over_a_socket() {
        let (client, server) = UnixStream::pair().unwrap();
        let mut conn = Connection::new(server).unwrap();
        (&client)
            .write_all(&request_frame(7, "Connect", b"x"))
            .unwrap();
        let out = conn.read();
        assert_eq!(out.requests.len(), 1);
        assert!(!conn.respond(7, Ok(b"reply".to_vec())).unwrap());
        assert!(!conn
            .respond(9, Err(status(Code::NOT_FOUND, "nope")))
            .unwrap());
        let mut got = vec![0u8; 1024];
        client.set_nonblocking(true).unwrap();
        let n = (&client).read(&mut got).unwrap();
        let mut rest = &got[..n];
        let mut replies = Vec::new();
        while !rest.is_empty() {
            let (h, body) = read_frame(&mut rest).unwrap();
            assert_eq!(h.message_type(), Some(MessageType::Response));
            replies.push((h.stream_id, Response::parse_from_bytes(&body).unwrap()));
        }
        assert_eq!(replies[0].0, 7);
        assert_eq!(replies[0].1.payload, b"reply");
        assert_eq!(replies[1].1.status.code, Code::NOT_FOUND.into());
        // shutdown, not drop: a child another test is spawning may hold a copy of the
        // descriptor until its exec (process_core::test_fds); `_copy` stands for it.
        let _copy = client.try_clone().unwrap();
        client.shutdown(std::net::Shutdown::Both).unwrap();
        drop(client);
        assert!(conn.read().closed);
    }
}

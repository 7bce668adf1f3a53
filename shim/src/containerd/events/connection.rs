//! The publisher's ttrpc client connection: one blocking unix-socket connection to
//! containerd, one call at a time, framed with the shared codec
//! ([`crate::containerd::ttrpc::codec`]).
//!
//! The `ttrpc` crate's client is not used because it starts reader and writer threads per
//! connection, and the shim stays resident for the life of every container.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::endpoint::Endpoint;
use crate::containerd::ttrpc::codec::{
    frame, read_frame, ClientStreamIds, MessageType, OversizedFrame, ReadFrameError,
};
use nix::errno::Errno;
use nix::sys::socket::MsgFlags;
use protobuf::Message;
use ttrpc::proto::{Code, Response};

/// Why a call failed: the connection is unusable and the call may be retried on a new one.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Connecting (or setting the socket's timeouts) failed.
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    /// Writing the request failed.
    #[error("send request: {0}")]
    Send(#[source] io::Error),
    /// Reading the response failed.
    #[error("read response: {0}")]
    Receive(#[source] io::Error),
    /// The request or the response broke the ttrpc protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A frame over the size limit.
    #[error("protocol error: {0}")]
    Oversized(#[from] OversizedFrame),
    /// Every odd u32 was used as a stream id.
    #[error("stream ids exhausted on this connection")]
    StreamIdsExhausted,
}

/// What the server said about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An OK status (or none).
    Delivered,
    /// An error status: its code and message.
    Rejected(String),
}

/// One ttrpc client connection; calls are strictly one at a time.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    stream_ids: ClientStreamIds,
}

impl Connection {
    /// Connects to `endpoint`; every later read and write times out after `io_timeout`
    /// (zero: never), so a wedged server cannot hang the caller.
    pub fn open(endpoint: &Endpoint, io_timeout: Duration) -> Result<Connection, CallError> {
        let stream = endpoint.connect().map_err(CallError::Connect)?;
        // A zero Duration is rejected by set_*_timeout; never configured, but
        // fall back to "no timeout" rather than fail.
        let timeout = (!io_timeout.is_zero()).then_some(io_timeout);
        stream
            .set_read_timeout(timeout)
            .map_err(CallError::Connect)?;
        stream
            .set_write_timeout(timeout)
            .map_err(CallError::Connect)?;
        Ok(Connection {
            stream,
            stream_ids: ClientStreamIds::default(),
        })
    }

    /// The socket (for a duplicate another thread can shut down).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends one encoded `ttrpc.Request` and reads its response. `Err` means the
    /// connection is unusable and the call may be retried; `Ok(Rejected)` means the
    /// server answered with an error status.
    pub fn call(&mut self, request: &[u8]) -> Result<Outcome, CallError> {
        let stream_id = self
            .stream_ids
            .next_id()
            .ok_or(CallError::StreamIdsExhausted)?;
        let out = frame(stream_id, MessageType::Request, request)?;
        send_all(&self.stream, &out).map_err(CallError::Send)?;

        let (header, body) = read_frame(&mut &self.stream).map_err(|e| match e {
            ReadFrameError::Io(e) => CallError::Receive(e),
            ReadFrameError::Oversized(e) => CallError::Oversized(e),
        })?;
        if header.message_type() != Some(MessageType::Response) {
            return Err(CallError::Protocol(format!(
                "expected a response frame (type 2), got type {}",
                header.kind
            )));
        }
        if header.stream_id != stream_id {
            return Err(CallError::Protocol(format!(
                "response for stream {}, expected {stream_id}",
                header.stream_id
            )));
        }
        let response = Response::parse_from_bytes(&body)
            .map_err(|e| CallError::Protocol(format!("undecodable response: {e}")))?;
        Ok(match response.status.as_ref() {
            None => Outcome::Delivered,
            Some(status) => match status.code.enum_value() {
                Ok(Code::OK) => Outcome::Delivered,
                Ok(code) => Outcome::Rejected(format!("{code:?}: {}", status.message)),
                Err(code) => Outcome::Rejected(format!("code {code}: {}", status.message)),
            },
        })
    }
}

/// Writes all of `buf` with MSG_NOSIGNAL: a closed peer must yield EPIPE, not a
/// SIGPIPE that would kill the shim if the process has not ignored it.
fn send_all(stream: &UnixStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match nix::sys::socket::send(stream.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = buf.get(n..).unwrap_or_default(),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerd::ttrpc::status;
    use protobuf::MessageField;
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    /// A server that reads one request and answers with `reply(stream id)` raw bytes.
    fn one_shot(
        reply: impl FnOnce(u32) -> Vec<u8> + Send + 'static,
    ) -> (tempfile::TempDir, Endpoint) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let (h, _) = read_frame(&mut s).unwrap();
            assert_eq!(h.message_type(), Some(MessageType::Request));
            let _ = s.write_all(&reply(h.stream_id));
        });
        (dir, Endpoint::Path(path))
    }

    fn response(code: Code, message: &str) -> Vec<u8> {
        let mut r = Response::new();
        r.status = MessageField::some(status(code, message));
        r.write_to_bytes().unwrap()
    }

    #[test]
    fn a_call_reports_the_status() {
        let (_d, ep) =
            one_shot(|id| frame(id, MessageType::Response, &response(Code::OK, "")).unwrap());
        let mut c = Connection::open(&ep, Duration::from_secs(5)).unwrap();
        assert_eq!(c.call(b"").unwrap(), Outcome::Delivered);

        let (_d, ep) = one_shot(|id| {
            frame(
                id,
                MessageType::Response,
                &response(Code::NOT_FOUND, "gone"),
            )
            .unwrap()
        });
        let mut c = Connection::open(&ep, Duration::from_secs(5)).unwrap();
        assert_eq!(
            c.call(b"").unwrap(),
            Outcome::Rejected("NOT_FOUND: gone".into())
        );
    }

    #[test]
    fn a_broken_answer_is_an_error() {
        let (_d, ep) = one_shot(|id| frame(id + 2, MessageType::Response, &[]).unwrap());
        let mut c = Connection::open(&ep, Duration::from_secs(5)).unwrap();
        let err = c.call(b"").unwrap_err();
        assert!(err.to_string().contains("response for stream 3"), "{err}");

        let (_d, ep) = one_shot(|id| frame(id, MessageType::Request, &[]).unwrap());
        let mut c = Connection::open(&ep, Duration::from_secs(5)).unwrap();
        assert!(matches!(c.call(b""), Err(CallError::Protocol(_))));

        let (_d, ep) = one_shot(|_| Vec::new());
        let mut c = Connection::open(&ep, Duration::from_secs(5)).unwrap();
        assert!(matches!(c.call(b""), Err(CallError::Receive(_))));
    }
}

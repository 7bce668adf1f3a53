//! The bench's ttrpc client for the timed calls, in one of two ways:
//!
//! - [`ClientKind::Wire`] (the default): each request written in one `write` from the
//!   calling thread and its reply read on that same thread, over one connection. That is
//!   how containerd's Go client sends (ttrpc-go writes a request's header and body through
//!   one buffered flush from the caller's goroutine; only its reply comes back through its
//!   receive goroutine), and the least a client can add to a call: the figures are then
//!   the shim's and the kernel's socket round trip.
//! - [`ClientKind::Crate`]: the `ttrpc` crate's synchronous client, which this bench used
//!   first: it hands each request to a sender thread, which writes the header and the
//!   body in two writes, and each reply back from a receiver thread: two thread wake-ups
//!   per call that belong to neither shim (`BENCH_SHIM_CLIENT=crate`, to compare).

use super::framing::{Header, HEADER, MAX_FRAME, RESPONSE};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::ttrpc;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The service every call goes to (containerd 1.6's; 2.x's v3 is the same messages).
const SERVICE: &str = "containerd.task.v2.Task";

/// Which client the bench drives the shims with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// One write per request from the calling thread, the reply read on it.
    Wire,
    /// The `ttrpc` crate's client (a sender and a receiver thread).
    Crate,
}

impl ClientKind {
    /// From `BENCH_SHIM_CLIENT` (`wire`, the default, or `crate`).
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("BENCH_SHIM_CLIENT").as_deref() {
            Err(_) | Ok("") | Ok("wire") => Ok(ClientKind::Wire),
            Ok("crate") => Ok(ClientKind::Crate),
            Ok(other) => Err(format!(
                "BENCH_SHIM_CLIENT={other:?}: expected `wire` or `crate`"
            )),
        }
    }

    /// How the report names it.
    pub fn describe(self) -> &'static str {
        match self {
            ClientKind::Wire => {
                "one write per request from the calling thread, the reply read on it (as containerd's Go client sends)"
            }
            ClientKind::Crate => {
                "the ttrpc crate's client (a sender and a receiver thread, header and body in two writes)"
            }
        }
    }
}

/// One connection to a ttrpc server, calling `containerd.task.v2.Task` methods.
pub enum BenchClient {
    Wire { sock: UnixStream, next_stream: u32 },
    Crate(ttrpc::Client),
}

impl BenchClient {
    /// Connects to the unix socket at `path`, reads and writes bounded by `timeout`.
    pub fn connect(kind: ClientKind, path: &Path, timeout: Duration) -> Result<Self, String> {
        match kind {
            ClientKind::Wire => {
                let sock = UnixStream::connect(path)
                    .map_err(|e| format!("connect to {}: {e}", path.display()))?;
                sock.set_read_timeout(Some(timeout))
                    .and_then(|()| sock.set_write_timeout(Some(timeout)))
                    .map_err(|e| format!("socket timeouts: {e}"))?;
                Ok(BenchClient::Wire {
                    sock,
                    next_stream: 1,
                })
            }
            ClientKind::Crate => ttrpc::Client::connect(&format!("unix://{}", path.display()))
                .map(BenchClient::Crate)
                .map_err(|e| format!("connect to {}: {e}", path.display())),
        }
    }

    /// Calls `method` with `request` (with `timeout` as the request's deadline, as a Go
    /// caller with a context deadline sends it); the decoded reply, or the server's error
    /// status or what went wrong on the connection, as text.
    pub fn call<Q: Message, R: Message>(
        &mut self,
        method: &str,
        request: &Q,
        timeout: Duration,
    ) -> Result<R, String> {
        let mut req = ttrpc::Request::new();
        req.service = SERVICE.into();
        req.method = method.into();
        req.timeout_nano = i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX);
        req.payload = request
            .write_to_bytes()
            .map_err(|e| format!("encode {method}: {e}"))?;
        let response = match self {
            BenchClient::Crate(client) => {
                client.request(req).map_err(|e| format!("{method}: {e}"))?
            }
            BenchClient::Wire { sock, next_stream } => {
                let stream = *next_stream;
                // Client streams are odd; a bench connection never makes 2^31 calls.
                *next_stream = next_stream.wrapping_add(2);
                round_trip(sock, stream, &req).map_err(|e| format!("{method}: {e}"))?
            }
        };
        if let Some(status) = response.status.as_ref() {
            let code = status.code.value();
            if code != 0 {
                return Err(format!("{method}: rpc error {code}: {}", status.message));
            }
        }
        R::parse_from_bytes(&response.payload).map_err(|e| format!("decode {method}'s reply: {e}"))
    }
}

/// Writes `req` as one frame on `stream` and reads frames until that stream's response.
fn round_trip(
    sock: &mut UnixStream,
    stream: u32,
    req: &ttrpc::Request,
) -> Result<ttrpc::Response, String> {
    let body = req.write_to_bytes().map_err(|e| format!("encode: {e}"))?;
    let header = Header::request(stream, body.len()).ok_or("request too large")?;
    let mut frame = Vec::with_capacity(HEADER + body.len());
    frame.extend_from_slice(&header);
    frame.extend_from_slice(&body);
    sock.write_all(&frame).map_err(|e| format!("send: {e}"))?;
    loop {
        let mut header = [0u8; HEADER];
        sock.read_exact(&mut header)
            .map_err(|e| format!("reply header: {e}"))?;
        let h = Header::parse(&header);
        if h.len > MAX_FRAME {
            return Err(format!(
                "a {}-byte frame (ttrpc's bound is {MAX_FRAME})",
                h.len
            ));
        }
        let mut body = vec![0u8; h.len];
        sock.read_exact(&mut body)
            .map_err(|e| format!("reply body: {e}"))?;
        // One call at a time on this connection: another stream's frame is not expected,
        // and skipped rather than taken for this call's.
        if h.stream != stream || h.kind != RESPONSE {
            continue;
        }
        return ttrpc::Response::parse_from_bytes(&body).map_err(|e| format!("decode: {e}"));
    }
}

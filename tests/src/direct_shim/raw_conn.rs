//! [`RawConn`]: ttrpc to the shim frame by frame, to see the order of its replies and to
//! send what the client library does not (a caller's timeout, another service's name).

use super::{DirectShim, CALL_TIMEOUT};
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::Message;
use std::io::Read;
use std::time::Duration;

/// A raw ttrpc connection to the shim: requests written and responses read frame by frame,
/// so a test sees the order in which the shim wrote its replies (the ttrpc client hands
/// them to different threads, whose wake-up order says nothing).
pub struct RawConn {
    sock: std::os::unix::net::UnixStream,
}

impl RawConn {
    /// Connects to the shim's socket.
    pub fn connect(shim: &DirectShim) -> Self {
        let sock = std::os::unix::net::UnixStream::connect(shim.socket().expect("shim socket"))
            .expect("connect to the shim");
        sock.set_read_timeout(Some(CALL_TIMEOUT))
            .expect("read timeout");
        RawConn { sock }
    }

    /// Sends a call of `containerd.task.v2.Task` on ttrpc stream `stream` (odd numbers).
    pub fn send(&mut self, stream: u32, method: &str, request: &impl Message) {
        self.send_with_timeout(stream, method, request, None);
    }

    /// [`RawConn::send`] with the caller's `timeout` in the request (ttrpc's
    /// `timeout_nano`, as a Go client with a context deadline sends it); `None`: no timeout.
    pub fn send_with_timeout(
        &mut self,
        stream: u32,
        method: &str,
        request: &impl Message,
        timeout: Option<Duration>,
    ) {
        self.send_to("containerd.task.v2.Task", stream, method, request, timeout);
    }

    /// [`RawConn::send_with_timeout`] to another ttrpc `service` (e.g.
    /// `containerd.task.v3.Task`, which containerd 2.x calls).
    pub fn send_to(
        &mut self,
        service: &str,
        stream: u32,
        method: &str,
        request: &impl Message,
        timeout: Option<Duration>,
    ) {
        use std::io::Write;
        let mut req = containerd_shim_protos::ttrpc::Request::new();
        req.service = service.into();
        req.method = method.into();
        req.timeout_nano = timeout.map_or(0, |t| i64::try_from(t.as_nanos()).unwrap_or(i64::MAX));
        req.payload = request.write_to_bytes().expect("encode the request");
        let body = req.write_to_bytes().expect("encode the ttrpc request");
        let mut frame = Vec::with_capacity(10 + body.len());
        frame.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(&[1, 0]);
        frame.extend_from_slice(&body);
        self.sock.write_all(&frame).expect("send the request");
    }

    /// Parks a Wait for task `id` (stream 1), then sends it SIGKILL (stream 3) with the
    /// caller's `timeout`, as containerd's CRI does: one connection, in that order. The
    /// Kill is `--all`, which goes through `runc kill` (a running init's plain Kill is
    /// signalled by the shim itself, and never meets a slow runc).
    pub fn wait_then_kill(&mut self, id: &str, timeout: Option<Duration>) {
        let mut wait = api::WaitRequest::new();
        wait.id = id.into();
        self.send(1, "Wait", &wait);
        let mut kill = api::KillRequest::new();
        kill.id = id.into();
        kill.signal = libc::SIGKILL as u32;
        kill.all = true;
        self.send_with_timeout(3, "Kill", &kill, timeout);
    }

    /// The next response frame: its stream and the response.
    pub fn recv(&mut self) -> (u32, containerd_shim_protos::ttrpc::Response) {
        let mut header = [0u8; 10];
        self.sock
            .read_exact(&mut header)
            .expect("a response header");
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let stream = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let mut body = vec![0u8; len];
        self.sock.read_exact(&mut body).expect("a response body");
        let resp = containerd_shim_protos::ttrpc::Response::parse_from_bytes(&body)
            .expect("decode the response");
        (stream, resp)
    }
}

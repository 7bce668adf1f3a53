//! The loop's ttrpc connections: accepting (with a backoff when out of descriptors),
//! reading and decoding requests, writing replies, and holding off a connection (or all)
//! whose client sends more calls than the bounds allow.

use super::fds::ShimFd;
use super::EventLoop;
use crate::containerd::call::CallRef;
use crate::containerd::call_deadline;
use crate::containerd::decoded_call::TaskCall;
use crate::containerd::ttrpc::{Connection, Reply};
use crate::process_core::epoll::Ready;
use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Calls of all connections that may be in flight at once; beyond, no connection is read
/// until some are answered (with the per-connection bounds in `ttrpc`, this bounds what
/// requests and replies can take in memory).
pub const MAX_QUEUED_CALLS: usize = 256;
/// Connections served at once; more are closed as they come (containerd uses one or two).
const MAX_CONNECTIONS: usize = 4096;
/// The first and the longest pause of the listener after `accept` failed (as with
/// EMFILE, where the pending connection stays and the listener would fire at once again).
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

impl EventLoop {
    pub(super) fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.accept_failures > 0 {
                        log::info!(
                            "accepting connections again after {} failed accept(s)",
                            self.accept_failures
                        );
                        self.accept_failures = 0;
                    }
                    if self.conns.len() >= MAX_CONNECTIONS {
                        log::warn!("refusing a connection: {MAX_CONNECTIONS} are open already");
                        continue;
                    }
                    let n = self.next_conn;
                    self.next_conn = self.next_conn.wrapping_add(1);
                    match Connection::new(stream) {
                        Ok(conn) => {
                            if self
                                .base
                                .poller()
                                .add_readable(conn.stream().as_fd(), ShimFd::Conn(n).token())
                                .is_ok()
                            {
                                self.conns.insert(n, conn);
                            }
                        }
                        Err(e) => log::warn!("ttrpc connection: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.pause_accepting(&e);
                    return;
                }
            }
        }
    }

    /// `accept` failed (out of file descriptors, most likely): the pending connection is
    /// still there, so the level-triggered listener would fire again at once. Stop polling
    /// it for a while, longer each time in a row, and say so once per episode.
    fn pause_accepting(&mut self, e: &io::Error) {
        if self.accept_failures == 0 {
            log::warn!("accept: {e}; retrying with a backoff up to {ACCEPT_BACKOFF_MAX:?}");
        }
        self.accept_failures = self.accept_failures.saturating_add(1);
        let shift = self.accept_failures.saturating_sub(1).min(16);
        let backoff = ACCEPT_BACKOFF_FIRST
            .saturating_mul(1 << shift)
            .min(ACCEPT_BACKOFF_MAX);
        self.base.poller().remove(self.listener.as_fd());
        self.accept_resume_at = Some(Instant::now() + backoff);
    }

    /// Polls the listener again once its backoff is over.
    pub(super) fn resume_accepting(&mut self) {
        if self.accept_resume_at.is_some_and(|at| Instant::now() >= at) {
            self.accept_resume_at = None;
            if let Err(e) = self
                .base
                .poller()
                .add_readable(self.listener.as_fd(), ShimFd::Listener.token())
            {
                log::warn!("listener: {e}");
            }
        }
    }

    pub(super) fn on_conn(&mut self, n: u32, r: Ready) {
        let Some(conn) = self.conns.get_mut(&n) else {
            return;
        };
        let mut close = r.writable && conn.flush().is_err();
        let mut calls = Vec::new();
        let mut answers = Vec::new();
        let mut upgrades = Vec::new();
        if !close && r.hangup && !conn.reading {
            // Both directions closed while the connection was held off: nobody to answer.
            close = true;
        } else if !close && (r.readable || r.hangup) {
            let out = conn.read();
            for (stream, st) in out.rejected {
                answers.push((stream, Err(st)));
            }
            close |= out.closed;
            let now = Instant::now();
            for req in out.requests {
                let stream = req.stream_id;
                if let Some(v) = self.api_seen.first_call(&req.service) {
                    log::info!("serving task API v{v} ({})", req.service);
                }
                if req.service == crate::containerd::upgrade::protocol::SERVICE {
                    upgrades.push((stream, req.payload));
                    continue;
                }
                match TaskCall::decode(&req.service, &req.method, &req.payload) {
                    Err(st) => {
                        log::log!(
                            crate::containerd::errors::failure_level(&st),
                            "rpc {}.{} refused: {}",
                            req.service,
                            req.method,
                            st.message
                        );
                        answers.push((stream, Err(st)));
                    }
                    Ok(call) => {
                        let call_ref = CallRef {
                            conn: n,
                            stream,
                            deadline: call_deadline::from_timeout_nano(now, req.timeout_nano),
                            method: call.name(),
                            counted: false,
                        };
                        calls.push((call_ref, call));
                    }
                }
            }
        }
        for (stream, reply) in answers {
            close |= conn.respond(stream, reply).is_err();
        }
        if close {
            self.drop_conn(n);
            return;
        }
        for (call, request) in calls {
            self.on_call(call, request);
        }
        for (stream, payload) in upgrades {
            if let Some(reply) = self.on_upgrade_call(n, stream, &payload) {
                if let Some(conn) = self.conns.get_mut(&n) {
                    let _ = conn.respond(stream, reply);
                }
            }
        }
        self.update_interest(n);
    }

    /// Counts a call among those in flight (its connection's and the shim's) until it is
    /// answered.
    pub(super) fn count(&mut self, call: &mut CallRef) {
        if call.counted {
            return;
        }
        call.counted = true;
        self.calls_in_flight += 1;
        if let Some(conn) = self.conns.get_mut(&call.conn) {
            conn.calls_in_flight += 1;
        }
    }

    /// Writes the reply to a call (the caller may have gone: nothing to answer then).
    pub(super) fn respond(&mut self, call: &CallRef, reply: Reply) {
        if call.counted {
            self.calls_in_flight = self.calls_in_flight.saturating_sub(1);
        }
        let Some(conn) = self.conns.get_mut(&call.conn) else {
            return;
        };
        if call.counted {
            conn.calls_in_flight = conn.calls_in_flight.saturating_sub(1);
        }
        if conn.respond(call.stream, reply).is_err() {
            self.drop_conn(call.conn);
        } else {
            self.update_interest(call.conn);
        }
    }

    /// Writes the replies the handlers decided outside a call of their own (parked Waits
    /// answered by an exit).
    pub(super) fn write_answers(&mut self) {
        for a in std::mem::take(&mut self.shim.answers) {
            let Some(conn) = self.conns.get_mut(&a.conn) else {
                continue;
            };
            if conn.respond(a.stream, a.reply).is_err() {
                self.drop_conn(a.conn);
            } else {
                self.update_interest(a.conn);
            }
        }
    }

    /// Asks epoll for what the connection needs now: writability while replies wait,
    /// readability while it takes its replies and has room for more calls (and the shim
    /// has room): a client that sends calls and never reads replies stops being read.
    pub(super) fn update_interest(&mut self, n: u32) {
        let room = self.calls_in_flight < MAX_QUEUED_CALLS;
        let Some(conn) = self.conns.get_mut(&n) else {
            self.not_reading.remove(&n);
            return;
        };
        let read = room && conn.wants_to_read();
        let write = conn.unsent() > 0;
        if read == conn.reading && write == conn.writing {
            return;
        }
        match self.base.poller().set_interest(
            conn.stream().as_fd(),
            ShimFd::Conn(n).token(),
            read,
            write,
        ) {
            Ok(()) => {
                conn.reading = read;
                conn.writing = write;
                if read {
                    self.not_reading.remove(&n);
                } else {
                    self.not_reading.insert(n);
                }
            }
            Err(e) => log::warn!("connection {n}: {e}"),
        }
    }

    /// Reads again the connections held off, where their reasons are gone.
    pub(super) fn resume_reading(&mut self) {
        if self.not_reading.is_empty() {
            return;
        }
        let held: Vec<u32> = self.not_reading.iter().copied().collect();
        for n in held {
            self.update_interest(n);
        }
    }

    fn drop_conn(&mut self, n: u32) {
        self.not_reading.remove(&n);
        if let Some(conn) = self.conns.remove(&n) {
            self.base.poller().remove(conn.stream().as_fd());
        }
    }
}

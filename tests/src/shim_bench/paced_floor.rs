//! The paced floor: what a call costs at the bench's pacing before any shim does anything.
//!
//! The bench's first floor (50 calls back to back to a thread of the bench itself) keeps
//! both CPUs busy; the timed calls do not come back to back: between one call's reply and
//! the next request the bench does its own bookkeeping ([`super::lifecycle::CallGap`]),
//! and the shim's CPU, with nothing to do, may halt (on this machine's vCPUs a halted CPU
//! is woken through the hypervisor). So after each lifecycle the bench replays that
//! lifecycle's gaps against a do-nothing server in a process of its own
//! ([`super::floor_server`], started by [`FloorServer::start`]): one fresh connection, as
//! each lifecycle has, then for every server call of the lifecycle one State call sent
//! that call's gap after the previous reply, the client spinning meanwhile (the bench's
//! bookkeeping is work on its CPU, not sleep). Each floor call is kept with the call whose
//! gap it replayed.

use super::clock::{now_ns, threads_cpu_ns};
use super::lifecycle::CallGap;
use super::wire_client::{BenchClient, ClientKind};
use containerd_shim_protos::api::StateRequest;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// A floor call's deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest gap replayed: a longer one (a stall of the machine, not the bench's pacing)
/// is spun for this long.
pub const MAX_GAP_NS: u64 = 50_000_000;
/// How long the server may take to listen, and to end once told to.
const START_WAIT: Duration = Duration::from_secs(5);
const END_WAIT: Duration = Duration::from_secs(2);

/// One floor call: the call whose gap it replayed, that gap and its latency (ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloorCall {
    /// Index into [`super::lifecycle::CALLS`].
    pub call: usize,
    /// The gap spun before it (ns).
    pub gap_ns: u64,
    /// From sending the request to having the reply (ns).
    pub latency_ns: u64,
}

/// One burst: its timed calls and the server's own CPU across it (ns; every call of the
/// burst, the untimed first one included: `calls.len() + 1` calls).
#[derive(Debug, Clone, Default)]
pub struct Burst {
    /// The timed calls, in order.
    pub calls: Vec<FloorCall>,
    /// The server process's CPU time over the burst (ns; 0 when it could not be read).
    pub server_cpu_ns: u64,
}

/// The floor server's process. Dropping it closes the pipe the server watches, waits for
/// it to end (killing it after [`END_WAIT`]) and removes its socket.
pub struct FloorServer {
    child: Child,
    /// The write end of the server's stdin: open as long as the server is to serve.
    parent_end: Option<ChildStdin>,
    socket: PathBuf,
}

impl FloorServer {
    /// Starts `binary` (the `floor_server` bin) serving at `socket`, its stdin a pipe from
    /// this process, and waits until the socket exists. Fails when it cannot be spawned or
    /// does not listen within [`START_WAIT`] (it is ended then).
    pub fn start(binary: &Path, socket: &Path) -> io::Result<FloorServer> {
        let mut child = Command::new(binary)
            .arg(socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        let parent_end = child.stdin.take();
        let server = FloorServer {
            child,
            parent_end,
            socket: socket.to_path_buf(),
        };
        let deadline = Instant::now() + START_WAIT;
        while !socket.exists() {
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} did not listen at {}",
                        binary.display(),
                        socket.display()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(server)
    }

    /// The server's pid.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(0)
    }

    /// One burst on a fresh connection with `kind`'s client: an untimed first call, then
    /// for each of `gaps`, the gap spun (at most [`MAX_GAP_NS`]) from the previous reply
    /// and one State call timed. The calls made, or what failed.
    pub fn burst(&self, kind: ClientKind, gaps: &[CallGap]) -> Result<Burst, String> {
        let cpu_before = threads_cpu_ns(self.pid());
        let mut client = BenchClient::connect(kind, &self.socket, CALL_TIMEOUT)?;
        let mut state = StateRequest::new();
        state.id = "floor".into();
        client.call::<_, Empty>("State", &state, CALL_TIMEOUT)?;
        let mut last_reply = now_ns();
        let mut calls = Vec::with_capacity(gaps.len());
        for gap in gaps {
            let previous = last_reply;
            spin_until(previous.saturating_add(gap.gap_ns.min(MAX_GAP_NS)));
            let from = now_ns();
            client.call::<_, Empty>("State", &state, CALL_TIMEOUT)?;
            last_reply = now_ns();
            calls.push(FloorCall {
                call: gap.call,
                gap_ns: from.saturating_sub(previous),
                latency_ns: last_reply.saturating_sub(from),
            });
        }
        drop(client);
        let server_cpu_ns = match (cpu_before, threads_cpu_ns(self.pid())) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        Ok(Burst {
            calls,
            server_cpu_ns,
        })
    }
}

impl Drop for FloorServer {
    fn drop(&mut self) {
        // The server's epoll sees the pipe hang up; it removes its socket and exits.
        drop(self.parent_end.take());
        let deadline = Instant::now() + END_WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_file(&self.socket);
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Spins on this CPU until CLOCK_MONOTONIC reaches `deadline_ns`: the bench's bookkeeping
/// between calls keeps its CPU busy, and so does the replay of it.
fn spin_until(deadline_ns: u64) {
    while now_ns() < deadline_ns {
        std::hint::spin_loop();
    }
}

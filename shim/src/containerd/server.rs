//! The long-running shim: two threads.
//!
//! - the event loop (this thread): accepts ttrpc connections and frames requests and
//!   responses, reaps children (signalfd), runs the stdio pumps and OOM watchers;
//! - the worker: runs the Task handlers one at a time (runc calls block for tens of
//!   milliseconds and must not stall output or reaping).
//!
//! (The event publisher adds a third, which only ever talks to containerd.)

use crate::containerd::flags::Flags;
use crate::containerd::service::{LoopMsg, Shim};
use crate::containerd::ttrpc::Connection;
use crate::containerd::workers::WorkerPool;
use crate::supervisor::epoll::{Poller, Ready, Token, Waker};
use crate::supervisor::pump::{Direction, Pump, PumpState};
use crate::supervisor::signals;
use crate::supervisor::tasks::Exited;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct PumpSlot {
    container: String,
    exec: String,
    pump: Pump,
}

struct EventLoop {
    shim: Arc<Shim>,
    poller: Poller,
    listener: UnixListener,
    socket_path: Option<PathBuf>,
    workers: WorkerPool,
    conns: HashMap<u32, Connection>,
    next_conn: u32,
    pumps: HashMap<u32, PumpSlot>,
    next_pump: u32,
    ooms: HashMap<u32, (String, crate::cgroups::oom::OomWatcher)>,
    next_oom: u32,
    /// Exits waiting for their process's output to drain, in report order.
    pending_exits: VecDeque<(Exited, Instant)>,
    shutting_down: bool,
}

/// How long an exit report waits for the process's output to reach its FIFOs. Clients
/// (ctr 1.6) stop reading output once they learn of the exit; output still in flight then
/// is lost. Bounded, because a child the process left behind may hold its stdout open.
const OUTPUT_DRAIN_WAIT: Duration = Duration::from_millis(500);

/// Runs the shim until containerd shuts it down. `listener` is the ttrpc socket made by
/// `start`; `socket_path` is removed at exit.
pub fn run(
    flags: &Flags,
    listener: UnixListener,
    socket_path: Option<PathBuf>,
    start_options: crate::containerd::options::RuncOptions,
) -> io::Result<()> {
    // Before any thread exists, so every thread inherits the blocked mask.
    let mut signal_fd = signals::block_and_open()?;
    let poller = Poller::new()?;
    let waker = Waker::new()?;
    poller.add_readable(waker.as_fd(), Token::Waker)?;
    poller.add_readable(signal_fd.as_fd(), Token::Signals)?;
    listener.set_nonblocking(true)?;
    poller.add_readable(listener.as_fd(), Token::Listener)?;

    let publisher = std::env::var("TTRPC_ADDRESS")
        .ok()
        .filter(|a| !a.is_empty())
        .and_then(|addr| {
            match crate::containerd::publisher::Publisher::start(&addr, &flags.namespace) {
                Ok(p) => Some(p),
                Err(e) => {
                    log::warn!("no task events: cannot publish to {addr}: {e}");
                    None
                }
            }
        });
    let shim = Arc::new(Shim::new(
        flags.namespace.clone(),
        crate::supervisor::reaper::Reaper::new(),
        crate::containerd::events::Events::new(publisher),
        start_options,
        waker,
    ));
    let workers = WorkerPool::start(shim.clone())?;

    let mut ev = EventLoop {
        shim,
        poller,
        listener,
        socket_path,
        workers,
        conns: HashMap::new(),
        next_conn: 0,
        pumps: HashMap::new(),
        next_pump: 0,
        ooms: HashMap::new(),
        next_oom: 0,
        pending_exits: VecDeque::new(),
        shutting_down: false,
    };
    log::info!("serving task API v2");
    let mut ready = Vec::new();
    while !ev.shutting_down {
        ev.poller.wait(ev.next_timeout(), &mut ready)?;
        for r in ready.iter().copied() {
            ev.dispatch(r, &mut signal_fd);
        }
        ev.drain_outbox();
        ev.flush_exits();
        ev.drain_outbox();
    }
    ev.finish();
    Ok(())
}

impl EventLoop {
    fn dispatch(&mut self, r: Ready, signal_fd: &mut nix::sys::signalfd::SignalFd) {
        match r.token {
            Token::Listener => self.accept(),
            Token::Waker => self.shim.waker().drain(),
            Token::Signals => {
                for sig in signals::drain(signal_fd) {
                    if sig == nix::sys::signal::Signal::SIGCHLD {
                        self.reap();
                    } else {
                        log::info!(
                            "ignoring {sig:?}: the shim stops when containerd shuts it down"
                        );
                    }
                }
            }
            Token::Conn(n) => self.on_conn(n, r),
            Token::Pump(n) => self.on_pump(n),
            Token::Oom(n) => self.on_oom(n),
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let n = self.next_conn;
                    self.next_conn = self.next_conn.wrapping_add(1);
                    match Connection::new(stream) {
                        Ok(conn) => {
                            if self
                                .poller
                                .add_readable(conn.stream().as_fd(), Token::Conn(n))
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
                    log::warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    fn on_conn(&mut self, n: u32, r: Ready) {
        let Some(conn) = self.conns.get_mut(&n) else {
            return;
        };
        let mut close = false;
        let mut fast = Vec::new();
        if r.writable {
            match conn.flush() {
                Ok(false) => {
                    let _ = self.poller.set_writable_interest(
                        conn.stream().as_fd(),
                        Token::Conn(n),
                        false,
                    );
                }
                Ok(true) => {}
                Err(_) => close = true,
            }
        }
        if r.readable || r.hangup {
            let out = conn.read();
            for (stream, st) in out.rejected {
                if conn.respond(stream, Err(st)).is_err() {
                    close = true;
                }
            }
            close |= out.closed;
            for req in out.requests {
                if Shim::is_fast(&req.method) {
                    if let Some(reply) = self.shim.handle(n, &req) {
                        fast.push((req.stream_id, reply));
                    }
                } else {
                    self.workers.submit(n, req);
                }
            }
        }
        for (stream, reply) in fast {
            self.respond(n, stream, reply);
        }
        if close {
            self.drop_conn(n);
        }
    }

    fn drop_conn(&mut self, n: u32) {
        if let Some(conn) = self.conns.remove(&n) {
            self.poller.remove(conn.stream().as_fd());
        }
    }

    fn respond(&mut self, n: u32, stream: u32, reply: crate::containerd::ttrpc::Reply) {
        let Some(conn) = self.conns.get_mut(&n) else {
            return; // the caller went away; nothing to answer
        };
        match conn.respond(stream, reply) {
            Ok(true) => {
                let _ =
                    self.poller
                        .set_writable_interest(conn.stream().as_fd(), Token::Conn(n), true);
            }
            Ok(false) => {}
            Err(_) => self.drop_conn(n),
        }
    }

    fn reap(&mut self) {
        let report = {
            let mut tasks = self.shim.lock();
            let exits = self.shim.reaper.reap();
            tasks.on_exits(&exits)
        };
        self.queue_exits(report);
    }

    /// Queues exits behind any already waiting, after moving what their processes' pipes
    /// hold right now.
    fn queue_exits(&mut self, exits: Vec<Exited>) {
        let deadline = Instant::now() + OUTPUT_DRAIN_WAIT;
        for e in exits {
            self.run_output_pumps(&e.container_id, &e.exec_id);
            self.pending_exits.push_back((e, deadline));
        }
        self.flush_exits();
    }

    fn run_output_pumps(&mut self, container: &str, exec: &str) {
        let ids: Vec<u32> = self
            .pumps
            .iter()
            .filter(|(_, s)| {
                s.container == container
                    && s.exec == exec
                    && s.pump.direction() == Direction::Output
            })
            .map(|(n, _)| *n)
            .collect();
        for n in ids {
            self.on_pump(n);
        }
    }

    /// Reports queued exits from the front while their output has drained or their wait
    /// is over (order is kept: an init's exit never overtakes its execs').
    fn flush_exits(&mut self) {
        let now = Instant::now();
        while let Some((e, deadline)) = self.pending_exits.front() {
            let drained = self
                .shim
                .lock()
                .container(&e.container_id)
                .and_then(|c| c.process(&e.exec_id))
                .map(|p| p.open_pumps == 0)
                .unwrap_or(true);
            if !drained && now < *deadline {
                break;
            }
            if let Some((e, _)) = self.pending_exits.pop_front() {
                self.shim.deliver(vec![e]);
            }
        }
    }

    /// Wakes the loop for the first pending exit's deadline.
    fn next_timeout(&self) -> Option<u16> {
        self.pending_exits.front().map(|(_, deadline)| {
            let left = deadline.saturating_duration_since(Instant::now());
            left.as_millis().clamp(1, u128::from(u16::MAX)) as u16
        })
    }

    fn drain_outbox(&mut self) {
        loop {
            let msgs = self.shim.take_outbox();
            if msgs.is_empty() {
                return;
            }
            for msg in msgs {
                match msg {
                    LoopMsg::Respond {
                        conn,
                        stream,
                        reply,
                    } => self.respond(conn, stream, reply),
                    LoopMsg::AddPumps {
                        container,
                        exec,
                        pumps,
                    } => {
                        for pump in pumps {
                            self.add_pump(&container, &exec, pump);
                        }
                    }
                    LoopMsg::DropPumps { container, exec } => self.drop_pumps(&container, &exec),
                    LoopMsg::WatchOom { container, pid } => self.watch_oom(container, pid),
                    LoopMsg::Exited(exits) => self.queue_exits(exits),
                    LoopMsg::Shutdown => self.shutting_down = true,
                }
            }
        }
    }

    fn add_pump(&mut self, container: &str, exec: &str, pump: Pump) {
        let n = self.next_pump;
        self.next_pump = self.next_pump.wrapping_add(1);
        let token = Token::Pump(n);
        let registered = self
            .poller
            .add_edge(pump.src_fd(), token, true, false)
            .and_then(|()| self.poller.add_edge(pump.dst_fd(), token, false, true));
        if let Err(e) = registered {
            log::warn!("stdio of {container}/{exec}: {e}");
            self.poller.remove(pump.src_fd());
            self.pump_finished(container, exec, pump.direction());
            return;
        }
        self.pumps.insert(
            n,
            PumpSlot {
                container: container.into(),
                exec: exec.into(),
                pump,
            },
        );
    }

    fn on_pump(&mut self, n: u32) {
        let Some(slot) = self.pumps.get_mut(&n) else {
            return;
        };
        if slot.pump.run() == PumpState::Done {
            if let Some(slot) = self.pumps.remove(&n) {
                log::debug!(
                    "stdio pump of {}/{} done after {} bytes",
                    slot.container,
                    slot.exec,
                    slot.pump.moved()
                );
                self.poller.remove(slot.pump.src_fd());
                self.poller.remove(slot.pump.dst_fd());
                self.pump_finished(&slot.container, &slot.exec, slot.pump.direction());
            }
        }
    }

    fn drop_pumps(&mut self, container: &str, exec: &str) {
        let ids: Vec<u32> = self
            .pumps
            .iter()
            .filter(|(_, s)| s.container == container && s.exec == exec)
            .map(|(n, _)| *n)
            .collect();
        for n in ids {
            if let Some(slot) = self.pumps.remove(&n) {
                self.poller.remove(slot.pump.src_fd());
                self.poller.remove(slot.pump.dst_fd());
            }
        }
    }

    fn pump_finished(&self, container: &str, exec: &str, direction: Direction) {
        if direction != Direction::Output {
            return;
        }
        let mut tasks = self.shim.lock();
        if let Some(p) = tasks
            .container_mut(container)
            .and_then(|c| c.process_mut(exec))
        {
            p.open_pumps = p.open_pumps.saturating_sub(1);
        }
        drop(tasks);
        self.shim.pumps_done.notify_all();
    }

    fn watch_oom(&mut self, container: String, pid: i32) {
        match crate::cgroups::oom::OomWatcher::new(pid) {
            Ok(w) => {
                let n = self.next_oom;
                self.next_oom = self.next_oom.wrapping_add(1);
                if self.poller.add_readable(w.fd(), Token::Oom(n)).is_ok() {
                    self.ooms.insert(n, (container, w));
                }
            }
            Err(e) => log::info!("no OOM events for {container}: {e}"),
        }
    }

    fn on_oom(&mut self, n: u32) {
        let Some((container, watcher)) = self.ooms.get_mut(&n) else {
            return;
        };
        match watcher.check() {
            Ok(true) => {
                log::info!("container {container} hit its memory limit (OOM)");
                self.shim.events.oom(container);
            }
            Ok(false) => {}
            Err(_) => {
                if let Some((_, w)) = self.ooms.remove(&n) {
                    self.poller.remove(w.fd());
                }
            }
        }
    }

    /// Answers what is still queued, delivers the last events, removes the socket.
    fn finish(&mut self) {
        let pending: Vec<Exited> = self.pending_exits.drain(..).map(|(e, _)| e).collect();
        self.shim.deliver(pending);
        self.drain_outbox();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        for conn in self.conns.values_mut() {
            while let Ok(true) = conn.flush() {
                if std::time::Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        self.shim.events.flush(std::time::Duration::from_secs(5));
        if let Some(path) = &self.socket_path {
            crate::containerd::address::remove_socket(path);
        }
        log::info!("shim shut down");
    }
}

//! The long-running shim: two threads.
//!
//! - the event loop (this thread): accepts ttrpc connections and frames requests and
//!   responses, reaps children (signalfd), runs the stdio pumps and OOM watchers;
//! - the worker: runs the Task handlers one at a time (runc calls block for tens of
//!   milliseconds and must not stall output or reaping).
//!
//! (The event publisher adds a third, which only ever talks to containerd.)

use crate::containerd::call_deadline;
use crate::containerd::delete_linger::DeleteLingers;
use crate::containerd::flags::Flags;
use crate::containerd::task::{LoopMsg, Shim};
use crate::containerd::task_call::TaskCall;
use crate::containerd::tasks::Exited;
use crate::containerd::ttrpc::Connection;
use crate::containerd::workers::WorkerPool;
use crate::supervisor::epoll::{Ready, Token, Waker};
use crate::supervisor::event_base::EventBase;
use crate::supervisor::process_stdio::{ProcessStdio, Stream, Streams};
use crate::supervisor::signals;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The pumps of one process, under their slot (`Token::Stdio(slot, _)`).
struct StdioSlot {
    container: String,
    exec: String,
    stdio: ProcessStdio,
}

struct EventLoop {
    shim: Arc<Shim>,
    base: EventBase,
    listener: UnixListener,
    socket_path: Option<PathBuf>,
    workers: WorkerPool,
    conns: HashMap<u32, Connection>,
    next_conn: u32,
    /// Connections not being read (see `update_interest`), re-checked as calls finish.
    not_reading: BTreeSet<u32>,
    /// Accept failures in a row (EMFILE, ENFILE…), and when the listener is polled again.
    accept_failures: u32,
    accept_resume_at: Option<Instant>,
    /// Which task API versions containerd has called (logged once each).
    api_seen: crate::containerd::task_api::ApiSeen,
    /// Processes whose pumps run, until they have all ended or the process is deleted.
    stdio: HashMap<u32, StdioSlot>,
    next_slot: u32,
    ooms: HashMap<u32, (String, crate::cgroups::oom::OomWatcher)>,
    next_oom: u32,
    /// Exits waiting for their process's output to drain or for the reply of the call
    /// that caused them, in report order.
    pending_exits: VecDeque<PendingExit>,
    /// When the earliest queued exit stops waiting (computed by `flush_exits`).
    exit_deadline: Option<Instant>,
    /// Spools still draining after their process's exit, which its Waits wait for until
    /// the deadline.
    spool_waits: Vec<SpoolWait>,
    /// Deletes waiting for spooled output a reader is taking, and when to look again.
    delete_lingers: DeleteLingers,
    linger_at: Option<Instant>,
    /// When containerd asked the shim to shut down (it exits once no call is in flight).
    shutdown_requested: Option<Instant>,
    /// Since when the shim has served no container, and how long it may stay so.
    empty_since: Option<Instant>,
    idle_exit: Duration,
}

/// A spool a process's Waits wait for (see `Process::spooling`).
struct SpoolWait {
    container: String,
    exec: String,
    stream: Stream,
    until: Instant,
}

/// How long Waits wait for a spool to drain after the exit: the Go shim's bound on its
/// IO wait.
const SPOOL_WAIT: Duration = Duration::from_secs(10);

/// An exit waiting to be reported.
struct PendingExit {
    exit: Exited,
    /// Reported by then even if its output has not drained.
    drain_deadline: Instant,
    /// Reported by then even if the call that caused it has not been answered.
    hold_limit: Instant,
}

/// How long an exit report waits for the process's output to reach its FIFOs. Clients
/// (ctr 1.6) stop reading output once they learn of the exit; output still in flight then
/// is lost. Bounded, because a child the process left behind may hold its stdout open.
const OUTPUT_DRAIN_WAIT: Duration = Duration::from_millis(500);
/// How long an exit report waits for the reply of the call that caused it (a runc that
/// hangs in `kill` must not keep the exit from containerd for ever).
const EXIT_HOLD_LIMIT: Duration = crate::containerd::call_gate::ENTER_WAIT;
/// How long a shim asked to shut down keeps serving the calls still in flight.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);
/// How long a shim with no container waits for one before it exits by itself: containerd
/// creates the first container right after `start`, and shuts the shim down after the
/// last one; a shim left without either (containerd failed in between) must not stay
/// for ever. `TETHER_IDLE_EXIT_SECS` overrides it (tests).
const IDLE_EXIT: Duration = Duration::from_secs(60);
/// Calls of all connections that may wait for a worker at once; beyond, no connection is
/// read until some are answered (with the per-connection bounds in `ttrpc`, this bounds
/// what requests and replies can take in memory).
const MAX_QUEUED_CALLS: usize = 256;
/// Connections served at once; more are closed as they come (containerd uses one or two).
const MAX_CONNECTIONS: usize = 4096;
/// The first and the longest pause of the listener after `accept` failed (as with
/// EMFILE, where the pending connection stays and the listener would fire at once again).
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Runs the shim until containerd shuts it down. `listener` is the ttrpc socket made by
/// `start`; `socket_path` is removed at exit.
pub fn run(
    flags: &Flags,
    listener: UnixListener,
    socket_path: Option<PathBuf>,
    start_options: crate::containerd::options::RuncOptions,
) -> io::Result<()> {
    // Before any thread exists, so every thread inherits the blocked mask.
    let base = EventBase::new(&signals::handled())?;
    let waker = Waker::new()?;
    base.poller().add_readable(waker.as_fd(), Token::Waker)?;
    listener.set_nonblocking(true)?;
    base.poller()
        .add_readable(listener.as_fd(), Token::Listener)?;

    let publisher = std::env::var(crate::containerd::bootstrap::TTRPC_ADDRESS_ENV)
        .ok()
        .filter(|a| !a.is_empty())
        .and_then(|addr| {
            match crate::containerd::events::Publisher::start(&addr, &flags.namespace) {
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
        base,
        listener,
        socket_path,
        workers,
        conns: HashMap::new(),
        next_conn: 0,
        not_reading: BTreeSet::new(),
        accept_failures: 0,
        accept_resume_at: None,
        api_seen: Default::default(),
        stdio: HashMap::new(),
        next_slot: 0,
        ooms: HashMap::new(),
        next_oom: 0,
        pending_exits: VecDeque::new(),
        exit_deadline: None,
        spool_waits: Vec::new(),
        delete_lingers: DeleteLingers::default(),
        linger_at: None,
        shutdown_requested: None,
        empty_since: Some(Instant::now()),
        idle_exit: std::env::var("TETHER_IDLE_EXIT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(IDLE_EXIT),
    };
    log::debug!("answering task API v2 and v3");
    let mut ready = Vec::new();
    while !ev.done() {
        ev.base.wait(ev.next_deadline(), &mut ready)?;
        ev.resume_accepting();
        for r in ready.iter().copied() {
            ev.dispatch(r);
        }
        ev.drain_outbox();
        ev.flush_exits();
        ev.expire_spool_waits();
        ev.run_spool_rechecks();
        ev.drain_outbox();
        ev.check_delete_lingers();
        ev.resume_reading();
    }
    ev.finish();
    Ok(())
}

impl EventLoop {
    fn dispatch(&mut self, r: Ready) {
        match r.token {
            Token::Listener => self.accept(),
            Token::Waker => self.shim.waker().drain(),
            Token::Signals => {
                for sig in self.base.signals() {
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
            Token::Stdio(slot, stream) => self.on_stdio(slot, stream),
            Token::Oom(n) => self.on_oom(n),
            // The containerd face reads no request FIFOs of its own.
            Token::Fifo(_) => {}
        }
    }

    fn accept(&mut self) {
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
    fn resume_accepting(&mut self) {
        if self.accept_resume_at.is_some_and(|at| Instant::now() >= at) {
            self.accept_resume_at = None;
            if let Err(e) = self
                .base
                .poller()
                .add_readable(self.listener.as_fd(), Token::Listener)
            {
                log::warn!("listener: {e}");
            }
        }
    }

    fn on_conn(&mut self, n: u32, r: Ready) {
        let Some(conn) = self.conns.get_mut(&n) else {
            return;
        };
        let mut close = r.writable && conn.flush().is_err();
        let mut answers = Vec::new();
        if !close && r.hangup && !conn.reading {
            // Both directions closed while the connection was held off: nobody to answer.
            close = true;
        } else if !close && (r.readable || r.hangup) {
            let out = conn.read();
            for (stream, st) in out.rejected {
                answers.push((stream, Err(st)));
            }
            close |= out.closed;
            for req in out.requests {
                let stream = req.stream_id;
                if let Some(v) = self.api_seen.first_call(&req.service) {
                    log::info!("serving task API v{v} ({})", req.service);
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
                    Ok(call) if call.needs_worker() => {
                        conn.calls_in_flight += 1;
                        let deadline =
                            call_deadline::from_timeout_nano(Instant::now(), req.timeout_nano);
                        self.workers.submit(n, stream, call, deadline);
                    }
                    Ok(call) => {
                        if let Some(answer) = self.shim.handle(n, stream, call) {
                            answers.push((stream, answer.reply));
                        }
                    }
                }
            }
        }
        for (stream, reply) in answers {
            close |= conn.respond(stream, reply).is_err();
        }
        if close {
            self.drop_conn(n);
        } else {
            self.update_interest(n);
        }
    }

    /// Asks epoll for what the connection needs now: writability while replies wait,
    /// readability while it takes its replies and has room for more calls (and the workers
    /// have room): a client that sends calls and never reads replies stops being read.
    fn update_interest(&mut self, n: u32) {
        let room = self.workers.in_flight() < MAX_QUEUED_CALLS;
        let Some(conn) = self.conns.get_mut(&n) else {
            self.not_reading.remove(&n);
            return;
        };
        let read = room && conn.wants_to_read();
        let write = conn.unsent() > 0;
        if read == conn.reading && write == conn.writing {
            return;
        }
        match self
            .base
            .poller()
            .set_interest(conn.stream().as_fd(), Token::Conn(n), read, write)
        {
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
    fn resume_reading(&mut self) {
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

    /// Answers a call that was not answered when it was read: a worker's (`worker_call`,
    /// which frees a place among the connection's calls in flight) or a parked Wait's.
    fn respond(
        &mut self,
        n: u32,
        stream: u32,
        reply: crate::containerd::ttrpc::Reply,
        worker_call: bool,
    ) {
        let Some(conn) = self.conns.get_mut(&n) else {
            return; // the caller went away; nothing to answer
        };
        if worker_call {
            conn.calls_in_flight = conn.calls_in_flight.saturating_sub(1);
        }
        if conn.respond(stream, reply).is_err() {
            self.drop_conn(n);
        } else {
            self.update_interest(n);
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
        let now = Instant::now();
        for exit in exits {
            let drain_deadline = self.process_exited(&exit.container_id, &exit.exec_id, now);
            self.pending_exits.push_back(PendingExit {
                exit,
                drain_deadline,
                hold_limit: now + EXIT_HOLD_LIMIT,
            });
        }
        self.flush_exits();
    }

    /// A process exited: its pumps move what its pipes hold and start the grace of its
    /// output. Returns when its exit report stops waiting for the output to drain.
    fn process_exited(&mut self, container: &str, exec: &str, now: Instant) -> Instant {
        let grace_over = now + OUTPUT_DRAIN_WAIT;
        let Some((&n, slot)) = self
            .stdio
            .iter_mut()
            .find(|(_, s)| s.container == container && s.exec == exec)
        else {
            // No pumps here: none, or still on their way from the worker; the table's
            // count of open outputs says whether the report waits for them.
            return grace_over;
        };
        let ended = slot
            .stdio
            .exited(self.base.poller(), now, OUTPUT_DRAIN_WAIT);
        let deadline = slot.stdio.drain_deadline().unwrap_or(grace_over);
        let spooling: Vec<Stream> = Stream::OUTPUTS
            .into_iter()
            .filter(|s| ended.contains(*s) && slot.stdio.is_open(*s))
            .collect();
        if slot.stdio.is_empty() {
            self.stdio.remove(&n);
        }
        for stream in spooling {
            self.spool_draining(container, exec, stream);
        }
        outputs_ended(&self.shim, container, exec, ended);
        deadline
    }

    /// Reports the queued exits that may go now: the process's output has drained (or
    /// its grace is over) and no call that can cause the exit is still unanswered (see
    /// `call_gate`). Order is kept within a container (an init's exit never overtakes its
    /// execs'); a container whose exit waits does not hold up another's.
    fn flush_exits(&mut self) {
        let now = Instant::now();
        let mut waiting: Vec<String> = Vec::new();
        let mut deadline: Option<Instant> = None;
        let mut ready = Vec::new();
        let mut i = 0;
        while i < self.pending_exits.len() {
            let p = &self.pending_exits[i];
            let (cid, eid) = (&p.exit.container_id, &p.exit.exec_id);
            if waiting.contains(cid) {
                i += 1;
                continue;
            }
            let held = now < p.hold_limit && self.shim.gate.holds_exit(cid, eid);
            // The table's count, not the loop's pumps: it also counts pumps the worker has
            // handed over that the loop has not registered yet (what Delete waits for).
            let drained = now >= p.drain_deadline
                || self
                    .shim
                    .lock()
                    .container(cid)
                    .and_then(|c| c.process(eid))
                    .map(|p| p.open_pumps == 0)
                    .unwrap_or(true);
            if held || !drained {
                let until = if held { p.hold_limit } else { p.drain_deadline };
                deadline = Some(deadline.map_or(until, |d| d.min(until)));
                waiting.push(cid.clone());
                i += 1;
                continue;
            }
            if let Some(p) = self.pending_exits.remove(i) {
                ready.push(p.exit);
            }
        }
        self.exit_deadline = deadline;
        // An OOM kill is counted in the cgroup before the process it killed exits: publish
        // it now, ahead of the exit it caused, not whenever its own wakeup is read (under
        // load that came after the exit on cgroup v2). `check` never blocks.
        let oom_first: Vec<u32> = self
            .ooms
            .iter()
            .filter(|(_, (c, _))| {
                ready
                    .iter()
                    .any(|e| e.exec_id.is_empty() && &e.container_id == c)
            })
            .map(|(n, _)| *n)
            .collect();
        for n in oom_first {
            self.on_oom(n);
        }
        self.shim.deliver(ready);
    }

    /// Wakes the loop when the first queued exit stops waiting, a shutdown's drain is over,
    /// the listener's backoff, or the time a shim with no container waits for one.
    fn next_deadline(&self) -> Option<Instant> {
        let shutdown = self.shutdown_requested.map(|at| at + SHUTDOWN_DRAIN);
        let idle = self.empty_since.map(|at| at + self.idle_exit);
        let spool = self.spool_waits.iter().map(|w| w.until).min();
        let recheck = self
            .stdio
            .values()
            .filter_map(|s| s.stdio.next_recheck())
            .min();
        [
            self.exit_deadline,
            shutdown,
            self.accept_resume_at,
            idle,
            spool,
            recheck,
            self.linger_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether the shim may exit: containerd asked it to shut down, it serves no container,
    /// and every call in flight has been answered and every exit reported (or the drain's
    /// bound is over). A container created meanwhile (a grouped shim's next container)
    /// cancels the shutdown. Also when it has served no container and had no call for
    /// `idle_exit`, shut down or not (an orphan: containerd failed between `start` and
    /// Create, or after the last Delete).
    fn done(&mut self) -> bool {
        let empty = self.shim.lock().containers.is_empty();
        if !empty {
            self.empty_since = None;
        } else if self.workers.in_flight() > 0 {
            // A Create in flight: not idle yet.
            self.empty_since = Some(Instant::now());
        } else {
            let since = *self.empty_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.idle_exit {
                log::warn!(
                    "no container for {:?} and no shutdown from containerd: exiting",
                    self.idle_exit
                );
                return true;
            }
        }
        let Some(at) = self.shutdown_requested else {
            return false;
        };
        if !empty {
            log::info!("shutdown cancelled: a container was created meanwhile");
            self.shutdown_requested = None;
            return false;
        }
        let idle = self.workers.in_flight() == 0 && self.pending_exits.is_empty();
        if !idle && at.elapsed() >= SHUTDOWN_DRAIN {
            log::warn!(
                "shutting down with {} call(s) still in flight after {SHUTDOWN_DRAIN:?}",
                self.workers.in_flight()
            );
            return true;
        }
        idle
    }

    fn drain_outbox(&mut self) {
        loop {
            let msgs = self.shim.take_outbox();
            if msgs.is_empty() {
                return;
            }
            for msg in msgs {
                match msg {
                    LoopMsg::Answered {
                        conn,
                        stream,
                        reply,
                        hold,
                    } => {
                        self.respond(conn, stream, reply, true);
                        // Written (or queued on the socket in order): the process's next
                        // call and its exit report may go now.
                        drop(hold);
                    }
                    LoopMsg::Respond {
                        conn,
                        stream,
                        reply,
                    } => self.respond(conn, stream, reply, false),
                    LoopMsg::AddPumps {
                        container,
                        exec,
                        stdio,
                    } => self.add_stdio(container, exec, stdio),
                    LoopMsg::DropPumps { container, exec } => self.drop_stdio(&container, &exec),
                    LoopMsg::WatchOom { container, watcher } => self.watch_oom(container, watcher),
                    LoopMsg::Exited(exits) => self.queue_exits(exits),
                    LoopMsg::AwaitSpools {
                        container,
                        exec,
                        done,
                    } => self.delete_lingers.add(container, exec, done),
                    LoopMsg::Shutdown => {
                        self.shutdown_requested.get_or_insert_with(Instant::now);
                    }
                }
            }
        }
    }

    /// Serves a process's pumps from now on.
    fn add_stdio(&mut self, container: String, exec: String, mut stdio: ProcessStdio) {
        let slot = self.next_slot;
        self.next_slot = self.next_slot.wrapping_add(1);
        if let Err(dropped) = stdio.register(self.base.poller(), slot) {
            log::warn!("stdio of {container}/{exec}: {}", dropped.error);
            outputs_ended(&self.shim, &container, &exec, dropped.streams);
        }
        if !stdio.is_empty() {
            self.stdio.insert(
                slot,
                StdioSlot {
                    container,
                    exec,
                    stdio,
                },
            );
        }
    }

    fn on_stdio(&mut self, slot: u32, stream: Stream) {
        let Some(s) = self.stdio.get_mut(&slot) else {
            return;
        };
        let Some(ended) = s.stdio.run(self.base.poller(), stream) else {
            if !s.stdio.is_open(stream) {
                // A spool drained after its source had ended.
                let (container, exec) = (s.container.clone(), s.exec.clone());
                if s.stdio.is_empty() {
                    self.stdio.remove(&slot);
                }
                self.spool_drained(&container, &exec, stream);
            }
            return;
        };
        if s.stdio.is_open(stream) {
            // The source ended; its spool still holds bytes.
            let (container, exec) = (s.container.clone(), s.exec.clone());
            self.spool_draining(&container, &exec, stream);
            let Some(s) = self.stdio.get_mut(&slot) else {
                return;
            };
            outputs_ended(&self.shim, &s.container, &s.exec, Streams::from(stream));
            return;
        }
        log::debug!(
            "{stream:?} of {}/{} done after {} bytes",
            s.container,
            s.exec,
            ended.moved
        );
        outputs_ended(&self.shim, &s.container, &s.exec, Streams::from(stream));
        if s.stdio.is_empty() {
            self.stdio.remove(&slot);
        }
    }

    /// A spool of the process goes on draining after its source ended: its Waits wait
    /// for it, up to `SPOOL_WAIT`.
    fn spool_draining(&mut self, container: &str, exec: &str, stream: Stream) {
        self.shim.lock().spool_draining(container, exec);
        self.spool_waits.push(SpoolWait {
            container: container.to_string(),
            exec: exec.to_string(),
            stream,
            until: Instant::now() + SPOOL_WAIT,
        });
    }

    /// A spool drained: Waits stop waiting for it.
    fn spool_drained(&mut self, container: &str, exec: &str, stream: Stream) {
        let before = self.spool_waits.len();
        self.spool_waits
            .retain(|w| !(w.container == container && w.exec == exec && w.stream == stream));
        if self.spool_waits.len() < before {
            self.shim.spool_settled(container, exec);
        }
    }

    /// Runs the output pumps that declined to spool while their reader was active and
    /// want to look again now (see `ProcessStdio::next_recheck`).
    fn run_spool_rechecks(&mut self) {
        let now = Instant::now();
        let due: Vec<(u32, Stream)> = self
            .stdio
            .iter()
            .flat_map(|(slot, s)| s.stdio.due_rechecks(now).into_iter().map(|st| (*slot, st)))
            .collect();
        for (slot, stream) in due {
            self.on_stdio(slot, stream);
        }
    }

    /// Waits stop waiting for spools that are still draining at their deadline (the
    /// spools go on draining until the process is deleted).
    fn expire_spool_waits(&mut self) {
        let now = Instant::now();
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.spool_waits)
            .into_iter()
            .partition(|w| w.until <= now);
        self.spool_waits = kept;
        for w in expired {
            log::info!(
                "{:?} of {}/{}: still spooled after {SPOOL_WAIT:?}: Wait answered",
                w.stream,
                w.container,
                w.exec
            );
            self.shim.spool_settled(&w.container, &w.exec);
        }
    }

    /// Answers the Deletes that wait for spooled output and may go on (see
    /// `delete_linger`): only exited processes count.
    fn check_delete_lingers(&mut self) {
        if self.delete_lingers.is_empty() {
            self.linger_at = None;
            return;
        }
        let processes = self
            .stdio
            .values()
            .filter(|s| s.stdio.drain_deadline().is_some())
            .map(|s| (s.container.as_str(), s.exec.as_str(), s.stdio.backlog()));
        self.linger_at = self.delete_lingers.check(processes, Instant::now());
    }

    /// Stops serving a deleted process's stdio.
    fn drop_stdio(&mut self, container: &str, exec: &str) {
        self.spool_waits
            .retain(|w| !(w.container == container && w.exec == exec));
        let poller = self.base.poller();
        self.stdio.retain(|_, s| {
            let deleted = s.container == container && s.exec == exec;
            if deleted {
                s.stdio.close_all(poller);
            }
            !deleted
        });
    }

    /// Polls a container's OOM watcher, and checks it once now: an OOM kill between the
    /// watcher's creation and this registration changed nothing the poll would see.
    fn watch_oom(&mut self, container: String, watcher: crate::cgroups::oom::OomWatcher) {
        let n = self.next_oom;
        self.next_oom = self.next_oom.wrapping_add(1);
        match self.base.poller().add_readable(watcher.fd(), Token::Oom(n)) {
            Ok(()) => {
                self.ooms.insert(n, (container, watcher));
                self.on_oom(n);
            }
            Err(e) => log::warn!("no OOM events for {container}: {e}"),
        }
    }

    fn on_oom(&mut self, n: u32) {
        let Some((container, watcher)) = self.ooms.get_mut(&n) else {
            return;
        };
        // After an OOM, check again: the wakeup may also have ended the cgroup (v2: the
        // OOM kill and the exit it caused), and no further wakeup would say so.
        loop {
            match watcher.check() {
                Ok(true) => {
                    log::info!("container {container} hit its memory limit (OOM)");
                    self.shim.events.oom(container);
                }
                Ok(false) => return,
                Err(_) => break,
            }
        }
        if let Some((_, w)) = self.ooms.remove(&n) {
            self.base.poller().remove(w.fd());
        }
    }

    /// Answers what is still queued, delivers the last events, removes the socket.
    fn finish(&mut self) {
        let pending: Vec<Exited> = self.pending_exits.drain(..).map(|p| p.exit).collect();
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
        log::debug!("shim shut down");
    }
}

/// Counts the output pumps of a process that have ended in the table, which Delete and
/// the exit reports wait on.
fn outputs_ended(shim: &Shim, container: &str, exec: &str, ended: Streams) {
    let n = ended.outputs();
    if n == 0 {
        return;
    }
    let mut tasks = shim.lock();
    if let Some(p) = tasks
        .container_mut(container)
        .and_then(|c| c.process_mut(exec))
    {
        p.open_pumps = p.open_pumps.saturating_sub(n);
    }
    drop(tasks);
    shim.pumps_done.notify_all();
}

//! The long-running shim's event loop: the one thread that owns the containerd face's
//! state ([`Shim`]).
//!
//! It accepts ttrpc connections and frames requests and replies ([`connections`]), runs
//! the Task handlers and takes calls through their process's gate ([`calls`]), reaps
//! children (signalfd), runs the stdio pumps and OOM watchers, and applies what the
//! workers' jobs found. Workers (`workers`) only run runc; the event publisher
//! (`events`) only talks to containerd. At rest: three threads.

mod calls;
mod connections;
pub mod fds;
mod resume;
mod upgrade;

pub use resume::resume;

use crate::containerd::events::Events;
use crate::containerd::flags::Flags;
use crate::containerd::process_table::ProcKey;
use crate::containerd::shim::{RuncFactory, Shim};
use crate::containerd::ttrpc::Connection;
use crate::containerd::workers::{Completions, WorkerPool};
use crate::process_core::epoll::{Ready, Token, Waker};
use crate::process_core::event_base::EventBase;
use crate::process_core::reaper::Reaper;
use crate::process_core::signals;
use fds::ShimFd;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a shim asked to shut down keeps serving the calls still in flight.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);
/// How long a shim with no container waits for one before it exits by itself: containerd
/// creates the first container right after `start`, and shuts the shim down after the
/// last one; a shim left without either (containerd failed in between) must not stay
/// for ever. `TETHER_IDLE_EXIT_SECS` overrides it (tests).
const IDLE_EXIT: Duration = Duration::from_secs(60);

struct EventLoop {
    base: EventBase,
    shim: Shim,
    reaper: Reaper,
    workers: WorkerPool,
    completions: Arc<Completions>,
    listener: UnixListener,
    socket_path: Option<PathBuf>,
    conns: HashMap<u32, Connection>,
    next_conn: u32,
    /// Connections not being read (see `update_interest`), re-checked as calls finish.
    not_reading: BTreeSet<u32>,
    /// Accept failures in a row (EMFILE, ENFILE…), and when the listener is polled again.
    accept_failures: u32,
    accept_resume_at: Option<Instant>,
    /// Calls of all connections in flight (waiting for a worker, a gate or the loop:
    /// `CallRef::counted`).
    calls_in_flight: usize,
    /// Processes whose gate may let its next call in.
    turns: Vec<ProcKey>,
    /// When a waiting Delete must be looked at again.
    delete_at: Option<Instant>,
    /// Since when the shim has served no container, and how long it may stay so.
    empty_since: Option<Instant>,
    idle_exit: Duration,
    /// The binary the shim was started from: what an upgrade moves onto by default.
    started_from: PathBuf,
    /// containerd's ttrpc address for events, as `start` gave it.
    events_address: Option<String>,
    /// An upgrade asked for and waiting for the calls in flight (`upgrade`).
    upgrading: Option<upgrade::Upgrading>,
    /// The task API versions containerd has called so far (each is logged once).
    api_seen: crate::containerd::task_services::ApiSeen,
}

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
        .add_readable(listener.as_fd(), ShimFd::Listener.token())?;

    let events_address = events_address();
    let publisher =
        events_address.as_deref().and_then(
            |addr| match crate::containerd::events::Publisher::start(addr, &flags.namespace) {
                Ok(p) => Some(p),
                Err(e) => {
                    log::warn!("no task events: cannot publish to {addr}: {e}");
                    None
                }
            },
        );
    let reaper = Reaper::new();
    let shim = Shim::new(
        flags.namespace.clone(),
        start_options,
        Events::new(publisher),
        RuncFactory::new(&flags.namespace, reaper.monitor()),
    );
    let mut ev = EventLoop::new(base, waker, shim, reaper, listener, socket_path)?;
    ev.events_address = events_address;
    log::debug!("answering task API v2 and v3");
    ev.serve()
}

/// containerd's ttrpc address for events, from `start`'s environment.
fn events_address() -> Option<String> {
    std::env::var(crate::containerd::bootstrap::TTRPC_ADDRESS_ENV)
        .ok()
        .filter(|a| !a.is_empty())
}

impl EventLoop {
    /// A loop over `base` (the waker and listener registered) serving `shim`.
    fn new(
        base: EventBase,
        waker: Waker,
        shim: Shim,
        reaper: Reaper,
        listener: UnixListener,
        socket_path: Option<PathBuf>,
    ) -> io::Result<Self> {
        let completions = Arc::new(Completions::new(waker));
        let workers = WorkerPool::start(completions.clone())?;
        Ok(EventLoop {
            base,
            shim,
            reaper,
            workers,
            completions,
            listener,
            socket_path,
            conns: HashMap::new(),
            next_conn: 0,
            not_reading: BTreeSet::new(),
            accept_failures: 0,
            accept_resume_at: None,
            calls_in_flight: 0,
            turns: Vec::new(),
            delete_at: None,
            empty_since: Some(Instant::now()),
            idle_exit: std::env::var("TETHER_IDLE_EXIT_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Duration::from_secs)
                .unwrap_or(IDLE_EXIT),
            started_from: std::env::current_exe().unwrap_or_default(),
            events_address: events_address(),
            upgrading: None,
            api_seen: Default::default(),
        })
    }

    /// Serves until containerd shuts the shim down (or an upgrade executes the next
    /// image, which serves on).
    fn serve(mut self) -> io::Result<()> {
        let mut ready = Vec::new();
        while !self.done() {
            self.base.wait(self.next_deadline(), &mut ready)?;
            // Released in after_events, once the turn's answers are written.
            self.shim.events.hold_wakes();
            self.resume_accepting();
            for r in ready.iter().copied() {
                self.dispatch(r);
            }
            self.after_events();
        }
        self.finish();
        Ok(())
    }

    fn dispatch(&mut self, r: Ready) {
        match r.token {
            Token::Waker => self.completions.waker().drain(),
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
            Token::Stdio(key, stream) => {
                self.shim.on_stdio(ProcKey(key), stream, self.base.poller())
            }
            Token::Face(f) => match ShimFd::from_face(f) {
                Some(ShimFd::Listener) => self.accept(),
                Some(ShimFd::Conn(n)) => self.on_conn(n, r),
                Some(ShimFd::Oom(key)) => self.shim.check_oom(ProcKey(key), self.base.poller()),
                None => {}
            },
        }
        self.write_answers();
    }

    /// What every turn of the loop does after its events: applies the workers' outcomes,
    /// reports the exits that may go, moves spools and Deletes on, lets the next calls
    /// through their gates, and reads again the connections held off.
    fn after_events(&mut self) {
        for done in self.completions.take() {
            let reply = self.shim.apply(done.outcome, self.base.poller());
            self.finish_call(done.call, done.gate, reply);
        }
        let now = Instant::now();
        self.shim.flush_exits(now, self.base.poller());
        self.shim.expire_spool_waits(now);
        self.shim.check_wait_holds(now);
        self.shim.run_spool_rechecks(now, self.base.poller());
        self.progress_deletes(now);
        self.run_turns(now);
        self.write_answers();
        // The answers went first; now the event thread, the files and the closes.
        self.shim.events.release_wakes();
        self.shim.write_exit_records();
        self.shim.retired.clear();
        self.progress_upgrade(now);
        self.resume_reading();
    }

    /// Reaps every exited child; books the exits and queues what is to be reported.
    fn reap(&mut self) {
        let exits = self.reaper.reap();
        let report = self.shim.table.on_exits(&exits);
        self.shim.queue_exits(report, self.base.poller());
    }

    /// Wakes the loop when the first queued exit stops waiting, a shutdown's drain is over,
    /// the listener's backoff, the time a shim with no container waits for one, a spool or
    /// Delete deadline, or a call's turn at a gate.
    fn next_deadline(&self) -> Option<Instant> {
        let shutdown = self.shim.shutdown_requested.map(|at| at + SHUTDOWN_DRAIN);
        let idle = self.empty_since.map(|at| at + self.idle_exit);
        let gates = self
            .shim
            .table
            .processes()
            .filter_map(|(_, p)| p.gate.next_deadline())
            .min();
        [
            self.shim.next_exit_deadline(),
            shutdown,
            self.accept_resume_at,
            idle,
            self.shim.next_output_deadline(),
            self.delete_at,
            gates,
            self.upgrading.as_ref().map(|u| u.deadline),
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
        // A Create in flight counts as a call in flight, not as a container.
        let empty = self.shim.table.has_no_containers();
        if !empty {
            self.empty_since = None;
        } else if self.calls_in_flight > 0 {
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
        let Some(at) = self.shim.shutdown_requested else {
            return false;
        };
        if !empty {
            log::info!("shutdown cancelled: a container was created meanwhile");
            self.shim.shutdown_requested = None;
            return false;
        }
        let idle = self.calls_in_flight == 0 && self.shim.table.exit_queue().is_empty();
        if !idle && at.elapsed() >= SHUTDOWN_DRAIN {
            log::warn!(
                "shutting down with {} call(s) still in flight after {SHUTDOWN_DRAIN:?}",
                self.calls_in_flight
            );
            return true;
        }
        idle
    }

    /// Answers what is still queued, delivers the last events, removes the socket.
    fn finish(&mut self) {
        self.shim.deliver_all();
        self.write_answers();
        self.shim.write_exit_records();
        let deadline = Instant::now() + Duration::from_secs(2);
        for conn in self.conns.values_mut() {
            while let Ok(true) = conn.flush() {
                if Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.shim.events.flush(Duration::from_secs(5));
        if let Some(path) = &self.socket_path {
            crate::containerd::address::remove_socket(path);
        }
        log::debug!("shim shut down");
    }
}

//! The containerd face's state and the one thread that owns it.
//!
//! [`Shim`] holds everything the face knows: the process table, the event publisher's
//! handle, the options `start` was given. The event loop (`shim_loop`) owns it and is
//! the only thread that reads or changes it: the Task handlers (`handlers`) run on the
//! loop as methods of `Shim`; a handler that must run runc hands a [`Job`] to a worker
//! (`workers`), which runs it with copies of what it needs and sends back an
//! [`Outcome`] that the loop applies here. So no lock guards a process's state, and
//! every event is published from the loop, in the order the loop decided.

use crate::containerd::call::GatedCall;
use crate::containerd::events::Events;
use crate::containerd::options::RuncOptions;
use crate::containerd::process_table::Table;
use crate::containerd::ttrpc::Reply;
use runc_wrapper::{ProcessMonitor, Runc};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Where runc keeps container state unless the options say otherwise.
const DEFAULT_RUNC_ROOT: &str = "/run/containerd/runc";

/// A reply for the loop to write.
#[derive(Debug)]
pub struct Answer {
    pub conn: u32,
    pub stream: u32,
    pub reply: Reply,
}

/// Builds the `Runc` a container's calls use: its binary, root and log from the
/// container's options; every invocation through the reaper's monitor, killed at the
/// deadline of the call it runs for. Cloned into workers' jobs.
#[derive(Clone)]
pub struct RuncFactory {
    namespace: String,
    /// The reaper's monitor (shared with the loop's reaper by design: see
    /// `supervisor::reaper`) wrapped with the call deadline.
    monitor: Arc<dyn ProcessMonitor>,
}

impl std::fmt::Debug for RuncFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuncFactory")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl RuncFactory {
    pub fn new(namespace: &str, reaper_monitor: Arc<dyn ProcessMonitor>) -> Self {
        RuncFactory {
            namespace: namespace.to_string(),
            monitor: crate::containerd::call_deadline::monitor(reaper_monitor),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The runc driver for a container in `bundle` created with `opts`.
    pub fn runc(&self, opts: &RuncOptions, bundle: &Path) -> Runc {
        let root = if opts.root.is_empty() {
            DEFAULT_RUNC_ROOT
        } else {
            opts.root.as_str()
        };
        let mut b = Runc::builder()
            .binary(if opts.binary_name.is_empty() {
                "runc"
            } else {
                opts.binary_name.as_str()
            })
            .root(Path::new(root).join(&self.namespace))
            .log(bundle.join("log.json"))
            .systemd_cgroup(opts.systemd_cgroup)
            .monitor(self.monitor.clone());
        if !opts.criu_path.is_empty() {
            b = b.criu(&opts.criu_path);
        }
        b.build()
    }
}

/// The containerd face's state (see the module doc). Owned by the event loop.
#[derive(Debug)]
pub struct Shim {
    pub namespace: String,
    /// Options given to `start` (stdin), the base for every container's.
    pub start_options: RuncOptions,
    pub table: Table,
    pub events: Events,
    pub runc: RuncFactory,
    /// Replies decided while handling one event, written by the loop right after it.
    pub answers: Vec<Answer>,
    /// Calls that were queued at the gate of a process that has gone since: the loop
    /// runs them now (they find no process and say so).
    pub gone: Vec<GatedCall>,
    /// When containerd asked the shim to shut down (it exits once nothing is in flight).
    pub shutdown_requested: Option<Instant>,
    /// Inits' exits queued in this turn of the loop (reaped, whether or not they can be
    /// reported yet), to record in their bundles' `exit.json` once the turn's answers are
    /// written (`write_exit_records`).
    pub exit_records: Vec<ExitToRecord>,
    /// Containers and processes removed in this turn, dropped (their descriptors closed:
    /// two dozen for a container with its kept cgroup files) once the turn's answers are
    /// written, so that a Delete's reply does not wait for the closes.
    pub retired: Retired,
}

/// What [`Shim::retired`] holds until the end of the turn: at most what the turn's calls
/// removed (cleared by `EventLoop::after_events` on every turn, and nothing in it is
/// carried across an upgrade: the records have left the table).
#[derive(Debug, Default)]
pub struct Retired {
    containers: Vec<crate::containerd::process_table::ContainerRecord>,
    processes: Vec<crate::containerd::process_table::ProcessRecord>,
}

impl Retired {
    /// Keeps a container's record (its OOM watcher already out of the poller) until the
    /// end of the turn.
    pub fn container(&mut self, c: crate::containerd::process_table::ContainerRecord) {
        self.containers.push(c);
    }

    /// Keeps a process's record (its pumps already closed) until the end of the turn.
    pub fn process(&mut self, p: crate::containerd::process_table::ProcessRecord) {
        self.processes.push(p);
    }

    /// Drops them all: their descriptors close now.
    pub fn clear(&mut self) {
        self.containers.clear();
        self.processes.clear();
    }
}

/// An init's exit for its bundle's `exit.json` (`exit_status::record`).
#[derive(Debug)]
pub struct ExitToRecord {
    /// Whose exit it is: its bundle, and the placeholder its record holds open, are
    /// looked up when the record is written (a container deleted meanwhile gets none).
    pub container_id: String,
    pub pid: i32,
    pub record: fifo::ExitRecord,
}

impl Shim {
    pub fn new(
        namespace: String,
        start_options: RuncOptions,
        events: Events,
        runc: RuncFactory,
    ) -> Self {
        Shim {
            namespace,
            start_options,
            table: Table::default(),
            events,
            runc,
            answers: Vec::new(),
            gone: Vec::new(),
            shutdown_requested: None,
            exit_records: Vec::new(),
            retired: Retired::default(),
        }
    }

    /// Records the inits' exits queued since the last call in their bundles' `exit.json`,
    /// for `delete` after a shim crash: a write into the placeholder Create made (a few
    /// µs), or, without one, a file made and renamed (~0.5 ms on ext4). The loop calls it
    /// right after writing a turn's answers: the file is for a shim that died, so no
    /// answer and no TaskExit waits for it.
    pub fn write_exit_records(&mut self) {
        for e in std::mem::take(&mut self.exit_records) {
            // A container deleted meanwhile needs no record (no `delete` will ask), and its
            // bundle may be going: nothing is made in it.
            let Ok(c) = self.table.container(&e.container_id) else {
                continue;
            };
            crate::containerd::exit_status::record(
                &c.bundle,
                c.exit_file.as_ref(),
                e.pid,
                &e.record,
            );
        }
    }

    /// Queues a reply for the loop to write.
    pub fn answer(&mut self, conn: u32, stream: u32, reply: Reply) {
        self.answers.push(Answer {
            conn,
            stream,
            reply,
        });
    }
}

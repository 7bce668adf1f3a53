//! One record per process (a container's init or an exec) and one per container: every
//! fact the containerd face keeps about them, in one place, owned by the event loop.
//!
//! Nothing here is shared with another thread. A worker that runs runc for a call gets
//! copies of what it needs (the container's `Runc`, its bundle, the process's stdio) and
//! sends back a typed outcome that the loop applies to the record (see
//! `containerd::handlers`). The records are plain data but for the descriptors they hold
//! (pidfd, pty master, stdin's write end, the pumps), which the snapshot names by number
//! (`process_table::snapshot`).

use super::gate::Gate;
use super::proc_state::{IllegalTransition, ProcState};
use crate::containerd::cgroups::oom::OomWatcher;
use crate::containerd::options::RuncOptions;
use crate::containerd::stdio_uris::StdioConfig;
use crate::containerd::wait_hold::WaitHold;
use crate::process_core::process_stdio::{DeleteLinger, ProcessStdio, Stream};
use fifo::ExitRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Instant;

/// A process's key in the table: given when the process is defined (Create, Exec), never
/// given to another process for the life of the shim (a `u32` counter; the table refuses
/// a new process rather than reuse a key). The loop also uses it as the epoll slot of the
/// process's pumps and, for an init, of its container's OOM watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcKey(pub u32);

/// Someone waiting for a process to exit: a ttrpc call to answer (connection, stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub conn: u32,
    pub stream: u32,
}

/// What Start launches for a process that is not a created init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LaunchSpec {
    /// A created init: `runc start` runs it.
    CreatedInit,
    /// An exec: its OCI process spec (JSON), as `runc exec --process` takes it.
    Exec(Vec<u8>),
    /// An init restored from a checkpoint image at Start (`runc restore`).
    Restore(PathBuf),
}

/// The process's stdin as the shim holds it.
#[derive(Debug, Default)]
pub struct Stdin {
    /// A write end of the stdin FIFO; dropping it is CloseIO (the process sees EOF once
    /// the manager's writers are gone too).
    pub closer: Option<File>,
    /// CloseIO came before the process had its stdin (its Start was in flight): the
    /// closer is dropped as soon as Start hands it over.
    pub close_requested: bool,
}

impl Stdin {
    /// CloseIO: closes stdin now, or as soon as the process has one.
    pub fn close(&mut self) {
        self.closer = None;
        self.close_requested = true;
    }

    /// Start hands over the process's stdin closer; a CloseIO that came first drops it.
    pub fn hand_over(&mut self, closer: Option<File>) {
        if !self.close_requested {
            self.closer = closer;
        }
    }
}

/// An exit that is recorded and waits to be reported (TaskExit), and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitWait {
    /// Reported by then even if the output has not drained.
    pub drain_deadline: Instant,
    /// Reported by then even if the call that caused it has not been answered.
    pub hold_limit: Instant,
}

/// An output stream whose source has ended while its spool still feeds a reader: the
/// process's Waits wait for it until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolWait {
    pub stream: Stream,
    pub until: Instant,
}

/// A Delete of the process that waits for its turn to act (see `handlers::delete`).
#[derive(Debug)]
pub struct PendingDelete {
    pub call: crate::containerd::call::CallRef,
    /// When it stops waiting for the exit report and the output's end.
    pub settle_by: Instant,
    /// Its wait for spooled output a reader is taking, once the output has settled.
    pub linger: Option<DeleteLinger>,
}

/// One process: a container's init (exec id "") or an exec. Its [`ProcState`] changes
/// only through its transitions (`process_table::proc_state`).
#[derive(Debug)]
pub struct ProcessRecord {
    pub container_id: String,
    pub exec_id: String,
    pub pid: i32,
    /// Kept only while it surely is this process's (see `Table::register_pid`).
    pub pidfd: Option<OwnedFd>,
    state: ProcState,
    pub stdio: StdioConfig,
    pub launch: LaunchSpec,
    pub stdin: Stdin,
    /// The pty master, for resizing.
    pub console: Option<File>,
    /// The pumps between the process and its manager's stdio (registered with the loop's
    /// poller under this process's key).
    pub pumps: ProcessStdio,
    /// Output streams whose source has not ended yet: an exit report waits for them
    /// (bounded), and a Delete too.
    pub open_outputs: usize,
    /// Set while its exit waits in the table's exit queue.
    pub exit_wait: Option<ExitWait>,
    /// Spools still draining after the exit: Waits are answered once they have.
    pub spool_waits: Vec<SpoolWait>,
    /// Wait calls parked until the exit is reported (and the output FIFOs emptied by a
    /// reader: `wait_hold`).
    pub waiters: Vec<Waiter>,
    /// Set while settled Waits are held for a reader to empty the output FIFOs
    /// (`containerd::wait_hold`); not carried across a live upgrade (the new image holds
    /// its parked Waits afresh).
    pub wait_hold: Option<WaitHold>,
    /// The calls that decide its fate, one at a time (Kill, Delete, …).
    pub gate: Gate,
    pub delete: Option<PendingDelete>,
}

impl ProcessRecord {
    /// A process defined but not launched.
    pub fn new(container_id: &str, exec_id: &str, stdio: StdioConfig, launch: LaunchSpec) -> Self {
        ProcessRecord {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            pid: 0,
            pidfd: None,
            state: ProcState::Created,
            stdio,
            launch,
            stdin: Stdin::default(),
            console: None,
            pumps: ProcessStdio::default(),
            open_outputs: 0,
            exit_wait: None,
            spool_waits: Vec::new(),
            waiters: Vec::new(),
            wait_hold: None,
            gate: Gate::default(),
            delete: None,
        }
    }

    /// Where it is in its life.
    pub fn state(&self) -> &ProcState {
        &self.state
    }

    /// Changes the state through one of its transitions (the only writer).
    pub(super) fn state_mut(&mut self) -> &mut ProcState {
        &mut self.state
    }

    /// Its recorded exit (not one held while its start is in flight).
    pub fn exit(&self) -> Option<ExitRecord> {
        self.state.exit()
    }

    /// Running, or created with a live pid (an init before start).
    pub fn is_alive(&self) -> bool {
        self.exit().is_none() && self.pid > 0
    }

    /// A Start call takes the process (it must be created, not started yet).
    pub fn begin_start(&mut self) -> Result<(), IllegalTransition> {
        self.state.begin_start()
    }

    /// runc has started it; its exits stay held until `Table::start_done`.
    pub fn launched(&mut self) -> Result<(), IllegalTransition> {
        self.state.launched()
    }

    /// Holds an exit reaped while its start is in flight.
    pub fn hold_exit(&mut self, record: ExitRecord) -> Result<(), IllegalTransition> {
        self.state.hold_exit(record)
    }

    /// Whether Waits can be answered, output FIFOs aside (see `containerd::wait_hold`):
    /// the exit is reported and no spool still drains.
    pub fn exit_settled(&self) -> Option<ExitRecord> {
        self.exit()
            .filter(|_| self.state.exit_reported() && self.spool_waits.is_empty())
    }

    /// "container" or "container/exec", for messages.
    pub fn display(&self) -> String {
        display_id(&self.container_id, &self.exec_id)
    }
}

/// A container: its processes and what the shim keeps for it.
#[derive(Debug)]
pub struct ContainerRecord {
    pub id: String,
    pub bundle: PathBuf,
    pub init: ProcKey,
    /// Exec id → its process.
    pub execs: BTreeMap<String, ProcKey>,
    pub paused: bool,
    /// Its Delete runs runc on a worker: no Start or Exec may begin meanwhile.
    pub deleting: bool,
    /// No pid namespace of its own: the init's exit does not end the other processes, so
    /// the shim kills them.
    pub shares_pid_ns: bool,
    /// Where the shim mounted the rootfs (unmounted at Delete).
    pub rootfs_mounted: Option<PathBuf>,
    /// The runtime options it was created with (Create's over `start`'s).
    pub options: RuncOptions,
    /// The runc driver for it (its binary, root and log), built from `options`.
    pub runc: runc_wrapper::Runc,
    /// Its cgroup's process list, to kill what is left when a shared-pid-namespace init
    /// dies.
    pub cgroup_procs: Option<PathBuf>,
    /// Its init's cgroups, resolved when the init was created (or restored): Stats reads
    /// them until Delete, also once the init has exited and its pid is gone (containerd
    /// asks for Stats after a 137 exit to check for an OOM, as the Go shim answers).
    pub cgroups: Option<crate::containerd::cgroups::ProcessCgroups>,
    /// The files of `cgroups` its Stats calls keep open between them (the loop only holds
    /// it; each Stats job reads through a clone; not carried across a live upgrade).
    pub stat_files: std::sync::Arc<crate::containerd::cgroups::KeptFiles>,
    /// Its memory cgroup's OOM counter, registered under the init's key.
    pub oom: Option<OomWatcher>,
    /// Its bundle's `exit.json`, made empty at Create, which the init's exit is written
    /// into (`exit_status::placeholder`); not carried across a live upgrade (the next
    /// image writes the record whole).
    pub exit_file: Option<std::fs::File>,
}

/// "container" or "container/exec", for messages.
pub fn display_id(id: &str, exec_id: &str) -> String {
    if exec_id.is_empty() {
        id.to_string()
    } else {
        format!("{id}/{exec_id}")
    }
}

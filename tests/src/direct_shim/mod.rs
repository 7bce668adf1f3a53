//! tether's shim driven directly over ttrpc, the way containerd drives it, without
//! containerd: for tests that need to place calls precisely against each other (Kill,
//! Wait, Delete and Shutdown of one task at once) with a `runc` that is slow on purpose.
//!
//! [`DirectShim::start`] runs `containerd-shim-tether-v2 … start` in a busybox bundle of
//! its own and connects a ttrpc client to the address it prints. [`SlowRunc`] writes a
//! wrapper around the real runc that returns late from the verbs it is given (the work
//! itself happens on time), to be named as the task's `BinaryName`. Dropping a
//! `DirectShim` kills the shim and everything it ran, and removes its socket, runc state,
//! mounts and temp dir, whatever the test did.
//!
//! The parts, one concern a file: `launch` starts the shim as containerd does (and runs its
//! other subcommands), `task_calls` makes the Task calls most tests share, `leftovers`
//! checks and removes what a shim left behind, `slow_runc` is [`SlowRunc`], `raw_conn`
//! is [`RawConn`] (ttrpc frame by frame) and `subcommand_run` times a subcommand.

mod launch;
mod leftovers;
mod raw_conn;
mod slow_runc;
mod subcommand_run;
mod task_calls;

pub use raw_conn::RawConn;
pub use slow_runc::SlowRunc;
pub use subcommand_run::{children_cpu, SubcommandRun};

use containerd_shim_protos::ttrpc::context;
use containerd_shim_protos::TaskClient;
use leftovers::Leftovers;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The runtime options' type URL for runc `Options`.
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";
/// How long one ttrpc call may take before the test's client gives up on it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One shim, started by hand, with a ttrpc client. See the module docs.
pub struct DirectShim {
    client: TaskClient,
    binary: PathBuf,
    id: String,
    bundle_name: String,
    started: SubcommandRun,
    // Dropped after the client: the connection closes before the shim is killed.
    leftovers: Leftovers,
}

impl DirectShim {
    /// How long the `start` subcommand took, and its CPU time.
    pub fn started(&self) -> SubcommandRun {
        self.started
    }

    /// The containerd namespace the shim was started in.
    pub fn namespace(&self) -> &str {
        &self.leftovers.namespace
    }

    /// The ttrpc Task client (share it across threads by reference).
    pub fn client(&self) -> &TaskClient {
        &self.client
    }

    /// The bundle directory.
    pub fn bundle(&self) -> PathBuf {
        self.dir().join(&self.bundle_name)
    }

    /// The shim's own log (logrus lines), for failure messages.
    pub fn log(&self) -> String {
        let shim = self
            .leftovers
            .shim_log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        let runc = fs::read_to_string(self.bundle().join("log.json")).unwrap_or_default();
        format!("shim log:\n{shim}\nruncs' log.json:\n{runc}")
    }

    /// Waits until the shim's log holds `needle` (the log is copied by another thread).
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The test's temp dir.
    pub fn dir(&self) -> &Path {
        self.leftovers.dir()
    }

    /// The shim server's pid (from `shim.pid`).
    pub fn shim_pid(&self) -> Option<i32> {
        self.leftovers.shim_pid
    }

    /// The shim's socket path.
    pub fn socket(&self) -> Option<&Path> {
        self.leftovers.socket.as_deref()
    }

    /// The runc root the task runs under (`<root>/<namespace>` is runc's own).
    pub fn runc_state_dir(&self) -> PathBuf {
        self.leftovers.runc_state_dir()
    }
}

/// A fresh context with the test's call timeout.
pub fn ctx() -> context::Context {
    context::with_timeout(i64::try_from(CALL_TIMEOUT.as_nanos()).unwrap())
}

/// Whether `pid` runs (a zombie does not).
pub fn pid_alive(pid: i32) -> bool {
    // A zombie is gone for our purposes; the shim is reparented to init, which reaps it.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

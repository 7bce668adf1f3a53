//! The depot: where the standalone supervisor keeps its containers and process directories.
//!
//! ```text
//! <depot>/
//!   .runc/                       runc --root (default; --runc-root changes it)
//!   <container-id>/
//!     container.json             {"bundle": "...", "init": "<process-id>"}
//!     processes/<process-id>/    the process directory (DESIGN.md, the dadoo contract;
//!                                `--io-uid`/`--io-gid` open it to a manager: io_owner.rs)
//!       stdin stdout stderr winsz exit   FIFOs
//!       exitcode pidfile log.json        files
//!       supervisor.pid                   the pid of the process's supervisor
//!       control                          FIFO: requests to the supervisor (`close-stdin`)
//!       tty                              empty marker: the process has a terminal
//! ```

use super::errors::{CliError, CliResult};
use fifo::ProcessDir;
use runc_wrapper::{ProcessMonitor, Runc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Default depot.
pub const DEFAULT_DEPOT: &str = "/run/tether/depot";
/// The depot's runc root, unless `--runc-root` says otherwise.
pub const RUNC_ROOT_NAME: &str = ".runc";
/// The container's metadata file.
pub const CONTAINER_JSON: &str = "container.json";
/// The directory holding the container's process directories.
pub const PROCESSES: &str = "processes";
/// The supervisor's pid, in each process directory.
pub const SUPERVISOR_PID: &str = "supervisor.pid";
/// Present (empty) in the process directory of a process that has a terminal.
pub const TTY_MARKER: &str = "tty";

/// What the depot remembers about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerMeta {
    /// The bundle it was created from.
    pub bundle: PathBuf,
    /// The process id (directory name) of its init process.
    pub init: String,
}

/// The global options every subcommand shares.
#[derive(Debug, Clone)]
pub struct Depot {
    /// The depot directory.
    pub root: PathBuf,
    /// The runc binary.
    pub runc_bin: PathBuf,
    /// runc's `--root`.
    pub runc_root: PathBuf,
}

impl Depot {
    /// A depot at `root`, with runc's state in `runc_root` (default `<root>/.runc`).
    pub fn new(root: PathBuf, runc_bin: Option<PathBuf>, runc_root: Option<PathBuf>) -> Self {
        let runc_root = runc_root.unwrap_or_else(|| root.join(RUNC_ROOT_NAME));
        Depot {
            root,
            runc_bin: runc_bin.unwrap_or_else(|| PathBuf::from("runc")),
            runc_root,
        }
    }

    /// A runc driver; `log` is the JSON log (a process's `log.json`).
    pub fn runc(&self, log: Option<&Path>, monitor: Option<Arc<dyn ProcessMonitor>>) -> Runc {
        let mut b = Runc::builder().binary(&self.runc_bin).root(&self.runc_root);
        if let Some(log) = log {
            b = b.log(log);
        }
        if let Some(m) = monitor {
            b = b.monitor(m);
        }
        b.build()
    }

    /// Checks a container id: a valid file name that is not the runc root's.
    pub fn check_container_id(id: &str) -> CliResult<()> {
        fifo::validate_id(id).map_err(|e| {
            CliError::Usage(e.to_string().replacen("process id", "container id", 1))
        })?;
        if id.starts_with('.') {
            return Err(CliError::Usage(format!(
                "container id {id:?} is invalid: starts with '.'"
            )));
        }
        Ok(())
    }

    /// `<depot>/<id>`.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// `<depot>/<id>/processes`.
    pub fn processes_dir(&self, id: &str) -> PathBuf {
        self.container_dir(id).join(PROCESSES)
    }

    /// The container's metadata; [`CliError::NotFound`] if the depot does not know it.
    pub fn container(&self, id: &str) -> CliResult<ContainerMeta> {
        Self::check_container_id(id)?;
        let path = self.container_dir(id).join(CONTAINER_JSON);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CliError::NotFound(format!(
                    "container {id:?} does not exist in depot {}",
                    self.root.display()
                )))
            }
            Err(e) => return Err(CliError::io("read", &path, &e)),
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))
    }

    /// Writes the container's metadata (atomically: temp file + rename).
    pub fn write_container(&self, id: &str, meta: &ContainerMeta) -> CliResult<()> {
        let path = self.container_dir(id).join(CONTAINER_JSON);
        let tmp = self.container_dir(id).join(".container.json.tmp");
        let bytes = serde_json::to_vec(meta).map_err(|e| CliError::Failed(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(|e| CliError::io("write", &tmp, &e))?;
        std::fs::rename(&tmp, &path).map_err(|e| CliError::io("rename", &path, &e))
    }

    /// The process directory of an existing process; the init's when `process` is None.
    pub fn process_dir(&self, id: &str, process: Option<&str>) -> CliResult<ProcessDir> {
        let meta = self.container(id)?;
        let pid = process.unwrap_or(&meta.init);
        ProcessDir::open(&self.processes_dir(id), pid).map_err(|e| match e {
            fifo::Error::NotFound { .. } => {
                CliError::NotFound(format!("container {id:?} has no process {pid:?}"))
            }
            other => CliError::fifo(other),
        })
    }

    /// The container ids in the depot, sorted.
    pub fn container_ids(&self) -> CliResult<Vec<String>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CliError::io("read", &self.root, &e)),
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .filter(|n| self.container_dir(n).join(CONTAINER_JSON).is_file())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The process ids of a container, sorted.
    pub fn process_ids(&self, id: &str) -> CliResult<Vec<String>> {
        let dir = self.processes_dir(id);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CliError::io("read", &dir, &e)),
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// The pid of the supervisor of the process in `dir`, if it is still alive (its command
/// line names the directory, so a recycled pid is not mistaken for it).
pub fn live_supervisor(dir: &ProcessDir) -> Option<i32> {
    let text = std::fs::read_to_string(dir.path().join(SUPERVISOR_PID)).ok()?;
    let pid: i32 = text.trim().parse().ok().filter(|p| *p > 0)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    let needle = dir.path().to_string_lossy();
    (cmdline.contains("supervise") && cmdline.contains(needle.as_ref())).then_some(pid)
}

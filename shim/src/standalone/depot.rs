//! The depot: where the standalone supervisor keeps its containers and process directories.
//!
//! ```text
//! <depot>/
//!   .runc/                       runc --root (default; --runc-root changes it)
//!   <container-id>/
//!     container.json             {"bundle": "...", "init": "<process-id>"}, plus
//!                                "external": {"runc_root"} for a container another
//!                                runtime runs (external.rs)
//!     processes/<process-id>/    the process directory (DESIGN.md, the dadoo contract;
//!                                `--io-uid`/`--io-gid` open it to a manager: io_owner.rs)
//!       stdin stdout stderr winsz exit   FIFOs
//!       exitcode pidfile log.json        files
//!       supervisor.pid                   the pid of the process's supervisor
//!       control                          FIFO: requests to the supervisor (`close-stdin`)
//!       upgrade.sock                     socket, root's: live upgrade requests (`upgrade`)
//!       tty                              empty marker: the process has a terminal
//!       starttime                        "<pid> <start ticks>": the process, not a recycled pid
//!       supervisor.log                   the supervisor's warnings, made on the first one
//!       config.json pea.json             a pea's bundle config and record (pea.rs)
//! ```
//!
//! Modes are set explicitly, never left to the caller's umask: the depot, a container's
//! directory and its `processes/` 0711 (root's; a manager running as another user only
//! traverses them, `--io-uid`), `container.json` 0644, the process directories as the
//! `fifo` crate and `io_owner.rs` make them. Root writes in all of these, so a depot that
//! anyone but root (or the caller) could write to is refused ([`Depot::check_safe`]).

use super::errors::{CliError, CliResult};
use fifo::{PinnedDir, ProcessDir};
use runc_wrapper::{ProcessMonitor, Runc};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
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
/// The pid of the supervisor's keeper (its parent), in each process directory.
pub const KEEPER_PID: &str = "keeper.pid";
/// Present (empty) in the process directory of a process that has a terminal.
pub const TTY_MARKER: &str = "tty";
/// Mode of the depot, a container's directory and its `processes/`: root's, traversable
/// (a manager without root opens a process directory below them by name).
pub const DIR_MODE: u32 = 0o711;
/// Mode of `container.json`.
pub const CONTAINER_JSON_MODE: u32 = 0o644;

/// What the depot remembers about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerMeta {
    /// The bundle it was created from.
    pub bundle: PathBuf,
    /// The process id (directory name) of its init process (empty for an external
    /// container, whose init is another runtime's).
    pub init: String,
    /// Set when the container is not ours: another runtime (containerd) created it and
    /// owns its init; the depot holds only the processes `exec` started in it, and
    /// `delete` never deletes it with runc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<External>,
}

/// What the depot records about a container another runtime runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct External {
    /// runc's `--root` under which that runtime keeps the container (containerd's is
    /// `<containerd state>/runc/<namespace>`).
    pub runc_root: PathBuf,
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

    /// The options to use for the container `meta` describes: an external container's
    /// runc root is the one recorded for it, whatever the command line says.
    pub fn for_container(&self, meta: &ContainerMeta) -> Depot {
        match &meta.external {
            Some(ext) => Depot {
                runc_root: ext.runc_root.clone(),
                ..self.clone()
            },
            None => self.clone(),
        }
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
        self.check_safe()?;
        for dir in [self.container_dir(id), self.processes_dir(id)] {
            if std::fs::symlink_metadata(&dir).is_ok() {
                check_dir_safe(&dir, true)?;
            }
        }
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

    /// Writes the container's metadata (atomically: temp file + rename, mode 0644, through
    /// a descriptor of the container's directory).
    pub fn write_container(&self, id: &str, meta: &ContainerMeta) -> CliResult<()> {
        let cdir = self.container_dir(id);
        let pinned = PinnedDir::open(&cdir).map_err(CliError::fifo)?;
        let bytes = serde_json::to_vec(meta).map_err(|e| CliError::Failed(e.to_string()))?;
        fifo::write_atomic(
            &pinned.path().join(CONTAINER_JSON),
            &bytes,
            CONTAINER_JSON_MODE,
        )
        .map_err(|e| CliError::fifo_at(e, &cdir.join(CONTAINER_JSON)))
    }

    /// Creates the depot (and missing parents) with mode 0711 if it does not exist, before
    /// anything else (runc would make it 0700 as the parent of its root, and a manager
    /// without root could not reach a process directory), then checks it is safe.
    pub fn prepare(&self) -> CliResult<()> {
        let mut missing: Vec<&Path> = self
            .root
            .ancestors()
            .take_while(|p| std::fs::symlink_metadata(p).is_err())
            .collect();
        missing.reverse();
        for dir in missing {
            mkdir_exact(dir, DIR_MODE).map(drop)?;
        }
        self.check_safe()
    }

    /// Refuses ([`CliError::UnsafeDepot`]) a depot that a user other than root and the
    /// caller could change: root writes in it (`exitcode`, `container.json`, runc's
    /// state), and whoever can rename or replace an entry on the way could steer those
    /// writes. The depot must be owned by root or the caller and not be writable by group
    /// or others; so must each directory above it, except that a sticky one (such as
    /// `/tmp`) may be, since nobody else can rename or remove what it holds; and so must
    /// runc's root. Checked on the path as given and on the path it resolves to. A missing
    /// depot (or runc root) is fine: there is nothing in it yet.
    pub fn check_safe(&self) -> CliResult<()> {
        check_tree_safe(&self.root)?;
        // runc's state, which root's runc trusts, likewise (inside the depot by default).
        check_tree_safe(&self.runc_root)
    }

    /// Creates the container's directory and its `processes/` (0711 exactly).
    /// [`CliError::Exists`] if the container's directory exists.
    pub fn create_container_dirs(&self, id: &str) -> CliResult<()> {
        let cdir = self.container_dir(id);
        if !mkdir_exact(&cdir, DIR_MODE)? {
            return Err(CliError::Exists {
                what: format!("container {id:?}"),
                path: cdir,
            });
        }
        let pinned = PinnedDir::open(&cdir).map_err(CliError::fifo)?;
        let procs = pinned.path().join(PROCESSES);
        if !mkdir_exact(&procs, DIR_MODE)? {
            return Err(CliError::Failed(format!(
                "{} appeared while it was being made",
                self.processes_dir(id).display()
            )));
        }
        Ok(())
    }

    /// The process directory of an existing process; the init's when `process` is None.
    pub fn process_dir(&self, id: &str, process: Option<&str>) -> CliResult<ProcessDir> {
        let meta = self.container(id)?;
        if process.is_none() && meta.external.is_some() {
            return Err(CliError::Usage(format!(
                "container {id:?} is run by another runtime (its init is not supervised \
                 here): name one of its processes"
            )));
        }
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
        self.check_safe()?;
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

/// Makes the directory `path` with permission bits exactly `mode` (the umask does not
/// apply: they are set again through a descriptor of the new directory). False if it
/// already existed (left untouched).
fn mkdir_exact(path: &Path, mode: u32) -> CliResult<bool> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(CliError::io("mkdir", path, &e)),
    }
    PinnedDir::open(path)
        .and_then(|d| d.chmod(mode))
        .map_err(CliError::fifo)?;
    Ok(true)
}

/// [`check_dir_safe`] for `dir` (if it exists) and every directory above it, on the path
/// as given and as resolved.
fn check_tree_safe(dir: &Path) -> CliResult<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    for path in [dir, real.as_path()] {
        check_dir_safe(path, true)?;
        for a in path.ancestors().skip(1) {
            check_dir_safe(a, false)?;
        }
        if real == dir {
            break;
        }
    }
    Ok(())
}

/// Whether a user other than root and us could rename, remove or create entries in the
/// directory `dir` (`last`: the depot or a directory in it, where a sticky bit does not
/// excuse group or other write permission).
fn check_dir_safe(dir: &Path, last: bool) -> CliResult<()> {
    let meta = std::fs::metadata(dir).map_err(|e| CliError::io("stat", dir, &e))?;
    let us = nix::unistd::geteuid().as_raw();
    let unsafe_because = if meta.uid() != 0 && meta.uid() != us {
        Some(format!("{} is owned by uid {}", dir.display(), meta.uid()))
    } else if meta.mode() & 0o022 != 0 && (last || meta.mode() & 0o1000 == 0) {
        Some(format!(
            "{} is writable by {} (mode {:04o})",
            dir.display(),
            if meta.mode() & 0o002 != 0 {
                "every user"
            } else {
                "its group"
            },
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match unsafe_because {
        None => Ok(()),
        Some(why) => Err(CliError::UnsafeDepot(format!(
            "{why}: a user other than root{} could redirect what is written in the depot; \
             make it (and its parents) owned by root and not writable by group or others",
            if us == 0 {
                String::new()
            } else {
                format!(" and uid {us}")
            }
        ))),
    }
}

/// The pid of the supervisor of the process in `dir`, if it is still alive (its command
/// line names the directory, so a recycled pid is not mistaken for it).
pub fn live_supervisor(dir: &ProcessDir) -> Option<i32> {
    live(dir, SUPERVISOR_PID)
}

/// The pid of the keeper of the process in `dir`, if it is still alive (a fork of the
/// supervisor: the same command line).
pub fn live_keeper(dir: &ProcessDir) -> Option<i32> {
    live(dir, KEEPER_PID)
}

/// The pid in `dir/file`, if a live process has it whose command line is a supervisor's
/// of `dir` (a zombie's is empty: not live).
fn live(dir: &ProcessDir, file: &str) -> Option<i32> {
    let text = std::fs::read_to_string(dir.path().join(file)).ok()?;
    let pid: i32 = text.trim().parse().ok().filter(|p| *p > 0)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    let needle = dir.path().to_string_lossy();
    (cmdline.contains("supervise") && cmdline.contains(needle.as_ref())).then_some(pid)
}

//! The operator command's side for standalone supervisors (`upgrade --depot DIR`): finds
//! the supervisors of a depot's process directories (each names its supervisor in
//! `supervisor.pid`, checked against the process's command line) and asks each one over
//! its `upgrade.sock` ([`super::wire`]).

use super::wire::{self, WireError};
use crate::containerd::upgrade::protocol::{UpgradeReport, UpgradeRequest};
use crate::standalone::depot::{self, Depot};
use crate::standalone::errors::CliResult;
use std::path::PathBuf;
use std::time::Duration;

/// A process directory of the depot, and the pid of its supervisor if one runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisedProcess {
    pub container: String,
    pub process: String,
    pub dir: PathBuf,
    /// `None`: no supervisor runs (the process exited and its output was read, or the
    /// supervisor was killed and a keeper has the process).
    pub supervisor: Option<i32>,
}

impl SupervisedProcess {
    /// `container/process (pid N)`, as the command names it.
    pub fn name(&self) -> String {
        match self.supervisor {
            Some(pid) => format!("{}/{} (pid {pid})", self.container, self.process),
            None => format!("{}/{}", self.container, self.process),
        }
    }
}

/// The process directories of `container` (every container's when `None`), or only
/// `process`'s, each with its supervisor. Errors: an unsafe depot (as every command
/// refuses one), a container or process that does not exist.
pub fn processes(
    depot: &Depot,
    container: Option<&str>,
    process: Option<&str>,
) -> CliResult<Vec<SupervisedProcess>> {
    let containers = match container {
        Some(c) => {
            depot.container(c)?;
            vec![c.to_string()]
        }
        None => depot.container_ids()?,
    };
    let mut found = Vec::new();
    for c in containers {
        let ids = match process {
            Some(p) => vec![p.to_string()],
            None => depot.process_ids(&c)?,
        };
        for p in ids {
            let dir = depot.process_dir(&c, Some(&p))?;
            found.push(SupervisedProcess {
                supervisor: depot::live_supervisor(&dir),
                container: c.clone(),
                process: p,
                dir: dir.path().to_path_buf(),
            });
        }
    }
    Ok(found)
}

/// Why a supervisor could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("{dir} has no {socket}: its supervisor predates live upgrades", socket = wire::SOCKET)]
    TooOld { dir: std::path::PathBuf },
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Asks the supervisor of `p` to upgrade; waits up to `wait` for its answer.
pub fn ask(
    p: &SupervisedProcess,
    request: &UpgradeRequest,
    wait: Duration,
) -> Result<UpgradeReport, AskError> {
    match wire::ask(&p.dir, request, wait) {
        Ok(r) => Ok(r),
        Err(WireError::Path { source, .. })
            if source.raw_os_error() == Some(libc::ENOENT) && p.supervisor.is_some() =>
        {
            Err(AskError::TooOld { dir: p.dir.clone() })
        }
        Err(e) => Err(AskError::Wire(e)),
    }
}

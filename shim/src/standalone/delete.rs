//! `delete`: remove a container (runc delete), end its supervisors and remove its depot
//! directory with every process directory in it.

use super::args::{self, Spec};
use super::depot::{live_supervisor, Depot};
use super::errors::{CliError, CliResult};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use runc_wrapper::ContainerStatus;
use std::time::{Duration, Instant};

/// `delete --help`.
pub const USAGE: &str = "\
usage: containerd-shim-tether-v2 delete [--force] CONTAINER-ID

Deletes the container with runc, stops its supervisors (output nobody read is dropped)
and removes <depot>/CONTAINER-ID with every process directory. A running container is
refused unless --force, which kills its processes first.";

const SPEC: Spec = Spec {
    valued: &[],
    flags: &[("--force", Some("-f"))],
};

/// How long supervisors get to go after their processes died.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(5);

/// Runs the subcommand.
pub fn main(depot: &Depot, argv: &[String]) -> CliResult<()> {
    let p = args::parse(argv, SPEC)?;
    let pos = p.positionals(1, 1, USAGE)?;
    let id = pos[0].as_str();
    let force = p.flag("--force");
    depot.container(id)?;
    let runc = depot.runc(None, None);
    match runc.state(id) {
        Ok(s) => {
            let live = matches!(
                s.status,
                ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Creating
            );
            if live && !force {
                return Err(CliError::Running(format!(
                    "container {id:?} is {}: stop it first or use --force",
                    s.status
                )));
            }
            match runc.delete(id, force) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(CliError::runc(e)),
            }
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(CliError::runc(e)),
    }
    stop_supervisors(depot, id)?;
    let cdir = depot.container_dir(id);
    std::fs::remove_dir_all(&cdir).map_err(|e| CliError::io("remove", &cdir, &e))
}

/// SIGTERMs every live supervisor of the container until it is gone (a supervisor ignores
/// SIGTERM until its process has been reaped), SIGKILL after a grace period.
fn stop_supervisors(depot: &Depot, id: &str) -> CliResult<()> {
    let deadline = Instant::now() + SUPERVISOR_GRACE;
    loop {
        let mut live = Vec::new();
        for p in depot.process_ids(id)? {
            if let Ok(dir) = depot.process_dir(id, Some(&p)) {
                if let Some(pid) = live_supervisor(&dir) {
                    live.push(pid);
                }
            }
        }
        if live.is_empty() || Instant::now() >= deadline + SUPERVISOR_GRACE {
            return Ok(());
        }
        let signal = if Instant::now() >= deadline {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        for pid in &live {
            let _ = kill(Pid::from_raw(*pid), signal);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

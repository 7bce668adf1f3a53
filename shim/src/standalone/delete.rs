//! `delete`: remove a container (runc delete), end its supervisors and remove its depot
//! directory with every process directory in it.

use super::args::{self, Spec};
use super::depot::{live_supervisor, Depot};
use super::errors::{CliError, CliResult};
use crate::supervisor::pidfd;
use fifo::Fate;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use runc_wrapper::ContainerStatus;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// `delete --help`.
pub const USAGE: &str = "\
usage: containerd-shim-tether-v2 delete [--force] CONTAINER-ID

Deletes the container with runc, stops its supervisors (output nobody read is dropped)
and removes <depot>/CONTAINER-ID with every process directory. A running container is
refused unless --force, which kills its processes first. A container runc no longer knows
(its state was removed) whose processes still run (checked against their recorded start
time, so a recycled pid is never hit) is refused too, and --force kills them (SIGKILL
through a pidfd) and waits for them to be gone.";

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
        // runc no longer knows it (its state was lost or removed behind our back): its
        // processes may still run, and only the depot can tell.
        Err(e) if e.is_not_found() => kill_orphans(depot, id, force)?,
        Err(e) => return Err(CliError::runc(e)),
    }
    stop_supervisors(depot, id)?;
    let cdir = depot.container_dir(id);
    std::fs::remove_dir_all(&cdir).map_err(|e| CliError::io("remove", &cdir, &e))
}

/// How long killed processes get to be gone.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// The container is unknown to runc: its processes that still run (by the depot's
/// records: pid and start time) are refused without `force`, SIGKILLed with it; returns
/// once they are gone. An error, and nothing removed, if one cannot be killed.
fn kill_orphans(depot: &Depot, id: &str, force: bool) -> CliResult<()> {
    let mut running = Vec::new();
    for p in depot.process_ids(id)? {
        let dir = depot.process_dir(id, Some(&p))?;
        if let Ok(Fate::Running(pid)) = dir.fate() {
            running.push((p, pid, dir));
        }
    }
    if running.is_empty() {
        return Ok(());
    }
    let list = running
        .iter()
        .map(|(p, pid, _)| format!("{p:?} (pid {pid})"))
        .collect::<Vec<_>>()
        .join(", ");
    if !force {
        return Err(CliError::Running(format!(
            "runc no longer knows container {id:?} but its processes {list} still run: \
             use --force to kill them"
        )));
    }
    let mut pidfds = Vec::new();
    for (p, pid, dir) in &running {
        // The pidfd pins the process; the start time, checked after, says it is ours.
        let Ok(fd) = pidfd::open(*pid) else { continue };
        let ours = matches!(dir.read_start(), Ok(Some(s)) if s.pid == *pid && s.is_running());
        if !ours {
            continue;
        }
        match pidfd::send_signal(&fd, libc::SIGKILL) {
            Ok(()) => pidfds.push(fd),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => {
                return Err(CliError::Failed(format!(
                    "runc no longer knows container {id:?}; cannot kill its process {p:?} \
                     (pid {pid}): {e}"
                )))
            }
        }
    }
    let deadline = Instant::now() + KILL_TIMEOUT;
    for fd in &pidfds {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0) {
            return Err(CliError::Failed(format!(
                "runc no longer knows container {id:?}; its processes {list} were killed \
                 but are still there after {KILL_TIMEOUT:?}"
            )));
        }
    }
    Ok(())
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

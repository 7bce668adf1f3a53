//! `delete`: remove a container (runc delete), end its supervisors and remove its depot
//! directory with every process directory in it; or remove one process directory (and a
//! pea's runc container).

use super::args::{self, Spec};
use super::depot::{live_keeper, live_supervisor, Depot};
use super::errors::{CliError, CliResult};
use super::pea::PeaRecord;
use crate::process_core::pidfd;
use fifo::Fate;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use runc_wrapper::ContainerStatus;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// `delete --help`.
pub const USAGE: &str = "\
usage: containerd-shim-tether-v2 delete [--force] CONTAINER-ID [PROCESS-ID]

Deletes the container with runc, stops its supervisors (output nobody read is dropped;
a manager still taking spooled output gets up to 10 s to take it) and removes
<depot>/CONTAINER-ID with every process directory. A running container is refused
unless --force, which kills its processes first. A container runc no longer knows
(its state was removed) whose processes still run (checked against their recorded start
time, so a recycled pid is never hit) is refused too, and --force kills them (SIGKILL
through a pidfd) and waits for them to be gone. The runc containers of its peas are
deleted with it. A container another runtime runs (external, see exec --help) is never
deleted with runc: only the depot entry goes, and its processes started here (refused
while they run, killed with --force).

With PROCESS-ID (not the init's: that goes with its container) only that process goes:
refused while it runs unless --force, which kills it (SIGKILL through a pidfd) and waits;
then its supervisor is stopped, a pea's runc container deleted, and its directory
removed.";

const SPEC: Spec = Spec {
    valued: &[],
    flags: &[("--force", Some("-f"))],
};

/// How long supervisors get to go after their processes died: longer than a supervisor
/// waits for a manager that is taking its spooled output (`DELETE_LINGER`).
const SUPERVISOR_GRACE: Duration =
    crate::process_core::process_stdio::DELETE_LINGER.saturating_add(Duration::from_secs(2));

/// Runs the subcommand.
pub fn main(depot: &Depot, argv: &[String]) -> CliResult<()> {
    let p = args::parse(argv, SPEC)?;
    let pos = p.positionals(1, 2, USAGE)?;
    let id = pos[0].as_str();
    let force = p.flag("--force");
    let meta = depot.container(id)?;
    let cdepot = depot.for_container(&meta);
    if let Some(process) = pos.get(1) {
        if *process == meta.init && meta.external.is_none() {
            return Err(CliError::Usage(format!(
                "{process:?} is the init of container {id:?}: delete the container"
            )));
        }
        return delete_process(&cdepot, id, process, force);
    }
    let runc = cdepot.runc(None, None);
    if meta.external.is_some() {
        // The container is another runtime's: only what was started here goes.
        kill_orphans(depot, id, force, "it is run by another runtime")?;
        return finish(depot, id);
    }
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
        Err(e) if e.is_not_found() => kill_orphans(depot, id, force, "runc no longer knows it")?,
        Err(e) => return Err(CliError::runc(e)),
    }
    delete_peas(&cdepot, id)?;
    finish(depot, id)
}

/// One process: killed if it runs (with `force`), its supervisor stopped, a pea's runc
/// container deleted, its directory removed.
fn delete_process(depot: &Depot, id: &str, process: &str, force: bool) -> CliResult<()> {
    let dir = depot.process_dir(id, Some(process))?;
    if let Ok(Fate::Running(pid)) = dir.fate() {
        let running = vec![(process.to_string(), pid, dir.clone())];
        kill_running(id, running, force, "deleting a process of it")?;
    }
    if let Some(rec) = PeaRecord::read(dir.path()) {
        delete_pea(depot, &rec)?;
    }
    stop_supervisors_of(std::slice::from_ref(&dir));
    dir.remove().map_err(CliError::fifo)
}

/// Stops the container's supervisors and removes its depot directory.
fn finish(depot: &Depot, id: &str) -> CliResult<()> {
    stop_supervisors(depot, id)?;
    let cdir = depot.container_dir(id);
    std::fs::remove_dir_all(&cdir).map_err(|e| CliError::io("remove", &cdir, &e))
}

/// Deletes the runc containers of the container's peas (killing what is left in them):
/// each pea's supervisor does so when its pea exits, which the outer init's end causes,
/// but a supervisor that was killed would leave them.
fn delete_peas(depot: &Depot, id: &str) -> CliResult<()> {
    for p in depot.process_ids(id)? {
        if let Some(rec) = PeaRecord::read(&depot.processes_dir(id).join(&p)) {
            delete_pea(depot, &rec)?;
        }
    }
    Ok(())
}

/// `runc delete --force` of a pea's runc container; gone already is fine.
fn delete_pea(depot: &Depot, rec: &PeaRecord) -> CliResult<()> {
    let runc = depot.runc(None, None);
    if let Err(e) = runc.delete(&rec.runc_id, true) {
        // Its supervisor may have deleted it at the same moment.
        match runc.state(&rec.runc_id) {
            Err(gone) if gone.is_not_found() => {}
            _ => return Err(CliError::runc(e)),
        }
    }
    Ok(())
}

/// How long killed processes get to be gone.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// The container is unknown to runc (or another runtime's, `why` says): its processes that still run (by the depot's
/// records: pid and start time) are refused without `force`, SIGKILLed with it; returns
/// once they are gone. An error, and nothing removed, if one cannot be killed.
fn kill_orphans(depot: &Depot, id: &str, force: bool, why: &str) -> CliResult<()> {
    let mut running = Vec::new();
    for p in depot.process_ids(id)? {
        let dir = depot.process_dir(id, Some(&p))?;
        if let Ok(Fate::Running(pid)) = dir.fate() {
            running.push((p, pid, dir));
        }
    }
    kill_running(id, running, force, why)
}

/// Refuses `running` (process id, pid, directory) without `force`; SIGKILLs them with it
/// and returns once they are gone.
fn kill_running(
    id: &str,
    running: Vec<(String, i32, fifo::ProcessDir)>,
    force: bool,
    why: &str,
) -> CliResult<()> {
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
            "container {id:?} ({why}): its processes {list} still run: use --force to \
             kill them"
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
                    "container {id:?} ({why}): cannot kill its process {p:?} (pid {pid}): {e}"
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
                "container {id:?} ({why}): its processes {list} were killed but are still \
                 there after {KILL_TIMEOUT:?}"
            )));
        }
    }
    Ok(())
}

/// SIGTERMs every live supervisor of the container until it is gone (a supervisor ignores
/// SIGTERM until its process has been reaped), SIGKILL after a grace period.
fn stop_supervisors(depot: &Depot, id: &str) -> CliResult<()> {
    let mut dirs = Vec::new();
    for p in depot.process_ids(id)? {
        if let Ok(dir) = depot.process_dir(id, Some(&p)) {
            dirs.push(dir);
        }
    }
    stop_supervisors_of(&dirs);
    Ok(())
}

/// [`stop_supervisors`] for the processes in `dirs`, and their keepers (which likewise
/// wait for a reader after the exit, when their supervisor was killed).
fn stop_supervisors_of(dirs: &[fifo::ProcessDir]) {
    let deadline = Instant::now() + SUPERVISOR_GRACE;
    loop {
        let live: Vec<i32> = dirs
            .iter()
            .flat_map(|d| [live_supervisor(d), live_keeper(d)])
            .flatten()
            .collect();
        if live.is_empty() || Instant::now() >= deadline + SUPERVISOR_GRACE {
            return;
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

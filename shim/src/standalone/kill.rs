//! `kill`: signal a container's init (through runc) or one of its exec processes
//! (through a pidfd, and only while it has no exit code).

use super::args::{self, Spec};
use super::depot::Depot;
use super::errors::{CliError, CliResult};
use super::pea::PeaRecord;
use crate::process_core::pidfd;
use nix::sys::signal::Signal;
use std::str::FromStr;

/// `kill --help`.
pub const USAGE: &str = "\
usage: containerd-shim-tether-v2 kill [--signal SIG] [--all] CONTAINER-ID [PROCESS-ID]

Sends SIG (a number or a name such as TERM or SIGKILL; default TERM) to the process
(default: the container's init, through `runc kill`; --all: every process of the
container). An exec process or a pea is signalled through a pidfd, and only while it has
no exitcode, so a recycled pid is never hit; --all with a pea signals every process of
its own runc container.";

const SPEC: Spec = Spec {
    valued: &[("--signal", Some("-s"))],
    flags: &[("--all", Some("-a"))],
};

/// Parses `9`, `KILL` or `SIGKILL`.
pub fn parse_signal(text: &str) -> CliResult<i32> {
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n)
            .map(|s| s as i32)
            .map_err(|_| CliError::Usage(format!("invalid signal {text:?}")));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name)
        .map(|s| s as i32)
        .map_err(|_| CliError::Usage(format!("invalid signal {text:?}")))
}

/// Runs the subcommand.
pub fn main(depot: &Depot, argv: &[String]) -> CliResult<()> {
    let p = args::parse(argv, SPEC)?;
    let pos = p.positionals(1, 2, USAGE)?;
    let id = pos[0].as_str();
    let signal = parse_signal(p.value("--signal").unwrap_or("TERM"))?;
    let meta = depot.container(id)?;
    if meta.external.is_some() && (pos.len() < 2 || p.flag("--all")) {
        return Err(CliError::Usage(format!(
            "container {id:?} is run by another runtime: only the processes started here are \
             signalled here (name one; no --all)"
        )));
    }
    let process = pos.get(1).map(String::as_str).unwrap_or(&meta.init);
    let dir = depot.process_dir(id, Some(process));
    let pea = dir.as_ref().ok().and_then(|d| PeaRecord::read(d.path()));
    if let (Some(pea), true) = (pea, p.flag("--all")) {
        // Every process of the pea's own runc container.
        return depot
            .runc(None, None)
            .kill(&pea.runc_id, signal, true)
            .map_err(|e| not_running_or(e, &pea.runc_id));
    }
    if process == meta.init || p.flag("--all") {
        return depot
            .runc(None, None)
            .kill(id, signal, p.flag("--all"))
            .map_err(|e| not_running_or(e, id));
    }
    let dir = dir?;
    let exited = || -> CliResult<bool> { Ok(dir.read_exit().map_err(CliError::fifo)?.is_some()) };
    let gone = || {
        CliError::NotFound(format!(
            "process {process:?} of container {id:?} has exited"
        ))
    };
    if exited()? {
        return Err(gone());
    }
    let pid = dir
        .read_pid()
        .map_err(CliError::fifo)?
        .ok_or_else(|| CliError::NotFound(format!("process {process:?} has no pid yet")))?;
    let fd = pidfd::open(pid).map_err(|_| gone())?;
    // The pidfd pins the process: if it still has no exit code, and (when recorded) it
    // started when ours did, it is ours.
    let started_as_ours = match dir.read_start().map_err(CliError::fifo)? {
        Some(start) => start.pid == pid && start.is_running(),
        None => true,
    };
    if exited()? || !started_as_ours {
        return Err(gone());
    }
    pidfd::send_signal(&fd, signal).map_err(|e| match e.raw_os_error() {
        Some(libc::ESRCH) => gone(),
        _ => CliError::Failed(format!("signal process {pid}: {e}")),
    })
}

/// runc's "not running" ([`runc_wrapper::ErrorKind::NotRunning`]) as
/// [`CliError::NotFound`].
fn not_running_or(e: runc_wrapper::Error, id: &str) -> CliError {
    match e.kind() {
        runc_wrapper::ErrorKind::NotRunning => {
            CliError::NotFound(format!("container {id:?} is not running"))
        }
        _ => CliError::runc(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}

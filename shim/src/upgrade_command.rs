//! `containerd-shim-tether-v2 upgrade`: the operator's command, for both faces. It asks
//! running tether shims (found by their command lines in /proc, asked over their own
//! sockets: `containerd::upgrade::command`), or with `--depot` the standalone supervisors
//! of a depot (found by the `supervisor.pid` of each process directory, asked over its
//! `upgrade.sock`: `standalone::upgrade::ask`), to move onto the new binary, and prints
//! one line for each: the old and the new version and how long it paused, or why it
//! refused.
//!
//! ```text
//! containerd-shim-tether-v2 upgrade [--namespace NS] (--id ID | --all)
//!                                   [--binary PATH] [--timeout DURATION]
//! containerd-shim-tether-v2 upgrade --depot DIR (--id CONTAINER [--process P] | --all)
//!                                   [--binary PATH] [--timeout DURATION]
//! ```
//! Exit status: 0 when every one asked moved, 1 when one refused, rolled back or could not
//! be asked (or none matched), 2 for a bad command line.

use crate::containerd::upgrade::command::{self as shims, RunningShim};
use crate::containerd::upgrade::protocol::{Fault, Outcome, UpgradeReport, UpgradeRequest};
use crate::standalone::depot::Depot;
use crate::standalone::upgrade::ask as supervisors;
use std::path::PathBuf;
use std::time::Duration;

/// How long a shim waits for its calls in flight unless told otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than the shim's own bound the command waits for the answer (the dry
/// run, the `execve` and the new image's start).
const ANSWER_SLACK: Duration = Duration::from_secs(30);
/// The name of the binary, in messages.
const BINARY_NAME: &str = "containerd-shim-tether-v2";

/// The command line, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Args {
    pub namespace: Option<String>,
    /// The standalone supervisors of this depot rather than shims.
    pub depot: Option<PathBuf>,
    /// A shim's id; with `--depot`, a container's.
    pub id: Option<String>,
    /// With `--depot` and `--id`: one process of the container.
    pub process: Option<String>,
    pub all: bool,
    pub binary: Option<PathBuf>,
    pub timeout: Option<Duration>,
    /// `--fault abort-after-exec | fail-after-exec`: the new image aborts, or fails to
    /// take the state over, once it has it (tests of the rollback).
    pub fault: Option<Fault>,
}

/// Why the command line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("--timeout {0:?}: give a duration such as 10s, 1500ms or 2m")]
    BadTimeout(String),
    #[error("name the shim with --id ID (with --depot: the container), or ask for --all")]
    NoTarget,
    #[error("--id and --all exclude each other")]
    BothTargets,
    #[error("--process names a process of the container --id names in the --depot")]
    ProcessAlone,
    #[error("--namespace is a shim's, --depot a standalone supervisor's: give one")]
    NamespaceAndDepot,
    #[error("--fault fail-after-exec is for standalone supervisors (--depot) only")]
    FaultForSupervisors,
}

/// Parses `upgrade`'s arguments (after the word `upgrade`).
pub fn parse_args(args: &[String]) -> Result<Args, ArgsError> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| ArgsError::MissingValue(name.to_string()))
        };
        match name {
            "--namespace" | "-n" => a.namespace = Some(value()?),
            "--depot" => a.depot = Some(PathBuf::from(value()?)),
            "--id" => a.id = Some(value()?),
            "--process" => a.process = Some(value()?),
            "--all" => a.all = true,
            "--binary" => a.binary = Some(PathBuf::from(value()?)),
            "--fault" => match value()?.as_str() {
                "abort-after-exec" => a.fault = Some(Fault::AbortAfterExec),
                "fail-after-exec" => a.fault = Some(Fault::FailAfterExec),
                other => return Err(ArgsError::Unknown(format!("--fault {other}"))),
            },
            "--timeout" => {
                let v = value()?;
                a.timeout = Some(parse_duration(&v).ok_or(ArgsError::BadTimeout(v))?);
            }
            _ => return Err(ArgsError::Unknown(arg.clone())),
        }
    }
    if a.namespace.is_some() && a.depot.is_some() {
        return Err(ArgsError::NamespaceAndDepot);
    }
    if a.process.is_some() && (a.depot.is_none() || a.id.is_none()) {
        return Err(ArgsError::ProcessAlone);
    }
    if a.fault == Some(Fault::FailAfterExec) && a.depot.is_none() {
        return Err(ArgsError::FaultForSupervisors);
    }
    match (&a.id, a.all) {
        (None, false) => Err(ArgsError::NoTarget),
        (Some(_), true) => Err(ArgsError::BothTargets),
        _ => Ok(a),
    }
}

/// `10s`, `1500ms`, `2m`, or a number of seconds.
fn parse_duration(s: &str) -> Option<Duration> {
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        _ => None,
    }
}

/// Why a shim or supervisor the command line names was not asked, or found.
#[derive(Debug, thiserror::Error)]
pub enum NotAsked {
    #[error(transparent)]
    Shim(#[from] shims::AskError),
    #[error(transparent)]
    Supervisor(#[from] supervisors::AskError),
    #[error("no supervisor runs for {0} (the process has exited and its output was read, or the supervisor was killed and its keeper has the process)")]
    NoSupervisor(std::path::PathBuf),
    #[error("{0}")]
    Depot(String),
    #[error("no running supervisor matches")]
    NoSupervisorMatches,
    #[error("no running tether shim matches")]
    NoShimMatches,
}

/// One shim or supervisor to ask, or one named that cannot be asked (`Err`: why).
type Target = (String, Result<Asker, NotAsked>);
type Asker = Box<dyn FnOnce(&UpgradeRequest) -> Result<UpgradeReport, NotAsked>>;

/// The command; returns its exit status.
pub fn main(args: &[String]) -> u8 {
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{BINARY_NAME} upgrade: {e}");
            return 2;
        }
    };
    let timeout = a.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let targets = match &a.depot {
        Some(depot) => supervisor_targets(&a, depot, timeout + ANSWER_SLACK),
        None => Ok(shim_targets(&a)),
    };
    let targets = match targets {
        Ok(t) if t.is_empty() => Err(match a.depot {
            Some(_) => NotAsked::NoSupervisorMatches,
            None => NotAsked::NoShimMatches,
        }),
        other => other,
    };
    let targets = match targets {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{BINARY_NAME} upgrade: {e}");
            return 1;
        }
    };
    let request = UpgradeRequest {
        binary: a.binary.clone(),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        fault: a.fault,
    };
    let mut failed = false;
    for (name, asker) in targets {
        match asker.and_then(|ask| ask(&request)) {
            Ok(r) => {
                failed |= r.outcome != Outcome::Upgraded;
                println!("{name}: {}", describe(&r));
            }
            Err(e) => {
                failed = true;
                println!("{name}: not asked: {e}");
            }
        }
    }
    u8::from(failed)
}

/// The running shims the command line names.
fn shim_targets(a: &Args) -> Vec<Target> {
    shims::running_shims()
        .into_iter()
        .filter(|s| a.namespace.as_ref().is_none_or(|n| *n == s.namespace))
        .filter(|s| a.id.as_ref().is_none_or(|i| *i == s.id))
        .map(|s: RunningShim| {
            let name = format!("{}/{} (pid {})", s.namespace, s.id, s.pid);
            let ask: Asker = Box::new(move |r| Ok(shims::ask(&s.socket, r)?));
            (name, Ok(ask))
        })
        .collect()
}

/// The supervisors of the depot the command line names. A process named with
/// `--process` whose supervisor is gone is a target that cannot be asked; among the
/// processes of a container or the depot, such ones are left out (their process has
/// exited and its output was read: nothing runs to upgrade).
fn supervisor_targets(
    a: &Args,
    depot: &std::path::Path,
    wait: Duration,
) -> Result<Vec<Target>, NotAsked> {
    let depot = Depot::new(depot.to_path_buf(), None, None);
    let found = supervisors::processes(&depot, a.id.as_deref(), a.process.as_deref())
        .map_err(|e| NotAsked::Depot(e.to_string()))?;
    Ok(found
        .into_iter()
        .filter(|p| p.supervisor.is_some() || a.process.is_some())
        .map(|p| {
            let name = p.name();
            let asker: Result<Asker, NotAsked> = match p.supervisor {
                Some(_) => Ok(Box::new(move |r| Ok(supervisors::ask(&p, r, wait)?))),
                None => Err(NotAsked::NoSupervisor(p.dir.clone())),
            };
            (name, asker)
        })
        .collect())
}

/// A report as one line.
pub fn describe(r: &UpgradeReport) -> String {
    let pause = format!("{:.1} ms", r.pause_us as f64 / 1000.0);
    match &r.outcome {
        Outcome::Upgraded => format!(
            "{} -> {} ({}), paused {pause}",
            r.from,
            r.to,
            r.binary.display()
        ),
        Outcome::Refused(why) => format!("refused, still {}: {why}", r.from),
        Outcome::RolledBack(why) => {
            format!("rolled back to {} after {pause}: {why}", r.to)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn the_command_line() {
        let a = parse_args(&args(&["--all", "--binary", "/x", "--timeout=1500ms"])).unwrap();
        assert!(a.all);
        assert_eq!(a.binary, Some(PathBuf::from("/x")));
        assert_eq!(a.timeout, Some(Duration::from_millis(1500)));
        let a = parse_args(&args(&["-n", "k8s.io", "--id", "abc", "--timeout", "2m"])).unwrap();
        assert_eq!(
            (a.namespace.as_deref(), a.id.as_deref()),
            (Some("k8s.io"), Some("abc"))
        );
        assert_eq!(a.timeout, Some(Duration::from_secs(120)));
        assert_eq!(parse_args(&[]), Err(ArgsError::NoTarget));
        assert_eq!(
            parse_args(&args(&["--id", "a", "--all"])),
            Err(ArgsError::BothTargets)
        );
        assert_eq!(
            parse_args(&args(&["--timeout", "soon", "--all"])),
            Err(ArgsError::BadTimeout("soon".into()))
        );
        assert_eq!(
            parse_args(&args(&["--id"])),
            Err(ArgsError::MissingValue("--id".into()))
        );
        assert_eq!(
            parse_args(&args(&["--bogus"])),
            Err(ArgsError::Unknown("--bogus".into()))
        );
    }

    #[test]
    fn the_command_line_for_a_depot() {
        let a = parse_args(&args(&[
            "--depot",
            "/run/tether/depot",
            "--id",
            "web",
            "--process",
            "job1",
            "--fault",
            "fail-after-exec",
        ]))
        .unwrap();
        assert_eq!(a.depot, Some(PathBuf::from("/run/tether/depot")));
        assert_eq!(
            (a.id.as_deref(), a.process.as_deref()),
            (Some("web"), Some("job1"))
        );
        assert_eq!(a.fault, Some(Fault::FailAfterExec));
        assert!(parse_args(&args(&["--depot=/d", "--all"])).unwrap().all);
        assert_eq!(
            parse_args(&args(&["--depot", "/d", "--process", "p", "--all"])),
            Err(ArgsError::ProcessAlone)
        );
        assert_eq!(
            parse_args(&args(&["--id", "c", "--process", "p"])),
            Err(ArgsError::ProcessAlone)
        );
        assert_eq!(
            parse_args(&args(&["--depot", "/d", "-n", "k8s.io", "--all"])),
            Err(ArgsError::NamespaceAndDepot)
        );
        assert_eq!(
            parse_args(&args(&["--depot", "/d"])),
            Err(ArgsError::NoTarget)
        );
        assert_eq!(
            parse_args(&args(&["--all", "--fault", "fail-after-exec"])),
            Err(ArgsError::FaultForSupervisors)
        );
    }

    #[test]
    fn reports_read_as_one_line() {
        let mut r = UpgradeReport {
            pid: 7,
            from: "0.1.0 (a)".into(),
            to: "0.1.0 (b)".into(),
            binary: "/usr/local/bin/containerd-shim-tether-v2".into(),
            pause_us: 12_340,
            outcome: Outcome::Upgraded,
        };
        assert_eq!(
            describe(&r),
            "0.1.0 (a) -> 0.1.0 (b) (/usr/local/bin/containerd-shim-tether-v2), paused 12.3 ms"
        );
        r.outcome = Outcome::Refused("a call on c is in flight".into());
        assert_eq!(
            describe(&r),
            "refused, still 0.1.0 (a): a call on c is in flight"
        );
    }
}

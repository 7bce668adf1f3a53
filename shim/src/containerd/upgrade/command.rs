//! `containerd-shim-tether-v2 upgrade`: the operator's command. Finds the running tether
//! shims (every process running this binary's server, by its command line in /proc),
//! asks each chosen one to move onto the new binary over its own socket, and prints per
//! shim the old and the new version and how long it paused, or why it refused.
//!
//! ```text
//! containerd-shim-tether-v2 upgrade [--namespace NS] (--id ID | --all)
//!                                   [--binary PATH] [--timeout DURATION]
//! ```
//! Exit status: 0 when every shim asked moved, 1 when one refused, rolled back or could
//! not be asked, 2 for a bad command line.

use super::protocol::{Outcome, UpgradeReport, UpgradeRequest, METHOD, SERVICE};
use crate::containerd::flags::{self, Action};
use crate::containerd::ttrpc::codec::{self, MessageType};
use protobuf::Message;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// How long a shim waits for its calls in flight unless told otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than the shim's own bound the command waits for the answer (the dry
/// run, the `execve` and the new image's start).
const ANSWER_SLACK: Duration = Duration::from_secs(30);
/// The name of the binary (its servers' argv[0] ends so).
const BINARY_NAME: &str = "containerd-shim-tether-v2";

/// The command line, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Args {
    pub namespace: Option<String>,
    pub id: Option<String>,
    pub all: bool,
    pub binary: Option<PathBuf>,
    pub timeout: Option<Duration>,
    /// `--fault abort-after-exec`: the new image aborts once it has the state (tests of
    /// the rollback).
    pub fault: Option<super::protocol::Fault>,
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
    #[error("name the shim with --id ID, or ask for --all")]
    NoTarget,
    #[error("--id and --all exclude each other")]
    BothTargets,
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
            "--id" => a.id = Some(value()?),
            "--all" => a.all = true,
            "--binary" => a.binary = Some(PathBuf::from(value()?)),
            "--fault" => match value()?.as_str() {
                "abort-after-exec" => a.fault = Some(super::protocol::Fault::AbortAfterExec),
                other => return Err(ArgsError::Unknown(format!("--fault {other}"))),
            },
            "--timeout" => {
                let v = value()?;
                a.timeout = Some(parse_duration(&v).ok_or(ArgsError::BadTimeout(v))?);
            }
            _ => return Err(ArgsError::Unknown(arg.clone())),
        }
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

/// A running shim server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningShim {
    pub pid: u32,
    pub namespace: String,
    pub id: String,
    pub socket: PathBuf,
}

/// Every running tether shim server, by the command lines in /proc.
pub fn running_shims() -> Vec<RunningShim> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<RunningShim> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv: Vec<String> = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let argv0 = std::path::Path::new(argv.first()?).file_name()?.to_str()?;
            if !argv0.starts_with(BINARY_NAME) {
                return None;
            }
            let (f, action) = flags::parse(&argv[1..]).ok()?;
            if action != Action::Serve {
                return None;
            }
            let socket = match &f.socket {
                Some(s) => crate::containerd::address::parse_uri(s).ok()?,
                None => crate::containerd::address::socket_path(&f.address, &f.namespace, &f.id),
            };
            Some(RunningShim {
                pid,
                namespace: f.namespace,
                id: f.id,
                socket,
            })
        })
        .collect();
    found.sort_by(|a, b| (&a.namespace, &a.id).cmp(&(&b.namespace, &b.id)));
    found
}

/// Why a shim could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the shim: {0}")]
    Io(#[from] std::io::Error),
    #[error("reading the answer: {0}")]
    Frame(#[from] codec::ReadFrameError),
    #[error("the shim answered {code:?}: {message}")]
    Status { code: i32, message: String },
    #[error("the answer is not a report: {0}")]
    Report(String),
}

/// Asks the shim listening on `socket` to upgrade; returns its report.
pub fn ask(socket: &std::path::Path, request: &UpgradeRequest) -> Result<UpgradeReport, AskError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| AskError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    let wait = Duration::from_millis(request.timeout_ms) + ANSWER_SLACK;
    stream.set_read_timeout(Some(wait))?;
    let mut req = ttrpc::proto::Request::new();
    req.service = SERVICE.into();
    req.method = METHOD.into();
    req.payload = serde_json::to_vec(request).map_err(|e| AskError::Report(e.to_string()))?;
    let body = req
        .write_to_bytes()
        .map_err(|e| AskError::Report(e.to_string()))?;
    let frame = codec::frame(1, MessageType::Request, &body)
        .map_err(|e| AskError::Report(e.to_string()))?;
    stream.write_all(&frame)?;
    let (_, body) = codec::read_frame(&mut stream)?;
    let resp = ttrpc::proto::Response::parse_from_bytes(&body)
        .map_err(|e| AskError::Report(e.to_string()))?;
    let code = resp.status.code.value();
    if code != 0 {
        return Err(AskError::Status {
            code,
            message: resp.status.message.clone(),
        });
    }
    serde_json::from_slice(&resp.payload).map_err(|e| AskError::Report(e.to_string()))
}

/// The command; returns its exit status.
pub fn main(args: &[String]) -> u8 {
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{BINARY_NAME} upgrade: {e}");
            return 2;
        }
    };
    let shims: Vec<RunningShim> = running_shims()
        .into_iter()
        .filter(|s| a.namespace.as_ref().is_none_or(|n| *n == s.namespace))
        .filter(|s| a.id.as_ref().is_none_or(|i| *i == s.id))
        .collect();
    if shims.is_empty() {
        eprintln!("{BINARY_NAME} upgrade: no running tether shim matches");
        return 1;
    }
    let request = UpgradeRequest {
        binary: a.binary.clone(),
        timeout_ms: u64::try_from(a.timeout.unwrap_or(DEFAULT_TIMEOUT).as_millis())
            .unwrap_or(u64::MAX),
        fault: a.fault,
    };
    let mut failed = false;
    for s in &shims {
        let name = format!("{}/{} (pid {})", s.namespace, s.id, s.pid);
        match ask(&s.socket, &request) {
            Ok(r) => {
                let line = describe(&r);
                failed |= r.outcome != Outcome::Upgraded;
                println!("{name}: {line}");
            }
            Err(e) => {
                failed = true;
                println!("{name}: not asked: {e}");
            }
        }
    }
    u8::from(failed)
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

//! Starting a supervisor from `run`/`exec` and waiting for it to report.
//!
//! The supervisor is this same binary (`/proc/self/exe supervise ...`); the child we
//! spawn forks at once and stays as the supervisor's keeper (its parent), the supervisor
//! being the grandchild ([`super::keeper`]). The supervisor's stdout is the readiness
//! pipe: one line, `started <pid>` or `error <kind> <message>`, then EOF (it and the
//! keeper point their stdio at /dev/null). Its stdin carries an exec's process spec.

use super::errors::{CliError, CliResult};
use super::supervise::Plan;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

/// Longest readiness report read.
const MAX_REPORT: u64 = 64 * 1024;

/// Starts the supervisor for `plan` (with `spec` on its stdin) and returns the pid of the
/// process it started, or the error it reported.
pub fn launch(plan: &Plan, spec: &[u8]) -> CliResult<i32> {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.args(plan.to_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("TETHER_SUPERVISOR_STDERR").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .map_err(|e| CliError::Failed(format!("cannot start the supervisor: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A supervisor that died early closes the pipe: its report says why.
        let _ = stdin.write_all(spec);
    }
    let mut report = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = out.take(MAX_REPORT).read_to_string(&mut report);
    }
    let line = report.lines().next().unwrap_or_default();
    if let Some(pid) = line.strip_prefix("started ") {
        // The keeper and the supervisor live on; the keeper is reparented to init when we
        // exit.
        return pid
            .trim()
            .parse()
            .map_err(|_| CliError::Failed(format!("supervisor reported {line:?}")));
    }
    // The keeper exits with the supervisor's status once the supervisor has failed.
    let status = child.wait().ok();
    if let Some(rest) = line.strip_prefix("error ") {
        let (kind, message) = rest.split_once(' ').unwrap_or((rest, ""));
        return Err(CliError::from_kind(kind, message.to_string()));
    }
    Err(CliError::Failed(format!(
        "the supervisor exited without reporting ({})",
        status.map_or_else(|| "unknown status".to_string(), |s| s.to_string())
    )))
}

//! The standalone CLI's one error type, and the exit code of each kind of failure.
//!
//! A manager tells failures apart by exit code alone: every variant maps to a distinct
//! code, listed in `--help` (see [`EXIT_CODES_HELP`]). `wait` and `attach` exit with the
//! process's own exit code on success, so a manager that must tell the two apart uses
//! `--json` (success prints a JSON object on stdout; a failure prints nothing there).

use std::path::PathBuf;

/// Exit code: bad command line.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the process or container id is taken.
pub const EXIT_EXISTS: u8 = 120;
/// Exit code: no such container or process (or the container is gone / not running).
pub const EXIT_NOT_FOUND: u8 = 121;
/// Exit code: the bundle is not an OCI bundle, or the process spec is not a process.
pub const EXIT_INVALID_SPEC: u8 = 122;
/// Exit code of `wait`/`attach`/`close-stdin`: the supervisor and its keeper are gone
/// (SIGKILLed?) and the process still runs, unsupervised: its exit code will never be
/// recorded.
pub const EXIT_UNSUPERVISED: u8 = 116;
/// Exit code of `wait`/`attach`/`close-stdin`: the supervisor and its keeper are gone and
/// so is the process, its exit status unrecorded: lost.
pub const EXIT_STATUS_LOST: u8 = 117;
/// Exit code: the depot is unsafe: a user other than root (and the caller) could change it.
pub const EXIT_UNSAFE_DEPOT: u8 = 118;
/// Exit code: the depot (or a directory in it) may not be written by the caller.
pub const EXIT_PERMISSION: u8 = 123;
/// Exit code: the container is still running (`delete` without `--force`).
pub const EXIT_RUNNING: u8 = 124;
/// Exit code: runc failed, or another I/O error.
pub const EXIT_FAILURE: u8 = 125;
/// Exit code of `attach` when the detach keys were typed: not a failure (the process
/// runs on, a later `attach` continues), but distinct from every failure above.
pub const EXIT_DETACHED: u8 = 119;

/// The exit-code table printed by every `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success (wait, attach: the process's own exit code, 128+N if killed by signal N)
  2    usage error
  116  wait, attach, close-stdin: the supervisor and its keeper were killed; the process still
       runs (pid on stderr), unsupervised: its output is no longer delivered, its exit code
       never recorded (a supervisor killed alone is replaced by its keeper: no error)
  117  wait, attach, close-stdin: the supervisor and its keeper were killed and the process is
       gone: its status is lost
  118  the depot (or runc's root) is unsafe: owned by, or writable by, a user other than
       root and the caller
  119  attach: detached with the detach keys (the process keeps running)
  120  the container or process id already exists
  121  no such container or process, or the container is not running
  122  not an OCI bundle / not a valid process spec / a --share kind the container lacks
  123  permission denied on the depot (or a read-only file system)
  124  the container is still running (delete without --force)
  125  runc or the supervisor failed, or another I/O error";

/// Everything the standalone CLI reports as a failure.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad command line.
    #[error("{0}")]
    Usage(String),
    /// A container or process id that is taken.
    #[error("{what} already exists ({})", path.display())]
    Exists {
        /// "container \"x\"" or "process \"y\" of container \"x\"".
        what: String,
        /// Where it lives.
        path: PathBuf,
    },
    /// No such container/process, or the container is not running.
    #[error("{0}")]
    NotFound(String),
    /// Not a bundle, or a bad process spec.
    #[error("{0}")]
    InvalidSpec(String),
    /// The caller may not write where it must.
    #[error("permission denied: {0}")]
    Permission(String),
    /// The supervisor is gone and the process runs on without it.
    #[error("{0}")]
    Unsupervised(String),
    /// The supervisor is gone and the process too, its exit status unrecorded.
    #[error("{0}")]
    StatusLost(String),
    /// A depot another user could change (owner or mode).
    #[error("unsafe depot: {0}")]
    UnsafeDepot(String),
    /// `delete` of a running container without `--force`.
    #[error("{0}")]
    Running(String),
    /// runc or the supervisor failed, or an I/O error.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Exists { .. } => EXIT_EXISTS,
            CliError::NotFound(_) => EXIT_NOT_FOUND,
            CliError::InvalidSpec(_) => EXIT_INVALID_SPEC,
            CliError::Permission(_) => EXIT_PERMISSION,
            CliError::Unsupervised(_) => EXIT_UNSUPERVISED,
            CliError::StatusLost(_) => EXIT_STATUS_LOST,
            CliError::UnsafeDepot(_) => EXIT_UNSAFE_DEPOT,
            CliError::Running(_) => EXIT_RUNNING,
            CliError::Failed(_) => EXIT_FAILURE,
        }
    }

    /// A short machine-readable name of the kind (sent over the readiness pipe).
    pub fn kind(&self) -> &'static str {
        match self {
            CliError::Usage(_) => "usage",
            CliError::Exists { .. } => "exists",
            CliError::NotFound(_) => "not-found",
            CliError::InvalidSpec(_) => "invalid-spec",
            CliError::Permission(_) => "permission",
            CliError::Unsupervised(_) => "unsupervised",
            CliError::StatusLost(_) => "status-lost",
            CliError::UnsafeDepot(_) => "unsafe-depot",
            CliError::Running(_) => "running",
            CliError::Failed(_) => "failed",
        }
    }

    /// Rebuilds an error from [`CliError::kind`] and its message (the readiness pipe).
    pub fn from_kind(kind: &str, message: String) -> Self {
        match kind {
            "usage" => CliError::Usage(message),
            "exists" => CliError::Exists {
                what: message,
                path: PathBuf::new(),
            },
            "not-found" => CliError::NotFound(message),
            "invalid-spec" => CliError::InvalidSpec(message),
            "permission" => CliError::Permission(message),
            "unsupervised" => CliError::Unsupervised(message),
            "status-lost" => CliError::StatusLost(message),
            "unsafe-depot" => CliError::UnsafeDepot(message),
            "running" => CliError::Running(message),
            _ => CliError::Failed(message),
        }
    }

    /// An I/O failure on `path` while doing `what`: EACCES/EPERM/EROFS become
    /// [`CliError::Permission`], everything else [`CliError::Failed`].
    pub fn io(what: &str, path: &std::path::Path, e: &std::io::Error) -> Self {
        let msg = format!("{what} {}: {e}", path.display());
        match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => CliError::Permission(msg),
            _ => CliError::Failed(msg),
        }
    }

    /// A failed runc call: "does not exist" becomes [`CliError::NotFound`].
    pub fn runc(e: runc_wrapper::Error) -> Self {
        if e.is_not_found() {
            CliError::NotFound(e.to_string())
        } else {
            CliError::Failed(e.to_string())
        }
    }

    /// [`CliError::fifo`] for an operation on `real`, done through a pinned directory
    /// (whose `/proc/PID/fd/N/...` path would mean nothing to users).
    pub fn fifo_at(e: fifo::Error, real: &std::path::Path) -> Self {
        match e {
            fifo::Error::Io { op, source, .. } => CliError::io(op, real, &source),
            other => CliError::fifo(other),
        }
    }

    /// A failure of the `fifo` crate (process directories).
    pub fn fifo(e: fifo::Error) -> Self {
        match &e {
            fifo::Error::InvalidId { .. } => CliError::Usage(e.to_string()),
            fifo::Error::NotFound { .. } => CliError::NotFound(e.to_string()),
            fifo::Error::Io { source, .. }
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
                ) =>
            {
                CliError::Permission(e.to_string())
            }
            _ => CliError::Failed(e.to_string()),
        }
    }
}

/// The CLI's result type.
pub type CliResult<T> = Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_kinds_round_trip() {
        let all = [
            CliError::Usage("u".into()),
            CliError::Exists {
                what: "e".into(),
                path: PathBuf::new(),
            },
            CliError::NotFound("n".into()),
            CliError::InvalidSpec("i".into()),
            CliError::Permission("p".into()),
            CliError::Unsupervised("s".into()),
            CliError::StatusLost("l".into()),
            CliError::UnsafeDepot("d".into()),
            CliError::Running("r".into()),
            CliError::Failed("f".into()),
        ];
        let mut codes: Vec<u8> = all.iter().map(CliError::exit_code).collect();
        codes.push(EXIT_DETACHED);
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len() + 1, "EXIT_DETACHED is none of them");
        assert!(EXIT_CODES_HELP.contains(&EXIT_DETACHED.to_string()));
        for e in &all {
            let back = CliError::from_kind(e.kind(), "m".into());
            assert_eq!(back.exit_code(), e.exit_code());
            assert!(EXIT_CODES_HELP.contains(&e.exit_code().to_string()));
        }
        let eacces = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(
            CliError::io("mkdir", "/x".as_ref(), &eacces).exit_code(),
            EXIT_PERMISSION
        );
    }
}

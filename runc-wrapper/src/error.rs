//! The error type returned by every fallible operation of this crate.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while driving runc.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runc binary could not be started (not found, not executable, ...).
    #[error("cannot run runc binary {binary:?}: {source}")]
    Spawn {
        /// The binary that was to be executed.
        binary: PathBuf,
        /// Why starting it failed.
        source: std::io::Error,
    },

    /// runc ran and failed.
    ///
    /// `message` is, in order of preference: runc's own last `"level":"error"` message from the part of
    /// the configured log file written during this invocation; the last non-empty stderr line (with a
    /// logrus `time=.. level=error msg=".."` wrapper reduced to the message) when the wrapper captured
    /// stderr; else `exit status N` / `killed by signal N`.
    #[error("runc {command} failed: {message}")]
    Runtime {
        /// The runc verb, e.g. `"create"`.
        command: &'static str,
        /// runc's exit code; `None` when runc was killed by a signal.
        status: Option<i32>,
        /// What went wrong, in runc's words when available.
        message: String,
    },

    /// runc succeeded but its output was not what was expected.
    #[error("cannot parse output of runc {command}: {source}")]
    Parse {
        /// The runc verb whose output was being parsed.
        command: &'static str,
        /// The decoding error.
        source: serde_json::Error,
    },

    /// A local I/O operation (temp file, pipe, wait) failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The console socket failed: timeout, peer sent no fd, path too long, ...
    #[error("console socket: {0}")]
    Console(String),

    /// An argument was rejected before anything was started (e.g. an empty container id).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The caller's deadline (see [`crate::Runc::with_deadline`]) passed while runc ran: runc
    /// and its process group were killed and reaped. Or it had passed before runc could start.
    #[error("{}", deadline_message(command, binary, *ran))]
    DeadlineExceeded {
        /// The runc verb, e.g. `"kill"`.
        command: &'static str,
        /// The binary that ran (or was to run).
        binary: PathBuf,
        /// How long it ran before it was killed; `None` when it was never started.
        ran: Option<std::time::Duration>,
    },
}

fn deadline_message(
    command: &str,
    binary: &std::path::Path,
    ran: Option<std::time::Duration>,
) -> String {
    match ran {
        Some(ran) => format!(
            "runc {command} ({}) was still running at the call's deadline: killed after {:.1}s",
            binary.display(),
            ran.as_secs_f64()
        ),
        None => format!(
            "runc {command} ({}) not run: the call's deadline had passed",
            binary.display()
        ),
    }
}

/// What a runc failure means, so callers never match runc's wording themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The container does not exist (runc's, crun's or youki's "no such container").
    NotFound,
    /// The container or process exists but is not running (a signal to a stopped
    /// container, a process that already finished).
    NotRunning,
    /// A container with that id exists already.
    AlreadyExists,
    /// runc did not finish before the caller's deadline ([`Error::DeadlineExceeded`]).
    DeadlineExceeded,
    /// Anything else, including every failure that is not runc's own.
    Other,
}

impl Error {
    /// What the failure means; [`ErrorKind::Other`] unless runc ran and said one of the
    /// known things (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        let message = match self {
            Error::Runtime { message, .. } => message,
            Error::DeadlineExceeded { .. } => return ErrorKind::DeadlineExceeded,
            _ => return ErrorKind::Other,
        };
        let m = message.to_ascii_lowercase();
        if m.contains("container does not exist")
            || m.contains("container not found")
            || m.contains("no such container")
            || (m.starts_with("container") && m.contains("does not exist"))
            || (m.contains("/status") && m.contains("no such file or directory"))
        {
            ErrorKind::NotFound
        } else if m.contains("container not running")
            || m.contains("is not running")
            || m.contains("process already finished")
            || m.contains("no such process")
            || m.contains("stopped container")
        {
            ErrorKind::NotRunning
        } else if m.contains("already exists")
            || (m.contains("container with id") && m.contains("exists"))
        {
            ErrorKind::AlreadyExists
        } else {
            ErrorKind::Other
        }
    }

    /// Whether runc reported that the container does not exist.
    ///
    /// True only for [`Error::Runtime`] whose message is runc's (or crun's / youki's) "no such
    /// container" wording: `container does not exist`, `container "x" does not exist`,
    /// `container not found`, `no such container`, or crun's failure to open the container's
    /// `status` file with `No such file or directory`.
    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }

    /// runc's own message for an [`Error::Runtime`], `None` for every other variant.
    pub fn runtime_message(&self) -> Option<&str> {
        match self {
            Error::Runtime { message, .. } => Some(message),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(msg: &str) -> Error {
        Error::Runtime {
            command: "state",
            status: Some(1),
            message: msg.into(),
        }
    }

    #[test]
    fn kinds_from_runc_and_crun_wordings() {
        for (msg, kind) in [
            ("container does not exist", ErrorKind::NotFound),
            ("container \"x\" does not exist", ErrorKind::NotFound),
            ("container not running", ErrorKind::NotRunning),
            ("process already finished", ErrorKind::NotRunning),
            ("kill: no such process", ErrorKind::NotRunning),
            ("cannot exec in a stopped container", ErrorKind::NotRunning),
            ("container with id exists: c1", ErrorKind::AlreadyExists),
            ("container `c1` already exists", ErrorKind::AlreadyExists),
            ("permission denied", ErrorKind::Other),
        ] {
            assert_eq!(runtime(msg).kind(), kind, "{msg}");
        }
        assert_eq!(
            Error::InvalidArgument("container not running".into()).kind(),
            ErrorKind::Other,
            "only runc's own failures have a kind"
        );
    }

    #[test]
    fn display() {
        let e = Error::Spawn {
            binary: "/x/runc".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(
            e.to_string(),
            "cannot run runc binary \"/x/runc\": No such file or directory (os error 2)"
        );
        let e = Error::Runtime {
            command: "create",
            status: Some(1),
            message: "exec: \"nope\": executable file not found in $PATH".into(),
        };
        assert_eq!(
            e.to_string(),
            "runc create failed: exec: \"nope\": executable file not found in $PATH"
        );
        assert_eq!(
            e.runtime_message(),
            Some("exec: \"nope\": executable file not found in $PATH")
        );
        assert!(!e.is_not_found());
        assert_eq!(Error::Console("x".into()).runtime_message(), None);
        let e = Error::DeadlineExceeded {
            command: "kill",
            binary: "/usr/bin/runc".into(),
            ran: Some(std::time::Duration::from_millis(1020)),
        };
        assert_eq!(
            e.to_string(),
            "runc kill (/usr/bin/runc) was still running at the call's deadline: killed after 1.0s"
        );
        assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
        let e = Error::DeadlineExceeded {
            command: "pause",
            binary: "runc".into(),
            ran: None,
        };
        assert_eq!(
            e.to_string(),
            "runc pause (runc) not run: the call's deadline had passed"
        );
    }

    #[test]
    fn not_found() {
        assert!(runtime("container does not exist").is_not_found());
        assert!(runtime("container \"abc\" does not exist").is_not_found());
        assert!(runtime("container not found").is_not_found());
        assert!(
            runtime("error opening file `/run/crun/x/status`: No such file or directory")
                .is_not_found()
        );
        assert!(!runtime("exec failed: executable file not found in $PATH").is_not_found());
        assert!(!runtime("rootfs (\"/run/containerd/x/rootfs\") does not exist").is_not_found());
        assert!(!runtime("container not running").is_not_found());
        assert!(!Error::InvalidArgument("does not exist".into()).is_not_found());
    }
}

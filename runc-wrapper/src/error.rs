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
}

impl Error {
    /// Whether runc reported that the container does not exist.
    ///
    /// True only for [`Error::Runtime`] whose message is runc's (or crun's / youki's) "no such
    /// container" wording: `container does not exist`, `container "x" does not exist`,
    /// `container not found`, `no such container`, or crun's failure to open the container's
    /// `status` file with `No such file or directory`.
    pub fn is_not_found(&self) -> bool {
        let Error::Runtime { message, .. } = self else {
            return false;
        };
        let m = message.to_ascii_lowercase();
        m.contains("container does not exist")
            || m.contains("container not found")
            || m.contains("no such container")
            || (m.starts_with("container") && m.contains("does not exist"))
            || (m.contains("/status") && m.contains("no such file or directory"))
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

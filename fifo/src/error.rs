//! The crate's one error type.
//!
//! Every variant names the path, id or file descriptor it concerns, and carries the OS error
//! when there is one, so that a message read in a log is enough to act on.

use std::os::fd::RawFd;
use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a path failed. `op` names the call ("mkfifo", "open", "chown", ...).
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation that failed, e.g. "mkfifo", "open", "chown", "rename".
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A system call on an already open file descriptor failed.
    #[error("{op} on fd {fd}: {source}")]
    FdIo {
        /// The operation that failed, e.g. "F_SETPIPE_SZ".
        op: &'static str,
        /// The file descriptor it was applied to.
        fd: RawFd,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A container or process id that cannot be used as a single file name.
    #[error("process id {id:?} is invalid: {reason}")]
    InvalidId {
        /// The rejected id.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The path exists but is not a FIFO.
    #[error("{} exists and is not a FIFO", path.display())]
    NotAFifo {
        /// The offending path.
        path: PathBuf,
    },

    /// A non-blocking open of a FIFO's write end found no reader (ENXIO), or no reader came
    /// before a timeout.
    #[error("no reader on FIFO {}", path.display())]
    NoReader {
        /// The FIFO.
        path: PathBuf,
    },

    /// Something that must be created fresh already exists.
    #[error("{} already exists", path.display())]
    AlreadyExists {
        /// The existing path.
        path: PathBuf,
    },

    /// Something that must exist does not.
    #[error("{} does not exist", path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },

    /// The path exists but is not a directory.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The offending path.
        path: PathBuf,
    },

    /// An exit code record that cannot be parsed.
    #[error("exit code record{} is invalid: {reason}", path_suffix(path))]
    BadExitCode {
        /// The file it was read from, when known (`ExitRecord::decode` works on text alone).
        path: Option<PathBuf>,
        /// What is wrong with it.
        reason: String,
    },

    /// A timestamp that is not RFC 3339.
    #[error("timestamp {text:?} is invalid: {reason}")]
    BadTimestamp {
        /// The text (possibly shortened).
        text: String,
        /// What is wrong with it (the `time` crate's words).
        reason: String,
    },

    /// A pid file whose content is not a positive decimal pid.
    #[error("pid file {} holds {content:?}, not a positive pid", path.display())]
    BadPidFile {
        /// The pid file.
        path: PathBuf,
        /// Its content (possibly shortened, non-UTF-8 bytes replaced).
        content: String,
    },

    /// A `starttime` record that is not `"<pid> <start ticks>"`.
    #[error("start time record holds {content:?}, not \"<pid> <start ticks>\"")]
    BadStartRecord {
        /// Its content (possibly shortened).
        content: String,
    },

    /// A malformed object on the `winsz` stream.
    #[error("bad window size message: {reason}")]
    BadWinsz {
        /// What is wrong with it.
        reason: String,
    },
}

/// `" /x/exitcode"` or nothing, for `BadExitCode`'s message.
fn path_suffix(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" {}", p.display()),
        None => String::new(),
    }
}

/// At most this many characters of untrusted content are quoted in an error.
const SNIPPET_CHARS: usize = 64;

/// `text`, shortened to a length fit for an error message: file contents may be garbage of
/// any size.
pub(crate) fn snippet(text: &str) -> String {
    match text.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}...", text.get(..cut).unwrap_or_default()),
        None => text.to_owned(),
    }
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for `Error::Io`: the one "system call `op` on `path` failed" error of the
    /// workspace (the shim's own path errors wrap it too).
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Shorthand for `Error::Io` from a nix errno.
    pub(crate) fn nix(
        op: &'static str,
        path: impl Into<PathBuf>,
        errno: nix::errno::Errno,
    ) -> Self {
        Error::io(op, path, std::io::Error::from(errno))
    }

    /// The OS error behind this error, if any (useful to test for a specific errno).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } | Error::FdIo { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_shortens() {
        assert_eq!(snippet("abc"), "abc");
        let long = "é".repeat(100);
        let short = snippet(&long);
        assert_eq!(short, format!("{}...", "é".repeat(64)));
        assert_eq!(snippet(&"x".repeat(64)), "x".repeat(64));
    }

    #[test]
    fn messages_name_what_they_concern() {
        let e = Error::InvalidId {
            id: "a/b".into(),
            reason: "contains '/'",
        };
        assert_eq!(
            e.to_string(),
            r#"process id "a/b" is invalid: contains '/'"#
        );

        let e = Error::NoReader {
            path: "/x/stdout".into(),
        };
        assert_eq!(e.to_string(), "no reader on FIFO /x/stdout");

        let e = Error::io(
            "mkfifo",
            "/x/stdin",
            std::io::Error::from_raw_os_error(libc::EACCES),
        );
        let msg = e.to_string();
        assert!(msg.starts_with("mkfifo /x/stdin: "), "{msg}");
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));

        let e = Error::BadExitCode {
            path: None,
            reason: "empty".into(),
        };
        assert_eq!(e.to_string(), "exit code record is invalid: empty");
        let e = Error::BadExitCode {
            path: Some("/p/exitcode".into()),
            reason: "empty".into(),
        };
        assert_eq!(
            e.to_string(),
            "exit code record /p/exitcode is invalid: empty"
        );
        assert_eq!(e.raw_os_error(), None);

        let e = Error::BadPidFile {
            path: "/p/pidfile".into(),
            content: "x".into(),
        };
        assert_eq!(
            e.to_string(),
            r#"pid file /p/pidfile holds "x", not a positive pid"#
        );
    }
}

//! The server's side of `start`: the listener `start` left on its stdin and the runtime
//! options it put in the environment, taken before any thread starts so that nothing the
//! server spawns inherits either.

use crate::containerd::options::RuncOptions;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;

use super::{BootstrapError, LISTENER_ON_STDIN, START_OPTIONS_ENV};

/// What `start` hands the server it spawned: the listening socket and the runtime options.
#[derive(Debug)]
pub struct Handoff {
    /// The ttrpc socket, bound and listening (containerd may already have connected).
    pub listener: UnixListener,
    /// The runtime options `start` was given (the defaults when none came).
    pub options: RuncOptions,
}

/// The server's side of the handoff, when `start` spawned it (else `Ok(None)`): takes the
/// listener `start` left on stdin (stdin is then pointed at /dev/null, so nothing we spawn
/// inherits the socket) and the runtime options from the environment (taken out of it, so
/// runc does not inherit them either). Call it before any thread starts.
///
/// Errors: no listener on stdin, or `/dev/null` missing. Options that do not parse (never
/// from our own `start`) are logged and the defaults taken.
pub fn take_handoff() -> Result<Option<Handoff>, BootstrapError> {
    if std::env::var_os(LISTENER_ON_STDIN).is_none() {
        return Ok(None);
    }
    std::env::remove_var(LISTENER_ON_STDIN);
    let options = std::env::var_os(START_OPTIONS_ENV)
        .map(|json| {
            RuncOptions::from_json(json.as_bytes()).unwrap_or_else(|e| {
                log::warn!("runtime options from start: {e}; using the defaults");
                RuncOptions::default()
            })
        })
        .unwrap_or_default();
    std::env::remove_var(START_OPTIONS_ENV);
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(BootstrapError::ListenerOnStdin)?;
    let devnull = std::fs::File::open("/dev/null").map_err(BootstrapError::DevNull)?;
    nix::unistd::dup2(devnull.as_raw_fd(), 0).map_err(BootstrapError::RedirectStdin)?;
    Ok(Some(Handoff {
        listener: UnixListener::from(fd),
        options,
    }))
}

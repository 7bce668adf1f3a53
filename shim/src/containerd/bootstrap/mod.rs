//! The short-lived actions containerd runs: `start` (spawn the long-running shim, print
//! its address, in either of containerd's bootstrap protocols: see `bootstrap_protocol.rs`)
//! and `delete` (clean up after a shim that died, and say how its container ended).
//!
//! One file per concern: `start_config.rs` reads what `start` was asked, `start.rs` spawns
//! the server and answers, `handoff.rs` is the server's side of that, `delete.rs` the
//! clean-up; this file holds what they share (the environment names, the errors).

use crate::containerd::address::AddressError;
use crate::containerd::bootstrap_protocol::StartInputError;
use crate::containerd::flags::Flags;
use crate::containerd::options::OptionsError;
use std::path::PathBuf;

/// Environment variable that marks the re-executed server (the listener is its stdin).
pub const LISTENER_ON_STDIN: &str = "TETHER_LISTENER_ON_STDIN";

/// Environment variable that carries the runtime options `start` was given to the server
/// it spawns ([`RuncOptions::to_json`](crate::containerd::options::RuncOptions::to_json));
/// the server takes it out of its environment before it starts anything.
pub const START_OPTIONS_ENV: &str = "TETHER_START_OPTIONS";

/// Where the server finds containerd's ttrpc address (containerd sets it for every shim).
pub const TTRPC_ADDRESS_ENV: &str = "TTRPC_ADDRESS";

/// Why `start`, `delete` or the server's handoff failed; each says what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// `start`'s stdin is neither bootstrap parameters nor runtime options.
    #[error(transparent)]
    Input(#[from] StartInputError),
    /// The runtime options do not decode.
    #[error("runtime options: {0}")]
    Options(#[source] OptionsError),
    /// The socket address is bad, or the socket could not be made.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// The bundle directory (the working directory) is unknown.
    #[error("bundle dir: {0}")]
    BundleDir(#[source] std::io::Error),
    /// A file in the bundle could not be written.
    #[error("write {}: {source}", path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The reply to containerd could not be written on stdout.
    #[error("write address: {0}")]
    WriteReply(#[source] std::io::Error),
    /// Our own executable cannot be found to re-execute it.
    #[error("own executable: {0}")]
    OwnExecutable(#[source] std::io::Error),
    /// The server could not be spawned.
    #[error("spawn shim server: {0}")]
    Spawn(#[source] std::io::Error),
    /// The server could not be moved into the shim cgroup the options name.
    #[error("shim cgroup {cgroup}: {source}")]
    ShimCgroup {
        cgroup: String,
        #[source]
        source: CgroupMoveError,
    },
    /// The server found no listener on its stdin.
    #[error("listener on stdin: {0}")]
    ListenerOnStdin(#[source] std::io::Error),
    /// `/dev/null` cannot be opened.
    #[error("/dev/null: {0}")]
    DevNull(#[source] std::io::Error),
    /// Stdin could not be pointed at `/dev/null`.
    #[error("redirect stdin: {0}")]
    RedirectStdin(#[source] nix::Error),
    /// `delete`'s answer could not be encoded.
    #[error("encode delete response: {0}")]
    EncodeDeleteResponse(#[source] protobuf::Error),
    /// `delete`'s answer could not be written on stdout.
    #[error("write delete response: {0}")]
    WriteDeleteResponse(#[source] std::io::Error),
}

/// Why a process could not be moved into a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupMoveError {
    /// No hierarchy is mounted.
    #[error("no cgroup hierarchy found")]
    NoHierarchy,
    /// No hierarchy took it; the last refusal.
    #[error("{}: {source}", dir.display())]
    Write {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The bundle directory, `start`'s and `delete`'s both: `-bundle` when given, else the
/// working directory.
fn bundle_dir(flags: &Flags) -> Result<PathBuf, BootstrapError> {
    match &flags.bundle {
        Some(b) => Ok(b.clone()),
        None => std::env::current_dir().map_err(BootstrapError::BundleDir),
    }
}

mod delete;
mod handoff;
mod start;
mod start_config;

pub use delete::delete;
pub use handoff::{take_handoff, Handoff};
pub use start::start;
pub use start_config::StartConfig;

#[cfg(test)]
mod tests;

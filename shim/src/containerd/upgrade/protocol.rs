//! How an operator asks a shim to upgrade, and what it answers: one ttrpc method on the
//! shim's own socket, which containerd never calls. Only root may call it (the peer's
//! credentials are checked; the socket's directory is root's too). The payloads are JSON:
//! the caller is this same binary's `upgrade` command.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The ttrpc service and method.
pub const SERVICE: &str = "tether.upgrade.v1.Upgrade";
pub const METHOD: &str = "Upgrade";

/// What the operator asks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UpgradeRequest {
    /// The binary to move onto; `None`: the path the shim was started from (where a
    /// package manager puts the new one).
    pub binary: Option<PathBuf>,
    /// How long the shim waits for the calls in flight before it refuses (milliseconds).
    pub timeout_ms: u64,
    /// Fault injection, for the tests of the rollback (see [`Fault`]).
    #[serde(default)]
    pub fault: Option<Fault>,
}

/// A fault the new image injects on purpose, to prove the old image takes over again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// The new image aborts right after it has taken the state over.
    AbortAfterExec,
    /// The new image fails to take the state over once it has taken its descriptors, as
    /// one that cannot use the state would (standalone supervisors only).
    FailAfterExec,
}

/// How it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The shim serves from the new binary.
    Upgraded,
    /// The shim did not move (the old image serves on): why.
    Refused(String),
    /// The new image failed after `execve`; the old image was executed again and serves
    /// on: why.
    RolledBack(String),
}

/// The shim's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeReport {
    pub pid: u32,
    /// The version of the image that was asked (`version_line`).
    pub from: String,
    /// The version of the image that answers.
    pub to: String,
    pub binary: PathBuf,
    /// From the moment the old image stopped reading calls to the moment the new one
    /// answers this call, in microseconds (0 when refused before stopping).
    pub pause_us: u64,
    pub outcome: Outcome,
}

/// This binary's version as the report names it: the crate version and the revision it
/// was built from.
pub fn version_line() -> String {
    format!(
        "{} ({})",
        env!("CARGO_PKG_VERSION"),
        crate::containerd::info::revision()
    )
}

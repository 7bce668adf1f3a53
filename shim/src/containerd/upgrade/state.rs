//! The state a shim hands to the image it re-executes: plain data (JSON) in a memfd
//! whose number the new image finds in [`STATE_FD_ENV`]. Descriptors are named by number
//! and listed in [`SavedShim::fds`]; moments are offsets from the save, but for the
//! pause, which is measured on `CLOCK_MONOTONIC` (it goes on across `execve`).
//!
//! Versioning: [`FORMAT`] is this binary's format; it takes over any state from
//! [`MIN_FORMAT`] to [`FORMAT`] and refuses a newer one (the dry run says so before
//! anything happens). A change to the format adds a version and, for the previous ones,
//! a conversion, and keeps a state recorded by the previous release as a test fixture
//! (`tests/fixtures/upgrade-state-v1.json`).

use super::protocol::{Fault, UpgradeRequest};
use crate::containerd::events::CarriedEvent;
use crate::containerd::options::RuncOptions;
use crate::containerd::process_table::snapshot::TableSnapshot;
use crate::containerd::ttrpc::connection::ConnectionSnapshot;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// The format this binary writes.
pub const FORMAT: u32 = 1;
/// The oldest format this binary takes over.
pub const MIN_FORMAT: u32 = 1;
pub use crate::process_core::rollback::{ROLLBACK_ENV, STATE_FD_ENV};
/// Most bytes a state may take (a shim with hundreds of processes writes a few hundred
/// KiB).
const MAX_STATE: u64 = 64 << 20;

/// Why a state cannot be taken over.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state format {found} is not one this binary takes over ({MIN_FORMAT} to {FORMAT})")]
    Format { found: u32 },
    #[error("the state does not say its format: {0}")]
    NoFormat(#[source] serde_json::Error),
    #[error("the state is not valid: {0}")]
    Invalid(#[source] serde_json::Error),
    #[error("the state is larger than {MAX_STATE} bytes")]
    TooLarge,
    #[error("reading the state: {0}")]
    Io(#[from] io::Error),
    #[error("{STATE_FD_ENV}={0:?} is not a descriptor number")]
    BadFd(String),
}

/// Everything a shim carries to its next image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedShim {
    pub format: u32,
    /// The saving image's version ([`super::protocol::version_line`]).
    pub saved_by: String,
    /// `CLOCK_MONOTONIC` in nanoseconds when the old image stopped reading calls.
    pub paused_at_ns: u64,
    /// The binary the shim was first started from (the default to upgrade to).
    pub started_from: PathBuf,
    /// The old image, open, to execute again if the new one fails.
    pub old_image: RawFd,
    pub socket_path: PathBuf,
    pub listener: RawFd,
    pub start_options: RuncOptions,
    pub conns: Vec<(u32, ConnectionSnapshot)>,
    pub next_conn: u32,
    pub table: TableSnapshot,
    pub events: Vec<CarriedEvent>,
    /// The Upgrade call to answer (connection, stream) and what it asked.
    pub upgrade_call: (u32, u32),
    pub request: UpgradeRequest,
    /// Since when the shim has had no container, and when containerd asked it to shut
    /// down (milliseconds from the save).
    pub empty_since: Option<i64>,
    pub shutdown_requested: Option<i64>,
    /// Every descriptor named above.
    pub fds: Vec<RawFd>,
}

impl SavedShim {
    /// The fault the request asked the new image to inject.
    pub fn fault(&self) -> Option<Fault> {
        self.request.fault
    }
}

pub use crate::process_core::carried_fds::monotonic_ns;

/// Writes `state` into a new memfd (close-on-exec: the caller clears that right before
/// `execve`).
pub fn write_memfd(state: &SavedShim) -> io::Result<OwnedFd> {
    let fd = nix::sys::memfd::memfd_create(
        c"tether-upgrade-state",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )?;
    let mut file = File::from(fd);
    serde_json::to_writer(&mut file, state).map_err(io::Error::other)?;
    file.flush()?;
    Ok(OwnedFd::from(file))
}

/// Parses a state, checking its format first (so a newer format is named as such rather
/// than as a parse error).
pub fn parse(bytes: &[u8]) -> Result<SavedShim, StateError> {
    #[derive(Deserialize)]
    struct Head {
        format: u32,
    }
    let head: Head = serde_json::from_slice(bytes).map_err(StateError::NoFormat)?;
    if !(MIN_FORMAT..=FORMAT).contains(&head.format) {
        return Err(StateError::Format { found: head.format });
    }
    serde_json::from_slice(bytes).map_err(StateError::Invalid)
}

/// Reads a whole state from `r` (bounded).
pub fn read_from(r: impl Read) -> Result<SavedShim, StateError> {
    let mut bytes = Vec::new();
    r.take(MAX_STATE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_STATE {
        return Err(StateError::TooLarge);
    }
    parse(&bytes)
}

/// The state's memfd named by [`STATE_FD_ENV`], if set: its number (kept open, for a
/// rollback) and the state read from its start.
#[allow(unsafe_code)]
pub fn from_env() -> Option<Result<(RawFd, SavedShim), StateError>> {
    let value = std::env::var(STATE_FD_ENV).ok()?;
    Some((|| {
        let fd: RawFd = value
            .parse()
            .ok()
            .filter(|n| *n > 2)
            .ok_or_else(|| StateError::BadFd(value.clone()))?;
        // SAFETY: the number comes from the image that executed this one, which left
        // the memfd open for us under it; it is borrowed here through a `File` that is
        // never dropped (`ManuallyDrop`): the descriptor stays open for a rollback.
        let mut file = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
        file.rewind()?;
        let state = read_from(&mut *file)?;
        Ok((file.as_raw_fd(), state))
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SavedShim {
        SavedShim {
            format: FORMAT,
            saved_by: "0.1.0 (test)".into(),
            paused_at_ns: 5,
            started_from: "/usr/local/bin/containerd-shim-tether-v2".into(),
            old_image: 9,
            socket_path: "/run/containerd/s/x".into(),
            listener: 3,
            start_options: RuncOptions::default(),
            conns: Vec::new(),
            next_conn: 2,
            table: TableSnapshot {
                containers: Vec::new(),
                next_key: 0,
                unclaimed: Vec::new(),
                exit_queue: Vec::new(),
            },
            events: Vec::new(),
            upgrade_call: (1, 3),
            request: UpgradeRequest::default(),
            empty_since: None,
            shutdown_requested: None,
            fds: vec![3, 9],
        }
    }

    #[test]
    fn a_state_round_trips_through_a_memfd() {
        let s = sample();
        let fd = write_memfd(&s).unwrap();
        let mut file = File::from(fd);
        file.rewind().unwrap();
        assert_eq!(read_from(&mut file).unwrap(), s);
    }

    #[test]
    fn a_newer_format_is_refused_by_name() {
        let mut s = serde_json::to_value(sample()).unwrap();
        s["format"] = (FORMAT + 1).into();
        let bytes = serde_json::to_vec(&s).unwrap();
        let e = parse(&bytes).unwrap_err();
        assert!(
            matches!(e, StateError::Format { found } if found == FORMAT + 1),
            "{e}"
        );
        assert!(
            e.to_string().contains("is not one this binary takes over"),
            "{e}"
        );
        assert!(matches!(parse(b"{}"), Err(StateError::NoFormat(_))));
        assert!(matches!(parse(b"[1,2"), Err(StateError::NoFormat(_))));
    }

    /// The state the first release with live upgrade wrote: every later binary takes it
    /// over (or converts it). Recorded from a shim serving a running container with an
    /// exec, a TTY and a spool; the descriptors it names are not open here, which only
    /// the resume checks.
    #[test]
    fn the_recorded_state_of_format_1_is_taken_over() {
        let bytes = include_bytes!("../../../../tests/fixtures/upgrade-state-v1.json");
        let s = parse(bytes).unwrap();
        assert_eq!(s.format, 1);
        assert!(!s.table.containers.is_empty());
    }
}

//! The state a standalone supervisor hands to the image it re-executes: plain data (JSON)
//! in a memfd whose number the new image finds in [`STATE_FD_ENV`]. Descriptors are named
//! by number and all listed in [`SavedSupervisor::fds`] (`process_core::carried_fds`);
//! moments are offsets in milliseconds from the save, or points on `CLOCK_MONOTONIC`
//! (which goes on across `execve`).
//!
//! A state says what it is: [`FACE`] in its `face` field tells it from a shim's state
//! (`containerd::upgrade::state`, whose format 1 has no such field), so that
//! `upgrade-check` reads each with its own rules.
//!
//! Versioning: [`FORMAT`] is this binary's format; it takes over any state from
//! [`MIN_FORMAT`] to [`FORMAT`] and refuses a newer one (the dry run says so before
//! anything happens). A change to the format adds a version and, for the previous ones, a
//! conversion, and keeps a state recorded by the previous release as a test fixture
//! (`tests/fixtures/supervisor-state-v1.json`).

use crate::containerd::upgrade::protocol::{Fault, UpgradeRequest};
use crate::process_core::process_stdio::ProcessStdioSnapshot;
pub use crate::process_core::rollback::{ROLLBACK_ENV, STATE_FD_ENV};
use crate::standalone::control;
use crate::standalone::supervise::state::SupervisorState;
use fifo::WinszDecoder;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// The `face` of a standalone supervisor's state.
pub const FACE: &str = "standalone-supervisor";
/// The format this binary writes.
pub const FORMAT: u32 = 1;
/// The oldest format this binary takes over.
pub const MIN_FORMAT: u32 = 1;
/// Most bytes a state may take (one process: a few KiB, most of it a pump's pending
/// bytes, at most its buffer).
pub const MAX_STATE: u64 = 4 << 20;

/// Why a state cannot be taken over.
#[derive(Debug, thiserror::Error)]
pub enum SavedError {
    #[error("state format {found} is not one this binary takes over ({MIN_FORMAT} to {FORMAT})")]
    Format { found: u32 },
    #[error("the state is not a standalone supervisor's (its face is {0:?})")]
    Face(Option<String>),
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

/// Everything a supervisor carries to its next image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSupervisor {
    /// [`FACE`].
    pub face: String,
    pub format: u32,
    /// The saving image's version (`protocol::version_line`).
    pub saved_by: String,
    /// `CLOCK_MONOTONIC` in nanoseconds when the old image stopped serving.
    pub paused_at_ns: u64,
    /// The binary the supervisor was first started from (the default to upgrade to).
    pub started_from: PathBuf,
    /// The old image, open, to execute again if the new one fails.
    pub old_image: RawFd,
    /// What the operator asked, and the connection to answer on.
    pub request: UpgradeRequest,
    pub asker: RawFd,
    /// The listening `upgrade.sock`.
    pub door: RawFd,
    pub supervisor: SupervisorSnapshot,
    /// Every descriptor named above.
    pub fds: Vec<RawFd>,
}

impl SavedSupervisor {
    /// The fault the request asked the new image to inject.
    pub fn fault(&self) -> Option<Fault> {
        self.request.fault
    }
}

/// The supervisor itself (`supervise::Supervisor`), field by field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupervisorSnapshot {
    /// The process directory's path as given (checked against the command line's).
    pub dir: PathBuf,
    /// The process directory, pinned.
    pub pinned: RawFd,
    pub state: SupervisorState,
    /// The link to the keeper (our parent) and its pid, until the exit is recorded.
    pub keeper: Option<(RawFd, i32)>,
    pub stdio: ProcessStdioSnapshot,
    /// Each output FIFO's write end and keep-alive read end (stdout, stderr), while open.
    pub outputs: [FifoEnds; 2],
    /// What is held while the process runs (`Some` exactly in `Running`).
    pub holds: Option<HoldsSnapshot>,
    pub pea: Option<PeaSnapshot>,
    /// What the spools dropped: the counts written to `spool-dropped`, and the highest
    /// seen.
    pub drops_written: [u64; 2],
    pub drops_seen: [u64; 2],
}

/// An output FIFO's two ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FifoEnds {
    pub writer: Option<RawFd>,
    pub keepalive: Option<RawFd>,
}

/// `supervise::RunningHolds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldsSnapshot {
    pub exit: RawFd,
    /// `None` once a manager asked to close stdin.
    pub stdin: Option<RawFd>,
    pub winsz: RawFd,
    pub winsz_hold: RawFd,
    /// A window size read in part (a writer that split its object).
    pub winsz_decoder: WinszDecoder,
    pub control: RawFd,
    pub control_hold: RawFd,
    /// A request line read in part.
    pub requests: control::Decoder,
    pub master: Option<RawFd>,
}

/// `supervise::PeaTies`: the pea's runc container and the outer init's pidfd (`None`
/// once it has exited and been seen to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeaSnapshot {
    pub runc_id: String,
    pub outer: Option<RawFd>,
}

/// Writes `state` into a new memfd (close-on-exec: cleared right before `execve`).
pub fn write_memfd(state: &SavedSupervisor) -> io::Result<OwnedFd> {
    let fd = nix::sys::memfd::memfd_create(
        c"tether-supervisor-state",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )?;
    let mut file = File::from(fd);
    serde_json::to_writer(&mut file, state).map_err(io::Error::other)?;
    file.flush()?;
    Ok(OwnedFd::from(file))
}

/// Parses a state, checking what it is and its format first (so a shim's state or a newer
/// format is named as such rather than as a parse error).
pub fn parse(bytes: &[u8]) -> Result<SavedSupervisor, SavedError> {
    #[derive(Deserialize)]
    struct Head {
        #[serde(default)]
        face: Option<String>,
        format: u32,
    }
    let head: Head = serde_json::from_slice(bytes).map_err(SavedError::NoFormat)?;
    if head.face.as_deref() != Some(FACE) {
        return Err(SavedError::Face(head.face));
    }
    if !(MIN_FORMAT..=FORMAT).contains(&head.format) {
        return Err(SavedError::Format { found: head.format });
    }
    serde_json::from_slice(bytes).map_err(SavedError::Invalid)
}

/// Reads a whole state from `r` (bounded).
pub fn read_from(r: impl Read) -> Result<SavedSupervisor, SavedError> {
    let mut bytes = Vec::new();
    r.take(MAX_STATE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_STATE {
        return Err(SavedError::TooLarge);
    }
    parse(&bytes)
}

/// The state's memfd named by [`STATE_FD_ENV`], if set: its number (kept open, for a
/// rollback) and the state read from its start.
#[allow(unsafe_code)]
pub fn from_env() -> Option<Result<(RawFd, SavedSupervisor), SavedError>> {
    let value = std::env::var(STATE_FD_ENV).ok()?;
    Some((|| {
        let fd: RawFd = value
            .parse()
            .ok()
            .filter(|n| *n > 2)
            .ok_or_else(|| SavedError::BadFd(value.clone()))?;
        // SAFETY: the number comes from the image that executed this one, which left the
        // memfd open for us under it; it is borrowed here through a `File` that is never
        // dropped (`ManuallyDrop`): the descriptor stays open for a rollback.
        let mut file = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
        file.rewind()?;
        let state = read_from(&mut *file)?;
        Ok((file.as_raw_fd(), state))
    })())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn sample() -> SavedSupervisor {
        SavedSupervisor {
            face: FACE.into(),
            format: FORMAT,
            saved_by: "0.1.0 (test)".into(),
            paused_at_ns: 5,
            started_from: "/usr/local/bin/containerd-shim-tether-v2".into(),
            old_image: 20,
            request: UpgradeRequest::default(),
            asker: 21,
            door: 7,
            supervisor: SupervisorSnapshot {
                dir: "/run/tether/depot/c/processes/init".into(),
                pinned: 5,
                state: SupervisorState::Exited {
                    pid: 42,
                    exit: fifo::ExitRecord {
                        code: 7,
                        exited_at: SystemTime::UNIX_EPOCH + Duration::new(1_795_404_285, 9),
                    },
                },
                keeper: Some((6, 41)),
                stdio: ProcessStdioSnapshot::default(),
                outputs: [
                    FifoEnds {
                        writer: Some(8),
                        keepalive: Some(9),
                    },
                    FifoEnds::default(),
                ],
                holds: Some(HoldsSnapshot {
                    exit: 10,
                    stdin: None,
                    winsz: 11,
                    winsz_hold: 12,
                    winsz_decoder: WinszDecoder::new(),
                    control: 13,
                    control_hold: 14,
                    requests: control::Decoder::default(),
                    master: Some(15),
                }),
                pea: Some(PeaSnapshot {
                    runc_id: "c.p".into(),
                    outer: Some(16),
                }),
                drops_written: [0, 3],
                drops_seen: [1, 3],
            },
            fds: (5..=21).collect(),
        }
    }

    #[test]
    fn a_state_round_trips_through_a_memfd() {
        let s = sample();
        let mut file = File::from(write_memfd(&s).unwrap());
        file.rewind().unwrap();
        assert_eq!(read_from(&mut file).unwrap(), s);
    }

    #[test]
    fn a_newer_format_and_a_shims_state_are_refused_by_name() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["format"] = (FORMAT + 1).into();
        let e = parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            matches!(e, SavedError::Format { found } if found == FORMAT + 1),
            "{e}"
        );
        // A shim's state has no face.
        let e = parse(br#"{"format":1,"listener":3}"#).unwrap_err();
        assert!(matches!(e, SavedError::Face(None)), "{e}");
        assert!(
            e.to_string().contains("not a standalone supervisor's"),
            "{e}"
        );
        assert!(matches!(parse(b"[1,2"), Err(SavedError::NoFormat(_))));
        let big = vec![b' '; usize::try_from(MAX_STATE).unwrap() + 1];
        assert!(matches!(read_from(&big[..]), Err(SavedError::TooLarge)));
    }

    /// The state the first release with a supervisor's live upgrade wrote: every later
    /// binary takes it over (or converts it). Recorded from a supervisor of a process
    /// writing into a spool (`standalone_upgrade`'s ignored `record_the_state_of_this_format`);
    /// the descriptors it names are not open here, which only the resume checks.
    #[test]
    fn the_recorded_state_of_format_1_is_taken_over() {
        let bytes = include_bytes!("../../../../tests/fixtures/supervisor-state-v1.json");
        let s = parse(bytes).unwrap();
        assert_eq!(s.format, 1);
        assert!(s.supervisor.state.is_running());
        assert!(s.supervisor.holds.is_some());
    }
}

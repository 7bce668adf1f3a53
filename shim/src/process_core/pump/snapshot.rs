//! A pump as it is carried across a live upgrade: its descriptors (by number), the bytes
//! it read and has not written yet, its counters and its spool.

use super::{Direction, Pump, Spooling};
use crate::process_core::carried_fds::{at_offset, offset_of, CarryError, FdsIn, FdsOut};
use crate::process_core::spool::{Spool, SpoolSnapshot};
use nix::fcntl::{fcntl, FcntlArg};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

/// A pump's state (see [`Pump::save`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PumpSnapshot {
    pub output: bool,
    pub src: RawFd,
    pub dst: RawFd,
    pub keepalive: Option<RawFd>,
    pub splice: bool,
    /// Read from the source, not written yet (the read/write fallback: at most its
    /// buffer).
    pub pending: Vec<u8>,
    pub src_eof: bool,
    pub moved: u64,
    pub end_reported: bool,
    pub spool: Option<SpoolingSnapshot>,
}

/// A pump's spool and when it takes bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolingSnapshot {
    pub spool: SpoolSnapshot,
    pub eager: bool,
    /// Milliseconds from the save (see `carried_fds::offset_of`).
    pub last_progress: i64,
    pub progress_unstamped: bool,
    pub recheck_at: Option<i64>,
}

impl Pump {
    /// The pump's state at `now`; its descriptors are named in `fds`.
    pub fn save(&self, fds: &mut FdsOut, now: Instant) -> PumpSnapshot {
        PumpSnapshot {
            output: self.direction == Direction::Output,
            src: fds.carry(&self.src),
            dst: fds.carry(&self.dst),
            keepalive: self.keepalive.as_ref().map(|k| fds.carry(k)),
            splice: self.splice,
            pending: self.buf[self.pending.clone()].to_vec(),
            src_eof: self.src_eof,
            moved: self.moved,
            end_reported: self.end_reported,
            spool: self.spool.as_ref().map(|s| SpoolingSnapshot {
                spool: s.spool.save(fds),
                eager: s.eager,
                last_progress: offset_of(s.last_progress, now),
                progress_unstamped: s.progress_unstamped,
                recheck_at: s.recheck_at.map(|at| offset_of(at, now)),
            }),
        }
    }

    /// The pump [`Pump::save`] described, at `now`, its descriptors taken from `fds`.
    pub fn restore(s: PumpSnapshot, fds: &mut FdsIn, now: Instant) -> Result<Pump, CarryError> {
        let src = File::from(fds.take(s.src)?);
        let dst = File::from(fds.take(s.dst)?);
        let keepalive = fds.take_opt(s.keepalive)?.map(File::from);
        let spool = match s.spool {
            None => None,
            Some(sp) => Some(Box::new(Spooling {
                src_capacity: fcntl(src.as_raw_fd(), FcntlArg::F_GETPIPE_SZ)
                    .ok()
                    .and_then(|n| usize::try_from(n).ok()),
                spool: Spool::restore(sp.spool, fds)?,
                eager: sp.eager,
                last_progress: at_offset(sp.last_progress, now),
                progress_unstamped: sp.progress_unstamped,
                recheck_at: sp.recheck_at.map(|o| at_offset(o, now)),
            })),
        };
        let pending = 0..s.pending.len();
        Ok(Pump {
            direction: if s.output {
                Direction::Output
            } else {
                Direction::Input
            },
            src,
            dst,
            keepalive,
            splice: s.splice,
            buf: s.pending,
            pending,
            src_eof: s.src_eof,
            src_end: None,
            // Not carried (the state's format stays): counts from the upgrade on.
            src_read: 0,
            moved: s.moved,
            spool,
            end_reported: s.end_reported,
        })
    }
}

//! A spool as it is carried across a live upgrade: its file (by number) and offsets.

use super::{Spool, SpoolPolicy};
use crate::process_core::carried_fds::{CarryError, FdsIn, FdsOut};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::fd::RawFd;

/// A spool's state. The bytes between `start` and `end` are in the file; what the drain
/// had read into its buffer and not written yet is still there too (`start` moves only
/// once bytes are written), so the buffer is not carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolSnapshot {
    pub file: RawFd,
    pub label: String,
    pub limit: u64,
    pub drop_oldest: bool,
    pub start: u64,
    pub end: u64,
    pub punched: u64,
    pub dropped: u64,
    pub disk_full: bool,
    pub used: bool,
}

impl Spool {
    /// The spool's state; its file is named in `fds`.
    pub fn save(&self, fds: &mut FdsOut) -> SpoolSnapshot {
        SpoolSnapshot {
            file: fds.carry(&self.file),
            label: self.label.clone(),
            limit: self.limit,
            drop_oldest: self.policy == SpoolPolicy::DropOldest,
            start: self.start,
            end: self.end,
            punched: self.punched,
            dropped: self.dropped,
            disk_full: self.disk_full,
            used: self.used,
        }
    }

    /// The spool [`Spool::save`] described, its file taken from `fds`.
    pub fn restore(s: SpoolSnapshot, fds: &mut FdsIn) -> Result<Spool, CarryError> {
        let file = File::from(fds.take(s.file)?);
        let policy = if s.drop_oldest {
            SpoolPolicy::DropOldest
        } else {
            SpoolPolicy::Block
        };
        let mut spool = Spool::from_file(file, s.limit, policy, s.label);
        spool.start = s.start;
        spool.end = s.end.max(s.start);
        spool.punched = s.punched;
        spool.dropped = s.dropped;
        spool.disk_full = s.disk_full;
        spool.used = s.used;
        Ok(spool)
    }
}

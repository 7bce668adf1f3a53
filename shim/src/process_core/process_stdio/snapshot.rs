//! A process's pumps as they are carried across a live upgrade.

use super::ProcessStdio;
use crate::process_core::carried_fds::{at_offset, offset_of, CarryError, FdsIn, FdsOut};
use crate::process_core::pump::{Pump, PumpSnapshot};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::fd::RawFd;
use std::time::Instant;

/// The pumps of one process (by stream index) and the output's drain deadline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStdioSnapshot {
    pub pumps: [Option<PumpSnapshot>; 3],
    /// Milliseconds from the save.
    pub drain_deadline: Option<i64>,
    /// The read ends of output FIFOs whose pumps have gone, by stream index (absent in
    /// states saved before the field existed: none).
    #[serde(default)]
    pub ended_fifos: [Option<RawFd>; 3],
}

impl ProcessStdio {
    /// The pumps' state at `now`; their descriptors are named in `fds`. Registrations
    /// with the poller are not carried: the new image registers the pumps again.
    pub fn save(&self, fds: &mut FdsOut, now: Instant) -> ProcessStdioSnapshot {
        ProcessStdioSnapshot {
            pumps: [0, 1, 2].map(|i| self.pumps[i].as_ref().map(|p| p.save(fds, now))),
            drain_deadline: self.drain_deadline.map(|d| offset_of(d, now)),
            ended_fifos: [0, 1, 2].map(|i| self.ended_fifos[i].as_ref().map(|f| fds.carry(f))),
        }
    }

    /// The pumps [`ProcessStdio::save`] described (not registered yet).
    pub fn restore(
        s: ProcessStdioSnapshot,
        fds: &mut FdsIn,
        now: Instant,
    ) -> Result<ProcessStdio, CarryError> {
        let mut stdio = ProcessStdio {
            drain_deadline: s.drain_deadline.map(|o| at_offset(o, now)),
            ..Default::default()
        };
        for (i, fd) in s.ended_fifos.into_iter().enumerate() {
            stdio.ended_fifos[i] = fds.take_opt(fd)?.map(File::from);
        }
        for (i, p) in s.pumps.into_iter().enumerate() {
            if let Some(p) = p {
                stdio.pumps[i] = Some(Pump::restore(p, fds, now)?);
            }
        }
        Ok(stdio)
    }
}

//! A process's pumps as they are carried across a live upgrade.

use super::ProcessStdio;
use crate::process_core::carried_fds::{at_offset, offset_of, CarryError, FdsIn, FdsOut};
use crate::process_core::pump::{Pump, PumpSnapshot};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// The pumps of one process (by stream index) and the output's drain deadline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStdioSnapshot {
    pub pumps: [Option<PumpSnapshot>; 3],
    /// Milliseconds from the save.
    pub drain_deadline: Option<i64>,
}

impl ProcessStdio {
    /// The pumps' state at `now`; their descriptors are named in `fds`. Registrations
    /// with the poller are not carried: the new image registers the pumps again.
    pub fn save(&self, fds: &mut FdsOut, now: Instant) -> ProcessStdioSnapshot {
        ProcessStdioSnapshot {
            pumps: [0, 1, 2].map(|i| self.pumps[i].as_ref().map(|p| p.save(fds, now))),
            drain_deadline: self.drain_deadline.map(|d| offset_of(d, now)),
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
        for (i, p) in s.pumps.into_iter().enumerate() {
            if let Some(p) = p {
                stdio.pumps[i] = Some(Pump::restore(p, fds, now)?);
            }
        }
        Ok(stdio)
    }
}

//! An OOM watcher as it is carried across a live upgrade: its descriptor (the v1 eventfd
//! the kernel signals, the v2 inotify instance with its watches) and its count.

use super::{Kind, OomWatcher};
use crate::process_core::carried_fds::{CarryError, FdsIn, FdsOut};
use serde::{Deserialize, Serialize};
use std::os::fd::RawFd;
use std::path::PathBuf;

/// An OOM watcher's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OomSnapshot {
    V1 {
        efd: RawFd,
        dir: PathBuf,
    },
    V2 {
        inotify: RawFd,
        events: PathBuf,
        cgroup_events: PathBuf,
        oom_kills: u64,
        ended: bool,
    },
}

impl OomWatcher {
    /// The watcher's state; its descriptor is named in `fds`.
    pub fn save(&self, fds: &mut FdsOut) -> OomSnapshot {
        match &self.kind {
            Kind::V1 { efd, dir } => OomSnapshot::V1 {
                efd: fds.carry(efd),
                dir: dir.clone(),
            },
            Kind::V2 {
                inotify,
                events,
                cgroup_events,
                oom_kills,
                ended,
            } => OomSnapshot::V2 {
                inotify: fds.carry(inotify),
                events: events.clone(),
                cgroup_events: cgroup_events.clone(),
                oom_kills: *oom_kills,
                ended: *ended,
            },
        }
    }

    /// The watcher [`OomWatcher::save`] described.
    pub fn restore(s: OomSnapshot, fds: &mut FdsIn) -> Result<OomWatcher, CarryError> {
        let kind = match s {
            OomSnapshot::V1 { efd, dir } => Kind::V1 {
                efd: fds.take(efd)?,
                dir,
            },
            OomSnapshot::V2 {
                inotify,
                events,
                cgroup_events,
                oom_kills,
                ended,
            } => Kind::V2 {
                inotify: fds.take(inotify)?,
                events,
                cgroup_events,
                oom_kills,
                ended,
            },
        };
        Ok(OomWatcher { kind })
    }
}

//! The process table as plain data: what a shim that re-executes itself (a live upgrade)
//! writes out and the new image reads back. Descriptors travel by number
//! (`supervisor::carried_fds`), moments as offsets from the save, everything else as it
//! is in the records. A table is saved only at rest: no call inside or queued at any
//! gate, no Delete waiting, no Create on a worker (the upgrade waits for that, bounded);
//! what is carried then is each process's state, pid, pidfd, stdio, pumps and spools,
//! its pending exit, spool waits and parked Waits, and each container's options, mount
//! and OOM watcher.

use super::record::{ExitWait, SpoolWait, Stdin};
use super::{ContainerRecord, LaunchSpec, ProcKey, ProcState, ProcessRecord, Table, Waiter};
use crate::containerd::cgroups::oom::{OomSnapshot, OomWatcher};
use crate::containerd::options::RuncOptions;
use crate::containerd::shim::RuncFactory;
use crate::containerd::stdio_uris::StdioConfig;
use crate::process_core::carried_fds::{at_offset, offset_of, CarryError, FdsIn, FdsOut};
use crate::process_core::process_stdio::{ProcessStdio, ProcessStdioSnapshot, Stream};
use fifo::ExitRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Instant;

/// Why a table cannot be saved now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAtRest {
    #[error("container {0} is being created")]
    Creating(String),
    #[error("a call on {0} is in flight")]
    CallInFlight(String),
    #[error("a Delete of {0} is waiting")]
    DeleteWaiting(String),
}

/// The whole table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSnapshot {
    pub containers: Vec<ContainerSnapshot>,
    pub next_key: u32,
    pub unclaimed: Vec<(i32, ExitRecord)>,
    pub exit_queue: Vec<ProcKey>,
}

/// One container and its processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSnapshot {
    pub id: String,
    pub bundle: PathBuf,
    pub paused: bool,
    pub shares_pid_ns: bool,
    pub rootfs_mounted: Option<PathBuf>,
    pub options: RuncOptions,
    pub cgroup_procs: Option<PathBuf>,
    /// Absent in states saved before the field existed (still format 1: it is optional).
    #[serde(default)]
    pub cgroups: Option<crate::containerd::cgroups::ProcessCgroups>,
    pub oom: Option<OomSnapshot>,
    pub init: ProcessSnapshot,
    pub execs: Vec<ProcessSnapshot>,
}

/// One process's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessSnapshot {
    pub key: ProcKey,
    pub exec_id: String,
    pub pid: i32,
    pub pidfd: Option<RawFd>,
    pub state: ProcState,
    pub stdio: StdioConfig,
    pub launch: LaunchSpec,
    pub stdin_closer: Option<RawFd>,
    pub stdin_close_requested: bool,
    pub console: Option<RawFd>,
    pub pumps: ProcessStdioSnapshot,
    pub open_outputs: usize,
    /// Milliseconds from the save: the drain deadline and the hold limit.
    pub exit_wait: Option<(i64, i64)>,
    pub spool_waits: Vec<(Stream, i64)>,
    pub waiters: Vec<Waiter>,
}

impl Table {
    /// The table as plain data at `now`, its descriptors named in `fds`; refused unless
    /// the table is at rest (see the module doc).
    pub fn save(&self, fds: &mut FdsOut, now: Instant) -> Result<TableSnapshot, NotAtRest> {
        if let Some(id) = self.creating.iter().next() {
            return Err(NotAtRest::Creating(id.clone()));
        }
        for p in self.procs.values() {
            if !p.gate.is_idle() {
                return Err(NotAtRest::CallInFlight(p.display()));
            }
            if p.delete.is_some() {
                return Err(NotAtRest::DeleteWaiting(p.display()));
            }
        }
        let mut containers = Vec::new();
        for c in self.containers.values() {
            let process = |key: ProcKey, fds: &mut FdsOut| {
                self.procs.get(&key).map(|p| save_process(key, p, fds, now))
            };
            let Some(init) = process(c.init, fds) else {
                continue;
            };
            let execs = c.execs.values().filter_map(|k| process(*k, fds)).collect();
            containers.push(ContainerSnapshot {
                id: c.id.clone(),
                bundle: c.bundle.clone(),
                paused: c.paused,
                shares_pid_ns: c.shares_pid_ns,
                rootfs_mounted: c.rootfs_mounted.clone(),
                options: c.options.clone(),
                cgroup_procs: c.cgroup_procs.clone(),
                cgroups: c.cgroups.clone(),
                oom: c.oom.as_ref().map(|w| w.save(fds)),
                init,
                execs,
            });
        }
        let mut unclaimed: Vec<_> = self.unclaimed.iter().map(|(p, r)| (*p, *r)).collect();
        unclaimed.sort_by_key(|(p, _)| *p);
        Ok(TableSnapshot {
            containers,
            next_key: self.next_key,
            unclaimed,
            exit_queue: self.exit_queue.iter().copied().collect(),
        })
    }

    /// The table [`Table::save`] described, at `now`, its descriptors taken from `fds`;
    /// each container's runc driver is built again from its options with `runc`. The
    /// pumps and OOM watchers are not registered with a poller yet.
    pub fn restore(
        s: TableSnapshot,
        fds: &mut FdsIn,
        runc: &RuncFactory,
        now: Instant,
    ) -> Result<Table, CarryError> {
        let mut t = Table {
            next_key: s.next_key,
            unclaimed: s.unclaimed.into_iter().collect(),
            exit_queue: s.exit_queue.into_iter().collect(),
            ..Default::default()
        };
        for c in s.containers {
            let init = c.init.key;
            let mut execs = BTreeMap::new();
            for p in std::iter::once(c.init).chain(c.execs) {
                let key = p.key;
                let record = restore_process(&c.id, p, fds, now)?;
                if record.pid > 0 {
                    t.pids.insert(record.pid, key);
                }
                if !record.exec_id.is_empty() {
                    execs.insert(record.exec_id.clone(), key);
                }
                t.procs.insert(key, record);
            }
            let oom = match c.oom {
                Some(o) => Some(OomWatcher::restore(o, fds)?),
                None => None,
            };
            t.containers.insert(
                c.id.clone(),
                ContainerRecord {
                    runc: runc.runc(&c.options, &c.bundle),
                    id: c.id,
                    bundle: c.bundle,
                    init,
                    execs,
                    paused: c.paused,
                    deleting: false,
                    shares_pid_ns: c.shares_pid_ns,
                    rootfs_mounted: c.rootfs_mounted,
                    options: c.options,
                    cgroup_procs: c.cgroup_procs,
                    cgroups: c.cgroups,
                    stat_files: Default::default(),
                    oom,
                    exit_file: None,
                },
            );
        }
        Ok(t)
    }
}

fn save_process(
    key: ProcKey,
    p: &ProcessRecord,
    fds: &mut FdsOut,
    now: Instant,
) -> ProcessSnapshot {
    ProcessSnapshot {
        key,
        exec_id: p.exec_id.clone(),
        pid: p.pid,
        pidfd: p.pidfd.as_ref().map(|f| fds.carry(f)),
        state: *p.state(),
        stdio: p.stdio.clone(),
        launch: p.launch.clone(),
        stdin_closer: p.stdin.closer.as_ref().map(|f| fds.carry(f)),
        stdin_close_requested: p.stdin.close_requested,
        console: p.console.as_ref().map(|f| fds.carry(f)),
        pumps: p.pumps.save(fds, now),
        open_outputs: p.open_outputs,
        exit_wait: p.exit_wait.map(|w| {
            (
                offset_of(w.drain_deadline, now),
                offset_of(w.hold_limit, now),
            )
        }),
        spool_waits: p
            .spool_waits
            .iter()
            .map(|w| (w.stream, offset_of(w.until, now)))
            .collect(),
        waiters: p.waiters.clone(),
    }
}

fn restore_process(
    container_id: &str,
    s: ProcessSnapshot,
    fds: &mut FdsIn,
    now: Instant,
) -> Result<ProcessRecord, CarryError> {
    let mut p = ProcessRecord::new(container_id, &s.exec_id, s.stdio, s.launch);
    *p.state_mut() = s.state;
    p.pid = s.pid;
    p.pidfd = fds.take_opt(s.pidfd)?;
    p.stdin = Stdin {
        closer: fds.take_opt(s.stdin_closer)?.map(File::from),
        close_requested: s.stdin_close_requested,
    };
    p.console = fds.take_opt(s.console)?.map(File::from);
    p.pumps = ProcessStdio::restore(s.pumps, fds, now)?;
    p.open_outputs = s.open_outputs;
    p.exit_wait = s.exit_wait.map(|(drain, hold)| ExitWait {
        drain_deadline: at_offset(drain, now),
        hold_limit: at_offset(hold, now),
    });
    p.spool_waits = s
        .spool_waits
        .into_iter()
        .map(|(stream, until)| SpoolWait {
            stream,
            until: at_offset(until, now),
        })
        .collect();
    p.waiters = s.waiters;
    Ok(p)
}

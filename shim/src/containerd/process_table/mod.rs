//! The process table of the containerd face: every container and process the shim
//! serves, one record each ([`record`]), owned by the event loop alone (no lock: workers
//! never see it), and the rules of what happens when a process exits.
//!
//! Each process's life is one [`ProcState`] ([`proc_state`]: the states and the only
//! transitions between them). Rules the table enforces with it (the races every shim has
//! had):
//! - an exit that arrives while its process is still being started is held until the
//!   start has been reported, so TaskStart/ExecStarted always come before TaskExit;
//! - an exit reaped before the process's pid is known (a fast exec) is kept, keyed by
//!   pid, and claimed when the pid is registered;
//! - the init process's exit is reported after the exits of its exec processes;
//! - the loop is the only reaper and the only owner of the table, so a pid it looks up
//!   has not been reaped (and recycled) behind its back (pidfds on top).
//!
//! The calls' ordering per process is the record's [`gate`]; the plain-data form of the
//! whole table, for a shim that re-executes itself, is [`snapshot`].

pub mod gate;
pub mod proc_state;
pub mod record;
pub mod snapshot;

pub use proc_state::{IllegalTransition, ProcState};
pub use record::{ContainerRecord, LaunchSpec, ProcKey, ProcessRecord, Waiter};

use crate::process_core::reaper::ChildExit;
use fifo::ExitRecord;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::os::fd::OwnedFd;

/// A process exit as the face reports it (TaskExit, answers to Wait, the exit file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exited {
    pub container_id: String,
    pub exec_id: String,
    pub pid: i32,
    pub record: ExitRecord,
}

/// Most unclaimed exits kept (exits of processes the table does not know, e.g. a logger,
/// or an exec whose pid is not registered yet).
const MAX_UNCLAIMED: usize = 1024;

/// Why a lookup found nothing, worded once for every handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    #[error("container {0} not found")]
    Container(String),
    #[error("process {exec} of container {container} not found")]
    Process { container: String, exec: String },
    /// A process left the table while a call on it waited.
    #[error("process {0} is gone")]
    Gone(String),
}

/// A container id the table will not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("container {0} already exists")]
pub struct Taken(pub String);

/// The process table (see the module doc).
#[derive(Debug, Default)]
pub struct Table {
    containers: BTreeMap<String, ContainerRecord>,
    /// Ids whose Create runs on a worker: taken, not usable yet.
    creating: BTreeSet<String>,
    procs: HashMap<ProcKey, ProcessRecord>,
    next_key: u32,
    pids: HashMap<i32, ProcKey>,
    unclaimed: HashMap<i32, ExitRecord>,
    /// Exits recorded and waiting to be reported, in the order they are reported.
    exit_queue: VecDeque<ProcKey>,
}

impl Table {
    /// No container, and none being created.
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.creating.is_empty()
    }

    /// No container made (one whose Create is still on a worker does not count: it may
    /// fail).
    pub fn has_no_containers(&self) -> bool {
        self.containers.is_empty()
    }

    pub fn containers(&self) -> impl Iterator<Item = &ContainerRecord> {
        self.containers.values()
    }

    pub fn container(&self, id: &str) -> Result<&ContainerRecord, Missing> {
        self.containers
            .get(id)
            .ok_or_else(|| Missing::Container(id.to_string()))
    }

    pub fn container_mut(&mut self, id: &str) -> Result<&mut ContainerRecord, Missing> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| Missing::Container(id.to_string()))
    }

    /// The key of process `exec_id` ("" for the init) of container `id`.
    pub fn find(&self, id: &str, exec_id: &str) -> Result<ProcKey, Missing> {
        let c = self.container(id)?;
        if exec_id.is_empty() {
            return Ok(c.init);
        }
        c.execs
            .get(exec_id)
            .copied()
            .ok_or_else(|| Missing::Process {
                container: id.to_string(),
                exec: exec_id.to_string(),
            })
    }

    /// Process `exec_id` ("" for the init) of container `id`, and its key.
    pub fn lookup(&self, id: &str, exec_id: &str) -> Result<(ProcKey, &ProcessRecord), Missing> {
        let key = self.find(id, exec_id)?;
        self.procs
            .get(&key)
            .map(|p| (key, p))
            .ok_or_else(|| Missing::Gone(record::display_id(id, exec_id)))
    }

    /// [`Table::lookup`] for a change.
    pub fn lookup_mut(
        &mut self,
        id: &str,
        exec_id: &str,
    ) -> Result<(ProcKey, &mut ProcessRecord), Missing> {
        let key = self.find(id, exec_id)?;
        self.procs
            .get_mut(&key)
            .map(|p| (key, p))
            .ok_or_else(|| Missing::Gone(record::display_id(id, exec_id)))
    }

    /// The process of `key`, or why a call on it finds nothing.
    pub fn record(&self, key: ProcKey) -> Result<&ProcessRecord, Missing> {
        self.procs
            .get(&key)
            .ok_or_else(|| Missing::Gone(format!("#{}", key.0)))
    }

    pub fn get(&self, key: ProcKey) -> Option<&ProcessRecord> {
        self.procs.get(&key)
    }

    pub fn get_mut(&mut self, key: ProcKey) -> Option<&mut ProcessRecord> {
        self.procs.get_mut(&key)
    }

    /// Every process (for the loop's walks over pumps and gates).
    pub fn processes(&self) -> impl Iterator<Item = (ProcKey, &ProcessRecord)> {
        self.procs.iter().map(|(k, p)| (*k, p))
    }

    pub fn processes_mut(&mut self) -> impl Iterator<Item = (ProcKey, &mut ProcessRecord)> {
        self.procs.iter_mut().map(|(k, p)| (*k, p))
    }

    /// The container a process belongs to.
    pub fn container_of(&self, key: ProcKey) -> Option<&ContainerRecord> {
        self.containers.get(&self.procs.get(&key)?.container_id)
    }

    /// Takes `id` for a Create that runs on a worker: no other Create of it succeeds
    /// until [`Table::insert_container`] or [`Table::release`].
    pub fn reserve(&mut self, id: &str) -> Result<(), Taken> {
        if self.containers.contains_key(id) || !self.creating.insert(id.to_string()) {
            return Err(Taken(id.to_string()));
        }
        Ok(())
    }

    /// A Create failed: its id is free again.
    pub fn release(&mut self, id: &str) {
        self.creating.remove(id);
    }

    fn new_key(&mut self) -> ProcKey {
        loop {
            let key = ProcKey(self.next_key);
            self.next_key = self.next_key.wrapping_add(1);
            if !self.procs.contains_key(&key) {
                return key;
            }
        }
    }

    /// Adds a container reserved by [`Table::reserve`], with its init; returns the init's
    /// key (also `container.init`, which is set here).
    pub fn insert_container(
        &mut self,
        mut container: ContainerRecord,
        init: ProcessRecord,
    ) -> ProcKey {
        self.creating.remove(&container.id);
        let key = self.new_key();
        container.init = key;
        self.procs.insert(key, init);
        self.containers.insert(container.id.clone(), container);
        key
    }

    /// Defines an exec of container `id`.
    pub fn insert_exec(&mut self, id: &str, exec: ProcessRecord) -> Result<ProcKey, Missing> {
        if !self.containers.contains_key(id) {
            return Err(Missing::Container(id.to_string()));
        }
        let key = self.new_key();
        let exec_id = exec.exec_id.clone();
        self.procs.insert(key, exec);
        if let Some(c) = self.containers.get_mut(id) {
            c.execs.insert(exec_id, key);
        }
        Ok(key)
    }

    /// Records that `pid` is process `key`, and returns an exit the reaper already
    /// collected for it. `pidfd` (opened by the launch on a worker) is kept only when the
    /// loop has not reaped `pid` yet: then it surely is that process's (the loop is the
    /// only reaper); otherwise the pid may have been recycled in between, and it is
    /// dropped.
    pub fn register_pid(
        &mut self,
        key: ProcKey,
        pid: i32,
        pidfd: Option<OwnedFd>,
    ) -> Option<ExitRecord> {
        let early = self.unclaimed.remove(&pid);
        self.pids.insert(pid, key);
        if let Some(p) = self.procs.get_mut(&key) {
            p.pid = pid;
            if early.is_none() {
                p.pidfd = pidfd;
            }
        }
        early
    }

    /// Books the exits the loop reaped. Returns the processes whose exit is to be
    /// reported now, in order.
    pub fn on_exits(&mut self, exits: &[ChildExit]) -> Vec<ProcKey> {
        let mut report = Vec::new();
        for exit in exits {
            let record = exit.record();
            let Some(key) = self.pids.get(&exit.pid).copied() else {
                if self.unclaimed.len() >= MAX_UNCLAIMED {
                    self.unclaimed.clear();
                }
                self.unclaimed.insert(exit.pid, record);
                continue;
            };
            let Some(process) = self.procs.get_mut(&key) else {
                continue;
            };
            match process.state() {
                // Reported once the start has been (TaskStart first).
                ProcState::Starting { .. } | ProcState::Started { .. } => {
                    let _ = process.hold_exit(record);
                }
                ProcState::Created | ProcState::Running => {
                    self.finish_exit(key, record, &mut report);
                }
                // Recorded already (a pid exits once).
                _ => {}
            }
        }
        report
    }

    /// An exit claimed by [`Table::register_pid`] for a process that is not being
    /// started (a created init that died at once): records it; returns what to report.
    pub fn early_exit(&mut self, key: ProcKey, record: ExitRecord) -> Vec<ProcKey> {
        let mut report = Vec::new();
        self.finish_exit(key, record, &mut report);
        report
    }

    /// Marks a start as reported; returns what to report now (the exit that arrived
    /// meanwhile).
    pub fn start_done(&mut self, key: ProcKey) -> Vec<ProcKey> {
        let mut report = Vec::new();
        let held = self
            .procs
            .get_mut(&key)
            .and_then(|p| p.state_mut().start_reported().ok().flatten());
        if let Some(record) = held {
            self.finish_exit(key, record, &mut report);
        }
        report
    }

    /// A start failed: the process stays created. Returns what to report now: the exit
    /// it held meanwhile (an init that died while `runc start` failed), or the init exit
    /// it was holding back, if it was the last exec in flight.
    pub fn start_failed(&mut self, key: ProcKey) -> Vec<ProcKey> {
        let mut report = Vec::new();
        let Some(p) = self.procs.get_mut(&key) else {
            return report;
        };
        let held = p.state_mut().start_failed().ok().flatten();
        let container_id = p.container_id.clone();
        if let Some(record) = held {
            self.finish_exit(key, record, &mut report);
            return report;
        }
        report.extend(self.release_init_exit(&container_id));
        report
    }

    /// Execs of the container that run or are being started: the init's exit waits for
    /// them (a start in flight must not see its container reported gone underneath it).
    fn running_execs(&self, c: &ContainerRecord) -> usize {
        c.execs
            .values()
            .filter_map(|k| self.procs.get(k))
            .filter(|p| p.is_alive() || p.state().in_start())
            .count()
    }

    /// The init's exit, deferred until no exec runs, when that time has come.
    fn release_init_exit(&mut self, container_id: &str) -> Option<ProcKey> {
        let c = self.containers.get(container_id)?;
        if self.running_execs(c) > 0 {
            return None;
        }
        let init = c.init;
        self.procs
            .get_mut(&init)?
            .state_mut()
            .release_exit()
            .ok()
            .map(|_| init)
    }

    /// Records an exit and decides what to report: an exec's exit at once (and then a
    /// deferred init exit if it was the last exec); the init's once no exec runs.
    fn finish_exit(&mut self, key: ProcKey, record: ExitRecord, report: &mut Vec<ProcKey>) {
        let Some(container_id) = self.procs.get(&key).map(|p| p.container_id.clone()) else {
            return;
        };
        let Some(container) = self.containers.get(&container_id) else {
            return;
        };
        let is_init = container.init == key;
        let defer = is_init && self.running_execs(container) > 0;
        let Some(process) = self.procs.get_mut(&key) else {
            return;
        };
        if let Err(e) = process.state_mut().exited(record, defer) {
            log::warn!("exit of {}: {e}", process.display());
            return;
        }
        process.pidfd = None;
        if !is_init {
            report.push(key);
            report.extend(self.release_init_exit(&container_id));
            return;
        }
        if container.shares_pid_ns {
            // The kernel does not end them for us: they would outlive their container.
            for exec in container.execs.values().filter_map(|k| self.procs.get(k)) {
                if let Some(fd) = &exec.pidfd {
                    let _ = crate::process_core::pidfd::send_signal(fd, libc::SIGKILL);
                }
            }
            if let Some(procs) = &container.cgroup_procs {
                crate::containerd::kill_all::kill_all(procs);
            }
        }
        if !defer {
            report.push(key);
        }
    }

    /// The exit of `key` as reported.
    pub fn exited(&self, key: ProcKey) -> Option<Exited> {
        let p = self.procs.get(&key)?;
        Some(Exited {
            container_id: p.container_id.clone(),
            exec_id: p.exec_id.clone(),
            pid: p.pid,
            record: p.exit()?,
        })
    }

    /// Marks an exit as reported; true the first time (its parked Waits may be answered
    /// now, once its spools have drained and its FIFOs been read: `Shim::answer_settled_waits`),
    /// false for a process reported already or unknown.
    pub fn exit_delivered(&mut self, key: ProcKey) -> bool {
        self.procs
            .get_mut(&key)
            .is_some_and(|p| p.state_mut().delivered().is_ok())
    }

    /// The exits waiting to be reported, in order (see the loop's exit report).
    pub fn exit_queue(&self) -> &VecDeque<ProcKey> {
        &self.exit_queue
    }

    /// Queues the exit of `key` to be reported.
    pub fn queue_exit(&mut self, key: ProcKey) {
        self.exit_queue.push_back(key);
    }

    /// Takes the exit at `index` of the queue off it (it is being reported).
    pub fn unqueue_exit(&mut self, index: usize) -> Option<ProcKey> {
        let key = self.exit_queue.remove(index)?;
        if let Some(p) = self.procs.get_mut(&key) {
            p.exit_wait = None;
        }
        Some(key)
    }

    /// Removes an exec (Delete); its pid is forgotten.
    pub fn remove_exec(&mut self, key: ProcKey) -> Option<ProcessRecord> {
        let p = self.procs.remove(&key)?;
        self.forget(key, &p);
        if let Some(c) = self.containers.get_mut(&p.container_id) {
            c.execs.remove(&p.exec_id);
        }
        Some(p)
    }

    /// Removes a container and its processes (Delete).
    pub fn remove_container(
        &mut self,
        id: &str,
    ) -> Option<(ContainerRecord, Vec<(ProcKey, ProcessRecord)>)> {
        let c = self.containers.remove(id)?;
        let mut procs = Vec::new();
        for key in std::iter::once(c.init).chain(c.execs.values().copied()) {
            if let Some(p) = self.procs.remove(&key) {
                self.forget(key, &p);
                procs.push((key, p));
            }
        }
        Some((c, procs))
    }

    fn forget(&mut self, key: ProcKey, p: &ProcessRecord) {
        if self.pids.get(&p.pid) == Some(&key) {
            self.pids.remove(&p.pid);
        }
        self.exit_queue.retain(|k| *k != key);
    }
}

#[cfg(test)]
mod tests;

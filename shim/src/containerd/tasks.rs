//! The process table: containers, their processes, and what happens when a process exits.
//!
//! Each process's life is one [`ProcState`] (`containerd::proc_state`: the states and
//! the only transitions between them). Rules the table enforces with it (the races every
//! shim has had):
//! - an exit that arrives while its process is still being started is held until the
//!   start has been reported, so TaskStart/ExecStarted always come before TaskExit;
//! - an exit reaped before the process's pid is known (a fast exec) is kept, keyed by
//!   pid, and claimed when the pid is registered;
//! - the init process's exit is reported after the exits of its exec processes;
//! - pids are only looked up and signalled under the table's lock, and the reaper reaps
//!   under the same lock, so a recycled pid is never signalled (pidfds on top).

pub use crate::containerd::proc_state::{IllegalTransition, ProcState};
use crate::supervisor::reaper::ChildExit;
use fifo::ExitRecord;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use crate::supervisor::stdio::StdioConfig;

/// Someone waiting for a process to exit: a ttrpc call to answer (connection, stream).
pub type Waiter = (u32, u32);

/// One process of a container: the init (exec id "") or an exec.
#[derive(Debug)]
pub struct Process {
    pub exec_id: String,
    pub pid: i32,
    pub pidfd: Option<OwnedFd>,
    /// Where it is in its life; changed only through its transitions. Until its exit
    /// has been reported a Wait parks even though the exit is recorded: no caller learns
    /// of an exit before the reply of the call that caused it (see
    /// `containerd::call_gate`).
    state: ProcState,
    pub stdio: StdioConfig,
    /// The OCI process spec of an exec (JSON).
    pub spec: Vec<u8>,
    /// Dropping it closes the process's stdin (CloseIO).
    pub stdin_closer: Option<File>,
    /// The pty master, for resizing.
    pub console: Option<File>,
    /// Pumps of this process still moving bytes.
    pub open_pumps: usize,
    /// Output streams whose source has ended while their spool still holds bytes for a
    /// reader: Wait answers wait for them (bounded by the containerd face's loop).
    pub spooling: usize,
    pub waiters: Vec<Waiter>,
}

impl Process {
    pub fn new(exec_id: &str, stdio: StdioConfig, spec: Vec<u8>) -> Self {
        Process {
            exec_id: exec_id.to_string(),
            pid: 0,
            pidfd: None,
            state: ProcState::Created,
            stdio,
            spec,
            stdin_closer: None,
            console: None,
            open_pumps: 0,
            spooling: 0,
            waiters: Vec::new(),
        }
    }

    /// Running, or created with a live pid (an init before start).
    pub fn is_alive(&self) -> bool {
        self.exit().is_none() && self.pid > 0
    }

    /// Where it is in its life.
    pub fn state(&self) -> &ProcState {
        &self.state
    }

    /// Its recorded exit (not one held while its start is in flight).
    pub fn exit(&self) -> Option<ExitRecord> {
        self.state.exit()
    }

    /// A Start call takes the process (it must be created, not started yet).
    pub fn begin_start(&mut self) -> Result<(), IllegalTransition> {
        self.state.begin_start()
    }

    /// runc has started it; its exits stay held until [`Tasks::start_done`].
    pub fn launched(&mut self) -> Result<(), IllegalTransition> {
        self.state.launched()
    }

    /// Holds an exit reaped while its start is in flight.
    pub fn hold_exit(&mut self, record: ExitRecord) -> Result<(), IllegalTransition> {
        self.state.hold_exit(record)
    }
}

/// A container: its init process and execs.
#[derive(Debug)]
pub struct Container {
    pub bundle: PathBuf,
    pub init: Process,
    pub execs: HashMap<String, Process>,
    pub paused: bool,
    /// No pid namespace of its own: the init's exit does not end the other processes, so
    /// the supervisor kills them.
    pub shares_pid_ns: bool,
    /// Where the rootfs was mounted by us (to unmount on delete).
    pub rootfs_mounted: Option<PathBuf>,
    /// The runc driver for this container (its binary, root and log).
    pub runc: runc_wrapper::Runc,
    /// The runtime options it was created with (Create's over `start`'s), kept so that no
    /// call reads `options.json` again.
    pub options: crate::containerd::options::RuncOptions,
    /// Its cgroup's process list, to kill what is left when a shared-pid-namespace init
    /// dies.
    pub cgroup_procs: Option<PathBuf>,
    /// Its init's cgroups, resolved when the init was created (or restored): Stats reads
    /// them until Delete, also once the init has exited and its pid is gone (containerd
    /// asks for Stats after a 137 exit to check for an OOM, as the Go shim answers).
    pub cgroups: Option<crate::cgroups::ProcessCgroups>,
}

impl Container {
    pub fn process(&self, exec_id: &str) -> Option<&Process> {
        if exec_id.is_empty() {
            Some(&self.init)
        } else {
            self.execs.get(exec_id)
        }
    }

    pub fn process_mut(&mut self, exec_id: &str) -> Option<&mut Process> {
        if exec_id.is_empty() {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(exec_id)
        }
    }

    /// Execs that run or are being started: the init's exit waits for them (a start in
    /// flight must not see its container reported gone underneath it).
    fn running_execs(&self) -> usize {
        self.execs
            .values()
            .filter(|p| p.is_alive() || p.state.in_start())
            .count()
    }

    /// Whether the init's exit has been reported (an exit held back for execs has not).
    pub fn init_exit_reported(&self) -> bool {
        self.init.state.exit_released()
    }

    /// The init's exit, deferred until no exec runs, when that time has come.
    fn release_init_exit(&mut self, container_id: &str) -> Option<Exited> {
        if self.running_execs() > 0 {
            return None;
        }
        let record = self.init.state.release_exit().ok()?;
        Some(Exited {
            container_id: container_id.to_string(),
            exec_id: String::new(),
            pid: self.init.pid,
            record,
        })
    }
}

/// A process exit the faces report (TaskExit, answers to Wait, the exitcode file).
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

/// The process table.
#[derive(Debug, Default)]
pub struct Tasks {
    pub containers: HashMap<String, Container>,
    pids: HashMap<i32, (String, String)>,
    unclaimed: HashMap<i32, ExitRecord>,
}

impl Tasks {
    pub fn container(&self, id: &str) -> Option<&Container> {
        self.containers.get(id)
    }

    pub fn container_mut(&mut self, id: &str) -> Option<&mut Container> {
        self.containers.get_mut(id)
    }

    /// Records that `pid` is process `exec_id` of `container_id`, and returns an exit the
    /// reaper already collected for it. `pidfd` (opened by the launch, before this) is
    /// kept only when the reaper has not reaped `pid` yet: then it surely is that
    /// process's (the reaper reaps under the table lock the caller holds); otherwise the
    /// pid may have been recycled in between, and it is dropped.
    pub fn register_pid(
        &mut self,
        container_id: &str,
        exec_id: &str,
        pid: i32,
        pidfd: Option<OwnedFd>,
    ) -> Option<ExitRecord> {
        let early = self.unclaimed.remove(&pid);
        self.pids
            .insert(pid, (container_id.to_string(), exec_id.to_string()));
        if let Some(p) = self
            .containers
            .get_mut(container_id)
            .and_then(|c| c.process_mut(exec_id))
        {
            p.pid = pid;
            if early.is_none() {
                p.pidfd = pidfd;
            }
        }
        early
    }

    /// Forgets a process's pid (on delete).
    pub fn unregister_pid(&mut self, pid: i32) {
        self.pids.remove(&pid);
    }

    /// Books the exits the reaper collected. Returns the exits to report now, in order.
    pub fn on_exits(&mut self, exits: &[ChildExit]) -> Vec<Exited> {
        let mut report = Vec::new();
        for exit in exits {
            let record = exit.record();
            let Some((cid, eid)) = self.pids.get(&exit.pid).cloned() else {
                if self.unclaimed.len() >= MAX_UNCLAIMED {
                    self.unclaimed.clear();
                }
                self.unclaimed.insert(exit.pid, record);
                continue;
            };
            let Some(process) = self
                .containers
                .get_mut(&cid)
                .and_then(|c| c.process_mut(&eid))
            else {
                continue;
            };
            match process.state {
                // Reported once the start has been (TaskStart first).
                ProcState::Starting { .. } | ProcState::Started { .. } => {
                    let _ = process.state.hold_exit(record);
                }
                ProcState::Created | ProcState::Running => {
                    self.finish_exit(&cid, &eid, record, &mut report);
                }
                // Recorded already (a pid exits once).
                _ => {}
            }
        }
        report
    }

    /// Marks a start as reported; returns the exit that arrived meanwhile, now reported.
    pub fn start_done(&mut self, container_id: &str, exec_id: &str) -> Vec<Exited> {
        let mut report = Vec::new();
        let held = self
            .containers
            .get_mut(container_id)
            .and_then(|c| c.process_mut(exec_id))
            .and_then(|p| p.state.start_reported().ok().flatten());
        if let Some(record) = held {
            self.finish_exit(container_id, exec_id, record, &mut report);
        }
        report
    }

    /// Records an exit and decides what to report: an exec's exit at once (and then a
    /// deferred init exit if it was the last exec); the init's once no exec runs.
    pub fn finish_exit(
        &mut self,
        container_id: &str,
        exec_id: &str,
        record: ExitRecord,
        report: &mut Vec<Exited>,
    ) {
        let Some(container) = self.containers.get_mut(container_id) else {
            return;
        };
        let defer = exec_id.is_empty() && container.running_execs() > 0;
        let Some(process) = container.process_mut(exec_id) else {
            return;
        };
        if let Err(e) = process.state.exited(record, defer) {
            log::warn!("exit of {container_id}/{exec_id}: {e}");
            return;
        }
        process.pidfd = None;
        let pid = process.pid;
        if exec_id.is_empty() {
            if container.shares_pid_ns {
                // The kernel does not end them for us: they would outlive their container.
                for exec in container.execs.values() {
                    if let Some(fd) = &exec.pidfd {
                        let _ = crate::supervisor::pidfd::send_signal(fd, libc::SIGKILL);
                    }
                }
                if let Some(procs) = &container.cgroup_procs {
                    crate::containerd::kill_all::kill_all(procs);
                }
            }
            if defer {
                return;
            }
            report.push(Exited {
                container_id: container_id.to_string(),
                exec_id: String::new(),
                pid,
                record,
            });
            return;
        }
        report.push(Exited {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            pid,
            record,
        });
        report.extend(container.release_init_exit(container_id));
    }

    /// A start failed: the process stays created. Returns what to report now: the exit
    /// it held meanwhile (an init that died while `runc start` failed), and the init exit
    /// it was holding back, if it was the last exec in flight.
    pub fn start_failed(&mut self, container_id: &str, exec_id: &str) -> Vec<Exited> {
        let mut report = Vec::new();
        let Some(c) = self.containers.get_mut(container_id) else {
            return report;
        };
        let held = c
            .process_mut(exec_id)
            .and_then(|p| p.state.start_failed().ok().flatten());
        if let Some(record) = held {
            self.finish_exit(container_id, exec_id, record, &mut report);
            return report;
        }
        report.extend(c.release_init_exit(container_id));
        report
    }

    /// Marks an exit as reported and hands over the Waits parked on it. Returns nothing
    /// for a process the table no longer has.
    pub fn exit_delivered(&mut self, container_id: &str, exec_id: &str) -> Vec<Waiter> {
        match self
            .containers
            .get_mut(container_id)
            .and_then(|c| c.process_mut(exec_id))
        {
            Some(p) => {
                if p.state.delivered().is_err() {
                    // Reported already: its Waits were handed over then.
                    return Vec::new();
                }
                if p.spooling > 0 {
                    // Answered once the spools have drained (see `spool_settled`).
                    return Vec::new();
                }
                std::mem::take(&mut p.waiters)
            }
            None => Vec::new(),
        }
    }

    /// A process's output stream has a spool still draining after its source ended.
    pub fn spool_draining(&mut self, container_id: &str, exec_id: &str) {
        if let Some(p) = self
            .containers
            .get_mut(container_id)
            .and_then(|c| c.process_mut(exec_id))
        {
            p.spooling += 1;
        }
    }

    /// One of the process's spools has drained (or Wait stopped waiting for it): when it
    /// was the last and the exit has been reported, the parked Waits may be answered now:
    /// returned with the exit.
    pub fn spool_settled(
        &mut self,
        container_id: &str,
        exec_id: &str,
    ) -> Option<(ExitRecord, Vec<Waiter>)> {
        let p = self
            .containers
            .get_mut(container_id)
            .and_then(|c| c.process_mut(exec_id))?;
        p.spooling = p.spooling.saturating_sub(1);
        if p.spooling > 0 || !p.state.exit_reported() {
            return None;
        }
        Some((p.exit()?, std::mem::take(&mut p.waiters)))
    }

    /// Removes a container and its pids from the table.
    pub fn remove_container(&mut self, id: &str) -> Option<Container> {
        let c = self.containers.remove(id)?;
        self.pids.remove(&c.init.pid);
        for e in c.execs.values() {
            self.pids.remove(&e.pid);
        }
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_with(id: &str) -> Tasks {
        let mut t = Tasks::default();
        t.containers.insert(
            id.into(),
            Container {
                bundle: "/b".into(),
                init: Process::new("", StdioConfig::default(), Vec::new()),
                execs: HashMap::new(),
                paused: false,
                shares_pid_ns: false,
                rootfs_mounted: None,
                runc: runc_wrapper::Runc::new(),
                options: Default::default(),
                cgroup_procs: None,
                cgroups: None,
            },
        );
        t
    }

    fn exit(pid: i32, code: i32) -> ChildExit {
        ChildExit {
            pid,
            status: code << 8,
            at: std::time::SystemTime::now(),
        }
    }

    // Pids far above pid_max so register_pid's pidfd_open never finds a real process.
    const P1: i32 = 1 << 30;
    const P2: i32 = (1 << 30) + 1;

    #[test]
    fn exit_during_start_is_held_until_start_is_reported() {
        let mut t = table_with("c");
        t.register_pid("c", "", P1, None);
        let init = &mut t.container_mut("c").unwrap().init;
        init.begin_start().unwrap();
        assert!(t.on_exits(&[exit(P1, 3)]).is_empty());
        let init = &mut t.container_mut("c").unwrap().init;
        init.launched().unwrap();
        assert!(t.on_exits(&[exit(P1, 4)]).is_empty());
        let report = t.start_done("c", "");
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].record.code, 3);
    }

    #[test]
    fn an_exit_held_by_a_start_that_failed_is_reported() {
        let mut t = table_with("c");
        t.register_pid("c", "", P1, None);
        t.container_mut("c").unwrap().init.begin_start().unwrap();
        assert!(t.on_exits(&[exit(P1, 137)]).is_empty(), "held");
        let report = t.start_failed("c", "");
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].record.code, 137);
        assert!(t.container("c").unwrap().init_exit_reported());
    }

    /// Container "c" with its init (P1) running and an exec "e" whose Start is in flight.
    fn table_with_exec_starting() -> Tasks {
        let mut t = table_with("c");
        t.register_pid("c", "", P1, None);
        let e = Process::new("e", StdioConfig::default(), Vec::new());
        t.container_mut("c").unwrap().execs.insert("e".into(), e);
        let e = t.container_mut("c").unwrap().process_mut("e").unwrap();
        e.begin_start().unwrap();
        t
    }

    #[test]
    fn an_exec_whose_start_fails_releases_the_init_exit_it_held_back() {
        let mut t = table_with_exec_starting();
        assert!(
            t.on_exits(&[exit(P1, 1)]).is_empty(),
            "deferred for the exec"
        );
        let report = t.start_failed("c", "e");
        let order: Vec<_> = report.iter().map(|e| e.exec_id.as_str()).collect();
        assert_eq!(order, [""]);
        let e = t.container("c").unwrap().process("e").unwrap();
        assert_eq!(*e.state(), ProcState::Created);
    }

    #[test]
    fn early_exec_exit_is_claimed_by_pid() {
        let mut t = table_with("c");
        t.register_pid("c", "", P1, None);
        t.container_mut("c").unwrap().execs.insert(
            "e".into(),
            Process::new("e", StdioConfig::default(), Vec::new()),
        );
        assert!(t.on_exits(&[exit(P2, 5)]).is_empty());
        let early = t.register_pid("c", "e", P2, None).expect("claimed");
        assert_eq!(early.code, 5);
    }

    #[test]
    fn init_exit_is_reported_after_its_execs() {
        let mut t = table_with_exec_starting();
        let e = t.container_mut("c").unwrap().process_mut("e").unwrap();
        e.launched().unwrap();
        t.register_pid("c", "e", P2, None);
        assert!(t.start_done("c", "e").is_empty());
        assert!(t.on_exits(&[exit(P1, 137)]).is_empty(), "init held back");
        assert!(!t.container("c").unwrap().init_exit_reported());
        let report = t.on_exits(&[exit(P2, 0)]);
        let order: Vec<_> = report.iter().map(|e| e.exec_id.as_str()).collect();
        assert_eq!(order, ["e", ""]);
        assert_eq!(report[1].record.code, 137);
        assert!(t.container("c").unwrap().init_exit_reported());
    }

    #[test]
    fn waits_parked_before_delivery_are_handed_over_once() {
        let mut t = table_with("c");
        t.register_pid("c", "", P1, None);
        let report = t.on_exits(&[exit(P1, 9)]);
        assert_eq!(report.len(), 1);
        let init = &mut t.container_mut("c").unwrap().init;
        assert!(
            matches!(init.state(), ProcState::ExitQueued(_)),
            "recorded, not reported"
        );
        init.waiters.push((1, 3));
        assert_eq!(t.exit_delivered("c", ""), vec![(1, 3)]);
        assert!(t.container("c").unwrap().init.state().exit_reported());
        assert!(t.exit_delivered("c", "").is_empty(), "handed over once");
        assert!(t.exit_delivered("gone", "").is_empty());
    }

    #[test]
    fn unknown_pids_do_not_grow_without_bound() {
        let mut t = Tasks::default();
        let exits: Vec<_> = (0..3000).map(|i| exit(P1 + i, 0)).collect();
        t.on_exits(&exits);
        assert!(t.unclaimed.len() <= MAX_UNCLAIMED);
    }
}

//! Delete: a process leaves the table once its exit has been reported and its output has
//! gone where it goes.
//!
//! A Delete enters its process's gate and then waits, on the loop, in three stages
//! ([`Shim::progress_deletes`], run by the loop after every event):
//! 1. until the exit has been reported and the output pumps have reached EOF (bounded,
//!    [`SETTLE_WAIT`], as the Go shim waits for its IO), so that TaskExit and the answers
//!    to parked Waits come before TaskDelete;
//! 2. while a reader is taking output still spooled (`process_stdio::DeleteLinger`: up
//!    to 10 s, not at all with nobody reading); what is left then is dropped and logged;
//! 3. then an exec is removed on the loop; a container's runc state and rootfs mount go
//!    on a worker, and the loop removes it when that is done.

use super::lifecycle::unmount;
use super::{encode, Outcome, Shim, Step};
use crate::containerd::call::CallRef;
use crate::containerd::errors::*;
use crate::containerd::events::task_events::{event_exit_status, event_pid};
use crate::containerd::events::timestamp;
use crate::containerd::process_table::record::PendingDelete;
use crate::containerd::process_table::{Missing, ProcKey};
use crate::containerd::ttrpc::Reply;
use crate::process_core::epoll::Poller;
use crate::process_core::process_stdio::{Backlog, DeleteLinger, Linger};
use containerd_shim_protos::shim::shim as api;
use std::time::{Duration, Instant, SystemTime};

/// How long Delete waits for the exit report and the output's end (as the Go shim waits
/// for its IO).
pub const SETTLE_WAIT: Duration = Duration::from_secs(2);

/// A Delete whose waiting is over: what the loop does with it now.
#[derive(Debug)]
pub struct Settled {
    pub key: ProcKey,
    pub call: CallRef,
    pub step: Step,
}

impl Shim {
    pub(super) fn delete(
        &mut self,
        call: &CallRef,
        r: api::DeleteRequest,
        poller: &Poller,
    ) -> Step {
        let (key, p) = match self.table.lookup_mut(&r.id, &r.exec_id) {
            Ok(found) => found,
            Err(m) => return Step::Reply(Err(m.into())),
        };
        p.delete = Some(PendingDelete {
            call: *call,
            settle_by: Instant::now() + SETTLE_WAIT,
            linger: None,
        });
        // Often settled already (the exit was reported long ago): act now.
        match self.progress_delete(key, Instant::now(), poller) {
            Progress::Wait(_) => Step::Waiting,
            Progress::Done(step) => {
                if let Some(p) = self.table.get_mut(key) {
                    p.delete = None;
                }
                step
            }
        }
    }

    /// Carries every waiting Delete on as far as it can go now. Returns those whose
    /// waiting is over (to answer, or to run on a worker) and when to look again.
    pub fn progress_deletes(
        &mut self,
        now: Instant,
        poller: &Poller,
    ) -> (Vec<Settled>, Option<Instant>) {
        let waiting: Vec<ProcKey> = self
            .table
            .processes()
            .filter(|(_, p)| p.delete.is_some())
            .map(|(k, _)| k)
            .collect();
        let mut settled = Vec::new();
        let mut next: Option<Instant> = None;
        for key in waiting {
            match self.progress_delete(key, now, poller) {
                Progress::Wait(at) => next = earliest(next, at),
                Progress::Done(step) => {
                    if let Some(d) = self.table.get_mut(key).and_then(|p| p.delete.take()) {
                        settled.push(Settled {
                            key,
                            call: d.call,
                            step,
                        });
                    }
                }
            }
        }
        (settled, next)
    }

    fn progress_delete(&mut self, key: ProcKey, now: Instant, poller: &Poller) -> Progress {
        let p = match self.table.record(key) {
            Ok(p) => p,
            Err(m) => return Progress::Done(Step::Reply(Err(m.into()))),
        };
        let Some(d) = &p.delete else {
            return Progress::Wait(None);
        };
        // Stage 1: the exit reported and the output at EOF (a live process: nothing to
        // wait for, the checks below refuse it).
        let settled = p.exit().is_none() || (p.open_outputs == 0 && p.state().exit_reported());
        if !settled && now < d.settle_by {
            return Progress::Wait(Some(d.settle_by));
        }
        // Stage 2: spooled output a reader is taking (the pumps run first: the room a
        // reader made a moment ago shows as bytes taken).
        for k in self.covered_by_delete(key) {
            self.pump_now(k, poller);
        }
        let Some(d) = self.table.get(key).and_then(|p| p.delete.as_ref()) else {
            return Progress::Wait(None);
        };
        let linger = d.linger.unwrap_or(DeleteLinger::new(now));
        if let Some(p) = self.table.get_mut(key) {
            if let Some(d) = &mut p.delete {
                d.linger = Some(linger);
            }
        }
        match linger.check(self.backlog_of(key), now) {
            Linger::Wait(at) => return Progress::Wait(Some(at)),
            Linger::Drained => {
                let waited = now.saturating_duration_since(linger.since());
                if waited >= Duration::from_millis(1) {
                    log::info!(
                        "delete of {}: the reader took the spooled output in {waited:?}",
                        self.display(key)
                    );
                }
            }
            Linger::Drop { spooled, why } => log::warn!(
                "delete of {}: {spooled} spooled bytes dropped unread ({why}; waited {:?})",
                self.display(key),
                now.saturating_duration_since(linger.since())
            ),
        }
        // Stage 3.
        Progress::Done(self.delete_now(key, poller))
    }

    /// The processes a Delete of `key` covers: the process; for an init, the container's
    /// execs too.
    fn covered_by_delete(&self, key: ProcKey) -> Vec<ProcKey> {
        let Some(p) = self.table.get(key) else {
            return Vec::new();
        };
        let mut keys = vec![key];
        if p.exec_id.is_empty() {
            if let Ok(c) = self.table.container(&p.container_id) {
                keys.extend(c.execs.values().copied());
            }
        }
        keys
    }

    /// What is still spooled for the processes a Delete of `key` covers, counting only
    /// processes that have exited.
    fn backlog_of(&self, key: ProcKey) -> Backlog {
        self.covered_by_delete(key)
            .iter()
            .filter_map(|k| self.table.get(*k))
            .filter(|p| p.pumps.drain_deadline().is_some())
            .map(|p| p.pumps.backlog())
            .fold(Backlog::default(), Backlog::and)
    }

    fn display(&self, key: ProcKey) -> String {
        self.table.get(key).map(|p| p.display()).unwrap_or_default()
    }

    /// Deletes an exec now, or hands a container's deletion to a worker.
    fn delete_now(&mut self, key: ProcKey, poller: &Poller) -> Step {
        let p = match self.table.record(key) {
            Ok(p) => p,
            Err(m) => return Step::Reply(Err(m.into())),
        };
        let id = p.container_id.clone();
        if !p.exec_id.is_empty() {
            if p.is_alive() || p.state().in_start() {
                return Step::Reply(Err(failed_precondition(format!(
                    "process {} is running: kill it before deleting it",
                    p.exec_id
                ))));
            }
            let Some(p) = self.table.remove_exec(key) else {
                return Step::Reply(Err(Missing::Gone(id).into()));
            };
            // Its pid file went when it started (`StartedProcess::spent_pid_file`).
            let (pid, exit) = (p.pid, p.exit());
            self.forget_process(key, p, poller);
            return Step::Reply(encode(delete_response(pid, exit)));
        }
        let c = match self.table.container(&id) {
            Ok(c) => c,
            Err(m) => return Step::Reply(Err(m.into())),
        };
        if p.is_alive() && p.state().is_running() {
            return Step::Reply(Err(failed_precondition(format!(
                "container {id} is running: kill it before deleting it"
            ))));
        }
        let runc = c.runc.clone();
        let mounted = c.rootfs_mounted.clone();
        if let Ok(c) = self.table.container_mut(&id) {
            // Until the worker is done: a Start or Exec now would race `runc delete`.
            c.deleting = true;
        }
        Step::Work(Box::new(move || {
            let result = delete_container(&runc, &id).map(|()| {
                if let Some(path) = &mounted {
                    unmount(path);
                }
            });
            Outcome::ContainerDeleted { id, result }
        }))
    }

    /// runc's state and the rootfs are gone: removes the container and everything the
    /// loop kept for it.
    pub(super) fn container_deleted(
        &mut self,
        id: &str,
        result: RpcResult<()>,
        poller: &Poller,
    ) -> Reply {
        if let Err(e) = result {
            if let Ok(c) = self.table.container_mut(id) {
                c.deleting = false;
            }
            return Err(e);
        }
        let Some((c, procs)) = self.table.remove_container(id) else {
            return Err(Missing::Container(id.to_string()).into());
        };
        let mut init = (0, None);
        for (key, p) in procs {
            if key == c.init {
                init = (p.pid, p.exit());
            }
            self.forget_process(key, p, poller);
        }
        if let Some(w) = &c.oom {
            poller.remove(w.fd());
        }
        self.retired.container(c);
        let (pid, exit) = init;
        let (code, at) = exit
            .map(|e| (e.code, e.exited_at))
            .unwrap_or((0, SystemTime::now()));
        self.events.delete(id, pid, code, at);
        encode(delete_response(pid, exit))
    }

    /// A process left the table: its pumps stop (what is still spooled is dropped), its
    /// parked Waits get the exit, its queued calls are answered as calls on a process
    /// that is gone.
    fn forget_process(
        &mut self,
        _key: ProcKey,
        mut p: crate::containerd::process_table::ProcessRecord,
        poller: &Poller,
    ) {
        p.pumps.close_all(poller);
        if let Some(exit) = p.exit() {
            let reply = super::wait_reply(exit.code, exit.exited_at);
            for w in std::mem::take(&mut p.waiters) {
                self.answer(w.conn, w.stream, reply.clone());
            }
        }
        for queued in p.gate.drain() {
            self.gone.push(queued);
        }
        self.retired.process(p);
    }
}

enum Progress {
    /// Look again by then (or on the next event).
    Wait(Option<Instant>),
    Done(Step),
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `runc delete`, forced if the plain one fails for another reason than "not found".
fn delete_container(runc: &runc_wrapper::Runc, id: &str) -> RpcResult<()> {
    if let Err(e) = runc.delete(id, false) {
        if !e.is_not_found() {
            if let Err(e2) = runc.delete(id, true) {
                if !e2.is_not_found() {
                    return Err(from_runc(e2));
                }
            }
        }
    }
    Ok(())
}

fn delete_response(pid: i32, exit: Option<fifo::ExitRecord>) -> api::DeleteResponse {
    let mut d = api::DeleteResponse::new();
    d.pid = event_pid(pid);
    let (code, at) = exit
        .map(|e| (e.code, e.exited_at))
        .unwrap_or((0, SystemTime::now()));
    d.exit_status = event_exit_status(code);
    d.exited_at = timestamp(at);
    d
}

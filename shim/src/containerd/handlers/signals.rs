//! Kill, Pause and Resume. An exec, and a running init of a container that has a pid
//! namespace of its own and is not paused, are signalled on the loop through their pidfd,
//! as `runc kill` itself signals an init; every other Kill of an init (`--all`, paused,
//! created, sharing a pid namespace) goes to `runc kill` on a worker.

use super::{reply_job, Outcome, Shim, Step};
use crate::containerd::errors::*;
use crate::containerd::process_table::ProcessRecord;
use crate::containerd::ttrpc::Reply;
use containerd_shim_protos::shim::shim as api;
use protobuf::well_known_types::empty::Empty;

/// The answer to a signal for a process that is gone, as the Go shim words it.
fn already_finished() -> ttrpc::proto::Status {
    not_found("process already finished")
}

/// Signals `p` on the loop and answers the Kill. The loop is the only reaper: the pid has
/// not been reaped (and recycled) unless the record says the process exited; the pidfd
/// makes it exact anyway. A process gone meanwhile is "already finished", as the Go shim
/// answers; a signal number the kernel refuses is invalid.
fn signal_directly(p: &ProcessRecord, signal: i32) -> Reply {
    match crate::process_core::pidfd::signal_process(p.pidfd.as_ref(), p.pid, signal) {
        Ok(()) => super::encode(Empty::new()),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Err(already_finished()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            Err(invalid(format!("bad signal {signal}")))
        }
        Err(e) => Err(internal(format!("kill: {e}"))),
    }
}

impl Shim {
    pub(super) fn kill(&mut self, r: api::KillRequest) -> Step {
        match self.kill_step(r) {
            Ok(step) => step,
            Err(e) => Step::Reply(Err(e)),
        }
    }

    fn kill_step(&mut self, r: api::KillRequest) -> RpcResult<Step> {
        let signal = i32::try_from(r.signal).map_err(|_| invalid("signal out of range"))?;
        let c = self.table.container(&r.id)?;
        if !r.exec_id.is_empty() {
            let key = self.table.find(&r.id, &r.exec_id)?;
            let Some(p) = self.table.get(key) else {
                return Err(already_finished());
            };
            if p.exit().is_some() {
                return Err(already_finished());
            }
            if p.pid <= 0 {
                return Err(not_found(format!("process {} not started", r.exec_id)));
            }
            return Ok(Step::Reply(signal_directly(p, signal)));
        }
        let init = self.table.get(c.init);
        let init_exited = init.is_none_or(|p| p.exit().is_some());
        if init_exited && !r.all {
            return Err(already_finished());
        }
        // What `runc kill` without --all does for a running container is kill(2) on its
        // init's pid, and nothing more unless the container is paused (a SIGKILL then
        // thaws it) or has no pid namespace of its own (runc 1.2 then SIGKILLs every
        // process of its cgroup). Outside those the shim sends the same signal itself,
        // through the pidfd, which no recycled pid can fool: no runtime process to spawn,
        // and the Kill is answered in this turn, before its exit can be reaped.
        let only_a_signal = !r.all && !c.paused && !c.shares_pid_ns;
        if let Some(p) = init.filter(|p| only_a_signal && p.state().is_running() && p.pid > 0) {
            return Ok(Step::Reply(signal_directly(p, signal)));
        }
        let runc = c.runc.clone();
        Ok(reply_job(move || match runc.kill(&r.id, signal, r.all) {
            Ok(()) => super::encode(Empty::new()),
            // As the Go shim answers a signal to a process that is gone.
            Err(e) if e.kind() == runc_wrapper::ErrorKind::NotRunning => Err(already_finished()),
            Err(e) => Err(from_runc(e)),
        }))
    }

    pub(super) fn pause(&mut self, r: api::PauseRequest) -> Step {
        let runc = match self.table.container(&r.id) {
            Ok(c) => c.runc.clone(),
            Err(m) => return Step::Reply(Err(m.into())),
        };
        Step::Work(Box::new(move || {
            let result = runc.pause(&r.id).map_err(from_runc);
            Outcome::Paused { id: r.id, result }
        }))
    }

    pub(super) fn paused(&mut self, id: &str, result: RpcResult<()>) -> Reply {
        result?;
        if let Ok(c) = self.table.container_mut(id) {
            c.paused = true;
        }
        self.events.paused(id);
        super::encode(Empty::new())
    }

    pub(super) fn resume(&mut self, r: api::ResumeRequest) -> Step {
        let runc = match self.table.container(&r.id) {
            Ok(c) => c.runc.clone(),
            Err(m) => return Step::Reply(Err(m.into())),
        };
        Step::Work(Box::new(move || {
            let result = runc.resume(&r.id).map_err(from_runc);
            Outcome::Resumed { id: r.id, result }
        }))
    }

    pub(super) fn resumed(&mut self, id: &str, result: RpcResult<()>) -> Reply {
        result?;
        if let Ok(c) = self.table.container_mut(id) {
            c.paused = false;
        }
        self.events.resumed(id);
        super::encode(Empty::new())
    }
}

//! Kill, Pause and Resume. An exec is signalled on the loop through its pidfd; the init
//! through `runc kill` on a worker.

use super::{reply_job, Outcome, Shim, Step};
use crate::containerd::errors::*;
use crate::containerd::ttrpc::Reply;
use containerd_shim_protos::shim::shim as api;
use protobuf::well_known_types::empty::Empty;

/// The answer to a signal for a process that is gone, as the Go shim words it.
fn already_finished() -> ttrpc::proto::Status {
    not_found("process already finished")
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
            // The loop is the only reaper: this pid has not been reaped (and recycled)
            // unless the record says it exited; the pidfd makes it exact anyway.
            let sent = crate::process_core::pidfd::signal_process(p.pidfd.as_ref(), p.pid, signal);
            return Ok(Step::Reply(match sent {
                Ok(()) => super::encode(Empty::new()),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Err(already_finished()),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    Err(invalid(format!("bad signal {signal}")))
                }
                Err(e) => Err(internal(format!("kill: {e}"))),
            }));
        }
        let init_exited = self.table.get(c.init).is_none_or(|p| p.exit().is_some());
        if init_exited && !r.all {
            return Err(already_finished());
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

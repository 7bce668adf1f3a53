//! Kill, Pause and Resume.

use super::Shim;
use crate::containerd::errors::*;
use containerd_shim_protos::shim::shim as api;

impl Shim {
    pub(super) fn kill(
        &self,
        r: api::KillRequest,
    ) -> RpcResult<protobuf::well_known_types::empty::Empty> {
        let signal = i32::try_from(r.signal).map_err(|_| invalid("signal out of range"))?;
        let runc = {
            let tasks = self.lock();
            let c = tasks
                .container(&r.id)
                .ok_or_else(|| not_found(format!("container {} not found", r.id)))?;
            if !r.exec_id.is_empty() {
                let p = c
                    .execs
                    .get(&r.exec_id)
                    .ok_or_else(|| not_found(format!("process {} not found", r.exec_id)))?;
                if p.exit().is_some() {
                    return Err(not_found("process already finished"));
                }
                if p.pid <= 0 {
                    return Err(not_found(format!("process {} not started", r.exec_id)));
                }
                // Signalled under the table lock: the reaper cannot reap (and the kernel
                // cannot recycle) the pid meanwhile; the pidfd makes it exact anyway.
                let sent = match &p.pidfd {
                    Some(fd) => crate::supervisor::pidfd::send_signal(fd, signal),
                    None => nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p.pid),
                        nix::sys::signal::Signal::try_from(signal)
                            .map_err(|_| invalid(format!("bad signal {signal}")))?,
                    )
                    .map_err(std::io::Error::from),
                };
                return match sent {
                    Ok(()) => Ok(Default::default()),
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                        Err(not_found("process already finished"))
                    }
                    Err(e) => Err(internal(format!("kill: {e}"))),
                };
            }
            if c.init.exit().is_some() && !r.all {
                return Err(not_found("process already finished"));
            }
            c.runc.clone()
        };
        match runc.kill(&r.id, signal, r.all) {
            Ok(()) => Ok(Default::default()),
            // As the Go shim answers a signal to a process that is gone.
            Err(e) if e.kind() == runc_wrapper::ErrorKind::NotRunning => {
                Err(not_found("process already finished"))
            }
            Err(e) => Err(from_runc(e)),
        }
    }

    pub(super) fn pause(
        &self,
        r: api::PauseRequest,
    ) -> RpcResult<protobuf::well_known_types::empty::Empty> {
        let runc = self.runc_of(&r.id)?;
        runc.pause(&r.id).map_err(from_runc)?;
        if let Some(c) = self.lock().container_mut(&r.id) {
            c.paused = true;
        }
        self.events.paused(&r.id);
        Ok(Default::default())
    }

    pub(super) fn resume(
        &self,
        r: api::ResumeRequest,
    ) -> RpcResult<protobuf::well_known_types::empty::Empty> {
        let runc = self.runc_of(&r.id)?;
        runc.resume(&r.id).map_err(from_runc)?;
        if let Some(c) = self.lock().container_mut(&r.id) {
            c.paused = false;
        }
        self.events.resumed(&r.id);
        Ok(Default::default())
    }
}

//! Wait (parked in the table, answered by the loop), Connect and Shutdown.

use super::{display_id, wait_reply, LoopMsg, Shim};
use crate::containerd::errors::*;
use crate::containerd::events::task_events::event_pid;
use crate::containerd::ttrpc::Reply;
use containerd_shim_protos::shim::shim as api;

/// Wait calls that may be parked on one process (containerd parks one or two).
const MAX_WAITERS: usize = 64;

impl Shim {
    pub(super) fn wait(&self, conn: u32, stream: u32, r: &api::WaitRequest) -> Option<Reply> {
        let mut tasks = self.lock();
        let Some(c) = tasks.container_mut(&r.id) else {
            return Some(Err(not_found(format!("container {} not found", r.id))));
        };
        let Some(p) = c.process_mut(&r.exec_id) else {
            return Some(Err(not_found(format!("process {} not found", r.exec_id))));
        };
        // An exit that is recorded but not reported yet (held for the output to drain, for
        // a Kill's reply, or an init's for its execs) parks the Wait like a live process.
        // Also while a spool still feeds the output to a reader (bounded): a client stops
        // reading once its Wait returns (ctr closes its FIFOs).
        let done = p
            .exit()
            .filter(|_| p.state().exit_reported() && p.spooling == 0);
        match done {
            Some(e) => Some(wait_reply(e.code, e.exited_at)),
            None if p.waiters.len() >= MAX_WAITERS => Some(Err(resource_exhausted(format!(
                "{MAX_WAITERS} Wait calls are parked on {} already",
                display_id(&r.id, &r.exec_id)
            )))),
            None => {
                p.waiters.push((conn, stream));
                None
            }
        }
    }

    pub(super) fn connect(&self, r: api::ConnectRequest) -> RpcResult<api::ConnectResponse> {
        let mut resp = api::ConnectResponse::new();
        resp.shim_pid = std::process::id();
        resp.version = env!("CARGO_PKG_VERSION").into();
        if let Some(c) = self.lock().container(&r.id) {
            resp.task_pid = event_pid(c.init.pid);
        }
        Ok(resp)
    }

    pub(super) fn shutdown(
        &self,
        _r: api::ShutdownRequest,
    ) -> RpcResult<protobuf::well_known_types::empty::Empty> {
        if self.lock().containers.is_empty() {
            self.post(LoopMsg::Shutdown);
        }
        Ok(Default::default())
    }
}

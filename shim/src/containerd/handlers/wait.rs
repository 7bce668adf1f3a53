//! Wait (parked in the process's record, answered when its exit is reported), Connect
//! and Shutdown: on the loop.

use super::{wait_reply, Shim, Step};
use crate::containerd::call::CallRef;
use crate::containerd::errors::*;
use crate::containerd::events::task_events::event_pid;
use crate::containerd::process_table::Waiter;
use crate::containerd::wait_hold::WaitHold;
use containerd_shim_protos::shim::shim as api;
use protobuf::well_known_types::empty::Empty;
use std::time::Instant;

/// Wait calls that may be parked on one process (containerd parks one or two).
const MAX_WAITERS: usize = 64;

impl Shim {
    pub(super) fn wait(&mut self, call: &CallRef, r: &api::WaitRequest) -> Step {
        let p = match self.table.lookup_mut(&r.id, &r.exec_id) {
            Ok((_, p)) => p,
            Err(m) => return Step::Reply(Err(m.into())),
        };
        // An exit that is recorded but not reported yet (held for the output to drain, for
        // a Kill's reply, or an init's for its execs) parks the Wait like a live process.
        // Also while a spool still feeds the output to a reader (bounded): a client stops
        // reading once its Wait returns (ctr closes its FIFOs).
        // And, once settled, while a reader empties the output FIFOs (`wait_hold`): the
        // Wait joins a hold in progress, or starts one if they hold bytes.
        let settled = p.exit_settled();
        let unread = match settled {
            Some(_) => p.pumps.fifo_unread().unwrap_or(0),
            None => 0,
        };
        match settled {
            Some(e) if p.wait_hold.is_none() && unread == 0 => {
                Step::Reply(wait_reply(e.code, e.exited_at))
            }
            _ if p.waiters.len() >= MAX_WAITERS => Step::Reply(Err(resource_exhausted(format!(
                "{MAX_WAITERS} Wait calls are parked on {} already",
                p.display()
            )))),
            _ => {
                p.waiters.push(Waiter {
                    conn: call.conn,
                    stream: call.stream,
                });
                if settled.is_some() && p.wait_hold.is_none() {
                    // Looked at by the loop from its next turn (`Shim::check_wait_holds`).
                    p.wait_hold = Some(WaitHold::new(unread, Instant::now()));
                }
                Step::Parked
            }
        }
    }

    pub(super) fn connect(&self, r: api::ConnectRequest) -> RpcResult<api::ConnectResponse> {
        let mut resp = api::ConnectResponse::new();
        resp.shim_pid = std::process::id();
        resp.version = env!("CARGO_PKG_VERSION").into();
        if let Ok(key) = self.table.find(&r.id, "") {
            resp.task_pid = event_pid(self.table.get(key).map_or(0, |p| p.pid));
        }
        Ok(resp)
    }

    /// A no-op while any container remains (a grouped shim serves the pod's others). A
    /// Create in flight does not stop it: the shim waits for the Create's answer, and a
    /// container it made cancels the shutdown (`shim_loop::EventLoop::done`).
    pub(super) fn shutdown(&mut self, _r: api::ShutdownRequest) -> RpcResult<Empty> {
        if self.table.has_no_containers() {
            self.shutdown_requested.get_or_insert_with(Instant::now);
        }
        Ok(Empty::new())
    }
}

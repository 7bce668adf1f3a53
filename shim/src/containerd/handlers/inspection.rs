//! State (from the table, on the loop); Pids and Stats (from the cgroup), on a worker.

use super::{reply_job, Shim, Step};
use crate::containerd::errors::*;
use crate::containerd::events::task_events::{event_exit_status, event_pid};
use crate::containerd::events::timestamp;
use crate::containerd::process_table::ProcState;
use containerd_shim_protos::shim::shim as api;
use containerd_shim_protos::types::task::{ProcessInfo, Status as TaskStatus};
use protobuf::well_known_types::any::Any;
use protobuf::{Message, MessageField};
use std::collections::HashMap;

impl Shim {
    pub(super) fn state(&self, r: api::StateRequest) -> RpcResult<api::StateResponse> {
        let c = self.table.container(&r.id)?;
        let key = self.table.find(&r.id, &r.exec_id)?;
        let Some(p) = self.table.get(key) else {
            return Err(not_found(format!("process {} does not exist", r.exec_id)));
        };
        let mut resp = api::StateResponse::new();
        resp.id = if r.exec_id.is_empty() {
            r.id.clone()
        } else {
            r.exec_id.clone()
        };
        resp.exec_id = r.exec_id.clone();
        resp.bundle = c.bundle.to_string_lossy().into_owned();
        resp.pid = event_pid(p.pid);
        let status = match p.state() {
            ProcState::Created | ProcState::Starting { .. } => TaskStatus::CREATED,
            ProcState::Started { .. } | ProcState::Running if r.exec_id.is_empty() && c.paused => {
                TaskStatus::PAUSED
            }
            ProcState::Started { .. } | ProcState::Running => TaskStatus::RUNNING,
            ProcState::ExitDeferred(_) | ProcState::ExitQueued(_) | ProcState::ExitReported(_) => {
                TaskStatus::STOPPED
            }
        };
        resp.status = status.into();
        resp.stdin = p.stdio.stdin.clone();
        resp.stdout = p.stdio.stdout.clone();
        resp.stderr = p.stdio.stderr.clone();
        resp.terminal = p.stdio.terminal;
        if let Some(e) = p.exit() {
            resp.exit_status = event_exit_status(e.code);
            resp.exited_at = timestamp(e.exited_at);
        }
        Ok(resp)
    }

    /// The container's processes, each exec's with its id. Read from the cgroup recorded
    /// when its init was created (and those below it), as `runc ps` reads them, on a
    /// worker; through `runc ps` only when no cgroup was recorded.
    pub(super) fn pids(&self, r: api::PidsRequest) -> Step {
        let c = match self.table.container(&r.id) {
            Ok(c) => c,
            Err(m) => return Step::Reply(Err(m.into())),
        };
        let execs: HashMap<i32, String> = c
            .execs
            .values()
            .filter_map(|k| self.table.get(*k))
            .filter(|p| p.pid > 0)
            .map(|p| (p.pid, p.exec_id.clone()))
            .collect();
        match c.cgroups.as_ref().and_then(|g| g.procs_dir()) {
            Some(dir) => {
                let dir = dir.to_path_buf();
                reply_job(move || {
                    let pids = crate::containerd::cgroups::procs::all_pids(&dir)
                        .map_err(|e| internal(format!("pids: {e}")))?;
                    super::encode(pids_response(pids, &execs))
                })
            }
            None => {
                let runc = c.runc.clone();
                reply_job(move || {
                    let pids = runc.ps(&r.id).map_err(from_runc)?;
                    super::encode(pids_response(pids, &execs))
                })
            }
        }
    }

    /// Stats of a container, from the cgroups recorded when its init was created: also
    /// once the init has exited and until Delete (containerd's OOM check after a 137 exit
    /// asks for them, as the Go shim answers from the cgroup).
    pub(super) fn stats(&self, r: api::StatsRequest) -> Step {
        let c = match self.table.container(&r.id) {
            Ok(c) => c,
            Err(m) => return Step::Reply(Err(m.into())),
        };
        let (pid, alive) = self
            .table
            .get(c.init)
            .map_or((0, false), |p| (p.pid, p.is_alive()));
        let recorded = c.cgroups.clone();
        let kept = c.stat_files.clone();
        if recorded.is_none() && !(alive && pid > 0) {
            return Step::Reply(Err(not_found(format!(
                "cgroup of container {} not found",
                r.id
            ))));
        }
        reply_job(move || {
            let collected = match &recorded {
                Some(cgroups) => {
                    crate::containerd::cgroups::metrics::collect_metrics_kept(cgroups, &kept)
                }
                // Not recorded (its pid was not known yet at create): only a live pid tells.
                None => crate::containerd::cgroups::metrics::collect_metrics(pid),
            };
            let (type_url, value) = collected.map_err(|e| internal(format!("stats: {e}")))?;
            let mut any = Any::new();
            any.type_url = type_url;
            any.value = value;
            let mut resp = api::StatsResponse::new();
            resp.stats = MessageField::some(any);
            super::encode(resp)
        })
    }
}

/// Pids' answer: each pid, an exec's with its id as the Go shim attaches it.
fn pids_response(pids: Vec<i32>, execs: &HashMap<i32, String>) -> api::PidsResponse {
    let mut resp = api::PidsResponse::new();
    for pid in pids {
        let mut info = ProcessInfo::new();
        info.pid = event_pid(pid);
        if let Some(exec_id) = execs.get(&pid) {
            let mut d = containerd_shim_protos::shim::oci::ProcessDetails::new();
            d.exec_id = exec_id.clone();
            if let Ok(value) = d.write_to_bytes() {
                let mut any = Any::new();
                any.type_url = "containerd.runc.v1.ProcessDetails".into();
                any.value = value;
                info.info = MessageField::some(any);
            }
        }
        resp.processes.push(info);
    }
    resp
}

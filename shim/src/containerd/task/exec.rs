//! Exec (an exec process is defined; Start launches it), ResizePty and CloseIO.

use super::{invalid_id, Shim};
use crate::containerd::errors::*;
use crate::containerd::tasks::{ProcState, Process, Tasks};
use crate::supervisor::stdio::StdioConfig;
use containerd_shim_protos::shim::shim as api;

impl Shim {
    pub(super) fn exec(
        &self,
        r: api::ExecProcessRequest,
    ) -> RpcResult<protobuf::well_known_types::empty::Empty> {
        fifo::validate_id(&r.exec_id).map_err(|e| invalid_id("exec", e))?;
        let spec = r
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or_else(|| invalid("exec without a process spec"))?;
        // runc allocates a terminal from the process spec, containerd asks for one in the
        // request: make them agree (containerd's client does not always set both).
        // Decoded as runc (Go) decodes it, so bytes that are not UTF-8 in args or env reach
        // the process as runc would pass them from the original (the spec is re-encoded).
        let mut process: serde_json::Value =
            serde_json::from_str(&crate::supervisor::go_json::as_go_reads(&spec))
                .map_err(|e| invalid(format!("exec process spec is not valid JSON: {e}")))?;
        let Some(obj) = process.as_object_mut() else {
            return Err(invalid("exec process spec is not a JSON object"));
        };
        obj.insert("terminal".into(), serde_json::Value::Bool(r.terminal));
        let spec = serde_json::to_vec(&process).map_err(|e| internal(e.to_string()))?;
        {
            let mut tasks = self.lock();
            let c = tasks
                .container_mut(&r.id)
                .ok_or_else(|| not_found(format!("container {} not found", r.id)))?;
            if c.execs.contains_key(&r.exec_id) {
                return Err(already_exists(format!(
                    "exec process {} already exists",
                    r.exec_id
                )));
            }
            // An init whose exit is held back for execs being started still takes execs
            // (their start will fail with runc's message), as with the Go shim.
            let init_unstarted = matches!(
                c.init.state(),
                ProcState::Created | ProcState::Starting { .. }
            );
            if c.init_exit_reported() || init_unstarted {
                return Err(failed_precondition(format!(
                    "container {} is not running",
                    r.id
                )));
            }
            // An exec spools as its container does (its own files, its own name).
            let spool = c.init.stdio.spool.clone().map(|mut s| {
                s.name = format!("{}/{}", r.id, r.exec_id);
                s
            });
            let stdio = StdioConfig {
                stdin: r.stdin.clone(),
                stdout: r.stdout.clone(),
                stderr: r.stderr.clone(),
                terminal: r.terminal,
                spool,
            };
            c.execs
                .insert(r.exec_id.clone(), Process::new(&r.exec_id, stdio, spec));
        }
        self.events.exec_added(&r.id, &r.exec_id);
        Ok(Default::default())
    }

    pub(super) fn resize_pty(
        &self,
        r: api::ResizePtyRequest,
    ) -> RpcResult<protobuf::well_known_types::empty::Empty> {
        let tasks = self.lock();
        let p = find(&tasks, &r.id, &r.exec_id)?;
        if let Some(console) = &p.console {
            use std::os::fd::AsFd;
            let w = u16::try_from(r.width).unwrap_or(u16::MAX);
            let h = u16::try_from(r.height).unwrap_or(u16::MAX);
            crate::supervisor::tty::resize(console.as_fd(), w, h)
                .map_err(|e| internal(format!("resize pty: {e}")))?;
        }
        Ok(Default::default())
    }

    pub(super) fn close_io(
        &self,
        r: api::CloseIORequest,
    ) -> RpcResult<protobuf::well_known_types::empty::Empty> {
        let mut tasks = self.lock();
        let c = tasks
            .container_mut(&r.id)
            .ok_or_else(|| not_found(format!("container {} not found", r.id)))?;
        let p = c
            .process_mut(&r.exec_id)
            .ok_or_else(|| not_found(format!("process {} not found", r.exec_id)))?;
        if r.stdin {
            p.stdin_hold.close();
        }
        Ok(Default::default())
    }
}

fn find<'a>(tasks: &'a Tasks, id: &str, exec_id: &str) -> RpcResult<&'a Process> {
    tasks
        .container(id)
        .ok_or_else(|| not_found(format!("container {id} not found")))?
        .process(exec_id)
        .ok_or_else(|| not_found(format!("process {exec_id} not found")))
}

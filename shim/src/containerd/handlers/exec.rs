//! Exec (an exec process is defined; Start launches it), ResizePty and CloseIO: all on
//! the loop, from the table alone.

use super::{invalid_id, Shim};
use crate::containerd::errors::*;
use crate::containerd::process_table::{LaunchSpec, ProcState, ProcessRecord};
use crate::containerd::stdio_uris::StdioConfig;
use containerd_shim_protos::shim::shim as api;
use protobuf::well_known_types::empty::Empty;

impl Shim {
    pub(super) fn exec(&mut self, r: api::ExecProcessRequest) -> RpcResult<Empty> {
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
            serde_json::from_str(&crate::process_core::go_json::as_go_reads(&spec))
                .map_err(|e| invalid(format!("exec process spec is not valid JSON: {e}")))?;
        let Some(obj) = process.as_object_mut() else {
            return Err(invalid("exec process spec is not a JSON object"));
        };
        obj.insert("terminal".into(), serde_json::Value::Bool(r.terminal));
        let spec = serde_json::to_vec(&process).map_err(|e| internal(e.to_string()))?;
        let c = self.table.container(&r.id)?;
        if c.deleting {
            return Err(failed_precondition(format!(
                "container {} is being deleted",
                r.id
            )));
        }
        if c.execs.contains_key(&r.exec_id) {
            return Err(already_exists(format!(
                "exec process {} already exists",
                r.exec_id
            )));
        }
        let init = self.table.record(c.init)?;
        // An init whose exit is held back for execs being started still takes execs
        // (their start will fail with runc's message), as with the Go shim.
        let init_unstarted = matches!(
            init.state(),
            ProcState::Created | ProcState::Starting { .. }
        );
        if init.state().exit_released() || init_unstarted {
            return Err(failed_precondition(format!(
                "container {} is not running",
                r.id
            )));
        }
        // An exec spools as its container does (its own files, its own name).
        let spool = init.stdio.spool.clone().map(|mut s| {
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
        let exec = ProcessRecord::new(&r.id, &r.exec_id, stdio, LaunchSpec::Exec(spec));
        self.table.insert_exec(&r.id, exec)?;
        self.events.exec_added(&r.id, &r.exec_id);
        Ok(Empty::new())
    }

    pub(super) fn resize_pty(&mut self, r: api::ResizePtyRequest) -> RpcResult<Empty> {
        let key = self.table.find(&r.id, &r.exec_id)?;
        if let Some(console) = self.table.get(key).and_then(|p| p.console.as_ref()) {
            use std::os::fd::AsFd;
            let w = u16::try_from(r.width).unwrap_or(u16::MAX);
            let h = u16::try_from(r.height).unwrap_or(u16::MAX);
            crate::process_core::tty::resize(console.as_fd(), w, h)
                .map_err(|e| internal(format!("resize pty: {e}")))?;
        }
        Ok(Empty::new())
    }

    /// Closes the process's stdin: now, or, while its Start is in flight, as soon as the
    /// Start hands the stdin over (a CloseIO racing its exec's Start is not lost).
    pub(super) fn close_io(&mut self, r: api::CloseIORequest) -> RpcResult<Empty> {
        let key = self.table.find(&r.id, &r.exec_id)?;
        if r.stdin {
            if let Some(p) = self.table.get_mut(key) {
                p.stdin.close();
            }
        }
        Ok(Empty::new())
    }
}

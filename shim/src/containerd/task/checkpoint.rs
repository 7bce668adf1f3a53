//! Checkpoint and Update: runc calls on a container's state and resources.

use super::{work_path, Shim};
use crate::containerd::errors::*;
use crate::containerd::options::decode_checkpoint_options;
use containerd_shim_protos::shim::shim as api;
use runc_wrapper::CheckpointOpts;
use std::path::PathBuf;

impl Shim {
    pub(super) fn checkpoint(
        &self,
        r: api::CheckpointTaskRequest,
    ) -> RpcResult<protobuf::well_known_types::empty::Empty> {
        let (runc, bundle, opts) = {
            let tasks = self.lock();
            let c = tasks
                .container(&r.id)
                .ok_or_else(|| not_found(format!("container {} not found", r.id)))?;
            (c.runc.clone(), c.bundle.clone(), c.options.clone())
        };
        let copts = match r.options.as_ref() {
            Some(a) => decode_checkpoint_options(&a.type_url, &a.value)
                .map_err(|e| invalid(format!("checkpoint options: {e}")))?,
            None => Default::default(),
        };
        let image = if !copts.image_path.is_empty() {
            PathBuf::from(&copts.image_path)
        } else {
            PathBuf::from(&r.path)
        };
        let work = if !copts.work_path.is_empty() {
            PathBuf::from(&copts.work_path)
        } else {
            work_path(&opts, &bundle)
        };
        runc.checkpoint(
            &r.id,
            &CheckpointOpts {
                image_path: image.clone(),
                work_path: Some(work),
                leave_running: !copts.exit,
                tcp_established: copts.open_tcp,
                ext_unix_sk: copts.external_unix_sockets,
                shell_job: copts.terminal,
                file_locks: copts.file_locks,
                empty_ns: copts.empty_namespaces.clone(),
                ..Default::default()
            },
        )
        .map_err(from_runc)?;
        self.events.checkpointed(&r.id, &image.to_string_lossy());
        Ok(Default::default())
    }

    pub(super) fn update(
        &self,
        r: api::UpdateTaskRequest,
    ) -> RpcResult<protobuf::well_known_types::empty::Empty> {
        let runc = self.runc_of(&r.id)?;
        let resources = r
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or_else(|| invalid("update without resources"))?;
        runc.update(&r.id, &resources).map_err(from_runc)?;
        Ok(Default::default())
    }
}

//! Checkpoint and Update: runc calls on a container's state and resources, on a worker.

use super::{reply_job, work_path, Outcome, Shim, Step};
use crate::containerd::errors::*;
use crate::containerd::options::decode_checkpoint_options;
use containerd_shim_protos::shim::shim as api;
use protobuf::well_known_types::empty::Empty;
use runc_wrapper::CheckpointOpts;
use std::path::PathBuf;

impl Shim {
    pub(super) fn checkpoint(&self, r: api::CheckpointTaskRequest) -> Step {
        let (runc, bundle, opts) = match self.table.container(&r.id) {
            Ok(c) => (c.runc.clone(), c.bundle.clone(), c.options.clone()),
            Err(m) => return Step::Reply(Err(m.into())),
        };
        let copts = match r.options.as_ref() {
            Some(a) => match decode_checkpoint_options(&a.type_url, &a.value) {
                Ok(o) => o,
                Err(e) => return Step::Reply(Err(invalid(format!("checkpoint options: {e}")))),
            },
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
        Step::Work(Box::new(move || {
            let result = runc
                .checkpoint(
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
                .map_err(from_runc);
            Outcome::Checkpointed {
                id: r.id,
                image: image.to_string_lossy().into_owned(),
                result,
            }
        }))
    }

    pub(super) fn update(&self, r: api::UpdateTaskRequest) -> Step {
        let runc = match self.table.container(&r.id) {
            Ok(c) => c.runc.clone(),
            Err(m) => return Step::Reply(Err(m.into())),
        };
        let Some(resources) = r.resources.as_ref().map(|a| a.value.clone()) else {
            return Step::Reply(Err(invalid("update without resources")));
        };
        reply_job(move || {
            runc.update(&r.id, &resources).map_err(from_runc)?;
            super::encode(Empty::new())
        })
    }
}

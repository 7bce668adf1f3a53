//! `delete`: containerd's clean-up after a shim that died: force-delete the container
//! with runc, unmount its rootfs, remove the shim's socket if it was the container's own,
//! and say how the container ended (the recorded exit, else "killed").

use crate::containerd::address;
use crate::containerd::bundle;
use crate::containerd::exit_status::{self, RecordedExit};
use crate::containerd::flags::Flags;
use crate::containerd::options::RuncOptions;
use crate::containerd::runtime_root;
use protobuf::Message;
use std::io::Write;
use std::path::Path;

use super::{bundle_dir, BootstrapError};

/// `delete`: containerd lost its shim (it died or was killed). Force-delete the
/// container with runc, unmount its rootfs, remove the socket, and report the init's exit:
/// the status the server recorded in the bundle (`exit_status.rs`) when there is one, else
/// "killed" (137) with the pid from `init.pid` (0 if there is none), as containerd's runc shim
/// answers.
pub fn delete(flags: &Flags) -> Result<(), BootstrapError> {
    let bundle_dir = bundle_dir(flags)?;
    let opts = std::fs::read(bundle_dir.join("options.json"))
        .ok()
        .and_then(|b| RuncOptions::from_json(&b).ok())
        .unwrap_or_default();
    let root = if opts.root.is_empty() {
        "/run/containerd/runc".to_string()
    } else {
        opts.root.clone()
    };
    let runc_root = Path::new(&root).join(&flags.namespace);
    if runtime_root::state_left(&runc_root, &flags.id) {
        let runc = runc_wrapper::Runc::builder()
            .binary(if opts.binary_name.is_empty() {
                "runc".to_string()
            } else {
                opts.binary_name.clone()
            })
            .root(runc_root)
            .log(bundle_dir.join("log.json"))
            .build();
        if let Err(e) = runc.delete(&flags.id, true) {
            if !e.is_not_found() {
                log::warn!("runc delete --force {}: {e}", flags.id);
            }
        }
    }
    // The time the container was last known to run, if no record says better.
    let killed_at = std::time::SystemTime::now();
    if let Err(e) = crate::containerd::mount::unmount_all(&bundle_dir.join("rootfs")) {
        log::warn!("unmount rootfs: {e}");
    }
    remove_dead_socket(&bundle_dir, flags);
    let exit = exit_after_shim_died(&bundle_dir, killed_at);
    let mut resp = containerd_shim_protos::shim::shim::DeleteResponse::new();
    resp.pid = exit.pid;
    resp.exit_status = exit.status;
    resp.exited_at = crate::containerd::events::timestamp(exit.exited_at);
    let bytes = resp
        .write_to_bytes()
        .map_err(BootstrapError::EncodeDeleteResponse)?;
    std::io::stdout()
        .write_all(&bytes)
        .map_err(BootstrapError::WriteDeleteResponse)
}

/// Removes the socket of a shim that died, when it was this container's own (a grouped
/// container's socket belongs to its group's shim, which may still serve the others). It is
/// under the socket_dir containerd 2.3+ chose at start (the bundle's `s` link), else under
/// the default directory; an explicit `-socket` is left to whoever chose it.
pub(super) fn remove_dead_socket(bundle_dir: &Path, flags: &Flags) {
    let facts = bundle::read_spec(bundle_dir).unwrap_or_default();
    let group = bundle::group_id(&facts, &flags.id);
    if group == flags.id && flags.socket.is_none() {
        address::remove_socket(&address::socket_path_in(
            &address::socket_dir_of(bundle_dir),
            &flags.address,
            &flags.namespace,
            &group,
        ));
    }
}

/// The exit `delete` reports for the container in `bundle`: the recorded one when it is there
/// and valid, else 137 at `killed_at` with the pid in `init.pid` (0 when that is missing or
/// unreadable). Problems with either file are logged, never fatal.
pub(super) fn exit_after_shim_died(
    bundle: &Path,
    killed_at: std::time::SystemTime,
) -> RecordedExit {
    match exit_status::read(bundle) {
        Ok(Some(recorded)) => return recorded,
        Ok(None) => {}
        Err(e) => log::warn!("recorded exit status: {e}"),
    }
    let pid = match fifo::read_pid_file(&bundle.join(INIT_PID_FILE)) {
        Ok(pid) => pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
        Err(e) => {
            log::warn!("init pid: {e}");
            0
        }
    };
    RecordedExit {
        pid,
        status: 128 + libc::SIGKILL as u32,
        exited_at: killed_at,
    }
}

/// The init process's pid file in the bundle (`runc create --pid-file`).
const INIT_PID_FILE: &str = "init.pid";

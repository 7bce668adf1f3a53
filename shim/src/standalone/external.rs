//! Containers another runtime runs (Garden's containerd mode: containerd and tether's shim
//! face run the container and its init; processes in it are started here).
//!
//! `exec` into a container the depot does not know but runc does (under the `--runc-root`
//! given, e.g. containerd's `/run/containerd/runc/<namespace>`) first gives it a depot
//! entry marked external ([`adopt`]): `<depot>/<id>/container.json` records that runc root,
//! and `processes/` holds the process directories of everything `exec` starts in it. The
//! container itself stays the other runtime's: `delete` removes only the depot entry (and
//! kills, with `--force`, the processes started here), never the runc container; `kill`
//! and `attach` without a process id are refused (its init is not supervised here).

use super::depot::{ContainerMeta, Depot, External};
use super::errors::{CliError, CliResult};
use runc_wrapper::State;

/// Gives `id`, which runc (under `depot.runc_root`) runs as `state` and the depot does not
/// know, an external depot entry; returns its metadata. The entry is made under a hidden
/// temporary name and renamed into place, so concurrent `exec`s into the same container
/// agree on one entry (the losers use the winner's) and a reader never sees half of one.
pub fn adopt(depot: &Depot, id: &str, state: &State) -> CliResult<ContainerMeta> {
    depot.prepare()?;
    let meta = ContainerMeta {
        bundle: state.bundle.clone(),
        init: String::new(),
        external: Some(External {
            runc_root: depot.runc_root.clone(),
        }),
    };
    let tmp = format!(
        ".adopt.{}.{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let tmp_dir = depot.container_dir(&tmp);
    let made = depot
        .create_container_dirs(&tmp)
        .and_then(|()| depot.write_container(&tmp, &meta));
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&tmp_dir);
        return Err(e);
    }
    let target = depot.container_dir(id);
    match std::fs::rename(&tmp_dir, &target) {
        Ok(()) => Ok(meta),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp_dir);
            match e.raw_os_error() {
                // Another exec was first: its entry is as good as ours.
                Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => depot.container(id),
                _ => Err(CliError::io("rename into", &target, &e)),
            }
        }
    }
}

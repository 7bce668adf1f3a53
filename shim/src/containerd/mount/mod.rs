//! Mounting the rootfs containerd hands to `Create`, and unmounting it.
//!
//! `CreateTaskRequest.rootfs` is a list of containerd mounts (usually one
//! overlay or bind mount) to be stacked, in order, on `<bundle>/rootfs`. This
//! module follows containerd's own `mount.Mount` semantics (option parsing,
//! propagation in a second call, read-only bind by remount, the overlay
//! long-`lowerdir` workaround) so the shim behaves like `containerd-shim-runc-v2`.
//!
//! containerd 2.x adds to these: `uidmap=`/`gidmap=` (idmapped mounts, see
//! [`crate::containerd::idmap`]), and its mount manager's own `X-containerd.*` options and
//! `format/`/`mkfs/`/`mkdir/` type transforms, which must not reach a shim (refused
//! with a clear error, as containerd's mount package refuses them).
//!
//! Everything here blocks the calling thread in mount(2)/umount2(2). The only
//! thread ever started is a short-lived one for an overlay whose options exceed
//! a page (see [`mount_all`]); an idmapped mount clones one short-lived child
//! process into a new user namespace.
//!
//! One concern per file: this one stacks the specs and handles what containerd 2.x adds
//! to a mount; `plain` makes the mount(2) calls of one spec (and the overlay workaround),
//! `idmapped_lowers` the idmapped overlay layers, `options` parses fstab-style options,
//! `unmount` takes the stack down.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

mod idmapped_lowers;
mod options;
mod plain;
#[cfg(test)]
mod tests;
mod unmount;

use idmapped_lowers::IdmappedLowers;
pub use options::parse_options;
use plain::mount_plain;
pub use unmount::unmount_all;
use unmount::unmount_one;

/// One containerd mount: `Mount { type, source, options }` (containerd's
/// `target` field, a sub-path, is not used for the rootfs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountSpec {
    /// Filesystem type, e.g. `overlay`, `bind`, `tmpfs`.
    pub kind: String,
    /// Mount source: a path for bind mounts, a name (`overlay`) otherwise.
    pub source: String,
    /// fstab-style options, e.g. `["rbind", "ro"]` or `["lowerdir=…", …]`.
    pub options: Vec<String>,
}

impl From<&containerd_shim_protos::types::mount::Mount> for MountSpec {
    /// Takes `type`, `source` and `options` from containerd's Mount message.
    fn from(m: &containerd_shim_protos::types::mount::Mount) -> Self {
        MountSpec {
            kind: m.type_.clone(),
            source: m.source.clone(),
            options: m.options.clone(),
        }
    }
}

/// Why a mount or unmount failed. Every variant names the target, and mount
/// errors name the type and source as well.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mount target directory could not be created.
    #[error("cannot create mount target {}: {source}", target.display())]
    CreateTarget {
        /// The directory that was to be created.
        target: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A mount(2) call failed.
    #[error("mount {kind} {src:?} on {}: {step} failed: {errno}", target.display())]
    Mount {
        /// Filesystem type of the failing mount.
        kind: String,
        /// Source of the failing mount.
        src: String,
        /// Where it was being mounted.
        target: PathBuf,
        /// Which call failed: `mount`, `set propagation`, `remount read-only`, …
        step: &'static str,
        /// The OS error.
        #[source]
        errno: Errno,
    },
    /// The fs data does not fit in the one page the kernel copies.
    #[error(
        "mount {kind} {src:?} on {}: mount options are too long ({len} bytes, the kernel accepts at most {limit})",
        target.display()
    )]
    OptionsTooLong {
        /// Filesystem type of the failing mount.
        kind: String,
        /// Source of the failing mount.
        src: String,
        /// Where it was being mounted.
        target: PathBuf,
        /// Length of the fs data string.
        len: usize,
        /// Longest data string the kernel accepts (page size - 1).
        limit: usize,
    },
    /// The mount cannot be performed as specified.
    #[error("mount {kind} {src:?} on {}: {reason}", target.display())]
    Unsupported {
        /// Filesystem type of the failing mount.
        kind: String,
        /// Source of the failing mount.
        src: String,
        /// Where it was being mounted.
        target: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An umount2(2) call failed with something other than "not mounted".
    #[error("cannot unmount {}: {errno}", target.display())]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The OS error.
        #[source]
        errno: Errno,
    },
    /// [`unmount_all`] removed its maximum number of mounts and the target is
    /// still a mount point.
    #[error("{} is still mounted after {count} unmounts", target.display())]
    StillMounted {
        /// The mount point.
        target: PathBuf,
        /// How many mounts were removed.
        count: usize,
    },
}

/// Mounts each spec onto `target` in order, stacking them. Blocking; starts no
/// thread except a short-lived one for an overlay whose options exceed a page.
///
/// Creates `target` (mode 0711, parents as needed) if missing; does nothing at
/// all if `specs` is empty (containerd sends no rootfs when it manages the
/// rootfs itself). A relative `target` is made absolute against the current
/// directory first.
///
/// Per spec, as containerd does: non-propagation flags and fs data in one
/// mount(2); each propagation option (`rprivate`, …) in its own call after it;
/// a read-only bind (`bind`/`rbind` with `ro`) is then remounted
/// `MS_REMOUNT|MS_BIND|MS_RDONLY`, because the kernel ignores `ro` on the bind
/// itself. A spec with `remount` is a single mount(2) with all its flags and
/// data on the existing mount and adds no layer. Type `bind` implies `bind`.
///
/// Overlay data longer than a page: like containerd, the lowerdirs' common
/// parent directory becomes the working directory of a helper thread (which
/// unshares its fs attributes, so the process cwd is untouched) and the
/// lowerdirs are passed relative to it. If that is still too long, or other
/// data is, [`MountError::OptionsTooLong`].
///
/// `fuse.*`/`fuse3.*` types need containerd's mount helper binaries and are
/// refused with [`MountError::Unsupported`].
///
/// On failure, unmounts (stack-wise, lazily if busy) everything this call
/// mounted, and returns the error naming the failing mount.
pub fn mount_all(specs: &[MountSpec], target: &Path) -> Result<(), MountError> {
    if specs.is_empty() {
        return Ok(());
    }
    let target = std::path::absolute(target).map_err(|source| MountError::CreateTarget {
        target: target.to_path_buf(),
        source,
    })?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(&target)
        .map_err(|source| MountError::CreateTarget {
            target: target.clone(),
            source,
        })?;

    let mut layers = 0usize;
    for spec in specs {
        match mount_one(spec, &target) {
            Ok(added) => layers += added,
            Err(failure) => {
                layers += failure.added;
                rollback(&target, layers);
                return Err(failure.error);
            }
        }
    }
    Ok(())
}

/// Removes the top `layers` mounts on `target`; failures are only logged
/// because the caller is already returning the error that caused the rollback.
fn rollback(target: &Path, layers: usize) {
    for _ in 0..layers {
        match unmount_one(target) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                log::warn!("rolling back rootfs mounts: {e}");
                return;
            }
        }
    }
}

/// A failed spec, and how many mounts it left on the target anyway (a bind whose
/// read-only remount or propagation change failed).
struct Failure {
    error: MountError,
    added: usize,
}

/// Mounts one spec, handling what containerd 2.x adds to a mount before the plain
/// mount(2) calls: its own `X-containerd.*` options and `format/`, `mkfs/`, `mkdir/`
/// transforms, which its mount manager must have consumed (refused, as containerd's
/// mount package refuses them), and `uidmap=`/`gidmap=` ([`crate::containerd::idmap`]). Returns how
/// many mounts it stacked on `target`.
fn mount_one(spec: &MountSpec, target: &Path) -> Result<usize, Failure> {
    let unsupported = |reason: String| Failure {
        error: MountError::Unsupported {
            kind: spec.kind.clone(),
            src: spec.source.clone(),
            target: target.to_path_buf(),
            reason,
        },
        added: 0,
    };
    if let Some(o) = spec.options.iter().find(|o| o.starts_with("X-containerd.")) {
        return Err(unsupported(format!(
            "internal mount option {o:?} was not consumed by containerd's mount manager"
        )));
    }
    if spec.kind.contains('/') {
        return Err(unsupported(
            "a mount transform (format/, mkfs/, mkdir/) that containerd's mount manager \
             applies before the shim"
                .into(),
        ));
    }
    let (idmap, options) = split_idmap_options(&spec.options);
    let Some((uidmap, gidmap)) = idmap else {
        let plain = MountSpec {
            options,
            ..spec.clone()
        };
        return mount_plain(&plain, target).map(usize::from);
    };
    let idmap_err =
        |e: crate::containerd::idmap::IdmapError| unsupported(format!("idmapped mount: {e}"));
    let uid = crate::containerd::idmap::parse_mappings(&uidmap).map_err(idmap_err)?;
    let gid = crate::containerd::idmap::parse_mappings(&gidmap).map_err(idmap_err)?;
    let userns = crate::containerd::idmap::user_namespace(&uid, &gid).map_err(idmap_err)?;
    if spec.kind == "overlay" {
        // The lower layers are idmapped, through a temporary mount beside the target.
        let lowered = IdmappedLowers::attach(&options, target, &userns).map_err(idmap_err)?;
        let plain = MountSpec {
            options: lowered.options.clone(),
            ..spec.clone()
        };
        // The overlay holds its layers; the temporary mount goes either way.
        return mount_plain(&plain, target).map(usize::from);
    }
    let added = usize::from(mount_plain(
        &MountSpec {
            options,
            ..spec.clone()
        },
        target,
    )?);
    crate::containerd::idmap::idmapped_clone(target, target, &userns, false).map_err(|e| {
        Failure {
            added,
            ..idmap_err(e)
        }
    })?;
    Ok(added + 1)
}

/// Takes `uidmap=` and `gidmap=` out of `options`. Returns both values when both are there
/// (containerd remaps only then; one alone is dropped as well) and the other options.
pub(super) fn split_idmap_options(options: &[String]) -> (Option<(String, String)>, Vec<String>) {
    let mut uid = None;
    let mut gid = None;
    let mut rest = Vec::with_capacity(options.len());
    for o in options {
        if let Some(v) = o.strip_prefix("uidmap=") {
            uid = Some(v.to_owned());
        } else if let Some(v) = o.strip_prefix("gidmap=") {
            gid = Some(v.to_owned());
        } else {
            rest.push(o.clone());
        }
    }
    match (uid, gid) {
        (Some(u), Some(g)) => (Some((u, g)), rest),
        (None, None) => (None, rest),
        _ => {
            log::warn!("uidmap= without gidmap= (or the reverse): not remapped, as containerd");
            (None, rest)
        }
    }
}

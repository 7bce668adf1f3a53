//! Mounting the rootfs containerd hands to `Create`, and unmounting it.
//!
//! `CreateTaskRequest.rootfs` is a list of containerd mounts (usually one
//! overlay or bind mount) to be stacked, in order, on `<bundle>/rootfs`. This
//! module follows containerd's own `mount.Mount` semantics (option parsing,
//! propagation in a second call, read-only bind by remount, the overlay
//! long-`lowerdir` workaround) so the shim behaves like `containerd-shim-runc-v2`.
//!
//! containerd 2.x adds to these: `uidmap=`/`gidmap=` (idmapped mounts, see
//! [`crate::idmap`]), and its mount manager's own `X-containerd.*` options and
//! `format/`/`mkfs/`/`mkdir/` type transforms, which must not reach a shim (refused
//! with a clear error, as containerd's mount package refuses them).
//!
//! Everything here blocks the calling thread in mount(2)/umount2(2). The only
//! thread ever started is a short-lived one for an overlay whose options exceed
//! a page (see [`mount_all`]); an idmapped mount clones one short-lived child
//! process into a new user namespace.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

/// How many times an unmount that fails with EBUSY is retried before falling
/// back to a lazy (MNT_DETACH) unmount.
const EBUSY_RETRIES: u32 = 10;
/// Pause between EBUSY retries (10 × 50 ms: half a second at most per mount).
const EBUSY_PAUSE: Duration = Duration::from_millis(50);
/// Upper bound on mounts removed from one target by [`unmount_all`], so a
/// target that never stops reporting mounts cannot loop forever.
const MAX_STACKED_MOUNTS: usize = 1024;
/// Stack for the overlay helper thread; it makes three syscalls.
const HELPER_STACK: usize = 64 * 1024;

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
/// mount package refuses them), and `uidmap=`/`gidmap=` ([`crate::idmap`]). Returns how
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
    let idmap_err = |e: crate::idmap::IdmapError| unsupported(format!("idmapped mount: {e}"));
    let uid = crate::idmap::parse_mappings(&uidmap).map_err(idmap_err)?;
    let gid = crate::idmap::parse_mappings(&gidmap).map_err(idmap_err)?;
    let userns = crate::idmap::user_namespace(&uid, &gid).map_err(idmap_err)?;
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
    crate::idmap::idmapped_clone(target, target, &userns, false).map_err(|e| Failure {
        added,
        ..idmap_err(e)
    })?;
    Ok(added + 1)
}

/// Takes `uidmap=` and `gidmap=` out of `options`. Returns both values when both are there
/// (containerd remaps only then; one alone is dropped as well) and the other options.
fn split_idmap_options(options: &[String]) -> (Option<(String, String)>, Vec<String>) {
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

/// Overlay lower directories seen through an idmapped, read-only clone of their common
/// parent, attached on a temporary directory beside the mount target for as long as this
/// lives (the overlay mount takes its own references to the layers).
struct IdmappedLowers {
    /// The mount options with `lowerdir=` rewritten to go through the clone.
    options: Vec<String>,
    dir: PathBuf,
}

impl IdmappedLowers {
    fn attach(
        options: &[String],
        target: &Path,
        userns: &std::os::fd::OwnedFd,
    ) -> Result<Self, crate::idmap::IdmapError> {
        use crate::idmap::IdmapError;
        const KEY: &str = "lowerdir=";
        let idx = options
            .iter()
            .position(|o| o.starts_with(KEY))
            .ok_or_else(|| IdmapError::NoCommonDir("(no lowerdir= option)".into()))?;
        let lowers: Vec<&str> = options[idx][KEY.len()..].split(':').collect();
        let common = crate::idmap::common_dir(&lowers)?;
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            ".idmapped-lowers-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let dir = target.parent().unwrap_or(Path::new("/")).join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| IdmapError::Sys {
                op: format!("mkdir {}", dir.display()),
                errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
        if let Err(e) = crate::idmap::idmapped_clone(&common, &dir, userns, true) {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        let through: Vec<String> = lowers
            .iter()
            .map(|l| {
                let rel = l
                    .strip_prefix(common.to_str().unwrap_or_default())
                    .unwrap_or(l);
                format!("{}{rel}", dir.display())
            })
            .collect();
        let mut rewritten = options.to_vec();
        rewritten[idx] = format!("{KEY}{}", through.join(":"));
        Ok(IdmappedLowers {
            options: rewritten,
            dir,
        })
    }
}

impl Drop for IdmappedLowers {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.dir, MntFlags::MNT_DETACH) {
            log::warn!("unmount {}: {e}", self.dir.display());
        }
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            log::warn!("remove {}: {e}", self.dir.display());
        }
    }
}

/// Mounts one spec with plain mount(2) calls; `Ok(true)` if it added a mount on top of
/// `target`.
fn mount_plain(spec: &MountSpec, target: &Path) -> Result<bool, Failure> {
    let fail = |added: bool, error: MountError| Failure {
        error,
        added: usize::from(added),
    };
    let unsupported = |reason: String| MountError::Unsupported {
        kind: spec.kind.clone(),
        src: spec.source.clone(),
        target: target.to_path_buf(),
        reason,
    };
    let sys_err = |step: &'static str, errno: Errno| MountError::Mount {
        kind: spec.kind.clone(),
        src: spec.source.clone(),
        target: target.to_path_buf(),
        step,
        errno,
    };

    if spec.kind.starts_with("fuse.") || spec.kind.starts_with("fuse3.") {
        return Err(fail(
            false,
            unsupported("FUSE mounts need the mount.fuse helper, which tether does not run".into()),
        ));
    }
    let has_nul = spec.kind.contains('\0')
        || spec.source.contains('\0')
        || spec.options.iter().any(|o| o.contains('\0'));
    if has_nul {
        return Err(fail(
            false,
            unsupported("type, source or options contain a NUL byte".into()),
        ));
    }

    let (mut flags, propagation, mut data) = parse_options(&spec.options);
    if spec.kind == "bind" {
        // containerd always sends "bind"/"rbind" with type bind; be lenient
        // like runc rather than fail with ENODEV on a missing option.
        flags |= MsFlags::MS_BIND;
    }

    let page = page_size();
    let mut workdir = None;
    if spec.kind == "overlay" && data.len() >= page {
        if let Some((dir, options)) = compact_lowerdir(&spec.options) {
            data = parse_options(&options).2;
            workdir = Some(dir);
        }
    }
    // The kernel copies one page of data, including the terminating NUL.
    if data.len() >= page {
        return Err(fail(
            false,
            MountError::OptionsTooLong {
                kind: spec.kind.clone(),
                src: spec.source.clone(),
                target: target.to_path_buf(),
                len: data.len(),
                limit: page - 1,
            },
        ));
    }

    let source = (!spec.source.is_empty()).then_some(spec.source.as_str());
    let fstype = (!spec.kind.is_empty()).then_some(spec.kind.as_str());
    let data_opt = (!data.is_empty()).then_some(data.as_str());
    let remount = flags.contains(MsFlags::MS_REMOUNT);

    match &workdir {
        None => sys_mount(source, target, fstype, flags, data_opt)
            .map_err(|e| fail(false, sys_err("mount", e)))?,
        Some(dir) => mount_from_dir(dir, source, target, fstype, flags, data_opt)
            .map_err(|(step, e)| fail(false, sys_err(step, e)))?,
    }
    // A remount changes the existing top mount; everything else stacks one.
    let added = !remount;

    for p in propagation {
        sys_mount(None, target, None, p, None)
            .map_err(|e| fail(added, sys_err("set propagation", e)))?;
    }

    let ro_bind = MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    if !remount && flags.contains(ro_bind) {
        sys_mount(None, target, None, flags | MsFlags::MS_REMOUNT, None)
            .map_err(|e| fail(added, sys_err("remount read-only", e)))?;
    }
    Ok(added)
}

fn sys_mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), Errno> {
    nix::mount::mount(source, target, fstype, flags, data)
}

/// mount(2) with `dir` as the working directory, so relative lowerdirs resolve
/// against it. The cwd is per-process, so this runs on a helper thread that
/// first unshares its fs attributes (CLONE_FS) and only then chdirs: other
/// threads never see the change. The thread ends when the mount returns.
fn mount_from_dir(
    dir: &Path,
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), (&'static str, Errno)> {
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("tether-mount".into())
            .stack_size(HELPER_STACK)
            .spawn_scoped(scope, || {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
                    .map_err(|e| ("unshare fs attributes of the mount thread", e))?;
                nix::unistd::chdir(dir).map_err(|e| ("chdir to the lowerdirs' parent", e))?;
                sys_mount(source, target, fstype, flags, data).map_err(|e| ("mount", e))
            });
        match spawned {
            Ok(handle) => handle
                .join()
                .unwrap_or(Err(("mount thread panicked", Errno::EIO))),
            Err(e) => Err((
                "start the mount thread",
                e.raw_os_error()
                    .map(Errno::from_raw)
                    .unwrap_or(Errno::EAGAIN),
            )),
        }
    })
}

/// Rewrites `lowerdir=/a/b/1/fs:/a/b/2/fs` to `lowerdir=1/fs:2/fs` and returns
/// the directory they are relative to (`/a/b`), like containerd: the common
/// prefix is cut back to its last `/`, so a shared partial name such as
/// `snapshots/1` in `…/12` and `…/13` is not split. None when there is nothing
/// to gain or the paths are not plain absolute paths (escaped `\:`, data-only
/// `::` layers, a common parent of `/`).
fn compact_lowerdir(options: &[String]) -> Option<(PathBuf, Vec<String>)> {
    const KEY: &str = "lowerdir=";
    let idx = options.iter().position(|o| o.starts_with(KEY))?;
    let value = options.get(idx)?.strip_prefix(KEY)?;
    let dirs: Vec<&str> = value.split(':').collect();
    if dirs.len() < 2 || dirs.iter().any(|d| !d.starts_with('/') || d.contains('\\')) {
        return None;
    }
    let first = dirs.first()?.as_bytes();
    let common = dirs.iter().skip(1).fold(first.len(), |n, d| {
        first
            .iter()
            .zip(d.as_bytes())
            .take(n)
            .take_while(|(a, b)| a == b)
            .count()
    });
    // Index of the last '/' inside the common prefix; '/' is ASCII, so both
    // it and the byte after it are char boundaries in every dir.
    let slash = first.get(..common)?.iter().rposition(|&b| b == b'/')?;
    if slash == 0 {
        return None;
    }
    let parent = dirs.first()?.get(..slash)?;
    let mut relative = Vec::with_capacity(dirs.len());
    for d in &dirs {
        let rel = d.get(slash + 1..)?;
        if rel.is_empty() {
            return None;
        }
        relative.push(rel);
    }
    let mut rewritten = options.to_vec();
    *rewritten.get_mut(idx)? = format!("{KEY}{}", relative.join(":"));
    Some((PathBuf::from(parent), rewritten))
}

fn page_size() -> usize {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) => usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096),
        _ => 4096,
    }
}

/// Unmounts everything mounted at `target`, top first, until it is no longer a
/// mount point (mounts stack). Blocking; starts no thread.
///
/// A mount that stays busy (EBUSY) is retried 10 times 50 ms apart, then
/// detached lazily (MNT_DETACH), so this blocks at most ~0.5 s per busy mount.
/// Ok if `target` does not exist or nothing is mounted there (EINVAL).
/// Gives up with [`MountError::StillMounted`] after 1024 mounts.
pub fn unmount_all(target: &Path) -> Result<(), MountError> {
    if let Err(e) = std::fs::symlink_metadata(target) {
        if e.kind() == io::ErrorKind::NotFound {
            return Ok(());
        }
    }
    for _ in 0..MAX_STACKED_MOUNTS {
        if !unmount_one(target)? {
            return Ok(());
        }
    }
    Err(MountError::StillMounted {
        target: target.to_path_buf(),
        count: MAX_STACKED_MOUNTS,
    })
}

/// Removes the top mount at `target`: `Ok(true)` if one was removed,
/// `Ok(false)` if nothing is mounted there.
fn unmount_one(target: &Path) -> Result<bool, MountError> {
    let err = |errno| MountError::Unmount {
        target: target.to_path_buf(),
        errno,
    };
    for attempt in 1..=EBUSY_RETRIES {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) => return Ok(true),
            // EINVAL: not a mount point. ENOENT: the target went away.
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(false),
            Err(Errno::EBUSY) | Err(Errno::EINTR) => {
                if attempt < EBUSY_RETRIES {
                    std::thread::sleep(EBUSY_PAUSE);
                }
            }
            Err(e) => return Err(err(e)),
        }
    }
    log::warn!(
        "{} still busy after {EBUSY_RETRIES} unmount attempts; detaching it lazily",
        target.display()
    );
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) => Ok(true),
        Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(err(e)),
    }
}

/// Flag options: name -> (clears the flag?, flag). Same table as containerd's
/// parseMountOptions, plus the newer ones runc knows.
fn flag_option(option: &str) -> Option<(bool, MsFlags)> {
    // nix 0.29 has no constant for it; the bit is the kernel's (Linux 5.10+).
    let nosymfollow = MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW);
    let entry = match option {
        "async" => (true, MsFlags::MS_SYNCHRONOUS),
        "atime" => (true, MsFlags::MS_NOATIME),
        "bind" => (false, MsFlags::MS_BIND),
        "dev" => (true, MsFlags::MS_NODEV),
        "diratime" => (true, MsFlags::MS_NODIRATIME),
        "dirsync" => (false, MsFlags::MS_DIRSYNC),
        "exec" => (true, MsFlags::MS_NOEXEC),
        "iversion" => (false, MsFlags::MS_I_VERSION),
        "lazytime" => (false, MsFlags::MS_LAZYTIME),
        "loud" => (true, MsFlags::MS_SILENT),
        "mand" => (false, MsFlags::MS_MANDLOCK),
        "noatime" => (false, MsFlags::MS_NOATIME),
        "nodev" => (false, MsFlags::MS_NODEV),
        "nodiratime" => (false, MsFlags::MS_NODIRATIME),
        "noexec" => (false, MsFlags::MS_NOEXEC),
        "noiversion" => (true, MsFlags::MS_I_VERSION),
        "nolazytime" => (true, MsFlags::MS_LAZYTIME),
        "nomand" => (true, MsFlags::MS_MANDLOCK),
        "norelatime" => (true, MsFlags::MS_RELATIME),
        "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
        "nosuid" => (false, MsFlags::MS_NOSUID),
        "nosymfollow" => (false, nosymfollow),
        "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
        "relatime" => (false, MsFlags::MS_RELATIME),
        "remount" => (false, MsFlags::MS_REMOUNT),
        "ro" => (false, MsFlags::MS_RDONLY),
        "rw" => (true, MsFlags::MS_RDONLY),
        "silent" => (false, MsFlags::MS_SILENT),
        "strictatime" => (false, MsFlags::MS_STRICTATIME),
        "suid" => (true, MsFlags::MS_NOSUID),
        "symfollow" => (true, nosymfollow),
        "sync" => (false, MsFlags::MS_SYNCHRONOUS),
        _ => return None,
    };
    Some(entry)
}

/// Propagation options, each applied by its own mount(2) call (the kernel
/// accepts one propagation type per call).
fn propagation_option(option: &str) -> Option<MsFlags> {
    let rec = MsFlags::MS_REC;
    Some(match option {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | rec,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | rec,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | rec,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | rec,
        _ => return None,
    })
}

/// Parses fstab-style options like containerd. Pure; never fails.
///
/// Returns `(flags, propagation, data)`: flag options (`ro rw suid nosuid dev
/// nodev exec noexec sync async dirsync remount mand nomand atime noatime
/// diratime nodiratime bind rbind relatime norelatime strictatime
/// nostrictatime lazytime nolazytime iversion noiversion silent loud
/// nosymfollow symfollow`) set or, for the negative forms, clear a bit, later
/// options winning; propagation options (`[r]private [r]shared [r]slave
/// [r]unbindable`) are returned in order, one mount(2) flag set each (with
/// `MS_REC` for the `r` forms); `defaults` is ignored; everything else is
/// joined with `,` as filesystem data, in order.
pub fn parse_options(options: &[String]) -> (MsFlags, Vec<MsFlags>, String) {
    let mut flags = MsFlags::empty();
    let mut propagation = Vec::new();
    let mut data: Vec<&str> = Vec::new();
    for option in options {
        if let Some((clear, flag)) = flag_option(option) {
            if clear {
                flags.remove(flag);
            } else {
                flags.insert(flag);
            }
        } else if let Some(p) = propagation_option(option) {
            propagation.push(p);
        } else if option != "defaults" {
            data.push(option);
        }
    }
    (flags, propagation, data.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn spec(kind: &str, source: &str, options: &[&str]) -> MountSpec {
        MountSpec {
            kind: kind.into(),
            source: source.into(),
            options: strings(options),
        }
    }

    /// Mounts stacked on `path`, from /proc/self/mountinfo (field 5).
    fn mount_count(path: &Path) -> usize {
        let want = path.to_str().unwrap();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(want))
            .count()
    }

    /// A tempdir whose listed mount points are lazily unmounted before the
    /// directory is removed, even when a test fails half way.
    struct Scratch {
        mounts: Vec<PathBuf>,
        dir: tempfile::TempDir,
    }

    impl Scratch {
        fn new() -> Scratch {
            Scratch {
                mounts: Vec::new(),
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
        /// Registers a mount point for cleanup and returns it.
        fn mountpoint(&mut self, name: &str) -> PathBuf {
            let p = self.path(name);
            self.mounts.push(p.clone());
            p
        }
        /// A tmpfs at `name`, so overlay tests do not depend on the host's /tmp.
        fn tmpfs(&mut self, name: &str) -> PathBuf {
            let p = self.mountpoint(name);
            mount_all(&[spec("tmpfs", "tmpfs", &["size=16m"])], &p).unwrap();
            p
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            // Innermost (latest) first; detach so nothing can keep us busy.
            for p in self.mounts.iter().rev() {
                while nix::mount::umount2(p, MntFlags::MNT_DETACH).is_ok() {}
            }
        }
    }

    macro_rules! require_root {
        () => {
            if test_skip::unless_root() {
                return;
            }
        };
    }

    #[test]
    fn parse_options_table() {
        let f = MsFlags::empty;
        let cases: Vec<(Vec<&str>, MsFlags, Vec<MsFlags>, &str)> = vec![
            (vec![], f(), vec![], ""),
            (vec!["ro"], MsFlags::MS_RDONLY, vec![], ""),
            (vec!["ro", "rw"], f(), vec![], ""),
            (vec!["rw", "ro"], MsFlags::MS_RDONLY, vec![], ""),
            (vec!["bind"], MsFlags::MS_BIND, vec![], ""),
            (
                vec!["rbind", "ro"],
                MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY,
                vec![],
                "",
            ),
            (
                vec!["nosuid", "nodev", "noexec", "suid"],
                MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                vec![],
                "",
            ),
            (vec!["sync", "async"], f(), vec![], ""),
            (
                vec!["dirsync", "remount", "mand"],
                MsFlags::MS_DIRSYNC | MsFlags::MS_REMOUNT | MsFlags::MS_MANDLOCK,
                vec![],
                "",
            ),
            (vec!["mand", "nomand"], f(), vec![], ""),
            (
                vec!["noatime", "atime", "nodiratime"],
                MsFlags::MS_NODIRATIME,
                vec![],
                "",
            ),
            (vec!["nodiratime", "diratime"], f(), vec![], ""),
            (
                vec!["relatime", "strictatime", "norelatime"],
                MsFlags::MS_STRICTATIME,
                vec![],
                "",
            ),
            (vec!["strictatime", "nostrictatime"], f(), vec![], ""),
            (vec!["nodev", "dev", "noexec", "exec"], f(), vec![], ""),
            (
                vec!["lazytime", "iversion", "silent"],
                MsFlags::MS_LAZYTIME | MsFlags::MS_I_VERSION | MsFlags::MS_SILENT,
                vec![],
                "",
            ),
            (
                vec![
                    "lazytime",
                    "nolazytime",
                    "iversion",
                    "noiversion",
                    "silent",
                    "loud",
                ],
                f(),
                vec![],
                "",
            ),
            (
                vec!["nosymfollow"],
                MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW),
                vec![],
                "",
            ),
            (
                vec!["rprivate", "shared", "rslave", "unbindable"],
                f(),
                vec![
                    MsFlags::MS_PRIVATE | MsFlags::MS_REC,
                    MsFlags::MS_SHARED,
                    MsFlags::MS_SLAVE | MsFlags::MS_REC,
                    MsFlags::MS_UNBINDABLE,
                ],
                "",
            ),
            (
                vec!["private", "rshared", "slave", "runbindable"],
                f(),
                vec![
                    MsFlags::MS_PRIVATE,
                    MsFlags::MS_SHARED | MsFlags::MS_REC,
                    MsFlags::MS_SLAVE,
                    MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
                ],
                "",
            ),
            (vec!["defaults", "ro"], MsFlags::MS_RDONLY, vec![], ""),
            (
                vec![
                    "index=off",
                    "lowerdir=/l",
                    "ro",
                    "upperdir=/u",
                    "workdir=/w",
                ],
                MsFlags::MS_RDONLY,
                vec![],
                "index=off,lowerdir=/l,upperdir=/u,workdir=/w",
            ),
            (
                vec!["size=64k", "mode=755", "nosuid"],
                MsFlags::MS_NOSUID,
                vec![],
                "size=64k,mode=755",
            ),
            // Unknown or odd strings are data, never a panic.
            (
                vec!["", "RO", "ro=1", "\u{e9}"],
                f(),
                vec![],
                ",RO,ro=1,\u{e9}",
            ),
        ];
        for (opts, flags, prop, data) in cases {
            let got = parse_options(&strings(&opts));
            assert_eq!(got, (flags, prop, data.to_string()), "options {opts:?}");
        }
    }

    #[test]
    fn compact_lowerdir_cases() {
        let opts = strings(&[
            "index=off",
            "lowerdir=/var/lib/s/snapshots/12/fs:/var/lib/s/snapshots/13/fs:/var/lib/s/snapshots/1/fs",
            "upperdir=/var/lib/s/snapshots/14/fs",
        ]);
        let (dir, new) = compact_lowerdir(&opts).unwrap();
        assert_eq!(dir, PathBuf::from("/var/lib/s/snapshots"));
        assert_eq!(
            new,
            strings(&[
                "index=off",
                "lowerdir=12/fs:13/fs:1/fs",
                "upperdir=/var/lib/s/snapshots/14/fs"
            ])
        );
        // Common prefix ends exactly at a separator.
        let (dir, new) = compact_lowerdir(&strings(&["lowerdir=/a/b/x:/a/b/y"])).unwrap();
        assert_eq!(
            (dir, new),
            (PathBuf::from("/a/b"), strings(&["lowerdir=x:y"]))
        );
        for none in [
            vec!["upperdir=/u"],
            vec!["lowerdir=/only/one"],
            vec!["lowerdir=/a:/b"],
            vec!["lowerdir=rel/a:rel/b"],
            vec!["lowerdir=/x/a\\:b:/x/c"],
            vec!["lowerdir=/x/a::/x/b"],
            vec!["lowerdir=/x/a/:/x/a/b"],
            vec!["lowerdir="],
        ] {
            assert!(compact_lowerdir(&strings(&none)).is_none(), "{none:?}");
        }
        // Multi-byte names: slicing stays on char boundaries.
        let (dir, new) = compact_lowerdir(&strings(&["lowerdir=/d/\u{e9}a:/d/\u{e9}b"])).unwrap();
        assert_eq!(
            (dir, new),
            (PathBuf::from("/d"), strings(&["lowerdir=\u{e9}a:\u{e9}b"]))
        );
        let (dir, _) = compact_lowerdir(&strings(&["lowerdir=/d/x/\u{e9}:/d/x/\u{e8}"])).unwrap();
        assert_eq!(dir, PathBuf::from("/d/x"));
    }

    #[test]
    fn empty_specs_do_nothing() {
        let s = Scratch::new();
        let target = s.path("rootfs");
        mount_all(&[], &target).unwrap();
        assert!(!target.exists());
    }

    #[test]
    fn tmpfs_mount_and_unmount() {
        require_root!();
        let mut s = Scratch::new();
        let target = s.mountpoint("missing/parent/rootfs");
        mount_all(&[spec("tmpfs", "tmpfs", &["size=1m", "mode=755"])], &target).unwrap();
        assert_eq!(mount_count(&target), 1);
        fs::write(target.join("f"), b"x").unwrap();
        unmount_all(&target).unwrap();
        assert_eq!(mount_count(&target), 0);
        assert!(!target.join("f").exists());
    }

    #[test]
    fn bind_mount_shows_source() {
        require_root!();
        let mut s = Scratch::new();
        let src = s.path("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("hello"), b"world").unwrap();
        let target = s.mountpoint("rootfs");
        mount_all(&[spec("bind", src.to_str().unwrap(), &["rbind"])], &target).unwrap();
        assert_eq!(fs::read(target.join("hello")).unwrap(), b"world");
        fs::write(target.join("new"), b"rw").unwrap();
        assert!(src.join("new").exists());
        unmount_all(&target).unwrap();
        assert_eq!(mount_count(&target), 0);
        assert!(!target.join("hello").exists());
    }

    #[test]
    fn ro_bind_is_read_only() {
        require_root!();
        let mut s = Scratch::new();
        let src = s.path("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("hello"), b"world").unwrap();
        let target = s.mountpoint("rootfs");
        mount_all(
            &[spec("bind", src.to_str().unwrap(), &["rbind", "ro"])],
            &target,
        )
        .unwrap();
        assert_eq!(fs::read(target.join("hello")).unwrap(), b"world");
        let err = fs::write(target.join("new"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        // Only the bind is read-only, not its source.
        fs::write(src.join("new"), b"x").unwrap();
        unmount_all(&target).unwrap();
        assert_eq!(mount_count(&target), 0);
    }

    /// lower/upper/work dirs on a private tmpfs; returns (lower, upper, work).
    fn overlay_dirs(s: &mut Scratch) -> (PathBuf, PathBuf, PathBuf) {
        let base = s.tmpfs("base");
        let dirs: Vec<PathBuf> = ["lower", "upper", "work"]
            .iter()
            .map(|d| base.join(d))
            .collect();
        for d in &dirs {
            fs::create_dir(d).unwrap();
        }
        (dirs[0].clone(), dirs[1].clone(), dirs[2].clone())
    }

    #[test]
    fn overlay_mount() {
        require_root!();
        let mut s = Scratch::new();
        let (lower, upper, work) = overlay_dirs(&mut s);
        fs::write(lower.join("from-lower"), b"l").unwrap();
        let target = s.mountpoint("rootfs");
        let opts = [
            format!("lowerdir={}", lower.display()),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ];
        let opts: Vec<&str> = opts.iter().map(|s| s.as_str()).collect();
        mount_all(&[spec("overlay", "overlay", &opts)], &target).unwrap();
        assert_eq!(fs::read(target.join("from-lower")).unwrap(), b"l");
        fs::write(target.join("written"), b"u").unwrap();
        assert_eq!(fs::read(upper.join("written")).unwrap(), b"u");
        assert!(!lower.join("written").exists());
        unmount_all(&target).unwrap();
        assert_eq!(mount_count(&target), 0);
    }

    #[test]
    fn containerd_internal_options_and_transforms_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("rootfs");
        for (m, want) in [
            (
                spec("ext4", "/x.img", &["X-containerd.mkfs.fs=ext4", "rw"]),
                "X-containerd.mkfs.fs=ext4",
            ),
            (
                spec("erofs", "/x", &["ro", "X-containerd.dmverity=/x.meta"]),
                "not consumed",
            ),
            (spec("format/mkdir/overlay", "overlay", &[]), "transform"),
        ] {
            let e = mount_all(&[m], &target).unwrap_err();
            assert!(matches!(e, MountError::Unsupported { .. }), "{e}");
            assert!(e.to_string().contains(want), "{e}");
        }
        assert_eq!(mount_count(&target), 0);
    }

    #[test]
    fn idmap_options_are_taken_out_together() {
        let (m, rest) = split_idmap_options(&strings(&[
            "ro",
            "uidmap=0:100000:65536",
            "lowerdir=/a",
            "gidmap=0:200000:65536",
        ]));
        assert_eq!(
            m,
            Some(("0:100000:65536".to_string(), "0:200000:65536".to_string()))
        );
        assert_eq!(rest, strings(&["ro", "lowerdir=/a"]));
        // One without the other is dropped and nothing is remapped, as containerd does.
        let (m, rest) = split_idmap_options(&strings(&["uidmap=0:1:1", "rw"]));
        assert_eq!(m, None);
        assert_eq!(rest, strings(&["rw"]));
    }

    /// uid and gid of `path` (not following a final symlink).
    fn owner(path: &Path) -> (u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let m = fs::symlink_metadata(path).unwrap();
        (m.uid(), m.gid())
    }

    #[test]
    fn overlay_with_idmapped_lower_dirs() {
        require_root!();
        let mut s = Scratch::new();
        let base = s.tmpfs("base");
        let snapshots = base.join("snapshots");
        let (l1, l2, upper, work) = (
            snapshots.join("1/fs"),
            snapshots.join("2/fs"),
            snapshots.join("3/fs"),
            snapshots.join("3/work"),
        );
        for d in [&l1, &l2, &upper, &work] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(l1.join("bottom"), b"1").unwrap();
        fs::write(l2.join("top"), b"2").unwrap();
        // The snapshotter gives the upper layer to the container's root already.
        std::os::unix::fs::chown(&upper, Some(100_000), Some(200_000)).unwrap();
        let target = s.mountpoint("bundle/rootfs");
        fs::create_dir(s.path("bundle")).unwrap();
        let opts = [
            format!("lowerdir={}:{}", l2.display(), l1.display()),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
            "uidmap=0:100000:65536".to_string(),
            "gidmap=0:200000:65536".to_string(),
        ];
        let opts: Vec<&str> = opts.iter().map(|s| s.as_str()).collect();
        mount_all(&[spec("overlay", "overlay", &opts)], &target).unwrap();
        // Files root owns in the layers belong to the container's root, as the host sees.
        assert_eq!(owner(&target.join("bottom")), (100_000, 200_000));
        assert_eq!(owner(&target.join("top")), (100_000, 200_000));
        assert_eq!(fs::read(target.join("bottom")).unwrap(), b"1");
        // The layers themselves are untouched, and the temporary mount is gone.
        assert_eq!(owner(&l1.join("bottom")), (0, 0));
        let leftovers: Vec<_> = fs::read_dir(s.path("bundle"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("rootfs")]);
        // No mount point is left there (the overlay's own options still name the paths
        // it was given, as with containerd).
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mountinfo.lines().any(|l| l
                .split(' ')
                .nth(4)
                .unwrap_or("")
                .contains(".idmapped-lowers-")),
            "{mountinfo}"
        );
        assert_eq!(mount_count(&target), 1);
        unmount_all(&target).unwrap();
        assert_eq!(mount_count(&target), 0);
    }

    #[test]
    fn idmapped_bind_mount() {
        require_root!();
        let mut s = Scratch::new();
        let base = s.tmpfs("base");
        fs::write(base.join("f"), b"x").unwrap();
        let target = s.mountpoint("rootfs");
        let src = base.display().to_string();
        mount_all(
            &[spec(
                "bind",
                &src,
                &["rbind", "uidmap=0:100000:65536", "gidmap=0:100000:65536"],
            )],
            &target,
        )
        .unwrap();
        assert_eq!(owner(&target.join("f")), (100_000, 100_000));
        assert_eq!(owner(&base.join("f")), (0, 0));
        // The bind and its idmapped clone on top: both go on unmount.
        assert_eq!(mount_count(&target), 2);
        unmount_all(&target).unwrap();
        assert_eq!(mount_count(&target), 0);
    }

    #[test]
    fn bad_id_mappings_are_refused_before_mounting() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("rootfs");
        let e = mount_all(
            &[spec(
                "overlay",
                "overlay",
                &["lowerdir=/a/b", "uidmap=0:x:1", "gidmap=0:1:1"],
            )],
            &target,
        )
        .unwrap_err();
        assert!(e.to_string().contains("invalid id mapping"), "{e}");
    }

    #[test]
    fn overlay_with_lowerdirs_longer_than_a_page() {
        require_root!();
        let mut s = Scratch::new();
        let base = s.tmpfs("base");
        let common = base.join("x".repeat(200)).join("snapshots");
        let layers = 40;
        let mut lowers = Vec::new();
        for i in 0..layers {
            let fs_dir = common.join(i.to_string()).join("fs");
            fs::create_dir_all(&fs_dir).unwrap();
            fs::write(fs_dir.join(format!("layer-{i}")), b"").unwrap();
            lowers.push(fs_dir.display().to_string());
        }
        let upper = base.join("upper");
        let work = base.join("work");
        fs::create_dir(&upper).unwrap();
        fs::create_dir(&work).unwrap();
        let opts = vec![
            format!("lowerdir={}", lowers.join(":")),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ];
        assert!(parse_options(&opts).2.len() > page_size());
        let cwd = std::env::current_dir().unwrap();
        let target = s.mountpoint("rootfs");
        let m = MountSpec {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: opts,
        };
        mount_all(&[m], &target).unwrap();
        assert_eq!(
            std::env::current_dir().unwrap(),
            cwd,
            "process cwd untouched"
        );
        for i in 0..layers {
            assert!(target.join(format!("layer-{i}")).exists(), "layer {i}");
        }
        unmount_all(&target).unwrap();
        assert_eq!(mount_count(&target), 0);
    }

    #[test]
    fn too_long_options_are_refused() {
        let s = Scratch::new();
        let target = s.path("rootfs");
        let long = format!("lowerdir=/{}", "y".repeat(page_size()));
        for kind in ["overlay", "tmpfs"] {
            let err = mount_all(&[spec(kind, kind, &[&long])], &target).unwrap_err();
            assert!(matches!(err, MountError::OptionsTooLong { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains("too long") && msg.contains(kind), "{msg}");
        }
    }

    #[test]
    fn fuse_and_nul_are_refused() {
        let s = Scratch::new();
        let target = s.path("rootfs");
        let err = mount_all(&[spec("fuse3.fuse-overlayfs", "overlay", &[])], &target).unwrap_err();
        assert!(err.to_string().contains("FUSE"), "{err}");
        let err = mount_all(&[spec("tmpfs", "tm\0pfs", &[])], &target).unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
    }

    #[test]
    fn failing_second_mount_unmounts_first() {
        require_root!();
        let mut s = Scratch::new();
        let target = s.mountpoint("rootfs");
        let specs = [
            spec("tmpfs", "tmpfs", &["size=1m"]),
            spec("tether-no-such-fs", "nowhere", &[]),
        ];
        let err = mount_all(&specs, &target).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("tether-no-such-fs")
                && msg.contains("nowhere")
                && msg.contains(target.to_str().unwrap())
                && msg.contains("ENODEV"),
            "{msg}"
        );
        assert!(matches!(
            err,
            MountError::Mount {
                errno: Errno::ENODEV,
                ..
            }
        ));
        assert_eq!(mount_count(&target), 0);
    }

    #[test]
    fn failing_bind_source_reports_it() {
        require_root!();
        let mut s = Scratch::new();
        let target = s.mountpoint("rootfs");
        let missing = s.path("missing");
        let err = mount_all(
            &[spec("bind", missing.to_str().unwrap(), &["rbind", "ro"])],
            &target,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                MountError::Mount {
                    errno: Errno::ENOENT,
                    step: "mount",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(mount_count(&target), 0);
    }

    #[test]
    fn unmount_all_without_mounts_is_ok() {
        // umount2 refuses anyone without CAP_SYS_ADMIN with EPERM, mount point or not.
        require_root!();
        let s = Scratch::new();
        let dir = s.path("plain");
        fs::create_dir(&dir).unwrap();
        unmount_all(&dir).unwrap();
        unmount_all(&s.path("does/not/exist")).unwrap();
    }

    #[test]
    fn stacked_mounts_are_all_removed() {
        require_root!();
        let mut s = Scratch::new();
        let target = s.mountpoint("rootfs");
        let t = spec("tmpfs", "tmpfs", &["size=1m"]);
        mount_all(&[t.clone(), t.clone(), t], &target).unwrap();
        assert_eq!(mount_count(&target), 3);
        unmount_all(&target).unwrap();
        assert_eq!(mount_count(&target), 0);
    }

    #[test]
    fn remount_changes_top_mount_in_place() {
        require_root!();
        let mut s = Scratch::new();
        let target = s.mountpoint("rootfs");
        let specs = [
            spec("tmpfs", "tmpfs", &["size=1m"]),
            spec("tmpfs", "tmpfs", &["remount", "ro", "size=1m"]),
        ];
        mount_all(&specs, &target).unwrap();
        assert_eq!(mount_count(&target), 1);
        let err = fs::write(target.join("f"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
        unmount_all(&target).unwrap();
        assert_eq!(mount_count(&target), 0);
    }

    #[test]
    fn propagation_is_applied() {
        require_root!();
        let mut s = Scratch::new();
        let target = s.mountpoint("rootfs");
        mount_all(&[spec("tmpfs", "tmpfs", &["size=1m", "rshared"])], &target).unwrap();
        let want = target.to_str().unwrap().to_string();
        let line = fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(want.as_str()))
            .map(str::to_string)
            .unwrap();
        assert!(line.contains(" shared:"), "{line}");
        unmount_all(&target).unwrap();
    }

    #[test]
    fn busy_mount_is_detached() {
        require_root!();
        let mut s = Scratch::new();
        let target = s.mountpoint("rootfs");
        mount_all(&[spec("tmpfs", "tmpfs", &["size=1m"])], &target).unwrap();
        // An open file keeps the mount busy: umount2 without flags gets EBUSY.
        let _open = fs::File::create(target.join("held")).unwrap();
        unmount_all(&target).unwrap();
        assert_eq!(mount_count(&target), 0);
    }
}

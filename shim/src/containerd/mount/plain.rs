//! One containerd mount spec as mount(2) calls, as containerd's `mount.Mount` makes them:
//! flags and fs data in one call, each propagation change in its own, a read-only bind
//! remounted, and an overlay whose options exceed a page mounted from its layers' parent.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;

use super::options::parse_options;
use super::{Failure, MountError, MountSpec};

/// Stack for the overlay helper thread; it makes three syscalls.
const HELPER_STACK: usize = 64 * 1024;

/// Mounts one spec with plain mount(2) calls; `Ok(true)` if it added a mount on top of
/// `target`.
pub(super) fn mount_plain(spec: &MountSpec, target: &Path) -> Result<bool, Failure> {
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
pub(super) fn compact_lowerdir(options: &[String]) -> Option<(PathBuf, Vec<String>)> {
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

pub(super) fn page_size() -> usize {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) => usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096),
        _ => 4096,
    }
}

//! Idmapped mounts, for the `uidmap=`/`gidmap=` options containerd 2.x puts on rootfs mounts
//! of user-namespaced containers (the overlay snapshotter's idmapped lower directories).
//!
//! containerd's mount package (core/mount/mount_linux.go, mount_idmapped_linux.go) handles
//! them as follows, and tether does the same:
//! - both options must be there (one alone is dropped and nothing is remapped); each is a
//!   comma-separated list of `container-id:host-id:size`;
//! - a user namespace with those mappings is made (a child process cloned into a new user
//!   namespace, its maps written, its `/proc/PID/ns/user` opened; the child then exits);
//! - overlay: the directory all lower directories share is cloned (`open_tree`), the clone is
//!   idmapped and made read-only (`mount_setattr`) and attached on a temporary directory
//!   (`move_mount`), the `lowerdir` paths are rewritten to go through it, the overlay is
//!   mounted, and the temporary mount is detached again (the overlay keeps its layers);
//! - any other type: after the mount, the target's mount tree is cloned, idmapped and
//!   attached on top of the target.
//!
//! Needs Linux 5.12 (`mount_setattr`) and, for overlay, 5.19 (idmapped lower layers).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// Why an idmapped mount could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    /// A `uidmap=`/`gidmap=` value that is not `c:h:s[,c:h:s...]` of non-negative integers.
    #[error("invalid id mapping {0:?}: want container-id:host-id:size[,...]")]
    BadMapping(String),
    /// The lower directories have no common parent other than `/` (containerd refuses that).
    #[error("lower directories {0:?} have no common parent directory")]
    NoCommonDir(String),
    /// A system call failed; `op` says which and on what.
    #[error("{op}: {errno}")]
    Sys {
        /// What was being done.
        op: String,
        /// The error.
        errno: Errno,
    },
}

fn sys(op: impl Into<String>) -> impl FnOnce(Errno) -> IdmapError {
    let op = op.into();
    move |errno| IdmapError::Sys { op, errno }
}

/// One line of a uid or gid map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapping {
    /// First id inside the namespace.
    pub container: u32,
    /// First id outside.
    pub host: u32,
    /// How many ids.
    pub size: u32,
}

/// Parses containerd's `uidmap=`/`gidmap=` value: `c:h:s` entries separated by commas.
pub fn parse_mappings(value: &str) -> Result<Vec<IdMapping>, IdmapError> {
    let bad = || IdmapError::BadMapping(value.to_owned());
    value
        .split(',')
        .map(|entry| {
            let mut parts = entry
                .split(':')
                .map(|p| p.parse::<u32>().map_err(|_| bad()));
            let m = IdMapping {
                container: parts.next().ok_or_else(bad)??,
                host: parts.next().ok_or_else(bad)??,
                size: parts.next().ok_or_else(bad)??,
            };
            if parts.next().is_some() {
                return Err(bad());
            }
            Ok(m)
        })
        .collect()
}

/// The `/proc/PID/uid_map` text of `maps`.
fn map_text(maps: &[IdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container, m.host, m.size))
        .collect()
}

/// A user namespace with these uid and gid mappings, as an open `/proc/PID/ns/user`.
///
/// The namespace is made by a child cloned with `CLONE_NEWUSER` and an exit signal of 0: the
/// shim's reaper (`waitpid(-1)` without `__WALL`) never collects such a child, so it is reaped
/// here, by pid, and cannot be mistaken for a container process. The child only waits for EOF
/// on a pipe and exits; it cannot exit (or be reaped) before that, so its pid stays ours while
/// its maps are written.
pub fn user_namespace(uid: &[IdMapping], gid: &[IdMapping]) -> Result<OwnedFd, IdmapError> {
    let (hold_r, hold_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(sys("pipe for the user namespace child"))?;
    let mut stack = vec![0u8; 16 * 1024];
    let hold_r_fd = hold_r.as_raw_fd();
    let hold_w_fd = hold_w.as_raw_fd();
    let child = move || -> isize {
        // Only async-signal-safe calls: this is a copy of a multi-threaded process.
        // SAFETY: closing our copy of the write end (so EOF can come) and reading the read
        // end into a stack buffer; both fds are valid in the child's copy of the fd table.
        unsafe {
            libc::close(hold_w_fd);
            let mut b = 0u8;
            while libc::read(hold_r_fd, (&mut b as *mut u8).cast(), 1) != 0 {
                if *libc::__errno_location() != libc::EINTR {
                    break;
                }
            }
        }
        0
    };
    // SAFETY: the child runs `child` on `stack` in a copy of this address space (no
    // CLONE_VM) and only makes async-signal-safe calls; exit signal 0 keeps it from the
    // reaper (see above).
    let pid = unsafe {
        nix::sched::clone(
            Box::new(child),
            &mut stack,
            nix::sched::CloneFlags::CLONE_NEWUSER,
            None,
        )
    }
    .map_err(sys("clone a child into a new user namespace"))?;
    drop(hold_r);
    let result = (|| {
        let write_map = |name: &str, text: &str| -> Result<(), IdmapError> {
            let path = format!("/proc/{pid}/{name}");
            File::options()
                .write(true)
                .open(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .map_err(|e| IdmapError::Sys {
                    op: format!("write {path} ({})", text.trim()),
                    errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                })
        };
        write_map("uid_map", &map_text(uid))?;
        write_map("gid_map", &map_text(gid))?;
        let path = format!("/proc/{pid}/ns/user");
        File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| IdmapError::Sys {
                op: format!("open {path}"),
                errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })
    })();
    // EOF for the child, then reap it (by pid, with __WCLONE for its exit signal of 0).
    drop(hold_w);
    while let Err(Errno::EINTR) =
        nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::__WCLONE))
    {}
    result
}

// Linux uapi constants (include/uapi/linux/mount.h, fcntl.h) that libc does not export for
// every target.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(p: &Path) -> Result<CString, IdmapError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| IdmapError::Sys {
        op: format!("path {} has a NUL byte", p.display()),
        errno: Errno::EINVAL,
    })
}

/// Attaches on `target` a clone of the mount tree at `source`, idmapped through `userns`
/// (and read-only when `read_only`), with private propagation: containerd's
/// `IDMapMountWithAttrs`. `source` and `target` may be the same path (the clone then stacks
/// on top).
pub fn idmapped_clone(
    source: &Path,
    target: &Path,
    userns: &OwnedFd,
    read_only: bool,
) -> Result<(), IdmapError> {
    let src = cpath(source)?;
    let dst = cpath(target)?;
    // SAFETY: open_tree with a valid NUL-terminated path; the result is a new fd or -1.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
        )
    };
    if tree < 0 {
        return Err(sys(format!("open_tree {}", source.display()))(Errno::last()));
    }
    let Ok(tree) = RawFd::try_from(tree) else {
        return Err(sys(format!("open_tree {}", source.display()))(Errno::EBADF));
    };
    // SAFETY: open_tree just returned this fd and nothing else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(tree) };
    let Ok(userns_fd) = u64::try_from(userns.as_raw_fd()) else {
        return Err(sys("user namespace fd".to_string())(Errno::EBADF));
    };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | if read_only { MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd,
    };
    let empty = c"";
    // SAFETY: mount_setattr on our detached tree fd, with an empty path (AT_EMPTY_PATH) and
    // a properly sized, initialised mount_attr that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(sys(format!(
            "idmap (mount_setattr) the clone of {}",
            source.display()
        ))(Errno::last()));
    }
    // SAFETY: move_mount of our tree fd (empty path) onto a valid NUL-terminated target.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(sys(format!(
            "attach the idmapped clone of {} on {}",
            source.display(),
            target.display()
        ))(Errno::last()));
    }
    Ok(())
}

/// The directory all of `dirs` are in: the longest common prefix cut back to a directory
/// (containerd's `getCommonDirectory`); `/` or nothing is an error.
pub fn common_dir(dirs: &[&str]) -> Result<PathBuf, IdmapError> {
    let no = || IdmapError::NoCommonDir(dirs.join(":"));
    let first = dirs.first().ok_or_else(no)?;
    let len = dirs.iter().skip(1).fold(first.len(), |n, d| {
        first
            .bytes()
            .zip(d.bytes())
            .take(n)
            .take_while(|(a, b)| a == b)
            .count()
    });
    let prefix = first.get(..len).ok_or_else(no)?;
    // Go's path.Dir: everything before the last '/', "/" for a top-level name.
    let dir = match prefix.rfind('/') {
        Some(0) | None => return Err(no()),
        Some(i) => &prefix[..i],
    };
    Ok(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings() {
        assert_eq!(
            parse_mappings("0:100000:65536").unwrap(),
            vec![IdMapping {
                container: 0,
                host: 100000,
                size: 65536
            }]
        );
        assert_eq!(parse_mappings("0:1000:1,1:100000:65535").unwrap().len(), 2);
        for bad in [
            "",
            "0:1",
            "0:1:2:3",
            "a:1:2",
            "-1:0:1",
            "0:1:2,",
            "0:1:2;3:4:5",
        ] {
            assert!(parse_mappings(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            map_text(&parse_mappings("0:1000:1,1:100000:65535").unwrap()),
            "0 1000 1\n1 100000 65535\n"
        );
    }

    #[test]
    fn common_dirs() {
        let snap = "/var/lib/containerd/snapshots";
        assert_eq!(
            common_dir(&[&format!("{snap}/12/fs"), &format!("{snap}/13/fs")]).unwrap(),
            PathBuf::from(snap)
        );
        // A shared partial name is not a directory.
        assert_eq!(
            common_dir(&["/a/snap1/fs", "/a/snap2/fs"]).unwrap(),
            PathBuf::from("/a")
        );
        // One layer: its parent.
        assert_eq!(common_dir(&["/a/b/fs"]).unwrap(), PathBuf::from("/a/b"));
        assert!(common_dir(&["/a/fs", "/b/fs"]).is_err());
        assert!(common_dir(&[]).is_err());
        assert!(common_dir(&["rel/x", "other/y"]).is_err());
    }

    #[test]
    fn a_user_namespace_with_the_maps() {
        if test_skip::unless_root() {
            return;
        }
        let uid = parse_mappings("0:100000:65536").unwrap();
        let gid = parse_mappings("0:200000:1000").unwrap();
        let ns = user_namespace(&uid, &gid).unwrap();
        // A different namespace from ours.
        let ours = std::fs::metadata("/proc/self/ns/user").unwrap();
        let theirs = File::from(ns).metadata().unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_ne!(ours.ino(), theirs.ino());
    }
}

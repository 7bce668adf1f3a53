//! cgroup discovery, metrics and OOM watching, straight from cgroupfs.
//!
//! `Task.Stats` is polled often (every container's once a second by containerd
//! 2.x's CRI, whatever kubelet asks), so metrics are read from the cgroup files
//! directly instead of spawning `runc events --stats`, through descriptors kept
//! open from one call to the next ([`kept_files`]). Both layouts are handled:
//!
//! * cgroup v1 (and the "hybrid" layout, where v1 controllers sit under
//!   `/sys/fs/cgroup/<controller>` and an empty cgroup2 is mounted at
//!   `/sys/fs/cgroup/unified`): per-controller directories.
//! * pure cgroup v2 (`/sys/fs/cgroup` is a cgroup2 mount): one directory.
//!
//! Mount points are taken from `/proc/self/mountinfo` (so bind-mounted or
//! relocated hierarchies work), with the conventional paths as a fallback.

use procfs_core::process::MountInfo;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

mod files;
pub mod kept_files;
pub mod metrics;
pub mod oom;
pub mod procs;
mod v1;
mod v2;

// Short paths for the main entry points; the module paths work as well, so
// either may go unused.
#[allow(unused_imports)]
pub use files::MetricsError;
#[allow(unused_imports)]
pub use kept_files::KeptFiles;
#[allow(unused_imports)]
pub use metrics::{collect_metrics, collect_metrics_from};
#[allow(unused_imports)]
pub use oom::{OomError, OomWatcher};

/// Where cgroup hierarchies are conventionally mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Which cgroup layout the host uses for resource controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hierarchy {
    /// Legacy or hybrid: controllers are cgroup v1 hierarchies.
    V1,
    /// Unified: `/sys/fs/cgroup` is a cgroup2 mount.
    V2,
}

/// The host's cgroup layout: [`Hierarchy::V2`] if `/sys/fs/cgroup` is a
/// cgroup2 filesystem (statfs magic `CGROUP2_SUPER_MAGIC`), else
/// [`Hierarchy::V1`]. Determined once per process.
pub fn host_hierarchy() -> Hierarchy {
    static HIERARCHY: OnceLock<Hierarchy> = OnceLock::new();
    *HIERARCHY.get_or_init(|| match nix::sys::statfs::statfs(CGROUP_ROOT) {
        Ok(s) if s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => Hierarchy::V2,
        _ => Hierarchy::V1,
    })
}

/// A cgroup filesystem mount, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// The cgroup path (within its hierarchy) that is mounted.
    pub root: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// `None` for cgroup2; for cgroup v1, the super options (controller names
    /// such as `memory` or `name=systemd`, among flags like `rw`).
    pub v1_options: Option<Vec<String>>,
}

/// The cgroup paths of a process, parsed from `/proc/<pid>/cgroup`, and the
/// directories they resolve to under the mounted hierarchies.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessCgroups {
    /// v1 controller (or `name=...`) -> cgroup path.
    v1: BTreeMap<String, String>,
    /// The `0::` (cgroup2) path, if listed.
    unified: Option<String>,
    /// v1 controller -> directory, for controllers whose hierarchy is mounted.
    v1_dirs: BTreeMap<String, PathBuf>,
    /// Directory of the cgroup2 path, if a cgroup2 hierarchy is mounted.
    unified_dir: Option<PathBuf>,
}

impl ProcessCgroups {
    /// Parses the text of `/proc/<pid>/cgroup` and resolves each path against
    /// `mounts`. Malformed lines are skipped.
    pub fn parse(proc_cgroup: &str, mounts: &[CgroupMount]) -> Self {
        let mut out = ProcessCgroups::default();
        for line in proc_cgroup.lines() {
            // "hierarchy-ID:controller-list:cgroup-path"; the path may itself
            // contain ':' so split at most twice.
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            // cgroup2 marks a removed cgroup that still holds zombies this way.
            let path = path.strip_suffix(" (deleted)").unwrap_or(path);
            if !path.starts_with('/') {
                continue;
            }
            if id == "0" && controllers.is_empty() {
                out.unified = Some(path.to_string());
                out.unified_dir = resolve(mounts, None, path);
                continue;
            }
            for controller in controllers.split(',').filter(|c| !c.is_empty()) {
                out.v1.insert(controller.to_string(), path.to_string());
                if let Some(dir) = resolve(mounts, Some(controller), path) {
                    out.v1_dirs.insert(controller.to_string(), dir);
                }
            }
        }
        out
    }

    /// The directory of the process's `controller` cgroup, if that v1
    /// hierarchy is mounted.
    pub fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1_dirs.get(controller).map(PathBuf::as_path)
    }

    /// The directory of the process's cgroup2 cgroup, if cgroup2 is mounted.
    pub fn unified_dir(&self) -> Option<&Path> {
        self.unified_dir.as_deref()
    }

    /// The directory whose `cgroup.procs` (with those below it) lists the container's
    /// processes: a v1 controller every runc container is placed in (`devices` first, as
    /// runc's own listing reads), else the cgroup2 directory. On a hybrid host the v1
    /// controllers are the ones runc manages.
    pub fn procs_dir(&self) -> Option<&Path> {
        ["devices", "pids", "freezer", "memory", "cpu"]
            .iter()
            .find_map(|c| self.v1_dir(c))
            .or_else(|| self.unified_dir())
    }
}

/// Reads `/proc/<pid>/cgroup` and resolves it against this process's cgroup
/// mounts. Fails (typically `NotFound`) if the process is gone.
pub fn of_pid(pid: i32) -> std::io::Result<ProcessCgroups> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    Ok(ProcessCgroups::parse(&text, host_mounts()))
}

/// This process's cgroup mounts, read once: they do not change under a
/// running shim, and on busy hosts mountinfo is large.
pub fn host_mounts() -> &'static [CgroupMount] {
    static MOUNTS: OnceLock<Vec<CgroupMount>> = OnceLock::new();
    MOUNTS.get_or_init(|| {
        let parsed = std::fs::read_to_string("/proc/self/mountinfo")
            .map(|t| parse_mountinfo(&t))
            .unwrap_or_default();
        if parsed.is_empty() {
            default_mounts()
        } else {
            parsed
        }
    })
}

/// The conventional layout, used when mountinfo is unreadable.
fn default_mounts() -> Vec<CgroupMount> {
    let mut out = Vec::new();
    if host_hierarchy() == Hierarchy::V2 {
        out.push(CgroupMount {
            root: "/".into(),
            mount_point: PathBuf::from(CGROUP_ROOT),
            v1_options: None,
        });
        return out;
    }
    for c in [
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "devices",
        "freezer",
        "blkio",
        "pids",
        "hugetlb",
        "net_cls",
        "net_prio",
        "perf_event",
        "rdma",
    ] {
        out.push(CgroupMount {
            root: "/".into(),
            mount_point: Path::new(CGROUP_ROOT).join(c),
            v1_options: Some(vec![c.to_string()]),
        });
    }
    out.push(CgroupMount {
        root: "/".into(),
        mount_point: Path::new(CGROUP_ROOT).join("unified"),
        v1_options: None,
    });
    out
}

/// Extracts the cgroup and cgroup2 mounts from `/proc/<pid>/mountinfo` text, each line
/// read by `procfs-core`. Malformed lines are skipped. A v1 mount's super options come
/// sorted (`name=systemd` with its value).
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| MountInfo::from_line(line).ok())
        .filter_map(|m| {
            let v1_options = match m.fs_type.as_str() {
                "cgroup" => {
                    let mut options: Vec<String> = m
                        .super_options
                        .into_iter()
                        .map(|(key, value)| match value {
                            Some(value) => format!("{key}={value}"),
                            None => key,
                        })
                        .collect();
                    options.sort();
                    Some(options)
                }
                "cgroup2" => None,
                _ => return None,
            };
            Some(CgroupMount {
                root: unescape_octal(&m.root),
                mount_point: PathBuf::from(unescape_octal(&m.mount_point.to_string_lossy())),
                v1_options,
            })
        })
        .collect()
}

/// Undoes mountinfo's `\NNN` octal escaping of spaces, tabs, newlines and backslashes
/// (`procfs-core` hands the paths over as the kernel wrote them).
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of cgroup `path` in the first mount of the right kind
/// (`controller` `None` = cgroup2) whose root contains it.
fn resolve(mounts: &[CgroupMount], controller: Option<&str>, path: &str) -> Option<PathBuf> {
    mounts.iter().find_map(|m| {
        let kind_ok = match (controller, &m.v1_options) {
            (None, None) => true,
            (Some(c), Some(opts)) => opts.iter().any(|o| o == c),
            _ => false,
        };
        if !kind_ok {
            return None;
        }
        let rel = if m.root == "/" {
            path
        } else if path == m.root {
            ""
        } else {
            path.strip_prefix(m.root.as_str())?.strip_prefix('/')?
        };
        let rel = Path::new(rel.trim_start_matches('/'));
        // Paths outside our cgroup namespace show up as "/../x": never leave the mount.
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return None;
        }
        Some(m.mount_point.join(rel))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
30 28 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
36 30 0:32 /nested /sys/fs/cgroup/pids rw shared:17 - cgroup cgroup rw,pids
37 30 0:33 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
38 30 0:34 / /mnt/with\\040space rw - cgroup cgroup rw,blkio
garbage line
";

    #[test]
    fn mountinfo_parsing() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 6);
        assert_eq!(m[0].mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(m[0].v1_options, None);
        assert_eq!(
            m[1].v1_options.as_deref(),
            Some(&["cpu".to_string(), "cpuacct".into(), "rw".into()][..])
        );
        assert_eq!(m[3].root, "/nested");
        assert_eq!(m[5].mount_point, Path::new("/mnt/with space"));
    }

    #[test]
    fn proc_cgroup_parsing_v1_hybrid() {
        let mounts = parse_mountinfo(MOUNTINFO);
        let text = "\
12:pids:/nested/ctr:with:colons
4:memory:/kubepods/pod1/ctr
3:cpu,cpuacct:/kubepods/pod1/ctr
2:blkio:/
1:name=systemd:/system.slice/x
0::/kubepods/pod1/ctr
5:devices:/somewhere
bad
7:freezer:relative
";
        let p = ProcessCgroups::parse(text, &mounts);
        assert_eq!(
            p.v1.get("memory").map(String::as_str),
            Some("/kubepods/pod1/ctr")
        );
        assert_eq!(
            p.v1_dir("memory"),
            Some(Path::new("/sys/fs/cgroup/memory/kubepods/pod1/ctr"))
        );
        assert_eq!(
            p.v1_dir("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/ctr"))
        );
        assert_eq!(p.v1_dir("cpu"), p.v1_dir("cpuacct"));
        // Mount root "/nested" is stripped from the path.
        assert_eq!(
            p.v1_dir("pids"),
            Some(Path::new("/sys/fs/cgroup/pids/ctr:with:colons"))
        );
        assert_eq!(p.v1_dir("blkio"), Some(Path::new("/mnt/with space")));
        assert_eq!(
            p.v1_dir("name=systemd"),
            Some(Path::new("/sys/fs/cgroup/systemd/system.slice/x"))
        );
        // Listed but not mounted.
        assert_eq!(p.v1.get("devices").map(String::as_str), Some("/somewhere"));
        assert_eq!(p.v1_dir("devices"), None);
        assert_eq!(p.v1.get("freezer"), None);
        assert_eq!(p.unified.as_deref(), Some("/kubepods/pod1/ctr"));
        assert_eq!(
            p.unified_dir(),
            Some(Path::new("/sys/fs/cgroup/unified/kubepods/pod1/ctr"))
        );
    }

    #[test]
    fn proc_cgroup_parsing_v2() {
        let mounts = parse_mountinfo(
            "25 1 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
        );
        let p = ProcessCgroups::parse("0::/system.slice/containerd.service (deleted)\n", &mounts);
        assert_eq!(
            p.unified.as_deref(),
            Some("/system.slice/containerd.service")
        );
        assert_eq!(
            p.unified_dir(),
            Some(Path::new("/sys/fs/cgroup/system.slice/containerd.service"))
        );
        assert_eq!(p.v1_dir("memory"), None);
        // Root cgroup resolves to the mount point itself.
        let p = ProcessCgroups::parse("0::/\n", &mounts);
        assert_eq!(p.unified_dir(), Some(Path::new("/sys/fs/cgroup")));
        // A path outside our cgroup namespace does not resolve.
        let p = ProcessCgroups::parse("0::/../escape\n", &mounts);
        assert_eq!(p.unified_dir(), None);
    }

    #[test]
    fn mount_root_must_contain_the_path() {
        let mounts = parse_mountinfo("1 1 0:1 /a /m rw - cgroup cgroup rw,memory\n");
        assert_eq!(
            ProcessCgroups::parse("1:memory:/a/b\n", &mounts).v1_dir("memory"),
            Some(Path::new("/m/b"))
        );
        assert_eq!(
            ProcessCgroups::parse("1:memory:/a\n", &mounts).v1_dir("memory"),
            Some(Path::new("/m"))
        );
        assert_eq!(
            ProcessCgroups::parse("1:memory:/ab\n", &mounts).v1_dir("memory"),
            None
        );
    }

    #[test]
    fn this_machine() {
        let h = host_hierarchy();
        let p = of_pid(nix::unistd::getpid().as_raw()).unwrap();
        println!("hierarchy {h:?}: {p:#?}");
        if h == Hierarchy::V2 {
            assert!(p.unified_dir().is_some());
        }
        assert!(of_pid(-1).is_err());
    }

    #[test]
    fn default_layout_is_sane() {
        let d = default_mounts();
        assert!(!d.is_empty());
        assert!(d.iter().all(|m| m.mount_point.starts_with(CGROUP_ROOT)));
    }
}

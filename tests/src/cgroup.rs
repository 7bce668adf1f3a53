//! Which cgroup hierarchy this machine runs, and the cgroup files of a process, so tests
//! can check what the kernel has (limits, freeze state) on cgroup v1 and v2 alike.

use std::fs;
use std::path::PathBuf;

const ROOT: &str = "/sys/fs/cgroup";

/// The cgroup hierarchy the controllers are on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// Controllers on per-controller v1 hierarchies (`/sys/fs/cgroup/<controller>`).
    V1,
    /// Only the unified hierarchy, mounted at `/sys/fs/cgroup`.
    V2,
}

impl Hierarchy {
    /// The hierarchy of this machine: v2 when `/sys/fs/cgroup` itself is the unified
    /// hierarchy (a v1 host may mount an empty cgroup2 at `/sys/fs/cgroup/unified`: that
    /// is still v1 for the controllers).
    pub fn current() -> Self {
        if std::path::Path::new(ROOT)
            .join("cgroup.controllers")
            .exists()
        {
            Hierarchy::V2
        } else {
            Hierarchy::V1
        }
    }

    /// `"cgroup v1"` or `"cgroup v2"`, for skip reasons and messages.
    pub fn name(self) -> &'static str {
        match self {
            Hierarchy::V1 => "cgroup v1",
            Hierarchy::V2 => "cgroup v2",
        }
    }
}

/// The cgroup directory of `pid` for `v1_controller` (`memory`, `freezer`, `pids`…) on
/// v1, or its unified directory on v2, as the host sees it. Panics (fails the test) when
/// `/proc/<pid>/cgroup` has no such line.
pub fn dir_of(pid: i32, v1_controller: &str) -> PathBuf {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/cgroup: {e}"));
    let hierarchy = Hierarchy::current();
    let found = text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        match hierarchy {
            Hierarchy::V2 => controllers
                .is_empty()
                .then(|| PathBuf::from(ROOT).join(path)),
            Hierarchy::V1 => controllers
                .split(',')
                .any(|c| c == v1_controller)
                .then(|| PathBuf::from(ROOT).join(controllers).join(path)),
        }
    });
    found.unwrap_or_else(|| {
        panic!(
            "no {} cgroup for {pid} ({}):\n{text}",
            v1_controller,
            hierarchy.name()
        )
    })
}

/// The contents of `file` in `dir`, trimmed; panics (fails the test) when unreadable.
pub fn read(dir: &std::path::Path, file: &str) -> String {
    let path = dir.join(file);
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// The value of `key` in a flat-keyed cgroup file (`memory.events`, `cgroup.events`).
pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_values() {
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed_value(events, "oom_kill"), Some(1));
        assert_eq!(keyed_value(events, "oom"), Some(1));
        assert_eq!(keyed_value(events, "max"), Some(12));
        assert_eq!(keyed_value(events, "nope"), None);
        assert_eq!(keyed_value("populated 1\nfrozen 0\n", "frozen"), Some(0));
    }
}

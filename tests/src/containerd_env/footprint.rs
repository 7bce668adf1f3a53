//! Where the test's containers leave things on the host, found by the test's namespace and
//! ids: the tether shims and their sockets, runc's state root, and the namespace's cgroups
//! with the processes still in them. What `leak_check` checks and `teardown`
//! removes.

use super::{ContainerdEnv, RUNC_ROOT, SHIM_BINARY, SHIM_SOCKET_DIR};
use crate::cleanup;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

impl ContainerdEnv {
    /// The tether shims of this test: processes running `containerd-shim-tether-v2` with
    /// `-namespace <NS>`.
    pub fn shim_pids(&self) -> Vec<i32> {
        cleanup::processes_mentioning(SHIM_BINARY)
            .into_iter()
            .filter(|(_, cmd)| {
                let words: Vec<&str> = cmd.split_whitespace().collect();
                words.first().is_some_and(|w| w.ends_with(SHIM_BINARY))
                    && words
                        .windows(2)
                        .any(|w| w[0] == "-namespace" && w[1] == self.namespace)
            })
            .map(|(pid, _)| pid)
            .collect()
    }

    /// The socket the shim of container `id` listens on:
    /// `/run/containerd/s/<hex sha256 of "<address>/<ns>/<id>">`.
    pub fn shim_socket(&self, id: &str) -> PathBuf {
        let joined = format!("{}/{}/{}", self.address.display(), self.namespace, id);
        let digest = Sha256::digest(joined.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Path::new(SHIM_SOCKET_DIR).join(hex)
    }

    /// runc's state root for this namespace.
    pub fn runc_root(&self) -> PathBuf {
        Path::new(RUNC_ROOT).join(&self.namespace)
    }

    /// The cgroup directories of this namespace (`/sys/fs/cgroup/<ns>` on cgroup v2,
    /// `/sys/fs/cgroup/<controller>/<ns>` on v1) that exist.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let base = Path::new("/sys/fs/cgroup");
        let mut dirs = vec![base.join(&self.namespace)];
        if let Ok(entries) = fs::read_dir(base) {
            for e in entries.flatten() {
                dirs.push(e.path().join(&self.namespace));
            }
        }
        dirs.retain(|d| d.is_dir());
        dirs
    }

    /// Pids still in this namespace's cgroups (the container processes).
    pub(super) fn cgroup_pids(&self) -> Vec<(PathBuf, String)> {
        let mut found = Vec::new();
        for dir in self.cgroup_dirs() {
            for d in walk_dirs(&dir) {
                if let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) {
                    if !procs.trim().is_empty() {
                        found.push((d, procs.split_whitespace().collect::<Vec<_>>().join(",")));
                    }
                }
            }
        }
        found
    }
}

/// `dir` and every directory below it (no symlinks followed).
pub(super) fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(e.path());
                }
            }
        }
        out.push(d);
    }
    out
}

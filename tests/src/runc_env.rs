//! One test's private runc world: a temp dir holding its bundles, its own runc `--root`
//! and `log.json`, torn down on drop whatever the test did.

use crate::bundle::Bundle;
use crate::cleanup;
use runc_wrapper::Runc;
use std::path::{Path, PathBuf};

/// A private runc root and work dir. Dropping it force-deletes every container in that
/// root, kills stragglers that still mention the dir, unmounts whatever is mounted below
/// it and removes it.
pub struct RuncEnv {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    runc_bin: PathBuf,
    root: PathBuf,
    log: PathBuf,
    runc: Runc,
}

impl RuncEnv {
    /// Checks the preconditions (root, runc, busybox) and makes a fresh environment.
    pub fn new() -> Self {
        crate::require::root();
        let runc_bin = crate::require::tool("runc", "runc");
        let dir = tempfile::Builder::new()
            .prefix("tt-")
            .tempdir_in("/tmp")
            .expect("create the test's temp dir under /tmp");
        let path = dir.path().to_path_buf();
        let root = path.join("root");
        let log = path.join("log.json");
        let runc = Runc::builder()
            .binary(&runc_bin)
            .root(&root)
            .log(&log)
            .build();
        RuncEnv {
            dir: Some(dir),
            path,
            runc_bin,
            root,
            log,
            runc,
        }
    }

    /// The test's temp dir.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// The runc driver bound to this environment's root and log.
    pub fn runc(&self) -> &Runc {
        &self.runc
    }

    /// The runc binary in use.
    pub fn runc_binary(&self) -> &Path {
        &self.runc_bin
    }

    /// The private runc `--root`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `--log` file (JSON lines).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// A busybox bundle in `<dir>/<name>` that runs `args`.
    pub fn bundle(&self, name: &str, args: &[&str]) -> Bundle {
        Bundle::busybox(&self.path.join(name), args).expect("build a busybox bundle")
    }

    /// A container id unique to this test run.
    pub fn id(&self, prefix: &str) -> String {
        crate::unique_id(prefix)
    }
}

impl Default for RuncEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RuncEnv {
    fn drop(&mut self) {
        cleanup::delete_all_containers(&self.runc_bin, &self.root);
        let needle = self.path.to_string_lossy().into_owned();
        for (pid, cmd) in cleanup::processes_mentioning(&needle) {
            eprintln!("cleanup: killing leftover process {pid}: {cmd}");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        cleanup::unmount_under(&self.path);
        if let Some(dir) = self.dir.take() {
            if let Err(err) = dir.close() {
                eprintln!("cleanup: remove {}: {err}", self.path.display());
            }
        }
    }
}

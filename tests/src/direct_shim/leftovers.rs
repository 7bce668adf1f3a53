//! What a shim may leave behind, and the end of a test: the checks that it exited and left
//! neither its socket nor runc state, and [`Leftovers`], whose drop kills the shim and
//! whatever still runs from the test's dir and removes runc's containers, the socket, the
//! mounts and the temp dir.

use super::{pid_alive, DirectShim};
use crate::cleanup;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a [`DirectShim`] removes when dropped.
pub(super) struct Leftovers {
    pub(super) dir: Option<tempfile::TempDir>,
    pub(super) namespace: String,
    pub(super) runc_root: PathBuf,
    pub(super) socket: Option<PathBuf>,
    pub(super) shim_pid: Option<i32>,
    pub(super) shim_log: Arc<Mutex<String>>,
}

impl DirectShim {
    /// The entries runc still has in this shim's state dir (its containers).
    pub fn runc_state_left(&self) -> Vec<std::ffi::OsString> {
        fs::read_dir(self.runc_state_dir())
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default()
    }

    /// After Delete and Shutdown: the shim has exited and left neither its socket nor
    /// runc state.
    pub fn assert_nothing_left(&self) {
        assert!(
            self.wait_shim_exit(Duration::from_secs(10)),
            "the shim still runs after Delete and Shutdown"
        );
        if let Some(socket) = self.socket() {
            assert!(!socket.exists(), "socket {} left behind", socket.display());
        }
        let left = self.runc_state_left();
        assert!(
            left.is_empty(),
            "runc state left in {}: {left:?}",
            self.runc_state_dir().display()
        );
    }

    /// Waits until the shim server has exited; false when it still runs after `timeout`.
    pub fn wait_shim_exit(&self, timeout: Duration) -> bool {
        let Some(pid) = self.leftovers.shim_pid else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !pid_alive(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        !pid_alive(pid)
    }
}

impl Leftovers {
    /// The test's temp dir (`/` once it is removed).
    pub(super) fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/"))
    }

    /// runc's own state dir for this shim: `<runc root>/<namespace>`.
    pub(super) fn runc_state_dir(&self) -> PathBuf {
        self.runc_root.join(&self.namespace)
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if let Some(pid) = self.shim_pid.filter(|p| pid_alive(*p)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // A runtime (or wrapper) that hangs outlives the shim: end whatever still runs
        // from this test's directory, even what blocks SIGTERM.
        if let Some(dir) = &self.dir {
            for (pid, _) in cleanup::processes_mentioning(&dir.path().to_string_lossy()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let runc = crate::require::tool("runc", "runc");
        cleanup::delete_all_containers(&runc, &self.runc_state_dir());
        if let Some(socket) = &self.socket {
            let _ = fs::remove_file(socket);
        }
        if let Some(dir) = self.dir.take() {
            cleanup::unmount_under(dir.path());
            let _ = dir.close();
        }
    }
}

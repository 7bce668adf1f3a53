//! The check at the end of a test that the shims left nothing behind: tasks, shims,
//! processes, runc containers, processes in the namespace's cgroups, mounts, shim sockets.

use super::ContainerdEnv;
use crate::cleanup;
use std::fs;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long shims get to exit after the last task is deleted (containerd calls Shutdown).
const SHIM_EXIT_GRACE: Duration = Duration::from_secs(3);

impl ContainerdEnv {
    /// Asserts the shims left nothing behind: no task left in containerd, no tether shim
    /// of this namespace (after up to 3 s: containerd calls Shutdown after the last
    /// delete), no runc or other process mentioning the namespace or the temp dir (but
    /// containerd), no container in runc's root, no process in the namespace's cgroups, no
    /// mount under the temp dir, and no shim socket of any id made by [`Self::id`].
    pub fn assert_no_leaks(&self) {
        let tasks = self.ctr_ok(&["task", "ls", "-q"]);
        assert!(tasks.trim().is_empty(), "tasks left in containerd: {tasks}");
        let deadline = Instant::now() + SHIM_EXIT_GRACE;
        let mut shims = self.shim_pids();
        while !shims.is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
            shims = self.shim_pids();
        }
        let mut problems = Vec::new();
        if !shims.is_empty() {
            problems.push(format!("tether shims still running: {shims:?}"));
        }
        let containerd = self.containerd_pid();
        let dir = self.path.to_string_lossy().into_owned();
        for (pid, cmd) in cleanup::processes_mentioning(&self.namespace)
            .into_iter()
            .chain(cleanup::processes_mentioning(&dir))
        {
            if Some(pid) != containerd && !shims.contains(&pid) {
                problems.push(format!("process {pid} left: {cmd}"));
            }
        }
        let listed = Command::new(&self.runc_bin)
            .arg("--root")
            .arg(self.runc_root())
            .args(["list", "-q"])
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if !listed.is_empty() {
            problems.push(format!("runc still knows containers: {listed}"));
        }
        for (cg, pids) in self.cgroup_pids() {
            problems.push(format!("processes {pids} left in cgroup {}", cg.display()));
        }
        let mounts = cleanup::mounts_under(&self.path);
        if !mounts.is_empty() {
            problems.push(format!("mounts left: {mounts:?}"));
        }
        for id in self.ids.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let socket = self.shim_socket(id);
            if fs::symlink_metadata(&socket).is_ok() {
                problems.push(format!("shim socket of {id} left: {}", socket.display()));
            }
        }
        if !problems.is_empty() {
            panic!(
                "leaks after the test:\n  {}\n--- containerd log ---\n{}",
                problems.join("\n  "),
                self.log_tail()
            );
        }
    }
}

//! Tearing a test's containerd down whatever the test did, in order, bounded in time and
//! without panicking: tasks and containers through containerd, the daemon, stray processes,
//! runc's containers and root, shim sockets, mounts, cgroups, the temp dir.

use super::bounded_run::run_bounded;
use super::daemon::stop_daemon;
use super::footprint::walk_dirs;
use super::ContainerdEnv;
use crate::cleanup;
use std::fs;
use std::thread;
use std::time::Duration;

impl Drop for ContainerdEnv {
    fn drop(&mut self) {
        // 1. Through containerd, as a user would: kill and delete every task, then the
        //    containers. Bounded and never panicking.
        if self.daemon.is_some() {
            let quick = Duration::from_secs(10);
            let list = |what: &str| -> Vec<String> {
                let cmd = self.ctr_command(&[what, "ls", "-q"]);
                run_bounded(cmd, None, quick)
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .map(|l| l.trim().to_string())
                            .filter(|l| !l.is_empty())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for task in list("task") {
                let _ = run_bounded(
                    self.ctr_command(&["task", "kill", "-a", "-s", "KILL", &task]),
                    None,
                    quick,
                );
                let _ = run_bounded(self.ctr_command(&["task", "rm", "-f", &task]), None, quick);
            }
            for container in list("container") {
                let _ = run_bounded(
                    self.ctr_command(&["container", "rm", &container]),
                    None,
                    quick,
                );
            }
        }
        // 2. The daemon.
        if let Some(child) = self.daemon.take() {
            stop_daemon(child, Duration::from_secs(5));
        }
        // 3. Stragglers: shims of this namespace, anything mentioning the temp dir.
        let dir = self.path.to_string_lossy().into_owned();
        let mut stragglers: Vec<(i32, String)> = self
            .shim_pids()
            .into_iter()
            .map(|p| (p, "tether shim".to_string()))
            .collect();
        stragglers.extend(cleanup::processes_mentioning(&dir));
        for (pid, cmd) in stragglers {
            eprintln!("cleanup: killing leftover process {pid}: {cmd}");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // 4. Containers runc still knows, and its root for this namespace.
        let runc_root = self.runc_root();
        if runc_root.exists() {
            cleanup::delete_all_containers(&self.runc_bin, &runc_root);
            if let Err(err) = fs::remove_dir_all(&runc_root) {
                eprintln!("cleanup: remove {}: {err}", runc_root.display());
            }
        }
        // 5. Shim sockets of killed shims.
        for id in self.ids.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = fs::remove_file(self.shim_socket(id));
        }
        // 6. Mounts, cgroups (empty once the containers are gone: rmdir, deepest first).
        cleanup::unmount_under(&self.path);
        for dir in self.cgroup_dirs() {
            let mut dirs = walk_dirs(&dir);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
            for d in dirs {
                let mut tries = 0;
                while let Err(err) = fs::remove_dir(&d) {
                    tries += 1;
                    // A killed process leaves its cgroup a moment later.
                    if tries >= 20 || err.kind() == std::io::ErrorKind::NotFound {
                        if tries >= 20 {
                            eprintln!("cleanup: rmdir {}: {err}", d.display());
                        }
                        break;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
        // 7. The temp dir.
        if let Some(dir) = self.dir.take() {
            if let Err(err) = dir.close() {
                eprintln!("cleanup: remove {}: {err}", self.path.display());
            }
        }
    }
}

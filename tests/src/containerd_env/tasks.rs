//! Tasks as `ctr task ls` shows them (status, pid), waiting for a status, and the ways
//! most tests start and end the containers they act on.

use super::ContainerdEnv;
use std::thread;
use std::time::{Duration, Instant};

impl ContainerdEnv {
    /// The STATUS column of `ctr task ls` for `id` (`RUNNING`, `STOPPED`, `PAUSED`…), or
    /// `None` when containerd lists no such task.
    pub fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ctr_ok(&["task", "ls"]);
        out.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.first() == Some(&id)).then(|| cols.get(2).unwrap_or(&"").to_string())
        })
    }

    /// The PID column of `ctr task ls` for `id`.
    pub fn task_pid(&self, id: &str) -> Option<i32> {
        let out = self.ctr_ok(&["task", "ls"]);
        out.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.first() == Some(&id) {
                cols.get(1).and_then(|p| p.parse().ok())
            } else {
                None
            }
        })
    }

    /// Polls `ctr task ls` until `id` has `status`; fails the test after `timeout`.
    pub fn wait_task_status(&self, id: &str, status: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.task_status(id);
            if now.as_deref() == Some(status) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "task {id} is {now:?}, not {status} after {timeout:?}\n--- containerd log ---\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `sleep 1000` detached (`ctr run -d`) as a new container whose id starts with
    /// `prefix`, waits (up to `timeout`) until its task is RUNNING and returns the id: the
    /// long-lived container most tests act on.
    pub fn run_sleeper(&self, prefix: &str, timeout: Duration) -> String {
        let id = self.id(prefix);
        self.ctr_ok(&self.run_args(&["-d"], &id, &["/bin/sleep", "1000"]));
        self.wait_task_status(&id, "RUNNING", timeout);
        id
    }

    /// SIGKILLs task `id` with `ctr task kill` and waits (up to `timeout`) until it is
    /// STOPPED: the way most tests end a container they are done with.
    pub fn kill_task(&self, id: &str, timeout: Duration) {
        self.ctr_ok(&["task", "kill", "-s", "KILL", id]);
        self.wait_task_status(id, "STOPPED", timeout);
    }

    /// Kills task `id` ([`Self::kill_task`]), then deletes the task and its container,
    /// each of which must succeed.
    pub fn kill_and_remove(&self, id: &str, timeout: Duration) {
        self.kill_task(id, timeout);
        self.ctr_ok(&["task", "rm", id]);
        self.ctr_ok(&["container", "rm", id]);
    }
}

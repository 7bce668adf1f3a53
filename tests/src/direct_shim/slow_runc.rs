//! [`SlowRunc`]: a wrapper around the real runc, named as a task's `BinaryName`, that
//! answers late from the verbs it is given (or waits before it runs them), so a test can
//! place other calls while one is held in runc.

use super::pid_alive;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A wrapper around the real runc that returns `delay` late from each of `verbs`, or
/// (`hang_first`) waits `delay` before it runs the real runc.
#[derive(Debug)]
pub struct SlowRunc {
    path: PathBuf,
    pids: PathBuf,
}

impl SlowRunc {
    /// Writes the wrapper script into `dir`: the work happens on time, the answer late.
    pub fn write(dir: &Path, verbs: &[&str], delay: Duration) -> Self {
        Self::write_inner(dir, verbs, delay, false)
    }

    /// Writes a wrapper that, for `verbs`, waits `delay` first and only then runs the real
    /// runc: nothing has happened yet when it hangs.
    pub fn write_hanging_first(dir: &Path, verbs: &[&str], delay: Duration) -> Self {
        Self::write_inner(dir, verbs, delay, true)
    }

    fn write_inner(dir: &Path, verbs: &[&str], delay: Duration, hang_first: bool) -> Self {
        let real = crate::require::tool("runc", "runc");
        let path = dir.join("slow-runc");
        let pids = dir.join("slow-runc.pids");
        // The delay is a child `sleep` (as a runc's own children would be), in the
        // foreground (before issue 23 the shim's runc children inherited its blocked
        // SIGCHLD, with which `wait` on a background job never returned), and the pids of
        // both go to the pids file.
        let delay_step = format!(
            "[ -n \"$verb\" ] && sh -c 'echo $PPID $$ >>{pids}; exec sleep {secs}'\n",
            secs = delay.as_secs_f64(),
            pids = pids.display(),
        );
        let (before, after) = if hang_first {
            (delay_step.as_str(), "")
        } else {
            ("", delay_step.as_str())
        };
        let what = format!(
            "{} {} ms",
            if hang_first {
                "after waiting"
            } else {
                "returning late by"
            },
            delay.as_millis()
        );
        crate::runc_gate::write_wrapper(&path, &real, &what, verbs, before, after);
        SlowRunc { path, pids }
    }

    /// The wrapper's path, for `BinaryName`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The wrappers that were slow and the `sleep` each ran, as far as they are still alive
    /// (zombies count as gone).
    pub fn alive(&self) -> Vec<i32> {
        fs::read_to_string(&self.pids)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|p| pid_alive(*p))
            .collect()
    }
}

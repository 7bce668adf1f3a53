//! The clocks the shim bench reads: CLOCK_MONOTONIC (the one `runc-timer` logs in) and a
//! process's own CPU time.

use nix::time::{clock_gettime, ClockId};
use std::fs;

/// CLOCK_MONOTONIC in nanoseconds (0 if it cannot be read, which Linux never does).
pub fn now_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(t.tv_nsec()).unwrap_or(0)
    })
}

/// The CPU time, in nanoseconds, the threads of `pid` that run now have spent (the first
/// field of each `/proc/PID/task/TID/schedstat`): the process's own time, children
/// excluded, at nanosecond resolution. Threads that have already exited are not counted
/// (neither shim ends a thread during one container's lifecycle). `None` when the
/// process is gone or the kernel keeps no schedstat.
pub fn threads_cpu_ns(pid: i32) -> Option<u64> {
    let mut total = 0u64;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        // A thread that ended since the listing took its time with it.
        let Ok(stat) = fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total += stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

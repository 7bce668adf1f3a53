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

/// The user and system CPU time of process `pid` (its threads, living and ended; children
/// excluded) in clock ticks (`CLK_TCK`, 100 a second here): the `utime` and `stime` of
/// `/proc/PID/stat`. The kernel accounts them by sampling at its tick (`HZ`) and scales
/// them to the precise total, so only their ratio over many ticks is worth reading: the
/// bench splits the precise [`threads_cpu_ns`] by it. `None` when the process is gone.
pub fn cpu_ticks(pid: i32) -> Option<UserSystem> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    Some(UserSystem {
        user: fields.get(11)?.parse().ok()?,
        system: fields.get(12)?.parse().ok()?,
    })
}

/// CPU time split into user and system (in whatever unit the reader says).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserSystem {
    /// Time in user space.
    pub user: u64,
    /// Time in the kernel on the process's behalf.
    pub system: u64,
}

impl UserSystem {
    /// `self - earlier`, field by field (0 where a counter went back).
    pub fn since(self, earlier: UserSystem) -> UserSystem {
        UserSystem {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    /// `self + other`, field by field.
    pub fn plus(self, other: UserSystem) -> UserSystem {
        UserSystem {
            user: self.user + other.user,
            system: self.system + other.system,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_user_and_system_ticks() {
        let me = i32::try_from(std::process::id()).expect("pid");
        // Spin a little so at least one tick lands.
        let from = now_ns();
        while now_ns() - from < 50_000_000 {
            std::hint::black_box(0u64);
        }
        let t = cpu_ticks(me).expect("own stat");
        assert!(t.user + t.system > 0, "{t:?}");
        assert_eq!(t.since(t), UserSystem::default());
        assert_eq!(t.plus(UserSystem::default()), t);
    }
}

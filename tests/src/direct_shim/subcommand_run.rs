//! [`SubcommandRun`]: how long a shim subcommand (`start`, `delete`) took and the CPU it
//! used, read from this process's reaped children.

use std::time::{Duration, Instant};

/// One run of a shim subcommand (`start`, `delete`) this process waited for.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubcommandRun {
    /// From spawning it to reaping it.
    pub took: Duration,
    /// Its CPU time (user + system), with that of the children it waited for.
    pub cpu: Duration,
}

impl SubcommandRun {
    /// The wall clock and this process's reaped children's CPU time, now.
    pub(super) fn clock() -> (Instant, Duration) {
        (Instant::now(), children_cpu())
    }

    /// What passed since `before` ([`SubcommandRun::clock`]): right for one subcommand
    /// at a time, since every child this process reaps meanwhile counts.
    pub(super) fn since(before: (Instant, Duration)) -> Self {
        SubcommandRun {
            took: before.0.elapsed(),
            cpu: children_cpu().saturating_sub(before.1),
        }
    }
}

/// User + system CPU time of this process's reaped children (and theirs).
pub fn children_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(Duration::ZERO, |u| {
        let d = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
                + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
        };
        d(u.user_time()) + d(u.system_time())
    })
}

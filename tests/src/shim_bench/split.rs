//! The shim's own share of a call that runs the runtime, split by the kernel's stamps
//! ([`super::proc_events`]) of the one runtime the shim started in it:
//!
//! - (a) *call → fork*: from sending the request to the fork of the runtime (the end of
//!   the kernel's `copy_process`): the shim reading the request, deciding, handing it to
//!   whichever thread spawns, and the `clone` itself up to the new task being set up;
//! - (b) *fork → exec*: from there to the runtime's `execve` as the kernel stamps it (after
//!   the new image is mapped and the old, `vfork`-shared one let go): what the spawned
//!   child does before `execve` (descriptors, signal dispositions) and the kernel's exec;
//! - (c) *exec → exit*: the runtime's own run (runc's part, as in the per-call table);
//! - (d) *exit → reply*: the shim woken by the exit, reaping, reading what the runtime
//!   left (pid file, log), and the reply reaching the client.
//!
//! (a) + (d) is the shim deciding and answering, (b) the start of the runtime: both the
//! shim's acts, though (b) also grows with what is executed. The runtime is the process
//! whose fork event names the shim server as its parent (`parent_tgid`, whichever thread
//! forked it): what runc forks (`runc init`) or a `BinaryName` wrapper's own child is
//! not counted.

use super::lifecycle::CALLS;
use super::proc_events::PidTimes;
use super::report::{ms, quantile, ratio, ShimRuns};
use super::taskstats::UserSystem;
use std::fmt::Write as _;

/// One call's own share split at the kernel's stamps of the runtime it started (ns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Split {
    /// (a) the request sent → the runtime's fork.
    pub to_fork_ns: u64,
    /// (b) the runtime's fork → its `execve`.
    pub spawn_ns: u64,
    /// (c) its `execve` → its exit.
    pub runtime_ns: u64,
    /// (d) its exit → the reply received.
    pub to_reply_ns: u64,
}

impl Split {
    /// The split of the call `[from, to]` (ns, CLOCK_MONOTONIC), given the server's
    /// children as the kernel saw them: `None` unless exactly one runtime was forked
    /// within the call and its fork, exec and exit are all known and in order.
    pub fn of_call(from: u64, to: u64, children: &[(i32, PidTimes)]) -> Option<Split> {
        let mut inside = children
            .iter()
            .filter(|(_, t)| t.fork_ns.is_some_and(|f| from <= f && f <= to));
        let (_, t) = inside.next()?;
        if inside.next().is_some() {
            return None;
        }
        let (fork, exec, exit) = (t.fork_ns?, t.exec_ns?, t.exit_ns?);
        if !(fork <= exec && exec <= exit && exit <= to) {
            return None;
        }
        Some(Split {
            to_fork_ns: fork - from,
            spawn_ns: exec - fork,
            runtime_ns: exit - exec,
            to_reply_ns: to - exit,
        })
    }

    /// (a) + (d): the shim deciding and answering.
    pub fn deciding_ns(&self) -> u64 {
        self.to_fork_ns + self.to_reply_ns
    }
}

/// How many runtimes the server forked within the call `[from, to]`.
pub fn runtimes_within(from: u64, to: u64, children: &[(i32, PidTimes)]) -> usize {
    children
        .iter()
        .filter(|(_, t)| t.fork_ns.is_some_and(|f| from <= f && f <= to))
        .count()
}

/// One call's split samples of one shim, part by part (ns), and the samples in which the
/// call started a runtime but could not be split.
pub(super) struct Parts {
    /// The own share (latency − runc) of every sample of the call, split or not.
    pub(super) own: Vec<u64>,
    a: Vec<u64>,
    b: Vec<u64>,
    c: Vec<u64>,
    d: Vec<u64>,
    /// (a) + (d) of every split sample.
    pub(super) ad: Vec<u64>,
    unsplit: usize,
}

/// Every sample of `call` (an index into [`CALLS`]) that `runs` holds, split where it can be.
pub(super) fn parts(runs: &ShimRuns, call: usize) -> Parts {
    let mut p = Parts {
        own: Vec::new(),
        a: Vec::new(),
        b: Vec::new(),
        c: Vec::new(),
        d: Vec::new(),
        ad: Vec::new(),
        unsplit: 0,
    };
    for s in runs
        .lifecycles
        .iter()
        .flat_map(|l| l.calls.iter())
        .filter(|c| c.call == call)
    {
        p.own.push(s.latency_ns.saturating_sub(s.runc_ns));
        match s.split {
            Some(x) => {
                p.a.push(x.to_fork_ns);
                p.b.push(x.spawn_ns);
                p.c.push(x.runtime_ns);
                p.d.push(x.to_reply_ns);
                p.ad.push(x.deciding_ns());
            }
            None if s.runtimes > 0 => p.unsplit += 1,
            None => {}
        }
    }
    p
}

/// The split table, Markdown, `a` against `b`: one line per call in which either shim
/// started a runtime; medians (ms) and the ratios a / b of (a)+(d) and of (b).
pub fn table(a: &ShimRuns, b: &ShimRuns) -> String {
    let (an, bn) = (&a.name, &b.name);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| split: call | own share {an} / {bn} (ms) | own {an}/{bn} | (a) call → fork | (b) fork → exec | (c) exec → exit (runtime) | (d) exit → reply | (a)+(d) {an} / {bn} (ms) | (a)+(d) {an}/{bn} | (b) {an}/{bn} |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut unsplit = 0;
    for (i, name) in CALLS.iter().enumerate() {
        let (pa, pb) = (parts(a, i), parts(b, i));
        unsplit += pa.unsplit + pb.unsplit;
        if pa.a.is_empty() && pb.a.is_empty() {
            continue;
        }
        let m = |v: &[u64]| quantile(v, 50);
        let pair = |x: &[u64], y: &[u64]| format!("{} / {}", ms(m(x)), ms(m(y)));
        let _ = writeln!(
            out,
            "| split: {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            pair(&pa.own, &pb.own),
            ratio(m(&pa.own), m(&pb.own)),
            pair(&pa.a, &pb.a),
            pair(&pa.b, &pb.b),
            pair(&pa.c, &pb.c),
            pair(&pa.d, &pb.d),
            pair(&pa.ad, &pb.ad),
            ratio(m(&pa.ad), m(&pb.ad)),
            ratio(m(&pa.b), m(&pb.b)),
        );
    }
    if unsplit > 0 {
        let _ = writeln!(
            out,
            "({unsplit} calls started a runtime but are not split: more than one runtime, or a stamp missing)"
        );
    }
    out
}

/// The split medians of every call of `runs`, as JSON values (ns).
pub fn json(runs: &ShimRuns) -> Vec<serde_json::Value> {
    CALLS
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let p = parts(runs, i);
            (!p.a.is_empty()).then(|| {
                serde_json::json!({
                    "call": name,
                    "to_fork_ns": p.a,
                    "spawn_ns": p.b,
                    "runtime_ns": p.c,
                    "to_reply_ns": p.d,
                    "unsplit": p.unsplit,
                    "to_fork_p50_ns": quantile(&p.a, 50),
                    "spawn_p50_ns": quantile(&p.b, 50),
                    "runtime_p50_ns": quantile(&p.c, 50),
                    "to_reply_p50_ns": quantile(&p.d, 50),
                    "deciding_p50_ns": quantile(&p.ad, 50),
                })
            })
        })
        .collect()
}

/// What a CPU row takes from one shim: every precise sample (ns) and the ticks summed.
type CpuSamples = fn(&ShimRuns) -> (Vec<u64>, UserSystem);

/// One shim's CPU split over all its lifecycles: the median precise figure (schedstat)
/// divided by the system share of the ticks summed over every sample (the kernel samples
/// user or system at each of its ticks, `HZ` 250 here, so a lifecycle of the shim's has
/// a few and only the sum over many says something; [`super::taskstats`]).
struct CpuSplit {
    user_ms: f64,
    system_ms: f64,
    system_share: f64,
    sampled_ms: f64,
}

fn cpu_split(precise: &[u64], ticks: UserSystem) -> CpuSplit {
    let total = ticks.user + ticks.system;
    let share = if total == 0 {
        0.0
    } else {
        ticks.system as f64 / total as f64
    };
    let median = quantile(precise, 50) as f64 / 1e6;
    CpuSplit {
        user_ms: median * (1.0 - share),
        system_ms: median * share,
        system_share: share,
        sampled_ms: total as f64 / 1e6,
    }
}

/// The user / system table, Markdown, `a` against `b`: per lifecycle and per exec.
pub fn cpu_table(a: &ShimRuns, b: &ShimRuns) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| CPU user / system (ms; median schedstat split by the user and system ticks taskstats gives, summed over all samples; ticks of the lifecycle: Create → Delete) | {an} | {bn} | user {an}/{bn} | system {an}/{bn} |",
        an = a.name,
        bn = b.name
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: |");
    let rows: [(&str, CpuSamples); 2] = [
        ("shim CPU per lifecycle, user / system", |r| {
            let l = &r.lifecycles;
            (
                l.iter().map(|s| s.server_cpu_ns).collect(),
                l.iter()
                    .fold(UserSystem::default(), |t, s| t.plus(s.server_ticks)),
            )
        }),
        ("shim CPU per exec, user / system", |r| {
            let l = &r.lifecycles;
            (
                l.iter()
                    .flat_map(|s| s.exec_cpu_ns.iter().copied())
                    .collect(),
                l.iter()
                    .fold(UserSystem::default(), |t, s| t.plus(s.exec_ticks)),
            )
        }),
    ];
    for (label, take) in rows {
        let (pa, ta) = take(a);
        let (pb, tb) = take(b);
        let (sa, sb) = (cpu_split(&pa, ta), cpu_split(&pb, tb));
        let cell = |s: &CpuSplit| {
            format!(
                "{:.2} / {:.2} ({:.0} % system of {:.0} ms sampled)",
                s.user_ms,
                s.system_ms,
                s.system_share * 100.0,
                s.sampled_ms
            )
        };
        let r = |x: f64, y: f64| {
            if y > 0.0 {
                format!("{:.2}×", x / y)
            } else {
                "–".into()
            }
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} |",
            cell(&sa),
            cell(&sb),
            r(sa.user_ms, sb.user_ms),
            r(sa.system_ms, sb.system_ms)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(fork: u64, exec: u64, exit: u64) -> (i32, PidTimes) {
        (
            7,
            PidTimes {
                fork_ns: Some(fork),
                parent_tgid: Some(1),
                exec_ns: Some(exec),
                exit_ns: Some(exit),
                leader_exited: true,
            },
        )
    }

    #[test]
    fn one_runtime_splits_the_call_into_four_parts() {
        let s = Split::of_call(100, 1000, &[child(150, 200, 900)]).expect("split");
        assert_eq!(
            s,
            Split {
                to_fork_ns: 50,
                spawn_ns: 50,
                runtime_ns: 700,
                to_reply_ns: 100
            }
        );
        assert_eq!(s.deciding_ns(), 150);
        assert_eq!(
            s.to_fork_ns + s.spawn_ns + s.runtime_ns + s.to_reply_ns,
            900
        );
    }

    #[test]
    fn none_two_or_an_unfinished_runtime_is_not_split() {
        assert_eq!(Split::of_call(100, 1000, &[]), None);
        assert_eq!(Split::of_call(100, 1000, &[child(50, 60, 70)]), None);
        let two = [child(150, 200, 300), child(400, 450, 500)];
        assert_eq!(Split::of_call(100, 1000, &two), None);
        assert_eq!(runtimes_within(100, 1000, &two), 2);
        let mut running = child(150, 200, 0);
        running.1.exit_ns = None;
        assert_eq!(Split::of_call(100, 1000, &[running]), None);
        assert_eq!(Split::of_call(100, 1000, &[child(150, 200, 2000)]), None);
    }
}

//! `runc-timer`: a stand-in for runc that runs the real one and logs how long it took,
//! for `make bench-shim` (named as a task's `BinaryName`, so every runc a shim runs goes
//! through it).
//!
//! It is started under a name of the bench's choosing (a symlink); next to that name,
//! `<name>.conf` holds two lines: the real runc, and the log to append to. Each run appends
//! one line, `verb start_ns end_ns runc_cpu_ns self_cpu_ns pid`: the verb (runc's first
//! non-option argument), CLOCK_MONOTONIC when the wrapper starts and just after the real
//! runc has been reaped, the CPU time of runc and everything it waited for, this
//! wrapper's own CPU time, and its pid (the process the shim spawned: the bench takes
//! its exec and exit from the kernel, `shim_bench::proc_events`). The exit status is runc's (128 + the signal when it was killed).
//! Every descriptor the shim handed down (a console socket, stdio) reaches runc as it was.
#![deny(unsafe_code)]

use nix::sys::resource::{getrusage, UsageWho};
use nix::time::{clock_gettime, ClockId};
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitCode};

/// runc's verbs; the first argument that is one of them names the run.
const VERBS: &[&str] = &[
    "create",
    "start",
    "run",
    "exec",
    "kill",
    "delete",
    "state",
    "ps",
    "pause",
    "resume",
    "update",
    "checkpoint",
    "restore",
    "events",
    "list",
    "features",
    "spec",
];

fn main() -> ExitCode {
    // From here, not from runc's spawn: the wrapper's own start-up then counts as runc's,
    // as a shim's exec of the real runc would; what is left to the shim is its fork+exec.
    let start = now_ns();
    let mut args = std::env::args_os();
    let name = args.next().unwrap_or_default();
    let rest: Vec<_> = args.collect();
    let conf_path = format!("{}.conf", name.to_string_lossy());
    let conf = match std::fs::read_to_string(&conf_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("runc-timer: read {conf_path}: {e}");
            return ExitCode::from(125);
        }
    };
    let mut lines = conf.lines();
    let (Some(real), Some(log)) = (lines.next(), lines.next()) else {
        eprintln!("runc-timer: {conf_path} must hold the real runc and the log path");
        return ExitCode::from(125);
    };
    let verb = rest
        .iter()
        .map(|a| a.to_string_lossy())
        .find(|a| VERBS.contains(&a.as_ref()))
        .map_or_else(|| "other".to_string(), |v| v.into_owned());
    let status = Command::new(real).arg0(real).args(&rest).status();
    let end = now_ns();
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            eprintln!("runc-timer: run {real}: {e}");
            return ExitCode::from(125);
        }
    };
    let runc_cpu = cpu_ns(UsageWho::RUSAGE_CHILDREN);
    let self_cpu = cpu_ns(UsageWho::RUSAGE_SELF);
    let pid = std::process::id();
    let line = format!("{verb} {start} {end} {runc_cpu} {self_cpu} {pid}\n");
    // One short write to an O_APPEND file: lines of concurrent runs never interleave.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
    {
        let _ = f.write_all(line.as_bytes());
    }
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(125);
    ExitCode::from(u8::try_from(code).unwrap_or(125))
}

/// CLOCK_MONOTONIC in nanoseconds (the bench reads the same clock).
fn now_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0)
        })
        .unwrap_or(0)
}

/// User + system CPU time of `who`, in nanoseconds.
fn cpu_ns(who: UsageWho) -> u64 {
    getrusage(who)
        .map(|u| {
            let us = |t: nix::sys::time::TimeVal| {
                u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                    + u64::try_from(t.tv_usec()).unwrap_or(0)
            };
            (us(u.user_time()) + us(u.system_time())) * 1000
        })
        .unwrap_or(0)
}

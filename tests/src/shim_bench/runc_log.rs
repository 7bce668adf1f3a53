//! `runc-timer` installed as a task's runc, and the runs it logged.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One run of the real runc, as `runc-timer` logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuncRun {
    /// runc's verb (`create`, `exec`, `kill`…; `other` when none was recognised).
    pub verb: String,
    /// CLOCK_MONOTONIC when the wrapper started, just before it spawned runc (ns).
    pub start_ns: u64,
    /// CLOCK_MONOTONIC just after runc was reaped (ns).
    pub end_ns: u64,
    /// runc's CPU time, with its waited-for children (ns).
    pub cpu_ns: u64,
    /// The wrapper's own CPU time (ns).
    pub wrapper_cpu_ns: u64,
    /// The wrapper's pid: the process the shim spawned as its runtime.
    pub pid: i32,
    /// The kernel's `execve` and exit of that process (ns, CLOCK_MONOTONIC), once the
    /// bench has looked them up ([`super::proc_events`]): the span the runtime existed.
    pub lived: Option<(u64, u64)>,
}

impl RuncRun {
    /// Parses one log line (`verb start end cpu wrapper_cpu pid`); `None` if malformed.
    pub fn parse(line: &str) -> Option<Self> {
        let mut f = line.split_whitespace();
        let verb = f.next()?.to_string();
        let mut num = || f.next()?.parse::<u64>().ok();
        Some(RuncRun {
            verb,
            start_ns: num()?,
            end_ns: num()?,
            cpu_ns: num()?,
            wrapper_cpu_ns: num()?,
            pid: i32::try_from(num()?).ok()?,
            lived: None,
        })
    }

    /// The span runc's part of a call is taken from: from the `execve` of the process the
    /// shim spawned to its exit, as the kernel stamped them; the timer's own logged span
    /// when the kernel's is not known.
    pub fn span(&self) -> (u64, u64) {
        self.lived.unwrap_or((self.start_ns, self.end_ns))
    }

    /// How much of `[from, to]` this run covered (ns).
    pub fn overlap(&self, from: u64, to: u64) -> u64 {
        let (start, end) = self.span();
        end.min(to).saturating_sub(start.max(from))
    }
}

/// `runc-timer` under the name a shim is given as `BinaryName`, and its log.
#[derive(Debug)]
pub struct RuncTimer {
    link: PathBuf,
    log: PathBuf,
    read: usize,
}

impl RuncTimer {
    /// Installs `timer` (the `runc-timer` binary) in `dir` as `runc`, running `real_runc`
    /// and logging to `dir/runc.log`.
    pub fn install(dir: &Path, timer: &Path, real_runc: &Path) -> io::Result<Self> {
        let link = dir.join("runc");
        let log = dir.join("runc.log");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(timer, &link)?;
        fs::write(
            dir.join("runc.conf"),
            format!("{}\n{}\n", real_runc.display(), log.display()),
        )?;
        fs::write(&log, "")?;
        Ok(RuncTimer { link, log, read: 0 })
    }

    /// The path to name as `BinaryName`.
    pub fn path(&self) -> &Path {
        &self.link
    }

    /// The runs logged since the last call (complete lines only).
    pub fn take_new(&mut self) -> Vec<RuncRun> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let Some(rest) = text.get(self.read..) else {
            return Vec::new();
        };
        let complete = rest.rfind('\n').map_or(0, |i| i + 1);
        self.read += complete;
        rest[..complete]
            .lines()
            .filter_map(RuncRun::parse)
            .collect()
    }
}

/// The time runc ran within `[from, to]`, over all of `runs` (ns).
pub fn runc_within(runs: &[RuncRun], from: u64, to: u64) -> u64 {
    runs.iter()
        .map(|r| r.overlap(from, to))
        .sum::<u64>()
        .min(to.saturating_sub(from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_parses_and_overlaps_clip() {
        let mut r = RuncRun::parse("exec 100 200 50 7 42").expect("parses");
        assert_eq!((r.verb.as_str(), r.pid), ("exec", 42));
        assert_eq!(r.overlap(0, 1000), 100);
        assert_eq!(r.overlap(150, 1000), 50);
        assert_eq!(r.overlap(300, 400), 0);
        // The kernel's span, once known, is the one taken.
        r.lived = Some((90, 230));
        assert_eq!(r.overlap(0, 1000), 140);
        assert_eq!(runc_within(&[r.clone(), r], 0, 200), 200);
        assert_eq!(RuncRun::parse("exec 1 2 3 4"), None);
    }
}

//! The `starttime` record: which process a pid named, so that it can be told from a
//! later process that got the same pid.
//!
//! A supervisor writes it as soon as it knows its process's pid (the process is its
//! unreaped child then, so the pid cannot have been recycled yet):
//!
//! ```text
//! 4242 1234567
//! ```
//!
//! the pid and the process's start time in clock ticks after boot (field 22 of
//! `/proc/<pid>/stat`). Anyone may later check whether that pid still names that process
//! ([`StartRecord::is_running`]), e.g. after the supervisor was SIGKILLed and nobody
//! recorded the exit.

use crate::error::{snippet, Error, Result};

/// The pid of a process and when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartRecord {
    /// The process's pid (in the pid namespace of whoever wrote the record).
    pub pid: i32,
    /// Its start time, in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
}

impl StartRecord {
    /// The record of the live process `pid`, read from `/proc`; `None` if there is no
    /// such process (or it is a zombie: it has exited).
    pub fn of(pid: i32) -> Option<Self> {
        let stat = read_stat(pid)?;
        (!stat.exited).then_some(StartRecord {
            pid,
            start_ticks: stat.start_ticks,
        })
    }

    /// Whether the pid still names this very process and it has not exited (a zombie
    /// has). A pid that now names another process (recycled) is not.
    pub fn is_running(&self) -> bool {
        Self::of(self.pid) == Some(*self)
    }

    /// The file format: `"<pid> <start ticks>\n"`.
    pub fn encode(&self) -> String {
        format!("{} {}\n", self.pid, self.start_ticks)
    }

    /// Parses what [`StartRecord::encode`] writes (surrounding blanks tolerated).
    /// Errors: `Error::BadStartRecord`.
    pub fn decode(text: &str) -> Result<Self> {
        let bad = || Error::BadStartRecord {
            content: snippet(text),
        };
        let mut fields = text.split_ascii_whitespace();
        let (Some(pid), Some(ticks), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad());
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(pid) || !digits(ticks) {
            return Err(bad());
        }
        let pid: i32 = pid.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
        let start_ticks: u64 = ticks.parse().map_err(|_| bad())?;
        Ok(StartRecord { pid, start_ticks })
    }
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    /// Zombie or dead: it has exited.
    exited: bool,
    start_ticks: u64,
}

fn read_stat(pid: i32) -> Option<Stat> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses `/proc/<pid>/stat`: "pid (comm) state ppid ... starttime ...". The command
/// name may hold spaces and parentheses, so the fields are counted after the last ')'.
fn parse_stat(text: &str) -> Option<Stat> {
    let mut fields = text.rsplit_once(')')?.1.split_ascii_whitespace();
    let state = fields.next()?;
    // Fields 4 to 21 lie between the state (3) and the start time (22).
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some(Stat {
        exited: matches!(state, "Z" | "X" | "x"),
        start_ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line (kernel 6.1), with a command name full of traps.
    const STAT: &str = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 120 0 0 0 0 0 0 0 20 0 1 0 \
                        987654 2580480 221 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn parses_state_and_start_time() {
        assert_eq!(
            parse_stat(STAT),
            Some(Stat {
                exited: false,
                start_ticks: 987654
            })
        );
        let zombie = STAT.replace(")) S ", ")) Z ");
        assert!(parse_stat(&zombie).unwrap().exited);
        for bad in [
            "",
            "4242 (x",
            "4242 (x) S 1 2",
            "4242 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 notanumber",
        ] {
            assert_eq!(parse_stat(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn our_own_process_is_running_and_a_changed_start_is_not() {
        let me = StartRecord::of(nix::unistd::getpid().as_raw()).expect("our own stat");
        assert!(me.is_running());
        let recycled = StartRecord {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!recycled.is_running());
        assert_eq!(StartRecord::of(-1), None);
    }

    #[test]
    fn a_reaped_child_is_not_running() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let rec = StartRecord::of(i32::try_from(child.id()).unwrap());
        child.wait().unwrap();
        if let Some(rec) = rec {
            assert!(!rec.is_running());
        }
    }

    #[test]
    fn round_trip_and_garbage() {
        let rec = StartRecord {
            pid: 4242,
            start_ticks: 987654,
        };
        assert_eq!(rec.encode(), "4242 987654\n");
        assert_eq!(StartRecord::decode(&rec.encode()).unwrap(), rec);
        assert_eq!(StartRecord::decode(" 4242  987654 \r\n").unwrap(), rec);
        for bad in [
            "",
            "4242",
            "4242 x",
            "0 5",
            "-1 5",
            "+1 5",
            "1 2 3",
            "1 -2",
            "99999999999 1",
            "1 99999999999999999999999",
            "\u{ff}",
        ] {
            assert!(
                matches!(StartRecord::decode(bad), Err(Error::BadStartRecord { .. })),
                "{bad:?}"
            );
        }
    }
}

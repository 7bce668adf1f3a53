//! Where the supervisor is in its process's life, as one state with explicit transitions
//! (the methods of [`SupervisorState`] are its only writers). Plain data, serialisable:
//! what a supervisor would carry across an `execve` of a newer binary.
//!
//! ```text
//!  Running{stdin: Held} ──close_stdin──► Running{stdin: Closing}
//!          │                                      │
//!          └───────────────reaped─────────────────┴──► Exiting ──recorded──► Exited
//!                                                                               │
//!                                           Done ◄──finish── Stopping ◄──stop───┤
//!                                             ▲                                 │
//!                                             └─────────────finish──────────────┘
//! ```
//!
//! - `Running`: the process lives; the supervisor holds every FIFO open (`exit`, and
//!   `stdin` until a `close-stdin`), a termination signal is ignored (the supervisor
//!   outlives its manager).
//! - `Exiting`: the process has been reaped (its status told to the keeper) at `since`;
//!   its output is on its way to the FIFOs, and `exit` is still held: the exit is
//!   recorded once the output is there, or the bounded wait for it is over
//!   (`process_core::exit_output`).
//! - `Exited`: `exitcode` is written and `exit` closed; the output goes on to the FIFOs
//!   until a manager has read it.
//! - `Stopping`: a termination signal came after the exit (`delete`): the wait for a
//!   reader is bounded from `since` on (`DeleteLinger`).
//! - `Done`: everything delivered, or given up: the supervisor exits.

use fifo::ExitRecord;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Whether the supervisor still holds the `stdin` FIFO open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stdin {
    /// Held: the process's input stays open between managers.
    Held,
    /// A manager asked to close it: the stdin pump's end is the process's EOF.
    Closing,
}

/// A point on `CLOCK_MONOTONIC` (nanoseconds), which stays valid across `execve` (an
/// `Instant` does not serialise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MonoTime(u64);

impl MonoTime {
    /// Now.
    pub fn now() -> Self {
        let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(Duration::from)
            .unwrap_or_default();
        MonoTime(u64::try_from(ts.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The same point as an `Instant` (for the core's timers), given what both clocks say
    /// now.
    pub fn to_instant(self, now: Instant, mono_now: MonoTime) -> Instant {
        let ago = Duration::from_nanos(mono_now.0.saturating_sub(self.0));
        now.checked_sub(ago).unwrap_or(now)
    }
}

/// The supervisor's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupervisorState {
    /// The process `pid` runs.
    Running { pid: i32, stdin: Stdin },
    /// It was reaped at `since` with `exit`, not recorded yet: its output is on its way.
    Exiting {
        pid: i32,
        exit: ExitRecord,
        since: MonoTime,
    },
    /// It exited with `exit`: recorded, `exit` closed; its output is being delivered.
    Exited { pid: i32, exit: ExitRecord },
    /// A termination signal came at `since`, after the exit.
    Stopping {
        pid: i32,
        exit: ExitRecord,
        since: MonoTime,
    },
    /// All delivered (or given up): the supervisor leaves.
    Done { pid: i32, exit: ExitRecord },
}

pub use crate::process_core::transition::IllegalTransition;

impl SupervisorState {
    /// A process that has just started.
    pub fn started(pid: i32) -> Self {
        SupervisorState::Running {
            pid,
            stdin: Stdin::Held,
        }
    }

    /// The state's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            SupervisorState::Running {
                stdin: Stdin::Held, ..
            } => "running",
            SupervisorState::Running {
                stdin: Stdin::Closing,
                ..
            } => "running (stdin closing)",
            SupervisorState::Exiting { .. } => "exiting",
            SupervisorState::Exited { .. } => "exited",
            SupervisorState::Stopping { .. } => "exited (stopping)",
            SupervisorState::Done { .. } => "done",
        }
    }

    /// The process's pid.
    pub fn pid(&self) -> i32 {
        match *self {
            SupervisorState::Running { pid, .. }
            | SupervisorState::Exiting { pid, .. }
            | SupervisorState::Exited { pid, .. }
            | SupervisorState::Stopping { pid, .. }
            | SupervisorState::Done { pid, .. } => pid,
        }
    }

    /// Whether the process still runs.
    pub fn is_running(&self) -> bool {
        matches!(self, SupervisorState::Running { .. })
    }

    /// When the process was reaped, while its exit waits for its output (`Exiting`).
    pub fn exiting_since(&self) -> Option<MonoTime> {
        match *self {
            SupervisorState::Exiting { since, .. } => Some(since),
            _ => None,
        }
    }

    /// Whether the exit is recorded (`exitcode` written, `exit` closed): the supervisor
    /// waits for a reader of what is left, or leaves.
    pub fn is_recorded(&self) -> bool {
        self.exit().is_some()
    }

    /// Its exit, once recorded.
    pub fn exit(&self) -> Option<ExitRecord> {
        match *self {
            SupervisorState::Running { .. } | SupervisorState::Exiting { .. } => None,
            SupervisorState::Exited { exit, .. }
            | SupervisorState::Stopping { exit, .. }
            | SupervisorState::Done { exit, .. } => Some(exit),
        }
    }

    /// A manager asked to close stdin (a tty process then gets its EOF character).
    pub fn stdin_closing(&self) -> bool {
        matches!(
            self,
            SupervisorState::Running {
                stdin: Stdin::Closing,
                ..
            }
        )
    }

    /// When the termination signal came, in `Stopping`.
    pub fn stopping_since(&self) -> Option<MonoTime> {
        match *self {
            SupervisorState::Stopping { since, .. } => Some(since),
            _ => None,
        }
    }

    /// Whether the supervisor leaves.
    pub fn is_done(&self) -> bool {
        matches!(self, SupervisorState::Done { .. })
    }

    fn illegal<T>(&self, event: &'static str) -> Result<T, IllegalTransition> {
        Err(IllegalTransition {
            from: self.name(),
            event,
        })
    }

    /// Running{Held} → Running{Closing}: a manager asked to close stdin (a repeat is
    /// illegal: the first one counts).
    pub fn close_stdin(&mut self) -> Result<(), IllegalTransition> {
        match *self {
            SupervisorState::Running {
                pid,
                stdin: Stdin::Held,
            } => {
                *self = SupervisorState::Running {
                    pid,
                    stdin: Stdin::Closing,
                };
                Ok(())
            }
            _ => self.illegal("close stdin"),
        }
    }

    /// Running → Exiting: the process exited with `exit` and was reaped at `since`.
    pub fn reaped(&mut self, exit: ExitRecord, since: MonoTime) -> Result<(), IllegalTransition> {
        match *self {
            SupervisorState::Running { pid, .. } => {
                *self = SupervisorState::Exiting { pid, exit, since };
                Ok(())
            }
            _ => self.illegal("reaped"),
        }
    }

    /// Exiting → Exited: `exitcode` is written and `exit` closed.
    pub fn recorded(&mut self) -> Result<(), IllegalTransition> {
        match *self {
            SupervisorState::Exiting { pid, exit, .. } => {
                *self = SupervisorState::Exited { pid, exit };
                Ok(())
            }
            _ => self.illegal("recorded"),
        }
    }

    /// Exited → Stopping: a termination signal after the exit is recorded (the first one
    /// counts; before the exit, signals are ignored: both are illegal; one while
    /// `Exiting` has the supervisor record the exit first).
    pub fn stop(&mut self, since: MonoTime) -> Result<(), IllegalTransition> {
        match *self {
            SupervisorState::Exited { pid, exit } => {
                *self = SupervisorState::Stopping { pid, exit, since };
                Ok(())
            }
            _ => self.illegal("stop"),
        }
    }

    /// Exited | Stopping → Done: the output is delivered, or given up.
    pub fn finish(&mut self) -> Result<(), IllegalTransition> {
        match *self {
            SupervisorState::Exited { pid, exit } | SupervisorState::Stopping { pid, exit, .. } => {
                *self = SupervisorState::Done { pid, exit };
                Ok(())
            }
            _ => self.illegal("finish"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn rec(code: i32) -> ExitRecord {
        ExitRecord {
            code,
            exited_at: SystemTime::UNIX_EPOCH + Duration::new(1_795_404_285, 123_456_789),
        }
    }

    const T: MonoTime = MonoTime(42);

    /// Every state the supervisor can be in.
    fn all_states() -> Vec<SupervisorState> {
        use SupervisorState::*;
        vec![
            Running {
                pid: 7,
                stdin: Stdin::Held,
            },
            Running {
                pid: 7,
                stdin: Stdin::Closing,
            },
            Exiting {
                pid: 7,
                exit: rec(3),
                since: T,
            },
            Exited {
                pid: 7,
                exit: rec(3),
            },
            Stopping {
                pid: 7,
                exit: rec(3),
                since: T,
            },
            Done {
                pid: 7,
                exit: rec(3),
            },
        ]
    }

    type Step = fn(&mut SupervisorState) -> Result<(), IllegalTransition>;
    /// A transition: its name, the step, and (from, to) for every state it is legal from.
    type Row = (&'static str, Step, Vec<(SupervisorState, SupervisorState)>);

    /// Each transition, and the states it is legal from with the state it leads to.
    #[test]
    fn the_transition_table() {
        use SupervisorState::*;
        let held = Running {
            pid: 7,
            stdin: Stdin::Held,
        };
        let closing = Running {
            pid: 7,
            stdin: Stdin::Closing,
        };
        let exiting = Exiting {
            pid: 7,
            exit: rec(3),
            since: T,
        };
        let exited = Exited {
            pid: 7,
            exit: rec(3),
        };
        let stopping = Stopping {
            pid: 7,
            exit: rec(3),
            since: T,
        };
        let done = Done {
            pid: 7,
            exit: rec(3),
        };
        let steps: Vec<Row> = vec![
            ("close_stdin", |s| s.close_stdin(), vec![(held, closing)]),
            (
                "reaped",
                |s| s.reaped(rec(3), T),
                vec![(held, exiting), (closing, exiting)],
            ),
            ("recorded", |s| s.recorded(), vec![(exiting, exited)]),
            ("stop", |s| s.stop(T), vec![(exited, stopping)]),
            (
                "finish",
                |s| s.finish(),
                vec![(exited, done), (stopping, done)],
            ),
        ];
        for (name, step, legal) in steps {
            for from in all_states() {
                let mut s = from;
                let got = step(&mut s);
                match legal.iter().find(|(f, _)| *f == from) {
                    Some((_, to)) => {
                        assert_eq!(got, Ok(()), "{name} from {from:?}");
                        assert_eq!(s, *to, "{name} from {from:?}");
                    }
                    None => {
                        let e = got.expect_err(&format!("{name} from {from:?} is illegal"));
                        assert_eq!(e.from, from.name());
                        assert_eq!(s, from, "{name}: an illegal step changes nothing");
                    }
                }
            }
        }
    }

    #[test]
    fn every_state_survives_being_written_out_and_read_back() {
        for s in all_states() {
            let text = serde_json::to_string(&s).unwrap();
            let back: SupervisorState = serde_json::from_str(&text).unwrap();
            assert_eq!(back, s, "{text}");
            assert_eq!(
                back.exit().map(|e| e.exited_at),
                s.exit().map(|e| e.exited_at)
            );
        }
    }

    #[test]
    fn queries() {
        use SupervisorState::*;
        for s in all_states() {
            assert_eq!(s.pid(), 7);
            assert_eq!(s.is_running(), matches!(s, Running { .. }), "{s:?}");
            let recorded = !matches!(s, Running { .. } | Exiting { .. });
            assert_eq!(s.exit().is_some(), recorded, "{s:?}");
            assert_eq!(s.is_recorded(), recorded, "{s:?}");
            assert_eq!(s.exiting_since().is_some(), matches!(s, Exiting { .. }));
            assert_eq!(s.is_done(), matches!(s, Done { .. }), "{s:?}");
            assert_eq!(s.stopping_since().is_some(), matches!(s, Stopping { .. }));
        }
        assert!(all_states()[1].stdin_closing());
        assert!(!all_states()[0].stdin_closing());
        assert!(!all_states()[2].stdin_closing());
    }

    #[test]
    fn a_monotonic_point_becomes_the_instant_it_was() {
        let (now, mono) = (Instant::now(), MonoTime::now());
        let earlier = MonoTime(mono.0.saturating_sub(1_500_000_000));
        let at = earlier.to_instant(now, mono);
        assert_eq!(now - at, Duration::from_millis(1500));
        // A point "in the future" (clock confusion) is now, not a panic.
        assert_eq!(MonoTime(mono.0 + 5).to_instant(now, mono), now);
    }
}

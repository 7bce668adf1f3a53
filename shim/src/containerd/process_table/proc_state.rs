//! Where a process of the containerd face's table is in its life, as one state with
//! explicit transitions (the methods of [`ProcState`] are the only way to change it).
//!
//! ```text
//!  Created ──begin_start──► Starting ──launched──► Started ──start_reported──► Running
//!     ▲                        │                     (exits held until the start
//!     └──────start_failed──────┘                      is reported: TaskStart first)
//!
//!  Created | Running ──exited──► ExitDeferred ──release_exit──► ExitQueued ──delivered──► ExitReported
//!                       └───────────────(not deferred)──────────────┘
//! ```
//!
//! - An exit reaped while a start is in flight (`Starting`, `Started`) is held in the
//!   state, not recorded: TaskStart / TaskExecStarted come before the same process's
//!   TaskExit. `start_reported` and `start_failed` hand it back to be recorded.
//! - `ExitDeferred`: an init that exited while execs still run; its exit is reported
//!   after theirs (the table decides, `Tasks::finish_exit`).
//! - `ExitQueued`: the exit is recorded and handed to the loop, which reports it once the
//!   output drained and the call gate lets it (a Wait parks meanwhile).
//! - `ExitReported`: TaskExit sent, parked Waits answered (or answered once the spools
//!   drained, see `Process::spooling`).

use fifo::ExitRecord;

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ProcState {
    /// Defined (exec) or created by runc (init), not started.
    Created,
    /// A Start is in flight (runc not done yet); holds an exit reaped meanwhile.
    Starting {
        held_exit: Option<ExitRecord>,
    },
    /// Launched, the start not reported yet; holds an exit reaped meanwhile.
    Started {
        held_exit: Option<ExitRecord>,
    },
    Running,
    /// An init's exit, reported once its execs' are (see the module doc).
    ExitDeferred(ExitRecord),
    /// The exit is recorded and on its way to be reported.
    ExitQueued(ExitRecord),
    /// The exit has been reported.
    ExitReported(ExitRecord),
}

pub use crate::process_core::transition::IllegalTransition;

impl ProcState {
    /// The state's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            ProcState::Created => "created",
            ProcState::Starting { .. } => "starting",
            ProcState::Started { .. } => "started",
            ProcState::Running => "running",
            ProcState::ExitDeferred(_) => "exited (deferred)",
            ProcState::ExitQueued(_) => "exited",
            ProcState::ExitReported(_) => "exited (reported)",
        }
    }

    /// The recorded exit, once the process has exited (a held exit is not recorded yet).
    pub fn exit(&self) -> Option<ExitRecord> {
        match *self {
            ProcState::ExitDeferred(r) | ProcState::ExitQueued(r) | ProcState::ExitReported(r) => {
                Some(r)
            }
            _ => None,
        }
    }

    /// A start is in flight (`Starting` or `Started`).
    pub fn in_start(&self) -> bool {
        matches!(self, ProcState::Starting { .. } | ProcState::Started { .. })
    }

    /// Started and not exited (`Started` or `Running`).
    pub fn is_running(&self) -> bool {
        matches!(self, ProcState::Started { .. } | ProcState::Running)
    }

    /// The exit has been handed to the loop (queued or reported): not deferred.
    pub fn exit_released(&self) -> bool {
        matches!(self, ProcState::ExitQueued(_) | ProcState::ExitReported(_))
    }

    /// The exit has been reported.
    pub fn exit_reported(&self) -> bool {
        matches!(self, ProcState::ExitReported(_))
    }

    fn illegal<T>(&self, event: &'static str) -> Result<T, IllegalTransition> {
        Err(IllegalTransition {
            from: self.name(),
            event,
        })
    }

    /// Created → Starting: a Start call takes the process.
    pub fn begin_start(&mut self) -> Result<(), IllegalTransition> {
        match self {
            ProcState::Created => {
                *self = ProcState::Starting { held_exit: None };
                Ok(())
            }
            _ => self.illegal("begin a start"),
        }
    }

    /// Starting → Started: runc started it (the exit held so far stays held).
    pub fn launched(&mut self) -> Result<(), IllegalTransition> {
        match *self {
            ProcState::Starting { held_exit } => {
                *self = ProcState::Started { held_exit };
                Ok(())
            }
            _ => self.illegal("be launched"),
        }
    }

    /// Starting → Created: the start failed. Returns the exit held meanwhile (an init
    /// that died while `runc start` failed), to be recorded now.
    pub fn start_failed(&mut self) -> Result<Option<ExitRecord>, IllegalTransition> {
        match *self {
            ProcState::Starting { held_exit } => {
                *self = ProcState::Created;
                Ok(held_exit)
            }
            _ => self.illegal("fail to start"),
        }
    }

    /// Started → Running: the start has been reported. Returns the exit held meanwhile,
    /// to be recorded now.
    pub fn start_reported(&mut self) -> Result<Option<ExitRecord>, IllegalTransition> {
        match *self {
            ProcState::Started { held_exit } => {
                *self = ProcState::Running;
                Ok(held_exit)
            }
            _ => self.illegal("report its start"),
        }
    }

    /// Holds an exit reaped while a start is in flight (the first one: a pid exits once).
    pub fn hold_exit(&mut self, record: ExitRecord) -> Result<(), IllegalTransition> {
        match self {
            ProcState::Starting { held_exit } | ProcState::Started { held_exit }
                if held_exit.is_none() =>
            {
                *held_exit = Some(record);
                Ok(())
            }
            _ => self.illegal("hold an exit"),
        }
    }

    /// Created | Running → ExitDeferred (`defer`) or ExitQueued: records the exit.
    pub fn exited(&mut self, record: ExitRecord, defer: bool) -> Result<(), IllegalTransition> {
        match self {
            ProcState::Created | ProcState::Running => {
                *self = if defer {
                    ProcState::ExitDeferred(record)
                } else {
                    ProcState::ExitQueued(record)
                };
                Ok(())
            }
            _ => self.illegal("exit"),
        }
    }

    /// ExitDeferred → ExitQueued: the execs it waited for are gone. Returns the exit.
    pub fn release_exit(&mut self) -> Result<ExitRecord, IllegalTransition> {
        match *self {
            ProcState::ExitDeferred(r) => {
                *self = ProcState::ExitQueued(r);
                Ok(r)
            }
            _ => self.illegal("release a deferred exit"),
        }
    }

    /// ExitQueued → ExitReported: TaskExit has been sent.
    pub fn delivered(&mut self) -> Result<(), IllegalTransition> {
        match *self {
            ProcState::ExitQueued(r) => {
                *self = ProcState::ExitReported(r);
                Ok(())
            }
            _ => self.illegal("have its exit reported"),
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
            exited_at: SystemTime::UNIX_EPOCH,
        }
    }

    /// Every state the table can be in (with and without a held exit).
    fn all_states() -> Vec<ProcState> {
        use ProcState::*;
        vec![
            Created,
            Starting { held_exit: None },
            Starting {
                held_exit: Some(rec(1)),
            },
            Started { held_exit: None },
            Started {
                held_exit: Some(rec(1)),
            },
            Running,
            ExitDeferred(rec(2)),
            ExitQueued(rec(2)),
            ExitReported(rec(2)),
        ]
    }

    type Step = fn(&mut ProcState) -> Result<(), IllegalTransition>;
    /// A transition: its name, the step, and (from, to) for every state it is legal from.
    type Row = (&'static str, Step, Vec<(ProcState, ProcState)>);

    /// Each transition, and the states it is legal from with the state it leads to.
    #[test]
    fn the_transition_table() {
        use ProcState::*;
        let held = Some(rec(1));
        let steps: Vec<Row> = vec![
            (
                "begin_start",
                |s| s.begin_start(),
                vec![(Created, Starting { held_exit: None })],
            ),
            (
                "launched",
                |s| s.launched(),
                vec![
                    (Starting { held_exit: None }, Started { held_exit: None }),
                    (Starting { held_exit: held }, Started { held_exit: held }),
                ],
            ),
            (
                "start_failed",
                |s| s.start_failed().map(drop),
                vec![
                    (Starting { held_exit: None }, Created),
                    (Starting { held_exit: held }, Created),
                ],
            ),
            (
                "start_reported",
                |s| s.start_reported().map(drop),
                vec![
                    (Started { held_exit: None }, Running),
                    (Started { held_exit: held }, Running),
                ],
            ),
            (
                "hold_exit",
                |s| s.hold_exit(rec(1)),
                vec![
                    (Starting { held_exit: None }, Starting { held_exit: held }),
                    (Started { held_exit: None }, Started { held_exit: held }),
                ],
            ),
            (
                "exited",
                |s| s.exited(rec(2), false),
                vec![(Created, ExitQueued(rec(2))), (Running, ExitQueued(rec(2)))],
            ),
            (
                "exited (deferred)",
                |s| s.exited(rec(2), true),
                vec![
                    (Created, ExitDeferred(rec(2))),
                    (Running, ExitDeferred(rec(2))),
                ],
            ),
            (
                "release_exit",
                |s| s.release_exit().map(drop),
                vec![(ExitDeferred(rec(2)), ExitQueued(rec(2)))],
            ),
            (
                "delivered",
                |s| s.delivered(),
                vec![(ExitQueued(rec(2)), ExitReported(rec(2)))],
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
    fn a_held_exit_comes_back_when_the_start_ends() {
        let mut s = ProcState::Created;
        s.begin_start().unwrap();
        s.hold_exit(rec(3)).unwrap();
        assert!(s.hold_exit(rec(4)).is_err(), "a pid exits once");
        assert_eq!(s.exit(), None, "held, not recorded");
        s.launched().unwrap();
        assert_eq!(s.start_reported(), Ok(Some(rec(3))));

        let mut s = ProcState::Starting { held_exit: None };
        s.hold_exit(rec(5)).unwrap();
        assert_eq!(s.start_failed(), Ok(Some(rec(5))));
        assert_eq!(s, ProcState::Created);
    }

    #[test]
    fn queries() {
        use ProcState::*;
        for s in all_states() {
            let exited = matches!(s, ExitDeferred(_) | ExitQueued(_) | ExitReported(_));
            assert_eq!(s.exit().is_some(), exited, "{s:?}");
            assert_eq!(
                s.in_start(),
                matches!(s, Starting { .. } | Started { .. }),
                "{s:?}"
            );
            assert_eq!(s.is_running(), matches!(s, Started { .. } | Running));
            assert_eq!(
                s.exit_released(),
                matches!(s, ExitQueued(_) | ExitReported(_))
            );
            assert_eq!(s.exit_reported(), matches!(s, ExitReported(_)));
        }
    }
}

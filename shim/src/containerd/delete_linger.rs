//! Delete waits for a process's output still spooled while a reader takes it (issue 13).
//!
//! CRI deletes a task as soon as it learns of the exit, while its reader may still be
//! taking output from the spool; dropping the spool then would cut the log short. So
//! Delete (on its worker) asks the loop, which owns the pumps, and waits for the answer:
//! the loop answers once the process's spools are empty, once no reader has taken any for
//! [`READER_IDLE`] (a Delete with nobody reading does not wait: `ctr rm` and CRI teardown
//! stay fast), or after [`DELETE_LINGER`] (the Go shim's bound on its IO wait). What is
//! still spooled then is dropped with the pumps and logged with its byte count.
//!
//! [`READER_IDLE`]: crate::supervisor::process_stdio::READER_IDLE

use crate::containerd::task::{LoopMsg, Shim};
use crate::supervisor::process_stdio::{Backlog, DeleteLinger, Linger, DELETE_LINGER};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Duration, Instant};

/// How much longer than the loop's bound the worker waits for its answer (the loop
/// answers by then unless it is stuck).
const ANSWER_SLACK: Duration = Duration::from_secs(1);

/// Called by Delete (on a worker), after the exit was reported: returns once the loop
/// says the process's spools are empty or not worth waiting for. `exec` empty: the
/// container (its init and the execs it still has).
pub fn wait(shim: &Shim, container: &str, exec: &str) {
    let (done, answer) = sync_channel(1);
    shim.post(LoopMsg::AwaitSpools {
        container: container.to_string(),
        exec: exec.to_string(),
        done,
    });
    let _ = answer.recv_timeout(DELETE_LINGER + ANSWER_SLACK);
}

/// One Delete waiting.
#[derive(Debug)]
struct Waiting {
    container: String,
    exec: String,
    linger: DeleteLinger,
    done: SyncSender<()>,
}

impl Waiting {
    /// Whether a process's stdio is one this Delete waits for.
    fn covers(&self, container: &str, exec: &str) -> bool {
        self.container == container && (self.exec.is_empty() || self.exec == exec)
    }
}

/// The Deletes waiting for spools, kept by the loop.
#[derive(Debug, Default)]
pub struct DeleteLingers {
    waiting: Vec<Waiting>,
}

impl DeleteLingers {
    /// A Delete of `container`/`exec` (`exec` empty: the whole container) waits from now.
    pub fn add(&mut self, container: String, exec: String, done: SyncSender<()>) {
        self.waiting.push(Waiting {
            container,
            exec,
            linger: DeleteLinger::new(Instant::now()),
            done,
        });
    }

    /// Answers the Deletes that may go on, given the backlog of each process's stdio
    /// (`processes`: container, exec, backlog, for the processes that have exited);
    /// returns when to look again for the others.
    pub fn check<'a>(
        &mut self,
        processes: impl Iterator<Item = (&'a str, &'a str, Backlog)> + Clone,
        now: Instant,
    ) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        self.waiting.retain(|w| {
            let backlog = processes
                .clone()
                .filter(|(c, e, _)| w.covers(c, e))
                .map(|(_, _, b)| b)
                .fold(Backlog::default(), Backlog::and);
            let waited = now.saturating_duration_since(w.linger.since());
            match w.linger.check(backlog, now) {
                Linger::Wait(at) => {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    return true;
                }
                Linger::Drained if waited >= Duration::from_millis(1) => log::info!(
                    "delete of {}/{}: the reader took the spooled output in {waited:?}",
                    w.container,
                    w.exec
                ),
                Linger::Drained => {}
                Linger::Drop { spooled, why } => log::warn!(
                    "delete of {}/{}: {spooled} spooled bytes dropped unread ({why}; waited {waited:?})",
                    w.container,
                    w.exec
                ),
            }
            let _ = w.done.try_send(());
            false
        });
        next
    }

    /// Whether any Delete waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::TryRecvError;

    #[test]
    fn a_delete_is_answered_when_its_processes_have_nothing_spooled() {
        let mut lingers = DeleteLingers::default();
        let (tx, rx) = sync_channel(1);
        lingers.add("c".into(), String::new(), tx);
        let now = Instant::now();
        let moving = Backlog {
            spooled: 10,
            last_taken: Some(now),
        };
        // The container's exec is still being read: wait.
        let procs = [("c", "", Backlog::default()), ("c", "e", moving)];
        let next = lingers.check(procs.iter().copied(), now);
        assert!(next.is_some_and(|at| at > now));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        // Another container's spool does not hold it.
        let procs = [("c", "", Backlog::default()), ("d", "", moving)];
        assert_eq!(lingers.check(procs.iter().copied(), now), None);
        assert_eq!(rx.try_recv(), Ok(()));
        assert!(lingers.is_empty());
    }

    #[test]
    fn an_exec_delete_waits_for_that_exec_only() {
        let mut lingers = DeleteLingers::default();
        let (tx, rx) = sync_channel(1);
        lingers.add("c".into(), "e".into(), tx);
        let now = Instant::now();
        let moving = Backlog {
            spooled: 10,
            last_taken: Some(now),
        };
        let procs = [("c", "", moving), ("c", "e", Backlog::default())];
        assert_eq!(lingers.check(procs.iter().copied(), now), None);
        assert_eq!(rx.try_recv(), Ok(()));
    }

    #[test]
    fn nobody_reading_answers_at_once() {
        let mut lingers = DeleteLingers::default();
        let (tx, rx) = sync_channel(1);
        lingers.add("c".into(), String::new(), tx);
        let stalled = Backlog {
            spooled: 10,
            last_taken: None,
        };
        let procs = [("c", "", stalled)];
        assert_eq!(lingers.check(procs.iter().copied(), Instant::now()), None);
        assert_eq!(rx.try_recv(), Ok(()));
    }
}

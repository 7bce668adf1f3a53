//! Per-process ordering of the calls that decide a process's fate (Kill, Delete, Pause,
//! Resume, Update, Checkpoint) against each other and against the report of its exit.
//!
//! containerd, and CRI above it, reacts to a TaskExit at once: kill-all, Wait, Delete, and
//! Shutdown of the shim. If the exit were published while the Kill that caused it still
//! waits for `runc kill` to return, containerd could delete the task and close the
//! connection before that Kill is answered, and its caller would get `ttrpc: closed` (a
//! CRI StopPodSandbox then leaves the pod behind). containerd's Go shim orders these calls
//! with a mutex per process, taken by Kill, Delete and the exit handler alike.
//!
//! tether's gate is part of the process's record, on the event loop, so it needs no lock:
//! - a call enters the gate of its process when no other call is inside, else it queues
//!   (in arrival order); after [`ENTER_WAIT`] a queued call goes ahead beside the one
//!   inside (a runc that hangs must not wedge every later call for ever);
//! - a call leaves once the loop has written its reply, and the next queued call enters;
//! - while a call that can cause the exit ([`ExitReport::HeldBack`]: Kill, Checkpoint,
//!   …) is inside, the loop reports no exit of the process, so the reply of the call that
//!   caused an exit always reaches containerd before the exit. Delete enters without
//!   holding exits ([`ExitReport::Free`]): it waits for the exit report itself, so
//!   TaskExit always comes before TaskDelete.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a call waits for the previous call on the same process before it goes ahead
/// anyway.
pub const ENTER_WAIT: Duration = Duration::from_secs(30);

/// Whether a call inside the gate keeps the process's exit from being reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReport {
    /// The call may cause the exit (Kill): its reply goes first.
    HeldBack,
    /// The call cannot cause it and may wait for it (Delete).
    Free,
}

/// The gate of one process: the calls inside and the calls queued, `C` being what the
/// loop needs to run a queued call when its turn comes.
#[derive(Debug)]
pub struct Gate<C = crate::containerd::call::GatedCall> {
    /// Calls inside (more than one only after an [`ENTER_WAIT`] timeout).
    inside: u32,
    /// Those of them that hold back the process's exit report.
    holding_exit: u32,
    /// Calls waiting for their turn, oldest first, with when they came.
    queue: VecDeque<(C, Instant)>,
}

impl<C> Default for Gate<C> {
    fn default() -> Self {
        Gate {
            inside: 0,
            holding_exit: 0,
            queue: VecDeque::new(),
        }
    }
}

impl<C> Gate<C> {
    /// Lets a call in if the gate is free and nobody queues; false: queue it
    /// ([`Gate::enqueue`]).
    pub fn try_enter(&mut self, exit: ExitReport) -> bool {
        if self.inside > 0 || !self.queue.is_empty() {
            return false;
        }
        self.enter(exit);
        true
    }

    fn enter(&mut self, exit: ExitReport) {
        self.inside += 1;
        if exit == ExitReport::HeldBack {
            self.holding_exit += 1;
        }
    }

    /// Queues a call that could not enter.
    pub fn enqueue(&mut self, call: C, now: Instant) {
        self.queue.push_back((call, now));
    }

    /// A call inside has been answered.
    pub fn leave(&mut self, exit: ExitReport) {
        self.inside = self.inside.saturating_sub(1);
        if exit == ExitReport::HeldBack {
            self.holding_exit = self.holding_exit.saturating_sub(1);
        }
    }

    /// The queued call whose turn has come, if any: the gate is free, or the oldest has
    /// waited [`ENTER_WAIT`] (it goes ahead beside the call inside; the second value says
    /// so, for the log). The caller enters it with the call's [`ExitReport`]
    /// ([`Gate::admit`]).
    pub fn next_turn(&mut self, now: Instant) -> Option<(C, bool)> {
        let (_, since) = self.queue.front()?;
        let overdue = now.saturating_duration_since(*since) >= ENTER_WAIT;
        if self.inside > 0 && !overdue {
            return None;
        }
        let beside = self.inside > 0;
        self.queue.pop_front().map(|(c, _)| (c, beside))
    }

    /// Enters a call [`Gate::next_turn`] gave.
    pub fn admit(&mut self, exit: ExitReport) {
        self.enter(exit);
    }

    /// Whether a call that holds back the exit report is inside.
    pub fn holds_exit(&self) -> bool {
        self.holding_exit > 0
    }

    /// No call inside and none queued.
    pub fn is_idle(&self) -> bool {
        self.inside == 0 && self.queue.is_empty()
    }

    /// When the oldest queued call stops waiting for the one inside.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.inside == 0 {
            return None;
        }
        self.queue.front().map(|(_, since)| *since + ENTER_WAIT)
    }

    /// Every queued call (the process is gone: they are answered as calls on a process
    /// that does not exist).
    pub fn drain(&mut self) -> Vec<C> {
        self.queue.drain(..).map(|(c, _)| c).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ExitReport::{Free, HeldBack};

    #[test]
    fn a_call_inside_holds_the_exit_until_it_leaves() {
        let mut g: Gate<u32> = Gate::default();
        assert!(g.try_enter(HeldBack));
        assert!(g.holds_exit());
        g.leave(HeldBack);
        assert!(!g.holds_exit());
        assert!(g.is_idle());
    }

    #[test]
    fn a_free_call_is_ordered_but_does_not_hold_the_exit() {
        let mut g: Gate<u32> = Gate::default();
        let now = Instant::now();
        assert!(g.try_enter(Free));
        assert!(!g.holds_exit());
        assert!(!g.try_enter(HeldBack), "the kill queues behind the delete");
        g.enqueue(1, now);
        assert_eq!(g.next_turn(now), None);
        g.leave(Free);
        assert_eq!(g.next_turn(now), Some((1, false)));
        g.admit(HeldBack);
        assert!(g.holds_exit());
        g.leave(HeldBack);
        assert!(g.is_idle());
    }

    #[test]
    fn calls_take_their_turns_in_arrival_order() {
        let mut g: Gate<u32> = Gate::default();
        let now = Instant::now();
        assert!(g.try_enter(HeldBack));
        g.enqueue(1, now);
        assert!(
            !g.try_enter(HeldBack),
            "a newcomer never overtakes the queue"
        );
        g.enqueue(2, now);
        g.leave(HeldBack);
        assert!(
            !g.try_enter(Free),
            "the queue goes first even with the gate free"
        );
        assert_eq!(g.next_turn(now).map(|t| t.0), Some(1));
        g.admit(Free);
        assert_eq!(g.next_turn(now), None);
        g.leave(Free);
        assert_eq!(g.next_turn(now).map(|t| t.0), Some(2));
    }

    #[test]
    fn a_stuck_call_delays_the_next_only_for_the_bound() {
        let mut g: Gate<u32> = Gate::default();
        let now = Instant::now();
        assert!(g.try_enter(HeldBack));
        g.enqueue(7, now);
        assert_eq!(g.next_deadline(), Some(now + ENTER_WAIT));
        assert_eq!(g.next_turn(now + ENTER_WAIT / 2), None);
        assert_eq!(g.next_turn(now + ENTER_WAIT), Some((7, true)), "beside");
        g.admit(HeldBack);
        g.leave(HeldBack);
        assert!(g.holds_exit(), "the second call still holds it");
        g.leave(HeldBack);
        assert!(g.is_idle());
    }

    #[test]
    fn a_gone_process_hands_back_its_queue() {
        let mut g: Gate<u32> = Gate::default();
        let now = Instant::now();
        assert!(g.try_enter(Free));
        g.enqueue(1, now);
        g.enqueue(2, now);
        assert_eq!(g.drain(), vec![1, 2]);
    }
}

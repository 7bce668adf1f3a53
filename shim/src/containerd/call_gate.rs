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
//! tether reports exits from its event loop, which must never block, so the gate is a
//! count per process instead of a mutex held across the report:
//! - a call [`enter`](CallGate::enter)s the gate of its process, waiting (bounded) while
//!   another call holds it;
//! - the [`GateHold`] travels with the call's reply and is dropped by the loop once the
//!   reply has been written to the caller's socket, which opens the gate again;
//! - the loop reports no exit of a process while a call that can cause that exit (Kill,
//!   Checkpoint, …) holds its gate ([`CallGate::holds_exit`]), so the reply of the call
//!   that caused an exit always reaches containerd before the exit. Delete takes the gate
//!   without holding exits: it waits for the exit to be reported before it removes the
//!   process, so TaskExit always comes before TaskDelete.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a call waits for the previous call on the same process before it goes ahead
/// anyway (a runc that hangs must not wedge every later call on the process forever).
pub const ENTER_WAIT: Duration = Duration::from_secs(30);

/// A process: (container id, exec id; "" for the init).
type Key = (String, String);

/// The calls in one process's gate.
#[derive(Debug, Default, Clone, Copy)]
struct Holders {
    /// Calls holding the gate (more than one only after an [`ENTER_WAIT`] timeout).
    calls: u32,
    /// Those of them that hold back the process's exit report.
    holding_exit: u32,
}

/// Whether a call's hold keeps the process's exit from being reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReport {
    /// The call may cause the exit (Kill): its reply goes first.
    HeldBack,
    /// The call cannot cause it and may wait for it (Delete).
    Free,
}

/// The gates of all processes of one shim. See the module docs.
#[derive(Debug, Default)]
pub struct CallGate {
    /// A process with no call is absent: the map is bounded by the calls in flight.
    held: Mutex<HashMap<Key, Holders>>,
    opened: Condvar,
}

/// A call's hold on a process's gate; dropping it opens the gate.
#[derive(Debug)]
#[must_use = "the gate opens when the hold is dropped"]
pub struct GateHold {
    gate: Arc<CallGate>,
    key: Key,
    exit: ExitReport,
}

impl CallGate {
    /// A gate with no call in it.
    pub fn new() -> Arc<Self> {
        Arc::new(CallGate::default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Holders>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the gate of process `exec_id` of `container_id`, waiting while another call
    /// holds it, at most `wait`. Never fails: after `wait` the call goes ahead beside the
    /// one that holds the gate, and says so in the log.
    pub fn enter(
        self: &Arc<Self>,
        container_id: &str,
        exec_id: &str,
        exit: ExitReport,
        wait: Duration,
    ) -> GateHold {
        let key = (container_id.to_string(), exec_id.to_string());
        let deadline = Instant::now() + wait;
        let mut held = self.lock();
        loop {
            let now = Instant::now();
            if !held.contains_key(&key) || now >= deadline {
                if held.contains_key(&key) {
                    log::warn!(
                        "a call on {container_id}/{exec_id} still runs after {wait:?}; \
                         the next one goes ahead beside it"
                    );
                }
                let h = held.entry(key.clone()).or_default();
                h.calls += 1;
                if exit == ExitReport::HeldBack {
                    h.holding_exit += 1;
                }
                return GateHold {
                    gate: self.clone(),
                    key,
                    exit,
                };
            }
            held = self
                .opened
                .wait_timeout(held, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Whether a call that holds back the exit report of that process is in its gate.
    pub fn holds_exit(&self, container_id: &str, exec_id: &str) -> bool {
        // A scan, not a keyed lookup, to build no key: the map holds only the calls in
        // flight, and the loop asks this for every queued exit.
        self.lock()
            .iter()
            .any(|((c, e), h)| c == container_id && e == exec_id && h.holding_exit > 0)
    }
}

impl Drop for GateHold {
    fn drop(&mut self) {
        let mut held = self.gate.lock();
        if let Some(h) = held.get_mut(&self.key) {
            h.calls = h.calls.saturating_sub(1);
            if self.exit == ExitReport::HeldBack {
                h.holding_exit = h.holding_exit.saturating_sub(1);
            }
            if h.calls == 0 {
                held.remove(&self.key);
            }
        }
        drop(held);
        self.gate.opened.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    use ExitReport::{Free, HeldBack};

    #[test]
    fn a_hold_blocks_the_same_process_only() {
        let gate = CallGate::new();
        let hold = gate.enter("c", "", HeldBack, ENTER_WAIT);
        assert!(gate.holds_exit("c", ""));
        assert!(!gate.holds_exit("c", "e"));
        assert!(!gate.holds_exit("d", ""));
        let other = gate.enter("c", "e", HeldBack, Duration::from_millis(1));
        assert!(gate.holds_exit("c", "e"));
        drop(other);
        drop(hold);
        assert!(!gate.holds_exit("c", ""));
        assert!(
            gate.lock().is_empty(),
            "nothing kept for processes with no call"
        );
    }

    #[test]
    fn a_free_call_is_ordered_but_does_not_hold_the_exit() {
        let gate = CallGate::new();
        let delete = gate.enter("c", "", Free, ENTER_WAIT);
        assert!(!gate.holds_exit("c", ""));
        let started = Instant::now();
        let kill = gate.enter("c", "", HeldBack, Duration::from_millis(50));
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "kill waited"
        );
        assert!(gate.holds_exit("c", ""));
        drop(kill);
        assert!(!gate.holds_exit("c", ""));
        drop(delete);
        assert!(gate.lock().is_empty());
    }

    #[test]
    fn the_second_call_waits_for_the_first_hold_to_drop() {
        let gate = CallGate::new();
        let first = gate.enter("c", "", HeldBack, ENTER_WAIT);
        let entered = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (gate, entered) = (gate.clone(), entered.clone());
            std::thread::spawn(move || {
                let _hold = gate.enter("c", "", Free, ENTER_WAIT);
                entered.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(!entered.load(Ordering::SeqCst), "entered while held");
        drop(first);
        waiter.join().unwrap();
        assert!(entered.load(Ordering::SeqCst));
        assert!(!gate.holds_exit("c", ""));
        assert!(gate.lock().is_empty());
    }

    #[test]
    fn a_stuck_hold_delays_the_next_call_only_for_the_bound() {
        let gate = CallGate::new();
        let stuck = gate.enter("c", "", HeldBack, ENTER_WAIT);
        let started = Instant::now();
        let second = gate.enter("c", "", HeldBack, Duration::from_millis(50));
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(stuck);
        assert!(gate.holds_exit("c", ""), "the second call still holds it");
        drop(second);
        assert!(!gate.holds_exit("c", ""));
    }
}

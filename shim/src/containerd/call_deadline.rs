//! The deadline of the Task call a worker is running, as containerd sent it (ttrpc's
//! `timeout_nano`), so that a runc that hangs is killed when the caller stops waiting, as
//! the Go shim's runc calls are (they run under the call's context): the call answers
//! `DEADLINE_EXCEEDED` and the worker is free again.
//!
//! The deadline travels with the call to its worker, which runs the handler inside
//! [`during`]; every `Runc` the Task service builds has the [`CallDeadlineMonitor`], whose
//! [`ProcessMonitor::deadline`] is the deadline of the call running on the current thread.
//! runc-wrapper does the rest (kills runc's process group, reaps it, deletes a half-created
//! container). Calls without a deadline (`timeout_nano` 0: ctr's, a checkpoint's) run runc
//! for as long as it takes.

use runc_wrapper::{ProcessMonitor, RuntimeChild, RuntimeCommand};
use std::cell::Cell;
use std::io;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

thread_local! {
    static CURRENT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The deadline of a call received at `received` with ttrpc's `timeout_nano`: none for 0,
/// already passed for a negative value (the client's deadline passed before it sent).
pub fn from_timeout_nano(received: Instant, timeout_nano: i64) -> Option<Instant> {
    match u64::try_from(timeout_nano) {
        Ok(0) => None,
        Ok(nanos) => Some(
            received
                .checked_add(Duration::from_nanos(nanos))
                .unwrap_or(received + Duration::from_secs(365 * 24 * 3600)),
        ),
        Err(_) => Some(received),
    }
}

/// Runs `f` (a call's handler) with `deadline` as the current thread's call deadline.
pub fn during<R>(deadline: Option<Instant>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(deadline)));
    f()
}

/// The deadline of the call running on this thread, if any.
pub fn current() -> Option<Instant> {
    CURRENT.with(Cell::get)
}

/// `inner` (the reaper's monitor), answering [`ProcessMonitor::deadline`] with the current
/// call's deadline.
pub fn monitor(inner: Arc<dyn ProcessMonitor>) -> Arc<dyn ProcessMonitor> {
    Arc::new(CallDeadlineMonitor { inner })
}

/// See [`monitor`].
#[derive(Debug)]
pub struct CallDeadlineMonitor {
    inner: Arc<dyn ProcessMonitor>,
}

impl ProcessMonitor for CallDeadlineMonitor {
    fn start(&self, cmd: &RuntimeCommand) -> io::Result<RuntimeChild> {
        self.inner.start(cmd)
    }

    fn wait(&self, child: &mut RuntimeChild) -> io::Result<ExitStatus> {
        self.inner.wait(child)
    }

    fn wait_until(
        &self,
        child: &mut RuntimeChild,
        deadline: Instant,
    ) -> io::Result<Option<ExitStatus>> {
        self.inner.wait_until(child, deadline)
    }

    fn deadline(&self) -> Option<Instant> {
        current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_nano_zero_is_no_deadline_and_negative_is_passed() {
        let now = Instant::now();
        assert_eq!(from_timeout_nano(now, 0), None);
        assert_eq!(
            from_timeout_nano(now, 1_000_000_000),
            Some(now + Duration::from_secs(1))
        );
        assert_eq!(from_timeout_nano(now, -5), Some(now));
        assert!(from_timeout_nano(now, i64::MAX).is_some());
    }

    #[test]
    fn the_deadline_holds_during_the_call_only() {
        let at = Instant::now() + Duration::from_secs(1);
        let m = monitor(Arc::new(runc_wrapper::DefaultMonitor));
        assert_eq!(m.deadline(), None);
        during(Some(at), || {
            assert_eq!(m.deadline(), Some(at));
            during(None, || assert_eq!(m.deadline(), None));
            assert_eq!(m.deadline(), Some(at));
            // Another thread (another worker) has its own.
            std::thread::scope(|s| {
                s.spawn(|| assert_eq!(m.deadline(), None));
            });
        });
        assert_eq!(m.deadline(), None);
    }
}

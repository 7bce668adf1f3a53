//! The part of an event loop every loop in tether shares (the containerd shim's, the
//! standalone supervisor's, `attach`'s): one epoll instance, the signals the loop handles
//! read from a signalfd inside it (no async signal handlers anywhere), and waits bounded
//! by a deadline instead of a hand-computed timeout.
//!
//! A face registers its own fds with [`EventBase::poller`] and drives the loop: it
//! computes its next deadline, calls [`EventBase::wait`], and dispatches the readiness in
//! the order epoll reported it; on [`Token::Signals`] it takes [`EventBase::signals`]
//! (SIGCHLD: children exited, reap them; the rest is the face's policy).

use crate::process_core::epoll::{Poller, Ready, Token};
use crate::process_core::signals;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

/// An epoll instance with the loop's signalfd registered as [`Token::Signals`].
#[derive(Debug)]
pub struct EventBase {
    poller: Poller,
    signals: SignalFd,
}

impl EventBase {
    /// Blocks `signals` in the calling thread and reads them from a signalfd registered
    /// with a new poller. Threads spawned later inherit the blocked mask, so a
    /// multi-threaded face calls this before spawning any (children do not: std's
    /// process spawning resets it).
    pub fn new(signals: &SigSet) -> io::Result<Self> {
        let signals = signals::block_and_open_set(signals)?;
        let poller = Poller::new()?;
        poller.add_readable(signals.as_fd(), Token::Signals)?;
        Ok(EventBase { poller, signals })
    }

    /// The poller, to register the face's own fds with.
    pub fn poller(&self) -> &Poller {
        &self.poller
    }

    /// Waits until a registered fd is ready or `deadline` passes (without one: until
    /// something is ready), and puts the readiness into `ready`, in epoll's order.
    pub fn wait(&self, deadline: Option<Instant>, ready: &mut Vec<Ready>) -> io::Result<()> {
        // No clock read without a deadline: the common wait of a busy loop.
        let timeout = deadline.map(|d| timeout_until(d, Instant::now()));
        self.poller.wait(timeout, ready)
    }

    /// The signals that have arrived (duplicates folded); call when [`Token::Signals`] is
    /// ready.
    pub fn signals(&mut self) -> Vec<Signal> {
        signals::drain(&mut self.signals)
    }
}

/// The epoll timeout, in milliseconds, that ends at `deadline`: at least 1 (a deadline
/// that has just passed still yields the CPU once rather than spinning), at most what
/// epoll takes (the loop then just wakes early and waits again).
pub fn timeout_until(deadline: Instant, now: Instant) -> u16 {
    let left = deadline.saturating_duration_since(now);
    u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timeouts_end_at_the_deadline() {
        let now = Instant::now();
        assert_eq!(timeout_until(now + Duration::from_millis(100), now), 100);
        assert_eq!(timeout_until(now, now), 1);
        assert_eq!(timeout_until(now, now + Duration::from_secs(1)), 1);
        assert_eq!(
            timeout_until(now + Duration::from_secs(3600), now),
            u16::MAX
        );
    }

    /// The signal is blocked in, and sent to, this test's thread only: other tests are
    /// not disturbed.
    #[test]
    fn a_signal_wakes_the_loop_and_is_handed_over() {
        let mut set = SigSet::empty();
        set.add(Signal::SIGUSR2);
        let mut base = EventBase::new(&set).unwrap();
        let mut ready = Vec::new();
        let start = Instant::now();
        base.wait(Some(start + Duration::from_millis(20)), &mut ready)
            .unwrap();
        assert!(ready.is_empty());
        assert!(start.elapsed() >= Duration::from_millis(19), "waited");
        // raise(3) signals the calling thread.
        nix::sys::signal::raise(Signal::SIGUSR2).unwrap();
        base.wait(None, &mut ready).unwrap();
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].token, Token::Signals);
        assert_eq!(base.signals(), [Signal::SIGUSR2]);
        base.wait(Some(Instant::now()), &mut ready).unwrap();
        assert!(ready.is_empty(), "drained");
        set.thread_unblock().unwrap();
    }
}

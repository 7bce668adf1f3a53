//! Holding a process's Wait answers until its output FIFOs are empty, while a reader is
//! taking what they hold.
//!
//! Why: containerd 1.6's client (`ctr run`, `ctr task attach`/`start`) calls `Delete` as
//! soon as its Wait returns, and that Delete first closes the FIFOs' read ends, while its
//! copy goroutine may not have taken what sits in their pipe buffers yet (up to 64 KiB
//! each, plus ctr's 32 KiB copy buffer): the tail of the output is lost. The exit, the
//! output's end and the spool are all settled by then (`ProcessRecord::exit_settled`);
//! this is the last step before a Wait is answered: the answers wait until
//! `FIONREAD` on the shim's read end of every output FIFO says 0.
//!
//! Only while a reader is taking the bytes: the hold ends when the count has not fallen
//! for [`HOLD_IDLE`] (nobody reads, or the reader stopped: `ctr run -d`, `ctr task
//! wait`), and after [`HOLD_LIMIT`] in any case; then the Waits are answered as before.
//! The TaskExit event is not held (it is published when the exit is reported, before
//! any of this). A process without a FIFO is never held. The state is the loop's, in the
//! process's record; the loop looks again after [`HOLD_FIRST_POLL`], doubling up to
//! [`HOLD_POLL`] while the count stays where it is (a pipe gives no event when a reader
//! makes room in it, unless it was full): a reader that keeps up (CRI's, ctr's) has
//! usually emptied the FIFO within a millisecond or two, and the Wait should not wait a
//! whole [`HOLD_POLL`] for that.

use std::time::{Duration, Instant};

/// How long the unread count may stay where it is before the hold ends: a reader copying
/// to a slow consumer (a terminal, a pipe read in bursts) takes a chunk at least this
/// often; longer is a reader that is not there or has stopped.
pub const HOLD_IDLE: Duration = Duration::from_millis(250);
/// The hold's bound, from its start, whatever the reader does.
pub const HOLD_LIMIT: Duration = Duration::from_secs(3);
/// How soon the loop looks at the FIFOs again after a look that found the count fallen
/// (or the first): the loop's finest timer (its epoll timeout is in milliseconds).
pub const HOLD_FIRST_POLL: Duration = Duration::from_millis(1);
/// The longest the loop waits between two looks at the FIFOs while it holds.
pub const HOLD_POLL: Duration = Duration::from_millis(5);

/// A hold in progress: since when, and when the reader last took bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitHold {
    since: Instant,
    /// The unread count at the last look.
    unread: usize,
    /// When the count last fell (or the hold began).
    fell_at: Instant,
    /// When the loop looks again.
    next_check: Instant,
    /// The time between the last look and the next: [`HOLD_FIRST_POLL`] after a fall,
    /// doubled after each look that found no fall, up to [`HOLD_POLL`].
    poll: Duration,
    /// The longest the count stayed where it was before it fell (for the log: what the
    /// readers' pauses are, against [`HOLD_IDLE`]).
    longest_pause: Duration,
}

/// What a look at the FIFOs decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldCheck {
    /// Hold on; look again by then.
    Hold(Instant),
    /// Answer the Waits now.
    Release(Released),
}

/// Why a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// The FIFOs are empty: the reader has everything.
    Drained,
    /// `unread` bytes sat there for [`HOLD_IDLE`] without a reader taking any.
    NoReader { unread: usize },
    /// [`HOLD_LIMIT`] is over with `unread` bytes still there.
    TimedOut { unread: usize },
}

impl std::fmt::Display for Released {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Released::Drained => write!(f, "the reader took everything"),
            Released::NoReader { unread } => {
                write!(f, "{unread} bytes untaken for {HOLD_IDLE:?}: no reader")
            }
            Released::TimedOut { unread } => {
                write!(f, "{unread} bytes still unread after {HOLD_LIMIT:?}")
            }
        }
    }
}

impl WaitHold {
    /// A hold that starts at `now` with `unread` bytes in the FIFOs.
    pub fn new(unread: usize, now: Instant) -> Self {
        WaitHold {
            since: now,
            unread,
            fell_at: now,
            next_check: now,
            poll: HOLD_FIRST_POLL,
            longest_pause: Duration::ZERO,
        }
    }

    /// When it began.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// The longest the reader has left the count where it was, so far.
    pub fn longest_pause(&self) -> Duration {
        self.longest_pause
    }

    /// When the loop must look again.
    pub fn next_check(&self) -> Instant {
        self.next_check
    }

    /// Whether the Waits go on waiting, with `unread` bytes in the FIFOs at `now`: until
    /// they are empty, while the count falls at least every [`HOLD_IDLE`], for at most
    /// [`HOLD_LIMIT`].
    pub fn check(&mut self, unread: usize, now: Instant) -> HoldCheck {
        if unread < self.unread || unread == 0 {
            let pause = now.saturating_duration_since(self.fell_at);
            self.longest_pause = self.longest_pause.max(pause);
            self.fell_at = now;
            self.poll = HOLD_FIRST_POLL;
        } else {
            self.poll = (self.poll * 2).min(HOLD_POLL);
        }
        if unread == 0 {
            return HoldCheck::Release(Released::Drained);
        }
        // A count that rose (a descendant still writes) is the new mark to fall from.
        self.unread = unread;
        let limit = self.since + HOLD_LIMIT;
        if now >= limit {
            return HoldCheck::Release(Released::TimedOut { unread });
        }
        let idle_at = self.fell_at + HOLD_IDLE;
        if now >= idle_at {
            return HoldCheck::Release(Released::NoReader { unread });
        }
        self.next_check = (now + self.poll).min(idle_at).min(limit);
        HoldCheck::Hold(self.next_check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn empty_fifos_release_at_once() {
        let t0 = Instant::now();
        let mut h = WaitHold::new(0, t0);
        assert_eq!(h.check(0, t0), HoldCheck::Release(Released::Drained));
    }

    #[test]
    fn a_reader_taking_bytes_keeps_the_hold_until_the_fifos_are_empty() {
        let t0 = Instant::now();
        let mut h = WaitHold::new(65536, t0);
        assert_eq!(
            h.check(65536, t0),
            HoldCheck::Hold(t0 + 2 * HOLD_FIRST_POLL)
        );
        // Falls every 200 ms, so it holds past HOLD_IDLE.
        let mut unread = 65536;
        let mut at = t0;
        for _ in 0..7 {
            at += ms(200);
            unread -= 8192;
            assert!(matches!(h.check(unread, at), HoldCheck::Hold(_)));
        }
        assert_eq!(
            h.check(0, at + ms(1)),
            HoldCheck::Release(Released::Drained)
        );
        assert_eq!(h.longest_pause(), ms(200));
    }

    #[test]
    fn looks_come_soon_after_a_fall_and_back_off_to_the_poll_while_nothing_moves() {
        let t0 = Instant::now();
        let mut h = WaitHold::new(4096, t0);
        let mut at = t0;
        let mut gaps = Vec::new();
        for _ in 0..5 {
            let HoldCheck::Hold(next) = h.check(4096, at) else {
                panic!("released early")
            };
            gaps.push(next - at);
            at = next;
        }
        assert_eq!(gaps, [ms(2), ms(4), HOLD_POLL, HOLD_POLL, HOLD_POLL]);
        // The reader took some: the next look is the first one's again.
        assert_eq!(h.check(1024, at), HoldCheck::Hold(at + HOLD_FIRST_POLL));
    }

    #[test]
    fn a_count_that_does_not_fall_releases_after_the_idle_time() {
        let t0 = Instant::now();
        let mut h = WaitHold::new(100, t0);
        assert!(matches!(h.check(100, t0 + ms(100)), HoldCheck::Hold(_)));
        // A rise is no progress.
        assert!(matches!(h.check(150, t0 + ms(200)), HoldCheck::Hold(_)));
        assert_eq!(
            h.check(150, t0 + HOLD_IDLE),
            HoldCheck::Release(Released::NoReader { unread: 150 })
        );
    }

    #[test]
    fn the_next_look_is_never_past_the_idle_time_or_the_limit() {
        let t0 = Instant::now();
        let mut h = WaitHold::new(100, t0);
        let at = t0 + HOLD_IDLE - ms(1);
        assert_eq!(h.check(100, at), HoldCheck::Hold(t0 + HOLD_IDLE));
        assert_eq!(h.next_check(), t0 + HOLD_IDLE);
    }

    #[test]
    fn the_hold_ends_at_its_limit_whatever_the_reader_does() {
        let t0 = Instant::now();
        let mut h = WaitHold::new(1 << 20, t0);
        let mut unread = 1 << 20;
        let mut at = t0;
        while at < t0 + HOLD_LIMIT {
            unread -= 1;
            assert!(matches!(h.check(unread, at), HoldCheck::Hold(_)));
            at += ms(100);
        }
        assert_eq!(
            h.check(unread - 1, at),
            HoldCheck::Release(Released::TimedOut { unread: unread - 1 })
        );
        assert_eq!(h.since(), t0);
    }
}

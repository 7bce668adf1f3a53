//! What a delete does about output still spooled after the process exited: waits while a
//! reader is taking it, bounded ([`DELETE_LINGER`]), and not at all when nobody reads
//! ([`READER_IDLE`]). One rule for both faces; plain arithmetic on a [`Backlog`] and the
//! clock, kept apart from the pumps that report the backlog ([`super::ProcessStdio::backlog`]).

use std::time::{Duration, Instant};

/// How long a delete waits for spooled output that a reader is taking: the Go shim's
/// bound on its IO wait at delete.
pub const DELETE_LINGER: Duration = Duration::from_secs(10);
/// A reader that has taken nothing for this long is not taking the spool: a delete does
/// not wait for it (a reader that is gone, or that stopped reading, keeps no delete).
pub const READER_IDLE: Duration = Duration::from_secs(1);

/// Output still spooled, and when a reader last took bytes from a stream that has some.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub spooled: u64,
    pub last_taken: Option<Instant>,
}

impl Backlog {
    /// Both backlogs together (the processes of one container).
    pub fn and(self, other: Backlog) -> Backlog {
        Backlog {
            spooled: self.spooled + other.spooled,
            last_taken: self.last_taken.max(other.last_taken),
        }
    }
}

/// What a delete does about output still spooled, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linger {
    /// Nothing is spooled: go on.
    Drained,
    /// A reader is taking the spool: look again by then (or on the next event).
    Wait(Instant),
    /// Go on without it: `spooled` bytes are dropped, for `why`.
    Drop { spooled: u64, why: DropWhy },
}

/// Why a delete stopped waiting for spooled output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropWhy {
    /// No reader has taken any for [`READER_IDLE`].
    NoReader,
    /// [`DELETE_LINGER`] is over.
    TimedOut,
}

impl std::fmt::Display for DropWhy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropWhy::NoReader => write!(f, "no reader took any for {READER_IDLE:?}"),
            DropWhy::TimedOut => write!(f, "still spooled after {DELETE_LINGER:?}"),
        }
    }
}

/// A delete's wait for spooled output, from when the delete came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteLinger {
    since: Instant,
}

impl DeleteLinger {
    pub fn new(now: Instant) -> Self {
        DeleteLinger { since: now }
    }

    /// When the delete came.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Whether the delete waits on, given what is spooled: while a reader took bytes in
    /// the last [`READER_IDLE`], up to [`DELETE_LINGER`] after the delete came.
    pub fn check(&self, backlog: Backlog, now: Instant) -> Linger {
        if backlog.spooled == 0 {
            return Linger::Drained;
        }
        let limit = self.since + DELETE_LINGER;
        let drop = |why| Linger::Drop {
            spooled: backlog.spooled,
            why,
        };
        if now >= limit {
            return drop(DropWhy::TimedOut);
        }
        match backlog.last_taken.map(|t| t + READER_IDLE) {
            Some(idle_at) if now < idle_at => Linger::Wait(idle_at.min(limit)),
            _ => drop(DropWhy::NoReader),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delete_waits_for_a_spool_only_while_a_reader_takes_it() {
        let t0 = Instant::now();
        let linger = DeleteLinger::new(t0);
        let ms = Duration::from_millis;
        let backlog = |spooled, taken: Option<Duration>| Backlog {
            spooled,
            last_taken: taken.map(|d| t0 + d),
        };
        // Nothing spooled: no wait, whoever reads.
        assert_eq!(linger.check(backlog(0, None), t0), Linger::Drained);
        assert_eq!(
            linger.check(backlog(0, Some(ms(0))), t0 + ms(20_000)),
            Linger::Drained
        );
        // A reader took some a moment ago: wait until it has been idle for READER_IDLE.
        assert_eq!(
            linger.check(backlog(5, Some(ms(0))), t0 + ms(200)),
            Linger::Wait(t0 + READER_IDLE)
        );
        // Nobody took any for READER_IDLE (or ever): drop at once.
        let no_reader = Linger::Drop {
            spooled: 5,
            why: DropWhy::NoReader,
        };
        assert_eq!(
            linger.check(backlog(5, Some(ms(0))), t0 + READER_IDLE),
            no_reader
        );
        assert_eq!(linger.check(backlog(5, None), t0), no_reader);
        // A reader that keeps taking: waited for up to DELETE_LINGER, then dropped.
        let late = t0 + DELETE_LINGER - ms(100);
        assert_eq!(
            linger.check(backlog(5, Some(DELETE_LINGER - ms(200))), late),
            Linger::Wait(t0 + DELETE_LINGER)
        );
        assert_eq!(
            linger.check(backlog(7, Some(DELETE_LINGER)), t0 + DELETE_LINGER),
            Linger::Drop {
                spooled: 7,
                why: DropWhy::TimedOut
            }
        );
        // Streams together: the bytes add up, the latest reader counts.
        assert_eq!(
            backlog(1, Some(ms(5))).and(backlog(2, Some(ms(9)))),
            backlog(3, Some(ms(9)))
        );
        assert_eq!(backlog(1, None).and(Backlog::default()), backlog(1, None));
    }
}

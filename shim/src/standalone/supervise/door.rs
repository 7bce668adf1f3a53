//! The supervisor's end of `upgrade.sock` ([`crate::standalone::upgrade::wire`]) in its
//! loop: callers are accepted as they come, a caller that is not root is refused once its
//! request is read, and root's request waits in [`Door::take_asked`] for the loop to act
//! on it once the turn's other events are handled. The socket is the supervisor's for
//! its whole life (after the exit too: a lingering supervisor can move as well) and
//! travels across an upgrade by number.

use crate::containerd::upgrade::protocol::{version_line, Outcome, UpgradeReport, UpgradeRequest};
use crate::process_core::carried_fds::monotonic_ns;
use crate::process_core::epoll::Poller;
use crate::standalone::own_fds::OwnFd;
use crate::standalone::upgrade::wire::{self, WireError};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// Most callers waiting for their request to arrive (only root gets this far: a bound on
/// what a stuck operator tool can hold, not a defence).
const MAX_WAITING: usize = 4;
/// How long the listener rests after `accept` failed (no descriptor or memory left): a
/// readable listener nothing can be accepted from would spin the loop.
const ACCEPT_REST: Duration = Duration::from_secs(1);

/// A request read whole, and the connection to answer on.
#[derive(Debug)]
pub(super) struct Asked {
    pub conn: OwnedFd,
    pub request: UpgradeRequest,
    /// `CLOCK_MONOTONIC` when it was read: the pause starts here.
    pub at_ns: u64,
}

/// The listening socket and the callers it has accepted.
#[derive(Debug)]
pub(super) struct Door {
    listener: OwnedFd,
    /// Accepted callers whose request has not arrived yet, under `OwnFd::UpgradeCaller`'s
    /// `n`th token.
    waiting: Vec<(u32, OwnedFd)>,
    next: u32,
    asked: Option<Asked>,
    /// Set while the listener rests (unregistered) after a failed `accept`.
    resting_until: Option<Instant>,
}

impl Door {
    /// Makes `upgrade.sock` in the (pinned) process directory `dir`.
    pub fn open(dir: &Path) -> io::Result<Door> {
        wire::listen_in(dir).map(Door::from_listener)
    }

    /// The door around a listening socket carried across an upgrade.
    pub fn from_listener(listener: OwnedFd) -> Door {
        Door {
            listener,
            waiting: Vec::new(),
            next: 0,
            asked: None,
            resting_until: None,
        }
    }

    /// The listening socket (to carry it across an upgrade).
    pub fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    pub fn register(&self, poller: &Poller) -> io::Result<()> {
        poller.add_readable(self.listener.as_fd(), OwnFd::UpgradeDoor.token())
    }

    /// The listener is readable: accepts every caller waiting.
    pub fn on_listener(&mut self, poller: &Poller) {
        loop {
            let conn = match wire::accept(self.listener.as_fd()) {
                Ok(Some(c)) => c,
                Ok(None) => return,
                Err(e) => {
                    log::warn!("upgrade.sock: accept: {e}; not listening for {ACCEPT_REST:?}");
                    poller.remove(self.listener.as_fd());
                    self.resting_until = Some(Instant::now() + ACCEPT_REST);
                    return;
                }
            };
            match arrival(&conn) {
                Arrival::NotYet if self.waiting.len() >= MAX_WAITING => {
                    refuse(&conn, "too many callers are waiting to ask");
                }
                Arrival::NotYet => {
                    let n = self.next;
                    self.next = self.next.wrapping_add(1);
                    match poller.add_readable(conn.as_fd(), OwnFd::UpgradeCaller.nth(n)) {
                        Ok(()) => self.waiting.push((n, conn)),
                        Err(e) => log::warn!("upgrade.sock: epoll: {e}"),
                    }
                }
                Arrival::Request(request) => self.asked_by(conn, request),
                Arrival::Gone => {}
            }
        }
    }

    /// A waiting caller's connection is readable.
    pub fn on_waiting(&mut self, poller: &Poller, n: u32) {
        let Some(i) = self.waiting.iter().position(|(m, _)| *m == n) else {
            return;
        };
        let request = match arrival(&self.waiting[i].1) {
            Arrival::NotYet => return,
            Arrival::Request(request) => Some(request),
            Arrival::Gone => None,
        };
        let (_, conn) = self.waiting.swap_remove(i);
        poller.remove(conn.as_fd());
        if let Some(request) = request {
            self.asked_by(conn, request);
        }
    }

    /// `conn` asked: root's first request is acted on, a second one before that refused,
    /// anyone else's refused. (Answered once the request is read: a socket closed with a
    /// request unread would reset the caller's connection, losing the answer.)
    fn asked_by(&mut self, conn: OwnedFd, request: UpgradeRequest) {
        match wire::peer_uid(conn.as_fd()) {
            Ok(0) => {}
            Ok(uid) => {
                log::warn!("upgrade.sock: uid {uid} asked for an upgrade: refused");
                return refuse(&conn, "only root may upgrade a supervisor");
            }
            Err(e) => return refuse(&conn, &format!("who is asking: {e}")),
        }
        match &self.asked {
            Some(_) => refuse(&conn, "an upgrade is in progress already"),
            None => {
                self.asked = Some(Asked {
                    conn,
                    request,
                    at_ns: monotonic_ns(),
                })
            }
        }
    }

    /// When the loop must wake for [`Door::tick`] (the listener rests).
    pub fn wake_at(&self) -> Option<Instant> {
        self.resting_until
    }

    /// Listens again once the rest after a failed `accept` is over.
    pub fn tick(&mut self, poller: &Poller, now: Instant) {
        if self.resting_until.is_some_and(|t| t <= now) {
            self.resting_until = None;
            if let Err(e) = self.register(poller) {
                log::warn!("upgrade.sock: epoll: {e}");
            }
        }
    }

    /// The request to act on, if one was read.
    pub fn take_asked(&mut self) -> Option<Asked> {
        self.asked.take()
    }

    /// Answers every caller still waiting with a refusal (the supervisor is about to
    /// execute another image, which will not know them).
    pub fn turn_away_waiting(&mut self, poller: &Poller, why: &str) {
        for (_, conn) in self.waiting.drain(..) {
            poller.remove(conn.as_fd());
            refuse(&conn, why);
        }
    }
}

/// What a caller has sent.
enum Arrival {
    NotYet,
    Request(UpgradeRequest),
    /// It went away, or sent something that is no request (and was told so).
    Gone,
}

fn arrival(conn: &OwnedFd) -> Arrival {
    match wire::receive_request(conn.as_fd()) {
        Ok(None) => Arrival::NotYet,
        Ok(Some(request)) => Arrival::Request(request),
        Err(WireError::Closed) => Arrival::Gone,
        Err(e) => {
            refuse(conn, &format!("bad request: {e}"));
            Arrival::Gone
        }
    }
}

/// An answer from this image.
pub(super) fn report(binary: &Path, pause_us: u64, outcome: Outcome) -> UpgradeReport {
    UpgradeReport {
        pid: std::process::id(),
        from: version_line(),
        to: version_line(),
        binary: binary.to_path_buf(),
        pause_us,
        outcome,
    }
}

/// Sends `report` on `conn`; a caller that has gone is no one's concern.
pub(super) fn answer(conn: &OwnedFd, report: &UpgradeReport) {
    if let Err(e) = wire::send_report(conn.as_fd(), report) {
        log::debug!("upgrade.sock: answer: {e}");
    }
}

fn refuse(conn: &OwnedFd, why: &str) {
    let binary = std::env::current_exe().unwrap_or_default();
    answer(conn, &report(&binary, 0, Outcome::Refused(why.to_string())));
}

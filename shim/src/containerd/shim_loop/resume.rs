//! The new image's side of a live upgrade: rebuilds the loop from the state the old image
//! saved (`upgrade::state`), answers the Upgrade call, and serves on. Also how the old
//! image comes back when the new one failed (a rollback: the same state, answered as
//! rolled back).

use super::fds::ShimFd;
use super::EventLoop;
use crate::containerd::events::{Events, Publisher};
use crate::containerd::flags::Flags;
use crate::containerd::process_table::{ProcKey, Table};
use crate::containerd::shim::{RuncFactory, Shim};
use crate::containerd::ttrpc::Connection;
use crate::containerd::upgrade::protocol::{version_line, Fault, Outcome, UpgradeReport};
use crate::containerd::upgrade::state::SavedShim;
use crate::process_core::carried_fds::{at_offset, CarryError, FdsIn};
use crate::process_core::epoll::{Token, Waker};
use crate::process_core::event_base::EventBase;
use crate::process_core::reaper::Reaper;
use crate::process_core::rollback;
use crate::process_core::signals;
use std::io;
use std::os::fd::{AsFd, RawFd};
use std::os::unix::net::UnixListener;
use std::time::Instant;

/// Why a saved state could not be taken over.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(transparent)]
    Carry(#[from] CarryError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Serves on from `saved` (read from the memfd `state_fd`). `rolled_back`: this is the
/// old image executed again because the new one failed, for that reason. In a new image,
/// a failure before it serves executes the old image again; it returns only if that is
/// impossible.
pub fn resume(
    flags: &Flags,
    saved: SavedShim,
    state_fd: RawFd,
    rolled_back: Option<String>,
) -> io::Result<()> {
    if rolled_back.is_none() {
        rollback::arm(saved.old_image, state_fd, &saved.fds);
        if saved.fault() == Some(Fault::AbortAfterExec) {
            log::warn!("upgrade: aborting after execve, as the request asked (fault injection)");
            std::process::abort();
        }
    }
    // Copies of every carried descriptor, made before the rebuild takes any: a rebuild
    // that fails midway drops (closes) what it took, and the old image executed again
    // must find every descriptor at the number the state names.
    let spares = match &rolled_back {
        None => Some(FdsIn::new(&saved.fds).spares()),
        Some(_) => None,
    };
    let ev = match rebuild(flags, saved, rolled_back) {
        Ok(ev) => ev,
        Err(e) => {
            let why = format!("the new image could not take the state over: {e}");
            log::error!("upgrade: {why}");
            match spares {
                Some(Ok(spares)) => {
                    if let Err(e) = spares.put_back() {
                        log::error!("upgrade: putting the descriptors back: {e}");
                    }
                }
                Some(Err(e)) => log::error!("upgrade: no copies of the descriptors: {e}"),
                None => {}
            }
            return Err(rollback::back(&why));
        }
    };
    drop(spares);
    rollback::disarm();
    // The state is this image's now.
    let _ = nix::unistd::close(state_fd);
    ev.serve()
}

fn rebuild(
    flags: &Flags,
    saved: SavedShim,
    rolled_back: Option<String>,
) -> Result<EventLoop, ResumeError> {
    let now = Instant::now();
    let mut fds = FdsIn::new(&saved.fds);
    let base = EventBase::new(&signals::handled())?;
    let waker = Waker::new()?;
    base.poller().add_readable(waker.as_fd(), Token::Waker)?;
    let listener = UnixListener::from(fds.take(saved.listener)?);
    listener.set_nonblocking(true)?;
    base.poller()
        .add_readable(listener.as_fd(), ShimFd::Listener.token())?;
    let namespace = flags.namespace.clone();
    let events_address = super::events_address();
    let publisher = events_address.as_deref().and_then(|addr| {
        Publisher::start_with_events(addr, &namespace, saved.events.clone())
            .map_err(|e| log::warn!("no task events: cannot publish to {addr}: {e}"))
            .ok()
    });
    let reaper = Reaper::new();
    let runc = RuncFactory::new(&namespace, reaper.monitor());
    let mut shim = Shim::new(
        namespace,
        saved.start_options.clone(),
        Events::new(publisher),
        runc,
    );
    shim.table = Table::restore(saved.table, &mut fds, &shim.runc, now)?;
    shim.shutdown_requested = saved.shutdown_requested.map(|o| at_offset(o, now));
    let socket_path = (!saved.socket_path.as_os_str().is_empty()).then_some(saved.socket_path);
    let mut ev = EventLoop::new(base, waker, shim, reaper, listener, socket_path)?;
    ev.events_address = events_address;
    ev.started_from = saved.started_from;
    ev.empty_since = saved.empty_since.map(|o| at_offset(o, now));
    ev.next_conn = saved.next_conn;
    for (n, c) in saved.conns {
        let conn = Connection::restore(c, &mut fds)?;
        ev.base
            .poller()
            .add_readable(conn.stream().as_fd(), ShimFd::Conn(n).token())?;
        ev.conns.insert(n, conn);
    }
    // The old image's own descriptor: kept only for a rollback, which is over now.
    drop(fds.take(saved.old_image)?);
    let untaken = fds.untaken();
    if !untaken.is_empty() {
        log::warn!("upgrade: descriptors {untaken:?} were listed but not named by the state");
    }
    // Pumps and OOM watchers run again under the same keys.
    let keys: Vec<ProcKey> = ev.shim.table.processes().map(|(k, _)| k).collect();
    for key in keys {
        ev.shim.start_pumps(key, ev.base.poller());
    }
    let inits: Vec<ProcKey> = ev.shim.table.containers().map(|c| c.init).collect();
    for init in inits {
        ev.shim.rewatch_oom(init, ev.base.poller());
    }
    let (conn, stream) = saved.upgrade_call;
    let pause_us =
        crate::process_core::carried_fds::monotonic_ns().saturating_sub(saved.paused_at_ns) / 1000;
    let outcome = match &rolled_back {
        None => Outcome::Upgraded,
        Some(why) => Outcome::RolledBack(why.clone()),
    };
    let report = UpgradeReport {
        pid: std::process::id(),
        from: saved.saved_by.clone(),
        to: version_line(),
        binary: std::env::current_exe().unwrap_or_default(),
        pause_us,
        outcome,
    };
    match &rolled_back {
        None => log::info!(
            "upgraded from {} to {} in {} us",
            report.from,
            report.to,
            pause_us
        ),
        Some(why) => log::warn!("upgrade rolled back: {why}"),
    }
    if let Ok(body) = serde_json::to_vec(&report) {
        if let Some(c) = ev.conns.get_mut(&conn) {
            let _ = c.respond(stream, Ok(body));
        }
    }
    let conns: Vec<u32> = ev.conns.keys().copied().collect();
    for n in conns {
        ev.update_interest(n);
    }
    // Exits that came while no image was looking: SIGCHLD is still pending (blocked), and
    // a reap now books any that came before the signalfd existed.
    ev.reap();
    Ok(ev)
}

//! The old image's side of a live upgrade (`containerd::upgrade`): an Upgrade call holds
//! every connection (new calls wait in the sockets), the loop goes on until the calls in
//! flight are answered (bounded by the request's timeout: then it refuses and reads
//! again), saves its state, has the new binary check it (a dry run), hands the events
//! over, and executes the new binary with the state in a memfd. Anything that fails
//! before the `execve` leaves the shim as it was, answering "refused" with the reason.

use super::EventLoop;
use crate::containerd::errors::invalid;
use crate::containerd::events::Publisher;
use crate::containerd::ttrpc::{status, Reply};
use crate::containerd::upgrade::protocol::{version_line, Outcome, UpgradeReport, UpgradeRequest};
use crate::containerd::upgrade::state::{self, SavedShim, FORMAT};
use crate::process_core::carried_fds::{offset_of, FdsOut};
use crate::process_core::upgrade_exec::{self, ExecError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long undelivered events are given to reach containerd before they are handed
/// over instead.
const EVENTS_FLUSH: Duration = Duration::from_millis(500);

/// Why a shim does not move onto a new binary (the Upgrade call's answer says it).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("an upgrade is in progress already")]
    InProgress,
    #[error("{calls} call(s) still in flight after {waited:?}")]
    Busy { calls: usize, waited: Duration },
    #[error(transparent)]
    NotAtRest(#[from] crate::containerd::process_table::snapshot::NotAtRest),
    #[error("keep the running image open: {0}")]
    KeepImage(#[source] std::io::Error),
    #[error("write the state: {0}")]
    WriteState(#[source] std::io::Error),
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// An upgrade waiting for the calls in flight.
#[derive(Debug)]
pub(super) struct Upgrading {
    conn: u32,
    stream: u32,
    request: UpgradeRequest,
    binary: PathBuf,
    paused_at: Instant,
    paused_at_ns: u64,
    pub(super) deadline: Instant,
}

impl EventLoop {
    /// An Upgrade call arrived on connection `conn`: answered now (refused), or later.
    pub(super) fn on_upgrade_call(
        &mut self,
        conn: u32,
        stream: u32,
        payload: &[u8],
    ) -> Option<Reply> {
        let c = self.conns.get(&conn)?;
        let uid =
            nix::sys::socket::getsockopt(c.stream(), nix::sys::socket::sockopt::PeerCredentials)
                .map(|cred| cred.uid());
        if uid != Ok(0) {
            return Some(Err(status(
                ttrpc::Code::PERMISSION_DENIED,
                "only root may upgrade a shim",
            )));
        }
        let request: UpgradeRequest = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => return Some(Err(invalid(format!("upgrade request: {e}")))),
        };
        let binary = request
            .binary
            .clone()
            .unwrap_or_else(|| self.started_from.clone());
        if self.upgrading.is_some() {
            return Some(report(
                &binary,
                0,
                Outcome::Refused(Refusal::InProgress.to_string()),
            ));
        }
        if let Err(why) = upgrade_exec::executable(&binary) {
            return Some(report(&binary, 0, Outcome::Refused(why.to_string())));
        }
        let now = Instant::now();
        log::info!(
            "upgrade to {} asked: holding new calls, {} in flight",
            binary.display(),
            self.calls_in_flight
        );
        self.upgrading = Some(Upgrading {
            conn,
            stream,
            binary,
            paused_at: now,
            paused_at_ns: state::monotonic_ns(),
            deadline: now + Duration::from_millis(request.timeout_ms),
            request,
        });
        let held: Vec<u32> = self.conns.keys().copied().collect();
        for n in held {
            if let Some(c) = self.conns.get_mut(&n) {
                c.hold();
            }
            self.update_interest(n);
        }
        None
    }

    /// Carries an upgrade on: once nothing is in flight, hands over (and does not come
    /// back unless that fails); at the deadline, refuses.
    pub(super) fn progress_upgrade(&mut self, now: Instant) {
        let Some(u) = &self.upgrading else {
            return;
        };
        if self.calls_in_flight > 0 {
            if now >= u.deadline {
                let why = Refusal::Busy {
                    calls: self.calls_in_flight,
                    waited: Duration::from_millis(u.request.timeout_ms),
                };
                self.refuse(why);
            }
            return;
        }
        if let Err(why) = self.hand_over() {
            self.refuse(why);
        }
    }

    /// Answers the Upgrade call with a refusal and serves on as before.
    fn refuse(&mut self, why: Refusal) {
        let Some(u) = self.upgrading.take() else {
            return;
        };
        log::warn!("upgrade to {} refused: {why}", u.binary.display());
        let paused = u64::try_from(u.paused_at.elapsed().as_micros()).unwrap_or(u64::MAX);
        let reply = report(&u.binary, paused, Outcome::Refused(why.to_string()));
        let held: Vec<u32> = self.conns.keys().copied().collect();
        for n in held {
            if let Some(c) = self.conns.get_mut(&n) {
                c.release();
            }
            self.update_interest(n);
        }
        if let Some(c) = self.conns.get_mut(&u.conn) {
            let _ = c.respond(u.stream, reply);
        }
    }

    /// Saves the state, has the new binary check it, and executes it. Returns only if
    /// something failed, with why; the shim is then as it was.
    fn hand_over(&mut self) -> Result<(), Refusal> {
        let Some(u) = &self.upgrading else {
            return Ok(());
        };
        let now = Instant::now();
        let mut fds = FdsOut::default();
        let table = self.shim.table.save(&mut fds, now)?;
        let listener = fds.carry(&self.listener);
        let conns = self
            .conns
            .iter()
            .map(|(n, c)| (*n, c.save(&mut fds)))
            .collect();
        let old_image = std::fs::File::open("/proc/self/exe").map_err(Refusal::KeepImage)?;
        let old_image_fd = fds.carry(&old_image);
        let mut saved = SavedShim {
            format: FORMAT,
            saved_by: version_line(),
            paused_at_ns: u.paused_at_ns,
            started_from: self.started_from.clone(),
            old_image: old_image_fd,
            socket_path: self.socket_path.clone().unwrap_or_default(),
            listener,
            start_options: self.shim.start_options.clone(),
            conns,
            next_conn: self.next_conn,
            table,
            events: Vec::new(),
            upgrade_call: (u.conn, u.stream),
            request: u.request.clone(),
            empty_since: self.empty_since.map(|at| offset_of(at, now)),
            shutdown_requested: self.shim.shutdown_requested.map(|at| offset_of(at, now)),
            fds: Vec::new(),
        };
        saved.fds = fds.fds().to_vec();
        let draft = state::write_memfd(&saved).map_err(Refusal::WriteState)?;
        let checked = upgrade_exec::dry_run(&u.binary, &draft)?;
        log::info!(
            "upgrade: {} takes the state over ({checked})",
            u.binary.display()
        );
        saved.events = self.shim.events.hand_over(EVENTS_FLUSH);
        let binary = u.binary.clone();
        log::info!("upgrade: executing {}", binary.display());
        let failed = match state::write_memfd(&saved) {
            Ok(memfd) => Refusal::Exec(upgrade_exec::exec(&binary, &memfd, &fds)),
            Err(e) => Refusal::WriteState(e),
        };
        // Still here: the shim serves on, with its events.
        let publisher = self.events_address.as_deref().and_then(|addr| {
            Publisher::start_with_events(addr, &self.shim.namespace, saved.events.clone()).ok()
        });
        self.shim.events.resume(publisher);
        drop(old_image);
        Err(failed)
    }
}

/// An Upgrade call's answer.
fn report(binary: &Path, pause_us: u64, outcome: Outcome) -> Reply {
    let r = UpgradeReport {
        pid: std::process::id(),
        from: version_line(),
        to: version_line(),
        binary: binary.to_path_buf(),
        pause_us,
        outcome,
    };
    serde_json::to_vec(&r).map_err(|e| crate::containerd::errors::internal(e.to_string()))
}

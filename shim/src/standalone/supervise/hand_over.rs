//! The old image's side of a supervisor's live upgrade. An operator's request
//! ([`super::door`]) is acted on once the loop's turn is over, so nothing is half done:
//! the supervisor saves its state ([`Supervisor::save`], every descriptor by number),
//! has the new binary check it (a dry run), and executes it under the same pid with the
//! state in a memfd. Nothing in the supervisor changes until the `execve`: anything that
//! fails before it leaves the supervisor as it was, answering "refused" with the reason.
//!
//! While this runs the loop does not: the process's output waits in its pipe (and the
//! FIFOs in theirs), to be moved by whichever image serves next.

use super::door::{self, Asked};
use super::Supervisor;
use crate::containerd::upgrade::protocol::{version_line, Outcome};
use crate::process_core::carried_fds::{monotonic_ns, FdsOut};
use crate::process_core::upgrade_exec;
use crate::standalone::upgrade::saved::{
    self, FifoEnds, HoldsSnapshot, PeaSnapshot, SavedSupervisor, SupervisorSnapshot, FACE, FORMAT,
};
use std::path::Path;
use std::time::Instant;

impl Supervisor {
    /// Acts on `asked`: returns only if the supervisor did not move (it serves on, and the
    /// operator has been told why).
    pub(super) fn upgrade(&mut self, asked: Asked) {
        let binary = asked
            .request
            .binary
            .clone()
            .unwrap_or_else(|| self.started_from.clone());
        let why = self.hand_over(&asked, &binary);
        log::warn!("upgrade to {} refused: {why}", binary.display());
        let paused_us = monotonic_ns().saturating_sub(asked.at_ns) / 1000;
        door::answer(
            &asked.conn,
            &door::report(&binary, paused_us, Outcome::Refused(why)),
        );
    }

    /// Saves the state, has `binary` check it, and executes it. Returns only if something
    /// failed, with why.
    fn hand_over(&mut self, asked: &Asked, binary: &Path) -> String {
        if self.state.is_done() {
            return "the supervisor is leaving: its process has exited and its output is \
                    delivered"
                .into();
        }
        // Between the reap and `exitcode` the exit is half recorded (the keeper has been
        // told, the waiters not): a short, bounded stretch; the operator asks again.
        if self.state.exiting_since().is_some() {
            return "the process has exited and its exit waits for its output to reach the \
                    FIFOs: ask again in a moment"
                .into();
        }
        if let Err(why) = upgrade_exec::executable(binary) {
            return why.to_string();
        }
        // Callers still sending their request would not be known to the next image.
        if let Some(d) = &mut self.door {
            d.turn_away_waiting(self.base.poller(), "another upgrade is in progress");
        }
        let old_image = match std::fs::File::open("/proc/self/exe") {
            Ok(f) => f,
            Err(e) => return format!("keep the running image open: {e}"),
        };
        let Some(door) = &self.door else {
            return "no upgrade.sock to carry".into();
        };
        let mut fds = FdsOut::default();
        let mut state = SavedSupervisor {
            face: FACE.into(),
            format: FORMAT,
            saved_by: version_line(),
            paused_at_ns: asked.at_ns,
            started_from: self.started_from.clone(),
            old_image: fds.carry(&old_image),
            request: asked.request.clone(),
            asker: fds.carry(&asked.conn),
            door: fds.carry(door.listener()),
            supervisor: self.save(&mut fds, Instant::now()),
            fds: Vec::new(),
        };
        state.fds = fds.fds().to_vec();
        let memfd = match saved::write_memfd(&state) {
            Ok(m) => m,
            Err(e) => return format!("write the state: {e}"),
        };
        if let Err(why) = upgrade_exec::dry_run(binary, &memfd) {
            return why.to_string();
        }
        upgrade_exec::exec(binary, &memfd, &fds).to_string()
    }

    /// The supervisor as plain data at `now`; its descriptors are named in `fds`. Reads
    /// only: the supervisor goes on unchanged if the upgrade does not happen.
    pub(super) fn save(&self, fds: &mut FdsOut, now: Instant) -> SupervisorSnapshot {
        let outputs = [0, 1].map(|i| {
            let (writer, keepalive) = self.outputs[i].parts();
            FifoEnds {
                writer: writer.map(|fd| fds.carry(fd)),
                keepalive: keepalive.map(|fd| fds.carry(fd)),
            }
        });
        let holds = self.holds.as_ref().map(|h| HoldsSnapshot {
            exit: fds.carry(&h.exit),
            stdin: h.stdin.as_ref().map(|f| fds.carry(f)),
            winsz: fds.carry(&h.winsz),
            winsz_hold: fds.carry(&h._winsz_hold),
            winsz_decoder: h.decoder.clone(),
            control: fds.carry(&h.control),
            control_hold: fds.carry(&h._control_hold),
            requests: h.requests.clone(),
            master: h.master.as_ref().map(|m| fds.carry(m)),
        });
        let (drops_written, drops_seen) = self.drops.counts();
        SupervisorSnapshot {
            dir: self.pinned.origin().to_path_buf(),
            pinned: fds.carry(&self.pinned),
            state: self.state,
            keeper: self.keeper.as_ref().map(|k| (fds.carry(k.sock()), k.pid())),
            stdio: self.stdio.save(fds, now),
            outputs,
            holds,
            pea: self.pea.as_ref().map(|p| PeaSnapshot {
                runc_id: p.runc_id.clone(),
                outer: p.outer.as_ref().map(|o| fds.carry(o)),
            }),
            drops_written,
            drops_seen,
        }
    }
}

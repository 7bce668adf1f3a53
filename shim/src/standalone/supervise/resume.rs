//! The new image's side of a supervisor's live upgrade: `supervise` started with
//! [`STATE_FD_ENV`] set rebuilds the supervisor from the state the old image left
//! ([`SavedSupervisor`]), answers the operator, and runs the loop on, under the same pid,
//! with the same process, keeper, FIFOs, pumps and spools. Also how the old image comes
//! back when the new one failed (a rollback: the same state, answered as rolled back).
//!
//! Until the new image serves, a failure must not leave the process without its
//! supervisor: a crash re-executes the old image (`process_core::rollback`, armed first
//! thing), and so does a state that cannot be taken over, after the descriptors taken so
//! far are put back at their numbers (`carried_fds::Spares`). Only if even that fails does
//! the supervisor exit; its keeper then takes the process over as after any supervisor's
//! death.

use super::door::{self, Door};
use super::{Kind, PeaTies, Plan, RunningHolds, Supervisor};
use crate::containerd::upgrade::protocol::{version_line, Fault, Outcome, UpgradeReport};
use crate::process_core::carried_fds::{monotonic_ns, CarryError, FdsIn};
use crate::process_core::event_base::EventBase;
use crate::process_core::process_stdio::ProcessStdio;
use crate::process_core::reaper::Reaper;
use crate::process_core::{rollback, signals};
use crate::standalone::keeper::KeeperLink;
use crate::standalone::output_fifo::OutputFifo;
use crate::standalone::spool_flags::DropReport;
use crate::standalone::supervisor_log;
use crate::standalone::upgrade::saved::{SavedError, SavedSupervisor, ROLLBACK_ENV, STATE_FD_ENV};
use fifo::{PinnedDir, ProcessDir};
use std::fs::File;
use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Instant;

/// Why a saved state could not be taken over.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(transparent)]
    Carry(#[from] CarryError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Dir(#[from] fifo::Error),
    #[error("the state is {saved:?}'s supervisor's, this one supervises {planned:?}")]
    OtherDir { saved: PathBuf, planned: PathBuf },
    #[error("the request asked the new image to fail (fault injection)")]
    Fault,
}

/// What the new image holds once it has taken the state over.
struct TakenOver {
    sup: Supervisor,
    /// The operator's connection, to answer.
    asker: OwnedFd,
    /// The old image: kept until this image serves, for a rollback.
    old_image: OwnedFd,
}

/// Serves on from the state the previous image left (`taken`, from [`STATE_FD_ENV`]);
/// returns the exit code, as `supervise` does.
pub(super) fn main(plan: &Plan, taken: Result<(RawFd, SavedSupervisor), SavedError>) -> u8 {
    let rolled_back = std::env::var(ROLLBACK_ENV).ok();
    std::env::remove_var(ROLLBACK_ENV);
    std::env::remove_var(STATE_FD_ENV);
    let (state_fd, saved) = match taken {
        Ok(t) => t,
        Err(e) => {
            // No old image to go back to: it is named by the state.
            let pinned = PinnedDir::open(&plan.dir);
            if let Ok(p) = &pinned {
                supervisor_log::install(p.path(), &plan.dir);
            }
            log::warn!("upgrade: the state cannot be read, the keeper takes over: {e}");
            return 1;
        }
    };
    // The pinned path the supervisor had (and has again below), for the log.
    let pinned_path = PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        saved.supervisor.pinned
    ));
    supervisor_log::install(&pinned_path, &plan.dir);
    let spares = match rolled_back {
        None => {
            rollback::arm(saved.old_image, state_fd, &saved.fds);
            if saved.fault() == Some(Fault::AbortAfterExec) {
                log::warn!("upgrade: aborting after execve, as the request asked");
                std::process::abort();
            }
            FdsIn::new(&saved.fds).spares().ok()
        }
        Some(_) => None,
    };
    let paused_at_ns = saved.paused_at_ns;
    let saved_by = saved.saved_by.clone();
    let taken = match take_over(plan, saved, rolled_back.is_some()) {
        Ok(t) => t,
        Err(e) => {
            let why = format!("the new image could not take the state over: {e}");
            log::warn!("upgrade: {why}");
            if rolled_back.is_none() {
                if let Some(Err(e)) = spares.as_ref().map(|s| s.put_back()) {
                    log::warn!("upgrade: putting the descriptors back: {e}");
                }
                let e = rollback::back(&why);
                log::warn!("upgrade: cannot execute the old image again: {e}");
            }
            return 1;
        }
    };
    // This image serves: crashes are its own from here on.
    rollback::disarm();
    drop(spares);
    let _ = nix::unistd::close(state_fd);
    let TakenOver {
        mut sup,
        asker,
        old_image,
    } = taken;
    drop(old_image);
    let pause_us = monotonic_ns().saturating_sub(paused_at_ns) / 1000;
    let outcome = match &rolled_back {
        None => Outcome::Upgraded,
        Some(why) => {
            log::warn!("upgrade rolled back: {why}");
            Outcome::RolledBack(why.clone())
        }
    };
    door::answer(
        &asker,
        &UpgradeReport {
            pid: std::process::id(),
            from: saved_by,
            to: version_line(),
            binary: std::env::current_exe().unwrap_or_default(),
            pause_us,
            outcome,
        },
    );
    drop(asker);
    // Exits that came while no image was looking (SIGCHLD stays pending across execve,
    // and a reap finds any whose signal came before the signalfd existed).
    sup.on_signals();
    sup.run();
    0
}

/// Rebuilds the supervisor from `saved`. Touches nothing but descriptors and this
/// process's own new epoll instance: a failure can still go back to the old image.
fn take_over(
    plan: &Plan,
    saved: SavedSupervisor,
    rolled_back: bool,
) -> Result<TakenOver, ResumeError> {
    let now = Instant::now();
    let s = saved.supervisor;
    if s.dir != plan.dir {
        return Err(ResumeError::OtherDir {
            saved: s.dir,
            planned: plan.dir.clone(),
        });
    }
    let mut fds = FdsIn::new(&saved.fds);
    let base = EventBase::new(&signals::handled())?;
    let reaper = Reaper::new();
    let old_image = fds.take(saved.old_image)?;
    let asker = fds.take(saved.asker)?;
    let door = Door::from_listener(fds.take(saved.door)?);
    let pinned = PinnedDir::from_file(File::from(fds.take(s.pinned)?), &plan.dir)?;
    let dir = ProcessDir::from_path(pinned.path())?;
    let keeper = match s.keeper {
        Some((sock, pid)) => Some(KeeperLink::from_parts(fds.take(sock)?, pid)),
        None => None,
    };
    let stdio = ProcessStdio::restore(s.stdio, &mut fds, now)?;
    let mut outputs: [OutputFifo; 2] = Default::default();
    for (out, ends) in outputs.iter_mut().zip(s.outputs) {
        *out = OutputFifo::from_parts(
            fds.take_opt(ends.writer)?.map(File::from),
            fds.take_opt(ends.keepalive)?.map(File::from),
        );
    }
    let holds = match s.holds {
        Some(h) => Some(RunningHolds {
            exit: File::from(fds.take(h.exit)?),
            stdin: fds.take_opt(h.stdin)?.map(File::from),
            winsz: File::from(fds.take(h.winsz)?),
            _winsz_hold: File::from(fds.take(h.winsz_hold)?),
            decoder: h.winsz_decoder,
            control: File::from(fds.take(h.control)?),
            _control_hold: File::from(fds.take(h.control_hold)?),
            requests: h.requests,
            master: fds.take_opt(h.master)?.map(File::from),
        }),
        None => None,
    };
    let pea = match (s.pea, &plan.kind) {
        (Some(p), Kind::Pea { .. }) => Some(PeaTies {
            runc: plan
                .depot
                .runc(Some(&dir.log_json()), Some(reaper.monitor())),
            runc_id: p.runc_id,
            outer: fds.take_opt(p.outer)?,
        }),
        _ => None,
    };
    let mut sup = Supervisor {
        base,
        reaper,
        pinned,
        dir,
        state: s.state,
        keeper,
        stdio,
        outputs,
        holds,
        pea,
        drops: DropReport::with_counts(&plan.dir, s.drops_written, s.drops_seen),
        door: Some(door),
        started_from: saved.started_from,
    };
    sup.register()?;
    let untaken = fds.untaken();
    if !untaken.is_empty() {
        log::warn!("upgrade: descriptors {untaken:?} were listed but not named by the state");
    }
    if !rolled_back && saved.request.fault == Some(Fault::FailAfterExec) {
        return Err(ResumeError::Fault);
    }
    Ok(TakenOver {
        sup,
        asker,
        old_image,
    })
}

//! A process's output as the loop serves it: its pumps (registered under the process's
//! key), the count of output sources still open that exit reports and Deletes wait for,
//! and the spools that go on draining after the exit, which its Waits wait for (bounded),
//! and then its output FIFOs' reader (`wait_hold`, bounded).

use crate::containerd::handlers::wait_reply;
use crate::containerd::process_table::record::SpoolWait;
use crate::containerd::process_table::ProcKey;
use crate::containerd::shim::Shim;
use crate::containerd::wait_hold::{HoldCheck, Released, WaitHold};
use crate::process_core::epoll::Poller;
use crate::process_core::process_stdio::{Stream, Streams, READER_IDLE};
use std::time::{Duration, Instant};

/// How long Waits wait for a spool to drain after the exit: the Go shim's bound on its
/// IO wait; longer only while a reader is taking the spool (below).
const SPOOL_WAIT: Duration = Duration::from_secs(10);
/// While a reader has taken bytes within the last [`READER_IDLE`], the Waits wait on for
/// the spool, up to this long after the output's grace began (the exit): the Go shim,
/// which has no spool, would still have the process writing at that reader's pace (a
/// TTY through `ctr` under busy loops streams at 1-2 MiB/s: 32 MiB take 20-30 s).
const SPOOL_WAIT_READING: Duration = Duration::from_secs(60);

impl Shim {
    /// Serves a process's pumps from now on (after Create or Start handed them over).
    pub fn start_pumps(&mut self, key: ProcKey, poller: &Poller) {
        let Some(p) = self.table.get_mut(key) else {
            return;
        };
        if p.pumps.is_empty() {
            return;
        }
        if let Err(dropped) = p.pumps.register(poller, key.0) {
            log::warn!("stdio of {}: {}", p.display(), dropped.error);
            self.outputs_ended(key, dropped.streams, poller);
        }
    }

    /// Runs a process's pump on its readiness.
    pub fn on_stdio(&mut self, key: ProcKey, stream: Stream, poller: &Poller) {
        let Some(p) = self.table.get_mut(key) else {
            return;
        };
        let Some(ended) = p.pumps.run(poller, stream) else {
            if !p.pumps.is_open(stream) {
                // A spool drained after its source had ended.
                self.outputs_ended(key, Streams::default(), poller);
            }
            return;
        };
        if !p.pumps.is_open(stream) {
            log::debug!(
                "{stream:?} of {} done after {} bytes ({} read from its source; {})",
                p.display(),
                ended.moved,
                ended.read,
                ended_how(ended.how)
            );
        } else {
            log::debug!(
                "{stream:?} of {}: its source ended after {} bytes, {} still spooled ({} read from it; {})",
                p.display(),
                ended.moved,
                p.pumps.spooled(stream),
                ended.read,
                ended_how(ended.how)
            );
        }
        self.outputs_ended(key, Streams::from(stream), poller);
    }

    /// Runs every pump of a process now, without waiting for its next event: a decision
    /// about its output (a Delete's wait for a reader) then sees what the reader took a
    /// moment ago, not what it had taken by the pump's last run.
    pub fn pump_now(&mut self, key: ProcKey, poller: &Poller) {
        let Some(p) = self.table.get_mut(key) else {
            return;
        };
        let ended = p.pumps.run_all(poller);
        self.outputs_ended(key, ended, poller);
    }

    /// Output sources of a process have ended (EOF, or dropped): exit reports and Deletes
    /// stop waiting for them; a stream whose spool still holds bytes keeps its Waits
    /// waiting (bounded) until it has drained.
    ///
    /// Waits stop waiting for a spool once its pump is gone, whichever run of the pumps
    /// emptied it: an event's (called with no stream ended), the reap's
    /// (`process_exited`) or a Delete's (`pump_now`). Before, only an event's run ended
    /// that wait, and Waits waited out [`SPOOL_WAIT`] for a spool the reap had emptied (a
    /// TTY exec whose slave closed before the exit and whose reader caught up by the reap:
    /// a 10 s Wait in ~2 % of rounds under load;
    /// `process_table::tests::spool_emptied_at_the_reap`).
    pub fn outputs_ended(&mut self, key: ProcKey, ended: Streams, _poller: &Poller) {
        let Some(p) = self.table.get_mut(key) else {
            return;
        };
        p.open_outputs = p.open_outputs.saturating_sub(ended.outputs());
        let until = Instant::now() + SPOOL_WAIT;
        for stream in Stream::OUTPUTS {
            if ended.contains(stream) && p.pumps.is_open(stream) {
                p.spool_waits.push(SpoolWait { stream, until });
            }
        }
        let before = p.spool_waits.len();
        let pumps = &p.pumps;
        p.spool_waits.retain(|w| pumps.is_open(w.stream));
        if p.spool_waits.len() < before {
            log::debug!("{}: a spool drained; its Waits go on", p.display());
            self.answer_settled_waits(key);
        }
    }

    /// Answers the parked Waits of a process whose exit is reported and whose spools have
    /// drained (or been waited for long enough), once a reader has emptied its output
    /// FIFOs, or has taken nothing for a while (`containerd::wait_hold`); until then
    /// they stay parked and the loop looks again (`check_wait_holds`).
    pub(crate) fn answer_settled_waits(&mut self, key: ProcKey) {
        let Some(p) = self.table.get_mut(key) else {
            return;
        };
        let Some(exit) = p.exit_settled() else {
            return;
        };
        if p.waiters.is_empty() {
            p.wait_hold = None;
            return;
        }
        if let Some(unread) = p.pumps.fifo_unread() {
            let now = Instant::now();
            let hold = p
                .wait_hold
                .get_or_insert_with(|| WaitHold::new(unread, now));
            let since = hold.since();
            match hold.check(unread, now) {
                HoldCheck::Hold(_) => return,
                HoldCheck::Release(why) => {
                    let held = now.saturating_duration_since(since);
                    let pause = hold.longest_pause();
                    if why == Released::Drained {
                        if held >= Duration::from_millis(1) {
                            log::debug!(
                                "Wait of {} held {held:?}: {why} (longest pause {pause:?})",
                                p.display()
                            );
                        }
                    } else {
                        log::info!(
                            "Wait of {} answered after {held:?}: {why} (longest pause before {pause:?})",
                            p.display()
                        );
                    }
                }
            }
        }
        p.wait_hold = None;
        let waiters = std::mem::take(&mut p.waiters);
        let reply = wait_reply(exit.code, exit.exited_at);
        for w in waiters {
            self.answer(w.conn, w.stream, reply.clone());
        }
    }

    /// Waits stop waiting for spools still draining at their deadline, unless a reader
    /// is taking the spool (then up to [`SPOOL_WAIT_READING`] after the exit); the spools
    /// go on draining until the process is deleted.
    pub fn expire_spool_waits(&mut self, now: Instant) {
        let mut settled = Vec::new();
        for (key, p) in self.table.processes_mut() {
            let before = p.spool_waits.len();
            let pumps = &p.pumps;
            let limit = pumps.drain_deadline().map(|d| d + SPOOL_WAIT_READING);
            p.spool_waits.retain_mut(|w| {
                if w.until > now {
                    return true;
                }
                let reading_until = pumps.last_taken(w.stream).map(|t| t + READER_IDLE);
                if let (Some(idle_at), Some(limit)) = (reading_until, limit) {
                    if now < idle_at && now < limit {
                        w.until = idle_at.min(limit);
                        return true;
                    }
                }
                log::info!(
                    "{:?} of {}: still spooled after {SPOOL_WAIT:?} (and no reader taking it, or {SPOOL_WAIT_READING:?} after the exit): Wait answered",
                    w.stream,
                    crate::containerd::process_table::record::display_id(
                        &p.container_id,
                        &p.exec_id
                    )
                );
                false
            });
            if p.spool_waits.len() < before {
                settled.push(key);
            }
        }
        for key in settled {
            self.answer_settled_waits(key);
        }
    }

    /// Looks again at the processes whose settled Waits are held for their FIFOs' reader
    /// (at their next look), and at those with settled Waits parked and no hold yet (a
    /// table a live upgrade restored).
    pub fn check_wait_holds(&mut self, now: Instant) {
        let due: Vec<ProcKey> = self
            .table
            .processes()
            .filter(|(_, p)| {
                !p.waiters.is_empty()
                    && p.exit_settled().is_some()
                    && p.wait_hold.is_none_or(|h| h.next_check() <= now)
            })
            .map(|(key, _)| key)
            .collect();
        for key in due {
            self.answer_settled_waits(key);
        }
    }

    /// Runs the output pumps that declined to spool while their reader was active and
    /// want to look again now (see `ProcessStdio::next_recheck`).
    pub fn run_spool_rechecks(&mut self, now: Instant, poller: &Poller) {
        let due: Vec<(ProcKey, Stream)> = self
            .table
            .processes()
            .flat_map(|(key, p)| p.pumps.due_rechecks(now).into_iter().map(move |s| (key, s)))
            .collect();
        for (key, stream) in due {
            self.on_stdio(key, stream, poller);
        }
    }

    /// When the loop must look at the output again without an event: a spool wait's
    /// deadline, a pump's recheck or a held Wait's next look.
    pub fn next_output_deadline(&self) -> Option<Instant> {
        self.table
            .processes()
            .flat_map(|(_, p)| {
                p.spool_waits
                    .iter()
                    .map(|w| w.until)
                    .chain(p.pumps.next_recheck())
                    .chain(p.wait_hold.map(|h| h.next_check()))
            })
            .min()
    }
}

/// The end-of-output debug line's account of how a source ended.
fn ended_how(how: Option<crate::process_core::pump::SourceEnd>) -> String {
    how.map_or_else(
        || "its destination went first".to_string(),
        |h| h.to_string(),
    )
}

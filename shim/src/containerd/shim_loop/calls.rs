//! A call's way through the loop: its process's gate (for the calls that decide a
//! process's fate), its handler, a worker when runc must run, and its reply, after which
//! its gate lets the next call in.

use super::EventLoop;
use crate::containerd::call::{CallRef, GatedCall};
use crate::containerd::decoded_call::TaskCall;
use crate::containerd::handlers::Step;
use crate::containerd::process_table::gate::ExitReport;
use crate::containerd::process_table::{Missing, ProcKey};
use crate::containerd::ttrpc::Reply;
use crate::containerd::workers::Work;
use std::time::Instant;

impl EventLoop {
    /// A decoded call has arrived: through its gate, or straight to its handler.
    pub(super) fn on_call(&mut self, mut call: CallRef, request: TaskCall) {
        match self.shim.gate_of(&request) {
            None => self.run_call(call, None, request),
            Some(Err(missing)) => self.finish_call(call, None, Err(missing.into())),
            Some(Ok((key, exit))) => {
                self.count(&mut call);
                let Some(p) = self.shim.table.get_mut(key) else {
                    let gone = Missing::Gone(format!("#{}", key.0));
                    self.finish_call(call, None, Err(gone.into()));
                    return;
                };
                if p.gate.try_enter(exit) {
                    self.run_call(call, Some((key, exit)), request);
                } else {
                    p.gate.enqueue(GatedCall { call, request }, Instant::now());
                }
            }
        }
    }

    /// Runs a call's handler (inside its gate, if it has one) and acts on its step.
    fn run_call(&mut self, call: CallRef, gate: Option<(ProcKey, ExitReport)>, request: TaskCall) {
        let step = self.shim.handle(&call, request, self.base.poller());
        self.take_step(call, gate, step);
    }

    pub(super) fn take_step(
        &mut self,
        mut call: CallRef,
        gate: Option<(ProcKey, ExitReport)>,
        step: Step,
    ) {
        match step {
            Step::Reply(reply) => self.finish_call(call, gate, reply),
            Step::Parked => {}
            Step::Waiting => self.count(&mut call),
            Step::Work(job) => {
                self.count(&mut call);
                self.workers.submit(Work { call, gate, job });
            }
        }
    }

    /// Answers a call; then its gate lets the next call in (and its process's exit may be
    /// reported: its reply went first).
    pub(super) fn finish_call(
        &mut self,
        call: CallRef,
        gate: Option<(ProcKey, ExitReport)>,
        reply: Reply,
    ) {
        if let Err(st) = &reply {
            log::log!(
                crate::containerd::errors::failure_level(st),
                "rpc {} failed: {}",
                call.method,
                st.message
            );
        }
        self.respond(&call, reply);
        if let Some((key, exit)) = gate {
            if let Some(p) = self.shim.table.get_mut(key) {
                p.gate.leave(exit);
            }
            self.turns.push(key);
        }
    }

    /// Lets in the queued calls whose turn has come: at gates a call has just left, and
    /// after [`ENTER_WAIT`](crate::containerd::process_table::gate::ENTER_WAIT) beside a
    /// call that still runs. Also answers the calls queued at processes that have gone.
    pub(super) fn run_turns(&mut self, now: Instant) {
        let overdue: Vec<ProcKey> = self
            .shim
            .table
            .processes()
            .filter(|(_, p)| p.gate.next_deadline().is_some_and(|at| at <= now))
            .map(|(k, _)| k)
            .collect();
        self.turns.extend(overdue);
        loop {
            for gone in std::mem::take(&mut self.shim.gone) {
                let reply = match self.shim.gate_of(&gone.request) {
                    Some(Err(missing)) => Err(missing.into()),
                    _ => Err(Missing::Gone(gone.call.method.to_string()).into()),
                };
                self.finish_call(gone.call, None, reply);
            }
            let Some(key) = self.turns.pop() else {
                break;
            };
            let Some(p) = self.shim.table.get_mut(key) else {
                continue;
            };
            let Some((next, beside)) = p.gate.next_turn(now) else {
                continue;
            };
            let exit = match self.shim.gate_of(&next.request) {
                Some(Ok((_, exit))) => exit,
                _ => ExitReport::HeldBack,
            };
            if let Some(p) = self.shim.table.get_mut(key) {
                p.gate.admit(exit);
                if beside {
                    log::warn!(
                        "a call on {} still runs after {:?}; {} goes ahead beside it",
                        p.display(),
                        crate::containerd::process_table::gate::ENTER_WAIT,
                        next.call.method
                    );
                }
            }
            // Its turn may come again at once (another call queued behind).
            self.turns.push(key);
            self.run_call(next.call, Some((key, exit)), next.request);
        }
    }

    /// Carries waiting Deletes on; those whose waiting is over are answered or go to a
    /// worker.
    pub(super) fn progress_deletes(&mut self, now: Instant) {
        let (settled, next) = self.shim.progress_deletes(now, self.base.poller());
        self.delete_at = next;
        for s in settled {
            self.take_step(s.call, Some((s.key, ExitReport::Free)), s.step);
        }
    }
}

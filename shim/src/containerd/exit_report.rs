//! How an exit becomes a TaskExit: queued in the table once recorded, reported by the loop
//! when the process's output has drained (bounded) and no call that can cause the exit is
//! still unanswered (the process's gate), in order within a container.

use crate::containerd::process_table::record::ExitWait;
use crate::containerd::process_table::ProcKey;
use crate::containerd::shim::Shim;
use crate::process_core::epoll::Poller;
use std::time::{Duration, Instant};

/// How long an exit report waits for the process's output sources to end (the first of
/// the two waits of `process_core::exit_output`; this face's Waits then wait for the
/// spools).
pub use crate::process_core::exit_output::OUTPUT_DRAIN_WAIT;
/// How long an exit report waits for the reply of the call that caused it (a runc that
/// hangs in `kill` must not keep the exit from containerd for ever).
const EXIT_HOLD_LIMIT: Duration = crate::containerd::process_table::gate::ENTER_WAIT;

impl Shim {
    /// Queues exits behind any already waiting, after moving what their processes' pipes
    /// hold right now, and reports what may go.
    pub fn queue_exits(&mut self, keys: Vec<ProcKey>, poller: &Poller) {
        let now = Instant::now();
        for key in keys {
            let drain_deadline = self.process_exited(key, now, poller);
            if let Some(p) = self.table.get_mut(key) {
                p.exit_wait = Some(ExitWait {
                    drain_deadline,
                    hold_limit: now + EXIT_HOLD_LIMIT,
                });
                self.table.queue_exit(key);
                self.record_init_exit(key);
            }
        }
        self.flush_exits(now, poller);
    }

    /// An init's exit, known now, goes to its bundle's `exit.json` at the end of this turn
    /// (`Shim::write_exit_records`, after the turn's answers), whether or not it can be
    /// reported yet: when a Kill's `runc kill` is still running (the usual way a container
    /// stops), the file is written while the loop waits for it, not in the turn that
    /// answers the Kill and reports the exit, where the next call would wait for it.
    fn record_init_exit(&mut self, key: ProcKey) {
        let Some(e) = self.table.exited(key) else {
            return;
        };
        if !e.exec_id.is_empty() {
            return;
        }
        self.exit_records
            .push(crate::containerd::shim::ExitToRecord {
                container_id: e.container_id.clone(),
                pid: e.pid,
                record: e.record,
            });
    }

    /// A process exited: its pumps move what its pipes hold and start the grace of its
    /// output. Returns when its exit report stops waiting for the output to drain.
    fn process_exited(&mut self, key: ProcKey, now: Instant, poller: &Poller) -> Instant {
        let grace_over = now + OUTPUT_DRAIN_WAIT;
        let Some(p) = self.table.get_mut(key) else {
            return grace_over;
        };
        if p.pumps.is_empty() {
            return grace_over;
        }
        let ended = p.pumps.exited(poller, now, OUTPUT_DRAIN_WAIT);
        let deadline = p.pumps.drain_deadline().unwrap_or(grace_over);
        self.outputs_ended(key, ended, poller);
        deadline
    }

    /// Reports the queued exits that may go now: the process's output has drained (or
    /// its grace is over) and no call that can cause the exit is inside its gate. Order
    /// is kept within a container (an init's exit never overtakes its execs'); a
    /// container whose exit waits does not hold up another's.
    pub fn flush_exits(&mut self, now: Instant, poller: &Poller) {
        let mut waiting: Vec<&str> = Vec::new();
        let mut ready = Vec::new();
        for (i, key) in self.table.exit_queue().iter().enumerate() {
            let Some(p) = self.table.get(*key) else {
                continue;
            };
            if waiting.contains(&p.container_id.as_str()) {
                continue;
            }
            let Some(w) = p.exit_wait else {
                ready.push(i);
                continue;
            };
            let held = now < w.hold_limit && p.gate.holds_exit();
            let drained = now >= w.drain_deadline || p.open_outputs == 0;
            if held || !drained {
                waiting.push(&p.container_id);
                continue;
            }
            ready.push(i);
        }
        let mut keys = Vec::with_capacity(ready.len());
        for i in ready.into_iter().rev() {
            keys.extend(self.table.unqueue_exit(i));
        }
        keys.reverse();
        if keys.is_empty() {
            return;
        }
        // An OOM kill is counted in the cgroup before the process it killed exits: publish
        // it now, ahead of the exit it caused, not whenever its own wakeup is read (under
        // load that came after the exit on cgroup v2). `check` never blocks.
        for key in &keys {
            let is_init = self.table.get(*key).is_some_and(|p| p.exec_id.is_empty());
            if is_init {
                self.check_oom(*key, poller);
            }
        }
        self.deliver(keys);
    }

    /// When the first queued exit stops waiting.
    pub fn next_exit_deadline(&self) -> Option<Instant> {
        self.table
            .exit_queue()
            .iter()
            .filter_map(|k| self.table.get(*k)?.exit_wait)
            .map(|w| w.drain_deadline.min(w.hold_limit))
            .min()
    }

    /// Reports exits now: TaskExit, then the answers to parked Waits.
    pub fn deliver(&mut self, keys: Vec<ProcKey>) {
        for key in keys {
            let Some(e) = self.table.exited(key) else {
                continue;
            };
            log::debug!(
                "exit container={} exec={} pid={} status={}",
                e.container_id,
                e.exec_id,
                e.pid,
                e.record.code
            );
            self.events.exit(&e);
            if self.table.exit_delivered(key) {
                self.answer_settled_waits(key);
            }
        }
    }

    /// Reports every queued exit at once (the shim is exiting).
    pub fn deliver_all(&mut self) {
        let mut keys = Vec::new();
        while let Some(k) = self.table.unqueue_exit(0) {
            keys.push(k);
        }
        self.deliver(keys);
    }

    /// Registers a container's OOM watcher (made by a worker while its init was known to
    /// be alive) under the init's key, and reports at once what it already counts.
    pub fn watch_oom(
        &mut self,
        init: ProcKey,
        watcher: crate::containerd::cgroups::oom::OomWatcher,
        poller: &Poller,
    ) {
        let Some(id) = self.table.get(init).map(|p| p.container_id.clone()) else {
            return;
        };
        if let Err(e) = poller.add_readable(
            watcher.fd(),
            crate::containerd::shim_loop::fds::ShimFd::Oom(init.0).token(),
        ) {
            log::warn!("no OOM events for {id}: {e}");
            return;
        }
        if let Ok(c) = self.table.container_mut(&id) {
            c.oom = Some(watcher);
        }
        self.check_oom(init, poller);
    }

    /// Registers again the OOM watcher a container's record holds (a restored table: the
    /// new image's poller has never seen it), and reads it once.
    pub fn rewatch_oom(&mut self, init: ProcKey, poller: &Poller) {
        let Some(id) = self.table.get(init).map(|p| p.container_id.clone()) else {
            return;
        };
        let registered = match self.table.container(&id).ok().and_then(|c| c.oom.as_ref()) {
            Some(w) => poller.add_readable(
                w.fd(),
                crate::containerd::shim_loop::fds::ShimFd::Oom(init.0).token(),
            ),
            None => return,
        };
        if let Err(e) = registered {
            log::warn!("no OOM events for {id}: {e}");
            if let Ok(c) = self.table.container_mut(&id) {
                c.oom = None;
            }
            return;
        }
        self.check_oom(init, poller);
    }

    /// Reads a container's OOM counter (on its wakeup, and before its init's exit is
    /// reported); publishes TaskOOM for each new kill. A watcher that fails (its cgroup
    /// is gone) is dropped.
    pub fn check_oom(&mut self, init: ProcKey, poller: &Poller) {
        let Some(id) = self.table.get(init).map(|p| p.container_id.clone()) else {
            return;
        };
        let Ok(c) = self.table.container_mut(&id) else {
            return;
        };
        let Some(watcher) = c.oom.as_mut() else {
            return;
        };
        // After an OOM, check again: the wakeup may also have ended the cgroup (v2: the
        // OOM kill and the exit it caused), and no further wakeup would say so.
        let mut ooms = 0;
        let failed = loop {
            match watcher.check() {
                Ok(true) => ooms += 1,
                Ok(false) => break false,
                Err(_) => break true,
            }
        };
        if failed {
            if let Some(w) = c.oom.take() {
                poller.remove(w.fd());
            }
        }
        for _ in 0..ooms {
            log::info!("container {id} hit its memory limit (OOM)");
            self.events.oom(&id);
        }
    }
}

//! The supervisor's loop: pumps, `winsz`, `control`, signals and the exit; the exit is
//! recorded once the process's output is in the FIFOs (bounded: `process_core::exit_output`),
//! then the linger until a manager has read what is buffered. Every change of the
//! process's life goes through [`super::state::SupervisorState`]; the descriptors follow
//! it.

use super::state::{MonoTime, SupervisorState};
use super::Supervisor;
use crate::process_core::epoll::{Ready, Token};
use crate::process_core::exit_output::{output_at_exit, OutputAtExit};
use crate::process_core::process_stdio::{DeleteLinger, Linger, Stream};
use crate::process_core::tty;
use crate::standalone::control::Request;
use crate::standalone::output_fifo::{close_delivered, DRAIN_GRACE, LINGER_POLL};
use crate::standalone::own_fds::OwnFd;
use crate::standalone::pty_eof;
use fifo::ExitRecord;
use nix::sys::signal::Signal;
use std::io::Read;
use std::os::fd::AsFd;
use std::time::Instant;

/// The process's slot in its pumps' tokens: the supervisor has one.
const SLOT: u32 = 0;
/// Tokens of the winsz and control FIFOs, and of a pea's watch on the outer init.
const WINSZ: Token = OwnFd::Winsz.token();
const CONTROL_FIFO: Token = OwnFd::Control.token();
const OUTER_INIT: Token = OwnFd::OuterInit.token();
const UPGRADE_DOOR: Token = OwnFd::UpgradeDoor.token();

impl Supervisor {
    pub(super) fn register(&mut self) -> std::io::Result<()> {
        let poller = self.base.poller();
        self.stdio.register(poller, SLOT).map_err(|u| u.error)?;
        if let Some(h) = &self.holds {
            poller.add_readable(h.winsz.as_fd(), WINSZ)?;
            poller.add_readable(h.control.as_fd(), CONTROL_FIFO)?;
        }
        if let Some(outer) = self.pea.as_ref().and_then(|p| p.outer.as_ref()) {
            poller.add_readable(outer.as_fd(), OUTER_INIT)?;
        }
        if let Some(d) = &self.door {
            d.register(poller)?;
        }
        Ok(())
    }

    /// The event loop; returns when the process has exited and its output is delivered
    /// (or a termination signal came after the exit).
    pub(super) fn run(&mut self) {
        // Output that arrived before the loop.
        let ended = self.stdio.run_all(self.base.poller());
        if ended.contains(Stream::Stdin) {
            self.on_stdin_done();
        }
        let mut events: Vec<Ready> = Vec::new();
        while !self.state.is_done() {
            let linger = (!self.state.is_running()).then(|| Instant::now() + LINGER_POLL);
            let door = self.door.as_ref().and_then(|d| d.wake_at());
            let deadline = [linger, self.stdio.next_recheck(), door]
                .into_iter()
                .flatten()
                .min();
            if self.base.wait(deadline, &mut events).is_err() {
                break;
            }
            for ev in &events {
                match ev.token {
                    Token::Signals => self.on_signals(),
                    WINSZ => self.on_winsz(),
                    CONTROL_FIFO => self.on_control(),
                    OUTER_INIT => self.on_outer_exit(),
                    Token::Stdio(_, stream) => self.run_stream(stream),
                    UPGRADE_DOOR => self.on_door(),
                    other => {
                        if let Some(n) = OwnFd::UpgradeCaller.index_of(other) {
                            self.on_asker(n);
                        }
                    }
                }
            }
            for stream in self.stdio.due_rechecks(Instant::now()) {
                self.run_stream(stream);
            }
            if let Some(d) = &mut self.door {
                d.tick(self.base.poller(), Instant::now());
            }
            self.drops.update(&self.stdio);
            self.record_when_delivered();
            if self.state.is_recorded() && self.linger_done() {
                // Exited | Stopping → Done: the only way out of the linger.
                let _ = self.state.finish();
            }
            // Between two turns, nothing half done: the moment to hand over. Returns only
            // if the supervisor did not move.
            if let Some(asked) = self.door.as_mut().and_then(|d| d.take_asked()) {
                self.upgrade(asked);
            }
        }
        self.drops.finish(&self.stdio);
    }

    fn run_stream(&mut self, stream: Stream) {
        let ended = self.stdio.run(self.base.poller(), stream);
        if ended.is_some() && stream == Stream::Stdin {
            self.on_stdin_done();
        }
    }

    /// The stdin pump has ended (dropping it closed the process's stdin pipe). When that
    /// was a manager's `close-stdin`, a tty process gets its EOF character: its pty stays.
    fn on_stdin_done(&mut self) {
        let master = self.holds.as_ref().and_then(|h| h.master.as_ref());
        if let (true, Some(m)) = (self.state.stdin_closing(), master) {
            // Best effort: a full input queue (the process reads nothing) only loses an
            // EOF the process was never going to read.
            let _ = pty_eof::send(m.as_fd());
        }
    }

    /// The outer container's init has exited: a pea does not outlive it. (One sharing
    /// its pid namespace was killed with it already.)
    fn on_outer_exit(&mut self) {
        let Some(outer) = self.pea.as_mut().and_then(|p| p.outer.take()) else {
            return;
        };
        self.base.poller().remove(outer.as_fd());
        if self.state.is_running() {
            let pid = self.state.pid();
            log::info!("the container's init exited: killing pea {pid}");
            // Our unreaped child: the pid is still its own.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    fn on_control(&mut self) {
        let Some(h) = &mut self.holds else { return };
        let mut buf = [0u8; 256];
        let mut requests = Vec::new();
        loop {
            match h.control.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => requests.extend(h.requests.push(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        for request in requests {
            match request {
                Request::CloseStdin => self.close_stdin(),
            }
        }
    }

    /// Lets go of the `stdin` FIFO: the pump reaches EOF once no manager writes to it
    /// either and everything written has been moved on. A repeated request changes
    /// nothing (the state refuses it).
    fn close_stdin(&mut self) {
        if self.state.close_stdin().is_err() {
            return;
        }
        if let Some(h) = &mut self.holds {
            h.stdin = None;
        }
        // No edge will come if there was no other writer: look now.
        self.run_stream(Stream::Stdin);
    }

    fn on_winsz(&mut self) {
        let Some(h) = &mut self.holds else { return };
        let mut buf = [0u8; 1024];
        loop {
            match h.winsz.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    for size in h.decoder.push(&buf[..n]).into_iter().flatten() {
                        if let Some(m) = &h.master {
                            let _ = tty::resize(m.as_fd(), size.columns, size.rows);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }

    fn on_door(&mut self) {
        if let Some(d) = &mut self.door {
            d.on_listener(self.base.poller());
        }
    }

    fn on_asker(&mut self, n: u32) {
        if let Some(d) = &mut self.door {
            d.on_waiting(self.base.poller(), n);
        }
    }

    pub(super) fn on_signals(&mut self) {
        for sig in self.base.signals() {
            // A termination signal is ignored while the process lives (the supervisor
            // outlives its manager), and only the first one after the exit counts: the
            // state refuses the others. One while the exit waits for the output (a
            // `delete`: nobody is reading for the exit any more) records it at once.
            if sig != Signal::SIGCHLD {
                if self.state.exiting_since().is_some() {
                    self.record_exit();
                }
                let _ = self.state.stop(MonoTime::now());
            }
        }
        let pid = self.state.pid();
        let running = self.state.is_running();
        let keeper = self.keeper.as_ref();
        // The keeper learns the status before the process is reaped: should we die
        // between the two, it still has it.
        let exits = self.reaper.reap_announced(|exit| {
            if exit.pid == pid && running {
                if let Some(Err(e)) = keeper.map(|k| k.exited(&exit.record())) {
                    log::warn!("cannot tell the keeper the exit of {pid}: {e}");
                }
            }
        });
        for exit in exits {
            if exit.pid == pid && self.state.is_running() {
                self.on_exit(exit.record());
            }
        }
    }

    /// The process exited (reaped, its status told to the keeper): stop taking input,
    /// move what its output holds and start the wait for the rest; the exit is recorded
    /// once the output is in the FIFOs ([`Supervisor::record_when_delivered`]).
    fn on_exit(&mut self, record: ExitRecord) {
        let poller = self.base.poller();
        // Move what is already in the process pipes before anything else (saves a
        // wakeup), and start the grace its output gets.
        self.stdio.exited(poller, Instant::now(), DRAIN_GRACE);
        self.stdio.close(poller, Stream::Stdin);
        if let Some(pea) = self.pea.take() {
            if let Some(outer) = &pea.outer {
                poller.remove(outer.as_fd());
            }
            // Before `exitcode`: once a waiter sees the exit, the pea's runc container
            // (state, cgroups, what is left in them) is gone too.
            match pea.runc.delete(&pea.runc_id, true) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => log::warn!("cannot delete the pea's runc container: {e}"),
            }
        }
        // Running → Exiting: `exit` stays held until the output is delivered.
        let _ = self.state.reaped(record, MonoTime::now());
    }

    /// While the exit waits for the output: records it once every output source has
    /// ended and everything read from it is in its FIFO, or once the bounded wait for
    /// that is over (`process_core::exit_output`, the rule both faces report by).
    fn record_when_delivered(&mut self) {
        let Some(since) = self.state.exiting_since() else {
            return;
        };
        let now = Instant::now();
        let reaped = since.to_instant(now, MonoTime::now());
        match output_at_exit(&self.stdio, reaped, now) {
            OutputAtExit::Wait(_) => return,
            OutputAtExit::Delivered => {}
            OutputAtExit::Undelivered { sources, spooled } => log::info!(
                "exit of {} recorded with output still on its way ({sources} open sources, \
                 {spooled} bytes spooled): it follows",
                self.state.pid()
            ),
        }
        self.record_exit();
    }

    /// Exiting → Exited: writes `exitcode`, closes `exit`, lets the keeper go.
    fn record_exit(&mut self) {
        let SupervisorState::Exiting { exit, .. } = self.state else {
            return;
        };
        let poller = self.base.poller();
        let _ = self.dir.write_exit(&exit);
        // After `exitcode`: `exit` reaches EOF (once the keeper lets go of it too), and a
        // manager whose request finds no reader on `control` knows the process has
        // exited.
        if let Some(h) = self.holds.take() {
            poller.remove(h.winsz.as_fd());
            poller.remove(h.control.as_fd());
        }
        if let Some(k) = self.keeper.take() {
            if let Err(e) = k.recorded() {
                log::warn!("cannot let the keeper go: {e}");
            }
        }
        // Exiting → Exited: the holds above are gone with it.
        let _ = self.state.recorded();
    }

    /// After the exit: closes each FIFO once its pump has finished (or, after the grace,
    /// been abandoned with an idle source) and a manager has read everything in it. True
    /// when all are closed, or after a termination signal once no manager is taking
    /// spooled output (bounded).
    fn linger_done(&mut self) -> bool {
        if let Some(since) = self.state.stopping_since() {
            let now = Instant::now();
            let linger = DeleteLinger::new(since.to_instant(now, MonoTime::now()));
            match linger.check(self.stdio.backlog(), now) {
                Linger::Wait(_) => {}
                Linger::Drained => return true,
                Linger::Drop { spooled, why } => {
                    log::warn!("delete: {spooled} spooled bytes dropped unread ({why})");
                    return true;
                }
            }
        }
        close_delivered(
            &mut self.outputs,
            &mut self.stdio,
            self.base.poller(),
            Instant::now(),
        )
    }
}

//! The keeper's life: one small loop, single-threaded, over the link to its supervisor,
//! a signalfd (SIGCHLD: the supervisor, and once it is gone the process; termination
//! signals) and, once it has taken the process over, the process's output pumps.
//!
//! ```text
//!  Launching ──handover──► Standby{pid} ──exited──► Standby{pid, told}
//!     │                      │    │                    │    │
//!     │ supervisor died      │    └──recorded──► leave └────┴──supervisor died──► Draining
//!     ▼                      │                                (writes the told exit)
//!  leave with its status     └──supervisor died──► Keeping{pid} ──process exited──► Exiting
//!                                                 (delivers its output)
//!  Exiting ──output in the FIFOs (bounded)──► Draining (writes exitcode, closes exit)
//!  Draining ──every FIFO read (or a termination signal)──► leave
//! ```
//!
//! `Exiting` is the supervisor's rule (`process_core::exit_output`): the exit is recorded
//! once the process's output sources have ended and what they gave is in the FIFOs, or
//! the bounded wait for that is over. The keeper has no spool, so the wait is for the
//! sources only (at most `OUTPUT_DRAIN_WAIT`).
//!
//! While the supervisor lives the keeper only listens: the supervisor does everything as
//! if there were no keeper, and its last message (`Recorded`) lets the keeper go. When the
//! supervisor dies, the kernel has reparented its children to the keeper (a child
//! subreaper, and the supervisor's parent) before it tells the keeper of the death; so the
//! process, running or a zombie, is the keeper's to reap, and nobody else's.

use super::link::{self, Message, Output, Received, Role};
use crate::process_core::epoll::{Ready, Token};
use crate::process_core::event_base::EventBase;
use crate::process_core::exit_output::{output_at_exit, OutputAtExit};
use crate::process_core::process_stdio::{ProcessStdio, Stream};
use crate::process_core::pump::{Direction, Pump};
use crate::process_core::reaper::{ChildExit, Reaper};
use crate::process_core::signals;
use crate::standalone::output_fifo::{close_delivered, OutputFifo, DRAIN_GRACE, LINGER_POLL};
use crate::standalone::own_fds::OwnFd;
use crate::standalone::supervisor_log;
use fifo::{ExitRecord, PinnedDir, ProcessDir};
use nix::sys::signal::Signal;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Tokens of the keeper's own descriptors.
const LINK: Token = OwnFd::KeeperLink.token();
const OUTER_INIT: Token = OwnFd::OuterInit.token();
/// The process's slot in its pumps' tokens.
const SLOT: u32 = 0;

/// Where the keeper is in its life (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The supervisor is starting the process: nothing handed over yet.
    Launching,
    /// The supervisor runs process `pid`; `told`: the exit it reported, unreaped.
    Standby { pid: i32, told: Option<ExitRecord> },
    /// The supervisor is gone: the keeper delivers the process's output and waits for it.
    Keeping { pid: i32 },
    /// The process exited with `exit` (reaped, or told by the supervisor) at `since`: its
    /// output is on its way to the FIFOs, `exit` is still held.
    Exiting { exit: ExitRecord, since: Instant },
    /// The keeper has written `exitcode` and closed `exit`; the output is delivered until
    /// a manager has read it.
    Draining,
}

/// What the supervisor's death means in `stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDeath {
    /// The process never started (or was never handed over): leave as the supervisor did.
    Leave,
    /// The supervisor told the exit and died before recording it: record it now.
    Record(ExitRecord),
    /// The process runs on: take it over.
    TakeOver(i32),
    /// Nothing left to do for it.
    Nothing,
}

impl Stage {
    fn on_supervisor_death(self) -> OnDeath {
        match self {
            Stage::Launching => OnDeath::Leave,
            Stage::Standby {
                told: Some(exit), ..
            } => OnDeath::Record(exit),
            Stage::Standby { pid, told: None } => OnDeath::TakeOver(pid),
            Stage::Keeping { .. } | Stage::Exiting { .. } | Stage::Draining => OnDeath::Nothing,
        }
    }

    /// The pid whose exit the keeper records (once it is the keeper's child).
    fn process(self) -> Option<i32> {
        match self {
            Stage::Standby { pid, .. } | Stage::Keeping { pid } => Some(pid),
            Stage::Launching | Stage::Exiting { .. } | Stage::Draining => None,
        }
    }
}

/// What the supervisor handed over.
#[derive(Debug, Default)]
struct Kept {
    dir: Option<(PinnedDir, ProcessDir)>,
    exit: Option<File>,
    sources: [Option<OwnedFd>; 2],
    outputs: [OutputFifo; 2],
    outer: Option<OwnedFd>,
}

impl Kept {
    fn from_handover(roles: &[Role], fds: Vec<OwnedFd>, origin: &Path) -> Self {
        let mut kept = Kept::default();
        let mut writers: [Option<File>; 2] = [None, None];
        let mut keepalives: [Option<File>; 2] = [None, None];
        for (role, fd) in roles.iter().zip(fds) {
            match role {
                Role::Dir => kept.dir = pinned_dir(fd, origin),
                Role::Exit => kept.exit = Some(File::from(fd)),
                Role::Source(o) => kept.sources[o.index()] = Some(fd),
                Role::Fifo(o) => writers[o.index()] = Some(File::from(fd)),
                Role::Keepalive(o) => keepalives[o.index()] = Some(File::from(fd)),
                Role::OuterInit => kept.outer = Some(fd),
            }
        }
        for o in Output::BOTH {
            kept.outputs[o.index()] =
                OutputFifo::from_parts(writers[o.index()].take(), keepalives[o.index()].take());
        }
        kept
    }
}

/// The process directory handed over as a descriptor, named through ours.
fn pinned_dir(fd: OwnedFd, origin: &Path) -> Option<(PinnedDir, ProcessDir)> {
    let pinned = PinnedDir::from_file(File::from(fd), origin).ok()?;
    let dir = ProcessDir::from_path(pinned.path()).ok()?;
    Some((pinned, dir))
}

/// Whether `pid` is a child of ours that has not been reaped (running or a zombie).
fn is_our_child(pid: i32) -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    waitid(Id::Pid(nix::unistd::Pid::from_raw(pid)), flags).is_ok()
}

/// The keeper.
struct Keeper {
    base: EventBase,
    reaper: Reaper,
    link: Option<OwnedFd>,
    supervisor: i32,
    origin: PathBuf,
    stage: Stage,
    kept: Kept,
    stdio: ProcessStdio,
    /// Set when the keeper is done: its exit code.
    leave: Option<i32>,
}

/// Runs the keeper until it is done; returns its exit code (the supervisor's, when it
/// failed before handing anything over).
pub(super) fn keep(link: OwnedFd, supervisor: i32, origin: PathBuf) -> i32 {
    let base = match EventBase::new(&signals::handled()) {
        Ok(b) => b,
        // Without a loop the keeper can keep nothing: it goes, the supervisor stays.
        Err(_) => return 1,
    };
    if base.poller().add_readable(link.as_fd(), LINK).is_err() {
        return 1;
    }
    let mut keeper = Keeper {
        base,
        reaper: Reaper::new(),
        link: Some(link),
        supervisor,
        origin,
        stage: Stage::Launching,
        kept: Kept::default(),
        stdio: ProcessStdio::default(),
        leave: None,
    };
    keeper.run()
}

impl Keeper {
    fn run(&mut self) -> i32 {
        // A supervisor that died before our signalfd existed sent no SIGCHLD we can read.
        self.on_children();
        let mut events: Vec<Ready> = Vec::new();
        loop {
            if let Some(code) = self.leave {
                return code;
            }
            let deadline = matches!(self.stage, Stage::Exiting { .. } | Stage::Draining)
                .then(|| Instant::now() + LINGER_POLL);
            if self.base.wait(deadline, &mut events).is_err() {
                return 1;
            }
            for ev in &events {
                match ev.token {
                    Token::Signals => self.on_signals(),
                    LINK => self.on_link(),
                    OUTER_INIT => self.on_outer_exit(),
                    Token::Stdio(_, stream) => {
                        self.stdio.run(self.base.poller(), stream);
                    }
                    _ => {}
                }
            }
            self.record_when_delivered();
            if self.stage == Stage::Draining
                && self.leave.is_none()
                && close_delivered(
                    &mut self.kept.outputs,
                    &mut self.stdio,
                    self.base.poller(),
                    Instant::now(),
                )
            {
                self.leave = Some(0);
            }
        }
    }

    fn on_signals(&mut self) {
        for sig in self.base.signals() {
            match sig {
                Signal::SIGCHLD => self.on_children(),
                // As the supervisor: ignored while the process lives; after its exit they
                // end the wait for a reader (`delete`), dropping what nobody read (an
                // exit still waiting for its output is recorded first).
                _ if matches!(self.stage, Stage::Exiting { .. }) => {
                    self.write_record();
                    self.leave = Some(0);
                }
                _ if self.stage == Stage::Draining => self.leave = Some(0),
                _ => {}
            }
        }
    }

    fn on_children(&mut self) {
        for exit in self.reaper.reap() {
            if exit.pid == self.supervisor {
                self.on_supervisor_death(exit);
            } else if Some(exit.pid) == self.stage.process() {
                // Ours to reap only once the supervisor is dead (reaped in this batch or
                // the next): it was reparented to us.
                self.take_over();
                self.record(exit.record());
            }
        }
    }

    fn on_supervisor_death(&mut self, exit: ChildExit) {
        // What it sent before it died is still queued: read it before deciding.
        self.on_link();
        if self.leave.is_some() {
            return;
        }
        let died = exit.record().code;
        match self.stage.on_supervisor_death() {
            OnDeath::Leave => self.leave = Some(died),
            OnDeath::Record(told) => {
                log::warn!(
                    "the supervisor (pid {}) died ({died}) after its process exited ({}): \
                     its keeper records the exit",
                    exit.pid,
                    told.code
                );
                self.take_over();
                self.record(told);
            }
            OnDeath::TakeOver(pid) if is_our_child(pid) => {
                log::warn!(
                    "the supervisor (pid {}) died ({died}): its keeper delivers the output \
                     of process {pid} and records its exit",
                    exit.pid
                );
                self.take_over();
                self.stage = Stage::Keeping { pid };
            }
            OnDeath::TakeOver(pid) => {
                // Reaped by the supervisor without a word (it tells before it reaps, so
                // this is no path of ours): the status is gone, and that is recorded.
                log::warn!(
                    "the supervisor (pid {}) died ({died}) and process {pid} is gone: its \
                     exit status is lost",
                    exit.pid
                );
                self.take_over();
                self.record(ExitRecord {
                    code: fifo::UNKNOWN_EXIT_CODE,
                    exited_at: std::time::SystemTime::now(),
                });
            }
            OnDeath::Nothing => {}
        }
    }

    /// The supervisor is gone: its link too, and the process's output is ours to move.
    fn take_over(&mut self) {
        if let Some(link) = self.link.take() {
            self.base.poller().remove(link.as_fd());
        }
        if !self.stdio.is_empty() {
            return;
        }
        for (stream, o) in Stream::OUTPUTS.into_iter().zip(Output::BOTH) {
            let Some(src) = self.kept.sources[o.index()].take() else {
                continue;
            };
            let pump = self.kept.outputs[o.index()]
                .sink()
                .ok()
                .and_then(|sink| Pump::new(Direction::Output, src, sink.dst, None).ok());
            if let Some(pump) = pump {
                self.stdio.add(stream, pump);
            }
        }
        if let Err(e) = self.stdio.register(self.base.poller(), SLOT) {
            log::warn!("keeper: output not delivered: {}", e.error);
        }
        self.stdio.run_all(self.base.poller());
        if let Some(outer) = &self.kept.outer {
            let _ = self.base.poller().add_readable(outer.as_fd(), OUTER_INIT);
        }
    }

    /// The process exited with `exit`: its output goes on to the FIFOs, and the exit is
    /// recorded once it is there ([`Keeper::record_when_delivered`]).
    fn record(&mut self, exit: ExitRecord) {
        if let Some(outer) = self.kept.outer.take() {
            self.base.poller().remove(outer.as_fd());
        }
        let now = Instant::now();
        self.stdio.exited(self.base.poller(), now, DRAIN_GRACE);
        self.stage = Stage::Exiting { exit, since: now };
        self.record_when_delivered();
    }

    /// In `Exiting`: records the exit once the output is in the FIFOs, or the bounded
    /// wait for it is over (the supervisor's rule, `process_core::exit_output`).
    fn record_when_delivered(&mut self) {
        let Stage::Exiting { since, .. } = self.stage else {
            return;
        };
        match output_at_exit(&self.stdio, since, Instant::now()) {
            OutputAtExit::Wait(_) => {}
            OutputAtExit::Delivered => self.write_record(),
            OutputAtExit::Undelivered { sources, .. } => {
                log::info!("keeper: exit recorded with {sources} output sources still open");
                self.write_record();
            }
        }
    }

    /// Writes `exitcode` (the one atomic write, `fifo::ProcessDir::write_exit`), then
    /// closes `exit`: a waiter sees EOF only with the record in place. `Exiting` →
    /// `Draining`.
    fn write_record(&mut self) {
        let Stage::Exiting { exit, .. } = self.stage else {
            return;
        };
        match &self.kept.dir {
            Some((_, dir)) => {
                if let Err(e) = dir.write_exit(&exit) {
                    log::warn!("keeper: cannot write the exit code {}: {e}", exit.code);
                }
            }
            None => log::warn!("keeper: no process directory to record exit {}", exit.code),
        }
        self.kept.exit = None;
        self.stage = Stage::Draining;
    }

    /// A pea's outer init has exited: the pea does not outlive it (the supervisor's rule).
    fn on_outer_exit(&mut self) {
        if let Some(outer) = self.kept.outer.take() {
            self.base.poller().remove(outer.as_fd());
        }
        if let Stage::Keeping { pid } = self.stage {
            log::warn!("keeper: the container's init exited: killing pea {pid}");
            // Our unreaped child: the pid is still its own.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    fn on_link(&mut self) {
        loop {
            let Some(link) = &self.link else { return };
            match link::receive(link.as_fd()) {
                Ok(Received::Nothing) => return,
                Ok(Received::Message(msg, fds)) => self.on_message(msg, fds),
                // The supervisor has gone (or closed the link): its SIGCHLD says the rest.
                Ok(Received::Closed) | Err(link::LinkError::Io(_)) => {
                    if let Some(link) = self.link.take() {
                        self.base.poller().remove(link.as_fd());
                    }
                    return;
                }
                Err(e) => log::warn!("keeper: {e}"),
            }
        }
    }

    fn on_message(&mut self, msg: Message, fds: Vec<OwnedFd>) {
        match (msg, self.stage) {
            (Message::Handover { pid, roles }, Stage::Launching) => {
                self.kept = Kept::from_handover(&roles, fds, &self.origin);
                if let Some((pinned, _)) = &self.kept.dir {
                    supervisor_log::install(pinned.path(), &self.origin);
                }
                self.stage = Stage::Standby { pid, told: None };
            }
            (Message::Exited { exit }, Stage::Standby { pid, told: None }) => {
                self.stage = Stage::Standby {
                    pid,
                    told: Some(exit),
                };
            }
            (Message::Recorded, Stage::Standby { .. }) => self.leave = Some(0),
            // The supervisor recorded the exit and died before its message was read: the
            // keeper has taken over the delivery of the rest.
            (Message::Recorded, Stage::Exiting { .. } | Stage::Draining) => {}
            (msg, stage) => log::warn!("keeper: {msg:?} is out of place in {stage:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn what_the_supervisors_death_means_in_each_stage() {
        let exit = ExitRecord {
            code: 7,
            exited_at: SystemTime::UNIX_EPOCH,
        };
        let cases = [
            (Stage::Launching, OnDeath::Leave),
            (Stage::Standby { pid: 5, told: None }, OnDeath::TakeOver(5)),
            (
                Stage::Standby {
                    pid: 5,
                    told: Some(exit),
                },
                OnDeath::Record(exit),
            ),
            (Stage::Keeping { pid: 5 }, OnDeath::Nothing),
            (
                Stage::Exiting {
                    exit,
                    since: Instant::now(),
                },
                OnDeath::Nothing,
            ),
            (Stage::Draining, OnDeath::Nothing),
        ];
        for (stage, want) in cases {
            assert_eq!(stage.on_supervisor_death(), want, "{stage:?}");
        }
        assert_eq!(Stage::Launching.process(), None);
        assert_eq!(Stage::Keeping { pid: 5 }.process(), Some(5));
        assert_eq!(Stage::Draining.process(), None);
    }
}

//! The supervisor: one resident process per supervised process (the dadoo model).
//!
//! Started by `run`/`exec` as the hidden subcommand `supervise`, detached from its caller
//! (its own session; reparented to init once the caller exits). It
//! 1. opens the process directory's FIFOs without ever blocking: `exit` read-write (held
//!    while the process lives), `stdout`/`stderr` as keep-alive writers (it holds a read
//!    end it never reads, so the process never gets SIGPIPE while no manager is attached),
//!    `stdin`, `winsz` and `control` as read ends plus a held write end (so they never
//!    reach EOF between two managers); `control` (requests such as `close-stdin`, see
//!    [`super::control`]) and, for a tty process, the `tty` marker are created here;
//! 2. starts the process with runc through the core's launch ([`crate::supervisor::launch`]:
//!    `create`+`start` for a container's init, `exec -d` for a process in a running
//!    container, `run -d` for a pea), `--pid-file <dir>/pidfile`, runc's log in
//!    `<dir>/log.json`, through a runc monitor that shares the reaper; until it has
//!    reported, a failure undoes the launch (the container is deleted, the exec killed);
//! 3. reports `started <pid>` (or `error <kind> <message>`) on its stdout, the caller's
//!    readiness pipe, and then runs one epoll loop over the stdio pumps, the `winsz` and
//!    `control` streams and a signalfd;
//! 4. when the process exits: writes `exitcode` atomically, closes `exit` (readers see
//!    EOF), and stays until the output it buffered has been read by a manager — then it
//!    closes the FIFOs' write ends (an attached manager sees EOF) and exits.
//!
//! The launch, the loop's base, the process's pipes or pty, its pumps and its output's
//! drain after the exit are the shared core's ([`crate::supervisor`]: `launch`,
//! `event_base`, `wiring`, `process_stdio`). What is this face's own: the FIFOs are held apart from the pumps and
//! closed only once a manager has read what they hold (the containerd face's FIFOs are
//! containerd's, and it learns of the exit from an event, not from EOF), and the exit is
//! the one pid this supervisor started (no process table: nothing to hold back or
//! reorder).
//!
//! `close-stdin` drops the held write end of `stdin`: once every manager has closed its
//! end too, the stdin pump drains what they wrote and reaches EOF, which closes the
//! process's stdin pipe (a tty process is sent its EOF character instead, [`pty_eof`]).
//!
//! SIGTERM, SIGINT and SIGHUP are ignored while the process lives (the supervisor
//! survives its manager); after the exit they end the wait for a reader (`delete` uses
//! this), dropping whatever output nobody read — once a manager that is taking spooled
//! output has it, or has stopped, or after 10 s (the shared core's `DeleteLinger`).

//!
//! Files: `plan` (what to supervise: the command line both ways), `fifos` (the process
//! directory's FIFOs, held apart from the pumps), `start` (FIFOs, launch, the supervisor
//! value), `event_loop` (the loop until the exit and the linger after it).

mod event_loop;
mod fifos;
mod plan;
mod start;

pub use plan::{Kind, Plan};

use super::control::{self, Request, CONTROL};
use super::depot::{Depot, SUPERVISOR_PID, TTY_MARKER};
use super::errors::{CliError, CliResult};
use super::io_owner::IoOwner;
use super::spool_flags::{self, SpoolFlags};
use super::{keeper, pea, pty_eof, supervisor_log};
use crate::supervisor::epoll::{Ready, Token};
use crate::supervisor::event_base::EventBase;
use crate::supervisor::launch::{launch, ContainerFlags, Launch, LaunchError, LaunchIo};
use crate::supervisor::pidfd;
use crate::supervisor::process_stdio::{DeleteLinger, Linger, ProcessStdio, Stream};
use crate::supervisor::reaper::Reaper;
use crate::supervisor::wiring::{self, PipeOptions, Sink};
use crate::supervisor::{fionread, signals, tty};
use fifo::{ExitRecord, PinnedDir, ProcessDir, StartRecord, WinszDecoder};
use nix::sys::signal::Signal;
use runc_wrapper::ProcessIo;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Mode of the files the supervisor writes (`supervisor.pid`, `tty`, `starttime`).
const FILE_MODE: u32 = 0o644;
/// Pipe and FIFO buffers are raised to this (best effort) so output waits for a manager.
pub const PIPE_SIZE: usize = 1 << 20;
/// Longest process spec accepted on stdin.
const MAX_SPEC: u64 = 4 << 20;
/// After the exit, an output source that is still open (a descendant holds it) but idle
/// for this long is abandoned; what it already delivered to the FIFO is still kept.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Poll interval while waiting for a manager to read the remaining output (nothing
/// signals that a FIFO has been emptied).
const LINGER_POLL: Duration = Duration::from_millis(100);

/// The process's slot in its pumps' tokens: the supervisor has one.
const SLOT: u32 = 0;
/// Tokens of the winsz and control FIFOs, and of a pea's watch on the outer init.
const WINSZ: u32 = 0;
const CONTROL_FIFO: u32 = 1;
const OUTER_INIT: u32 = 2;

/// Entry point of the hidden `supervise` subcommand; returns the exit code.
pub fn main(plan: Plan) -> u8 {
    // Our own session: the caller's terminal and process group signals do not reach us.
    let _ = nix::unistd::setsid();
    // What runc creates in the process directory (`pidfile`, `log.json`) is not left to
    // the caller's umask: under 000 it would be writable by a manager that may traverse
    // the directory (`--io-gid`), and `kill` trusts `pidfile`.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let _ = std::env::set_current_dir("/");
    let mut ready = std::io::stdout();
    let setup = (|| -> CliResult<(Supervisor, i32)> {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| CliError::Failed(format!("subreaper: {e}")))?;
        let base = EventBase::new(&signals::handled())
            .map_err(|e| CliError::Failed(format!("signalfd: {e}")))?;
        let spec = match plan.kind {
            Kind::Exec | Kind::Pea { .. } => {
                let mut spec = Vec::new();
                std::io::stdin()
                    .take(MAX_SPEC)
                    .read_to_end(&mut spec)
                    .map_err(|e| CliError::Failed(format!("read process spec: {e}")))?;
                spec
            }
            Kind::Run { .. } => Vec::new(),
        };
        start::start(&plan, &spec, base)
    })();
    match setup {
        Ok((mut sup, pid)) => {
            let _ = writeln!(ready, "started {pid}");
            let _ = ready.flush();
            detach_stdio();
            sup.run();
            0
        }
        Err(e) => {
            let msg = e.to_string().replace('\n', " ");
            let _ = writeln!(ready, "error {} {msg}", e.kind());
            let _ = ready.flush();
            1
        }
    }
}

/// Points stdin, stdout and stderr at /dev/null: closes the caller's readiness pipe.
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
}

/// One output FIFO: its write end, held apart from the pump (which writes to a copy) so
/// the FIFO stays open until a manager has read what the pump delivered, and the
/// keep-alive read end.
#[derive(Debug, Default)]
struct OutputFifo {
    writer: Option<File>,
    keepalive: Option<File>,
}

/// The running supervisor.
#[derive(Debug)]
struct Supervisor {
    base: EventBase,
    reaper: Reaper,
    /// The process directory, held open: `dir`'s path resolves through it.
    _pinned: PinnedDir,
    dir: ProcessDir,
    pid: i32,
    exit_hold: Option<File>,
    /// The process's pumps (stdin from the `stdin` FIFO; stdout and stderr, or the pty's
    /// output as stdout, into `outputs`).
    stdio: ProcessStdio,
    /// The `stdout` and `stderr` FIFOs.
    outputs: [OutputFifo; 2],
    stdin_hold: Option<File>,
    winsz: Option<File>,
    winsz_hold: Option<File>,
    decoder: WinszDecoder,
    control: Option<File>,
    control_hold: Option<File>,
    requests: control::Decoder,
    /// A manager asked to close stdin: the stdin pump's end is the process's EOF.
    stdin_closing: bool,
    master: Option<File>,
    /// Set for a pea: what ties it to its runc container and to the outer init.
    pea: Option<PeaTies>,
    exited: bool,
    /// A termination signal after the exit: the supervisor goes once the spooled output
    /// a manager is taking has been taken (see `linger_done`).
    stop: Option<DeleteLinger>,
    /// What the output spools dropped, reported in the process directory.
    drops: spool_flags::DropReport,
}

/// A pea's runc container, deleted when the pea exits, and the outer init, whose exit
/// kills the pea.
#[derive(Debug)]
struct PeaTies {
    runc: runc_wrapper::Runc,
    runc_id: String,
    /// A pidfd of the outer container's init; readable once it has exited.
    outer: Option<OwnedFd>,
}

/// The FIFO-side handles opened before the process starts.
struct Fifos {
    exit_hold: File,
    outputs: [OutputFifo; 2],
    stdin_r: File,
    stdin_hold: File,
    winsz: File,
    winsz_hold: File,
    control: File,
    control_hold: File,
}

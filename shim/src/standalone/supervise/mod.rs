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
//! 2. starts the process with runc through the core's launch ([`crate::process_core::launch`]:
//!    `create`+`start` for a container's init, `exec -d` for a process in a running
//!    container, `run -d` for a pea), `--pid-file <dir>/pidfile`, runc's log in
//!    `<dir>/log.json`, through a runc monitor that shares the reaper; until it has
//!    reported, a failure undoes the launch (the container is deleted, the exec killed);
//! 3. reports `started <pid>` (or `error <kind> <message>`) on its stdout, the caller's
//!    readiness pipe, and then runs one epoll loop over the stdio pumps, the `winsz` and
//!    `control` streams and a signalfd;
//! 4. when the process exits: once its output is in the FIFOs (every source at its end,
//!    everything read from it and spooled written; bounded, `process_core::exit_output`),
//!    writes `exitcode` atomically, closes `exit` (readers see EOF), and stays until the
//!    output it buffered has been read by a manager — then it closes the FIFOs' write
//!    ends (an attached manager sees EOF) and exits.
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
//! process's stdin pipe (a tty process is sent its EOF character instead, [`super::pty_eof`]).
//!
//! SIGTERM, SIGINT and SIGHUP are ignored while the process lives (the supervisor
//! survives its manager); after the exit they end the wait for a reader (`delete` uses
//! this), dropping whatever output nobody read — once a manager that is taking spooled
//! output has it, or has stopped, or after 10 s (the shared core's `DeleteLinger`).
//!
//! The supervisor is the child of its keeper ([`super::keeper`]), forked first thing:
//! should the supervisor be SIGKILLed, the keeper takes the process over and records its
//! exit. While the supervisor lives, it hands the keeper what it needs once the process
//! runs, tells it the exit status before reaping the process, and lets it go once
//! `exitcode` is written.
//!
//! Root may ask a supervisor, over `upgrade.sock` in its process directory, to move onto
//! another binary (a live upgrade, `crate::standalone::upgrade`): the same pid executes
//! it and carries its whole state across; the process, the keeper and an attached
//! manager notice nothing.
//!
//! Files: `plan` (what to supervise: the command line both ways), `state` (the
//! supervisor's life: one enum, its only transitions), `fifos` (the process directory's
//! FIFOs, held apart from the pumps), `start` (FIFOs, launch, handover to the keeper, the
//! supervisor value), `event_loop` (the loop until the exit and the linger after it),
//! `door` (`upgrade.sock` in the loop), `hand_over` (a live upgrade, the old image's
//! side: save, dry run, `execve`), `resume` (the new image's side).

mod door;
mod event_loop;
mod fifos;
mod hand_over;
mod plan;
mod resume;
mod start;
pub mod state;

pub use plan::{Kind, Plan};

use super::control;
use super::errors::{CliError, CliResult};
use super::keeper::{self, KeeperLink};
use super::output_fifo::OutputFifo;
use super::spool_flags;
use crate::process_core::event_base::EventBase;
use crate::process_core::process_stdio::ProcessStdio;
use crate::process_core::reaper::Reaper;
use crate::process_core::signals;
use fifo::{PinnedDir, ProcessDir, WinszDecoder};
use state::SupervisorState;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

/// Longest process spec accepted on stdin.
const MAX_SPEC: u64 = 4 << 20;

/// Entry point of the hidden `supervise` subcommand; returns the exit code.
pub fn main(plan: Plan) -> u8 {
    // A live upgrade executed this image (or executed the old one again): serve on from
    // the state the previous image left. Session, umask, cwd, subreaper and blocked
    // signals are as that image set them: they survive `execve`.
    if let Some(taken) = crate::standalone::upgrade::saved::from_env() {
        return resume::main(&plan, taken);
    }
    // Our own session: the caller's terminal and process group signals do not reach us.
    let _ = nix::unistd::setsid();
    // What runc creates in the process directory (`pidfile`, `log.json`) is not left to
    // the caller's umask: under 000 it would be writable by a manager that may traverse
    // the directory (`--io-gid`), and `kill` trusts `pidfile`.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let _ = std::env::set_current_dir("/");
    // First, while we are one small thread: the keeper, our parent from here on (this
    // returns in the child, the supervisor).
    let keeper = keeper::fork_keeper(&plan.dir);
    // A session of our own too (the keeper leads the first): neither the caller's nor
    // the keeper's process group signals reach us.
    let _ = nix::unistd::setsid();
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
        start::start(&plan, &spec, base, keeper)
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
pub(crate) fn detach_stdio() {
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

/// The running supervisor.
#[derive(Debug)]
struct Supervisor {
    base: EventBase,
    reaper: Reaper,
    /// The process directory, held open: `dir`'s path resolves through it.
    pinned: PinnedDir,
    dir: ProcessDir,
    /// Where the process is in its life; the descriptors below follow it.
    state: SupervisorState,
    /// The keeper (our parent), if one could be forked.
    keeper: Option<KeeperLink>,
    /// The process's pumps (stdin from the `stdin` FIFO; stdout and stderr, or the pty's
    /// output as stdout, into `outputs`).
    stdio: ProcessStdio,
    /// The `stdout` and `stderr` FIFOs.
    outputs: [OutputFifo; 2],
    /// What is held until the exit is recorded (`Some` exactly in `Running` and
    /// `Exiting`).
    holds: Option<RunningHolds>,
    /// Set for a pea: what ties it to its runc container and to the outer init.
    pea: Option<PeaTies>,
    /// What the output spools dropped, reported in the process directory.
    drops: spool_flags::DropReport,
    /// `upgrade.sock`: root asks here for a live upgrade (`None` if it could not be made).
    door: Option<door::Door>,
    /// The binary the supervisor was started from: what an upgrade moves onto unless the
    /// operator names another (a package manager puts the new binary there).
    started_from: std::path::PathBuf,
}

/// The FIFO ends the supervisor holds while its process runs, and the pty master; all
/// dropped when the exit is recorded.
#[derive(Debug)]
struct RunningHolds {
    /// `exit`, read-write: a reader reaches EOF once it is closed (after `exitcode`).
    exit: File,
    /// A write end of `stdin`, so it never reaches EOF between two managers; dropped by
    /// `close-stdin` (`Some` exactly while the state's stdin is `Held`).
    stdin: Option<File>,
    /// `winsz`: its read end, a held write end, and the decoder of what it carries.
    winsz: File,
    _winsz_hold: File,
    decoder: WinszDecoder,
    /// `control`: its read end, a held write end, and the decoder of its requests.
    control: File,
    _control_hold: File,
    requests: control::Decoder,
    /// The pty master, for a tty process (resizes, the EOF of `close-stdin`).
    master: Option<File>,
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
#[derive(Debug)]
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

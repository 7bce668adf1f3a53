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

/// What to supervise.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A container's init, created from this bundle.
    Run {
        /// The bundle directory.
        bundle: PathBuf,
    },
    /// A process in a running container; its OCI process spec arrives on stdin.
    Exec,
    /// A pea ([`super::pea`]): its own runc container, run from the process directory,
    /// whose `config.json` arrives on stdin; it lives no longer than the outer init.
    Pea {
        /// Its runc container id.
        runc_id: String,
        /// The pid of the outer container's init when `exec` looked (checked again here).
        outer_pid: i32,
        /// The manager's bundle it was made from (recorded in `pea.json`).
        bundle: PathBuf,
    },
}

/// Everything the supervisor is told on its command line.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The global options (runc binary and root).
    pub depot: Depot,
    /// The container.
    pub container: String,
    /// The process directory (already created by the caller).
    pub dir: PathBuf,
    /// Run or exec.
    pub kind: Kind,
    /// Whether the process has a terminal.
    pub tty: bool,
    /// Who the process's stdio belongs to (`--io-uid`/`--io-gid`): it gets `control` too.
    pub io_owner: Option<IoOwner>,
    /// The output spool (`--spool-limit`, `--spool-policy`).
    pub spool: SpoolFlags,
}

impl Plan {
    /// The supervisor's command line (after the binary).
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = vec![
            "supervise".into(),
            "--depot".into(),
            self.depot.root.clone().into(),
            "--runc".into(),
            self.depot.runc_bin.clone().into(),
            "--runc-root".into(),
            self.depot.runc_root.clone().into(),
            "--dir".into(),
            self.dir.clone().into(),
        ];
        match &self.kind {
            Kind::Run { bundle } => {
                a.push("--bundle".into());
                a.push(bundle.clone().into());
            }
            Kind::Exec => a.push("--exec".into()),
            Kind::Pea {
                runc_id,
                outer_pid,
                bundle,
            } => {
                a.push("--pea".into());
                a.push(runc_id.into());
                a.push("--outer-pid".into());
                a.push(outer_pid.to_string().into());
                a.push("--pea-bundle".into());
                a.push(bundle.clone().into());
            }
        }
        if self.tty {
            a.push("--tty".into());
        }
        if let Some(owner) = self.io_owner {
            a.extend(owner.to_args());
        }
        a.extend(self.spool.to_args());
        a.push(self.container.clone().into());
        a
    }
}

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
        start(&plan, &spec, base)
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

impl OutputFifo {
    /// Opens the FIFO at `path` as a keep-alive writer, its buffer raised to
    /// [`PIPE_SIZE`].
    fn open(path: &std::path::Path) -> CliResult<Self> {
        let (writer, keepalive) = fifo::KeepAliveWriter::open(path)
            .map_err(CliError::fifo)?
            .into_parts();
        let _ = fifo::set_pipe_size(&writer, PIPE_SIZE);
        Ok(OutputFifo {
            writer: Some(writer),
            keepalive: Some(keepalive),
        })
    }

    /// Where the pump from the process delivers: a copy of the write end (the keep-alive
    /// read end is held here, not by the pump).
    fn sink(&self) -> CliResult<Sink> {
        let writer = self
            .writer
            .as_ref()
            .ok_or_else(|| CliError::Failed("output FIFO already closed".into()))?;
        let dst = writer
            .try_clone()
            .map_err(|e| CliError::Failed(format!("dup: {e}")))?;
        Ok(Sink::new(dst.into(), None))
    }

    /// Bytes in the FIFO that no manager has read yet.
    fn unread(&self) -> usize {
        self.keepalive
            .as_ref()
            .and_then(|k| fionread::pending(k.as_fd()))
            .unwrap_or(0)
    }

    /// Closes the FIFO: an attached manager reads EOF.
    fn close(&mut self) {
        self.writer = None;
        self.keepalive = None;
    }

    /// Whether the FIFO is closed (everything delivered, or given up).
    fn closed(&self) -> bool {
        self.writer.is_none()
    }
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

fn open_fifos(dir: &ProcessDir, io_owner: Option<IoOwner>) -> CliResult<Fifos> {
    // `exit` first: a `wait` that starts as soon as we report must block, not see EOF.
    let exit_hold = fifo::open_rdwr(&dir.exit()).map_err(CliError::fifo)?;
    let outputs = [
        OutputFifo::open(&dir.stdout())?,
        OutputFifo::open(&dir.stderr())?,
    ];
    // Read ends with a held write end: none of them reaches EOF between two managers.
    let held = |path: &std::path::Path| {
        fifo::KeepAliveReader::open(path)
            .map(fifo::KeepAliveReader::into_parts)
            .map_err(CliError::fifo)
    };
    let (stdin_r, stdin_hold) = held(&dir.stdin())?;
    let (winsz, winsz_hold) = held(&dir.winsz())?;
    // Not one of the contract's FIFOs (the `fifo` crate makes those): ours to create.
    // Its requests are about the stdio, so it belongs to the stdio's owner (io_owner.rs).
    let control_path = dir.path().join(CONTROL);
    fifo::create(&control_path, 0o600, io_owner.map(IoOwner::pair)).map_err(CliError::fifo)?;
    let (control, control_hold) = held(&control_path)?;
    Ok(Fifos {
        exit_hold,
        outputs,
        stdin_r,
        stdin_hold,
        winsz,
        winsz_hold,
        control,
        control_hold,
    })
}

/// A copy of the `stdin` FIFO's read end, the source of the stdin pump.
fn stdin_source(stdin_r: &File) -> CliResult<OwnedFd> {
    stdin_r
        .try_clone()
        .map(OwnedFd::from)
        .map_err(|e| CliError::Failed(format!("dup: {e}")))
}

/// Opens the FIFOs, starts the process, and returns the supervisor and the process's pid.
fn start(plan: &Plan, spec: &[u8], base: EventBase) -> CliResult<(Supervisor, i32)> {
    // Opened once: from here on every entry is reached through this descriptor (for us
    // and for runc), so renaming the directory away and putting a symlink in its place
    // cannot steer a write of ours (or runc's) elsewhere.
    let pinned = PinnedDir::open(&plan.dir).map_err(CliError::fifo)?;
    let dir = ProcessDir::from_path(pinned.path()).map_err(CliError::fifo)?;
    supervisor_log::install(dir.path(), &plan.dir);
    let write = |name: &str, bytes: &[u8]| {
        fifo::write_atomic(&dir.path().join(name), bytes, FILE_MODE)
            .map_err(|e| CliError::fifo_at(e, &plan.dir.join(name)))
    };
    write(
        SUPERVISOR_PID,
        format!("{}\n", std::process::id()).as_bytes(),
    )?;
    if plan.tty {
        // Tells `attach` to put a terminal it is run from into raw mode and to send its
        // size: a manager cannot ask runc (an exec's spec is not kept anywhere).
        write(TTY_MARKER, b"")?;
    }
    let fifos = open_fifos(&dir, plan.io_owner)?;
    let reaper = Reaper::new();
    let log = dir.log_json();
    let runc = plan.depot.runc(Some(&log), Some(reaper.monitor()));
    let id = plan.container.as_str();

    // With a terminal the pumps are wired once runc has handed the pty master over.
    let (io, mut stdio) = if plan.tty {
        (ProcessIo::default(), ProcessStdio::default())
    } else {
        let opts = PipeOptions {
            owner: None,
            size: Some(PIPE_SIZE),
        };
        wiring::pipes(
            Some(stdin_source(&fifos.stdin_r)?),
            Some(spooled(fifos.outputs[0].sink()?, plan, "stdout")?),
            Some(spooled(fifos.outputs[1].sink()?, plan, "stderr")?),
            opts,
        )
        .map_err(|e| CliError::Failed(format!("stdio pipes: {e}")))?
    };

    // A pea joins the outer init's namespaces by /proc/PID paths: pin that init first, and
    // make sure the pid is still its (runc knows the container running with it).
    let outer = match &plan.kind {
        Kind::Pea { outer_pid, .. } => Some(pin_outer_init(&runc, id, *outer_pid)?),
        _ => None,
    };
    let (what, runc_id) = match &plan.kind {
        Kind::Run { bundle } => (
            Launch::Init {
                bundle,
                flags: ContainerFlags::default(),
            },
            id,
        ),
        Kind::Pea {
            runc_id, bundle, ..
        } => {
            fifo::write_atomic(&dir.path().join(pea::CONFIG_JSON), spec, pea::CONFIG_MODE)
                .map_err(|e| CliError::fifo_at(e, &plan.dir.join(pea::CONFIG_JSON)))?;
            let record = pea::PeaRecord {
                runc_id: runc_id.clone(),
                bundle: bundle.clone(),
            };
            let record =
                serde_json::to_vec(&record).map_err(|e| CliError::Failed(e.to_string()))?;
            fifo::write_atomic(&dir.path().join(pea::PEA_JSON), &record, pea::PEA_JSON_MODE)
                .map_err(|e| CliError::fifo_at(e, &plan.dir.join(pea::PEA_JSON)))?;
            let flags = ContainerFlags {
                no_new_keyring: true,
                ..Default::default()
            };
            (
                Launch::Run {
                    bundle: dir.path(),
                    flags,
                },
                runc_id.as_str(),
            )
        }
        Kind::Exec => (
            Launch::Exec {
                spec,
                spec_dir: Some(dir.path()),
            },
            id,
        ),
    };
    let launch_io = LaunchIo {
        io,
        terminal: plan.tty,
        pid_file: dir.pidfile(),
    };
    // Until committed at the very end, every way out of here undoes the launch: the
    // container made goes again (a pea's too), an exec is killed.
    let mut launched =
        launch(&runc, runc_id, what, launch_io).map_err(|e| launch_error(e, plan))?;
    if let Kind::Run { .. } = plan.kind {
        launched.start().map_err(|e| launch_error(e, plan))?;
    }
    let pid = launched.pid();
    let pea = match &plan.kind {
        Kind::Pea { runc_id, .. } => {
            let ties = PeaTies {
                runc: runc.clone(),
                runc_id: runc_id.clone(),
                outer,
            };
            // The outer init died while the pea started: its /proc paths may have named
            // whatever took the pid. The pea goes, and with it its runc container.
            if ties.outer.as_ref().is_some_and(has_exited) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
                return Err(CliError::NotFound(format!(
                    "container {id:?} stopped while its pea started"
                )));
            }
            Some(ties)
        }
        _ => None,
    };
    // The process is our unreaped child: the pid is still its own. A process that has
    // exited already needs no record (its exit code follows at once).
    if let Some(start) = StartRecord::of(pid) {
        dir.write_start(&start)
            .map_err(|e| CliError::fifo_at(e, &plan.dir.join(fifo::STARTTIME)))?;
    }

    let master = match launched.take_master() {
        Some(m) => {
            stdio = wiring::terminal(
                &m,
                Some(stdin_source(&fifos.stdin_r)?),
                Some(spooled(fifos.outputs[0].sink()?, plan, "stdout")?),
            )
            .map_err(|e| CliError::Failed(format!("terminal: {e}")))?;
            Some(File::from(m))
        }
        None => None,
    };

    let Fifos {
        exit_hold,
        outputs,
        stdin_r,
        stdin_hold,
        winsz,
        winsz_hold,
        control,
        control_hold,
    } = fifos;
    drop(stdin_r);
    let mut sup = Supervisor {
        base,
        reaper,
        _pinned: pinned,
        dir,
        pid,
        exit_hold: Some(exit_hold),
        stdio,
        outputs,
        stdin_hold: Some(stdin_hold),
        winsz: Some(winsz),
        winsz_hold: Some(winsz_hold),
        decoder: WinszDecoder::new(),
        control: Some(control),
        control_hold: Some(control_hold),
        requests: control::Decoder::default(),
        stdin_closing: false,
        master,
        pea,
        exited: false,
        stop: None,
        drops: spool_flags::DropReport::new(&plan.dir),
    };
    sup.register()
        .map_err(|e| CliError::Failed(format!("epoll: {e}")))?;
    // Only now: runc and the process were started with the score we were given.
    keeper::protect_from_oom();
    // It exits with the process; we reap it as any other child (the reaper's loop).
    match launched.pidfd() {
        Some(fd) => {
            if let Err(e) = keeper::spawn_keeper(&sup.process_output_ends(), fd) {
                log::warn!("no keeper for process {pid}: {e}");
            }
        }
        // Exited and reaped already (by nobody else: it is our child), or no pidfds.
        None => log::warn!("no keeper for process {pid}: no pidfd"),
    }
    launched.commit();
    Ok((sup, pid))
}

/// A launch's failure as the standalone face reports it (`error <kind> <message>`).
fn launch_error(e: LaunchError, plan: &Plan) -> CliError {
    match (e, &plan.kind) {
        // Never someone else's container of that name (the launch left it alone).
        (LaunchError::Runc(e), Kind::Pea { runc_id, .. })
            if e.kind() == runc_wrapper::ErrorKind::AlreadyExists =>
        {
            CliError::Exists {
                what: format!("runc container {runc_id:?} (the pea's name)"),
                path: plan.depot.runc_root.join(runc_id),
            }
        }
        (LaunchError::Runc(e), Kind::Exec) => exec_error(e),
        (LaunchError::Runc(e), _) => CliError::runc(e),
        (LaunchError::Terminal(e) | LaunchError::ConsoleSocket(e), _) => {
            CliError::Failed(e.to_string())
        }
        (LaunchError::NoPidFile(_), _) => CliError::Failed("runc wrote no pid file".into()),
        (LaunchError::PidFile(e), _) => CliError::fifo(e),
    }
}

/// A pidfd of the outer container's init, once runc says the container `id` runs with
/// that very pid (after the pidfd pinned it: a recycled pid cannot slip in between).
fn pin_outer_init(runc: &runc_wrapper::Runc, id: &str, pid: i32) -> CliResult<OwnedFd> {
    let gone = || CliError::NotFound(format!("container {id:?} is not running"));
    let fd = pidfd::open(pid).map_err(|_| gone())?;
    match runc.state(id) {
        Ok(s) if s.status == runc_wrapper::ContainerStatus::Running && s.pid == pid => Ok(fd),
        Ok(_) => Err(gone()),
        Err(e) if e.is_not_found() => Err(gone()),
        Err(e) => Err(CliError::runc(e)),
    }
}

/// Whether the process behind `pidfd` has exited (it polls readable).
fn has_exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [nix::poll::PollFd::new(
        pidfd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
}

/// runc exec's "cannot exec in a stopped container" means the container is gone.
fn exec_error(e: runc_wrapper::Error) -> CliError {
    let stopped = e
        .runtime_message()
        .is_some_and(|m| m.contains("stopped container") || m.contains("not running"));
    if stopped {
        CliError::NotFound(e.to_string())
    } else {
        CliError::runc(e)
    }
}

/// `sink` with the spool the plan asks for, in the process directory.
fn spooled(sink: Sink, plan: &Plan, stream: &str) -> CliResult<Sink> {
    let name = format!("{}/{}", plan.container, plan.dir.display());
    sink.spooled(
        plan.spool.config(&name, &plan.dir).as_ref(),
        &format!("{name} {stream}"),
    )
    .map_err(|e| CliError::Failed(format!("spool: {e}")))
}

impl Supervisor {
    /// The process's ends of its output (pipe read ends or the pty master), for the keeper.
    fn process_output_ends(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        let mut ends = self.stdio.output_sources();
        if let Some(m) = &self.master {
            ends.push(m.as_fd());
        }
        ends
    }

    fn register(&mut self) -> std::io::Result<()> {
        let poller = self.base.poller();
        self.stdio.register(poller, SLOT).map_err(|u| u.error)?;
        if let Some(w) = &self.winsz {
            poller.add_readable(w.as_fd(), Token::Fifo(WINSZ))?;
        }
        if let Some(c) = &self.control {
            poller.add_readable(c.as_fd(), Token::Fifo(CONTROL_FIFO))?;
        }
        if let Some(outer) = self.pea.as_ref().and_then(|p| p.outer.as_ref()) {
            poller.add_readable(outer.as_fd(), Token::Fifo(OUTER_INIT))?;
        }
        Ok(())
    }

    /// The event loop; returns when the process has exited and its output is delivered
    /// (or a termination signal came after the exit).
    fn run(&mut self) {
        // Output that arrived before the loop.
        let ended = self.stdio.run_all(self.base.poller());
        if ended.contains(Stream::Stdin) {
            self.on_stdin_done();
        }
        let mut events: Vec<Ready> = Vec::new();
        loop {
            let linger = self.exited.then(|| Instant::now() + LINGER_POLL);
            let deadline = [linger, self.stdio.next_recheck()]
                .into_iter()
                .flatten()
                .min();
            if self.base.wait(deadline, &mut events).is_err() {
                break;
            }
            for ev in &events {
                match ev.token {
                    Token::Signals => self.on_signals(),
                    Token::Fifo(WINSZ) => self.on_winsz(),
                    Token::Fifo(CONTROL_FIFO) => self.on_control(),
                    Token::Fifo(OUTER_INIT) => self.on_outer_exit(),
                    Token::Stdio(_, stream) => self.run_stream(stream),
                    _ => {}
                }
            }
            for stream in self.stdio.due_rechecks(Instant::now()) {
                self.run_stream(stream);
            }
            self.drops.update(&self.stdio);
            if self.exited && self.linger_done() {
                break;
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
        if let (true, Some(m)) = (self.stdin_closing, &self.master) {
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
        if !self.exited {
            log::info!("the container's init exited: killing pea {}", self.pid);
            // Our unreaped child: the pid is still its own.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }

    fn on_control(&mut self) {
        let Some(c) = &mut self.control else { return };
        let mut buf = [0u8; 256];
        let mut requests = Vec::new();
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => requests.extend(self.requests.push(&buf[..n])),
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
    /// either and everything written has been moved on.
    fn close_stdin(&mut self) {
        if self.stdin_closing {
            return;
        }
        self.stdin_closing = true;
        self.stdin_hold = None;
        // No edge will come if there was no other writer: look now.
        self.run_stream(Stream::Stdin);
    }

    fn on_winsz(&mut self) {
        let Some(w) = &mut self.winsz else { return };
        let mut buf = [0u8; 1024];
        loop {
            match w.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    for size in self.decoder.push(&buf[..n]).into_iter().flatten() {
                        if let Some(m) = &self.master {
                            let _ = tty::resize(m.as_fd(), size.columns, size.rows);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }

    fn on_signals(&mut self) {
        let signals = self.base.signals();
        for sig in &signals {
            if *sig != Signal::SIGCHLD && self.exited {
                self.stop
                    .get_or_insert_with(|| DeleteLinger::new(Instant::now()));
            }
        }
        for exit in self.reaper.reap() {
            if exit.pid == self.pid && !self.exited {
                self.on_exit(exit.record());
            }
        }
    }

    /// The process exited: record it, close `exit`, stop taking input.
    fn on_exit(&mut self, record: ExitRecord) {
        let poller = self.base.poller();
        // Move what is already in the process pipes before anything else (saves a
        // wakeup), and start the grace its output gets.
        self.stdio.exited(poller, Instant::now(), DRAIN_GRACE);
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
        let _ = self.dir.write_exit(&record);
        self.exit_hold = None;
        self.stdio.close(poller, Stream::Stdin);
        self.stdin_hold = None;
        if let Some(w) = self.winsz.take() {
            poller.remove(w.as_fd());
        }
        self.winsz_hold = None;
        // After `exitcode`: a manager whose request finds no reader knows the process
        // has exited.
        if let Some(c) = self.control.take() {
            poller.remove(c.as_fd());
        }
        self.control_hold = None;
        self.master = None;
        self.exited = true;
    }

    /// After the exit: closes each FIFO once its pump has finished (or, after the grace,
    /// been abandoned with an idle source) and a manager has read everything in it. True
    /// when all are closed, or after a termination signal once no manager is taking
    /// spooled output (bounded).
    fn linger_done(&mut self) -> bool {
        if !self.exited {
            return false;
        }
        if let Some(linger) = &self.stop {
            match linger.check(self.stdio.backlog(), Instant::now()) {
                Linger::Wait(_) => {}
                Linger::Drained => return true,
                Linger::Drop { spooled, why } => {
                    log::warn!("delete: {spooled} spooled bytes dropped unread ({why})");
                    return true;
                }
            }
        }
        self.stdio
            .abandon_idle_outputs(self.base.poller(), Instant::now());
        for (stream, out) in Stream::OUTPUTS.into_iter().zip(&mut self.outputs) {
            if !self.stdio.is_open(stream) && out.unread() == 0 {
                out.close();
            }
        }
        self.outputs.iter().all(OutputFifo::closed)
    }
}

//! Starting: the FIFOs opened, the process launched through the core, handed over to the
//! keeper, the supervisor value built; and how a failed launch is reported.

use super::door::Door;
use super::fifos::{open_fifos, stdin_source};
use super::state::SupervisorState;
use super::{Fifos, Kind, PeaTies, Plan, RunningHolds, Supervisor};
use crate::process_core::event_base::EventBase;
use crate::process_core::launch::{launch, ContainerFlags, Launch, LaunchError, LaunchIo};
use crate::process_core::pidfd;
use crate::process_core::process_stdio::{ProcessStdio, Stream};
use crate::process_core::reaper::Reaper;
use crate::process_core::wiring::{self, PipeOptions, Sink};
use crate::standalone::control;
use crate::standalone::depot::{KEEPER_PID, SUPERVISOR_PID, TTY_MARKER};
use crate::standalone::errors::{CliError, CliResult};
use crate::standalone::keeper::{self, KeeperLink, Output, Role};
use crate::standalone::output_fifo::PIPE_SIZE;
use crate::standalone::{pea, spool_flags, supervisor_log};
use fifo::{PinnedDir, ProcessDir, StartRecord, WinszDecoder};
use nix::sys::signal::Signal;
use runc_wrapper::ProcessIo;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Mode of the files the supervisor writes (`supervisor.pid`, `keeper.pid`, `tty`,
/// `starttime`).
const FILE_MODE: u32 = 0o644;

/// Opens the FIFOs, starts the process, hands it over to the keeper (if one could be
/// forked: `keeper`), and returns the supervisor and the process's pid.
pub(super) fn start(
    plan: &Plan,
    spec: &[u8],
    base: EventBase,
    keeper: CliResult<KeeperLink>,
) -> CliResult<(Supervisor, i32)> {
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
    let keeper = match keeper {
        Ok(link) => Some(link),
        Err(e) => {
            log::warn!("no keeper: {e}");
            None
        }
    };
    write(
        SUPERVISOR_PID,
        format!("{}\n", std::process::id()).as_bytes(),
    )?;
    if let Some(k) = &keeper {
        write(KEEPER_PID, format!("{}\n", k.pid()).as_bytes())?;
    }
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
        pinned,
        dir,
        state: SupervisorState::started(pid),
        keeper,
        stdio,
        outputs,
        holds: Some(RunningHolds {
            exit: exit_hold,
            stdin: Some(stdin_hold),
            winsz,
            _winsz_hold: winsz_hold,
            decoder: WinszDecoder::new(),
            control,
            _control_hold: control_hold,
            requests: control::Decoder::default(),
            master,
        }),
        pea,
        drops: spool_flags::DropReport::new(&plan.dir),
        door: None,
        started_from: std::env::current_exe().unwrap_or_default(),
    };
    // Before we report: an operator may ask for an upgrade as soon as the process runs.
    sup.door = Door::open(sup.dir.path())
        .map_err(|e| log::warn!("no live upgrade for this supervisor: upgrade.sock: {e}"))
        .ok();
    sup.register()
        .map_err(|e| CliError::Failed(format!("epoll: {e}")))?;
    // Only now: runc and the process were started with the score we were given.
    keeper::protect_from_oom();
    // Before we report: from here on a manager may rely on the exit being recorded.
    if let Some(k) = &sup.keeper {
        if let Err(e) = k.hand_over(pid, &sup.handover()) {
            log::warn!("the keeper cannot take process {pid} over: {e}");
        }
    }
    launched.commit();
    Ok((sup, pid))
}

impl Supervisor {
    /// What the keeper gets to take the process over, each descriptor with its role.
    fn handover(&self) -> Vec<(Role, BorrowedFd<'_>)> {
        let mut fds = vec![(Role::Dir, self.pinned.as_fd())];
        if let Some(h) = &self.holds {
            fds.push((Role::Exit, h.exit.as_fd()));
            if let Some(m) = &h.master {
                fds.push((Role::Source(Output::Stdout), m.as_fd()));
            }
        }
        if self.holds.as_ref().is_none_or(|h| h.master.is_none()) {
            for (o, stream) in Output::BOTH.into_iter().zip(Stream::OUTPUTS) {
                if let Some(src) = self.stdio.source(stream) {
                    fds.push((Role::Source(o), src));
                }
            }
        }
        for o in Output::BOTH {
            if let Some((writer, keepalive)) = self.outputs[o.index()].ends() {
                fds.push((Role::Fifo(o), writer));
                fds.push((Role::Keepalive(o), keepalive));
            }
        }
        if let Some(outer) = self.pea.as_ref().and_then(|p| p.outer.as_ref()) {
            fds.push((Role::OuterInit, outer.as_fd()));
        }
        fds
    }
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

/// runc exec's "cannot exec in a stopped container" ([`runc_wrapper::ErrorKind::NotRunning`])
/// means the container is gone.
fn exec_error(e: runc_wrapper::Error) -> CliError {
    match e.kind() {
        runc_wrapper::ErrorKind::NotRunning => CliError::NotFound(e.to_string()),
        _ => CliError::runc(e),
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

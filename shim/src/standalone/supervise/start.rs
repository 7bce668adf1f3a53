//! Starting: the FIFOs opened, the process launched through the core, the supervisor
//! value built; and how a failed launch is reported.

use super::fifos::{open_fifos, stdin_source};
use super::*;

/// Opens the FIFOs, starts the process, and returns the supervisor and the process's pid.
pub(super) fn start(plan: &Plan, spec: &[u8], base: EventBase) -> CliResult<(Supervisor, i32)> {
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

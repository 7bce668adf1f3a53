//! Create, Start and Delete: a container's and an exec's life through runc, the launch
//! itself being the core's (`supervisor::launch`).

use super::{display_id, invalid_id, work_path, LoopMsg, Shim};
use crate::containerd::errors::*;
use crate::containerd::events::task_events::{event_exit_status, event_pid};
use crate::containerd::events::timestamp;
use crate::containerd::options::{decode_options, RuncOptions};
use crate::containerd::tasks::{Container, Process};
use crate::supervisor::launch::{launch, Committed, ContainerFlags, Launch, LaunchError, LaunchIo};
use crate::supervisor::process_stdio::ProcessStdio;
use crate::supervisor::stdio::{self, Prepared, StdioConfig};
use containerd_shim_protos::shim::shim as api;
use runc_wrapper::Runc;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How long Delete waits for a process's output to drain (as the Go shim does).
const IO_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

impl Shim {
    pub(super) fn create(&self, r: api::CreateTaskRequest) -> RpcResult<api::CreateTaskResponse> {
        fifo::validate_id(&r.id).map_err(|e| invalid_id("container", e))?;
        if self.lock().containers.contains_key(&r.id) {
            return Err(already_exists(format!("container {} already exists", r.id)));
        }
        let bundle = PathBuf::from(&r.bundle);
        let spec =
            crate::containerd::bundle::read_spec(&bundle).map_err(|e| invalid(e.to_string()))?;
        let mut opts = self.start_options.clone();
        // containerd turns CriuImagePath into a restore only for runtimes named
        // io.containerd.runc*; for any other name the options carry it to us.
        let mut restore_from = r.checkpoint.clone();
        if let Some(any) = r.options.as_ref() {
            let task_opts = decode_options(&any.type_url, &any.value)
                .map_err(|e| invalid(format!("runtime options: {e}")))?;
            if restore_from.is_empty() {
                restore_from = task_opts.criu_image_path.clone();
            }
            opts = opts.merged_with(&task_opts);
        }
        let _ = opts.write_json(&bundle.join("options.json"));
        let rootfs = bundle.join("rootfs");
        let mounted = if r.rootfs.is_empty() {
            None
        } else {
            let specs: Vec<_> = r
                .rootfs
                .iter()
                .map(|m| crate::mount::MountSpec {
                    kind: m.type_.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                })
                .collect();
            crate::mount::mount_all(&specs, &rootfs).map_err(|e| internal(e.to_string()))?;
            Some(rootfs.clone())
        };
        let undo_mount = |mounted: &Option<PathBuf>| {
            if let Some(path) = mounted {
                if let Err(e) = crate::mount::unmount_all(path) {
                    log::warn!("unmount {}: {e}", path.display());
                }
            }
        };
        let spool = crate::containerd::spool_setting::for_container(
            &spec.annotations,
            &opts.spool_limit,
            &opts.spool_policy,
            &bundle,
            &r.id,
        )
        .map_err(invalid)?;
        let stdio_cfg = StdioConfig {
            stdin: r.stdin.clone(),
            stdout: r.stdout.clone(),
            stderr: r.stderr.clone(),
            terminal: r.terminal,
            spool,
        };
        let owner = owner(&opts);
        let runc = self.runc_for(&opts, &bundle);
        let mut init = Process::new("", stdio_cfg.clone(), Vec::new());
        let mut pumps = ProcessStdio::default();
        let pid;
        let mut pidfd = None;
        if !restore_from.is_empty() {
            // Restored at Start, like the Go shim: the IO is set up then.
            pid = 0;
            init.spec = restore_from.clone().into_bytes();
        } else {
            let mut prepared = match stdio::prepare_with_env(
                &stdio_cfg,
                owner,
                &stdio::logger_env(&r.id, &self.namespace),
            ) {
                Ok(p) => p,
                Err(e) => {
                    undo_mount(&mounted);
                    return Err(invalid(format!("container io: {e}")));
                }
            };
            let plan = Launch::Init {
                bundle: &bundle,
                flags: container_flags(&opts),
            };
            let launched = launch_wired(&runc, &r.id, plan, &mut prepared, bundle.join("init.pid"));
            // A failed launch has undone itself (the container is deleted) by now.
            let (p, console) = match launched {
                Ok(x) => x,
                Err(e) => {
                    undo_mount(&mounted);
                    return Err(e);
                }
            };
            pid = p.pid;
            pidfd = p.pidfd;
            init.console = console;
            init.stdin_closer = prepared.stdin_closer.take();
            init.open_pumps = prepared.output_pumps();
            pumps = std::mem::take(&mut prepared.stdio);
        }
        let container = Container {
            bundle: bundle.clone(),
            init,
            execs: HashMap::new(),
            paused: false,
            shares_pid_ns: !spec.own_pid_namespace,
            rootfs_mounted: mounted,
            runc,
            options: opts.clone(),
            cgroup_procs: if !spec.own_pid_namespace && pid > 0 {
                crate::containerd::kill_all::procs_file_of(pid)
            } else {
                None
            },
            cgroups: cgroups_of(pid),
        };
        let early = {
            let mut tasks = self.lock();
            tasks.containers.insert(r.id.clone(), container);
            if pid > 0 {
                tasks.register_pid(&r.id, "", pid, pidfd)
            } else {
                None
            }
        };
        self.add_pumps(&r.id, "", pumps);
        if pid > 0 {
            self.watch_oom(&r.id, pid);
        }
        self.events.create(
            &r.id,
            &r.bundle,
            r.rootfs.clone(),
            &stdio_cfg,
            &r.checkpoint,
            pid,
        );
        if let Some(record) = early {
            let mut report = Vec::new();
            self.lock().finish_exit(&r.id, "", record, &mut report);
            self.report_exits(report);
        }
        let mut resp = api::CreateTaskResponse::new();
        resp.pid = event_pid(pid);
        Ok(resp)
    }

    pub(super) fn start(&self, r: api::StartRequest) -> RpcResult<api::StartResponse> {
        let (runc, bundle, opts, stdio_cfg, spec, restore) = {
            let mut tasks = self.lock();
            let c = tasks
                .container_mut(&r.id)
                .ok_or_else(|| not_found(format!("container {} not found", r.id)))?;
            let (runc, bundle, opts) = (c.runc.clone(), c.bundle.clone(), c.options.clone());
            let p = c
                .process_mut(&r.exec_id)
                .ok_or_else(|| not_found(format!("process {} not found", r.exec_id)))?;
            if p.begin_start().is_err() {
                return Err(failed_precondition(format!(
                    "process {} cannot be started: it is not in the created state",
                    display_id(&r.id, &r.exec_id)
                )));
            }
            let restore = r.exec_id.is_empty() && p.pid == 0 && !p.spec.is_empty();
            (runc, bundle, opts, p.stdio.clone(), p.spec.clone(), restore)
        };
        let started = if r.exec_id.is_empty() && !restore {
            self.lock()
                .container(&r.id)
                .map(|c| c.init.pid)
                .ok_or_else(|| not_found("container vanished"))
                .and_then(|pid| {
                    runc.start(&r.id)
                        .map(|()| StartedProcess::created_init(pid))
                        .map_err(from_runc)
                })
        } else {
            let new_process = NewProcess {
                runc: &runc,
                bundle: &bundle,
                opts: &opts,
                stdio: &stdio_cfg,
                spec: &spec,
                restore,
            };
            self.start_new_process(&r, &new_process)
        };
        let StartedProcess {
            pid,
            pidfd,
            io,
            console,
        } = match started {
            Ok(x) => x,
            Err(e) => {
                let report = self.lock().start_failed(&r.id, &r.exec_id);
                self.report_exits(report);
                return Err(e);
            }
        };
        let mut early = None;
        let mut pumps = ProcessStdio::default();
        {
            let mut tasks = self.lock();
            if !r.exec_id.is_empty() || restore {
                early = tasks.register_pid(&r.id, &r.exec_id, pid, pidfd);
            }
            if restore {
                if let Some(c) = tasks.container_mut(&r.id) {
                    c.cgroups = cgroups_of(pid);
                    if c.shares_pid_ns {
                        c.cgroup_procs = crate::containerd::kill_all::procs_file_of(pid);
                    }
                }
            }
            if let Some(p) = tasks
                .container_mut(&r.id)
                .and_then(|c| c.process_mut(&r.exec_id))
            {
                // Its exits stay held until the start is reported (start_done).
                if let Err(e) = p.launched() {
                    log::warn!("start of {}: {e}", display_id(&r.id, &r.exec_id));
                }
                if console.is_some() {
                    p.console = console;
                }
                if let Some(mut prepared) = io {
                    let prepared: &mut Prepared = &mut prepared;
                    p.stdin_closer = prepared.stdin_closer.take();
                    p.open_pumps = prepared.output_pumps();
                    pumps = std::mem::take(&mut prepared.stdio);
                }
                if let Some(record) = early {
                    // Unless it holds one already (a pid exits once).
                    let _ = p.hold_exit(record);
                }
            }
        }
        self.add_pumps(&r.id, &r.exec_id, pumps);
        if r.exec_id.is_empty() {
            if restore {
                self.watch_oom(&r.id, pid);
            }
            self.events.start(&r.id, pid);
        } else {
            self.events.exec_started(&r.id, &r.exec_id, pid);
        }
        let report = self.lock().start_done(&r.id, &r.exec_id);
        self.report_exits(report);
        let mut resp = api::StartResponse::new();
        resp.pid = event_pid(pid);
        Ok(resp)
    }

    /// Launches an exec (`runc exec`) or restores a checkpointed init (`runc restore`),
    /// its stdio connected to containerd's.
    fn start_new_process(
        &self,
        r: &api::StartRequest,
        new_process: &NewProcess<'_>,
    ) -> RpcResult<StartedProcess> {
        let NewProcess {
            runc,
            bundle,
            opts,
            stdio: stdio_cfg,
            spec,
            restore,
        } = *new_process;
        let mut prepared = stdio::prepare_with_env(
            stdio_cfg,
            owner(opts),
            &stdio::logger_env(&r.id, &self.namespace),
        )
        .map_err(|e| invalid(format!("process io: {e}")))?;
        let image = PathBuf::from(String::from_utf8_lossy(spec).into_owned());
        let work = work_path(opts, bundle);
        let (what, pid_file) = if restore {
            let what = Launch::Restore {
                bundle,
                image: &image,
                work: &work,
                no_pivot: opts.no_pivot_root,
            };
            (what, bundle.join("init.pid"))
        } else {
            let what = Launch::Exec {
                spec,
                spec_dir: None,
            };
            (what, bundle.join(format!("{}.pid", r.exec_id)))
        };
        let (process, console) = launch_wired(runc, &r.id, what, &mut prepared, pid_file)?;
        Ok(StartedProcess {
            pid: process.pid,
            pidfd: process.pidfd,
            io: Some(prepared),
            console,
        })
    }

    pub(super) fn delete(&self, r: api::DeleteRequest) -> RpcResult<api::DeleteResponse> {
        self.wait_for_output(&r.id, &r.exec_id);
        crate::containerd::delete_linger::wait(self, &r.id, &r.exec_id);
        if !r.exec_id.is_empty() {
            let mut tasks = self.lock();
            let c = tasks
                .container_mut(&r.id)
                .ok_or_else(|| not_found(format!("container {} not found", r.id)))?;
            let p = c
                .execs
                .get(&r.exec_id)
                .ok_or_else(|| not_found(format!("process {} not found", r.exec_id)))?;
            if p.is_alive() || p.state().in_start() {
                return Err(failed_precondition(format!(
                    "process {} is running: kill it before deleting it",
                    r.exec_id
                )));
            }
            let Some(p) = c.execs.remove(&r.exec_id) else {
                return Err(not_found(format!("process {} not found", r.exec_id)));
            };
            let pid = p.pid;
            tasks.unregister_pid(pid);
            drop(tasks);
            self.post(LoopMsg::DropPumps {
                container: r.id.clone(),
                exec: r.exec_id.clone(),
            });
            let _ = std::fs::remove_file(
                self.bundle_of(&r.id)
                    .unwrap_or_default()
                    .join(format!("{}.pid", r.exec_id)),
            );
            return Ok(delete_response(pid, p.exit()));
        }
        let (runc, alive) = {
            let tasks = self.lock();
            let c = tasks
                .container(&r.id)
                .ok_or_else(|| not_found(format!("container {} not found", r.id)))?;
            (
                c.runc.clone(),
                c.init.is_alive() && c.init.state().is_running(),
            )
        };
        if alive {
            return Err(failed_precondition(format!(
                "container {} is running: kill it before deleting it",
                r.id
            )));
        }
        if let Err(e) = runc.delete(&r.id, false) {
            if !e.is_not_found() {
                if let Err(e2) = runc.delete(&r.id, true) {
                    if !e2.is_not_found() {
                        return Err(from_runc(e2));
                    }
                }
            }
        }
        let container = self.lock().remove_container(&r.id);
        let Some(container) = container else {
            return Err(not_found(format!("container {} not found", r.id)));
        };
        for exec in std::iter::once(String::new()).chain(container.execs.keys().cloned()) {
            self.post(LoopMsg::DropPumps {
                container: r.id.clone(),
                exec,
            });
        }
        if let Some(path) = &container.rootfs_mounted {
            if let Err(e) = crate::mount::unmount_all(path) {
                log::warn!("unmount {}: {e}", path.display());
            }
        }
        let pid = container.init.pid;
        let exit = container.init.exit();
        let (code, at) = exit
            .map(|e| (e.code, e.exited_at))
            .unwrap_or((0, SystemTime::now()));
        self.events.delete(&r.id, pid, code, at);
        Ok(delete_response(pid, exit))
    }

    /// Waits (bounded) until an exited process's pumps have moved everything its pipes
    /// hold and its exit has been reported, so that TaskExit (and the answers to parked
    /// Waits) come before the TaskDelete of the same process.
    fn wait_for_output(&self, id: &str, exec_id: &str) {
        let deadline = Instant::now() + IO_DRAIN_TIMEOUT;
        let mut tasks = self.lock();
        loop {
            let settled = tasks
                .container(id)
                .and_then(|c| c.process(exec_id))
                .map(|p| p.exit().is_none() || (p.open_pumps == 0 && p.state().exit_reported()))
                .unwrap_or(true);
            let now = Instant::now();
            if settled || now >= deadline {
                return;
            }
            tasks = self
                .pumps_done
                .wait_timeout(tasks, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

/// What Start started: the process, and for a launched one its stdio and pty master.
struct StartedProcess {
    pid: i32,
    pidfd: Option<std::os::fd::OwnedFd>,
    io: Option<Prepared>,
    console: Option<std::fs::File>,
}

impl StartedProcess {
    /// A created init that `runc start` let run: its pid and stdio are known since Create.
    fn created_init(pid: i32) -> Self {
        StartedProcess {
            pid,
            pidfd: None,
            io: None,
            console: None,
        }
    }
}

/// What `start_new_process` launches: an exec's or a restored init's process.
#[derive(Clone, Copy)]
struct NewProcess<'a> {
    runc: &'a Runc,
    bundle: &'a Path,
    opts: &'a RuncOptions,
    stdio: &'a StdioConfig,
    spec: &'a [u8],
    restore: bool,
}

fn delete_response(pid: i32, exit: Option<fifo::ExitRecord>) -> api::DeleteResponse {
    let mut d = api::DeleteResponse::new();
    d.pid = event_pid(pid);
    let (code, at) = exit
        .map(|e| (e.code, e.exited_at))
        .unwrap_or((0, SystemTime::now()));
    d.exit_status = event_exit_status(code);
    d.exited_at = timestamp(at);
    d
}

/// Launches `what` with the process's side of `prepared` (the terminal it asks for, if
/// any) and connects the pty master to containerd's FIFOs. Returns the process, now
/// ours, and the master for resizing; a failure leaves nothing launched.
fn launch_wired(
    runc: &Runc,
    id: &str,
    what: Launch<'_>,
    prepared: &mut Prepared,
    pid_file: PathBuf,
) -> RpcResult<(Committed, Option<std::fs::File>)> {
    let io = LaunchIo {
        io: std::mem::take(&mut prepared.io),
        terminal: prepared.has_terminal(),
        pid_file,
    };
    let mut launched = launch(runc, id, what, io).map_err(from_launch)?;
    let console = match launched.take_master() {
        Some(master) => Some(
            prepared
                .attach_terminal(master)
                .map_err(|e| internal(format!("terminal: {e}")))?,
        ),
        None => None,
    };
    Ok((launched.commit(), console))
}

/// A launch's failure as containerd is told it: runc's with the code its kind means.
fn from_launch(e: LaunchError) -> ttrpc::proto::Status {
    match e {
        LaunchError::Runc(e) => from_runc(e),
        other => internal(other.to_string()),
    }
}

/// How the options say a container is made.
fn container_flags(opts: &RuncOptions) -> ContainerFlags {
    ContainerFlags {
        no_pivot: opts.no_pivot_root,
        no_new_keyring: opts.no_new_keyring,
    }
}

fn owner(opts: &RuncOptions) -> Option<(u32, u32)> {
    (opts.io_uid != 0 || opts.io_gid != 0).then_some((opts.io_uid, opts.io_gid))
}

/// The cgroups of a container's init `pid`, just created or restored (so surely that
/// process), kept for Stats; `None` without a pid or if it is already gone.
fn cgroups_of(pid: i32) -> Option<crate::cgroups::ProcessCgroups> {
    if pid <= 0 {
        return None;
    }
    crate::cgroups::of_pid(pid)
        .map_err(|e| log::debug!("cgroups of pid {pid}: {e}"))
        .ok()
}

//! The containerd Task service (task API v2): one handler per RPC, over the supervision
//! core. Handlers run on the shim's worker thread, one at a time (so runc calls are
//! serialised per shim, as containerd expects); `Wait` parks its call in the process
//! table and the event loop answers it when the process exits.

use crate::containerd::call_gate::{CallGate, ExitReport, GateHold, ENTER_WAIT};
use crate::containerd::errors::*;
use crate::containerd::events::{timestamp, Events};
use crate::containerd::options::{decode_checkpoint_options, decode_options, RuncOptions};
use crate::containerd::task_call::TaskCall;
use crate::containerd::tasks::{Container, Exited, ProcStatus, Process, Tasks};
use crate::containerd::ttrpc::Reply;
use crate::supervisor::process_stdio::ProcessStdio;
use crate::supervisor::reaper::Reaper;
use crate::supervisor::stdio::{self, Prepared, StdioConfig};
use containerd_shim_protos::shim::shim as api;
use containerd_shim_protos::types::task::{ProcessInfo, Status as TaskStatus};
use protobuf::well_known_types::any::Any;
use protobuf::{Message, MessageField};
use runc_wrapper::{CheckpointOpts, CreateOpts, ExecOpts, RestoreOpts, Runc};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// How long a terminal process may take to hand its pty master over.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Delete waits for a process's output to drain (as the Go shim does).
const IO_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait calls that may be parked on one process (containerd parks one or two).
const MAX_WAITERS: usize = 64;
/// Where runc keeps container state unless the options say otherwise.
const DEFAULT_RUNC_ROOT: &str = "/run/containerd/runc";

/// Work for the event loop, posted by the worker.
#[derive(Debug)]
pub enum LoopMsg {
    /// A worker's reply to write; then drop `hold`, which opens the process's call gate.
    Answered {
        conn: u32,
        stream: u32,
        reply: Reply,
        hold: Option<GateHold>,
    },
    /// The reply to a parked Wait.
    Respond {
        conn: u32,
        stream: u32,
        reply: Reply,
    },
    AddPumps {
        container: String,
        exec: String,
        stdio: ProcessStdio,
    },
    /// Stop serving a process's stdio (it was deleted).
    DropPumps {
        container: String,
        exec: String,
    },
    /// Register a container's OOM watcher (made by the worker while its init was known
    /// to be alive) and report at once what it already counts.
    WatchOom {
        container: String,
        watcher: crate::cgroups::oom::OomWatcher,
    },
    /// Exits to report once the processes' output has drained (see the loop).
    Exited(Vec<Exited>),
    /// A Delete waits for the process's spooled output (`delete_linger`): answer on
    /// `done` once it may go on.
    AwaitSpools {
        container: String,
        exec: String,
        done: std::sync::mpsc::SyncSender<()>,
    },
    Shutdown,
}

/// What a handled call gives back: its reply, and the hold on its process's call gate
/// that the loop drops once the reply is written.
#[derive(Debug)]
pub struct Answer {
    pub reply: Reply,
    pub hold: Option<GateHold>,
}

impl Answer {
    fn now(reply: Reply) -> Self {
        Answer { reply, hold: None }
    }
}

/// Everything the two shim threads share.
pub struct Shim {
    pub namespace: String,
    pub tasks: Mutex<Tasks>,
    /// Signalled when a pump finishes or an exit is reported (Delete waits for both).
    pub pumps_done: Condvar,
    /// Orders Kill, Delete, … of one process against each other and its exit report.
    pub gate: Arc<CallGate>,
    pub reaper: Reaper,
    pub events: Events,
    /// Options given to `start` (stdin), the base for every container's.
    pub start_options: RuncOptions,
    outbox: Mutex<Vec<LoopMsg>>,
    waker: crate::supervisor::epoll::Waker,
}

impl Shim {
    pub fn new(
        namespace: String,
        reaper: Reaper,
        events: Events,
        start_options: RuncOptions,
        waker: crate::supervisor::epoll::Waker,
    ) -> Self {
        Shim {
            namespace,
            tasks: Mutex::new(Tasks::default()),
            pumps_done: Condvar::new(),
            gate: CallGate::new(),
            reaper,
            events,
            start_options,
            outbox: Mutex::new(Vec::new()),
            waker,
        }
    }

    pub fn waker(&self) -> &crate::supervisor::epoll::Waker {
        &self.waker
    }

    /// Locks the process table. A poisoned lock (a panicking handler) still holds a
    /// consistent table: every update is done before anything that can fail.
    pub fn lock(&self) -> MutexGuard<'_, Tasks> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Posts work for the loop and wakes it.
    pub fn post(&self, msg: LoopMsg) {
        self.outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
        self.waker.wake();
    }

    /// Takes the loop's pending work.
    pub fn take_outbox(&self) -> Vec<LoopMsg> {
        std::mem::take(&mut *self.outbox.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Hands exits found by the worker to the loop, which reports them in order once the
    /// processes' output has drained.
    fn report_exits(&self, exits: Vec<Exited>) {
        if !exits.is_empty() {
            self.post(LoopMsg::Exited(exits));
        }
    }

    /// Reports exits now: TaskExit events, then answers to the parked Wait calls.
    pub fn deliver(&self, exits: Vec<Exited>) {
        for e in exits {
            log::debug!(
                "exit container={} exec={} pid={} status={}",
                e.container_id,
                e.exec_id,
                e.pid,
                e.record.code
            );
            if e.exec_id.is_empty() {
                if let Some(bundle) = self.bundle_of(&e.container_id) {
                    crate::containerd::exit_status::record(&bundle, e.pid, &e.record);
                }
            }
            self.events.exit(&e);
            let waiters = self.lock().exit_delivered(&e.container_id, &e.exec_id);
            self.pumps_done.notify_all();
            if waiters.is_empty() {
                continue;
            }
            let reply = wait_reply(e.record.code, e.record.exited_at);
            for (conn, stream) in waiters {
                self.post(LoopMsg::Respond {
                    conn,
                    stream,
                    reply: reply.clone(),
                });
            }
        }
    }

    /// One of a process's spools has drained after its exit, or Wait has waited for it
    /// long enough: answers the parked Waits if it was the last.
    pub fn spool_settled(&self, container: &str, exec: &str) {
        let settled = self.lock().spool_settled(container, exec);
        let Some((exit, waiters)) = settled else {
            return;
        };
        let reply = wait_reply(exit.code, exit.exited_at);
        for (conn, stream) in waiters {
            self.post(LoopMsg::Respond {
                conn,
                stream,
                reply: reply.clone(),
            });
        }
    }

    /// Handles one decoded call on `stream` of connection `conn`. `None` means the call
    /// was parked (Wait) and is answered later.
    pub fn handle(&self, conn: u32, stream: u32, call: TaskCall) -> Option<Answer> {
        let name = call.name();
        log::debug!("rpc {name}");
        use ExitReport::{Free, HeldBack};
        let answer = match call {
            TaskCall::Create(r) => Answer::now(self.create(r).and_then(encode)),
            TaskCall::Start(r) => Answer::now(self.start(r).and_then(encode)),
            // Delete waits for the exit report it must come after; it cannot cause one.
            TaskCall::Delete(r) => {
                self.ordered(process_of(&r.id, &r.exec_id), Free, || self.delete(r))
            }
            TaskCall::Exec(r) => Answer::now(self.exec(r).and_then(encode)),
            TaskCall::ResizePty(r) => Answer::now(self.resize_pty(r).and_then(encode)),
            TaskCall::CloseIO(r) => Answer::now(self.close_io(r).and_then(encode)),
            TaskCall::State(r) => Answer::now(self.state(r).and_then(encode)),
            // A kill-all is the init's business: the init's exit waits for its reply.
            TaskCall::Kill(r) => {
                let process = process_of(&r.id, if r.all { "" } else { &r.exec_id });
                self.ordered(process, HeldBack, || self.kill(r))
            }
            TaskCall::Pids(r) => Answer::now(self.pids(r).and_then(encode)),
            TaskCall::Pause(r) => self.ordered(process_of(&r.id, ""), HeldBack, || self.pause(r)),
            TaskCall::Resume(r) => self.ordered(process_of(&r.id, ""), HeldBack, || self.resume(r)),
            // A checkpoint without leave-running ends the init.
            TaskCall::Checkpoint(r) => {
                self.ordered(process_of(&r.id, ""), HeldBack, || self.checkpoint(r))
            }
            TaskCall::Update(r) => self.ordered(process_of(&r.id, ""), HeldBack, || self.update(r)),
            TaskCall::Stats(r) => Answer::now(self.stats(r).and_then(encode)),
            TaskCall::Connect(r) => Answer::now(self.connect(r).and_then(encode)),
            TaskCall::Shutdown(r) => Answer::now(self.shutdown(r).and_then(encode)),
            TaskCall::Wait(r) => return self.wait(conn, stream, &r).map(Answer::now),
        };
        if let Err(st) = &answer.reply {
            log::info!("rpc {name} failed: {}", st.message);
        }
        Some(answer)
    }

    /// Runs a call inside its process's call gate (see `call_gate`): after the previous
    /// call on that process has been answered, and, for `HeldBack`, with the process's
    /// exit report held until this call's reply has been written.
    fn ordered<Resp: Message>(
        &self,
        (container, exec): (String, String),
        exit: ExitReport,
        f: impl FnOnce() -> RpcResult<Resp>,
    ) -> Answer {
        let hold = self.gate.enter(&container, &exec, exit, ENTER_WAIT);
        Answer {
            reply: f().and_then(encode),
            hold: Some(hold),
        }
    }

    fn runc_for(&self, opts: &RuncOptions, bundle: &Path) -> Runc {
        let root = if opts.root.is_empty() {
            DEFAULT_RUNC_ROOT
        } else {
            opts.root.as_str()
        };
        let mut b = Runc::builder()
            .binary(if opts.binary_name.is_empty() {
                "runc"
            } else {
                opts.binary_name.as_str()
            })
            .root(Path::new(root).join(&self.namespace))
            .log(bundle.join("log.json"))
            .systemd_cgroup(opts.systemd_cgroup)
            .monitor(self.reaper.monitor());
        if !opts.criu_path.is_empty() {
            b = b.criu(&opts.criu_path);
        }
        b.build()
    }

    /// Watches the memory cgroup of a container whose init `pid` was just created: here,
    /// while the pid surely is that process (the loop would get it only later, maybe dead).
    fn watch_oom(&self, container: &str, pid: i32) {
        match crate::cgroups::oom::OomWatcher::new(pid) {
            Ok(watcher) => self.post(LoopMsg::WatchOom {
                container: container.to_string(),
                watcher,
            }),
            Err(e) => log::info!("no OOM events for {container}: {e}"),
        }
    }

    fn add_pumps(&self, container: &str, exec: &str, stdio: ProcessStdio) {
        if !stdio.is_empty() {
            self.post(LoopMsg::AddPumps {
                container: container.into(),
                exec: exec.into(),
                stdio,
            });
        }
    }

    // ---- Create ------------------------------------------------------------------

    fn create(&self, r: api::CreateTaskRequest) -> RpcResult<api::CreateTaskResponse> {
        fifo::validate_id(&r.id).map_err(|e| invalid_id("container", e))?;
        if self.lock().containers.contains_key(&r.id) {
            return Err(already_exists(format!("container {} already exists", r.id)));
        }
        let bundle = PathBuf::from(&r.bundle);
        let spec = crate::containerd::bundle::read_spec(&bundle).map_err(invalid)?;
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
            let pid_file = bundle.join("init.pid");
            let created = runc.create(
                &r.id,
                &bundle,
                CreateOpts {
                    pid_file: Some(pid_file.clone()),
                    console_socket: prepared.console.as_ref().map(|c| c.path().to_path_buf()),
                    no_pivot: opts.no_pivot_root,
                    no_new_keyring: opts.no_new_keyring,
                    io: std::mem::take(&mut prepared.io),
                    ..Default::default()
                },
            );
            let attached = created.map_err(from_runc).and_then(|()| {
                let console = if r.terminal {
                    Some(
                        prepared
                            .attach_console(CONSOLE_TIMEOUT)
                            .map_err(|e| internal(format!("terminal: {e}")))?,
                    )
                } else {
                    None
                };
                let pid = read_pid(&pid_file)?;
                Ok((console, pid))
            });
            let (console, p) = match attached {
                Ok(x) => x,
                Err(e) => {
                    let _ = runc.delete(&r.id, true);
                    undo_mount(&mounted);
                    return Err(e);
                }
            };
            pid = p;
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
            deferred_init_exit: None,
            rootfs_mounted: mounted,
            runc,
            options: opts.clone(),
            cgroup_procs: if !spec.own_pid_namespace && pid > 0 {
                crate::containerd::kill_all::procs_file_of(pid)
            } else {
                None
            },
        };
        let early = {
            let mut tasks = self.lock();
            tasks.containers.insert(r.id.clone(), container);
            if pid > 0 {
                tasks.register_pid(&r.id, "", pid)
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
        resp.pid = pid.max(0) as u32;
        Ok(resp)
    }

    // ---- Start -------------------------------------------------------------------

    fn start(&self, r: api::StartRequest) -> RpcResult<api::StartResponse> {
        let (runc, bundle, opts, stdio_cfg, spec, restore) = {
            let mut tasks = self.lock();
            let c = tasks
                .container_mut(&r.id)
                .ok_or_else(|| not_found(format!("container {} not found", r.id)))?;
            let (runc, bundle, opts) = (c.runc.clone(), c.bundle.clone(), c.options.clone());
            let p = c
                .process_mut(&r.exec_id)
                .ok_or_else(|| not_found(format!("process {} not found", r.exec_id)))?;
            if p.status != ProcStatus::Created || p.exit.is_some() || p.starting {
                return Err(failed_precondition(format!(
                    "process {} cannot be started: it is not in the created state",
                    display_id(&r.id, &r.exec_id)
                )));
            }
            p.starting = true;
            let restore = r.exec_id.is_empty() && p.pid == 0 && !p.spec.is_empty();
            (runc, bundle, opts, p.stdio.clone(), p.spec.clone(), restore)
        };
        let started = if r.exec_id.is_empty() && !restore {
            self.lock()
                .container(&r.id)
                .map(|c| c.init.pid)
                .ok_or_else(|| not_found("container vanished"))
                .and_then(|pid| runc.start(&r.id).map(|()| (pid, None)).map_err(from_runc))
        } else {
            let launch = NewProcess {
                runc: &runc,
                bundle: &bundle,
                opts: &opts,
                stdio: &stdio_cfg,
                spec: &spec,
                restore,
            };
            self.start_new_process(&r, &launch)
        };
        let (pid, io) = match started {
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
                early = tasks.register_pid(&r.id, &r.exec_id, pid);
            }
            if restore {
                if let Some(c) = tasks.container_mut(&r.id) {
                    if c.shares_pid_ns {
                        c.cgroup_procs = crate::containerd::kill_all::procs_file_of(pid);
                    }
                }
            }
            if let Some(p) = tasks
                .container_mut(&r.id)
                .and_then(|c| c.process_mut(&r.exec_id))
            {
                p.status = ProcStatus::Running;
                if let Some(mut prepared) = io {
                    let prepared: &mut Prepared = &mut prepared;
                    p.stdin_closer = prepared.stdin_closer.take();
                    p.open_pumps = prepared.output_pumps();
                    pumps = std::mem::take(&mut prepared.stdio);
                }
                if let Some(record) = early {
                    if p.pending_exit.is_none() {
                        p.pending_exit = Some(record);
                    }
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
        resp.pid = pid.max(0) as u32;
        Ok(resp)
    }

    /// Starts an exec (`runc exec`) or restores a checkpointed init (`runc restore`).
    fn start_new_process(
        &self,
        r: &api::StartRequest,
        launch: &NewProcess<'_>,
    ) -> RpcResult<(i32, Option<Prepared>)> {
        let NewProcess {
            runc,
            bundle,
            opts,
            stdio: stdio_cfg,
            spec,
            restore,
        } = *launch;
        let mut prepared = stdio::prepare_with_env(
            stdio_cfg,
            owner(opts),
            &stdio::logger_env(&r.id, &self.namespace),
        )
        .map_err(|e| invalid(format!("process io: {e}")))?;
        let console_socket = prepared.console.as_ref().map(|c| c.path().to_path_buf());
        let pid_file = if restore {
            bundle.join("init.pid")
        } else {
            bundle.join(format!("{}.pid", r.exec_id))
        };
        let _ = std::fs::remove_file(&pid_file);
        if restore {
            let image = String::from_utf8_lossy(spec).into_owned();
            runc.restore(
                &r.id,
                bundle,
                RestoreOpts {
                    image_path: PathBuf::from(image),
                    work_path: Some(work_path(opts, bundle)),
                    detach: true,
                    pid_file: Some(pid_file.clone()),
                    no_pivot: opts.no_pivot_root,
                    console_socket,
                    io: std::mem::take(&mut prepared.io),
                    ..Default::default()
                },
            )
            .map_err(from_runc)?;
        } else {
            runc.exec(
                &r.id,
                spec,
                ExecOpts {
                    pid_file: Some(pid_file.clone()),
                    console_socket,
                    detach: true,
                    io: std::mem::take(&mut prepared.io),
                    ..Default::default()
                },
            )
            .map_err(from_runc)?;
        }
        if stdio_cfg.terminal {
            let console = prepared
                .attach_console(CONSOLE_TIMEOUT)
                .map_err(|e| internal(format!("terminal: {e}")))?;
            if let Some(p) = self
                .lock()
                .container_mut(&r.id)
                .and_then(|c| c.process_mut(&r.exec_id))
            {
                p.console = Some(console);
            }
        }
        let pid = read_pid(&pid_file)?;
        Ok((pid, Some(prepared)))
    }

    // ---- Delete ------------------------------------------------------------------

    fn delete(&self, r: api::DeleteRequest) -> RpcResult<api::DeleteResponse> {
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
            if p.is_alive() || p.starting {
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
            return Ok(delete_response(pid, p.exit));
        }
        let (runc, alive) = {
            let tasks = self.lock();
            let c = tasks
                .container(&r.id)
                .ok_or_else(|| not_found(format!("container {} not found", r.id)))?;
            (
                c.runc.clone(),
                c.init.is_alive() && c.init.status == ProcStatus::Running,
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
        let exit = container.init.exit;
        let (code, at) = exit
            .map(|e| (e.code, e.exited_at))
            .unwrap_or((0, SystemTime::now()));
        self.events.delete(&r.id, pid, code, at);
        Ok(delete_response(pid, exit))
    }

    fn bundle_of(&self, id: &str) -> Option<PathBuf> {
        self.lock().container(id).map(|c| c.bundle.clone())
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
                .map(|p| p.exit.is_none() || (p.open_pumps == 0 && p.exit_delivered))
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

    // ---- Exec ----------------------------------------------------------------------

    fn exec(
        &self,
        r: api::ExecProcessRequest,
    ) -> RpcResult<protobuf::well_known_types::empty::Empty> {
        fifo::validate_id(&r.exec_id).map_err(|e| invalid_id("exec", e))?;
        let spec = r
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or_else(|| invalid("exec without a process spec"))?;
        // runc allocates a terminal from the process spec, containerd asks for one in the
        // request: make them agree (containerd's client does not always set both).
        // Decoded as runc (Go) decodes it, so bytes that are not UTF-8 in args or env reach
        // the process as runc would pass them from the original (the spec is re-encoded).
        let mut process: serde_json::Value =
            serde_json::from_str(&crate::supervisor::go_json::as_go_reads(&spec))
                .map_err(|e| invalid(format!("exec process spec is not valid JSON: {e}")))?;
        let Some(obj) = process.as_object_mut() else {
            return Err(invalid("exec process spec is not a JSON object"));
        };
        obj.insert("terminal".into(), serde_json::Value::Bool(r.terminal));
        let spec = serde_json::to_vec(&process).map_err(|e| internal(e.to_string()))?;
        {
            let mut tasks = self.lock();
            let c = tasks
                .container_mut(&r.id)
                .ok_or_else(|| not_found(format!("container {} not found", r.id)))?;
            if c.execs.contains_key(&r.exec_id) {
                return Err(already_exists(format!(
                    "exec process {} already exists",
                    r.exec_id
                )));
            }
            // An init whose exit is held back for execs being started still takes execs
            // (their start will fail with runc's message), as with the Go shim.
            if c.init_exit_reported() || c.init.status == ProcStatus::Created {
                return Err(failed_precondition(format!(
                    "container {} is not running",
                    r.id
                )));
            }
            // An exec spools as its container does (its own files, its own name).
            let spool = c.init.stdio.spool.clone().map(|mut s| {
                s.name = format!("{}/{}", r.id, r.exec_id);
                s
            });
            let stdio = StdioConfig {
                stdin: r.stdin.clone(),
                stdout: r.stdout.clone(),
                stderr: r.stderr.clone(),
                terminal: r.terminal,
                spool,
            };
            c.execs
                .insert(r.exec_id.clone(), Process::new(&r.exec_id, stdio, spec));
        }
        self.events.exec_added(&r.id, &r.exec_id);
        Ok(Default::default())
    }

    // ---- small RPCs ------------------------------------------------------------------

    fn resize_pty(
        &self,
        r: api::ResizePtyRequest,
    ) -> RpcResult<protobuf::well_known_types::empty::Empty> {
        let tasks = self.lock();
        let p = find(&tasks, &r.id, &r.exec_id)?;
        if let Some(console) = &p.console {
            use std::os::fd::AsFd;
            let w = u16::try_from(r.width).unwrap_or(u16::MAX);
            let h = u16::try_from(r.height).unwrap_or(u16::MAX);
            crate::supervisor::tty::resize(console.as_fd(), w, h)
                .map_err(|e| internal(format!("resize pty: {e}")))?;
        }
        Ok(Default::default())
    }

    fn close_io(
        &self,
        r: api::CloseIORequest,
    ) -> RpcResult<protobuf::well_known_types::empty::Empty> {
        let mut tasks = self.lock();
        let c = tasks
            .container_mut(&r.id)
            .ok_or_else(|| not_found(format!("container {} not found", r.id)))?;
        let p = c
            .process_mut(&r.exec_id)
            .ok_or_else(|| not_found(format!("process {} not found", r.exec_id)))?;
        if r.stdin {
            p.stdin_closer = None;
        }
        Ok(Default::default())
    }

    fn state(&self, r: api::StateRequest) -> RpcResult<api::StateResponse> {
        let tasks = self.lock();
        let c = tasks
            .container(&r.id)
            .ok_or_else(|| not_found(format!("container {} not found", r.id)))?;
        let p = c
            .process(&r.exec_id)
            .ok_or_else(|| not_found(format!("process {} does not exist", r.exec_id)))?;
        let mut resp = api::StateResponse::new();
        resp.id = if r.exec_id.is_empty() {
            r.id.clone()
        } else {
            r.exec_id.clone()
        };
        resp.exec_id = r.exec_id.clone();
        resp.bundle = c.bundle.to_string_lossy().into_owned();
        resp.pid = p.pid.max(0) as u32;
        let status = match (p.status, p.exit) {
            (_, Some(_)) => TaskStatus::STOPPED,
            (ProcStatus::Created, None) => TaskStatus::CREATED,
            (ProcStatus::Running, None) if r.exec_id.is_empty() && c.paused => TaskStatus::PAUSED,
            (ProcStatus::Running, None) => TaskStatus::RUNNING,
            (ProcStatus::Stopped, None) => TaskStatus::STOPPED,
        };
        resp.status = status.into();
        resp.stdin = p.stdio.stdin.clone();
        resp.stdout = p.stdio.stdout.clone();
        resp.stderr = p.stdio.stderr.clone();
        resp.terminal = p.stdio.terminal;
        if let Some(e) = p.exit {
            resp.exit_status = e.code as u32;
            resp.exited_at = timestamp(e.exited_at);
        }
        Ok(resp)
    }

    fn kill(&self, r: api::KillRequest) -> RpcResult<protobuf::well_known_types::empty::Empty> {
        let signal = i32::try_from(r.signal).map_err(|_| invalid("signal out of range"))?;
        let runc = {
            let tasks = self.lock();
            let c = tasks
                .container(&r.id)
                .ok_or_else(|| not_found(format!("container {} not found", r.id)))?;
            if !r.exec_id.is_empty() {
                let p = c
                    .execs
                    .get(&r.exec_id)
                    .ok_or_else(|| not_found(format!("process {} not found", r.exec_id)))?;
                if p.exit.is_some() {
                    return Err(not_found("process already finished"));
                }
                if p.pid <= 0 {
                    return Err(not_found(format!("process {} not started", r.exec_id)));
                }
                // Signalled under the table lock: the reaper cannot reap (and the kernel
                // cannot recycle) the pid meanwhile; the pidfd makes it exact anyway.
                let sent = match &p.pidfd {
                    Some(fd) => crate::supervisor::pidfd::send_signal(fd, signal),
                    None => nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p.pid),
                        nix::sys::signal::Signal::try_from(signal)
                            .map_err(|_| invalid(format!("bad signal {signal}")))?,
                    )
                    .map_err(std::io::Error::from),
                };
                return match sent {
                    Ok(()) => Ok(Default::default()),
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                        Err(not_found("process already finished"))
                    }
                    Err(e) => Err(internal(format!("kill: {e}"))),
                };
            }
            if c.init.exit.is_some() && !r.all {
                return Err(not_found("process already finished"));
            }
            c.runc.clone()
        };
        match runc.kill(&r.id, signal, r.all) {
            Ok(()) => Ok(Default::default()),
            // As the Go shim answers a signal to a process that is gone.
            Err(e) if e.kind() == runc_wrapper::ErrorKind::NotRunning => {
                Err(not_found("process already finished"))
            }
            Err(e) => Err(from_runc(e)),
        }
    }

    fn pids(&self, r: api::PidsRequest) -> RpcResult<api::PidsResponse> {
        let (runc, execs) = {
            let tasks = self.lock();
            let c = tasks
                .container(&r.id)
                .ok_or_else(|| not_found(format!("container {} not found", r.id)))?;
            let execs: HashMap<i32, String> = c
                .execs
                .values()
                .filter(|p| p.pid > 0)
                .map(|p| (p.pid, p.exec_id.clone()))
                .collect();
            (c.runc.clone(), execs)
        };
        let pids = runc.ps(&r.id).map_err(from_runc)?;
        let mut resp = api::PidsResponse::new();
        for pid in pids {
            let mut info = ProcessInfo::new();
            info.pid = pid.max(0) as u32;
            if let Some(exec_id) = execs.get(&pid) {
                let mut d = containerd_shim_protos::shim::oci::ProcessDetails::new();
                d.exec_id = exec_id.clone();
                if let Ok(value) = d.write_to_bytes() {
                    let mut any = Any::new();
                    any.type_url = "containerd.runc.v1.ProcessDetails".into();
                    any.value = value;
                    info.info = MessageField::some(any);
                }
            }
            resp.processes.push(info);
        }
        Ok(resp)
    }

    fn pause(&self, r: api::PauseRequest) -> RpcResult<protobuf::well_known_types::empty::Empty> {
        let runc = self.runc_of(&r.id)?;
        runc.pause(&r.id).map_err(from_runc)?;
        if let Some(c) = self.lock().container_mut(&r.id) {
            c.paused = true;
        }
        self.events.paused(&r.id);
        Ok(Default::default())
    }

    fn resume(&self, r: api::ResumeRequest) -> RpcResult<protobuf::well_known_types::empty::Empty> {
        let runc = self.runc_of(&r.id)?;
        runc.resume(&r.id).map_err(from_runc)?;
        if let Some(c) = self.lock().container_mut(&r.id) {
            c.paused = false;
        }
        self.events.resumed(&r.id);
        Ok(Default::default())
    }

    fn runc_of(&self, id: &str) -> RpcResult<Runc> {
        self.lock()
            .container(id)
            .map(|c| c.runc.clone())
            .ok_or_else(|| not_found(format!("container {id} not found")))
    }

    fn checkpoint(
        &self,
        r: api::CheckpointTaskRequest,
    ) -> RpcResult<protobuf::well_known_types::empty::Empty> {
        let (runc, bundle, opts) = {
            let tasks = self.lock();
            let c = tasks
                .container(&r.id)
                .ok_or_else(|| not_found(format!("container {} not found", r.id)))?;
            (c.runc.clone(), c.bundle.clone(), c.options.clone())
        };
        let copts = match r.options.as_ref() {
            Some(a) => decode_checkpoint_options(&a.type_url, &a.value)
                .map_err(|e| invalid(format!("checkpoint options: {e}")))?,
            None => Default::default(),
        };
        let image = if !copts.image_path.is_empty() {
            PathBuf::from(&copts.image_path)
        } else {
            PathBuf::from(&r.path)
        };
        let work = if !copts.work_path.is_empty() {
            PathBuf::from(&copts.work_path)
        } else {
            work_path(&opts, &bundle)
        };
        runc.checkpoint(
            &r.id,
            &CheckpointOpts {
                image_path: image.clone(),
                work_path: Some(work),
                leave_running: !copts.exit,
                tcp_established: copts.open_tcp,
                ext_unix_sk: copts.external_unix_sockets,
                shell_job: copts.terminal,
                file_locks: copts.file_locks,
                empty_ns: copts.empty_namespaces.clone(),
                ..Default::default()
            },
        )
        .map_err(from_runc)?;
        self.events.checkpointed(&r.id, &image.to_string_lossy());
        Ok(Default::default())
    }

    fn update(
        &self,
        r: api::UpdateTaskRequest,
    ) -> RpcResult<protobuf::well_known_types::empty::Empty> {
        let runc = self.runc_of(&r.id)?;
        let resources = r
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or_else(|| invalid("update without resources"))?;
        runc.update(&r.id, &resources).map_err(from_runc)?;
        Ok(Default::default())
    }

    fn stats(&self, r: api::StatsRequest) -> RpcResult<api::StatsResponse> {
        let pid = {
            let tasks = self.lock();
            let c = tasks
                .container(&r.id)
                .ok_or_else(|| not_found(format!("container {} not found", r.id)))?;
            if !c.init.is_alive() {
                return Err(not_found(format!("container {} is not running", r.id)));
            }
            c.init.pid
        };
        let (type_url, value) = crate::cgroups::metrics::collect_metrics(pid)
            .map_err(|e| internal(format!("stats: {e}")))?;
        let mut any = Any::new();
        any.type_url = type_url;
        any.value = value;
        let mut resp = api::StatsResponse::new();
        resp.stats = MessageField::some(any);
        Ok(resp)
    }

    fn connect(&self, r: api::ConnectRequest) -> RpcResult<api::ConnectResponse> {
        let mut resp = api::ConnectResponse::new();
        resp.shim_pid = std::process::id();
        resp.version = env!("CARGO_PKG_VERSION").into();
        if let Some(c) = self.lock().container(&r.id) {
            resp.task_pid = c.init.pid.max(0) as u32;
        }
        Ok(resp)
    }

    fn shutdown(
        &self,
        _r: api::ShutdownRequest,
    ) -> RpcResult<protobuf::well_known_types::empty::Empty> {
        if self.lock().containers.is_empty() {
            self.post(LoopMsg::Shutdown);
        }
        Ok(Default::default())
    }

    fn wait(&self, conn: u32, stream: u32, r: &api::WaitRequest) -> Option<Reply> {
        let mut tasks = self.lock();
        let Some(c) = tasks.container_mut(&r.id) else {
            return Some(Err(not_found(format!("container {} not found", r.id))));
        };
        let Some(p) = c.process_mut(&r.exec_id) else {
            return Some(Err(not_found(format!("process {} not found", r.exec_id))));
        };
        // An exit that is recorded but not reported yet (held for the output to drain, for
        // a Kill's reply, or an init's for its execs) parks the Wait like a live process.
        // Also while a spool still feeds the output to a reader (bounded): a client stops
        // reading once its Wait returns (ctr closes its FIFOs).
        let done = p.exit.filter(|_| p.exit_delivered && p.spooling == 0);
        match done {
            Some(e) => Some(wait_reply(e.code, e.exited_at)),
            None if p.waiters.len() >= MAX_WAITERS => Some(Err(resource_exhausted(format!(
                "{MAX_WAITERS} Wait calls are parked on {} already",
                display_id(&r.id, &r.exec_id)
            )))),
            None => {
                p.waiters.push((conn, stream));
                None
            }
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

fn encode<Resp: Message>(resp: Resp) -> Reply {
    resp.write_to_bytes()
        .map_err(|e| internal(format!("encode response: {e}")))
}

/// An id refused by `fifo::validate_id`, named as what it is (a container or an exec id).
fn invalid_id(what: &str, e: fifo::Error) -> ttrpc::proto::Status {
    match e {
        fifo::Error::InvalidId { id, reason } => {
            invalid(format!("{what} id {id:?} is invalid: {reason}"))
        }
        other => invalid(other.to_string()),
    }
}

/// The call gate key of a process.
fn process_of(id: &str, exec_id: &str) -> (String, String) {
    (id.to_string(), exec_id.to_string())
}

fn wait_reply(code: i32, at: SystemTime) -> Reply {
    let mut w = api::WaitResponse::new();
    w.exit_status = code as u32;
    w.exited_at = timestamp(at);
    w.write_to_bytes()
        .map_err(|e| internal(format!("encode wait response: {e}")))
}

fn delete_response(pid: i32, exit: Option<fifo::ExitRecord>) -> api::DeleteResponse {
    let mut d = api::DeleteResponse::new();
    d.pid = pid.max(0) as u32;
    let (code, at) = exit
        .map(|e| (e.code, e.exited_at))
        .unwrap_or((0, SystemTime::now()));
    d.exit_status = code as u32;
    d.exited_at = timestamp(at);
    d
}

fn find<'a>(tasks: &'a Tasks, id: &str, exec_id: &str) -> RpcResult<&'a Process> {
    tasks
        .container(id)
        .ok_or_else(|| not_found(format!("container {id} not found")))?
        .process(exec_id)
        .ok_or_else(|| not_found(format!("process {exec_id} not found")))
}

fn read_pid(path: &Path) -> RpcResult<i32> {
    match fifo::read_pid_file(path) {
        Ok(Some(pid)) => Ok(pid),
        Ok(None) => Err(internal(format!(
            "runc wrote no pid file at {}",
            path.display()
        ))),
        Err(e) => Err(internal(e.to_string())),
    }
}

fn owner(opts: &RuncOptions) -> Option<(u32, u32)> {
    (opts.io_uid != 0 || opts.io_gid != 0).then_some((opts.io_uid, opts.io_gid))
}

fn work_path(opts: &RuncOptions, bundle: &Path) -> PathBuf {
    if opts.criu_work_path.is_empty() {
        bundle.join("work")
    } else {
        PathBuf::from(&opts.criu_work_path)
    }
}

fn display_id(id: &str, exec_id: &str) -> String {
    if exec_id.is_empty() {
        id.to_string()
    } else {
        format!("{id}/{exec_id}")
    }
}

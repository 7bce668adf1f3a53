//! Create and Start: a container's and an exec's life through runc, the launch itself
//! being the core's (`supervisor::launch`). The id checks and every transition happen on
//! the loop; mounting, stdio and runc on a worker.

use super::{invalid_id, work_path, Job, Outcome, Shim, Step};
use crate::containerd::cgroups::oom::OomWatcher;
use crate::containerd::errors::*;
use crate::containerd::events::task_events::event_pid;
use crate::containerd::options::{decode_options, RuncOptions};
use crate::containerd::process_table::{
    ContainerRecord, LaunchSpec, Missing, ProcKey, ProcessRecord,
};
use crate::containerd::shim::RuncFactory;
use crate::containerd::stdio_uris::{self as stdio, Prepared, StdioConfig};
use crate::containerd::ttrpc::Reply;
use crate::process_core::epoll::Poller;
use crate::process_core::launch::{
    launch, Committed, ContainerFlags, Launch, LaunchError, LaunchIo,
};
use crate::process_core::process_stdio::ProcessStdio;
use containerd_shim_protos::shim::shim as api;
use containerd_shim_protos::types::mount::Mount;
use runc_wrapper::Runc;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// What a Create made, for the loop to record.
#[derive(Debug)]
pub struct CreatedInit {
    bundle: PathBuf,
    options: RuncOptions,
    runc: Runc,
    shares_pid_ns: bool,
    rootfs_mounted: Option<PathBuf>,
    cgroup_procs: Option<PathBuf>,
    cgroups: Option<crate::containerd::cgroups::ProcessCgroups>,
    stdio: StdioConfig,
    launch: LaunchSpec,
    /// 0 for a container restored at Start.
    pid: i32,
    io: LaunchedIo,
    oom: Option<OomWatcher>,
    /// For TaskCreate.
    rootfs: Vec<Mount>,
    checkpoint: String,
    /// The bundle's empty `exit.json`, open for the init's exit (`exit_status::placeholder`).
    exit_file: Option<std::fs::File>,
}

/// What a launch hands over besides the pid: the pidfd, the pty master and the pumps.
#[derive(Debug, Default)]
struct LaunchedIo {
    pidfd: Option<OwnedFd>,
    console: Option<File>,
    stdin_closer: Option<File>,
    pumps: ProcessStdio,
}

impl LaunchedIo {
    fn new(committed: Committed, console: Option<File>, mut prepared: Prepared) -> Self {
        LaunchedIo {
            pidfd: committed.pidfd,
            console,
            stdin_closer: prepared.stdin_closer.take(),
            pumps: std::mem::take(&mut prepared.stdio),
        }
    }

    /// Gives the process its console, stdin and pumps (registered by the loop).
    fn hand_to(self, p: &mut ProcessRecord) -> Option<OwnedFd> {
        if self.console.is_some() {
            p.console = self.console;
        }
        p.stdin.hand_over(self.stdin_closer);
        p.open_outputs = self.pumps.open_outputs();
        p.pumps = self.pumps;
        self.pidfd
    }
}

/// What Start started: the process's pid and, for a launched one, its stdio.
#[derive(Debug)]
pub struct StartedProcess {
    /// `None` for a created init that `runc start` let run (its pid is known since Create).
    launched: Option<(i32, LaunchedIo)>,
    /// A restored init's OOM watcher.
    oom: Option<OomWatcher>,
    /// A restored init's cgroups.
    cgroups: Option<crate::containerd::cgroups::ProcessCgroups>,
    /// An exec's pid file, read and no longer needed: the worker removes it once the
    /// outcome is on its way to the loop ([`Outcome::take_spent_file`]), so that neither
    /// this Start nor the exec's Delete waits for the file system (an unlink on an ext4
    /// `/run` is 0.1-0.2 ms). An init's stays: `delete` reads it after a shim crash.
    pub(super) spent_pid_file: Option<PathBuf>,
}

impl Shim {
    pub(super) fn create(&mut self, r: api::CreateTaskRequest) -> Step {
        if let Err(e) = fifo::validate_id(&r.id) {
            return Step::Reply(Err(invalid_id("container", e)));
        }
        // Taken from here until the worker's outcome is applied: a second Create of the
        // same id fails now, never racing the first one's mount or launch.
        if let Err(taken) = self.table.reserve(&r.id) {
            return Step::Reply(Err(already_exists(taken.to_string())));
        }
        let job = CreateJob {
            request: r,
            start_options: self.start_options.clone(),
            runc: self.runc.clone(),
        };
        Step::Work(Box::new(move || {
            let id = job.request.id.clone();
            Outcome::Created {
                id,
                result: job.run().map(Box::new),
            }
        }))
    }

    /// Records the container a Create made (or frees its id).
    pub(super) fn created(
        &mut self,
        id: &str,
        result: RpcResult<Box<CreatedInit>>,
        poller: &Poller,
    ) -> Reply {
        let c = match result {
            Ok(c) => *c,
            Err(e) => {
                self.table.release(id);
                return Err(e);
            }
        };
        let container = ContainerRecord {
            id: id.to_string(),
            bundle: c.bundle.clone(),
            init: ProcKey(0),
            execs: BTreeMap::new(),
            paused: false,
            deleting: false,
            shares_pid_ns: c.shares_pid_ns,
            rootfs_mounted: c.rootfs_mounted,
            options: c.options,
            runc: c.runc,
            cgroup_procs: c.cgroup_procs,
            cgroups: c.cgroups,
            stat_files: Default::default(),
            oom: None,
            exit_file: c.exit_file,
        };
        let mut init = ProcessRecord::new(id, "", c.stdio.clone(), c.launch);
        let pidfd = c.io.hand_to(&mut init);
        let key = self.table.insert_container(container, init);
        let early = (c.pid > 0)
            .then(|| self.table.register_pid(key, c.pid, pidfd))
            .flatten();
        self.start_pumps(key, poller);
        if let Some(watcher) = c.oom {
            self.watch_oom(key, watcher, poller);
        }
        self.events.create(
            id,
            &c.bundle.to_string_lossy(),
            c.rootfs,
            &c.stdio,
            &c.checkpoint,
            c.pid,
        );
        if let Some(record) = early {
            let report = self.table.early_exit(key, record);
            self.queue_exits(report, poller);
        }
        let mut resp = api::CreateTaskResponse::new();
        resp.pid = event_pid(c.pid);
        super::encode(resp)
    }

    pub(super) fn start(&mut self, r: api::StartRequest) -> Step {
        match self.start_step(r) {
            Ok(step) => step,
            Err(e) => Step::Reply(Err(e)),
        }
    }

    fn start_step(&mut self, r: api::StartRequest) -> RpcResult<Step> {
        let c = self.table.container(&r.id)?;
        if c.deleting {
            return Err(failed_precondition(format!(
                "container {} is being deleted",
                r.id
            )));
        }
        let (runc, bundle, opts) = (c.runc.clone(), c.bundle.clone(), c.options.clone());
        let (key, p) = self.table.lookup_mut(&r.id, &r.exec_id)?;
        if p.begin_start().is_err() {
            return Err(failed_precondition(format!(
                "process {} cannot be started: it is not in the created state",
                p.display()
            )));
        }
        let job: Job = match p.launch.clone() {
            LaunchSpec::CreatedInit => {
                let id = r.id.clone();
                Box::new(move || Outcome::Started {
                    key,
                    result: runc.start(&id).map_err(from_runc).map(|()| {
                        Box::new(StartedProcess {
                            launched: None,
                            oom: None,
                            cgroups: None,
                            spent_pid_file: None,
                        })
                    }),
                })
            }
            spec => {
                let job = LaunchJob {
                    runc,
                    id: r.id.clone(),
                    exec_id: r.exec_id.clone(),
                    bundle,
                    opts,
                    stdio: p.stdio.clone(),
                    spec,
                    namespace: self.namespace.clone(),
                };
                Box::new(move || Outcome::Started {
                    key,
                    result: job.run().map(Box::new),
                })
            }
        };
        Ok(Step::Work(job))
    }

    /// Records what a Start did: the process runs (its exit held until TaskStart is
    /// out), or it is created again.
    pub(super) fn started(
        &mut self,
        key: ProcKey,
        result: RpcResult<Box<StartedProcess>>,
        poller: &Poller,
    ) -> Reply {
        let started = match result {
            Ok(s) => *s,
            Err(e) => {
                let report = self.table.start_failed(key);
                self.queue_exits(report, poller);
                return Err(e);
            }
        };
        // A Start holds no gate: a Delete cannot remove a process being started (its
        // state says so), so the record is there.
        let p = self
            .table
            .get_mut(key)
            .ok_or(Missing::Gone(format!("#{}", key.0)))?;
        let restore = matches!(p.launch, LaunchSpec::Restore(_));
        let is_init = p.exec_id.is_empty();
        let (container_id, exec_id) = (p.container_id.clone(), p.exec_id.clone());
        let mut early = None;
        let launched = started.launched.is_some();
        if let Some((pid, io)) = started.launched {
            let pidfd = io.hand_to(p);
            early = self.table.register_pid(key, pid, pidfd);
            if restore {
                if let Ok(c) = self.table.container_mut(&container_id) {
                    if c.shares_pid_ns {
                        c.cgroup_procs = crate::containerd::kill_all::procs_file_of(pid);
                    }
                    c.cgroups = started.cgroups.clone();
                }
            }
        }
        let p = self
            .table
            .get_mut(key)
            .ok_or(Missing::Gone(format!("#{}", key.0)))?;
        // Its exits stay held until the start is reported (start_done).
        if let Err(e) = p.launched() {
            log::warn!("start of {}: {e}", p.display());
        }
        if let Some(record) = early {
            // Unless it holds one already (a pid exits once).
            let _ = p.hold_exit(record);
        }
        let pid = p.pid;
        if launched {
            // A created init's pumps run since Create.
            self.start_pumps(key, poller);
        }
        if let Some(watcher) = started.oom {
            self.watch_oom(key, watcher, poller);
        }
        if is_init {
            self.events.start(&container_id, pid);
        } else {
            self.events.exec_started(&container_id, &exec_id, pid);
        }
        let report = self.table.start_done(key);
        self.queue_exits(report, poller);
        let mut resp = api::StartResponse::new();
        resp.pid = event_pid(pid);
        super::encode(resp)
    }
}

/// A Create, as a worker runs it.
struct CreateJob {
    request: api::CreateTaskRequest,
    start_options: RuncOptions,
    runc: RuncFactory,
}

impl CreateJob {
    /// Reads the spec and options, mounts the rootfs, opens the stdio and creates the
    /// container (or, for a restore, only records what Start will restore). A failure
    /// leaves nothing: the launch undoes itself, the mount is undone here.
    fn run(self) -> RpcResult<CreatedInit> {
        let r = self.request;
        let bundle = PathBuf::from(&r.bundle);
        let spec =
            crate::containerd::bundle::read_spec(&bundle).map_err(|e| invalid(e.to_string()))?;
        let mut opts = self.start_options;
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
        if let Err(e) = opts.record_in_bundle(&bundle) {
            log::warn!("options.json: {e}");
        }
        let mounted = RootfsMount::mount(&r.rootfs, &bundle.join("rootfs"))?;
        let spool = crate::containerd::spool_setting::for_container(
            &spec.annotations,
            &opts.spool_limit,
            &opts.spool_policy,
            &bundle,
            &r.id,
        )
        .map_err(|e| invalid(e.to_string()))?;
        let stdio_cfg = StdioConfig {
            stdin: r.stdin.clone(),
            stdout: r.stdout.clone(),
            stderr: r.stderr.clone(),
            terminal: r.terminal,
            spool,
        };
        let runc = self.runc.runc(&opts, &bundle);
        let (pid, io, launch_spec) = if !restore_from.is_empty() {
            // Restored at Start, like the Go shim: the IO is set up then.
            (
                0,
                LaunchedIo::default(),
                LaunchSpec::Restore(PathBuf::from(&restore_from)),
            )
        } else {
            let mut prepared = stdio::prepare_with_env(
                &stdio_cfg,
                owner(&opts),
                &stdio::logger_env(&r.id, self.runc.namespace()),
            )
            .map_err(|e| invalid(format!("container io: {e}")))?;
            let plan = Launch::Init {
                bundle: &bundle,
                flags: container_flags(&opts),
            };
            // A failed launch has undone itself (the container is deleted) by now.
            let (committed, console) =
                launch_wired(&runc, &r.id, plan, &mut prepared, bundle.join("init.pid"))?;
            let pid = committed.pid;
            (
                pid,
                LaunchedIo::new(committed, console, prepared),
                LaunchSpec::CreatedInit,
            )
        };
        // Watched here, while the pid surely is that process (the loop gets it only
        // later, maybe dead).
        let oom = (pid > 0).then(|| oom_watcher(&r.id, pid)).flatten();
        // Made here, off the loop: the loop only writes the exit into it.
        let exit_file = crate::containerd::exit_status::placeholder(&bundle)
            .map_err(|e| log::warn!("exit record: {e}; written whole at the exit instead"))
            .ok();
        Ok(CreatedInit {
            exit_file,
            bundle,
            shares_pid_ns: !spec.own_pid_namespace,
            cgroup_procs: if !spec.own_pid_namespace && pid > 0 {
                crate::containerd::kill_all::procs_file_of(pid)
            } else {
                None
            },
            cgroups: cgroups_of(pid),
            options: opts,
            runc,
            rootfs_mounted: mounted.keep(),
            stdio: stdio_cfg,
            launch: launch_spec,
            pid,
            io,
            oom,
            rootfs: r.rootfs,
            checkpoint: r.checkpoint,
        })
    }
}

/// The rootfs this Create mounted, unmounted again unless kept.
struct RootfsMount(Option<PathBuf>);

impl RootfsMount {
    fn mount(mounts: &[Mount], rootfs: &Path) -> RpcResult<Self> {
        if mounts.is_empty() {
            return Ok(RootfsMount(None));
        }
        let specs: Vec<_> = mounts
            .iter()
            .map(|m| crate::containerd::mount::MountSpec {
                kind: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        crate::containerd::mount::mount_all(&specs, rootfs).map_err(|e| internal(e.to_string()))?;
        Ok(RootfsMount(Some(rootfs.to_path_buf())))
    }

    fn keep(mut self) -> Option<PathBuf> {
        self.0.take()
    }
}

impl Drop for RootfsMount {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            unmount(&path);
        }
    }
}

/// Unmounts what a Create mounted (on failure, and at Delete).
pub(super) fn unmount(path: &Path) {
    if let Err(e) = crate::containerd::mount::unmount_all(path) {
        log::warn!("unmount {}: {e}", path.display());
    }
}

/// The cgroups of a just created (or restored) init, while its pid surely is its own.
fn cgroups_of(pid: i32) -> Option<crate::containerd::cgroups::ProcessCgroups> {
    if pid <= 0 {
        return None;
    }
    crate::containerd::cgroups::of_pid(pid)
        .map_err(|e| log::debug!("cgroups of pid {pid}: {e}"))
        .ok()
}

fn oom_watcher(id: &str, pid: i32) -> Option<OomWatcher> {
    match OomWatcher::new(pid) {
        Ok(w) => Some(w),
        Err(e) => {
            log::info!("no OOM events for {id}: {e}");
            None
        }
    }
}

/// An exec's Start (`runc exec`) or a restored init's (`runc restore`), as a worker runs
/// it: its stdio connected to containerd's.
struct LaunchJob {
    runc: Runc,
    id: String,
    exec_id: String,
    bundle: PathBuf,
    opts: RuncOptions,
    stdio: StdioConfig,
    spec: LaunchSpec,
    namespace: String,
}

impl LaunchJob {
    fn run(self) -> RpcResult<StartedProcess> {
        let mut prepared = stdio::prepare_with_env(
            &self.stdio,
            owner(&self.opts),
            &stdio::logger_env(&self.id, &self.namespace),
        )
        .map_err(|e| invalid(format!("process io: {e}")))?;
        let work = work_path(&self.opts, &self.bundle);
        let (what, pid_file) = match &self.spec {
            LaunchSpec::Restore(image) => (
                Launch::Restore {
                    bundle: &self.bundle,
                    image,
                    work: &work,
                    no_pivot: self.opts.no_pivot_root,
                },
                self.bundle.join("init.pid"),
            ),
            LaunchSpec::Exec(spec) => (
                Launch::Exec {
                    spec,
                    spec_dir: None,
                },
                self.bundle.join(format!("{}.pid", self.exec_id)),
            ),
            LaunchSpec::CreatedInit => {
                return Err(internal("a created init is started, not launched"))
            }
        };
        let restore = matches!(self.spec, LaunchSpec::Restore(_));
        let spent_pid_file = matches!(self.spec, LaunchSpec::Exec(_)).then(|| pid_file.clone());
        let (committed, console) =
            match launch_wired(&self.runc, &self.id, what, &mut prepared, pid_file) {
                Ok(launched) => launched,
                Err(e) => {
                    if let Some(path) = &spent_pid_file {
                        let _ = std::fs::remove_file(path);
                    }
                    return Err(e);
                }
            };
        let pid = committed.pid;
        let oom = restore.then(|| oom_watcher(&self.id, pid)).flatten();
        let cgroups = if restore { cgroups_of(pid) } else { None };
        Ok(StartedProcess {
            launched: Some((pid, LaunchedIo::new(committed, console, prepared))),
            oom,
            cgroups,
            spent_pid_file,
        })
    }
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
) -> RpcResult<(Committed, Option<File>)> {
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

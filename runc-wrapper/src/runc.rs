//! [`Runc`]: the configured runc binary and one method per verb.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::command::{Invoker, StderrAccess};
use crate::error::{Error, Result};
use crate::monitor::{DefaultMonitor, ProcessMonitor};
use crate::options::{ArgsExt, CheckpointOpts, CreateOpts, ExecOpts, RestoreOpts};
use crate::types::{self, State, Stats};

/// A configured runc-compatible binary (runc, crun, ...) plus its global options.
///
/// Every method starts one runc process through the configured [`ProcessMonitor`] and waits for it
/// through the same monitor; nothing is started with `Command::output`/`status`. Cheap to clone.
///
/// Argument order is always `runc [global options] VERB [verb options] [extra args] ID [...]`.
/// Verbs whose process inherits runc's stdio (`create`, `run`, `exec`, `restore`) have their
/// error messages from the log file (set [`RuncBuilder::log`] to get runc's own message in
/// [`Error::Runtime`]), else from runc's stderr where it can be read without taking the
/// process's: a pipe of this crate's when the process has a terminal, or
/// [`ProcessIo::stderr_reader`](crate::ProcessIo::stderr_reader) after a failure before the process ran. All other verbs
/// capture stderr (its bounded tail) as well.
#[derive(Clone, Debug)]
pub struct Runc {
    binary: PathBuf,
    root: Option<PathBuf>,
    log: Option<PathBuf>,
    systemd_cgroup: bool,
    criu: Option<PathBuf>,
    debug: bool,
    monitor: Arc<dyn ProcessMonitor>,
    /// Set by [`Runc::with_deadline`]; else the monitor's ([`ProcessMonitor::deadline`]).
    deadline: Option<Instant>,
}

/// How long the `delete --force` that clears away a `create` killed at its deadline may take.
const CLEANUP_LIMIT: Duration = Duration::from_secs(10);

/// Builder for [`Runc`]; every setting is optional.
#[derive(Debug)]
pub struct RuncBuilder {
    runc: Runc,
}

impl Default for Runc {
    fn default() -> Self {
        Self::new()
    }
}

impl Runc {
    /// A builder starting from [`Runc::new`]'s defaults.
    pub fn builder() -> RuncBuilder {
        RuncBuilder { runc: Self::new() }
    }

    /// Runc with defaults: binary `runc` looked up in `PATH`, no global options, [`DefaultMonitor`].
    pub fn new() -> Self {
        Runc {
            binary: PathBuf::from("runc"),
            root: None,
            log: None,
            systemd_cgroup: false,
            criu: None,
            debug: false,
            monitor: Arc::new(DefaultMonitor),
            deadline: None,
        }
    }

    /// A copy whose invocations must finish by `deadline` (instead of the monitor's
    /// [`ProcessMonitor::deadline`], if any): runc is then started in a process group of its
    /// own, and if it still runs at the deadline the group is killed with SIGKILL, runc is
    /// reaped, and the call fails with [`Error::DeadlineExceeded`] (at once, without running
    /// runc, when the deadline has already passed). A `create`, `run` or `restore` killed so is
    /// followed by `delete --force`, so no half-created container is left.
    pub fn with_deadline(&self, deadline: Instant) -> Runc {
        Runc {
            deadline: Some(deadline),
            ..self.clone()
        }
    }

    /// The deadline invocations must finish by: [`Runc::with_deadline`]'s, else the monitor's.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.or_else(|| self.monitor.deadline())
    }

    /// After `result` of a `create`/`run`/`restore` of `id`: if runc was killed at its deadline,
    /// whatever it had made of the container is deleted (runc removes a state dir without
    /// `state.json` too), with a deadline of its own since the call's has passed.
    fn clear_killed_create<T>(&self, id: &str, result: Result<T>) -> Result<T> {
        if let Err(Error::DeadlineExceeded { ran: Some(_), .. }) = &result {
            match self
                .with_deadline(Instant::now() + CLEANUP_LIMIT)
                .delete(id, true)
            {
                Ok(()) => {
                    log::info!("deleted container {id}, whose runc was killed at its deadline")
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => log::warn!("container {id}, whose runc was killed at its deadline: {e}"),
            }
        }
        result
    }

    /// The binary that is executed.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The `--root` state directory, if set.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// The `--log` file (JSON format), if set.
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// What one invocation of runc needs (`command.rs`), for this configuration.
    fn invoker(&self) -> Invoker<'_> {
        Invoker {
            binary: &self.binary,
            log: self.log.as_deref(),
            monitor: &*self.monitor,
            deadline: self.deadline(),
        }
    }

    /// Global options followed by `verb`.
    fn args(&self, verb: &str) -> Vec<OsString> {
        let mut a = Vec::with_capacity(12);
        a.opt("--root", self.root.as_deref());
        if let Some(log) = &self.log {
            a.opt("--log", Some(log));
            a.opt("--log-format", Some("json"));
        }
        a.flag("--systemd-cgroup", self.systemd_cgroup);
        a.opt("--criu", self.criu.as_deref());
        a.flag("--debug", self.debug);
        a.push(verb.into());
        a
    }

    fn create_args(&self, id: &str, bundle: &Path, opts: &CreateOpts) -> Result<Vec<OsString>> {
        validate_id(id)?;
        let mut a = self.args("create");
        opts.append_args(&mut a, bundle, false);
        a.push(id.into());
        Ok(a)
    }

    fn run_args(&self, id: &str, bundle: &Path, opts: &CreateOpts) -> Result<Vec<OsString>> {
        validate_id(id)?;
        let mut a = self.args("run");
        opts.append_args(&mut a, bundle, true);
        a.push(id.into());
        Ok(a)
    }

    fn exec_args(&self, id: &str, process_file: &Path, opts: &ExecOpts) -> Vec<OsString> {
        let mut a = self.args("exec");
        opts.append_args(&mut a, process_file);
        a.push(id.into());
        a
    }

    fn simple_args(&self, verb: &str, id: &str) -> Result<Vec<OsString>> {
        validate_id(id)?;
        let mut a = self.args(verb);
        a.push(id.into());
        Ok(a)
    }

    fn kill_args(&self, id: &str, signal: i32, all: bool) -> Result<Vec<OsString>> {
        validate_id(id)?;
        if signal < 0 {
            return Err(Error::InvalidArgument(format!(
                "invalid signal number {signal}"
            )));
        }
        let mut a = self.args("kill");
        a.flag("--all", all);
        a.push(id.into());
        a.push(signal.to_string().into());
        Ok(a)
    }

    fn delete_args(&self, id: &str, force: bool) -> Result<Vec<OsString>> {
        validate_id(id)?;
        let mut a = self.args("delete");
        a.flag("--force", force);
        a.push(id.into());
        Ok(a)
    }

    fn list_args(&self) -> Vec<OsString> {
        let mut a = self.args("list");
        a.opt("--format", Some("json"));
        a
    }

    fn ps_args(&self, id: &str) -> Result<Vec<OsString>> {
        validate_id(id)?;
        let mut a = self.args("ps");
        a.opt("--format", Some("json"));
        a.push(id.into());
        Ok(a)
    }

    fn update_args(&self, id: &str) -> Result<Vec<OsString>> {
        validate_id(id)?;
        let mut a = self.args("update");
        a.opt("--resources", Some("-"));
        a.push(id.into());
        Ok(a)
    }

    fn checkpoint_args(&self, id: &str, opts: &CheckpointOpts) -> Result<Vec<OsString>> {
        validate_id(id)?;
        validate_image_path(&opts.image_path)?;
        let mut a = self.args("checkpoint");
        opts.append_args(&mut a);
        a.push(id.into());
        Ok(a)
    }

    fn restore_args(&self, id: &str, bundle: &Path, opts: &RestoreOpts) -> Result<Vec<OsString>> {
        validate_id(id)?;
        validate_image_path(&opts.image_path)?;
        let mut a = self.args("restore");
        opts.append_args(&mut a, bundle);
        a.push(id.into());
        Ok(a)
    }

    fn stats_args(&self, id: &str) -> Result<Vec<OsString>> {
        validate_id(id)?;
        let mut a = self.args("events");
        a.flag("--stats", true);
        a.push(id.into());
        Ok(a)
    }

    /// `runc create`: creates the container from `bundle` without starting its process.
    ///
    /// runc's stdio is `opts.io` (`/dev/null` where `None`), inherited by the container process
    /// when it has no terminal. Returns once runc has exited; `opts.detach` is ignored.
    pub fn create(&self, id: &str, bundle: &Path, opts: CreateOpts) -> Result<()> {
        let args = self.create_args(id, bundle, &opts)?;
        let access = StderrAccess {
            terminal: opts.console_socket.is_some(),
            fails_before_process: true,
        };
        let finished = self.invoker().run_with_io("create", &args, opts.io, access);
        self.clear_killed_create(id, finished)
            .and_then(|f| self.invoker().check("create", f))
            .map(drop)
    }

    /// `runc start`: starts the user process of a created container.
    pub fn start(&self, id: &str) -> Result<()> {
        let args = self.simple_args("start", id)?;
        self.captured_ok("start", &args, None)
    }

    /// `runc run`: with `opts.detach` returns `Ok(0)` once the container has started; otherwise
    /// waits for the container and returns its exit code (128+N when killed by signal N).
    ///
    /// Without `detach`, a non-zero exit is reported as [`Error::Runtime`] only when runc logged
    /// an error during this invocation (so only when a log is configured); otherwise it is
    /// taken to be the container's exit code.
    pub fn run(&self, id: &str, bundle: &Path, opts: CreateOpts) -> Result<i32> {
        let args = self.run_args(id, bundle, &opts)?;
        let detach = opts.detach;
        let access = StderrAccess {
            terminal: opts.console_socket.is_some(),
            fails_before_process: detach,
        };
        let finished = self.clear_killed_create(
            id,
            self.invoker().run_with_io("run", &args, opts.io, access),
        )?;
        self.invoker().exit_code("run", detach, finished)
    }

    /// `runc exec --process <file>`, the file holding `process_json` (an OCI Process as JSON,
    /// passed through verbatim).
    ///
    /// The file is a temporary file created (mode 0600) in `opts.process_dir` when one is
    /// given; else a memfd of this process that runc opens through
    /// `/proc/<this pid>/fd/<n>` (no file system: creating and removing a file on a disk
    /// costs more than the rest of the shim's share of an exec), or, when no memfd can be
    /// made, a temporary file in [`std::env::temp_dir`]. Either is gone once runc has
    /// exited, whether it succeeded or not. With `opts.detach` returns once the process
    /// started; otherwise waits for it, and a non-zero exit of the process is an
    /// [`Error::Runtime`] with that status.
    pub fn exec(&self, id: &str, process_json: &[u8], opts: ExecOpts) -> Result<()> {
        validate_id(id)?;
        let process_file = match &opts.process_dir {
            Some(dir) => ProcessFile::Temp(write_temp(dir, process_json)?),
            None => match ProcessFile::memfd(process_json) {
                Ok(memfd) => memfd,
                Err(e) => {
                    log::debug!("no memfd for the process spec ({e}): a file in the temp dir");
                    ProcessFile::Temp(write_temp(&std::env::temp_dir(), process_json)?)
                }
            },
        };
        let args = self.exec_args(id, process_file.path(), &opts);
        let access = StderrAccess {
            terminal: opts.console_socket.is_some(),
            fails_before_process: opts.detach,
        };
        let finished = self.invoker().run_with_io("exec", &args, opts.io, access);
        // Remove the file before reporting anything.
        let removed = process_file.close();
        let finished = self.invoker().check("exec", finished?)?;
        drop(finished);
        removed.map_err(|e| Error::io("cannot remove temporary process.json", e))
    }

    /// Serialises `process` to JSON and calls [`Runc::exec`].
    pub fn exec_process(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        opts: ExecOpts,
    ) -> Result<()> {
        let json = serde_json::to_vec(process)
            .map_err(|e| Error::InvalidArgument(format!("cannot serialise process: {e}")))?;
        self.exec(id, &json, opts)
    }

    /// `runc kill ID SIGNAL` (`--all`: signal every process in the container).
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        let args = self.kill_args(id, signal, all)?;
        self.captured_ok("kill", &args, None)
    }

    /// `runc delete` (`--force`: kill a running container first).
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let args = self.delete_args(id, force)?;
        self.captured_ok("delete", &args, None)
    }

    /// `runc state ID`, parsed.
    pub fn state(&self, id: &str) -> Result<State> {
        let args = self.simple_args("state", id)?;
        let out = self.captured_output("state", &args)?;
        types::parse_state(&out).map_err(|source| Error::Parse {
            command: "state",
            source,
        })
    }

    /// `runc list --format json`, parsed; empty when runc prints `null`.
    pub fn list(&self) -> Result<Vec<State>> {
        let out = self.captured_output("list", &self.list_args())?;
        types::parse_list(&out).map_err(|source| Error::Parse {
            command: "list",
            source,
        })
    }

    /// `runc ps --format json ID`: host pids of the container's processes.
    pub fn ps(&self, id: &str) -> Result<Vec<i32>> {
        let out = self.captured_output("ps", &self.ps_args(id)?)?;
        types::parse_ps(&out).map_err(|source| Error::Parse {
            command: "ps",
            source,
        })
    }

    /// `runc pause ID`.
    pub fn pause(&self, id: &str) -> Result<()> {
        let args = self.simple_args("pause", id)?;
        self.captured_ok("pause", &args, None)
    }

    /// `runc resume ID`.
    pub fn resume(&self, id: &str) -> Result<()> {
        let args = self.simple_args("resume", id)?;
        self.captured_ok("resume", &args, None)
    }

    /// `runc update --resources - ID` with `resources_json` (LinuxResources JSON) written verbatim
    /// to runc's stdin, which is then closed.
    pub fn update(&self, id: &str, resources_json: &[u8]) -> Result<()> {
        let args = self.update_args(id)?;
        self.captured_ok("update", &args, Some(resources_json))
    }

    /// Serialises `resources` to JSON and calls [`Runc::update`].
    pub fn update_resources(
        &self,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<()> {
        let json = serde_json::to_vec(resources)
            .map_err(|e| Error::InvalidArgument(format!("cannot serialise resources: {e}")))?;
        self.update(id, &json)
    }

    /// `runc checkpoint`. `opts.image_path` must not be empty.
    pub fn checkpoint(&self, id: &str, opts: &CheckpointOpts) -> Result<()> {
        let args = self.checkpoint_args(id, opts)?;
        self.captured_ok("checkpoint", &args, None)
    }

    /// `runc restore`; like [`Runc::run`]: with `opts.detach` returns `Ok(0)` once restored,
    /// otherwise waits and returns the container's exit code. `opts.image_path` must not be empty.
    pub fn restore(&self, id: &str, bundle: &Path, opts: RestoreOpts) -> Result<i32> {
        let args = self.restore_args(id, bundle, &opts)?;
        let detach = opts.detach;
        let access = StderrAccess {
            terminal: opts.console_socket.is_some(),
            fails_before_process: detach,
        };
        let finished = self.clear_killed_create(
            id,
            self.invoker()
                .run_with_io("restore", &args, opts.io, access),
        )?;
        self.invoker().exit_code("restore", detach, finished)
    }

    /// `runc events --stats ID`: one statistics sample.
    pub fn stats(&self, id: &str) -> Result<Stats> {
        let out = self.captured_output("events", &self.stats_args(id)?)?;
        types::parse_stats(&out).map_err(|source| Error::Parse {
            command: "events",
            source,
        })
    }

    /// `runc features`: the raw JSON document (checked to be JSON). Runtimes without the verb
    /// fail with [`Error::Runtime`].
    pub fn features(&self) -> Result<Vec<u8>> {
        let out = self.captured_output("features", &self.args("features"))?;
        serde_json::from_slice::<serde::de::IgnoredAny>(&out).map_err(|source| Error::Parse {
            command: "features",
            source,
        })?;
        Ok(out)
    }

    /// `runc --version`: its output (lossily decoded as UTF-8, trailing whitespace removed).
    pub fn version(&self) -> Result<String> {
        let out = self.captured_output("version", &["--version".into()])?;
        Ok(String::from_utf8_lossy(&out).trim_end().to_owned())
    }

    fn captured_ok(
        &self,
        command: &'static str,
        args: &[OsString],
        input: Option<&[u8]>,
    ) -> Result<()> {
        let finished = self.invoker().run_captured(command, args, input)?;
        self.invoker().check(command, finished).map(drop)
    }

    fn captured_output(&self, command: &'static str, args: &[OsString]) -> Result<Vec<u8>> {
        let finished = self.invoker().run_captured(command, args, None)?;
        Ok(self.invoker().check(command, finished)?.stdout)
    }
}

impl RuncBuilder {
    /// The runc-compatible binary: a path, or a name looked up in `PATH`. Default `runc`.
    pub fn binary(mut self, p: impl Into<PathBuf>) -> Self {
        self.runc.binary = p.into();
        self
    }

    /// `--root`: the directory holding container state.
    pub fn root(mut self, p: impl Into<PathBuf>) -> Self {
        self.runc.root = Some(p.into());
        self
    }

    /// `--log P --log-format json`: runc's log file, also the source of error messages.
    pub fn log(mut self, p: impl Into<PathBuf>) -> Self {
        self.runc.log = Some(p.into());
        self
    }

    /// `--systemd-cgroup` when `on`.
    pub fn systemd_cgroup(mut self, on: bool) -> Self {
        self.runc.systemd_cgroup = on;
        self
    }

    /// `--criu`: the criu binary used for checkpoint/restore.
    pub fn criu(mut self, p: impl Into<PathBuf>) -> Self {
        self.runc.criu = Some(p.into());
        self
    }

    /// `--debug` when `on`.
    pub fn debug(mut self, on: bool) -> Self {
        self.runc.debug = on;
        self
    }

    /// How runc processes are started and waited for. Default [`DefaultMonitor`].
    pub fn monitor(mut self, m: Arc<dyn ProcessMonitor>) -> Self {
        self.runc.monitor = m;
        self
    }

    /// The configured [`Runc`].
    pub fn build(self) -> Runc {
        self.runc
    }
}

/// Rejects ids runc would misparse: empty, starting with `-` (a flag), or containing NUL.
fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidArgument("empty container id".into()));
    }
    if id.starts_with('-') {
        return Err(Error::InvalidArgument(format!(
            "container id {id:?} starts with '-'"
        )));
    }
    if id.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "container id {id:?} contains NUL"
        )));
    }
    Ok(())
}

fn validate_image_path(p: &Path) -> Result<()> {
    if p.as_os_str().is_empty() {
        return Err(Error::InvalidArgument("empty checkpoint image path".into()));
    }
    Ok(())
}

/// Where `runc exec` reads its process spec from.
enum ProcessFile {
    /// A file in a directory, removed on close (or drop).
    Temp(tempfile::TempPath),
    /// A memfd of this process (close-on-exec: runc reopens it by its /proc path).
    Memfd {
        _fd: std::os::fd::OwnedFd,
        path: PathBuf,
    },
}

impl ProcessFile {
    /// A memfd holding `data`, named by `/proc/<pid>/fd/<n>` (runc, a child of this
    /// process, sees the same /proc).
    fn memfd(data: &[u8]) -> std::io::Result<Self> {
        use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let fd = memfd_create(c"runc-process", MemFdCreateFlag::MFD_CLOEXEC)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(data)?;
        let path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            file.as_raw_fd()
        ));
        Ok(ProcessFile::Memfd {
            _fd: file.into(),
            path,
        })
    }

    fn path(&self) -> &Path {
        match self {
            ProcessFile::Temp(p) => p,
            ProcessFile::Memfd { path, .. } => path,
        }
    }

    /// Removes the file (a memfd is just closed).
    fn close(self) -> std::io::Result<()> {
        match self {
            ProcessFile::Temp(p) => p.close(),
            ProcessFile::Memfd { .. } => Ok(()),
        }
    }
}

/// Writes `data` to a new private temp file in `dir` and closes it, keeping only its path
/// (removed on drop).
fn write_temp(dir: &Path, data: &[u8]) -> Result<tempfile::TempPath> {
    use std::io::Write;
    let context = || format!("cannot write temporary process.json in {dir:?}");
    let mut file = tempfile::Builder::new()
        .prefix(".runc-process-")
        .suffix(".json")
        .tempfile_in(dir)
        .map_err(|e| Error::io(context(), e))?;
    file.write_all(data).map_err(|e| Error::io(context(), e))?;
    Ok(file.into_temp_path())
}

#[cfg(test)]
#[path = "runc_tests/mod.rs"]
mod tests;

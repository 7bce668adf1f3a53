//! One test's private containerd, run exactly as a user would run one, with tether's
//! freshly built shim first on its PATH.
//!
//! Each [`ContainerdEnv`] owns a temp dir under `/tmp` (short, because the unix sockets
//! inside must fit in `sun_path`) holding containerd's root, state, sockets, config and log,
//! and uses a containerd namespace of its own, so shim sockets
//! (`/run/containerd/s/<sha256 of "<address>/<ns>/<id>">`), runc roots
//! (`/run/containerd/runc/<ns>`) and cgroups (`/<ns>/<id>`) never collide between parallel
//! tests. Dropping it tears everything down whatever the test did, without panicking.
//!
//! The daemon is `$TETHER_CONTAINERD_DIR/containerd` (with that dir's `ctr`) when the
//! variable is set, else the one on PATH: the same tests run against every containerd of
//! the matrix (1.6 to 2.4; `tests/scripts/containerd-matrix.sh`). One config serves them
//! all: containerd 2.x migrates a `version = 2` file itself.

use crate::cleanup;
use crate::containerd_version::{self, DaemonVersion};
use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// The runtime type that selects tether (`containerd-shim-tether-v2`).
pub const RUNTIME: &str = "io.containerd.tether.v2";
/// The shim binary containerd looks up on its PATH for [`RUNTIME`].
pub const SHIM_BINARY: &str = "containerd-shim-tether-v2";
/// The plugins a test daemon does without: CRI in every form (1.x has one plugin
/// `io.containerd.grpc.v1.cri`; 2.x splits it into `io.containerd.cri.v1.images`,
/// `io.containerd.cri.v1.runtime`, the pod sandbox controller and the grpc service) and NRI
/// (whose socket, /var/run/nri/nri.sock, would be shared by the parallel daemons).
/// containerd filters the registered plugins by these ids: an id a version does not have
/// is ignored.
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.grpc.v1.cri",
    "io.containerd.cri.v1.images",
    "io.containerd.cri.v1.runtime",
    "io.containerd.podsandbox.controller.v1.podsandbox",
    "io.containerd.nri.v1.nri",
];

/// Where containerd's shims put their sockets (whatever containerd's own state dir).
pub const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
/// The default runc root of containerd's runc shims; tether keeps `<root>/<namespace>`.
pub const RUNC_ROOT: &str = "/run/containerd/runc";

/// How long one `ctr` call may take before the test fails.
const CTR_TIMEOUT: Duration = Duration::from_secs(30);
/// How long containerd may take to answer `ctr version` after it starts: in the cgroup v2
/// leg's QEMU guest (TCG, no hardware virtualisation) on a loaded host, containerd 1.6 has
/// taken 4.6 s from its first log line to its second and missed a 10 s bound; a daemon that
/// does not start is not what these tests are about.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long shims get to exit after the last task is deleted (containerd calls Shutdown).
const SHIM_EXIT_GRACE: Duration = Duration::from_secs(3);
/// How many lines of containerd's log a failure message quotes.
const LOG_TAIL_LINES: usize = 80;

/// When [`ContainerdEnv::ctr_with_stdin`] writes the input (and closes stdin).
#[derive(Debug, Clone)]
pub enum StdinAfter {
    /// After a fixed pause (racy under load: see `ctr_with_stdin`).
    Delay(Duration),
    /// Once `ctr task ls` shows this task RUNNING (for `ctr run`).
    TaskRunning(String),
    /// Once `ctr task ps <id>` lists this exec (for `ctr task exec`).
    ExecRunning {
        /// The container.
        id: String,
        /// The exec id.
        exec_id: String,
    },
}

/// A private containerd daemon for one test. See the module docs.
pub struct ContainerdEnv {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    namespace: String,
    address: PathBuf,
    config: PathBuf,
    log: PathBuf,
    shim: PathBuf,
    containerd_bin: PathBuf,
    ctr_bin: PathBuf,
    version: DaemonVersion,
    runc_bin: PathBuf,
    criu_dir: Option<PathBuf>,
    daemon: Option<Child>,
    ids: Mutex<Vec<String>>,
    rootfs: Mutex<Option<PathBuf>>,
}

impl ContainerdEnv {
    /// Checks the preconditions (root, containerd, ctr, runc, a built shim), writes the
    /// config, starts containerd and waits until it answers. A `criu` that works (see
    /// [`crate::require::criu_dir`]) goes on containerd's PATH, for runc.
    pub fn start() -> Self {
        crate::require::root();
        let (containerd_bin, ctr_bin) = containerd_version::containerd_tools();
        let version = containerd_version::version_of(&containerd_bin);
        let runc_bin = crate::require::tool("runc", "runc");
        let shim = shim_binary();
        let dir = tempfile::Builder::new()
            .prefix("tc-")
            .tempdir_in("/tmp")
            .expect("create the test's temp dir under /tmp");
        let path = dir.path().to_path_buf();
        let bin = path.join("bin");
        fs::create_dir_all(&bin).expect("create <dir>/bin");
        // A hard link pins this build of the shim even if someone rebuilds it meanwhile
        // (the linker writes a new file); a symlink when /tmp is another file system.
        let link = bin.join(SHIM_BINARY);
        if fs::hard_link(&shim, &link).is_err() {
            std::os::unix::fs::symlink(&shim, &link).expect("link the shim into <dir>/bin");
        }
        let address = path.join("c.sock");
        let config = path.join("config.toml");
        let toml = format!(
            "version = 2\n\
             root = \"{root}\"\n\
             state = \"{state}\"\n\
             disabled_plugins = [{disabled}]\n\
             \n\
             [grpc]\n  address = \"{grpc}\"\n\
             \n\
             [ttrpc]\n  address = \"{grpc}.ttrpc\"\n\
             \n\
             [debug]\n  level = \"debug\"\n",
            root = path.join("root").display(),
            state = path.join("state").display(),
            grpc = address.display(),
            disabled = DISABLED_PLUGINS
                .iter()
                .map(|id| format!("\"{id}\""))
                .collect::<Vec<_>>()
                .join(", "),
        );
        fs::write(&config, toml).expect("write config.toml");
        let mut env = ContainerdEnv {
            dir: Some(dir),
            log: path.join("containerd.log"),
            path,
            // The "-x" suffix makes the name unique as a substring too: no namespace of
            // another test can contain this one.
            namespace: format!("{}-x", crate::unique_id("ns")),
            address,
            config,
            shim,
            containerd_bin,
            ctr_bin,
            version,
            runc_bin,
            criu_dir: crate::require::criu_dir().ok(),
            daemon: None,
            ids: Mutex::new(Vec::new()),
            rootfs: Mutex::new(None),
        };
        env.spawn_daemon();
        let ns = env.namespace.clone();
        env.ctr_ok(&["namespaces", "create", &ns]);
        env
    }

    /// The version of the running containerd.
    pub fn version(&self) -> DaemonVersion {
        self.version
    }

    /// The dir of the working `criu` on containerd's PATH, if there is one.
    pub fn criu_dir(&self) -> Option<&Path> {
        self.criu_dir.as_deref()
    }

    /// The test's temp dir.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// This test's containerd namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// containerd's grpc socket (what `ctr -a` and the shim's `-address` take).
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// The shim binary this containerd runs (the original, not the link in `<dir>/bin`).
    pub fn shim_binary(&self) -> &Path {
        &self.shim
    }

    /// containerd's log file: its stdout and stderr, which include the shims' own logs
    /// (containerd copies each shim's log FIFO into its stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last lines of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// A container id unique to this test run; remembered so [`Self::assert_no_leaks`]
    /// checks that its shim socket is gone.
    pub fn id(&self, prefix: &str) -> String {
        let id = crate::unique_id(prefix);
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id.clone());
        id
    }

    /// A busybox rootfs in `<dir>/rootfs`, built on first use. With `ctr run --rootfs` ctr
    /// puts no `PATH` in the spec: commands must be absolute (`/bin/sh`).
    pub fn rootfs(&self) -> PathBuf {
        let mut cached = self.rootfs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = cached.as_ref() {
            return path.clone();
        }
        let path = self.path.join("rootfs");
        crate::rootfs::build_busybox(&path).expect("build the busybox rootfs");
        *cached = Some(path.clone());
        path
    }

    /// The arguments of `ctr run` through tether on the busybox rootfs:
    /// `run --runtime io.containerd.tether.v2 FLAGS… --rootfs ROOTFS ID CMD…`.
    pub fn run_args(&self, flags: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
        let mut args = vec!["run".to_string(), "--runtime".into(), RUNTIME.into()];
        args.extend(flags.iter().map(|s| s.to_string()));
        args.push("--rootfs".into());
        args.push(self.rootfs().to_string_lossy().into_owned());
        args.push(id.into());
        args.extend(cmd.iter().map(|s| s.to_string()));
        args
    }

    /// Imports the busybox rootfs as a one-layer image (see [`crate::oci_image`]) into this
    /// namespace, unpacked for the default snapshotter; returns its name. For what only
    /// containers from an image can do (`ctr containers checkpoint/restore`).
    pub fn import_busybox_image(&self) -> String {
        const NAME: &str = "docker.io/tether-test/busybox:latest";
        let archive = self.path.join("busybox-image.tar");
        crate::oci_image::write_archive(
            &self.rootfs(),
            NAME,
            &self.path.join("image-work"),
            &archive,
        )
        .expect("write the busybox image archive");
        self.ctr_ok(&["images".as_ref(), "import".as_ref(), archive.as_os_str()]);
        let _ = fs::remove_file(&archive);
        NAME.to_string()
    }

    /// The arguments of `ctr run` through tether of `image`:
    /// `run --runtime io.containerd.tether.v2 FLAGS… IMAGE ID CMD…`.
    pub fn image_run_args(
        &self,
        flags: &[&str],
        image: &str,
        id: &str,
        cmd: &[&str],
    ) -> Vec<String> {
        let mut args = vec!["run".to_string(), "--runtime".into(), RUNTIME.into()];
        args.extend(flags.iter().map(|s| s.to_string()));
        args.push(image.into());
        args.push(id.into());
        args.extend(cmd.iter().map(|s| s.to_string()));
        args
    }

    /// A `ctr -a SOCK -n NS ARGS…` command, for callers that need to drive the process
    /// themselves (background `ctr events`, a pty). Prefer [`Self::ctr`].
    pub fn ctr_command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = ctr_base(&self.ctr_bin, &self.address);
        cmd.arg("-n").arg(&self.namespace).args(args);
        cmd
    }

    /// The same command as one shell-quoted line (for `script -c`), with the same
    /// environment.
    pub fn ctr_shell_line<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let mut words = vec![
            self.ctr_bin.to_string_lossy().into_owned(),
            "-a".into(),
            self.address.to_string_lossy().into_owned(),
            "-n".into(),
            self.namespace.clone(),
        ];
        words.extend(
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned()),
        );
        let line = words
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ");
        format!("CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1 {line}")
    }

    /// Runs `ctr -a SOCK -n NS ARGS…` with stdin from /dev/null; fails the test (with the
    /// output so far and containerd's log) if it takes longer than 30 s.
    pub fn ctr<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let cmd = self.ctr_command(args);
        self.finish(cmd, None, CTR_TIMEOUT)
    }

    /// [`Self::ctr`], asserting success; returns stdout.
    pub fn ctr_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.ctr(args);
        if !out.status.success() {
            panic!(
                "ctr {} failed ({}):\nstdout: {}\nstderr: {}\n--- containerd log ---\n{}",
                describe(args),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// [`Self::ctr`] with `input` on its stdin through a pipe, written once `after` holds
    /// (polled for up to 10 s), then the pipe is closed.
    ///
    /// Why wait: ctr 1.6 has a race with an early EOF. It copies stdin into the task's
    /// FIFO and calls CloseIO at EOF only if the task (or exec) object exists by then; an
    /// EOF that comes before `NewTask`/`Exec` returned is swallowed, so `cat` waits
    /// forever. ctr sets the closer before it calls Start, so a running task (or an exec
    /// listed by `ctr task ps`) means EOF will reach the container.
    pub fn ctr_with_stdin<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        input: &[u8],
        after: StdinAfter,
    ) -> Output {
        let cmd = self.ctr_command(args);
        let ctr_bin = self.ctr_bin.clone();
        let address = self.address.clone();
        let namespace = self.namespace.clone();
        let probe = move |args: &[&str]| -> String {
            let mut cmd = ctr_base(&ctr_bin, &address);
            cmd.arg("-n").arg(&namespace).args(args);
            run_bounded(cmd, None, Duration::from_secs(5))
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let ready: Box<dyn FnMut() -> bool + Send> = match after {
            StdinAfter::Delay(d) => {
                let at = Instant::now() + d;
                Box::new(move || Instant::now() >= at)
            }
            StdinAfter::TaskRunning(id) => Box::new(move || {
                probe(&["task", "ls"]).lines().any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.first() == Some(&id.as_str()) && cols.get(2) == Some(&"RUNNING")
                })
            }),
            StdinAfter::ExecRunning { id, exec_id } => {
                Box::new(move || ps_lists_exec(&probe(&["task", "ps", &id]), &exec_id))
            }
        };
        self.finish(
            cmd,
            Some(Input {
                data: input.to_vec(),
                ready,
            }),
            CTR_TIMEOUT,
        )
    }

    /// Runs any command with the ctr timeout and failure report (e.g. `script -c`).
    pub fn run_with_timeout(&self, cmd: Command) -> Output {
        self.finish(cmd, None, CTR_TIMEOUT)
    }

    /// [`Self::run_with_timeout`] with `input` written to the command's stdin at once, then
    /// the pipe closed.
    pub fn run_with_input(&self, cmd: Command, input: &[u8]) -> Output {
        let input = Input {
            data: input.to_vec(),
            ready: Box::new(|| true),
        };
        self.finish(cmd, Some(input), CTR_TIMEOUT)
    }

    fn finish(&self, cmd: Command, input: Option<Input>, timeout: Duration) -> Output {
        let what = format!("{cmd:?}");
        match run_bounded(cmd, input, timeout) {
            Ok(out) => out,
            Err(partial) => panic!(
                "{what} did not finish within {timeout:?} (killed)\nstdout so far: {}\n\
                 stderr so far: {}\n--- containerd log ---\n{}",
                String::from_utf8_lossy(&partial.stdout),
                String::from_utf8_lossy(&partial.stderr),
                self.log_tail()
            ),
        }
    }

    /// Panics with everything useful (output, containerd's log) unless `out` exited with
    /// `code`.
    pub fn assert_exit(&self, out: &Output, code: i32, what: &str) {
        assert_eq!(
            out.status.code(),
            Some(code),
            "{what}: exit status {}\nstdout: {}\nstderr: {}\n--- containerd log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    /// The STATUS column of `ctr task ls` for `id` (`RUNNING`, `STOPPED`, `PAUSED`…), or
    /// `None` when containerd lists no such task.
    pub fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ctr_ok(&["task", "ls"]);
        out.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.first() == Some(&id)).then(|| cols.get(2).unwrap_or(&"").to_string())
        })
    }

    /// The PID column of `ctr task ls` for `id`.
    pub fn task_pid(&self, id: &str) -> Option<i32> {
        let out = self.ctr_ok(&["task", "ls"]);
        out.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.first() == Some(&id) {
                cols.get(1).and_then(|p| p.parse().ok())
            } else {
                None
            }
        })
    }

    /// Polls `ctr task ls` until `id` has `status`; fails the test after `timeout`.
    pub fn wait_task_status(&self, id: &str, status: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.task_status(id);
            if now.as_deref() == Some(status) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "task {id} is {now:?}, not {status} after {timeout:?}\n--- containerd log ---\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `sleep 1000` detached (`ctr run -d`) as a new container whose id starts with
    /// `prefix`, waits (up to `timeout`) until its task is RUNNING and returns the id: the
    /// long-lived container most tests act on.
    pub fn run_sleeper(&self, prefix: &str, timeout: Duration) -> String {
        let id = self.id(prefix);
        self.ctr_ok(&self.run_args(&["-d"], &id, &["/bin/sleep", "1000"]));
        self.wait_task_status(&id, "RUNNING", timeout);
        id
    }

    /// SIGKILLs task `id` with `ctr task kill` and waits (up to `timeout`) until it is
    /// STOPPED: the way most tests end a container they are done with.
    pub fn kill_task(&self, id: &str, timeout: Duration) {
        self.ctr_ok(&["task", "kill", "-s", "KILL", id]);
        self.wait_task_status(id, "STOPPED", timeout);
    }

    /// Kills task `id` ([`Self::kill_task`]), then deletes the task and its container,
    /// each of which must succeed.
    pub fn kill_and_remove(&self, id: &str, timeout: Duration) {
        self.kill_task(id, timeout);
        self.ctr_ok(&["task", "rm", id]);
        self.ctr_ok(&["container", "rm", id]);
    }

    /// Starts `ctr -a SOCK -n NS ARGS…` in the background (stdin /dev/null), capturing
    /// stdout and stderr; killed when the handle is dropped. For `ctr task attach`, a
    /// `ctr task exec` to kill from elsewhere, and the like.
    pub fn spawn_ctr<S: AsRef<OsStr>>(&self, args: &[S]) -> BackgroundCtr {
        let mut cmd = self.ctr_command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!("{cmd:?}");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let (stdout, out_reader) = collect_stream(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let (stderr, err_reader) = collect_stream(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        BackgroundCtr {
            child,
            stdout,
            stderr,
            readers: [out_reader, err_reader].into_iter().flatten().collect(),
        }
    }

    /// Starts `ctr events` in the background and returns once it is subscribed (ctr
    /// subscribes asynchronously and says nothing when it is ready, so this labels the
    /// namespace, which makes containerd publish `/namespaces/update`, until the event
    /// shows). Every event of this containerd shows up in [`BackgroundCtr::stdout`].
    pub fn events(&self) -> BackgroundCtr {
        let watcher = self.spawn_ctr(&["events"]);
        let deadline = Instant::now() + READY_TIMEOUT;
        for n in 0.. {
            let label = format!("tether-test-probe={n}");
            self.ctr_ok(&["namespaces", "label", &self.namespace, &label]);
            if watcher
                .wait_for_line(
                    &["/namespaces/update", "tether-test-probe"],
                    Duration::from_millis(300),
                )
                .is_some()
            {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "ctr events did not report a namespace update within {READY_TIMEOUT:?}\n\
                     stdout: {}\nstderr: {}",
                    watcher.stdout(),
                    watcher.stderr()
                );
            }
        }
        watcher
    }

    /// Stops containerd with SIGTERM (the daemon only: shims run on, as in a real
    /// upgrade), waits for it to exit, starts it again with the same config and waits
    /// until it answers. After [`Self::kill_containerd`] it only starts it.
    pub fn restart_containerd(&mut self) {
        if let Some(child) = self.daemon.take() {
            stop_daemon(child, Duration::from_secs(10));
        }
        append_log(&self.log, "\n===== test: containerd restarted =====\n");
        self.spawn_daemon();
    }

    /// SIGKILLs containerd (the daemon only: shims run on, and none of containerd's own
    /// shutdown runs, as in a crash or an OOM kill) and reaps it.
    /// [`Self::restart_containerd`] starts it again; until then `ctr` fails.
    pub fn kill_containerd(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        append_log(&self.log, "\n===== test: containerd SIGKILLed =====\n");
    }

    /// Stops containerd with SIGTERM (the daemon only: shims run on) and waits for it to
    /// exit. [`Self::start_containerd_from`] starts one again; until then `ctr` fails.
    pub fn stop_containerd(&mut self) {
        if let Some(child) = self.daemon.take() {
            stop_daemon(child, Duration::from_secs(10));
        }
        append_log(&self.log, "\n===== test: containerd stopped =====\n");
    }

    /// Starts `dir/containerd` (and uses `dir/ctr` from now on) on the same config, root,
    /// state and address, after [`Self::stop_containerd`]: how an operator upgrades with
    /// containers running. Waits until it answers; returns its version.
    pub fn start_containerd_from(&mut self, dir: &Path) -> DaemonVersion {
        assert!(
            self.daemon.is_none(),
            "containerd still runs: stop it first"
        );
        let (containerd_bin, ctr_bin) = (dir.join("containerd"), dir.join("ctr"));
        assert!(
            containerd_bin.is_file() && ctr_bin.is_file(),
            "{} lacks containerd or ctr",
            dir.display()
        );
        self.version = containerd_version::version_of(&containerd_bin);
        append_log(
            &self.log,
            &format!(
                "\n===== test: containerd {} ({}) starts =====\n",
                self.version,
                containerd_bin.display()
            ),
        );
        self.containerd_bin = containerd_bin;
        self.ctr_bin = ctr_bin;
        self.spawn_daemon();
        self.version
    }

    fn spawn_daemon(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open containerd.log");
        let log2 = log.try_clone().expect("dup containerd.log");
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let mut path = vec![self.path.join("bin")];
        path.extend(self.criu_dir.clone());
        path.extend(std::env::split_paths(&inherited));
        let path = std::env::join_paths(path).expect("build containerd's PATH");
        let mut cmd = Command::new(&self.containerd_bin);
        cmd.arg("--config")
            .arg(&self.config)
            .env("PATH", path)
            .current_dir(&self.path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: a ^C aimed at the test runner does not hit it first.
            .process_group(0);
        let mut child = cmd.spawn().expect("spawn containerd");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "containerd exited at start ({status})\n--- containerd log ---\n{}",
                    self.log_tail()
                );
            }
            let mut probe = ctr_base(&self.ctr_bin, &self.address);
            probe.arg("version");
            if matches!(run_bounded(probe, None, Duration::from_secs(5)), Ok(o) if o.status.success())
            {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "containerd did not answer `ctr version` within {READY_TIMEOUT:?}\n--- containerd log ---\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        self.daemon = Some(child);
    }

    /// containerd's pid, while it runs.
    pub fn containerd_pid(&self) -> Option<i32> {
        self.daemon.as_ref().map(|c| i32::try_from(c.id()).unwrap())
    }

    /// The tether shims of this test: processes running `containerd-shim-tether-v2` with
    /// `-namespace <NS>`.
    pub fn shim_pids(&self) -> Vec<i32> {
        cleanup::processes_mentioning(SHIM_BINARY)
            .into_iter()
            .filter(|(_, cmd)| {
                let words: Vec<&str> = cmd.split_whitespace().collect();
                words.first().is_some_and(|w| w.ends_with(SHIM_BINARY))
                    && words
                        .windows(2)
                        .any(|w| w[0] == "-namespace" && w[1] == self.namespace)
            })
            .map(|(pid, _)| pid)
            .collect()
    }

    /// The socket the shim of container `id` listens on:
    /// `/run/containerd/s/<hex sha256 of "<address>/<ns>/<id>">`.
    pub fn shim_socket(&self, id: &str) -> PathBuf {
        let joined = format!("{}/{}/{}", self.address.display(), self.namespace, id);
        let digest = Sha256::digest(joined.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Path::new(SHIM_SOCKET_DIR).join(hex)
    }

    /// runc's state root for this namespace.
    pub fn runc_root(&self) -> PathBuf {
        Path::new(RUNC_ROOT).join(&self.namespace)
    }

    /// The cgroup directories of this namespace (`/sys/fs/cgroup/<ns>` on cgroup v2,
    /// `/sys/fs/cgroup/<controller>/<ns>` on v1) that exist.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let base = Path::new("/sys/fs/cgroup");
        let mut dirs = vec![base.join(&self.namespace)];
        if let Ok(entries) = fs::read_dir(base) {
            for e in entries.flatten() {
                dirs.push(e.path().join(&self.namespace));
            }
        }
        dirs.retain(|d| d.is_dir());
        dirs
    }

    /// Pids still in this namespace's cgroups (the container processes).
    fn cgroup_pids(&self) -> Vec<(PathBuf, String)> {
        let mut found = Vec::new();
        for dir in self.cgroup_dirs() {
            for d in walk_dirs(&dir) {
                if let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) {
                    if !procs.trim().is_empty() {
                        found.push((d, procs.split_whitespace().collect::<Vec<_>>().join(",")));
                    }
                }
            }
        }
        found
    }

    /// Asserts the shims left nothing behind: no task left in containerd, no tether shim
    /// of this namespace (after up to 3 s: containerd calls Shutdown after the last
    /// delete), no runc or other process mentioning the namespace or the temp dir (but
    /// containerd), no container in runc's root, no process in the namespace's cgroups, no
    /// mount under the temp dir, and no shim socket of any id made by [`Self::id`].
    pub fn assert_no_leaks(&self) {
        let tasks = self.ctr_ok(&["task", "ls", "-q"]);
        assert!(tasks.trim().is_empty(), "tasks left in containerd: {tasks}");
        let deadline = Instant::now() + SHIM_EXIT_GRACE;
        let mut shims = self.shim_pids();
        while !shims.is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
            shims = self.shim_pids();
        }
        let mut problems = Vec::new();
        if !shims.is_empty() {
            problems.push(format!("tether shims still running: {shims:?}"));
        }
        let containerd = self.containerd_pid();
        let dir = self.path.to_string_lossy().into_owned();
        for (pid, cmd) in cleanup::processes_mentioning(&self.namespace)
            .into_iter()
            .chain(cleanup::processes_mentioning(&dir))
        {
            if Some(pid) != containerd && !shims.contains(&pid) {
                problems.push(format!("process {pid} left: {cmd}"));
            }
        }
        let listed = Command::new(&self.runc_bin)
            .arg("--root")
            .arg(self.runc_root())
            .args(["list", "-q"])
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if !listed.is_empty() {
            problems.push(format!("runc still knows containers: {listed}"));
        }
        for (cg, pids) in self.cgroup_pids() {
            problems.push(format!("processes {pids} left in cgroup {}", cg.display()));
        }
        let mounts = cleanup::mounts_under(&self.path);
        if !mounts.is_empty() {
            problems.push(format!("mounts left: {mounts:?}"));
        }
        for id in self.ids.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let socket = self.shim_socket(id);
            if fs::symlink_metadata(&socket).is_ok() {
                problems.push(format!("shim socket of {id} left: {}", socket.display()));
            }
        }
        if !problems.is_empty() {
            panic!(
                "leaks after the test:\n  {}\n--- containerd log ---\n{}",
                problems.join("\n  "),
                self.log_tail()
            );
        }
    }
}

impl Drop for ContainerdEnv {
    fn drop(&mut self) {
        // 1. Through containerd, as a user would: kill and delete every task, then the
        //    containers. Bounded and never panicking.
        if self.daemon.is_some() {
            let quick = Duration::from_secs(10);
            let list = |what: &str| -> Vec<String> {
                let cmd = self.ctr_command(&[what, "ls", "-q"]);
                run_bounded(cmd, None, quick)
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .map(|l| l.trim().to_string())
                            .filter(|l| !l.is_empty())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for task in list("task") {
                let _ = run_bounded(
                    self.ctr_command(&["task", "kill", "-a", "-s", "KILL", &task]),
                    None,
                    quick,
                );
                let _ = run_bounded(self.ctr_command(&["task", "rm", "-f", &task]), None, quick);
            }
            for container in list("container") {
                let _ = run_bounded(
                    self.ctr_command(&["container", "rm", &container]),
                    None,
                    quick,
                );
            }
        }
        // 2. The daemon.
        if let Some(child) = self.daemon.take() {
            stop_daemon(child, Duration::from_secs(5));
        }
        // 3. Stragglers: shims of this namespace, anything mentioning the temp dir.
        let dir = self.path.to_string_lossy().into_owned();
        let mut stragglers: Vec<(i32, String)> = self
            .shim_pids()
            .into_iter()
            .map(|p| (p, "tether shim".to_string()))
            .collect();
        stragglers.extend(cleanup::processes_mentioning(&dir));
        for (pid, cmd) in stragglers {
            eprintln!("cleanup: killing leftover process {pid}: {cmd}");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // 4. Containers runc still knows, and its root for this namespace.
        let runc_root = self.runc_root();
        if runc_root.exists() {
            cleanup::delete_all_containers(&self.runc_bin, &runc_root);
            if let Err(err) = fs::remove_dir_all(&runc_root) {
                eprintln!("cleanup: remove {}: {err}", runc_root.display());
            }
        }
        // 5. Shim sockets of killed shims.
        for id in self.ids.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = fs::remove_file(self.shim_socket(id));
        }
        // 6. Mounts, cgroups (empty once the containers are gone: rmdir, deepest first).
        cleanup::unmount_under(&self.path);
        for dir in self.cgroup_dirs() {
            let mut dirs = walk_dirs(&dir);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
            for d in dirs {
                let mut tries = 0;
                while let Err(err) = fs::remove_dir(&d) {
                    tries += 1;
                    // A killed process leaves its cgroup a moment later.
                    if tries >= 20 || err.kind() == std::io::ErrorKind::NotFound {
                        if tries >= 20 {
                            eprintln!("cleanup: rmdir {}: {err}", d.display());
                        }
                        break;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
        // 7. The temp dir.
        if let Some(dir) = self.dir.take() {
            if let Err(err) = dir.close() {
                eprintln!("cleanup: remove {}: {err}", self.path.display());
            }
        }
    }
}

/// A `ctr` running in the background ([`ContainerdEnv::spawn_ctr`],
/// [`ContainerdEnv::events`]); killed when dropped.
pub struct BackgroundCtr {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl BackgroundCtr {
    /// Its stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Polls stdout until a line contains every one of `needles`; returns that line, or
    /// `None` after `timeout`.
    pub fn wait_for_line(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .stdout()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return Some(line.to_string());
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls until `pred(stdout, stderr)` holds; false after `timeout`.
    pub fn wait_output(&self, pred: impl Fn(&[u8], &[u8]) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let out = self.stdout.lock().unwrap_or_else(|p| p.into_inner());
                let err = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
                if pred(&out, &err) {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for ctr to exit, killing it after `timeout`: its exit code (`None` if killed
    /// or signalled) and everything it printed.
    pub fn finish(mut self, timeout: Duration) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + timeout;
        let code = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status.code(),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break None;
                }
            }
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (code, self.stdout(), self.stderr())
    }
}

impl Drop for BackgroundCtr {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// The shim to test: `$TETHER_SHIM`, else the newest of the workspace's builds: `make`'s
/// static release build (`target/<host triple>/release`), a plain `cargo build --release`
/// (`target/release`) or a debug build (`target/debug`).
pub fn shim_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TETHER_SHIM") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "TETHER_SHIM={} is not a file", p.display());
        return p;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let mut candidates = vec![
        target.join("release").join(SHIM_BINARY),
        target.join("debug").join(SHIM_BINARY),
    ];
    if let Ok(entries) = fs::read_dir(&target) {
        candidates.extend(
            entries
                .flatten()
                .map(|e| e.path().join("release").join(SHIM_BINARY)),
        );
    }
    let newest = candidates
        .into_iter()
        .filter_map(|p| Some((fs::metadata(&p).and_then(|m| m.modified()).ok()?, p)))
        .max_by_key(|(mtime, _)| *mtime)
        .map(|(_, p)| p);
    let Some(chosen) = newest else {
        panic!(
            "{SHIM_BINARY} not found under {}: run `make build` (or `cargo build -p \
             tether-shim`) first (`make test` builds it), or point TETHER_SHIM at a build",
            target.display()
        )
    };
    fs::canonicalize(&chosen).unwrap_or(chosen)
}

/// `ctr -a ADDRESS`, quiet about deprecations: from 2.2 on, ctr prints containerd's
/// deprecation warnings (cgroup v1 on this host) on its stderr, which tests compare.
fn ctr_base(ctr: &Path, address: &Path) -> Command {
    let mut cmd = Command::new(ctr);
    cmd.env("CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS", "1")
        .arg("-a")
        .arg(address);
    cmd
}

/// Whether the output of `ctr task ps` has a row for exec `exec_id`. The INFO column is the
/// shim's `containerd.runc.v1.ProcessDetails`, which ctr 1.x prints as
/// `&ProcessDetails{ExecID:e1,}` and ctr 2.x in protobuf text format, `exec_id:"e1"` (with
/// spacing that the Go library varies on purpose).
pub fn ps_lists_exec(ps: &str, exec_id: &str) -> bool {
    let v1 = format!("ExecID:{exec_id},");
    let v2 = format!("exec_id:\"{exec_id}\"");
    ps.lines().skip(1).any(|line| {
        let packed: String = line.split_whitespace().skip(1).collect();
        packed.contains(&v1) || packed.contains(&v2)
    })
}

/// What a command printed before it was killed for taking too long.
struct Partial {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Input for a command's stdin: written once `ready` says so (or after 10 s), then the
/// pipe is closed.
struct Input {
    data: Vec<u8>,
    ready: Box<dyn FnMut() -> bool + Send>,
}

/// Runs `cmd` with captured stdout and stderr, stdin from `input` or /dev/null; kills it
/// after `timeout`.
fn run_bounded(
    mut cmd: Command,
    input: Option<Input>,
    timeout: Duration,
) -> Result<Output, Partial> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Ok(Output {
                status: ExitStatus::from_raw(127 << 8),
                stdout: Vec::new(),
                stderr: format!("spawn {cmd:?}: {e}").into_bytes(),
            })
        }
    };
    let (out, out_reader) = collect_stream(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let (err, err_reader) = collect_stream(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    if let (Some(mut input), Some(mut stdin)) = (input, child.stdin.take()) {
        thread::spawn(move || {
            let deadline = Instant::now() + READY_TIMEOUT;
            while !(input.ready)() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
            let _ = stdin.write_all(&input.data);
            // Dropping stdin closes the pipe: EOF for ctr.
        });
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => break None,
        }
    };
    let take =
        |b: &Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().unwrap_or_else(|p| p.into_inner()));
    match status {
        Some(status) => {
            for r in [out_reader, err_reader].into_iter().flatten() {
                let _ = r.join();
            }
            Ok(Output {
                status,
                stdout: take(&out),
                stderr: take(&err),
            })
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            // Give the readers a moment to drain; do not join (a grandchild may hold the
            // pipes open).
            thread::sleep(Duration::from_millis(100));
            Err(Partial {
                stdout: take(&out),
                stderr: take(&err),
            })
        }
    }
}

/// SIGTERM, then SIGKILL after `grace`; reaps the daemon.
fn stop_daemon(mut child: Child, grace: Duration) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                eprintln!("cleanup: containerd ignored SIGTERM for {grace:?}: SIGKILL");
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}

fn append_log(log: &Path, text: &str) {
    if let Ok(mut f) = fs::OpenOptions::new().append(true).open(log) {
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let _ = writeln!(f, "{text}(unix time {stamp:.3})");
    }
}

fn log_tail(log: &Path) -> String {
    let text = fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", log.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// `dir` and every directory below it (no symlinks followed).
fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(e.path());
                }
            }
        }
        out.push(d);
    }
    out
}

fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

fn describe<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| shell_quote(&a.as_ref().to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads `stream` (if any) to EOF on a thread, into a shared buffer the caller can look
/// at while the reading goes on.
fn collect_stream(
    stream: Option<Box<dyn Read + Send>>,
) -> (Arc<Mutex<Vec<u8>>>, Option<thread::JoinHandle<()>>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buf);
    let handle = stream.map(|mut s| {
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = s.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&chunk[..n]);
            }
        })
    });
    (buf, handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_rows_of_execs_in_both_ctr_formats() {
        let v1 = "PID     INFO\n8928    -\n9068    &ProcessDetails{ExecID:e2,}\n";
        let v2 = "PID     INFO\n8928    -\n9068    exec_id:\"e2\"\n9070    exec_id:  \"e22\"\n";
        assert!(ps_lists_exec(v1, "e2"));
        assert!(!ps_lists_exec(v1, "e"));
        assert!(ps_lists_exec(v2, "e2"));
        assert!(ps_lists_exec(v2, "e22"));
        assert!(!ps_lists_exec(v2, "e3"));
        assert!(!ps_lists_exec("PID INFO\n", "e2"));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/bin/sh"), "/bin/sh");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}

//! tether's shim driven directly over ttrpc, the way containerd drives it, without
//! containerd: for tests that need to place calls precisely against each other (Kill,
//! Wait, Delete and Shutdown of one task at once) with a `runc` that is slow on purpose.
//!
//! [`DirectShim::start`] runs `containerd-shim-tether-v2 … start` in a busybox bundle of
//! its own and connects a ttrpc client to the address it prints. [`SlowRunc`] writes a
//! wrapper around the real runc that returns late from the verbs it is given (the work
//! itself happens on time), to be named as the task's `BinaryName`. Dropping a
//! `DirectShim` kills the shim and everything it ran, and removes its socket, runc state,
//! mounts and temp dir, whatever the test did.

use crate::cleanup;
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::Options;
use containerd_shim_protos::ttrpc::context;
use containerd_shim_protos::{Client, TaskClient};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The runtime options' type URL for runc `Options`.
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";
/// How long one ttrpc call may take before the test's client gives up on it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A wrapper around the real runc that returns `delay` late from each of `verbs`, or
/// (`hang_first`) waits `delay` before it runs the real runc.
#[derive(Debug)]
pub struct SlowRunc {
    path: PathBuf,
    pids: PathBuf,
}

impl SlowRunc {
    /// Writes the wrapper script into `dir`: the work happens on time, the answer late.
    pub fn write(dir: &Path, verbs: &[&str], delay: Duration) -> Self {
        Self::write_inner(dir, verbs, delay, false)
    }

    /// Writes a wrapper that, for `verbs`, waits `delay` first and only then runs the real
    /// runc: nothing has happened yet when it hangs.
    pub fn write_hanging_first(dir: &Path, verbs: &[&str], delay: Duration) -> Self {
        Self::write_inner(dir, verbs, delay, true)
    }

    fn write_inner(dir: &Path, verbs: &[&str], delay: Duration, hang_first: bool) -> Self {
        let real = crate::require::tool("runc", "runc");
        let path = dir.join("slow-runc");
        let pids = dir.join("slow-runc.pids");
        // The delay is a child `sleep` (as a runc's own children would be), in the
        // foreground (before issue 23 the shim's runc children inherited its blocked
        // SIGCHLD, with which `wait` on a background job never returned), and the pids of
        // both go to the pids file.
        let delay_step = format!(
            "[ -n \"$verb\" ] && sh -c 'echo $PPID $$ >>{pids}; exec sleep {secs}'\n",
            secs = delay.as_secs_f64(),
            pids = pids.display(),
        );
        let (before, after) = if hang_first {
            (delay_step.as_str(), "")
        } else {
            ("", delay_step.as_str())
        };
        let what = format!(
            "{} {} ms",
            if hang_first {
                "after waiting"
            } else {
                "returning late by"
            },
            delay.as_millis()
        );
        crate::runc_gate::write_wrapper(&path, &real, &what, verbs, before, after);
        SlowRunc { path, pids }
    }

    /// The wrapper's path, for `BinaryName`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The wrappers that were slow and the `sleep` each ran, as far as they are still alive
    /// (zombies count as gone).
    pub fn alive(&self) -> Vec<i32> {
        fs::read_to_string(&self.pids)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|p| pid_alive(*p))
            .collect()
    }
}

/// One shim, started by hand, with a ttrpc client. See the module docs.
pub struct DirectShim {
    client: TaskClient,
    binary: PathBuf,
    id: String,
    bundle_name: String,
    started: SubcommandRun,
    // Dropped after the client: the connection closes before the shim is killed.
    leftovers: Leftovers,
}

/// What a [`DirectShim`] removes when dropped.
struct Leftovers {
    dir: Option<tempfile::TempDir>,
    namespace: String,
    runc_root: PathBuf,
    socket: Option<PathBuf>,
    shim_pid: Option<i32>,
    shim_log: Arc<Mutex<String>>,
}

impl DirectShim {
    /// Starts a shim for a container `id` whose bundle runs `args` (busybox), as containerd
    /// would: `start` in the bundle dir, then a connection to the printed address.
    pub fn start(id: &str, args: &[&str]) -> Self {
        Self::start_with_env(id, args, &[])
    }

    /// [`DirectShim::start`] with extra environment variables for the shim.
    pub fn start_with_env(id: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(
            &crate::containerd_env::shim_binary(),
            true,
            id,
            args,
            env,
            None,
            &[],
        )
    }

    /// [`DirectShim::start`] with `start` run through `launcher` (a command and its
    /// arguments, given the shim's command line after them: e.g.
    /// `signal_record::IGNORING`, which starts it with signals ignored).
    pub fn start_through(id: &str, args: &[&str], launcher: &[&str]) -> Self {
        Self::launch(
            &crate::containerd_env::shim_binary(),
            true,
            id,
            args,
            &[],
            None,
            launcher,
        )
    }

    /// [`DirectShim::start`] with `options` (runc `Options`) on `start`'s stdin, as
    /// containerd 1.6-2.2 give them (e.g. `ShimCgroup`, which applies at start).
    pub fn start_with_options(id: &str, args: &[&str], options: &Options) -> Self {
        let mut any = Any::new();
        any.type_url = RUNC_OPTIONS.into();
        any.value = options.write_to_bytes().expect("encode runc Options");
        let stdin = any.write_to_bytes().expect("encode the options Any");
        Self::launch(
            &crate::containerd_env::shim_binary(),
            true,
            id,
            args,
            &[],
            Some(&stdin),
            &[],
        )
    }

    /// Starts `binary` (tether, or another shim v2 such as containerd's
    /// `containerd-shim-runc-v2`) the way containerd does without `-debug`: `start` in a
    /// fresh busybox bundle, with `env` (e.g. `TTRPC_ADDRESS`, where it publishes events).
    /// How long `start` took is [`DirectShim::started`].
    pub fn start_binary(binary: &Path, id: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(binary, false, id, args, env, None, &[])
    }

    /// Runs `shim start` (with `-debug` for tether's own tests) in a fresh busybox bundle,
    /// through `launcher` if one is given, with `env` and `stdin`, and connects to the
    /// address it prints.
    fn launch(
        shim: &Path,
        debug: bool,
        id: &str,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&[u8]>,
        launcher: &[&str],
    ) -> Self {
        crate::require::root();
        let dir = tempfile::Builder::new()
            .prefix("td-")
            .tempdir_in("/tmp")
            .expect("create the test's temp dir under /tmp");
        // Named after the task, as containerd names it (the Go shim's `delete` finds
        // the bundle by the id); the tests' own shims keep `bundle`.
        let bundle_name = if debug { "bundle" } else { id };
        let bundle = dir.path().join(bundle_name);
        crate::Bundle::busybox(&bundle, args).expect("write the busybox bundle");
        let namespace = format!("{}-x", crate::unique_id("dns"));
        let runc_root = dir.path().join("runc");
        // containerd's `log` FIFO, drained into `shim_log` for failure messages.
        let shim_log = Arc::new(Mutex::new(String::new()));
        drain_log_fifo(&bundle.join("log"), shim_log.clone());
        let before = SubcommandRun::clock();
        let mut start = through(launcher, shim)
            .args(debug.then_some("-debug"))
            .args(["-namespace", &namespace, "-id", id, "-address"])
            .arg(dir.path().join("containerd.sock"))
            .arg("start")
            .envs(env.iter().copied())
            .current_dir(&bundle)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the shim's start command");
        if let (Some(bytes), Some(mut pipe)) = (stdin, start.stdin.take()) {
            use std::io::Write;
            pipe.write_all(bytes).expect("write the shim's start stdin");
        }
        let mut address = String::new();
        if let Some(mut out) = start.stdout.take() {
            let _ = out.read_to_string(&mut address);
        }
        let status = start.wait().expect("wait for the shim's start command");
        let started = SubcommandRun::since(before);
        let socket = address.strip_prefix("unix://").map(PathBuf::from);
        // containerd 1.6's Go shim writes no `shim.pid`: then the server is the process of
        // that binary working in the bundle.
        let shim_pid = fs::read_to_string(bundle.join("shim.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .or_else(|| server_in(shim, &bundle));
        let leftovers = Leftovers {
            dir: Some(dir),
            namespace,
            runc_root,
            socket,
            shim_pid,
            shim_log,
        };
        assert!(
            status.success() && !address.is_empty(),
            "shim start failed ({status}): printed {address:?}"
        );
        let client = Client::connect(&address)
            .unwrap_or_else(|e| panic!("connect to the shim at {address}: {e}"));
        DirectShim {
            client: TaskClient::new(client),
            binary: shim.to_path_buf(),
            id: id.to_string(),
            bundle_name: bundle_name.to_string(),
            started,
            leftovers,
        }
    }

    /// How long the `start` subcommand took, and its CPU time.
    pub fn started(&self) -> SubcommandRun {
        self.started
    }

    /// Runs the shim binary's `delete` subcommand in the bundle, as containerd does after a
    /// shim died (it cleans up whatever runc still has of the task); returns how long it
    /// took, its CPU time, and whether it succeeded.
    pub fn delete_subcommand(&self, env: &[(&str, &str)]) -> (SubcommandRun, bool) {
        let before = SubcommandRun::clock();
        let status = Command::new(&self.binary)
            .args(["-namespace", self.namespace(), "-id", &self.id, "-address"])
            .arg(self.dir().join("containerd.sock"))
            .arg("delete")
            .envs(env.iter().copied())
            .current_dir(self.bundle())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        (
            SubcommandRun::since(before),
            status.is_ok_and(|s| s.success()),
        )
    }

    /// The containerd namespace the shim was started in.
    pub fn namespace(&self) -> &str {
        &self.leftovers.namespace
    }

    /// The ttrpc Task client (share it across threads by reference).
    pub fn client(&self) -> &TaskClient {
        &self.client
    }

    /// The shim's command line for `action` (`start`, `delete`) as containerd gives it
    /// for this shim's container `id`, run in its bundle, through `launcher` (see
    /// [`DirectShim::start_through`]).
    pub fn action_command(&self, id: &str, action: &str, launcher: &[&str]) -> Command {
        let shim = crate::containerd_env::shim_binary();
        let mut c = through(launcher, &shim);
        c.args(["-namespace", self.namespace(), "-id", id, "-address"])
            .arg(self.dir().join("containerd.sock"))
            .arg(action)
            .current_dir(self.bundle());
        c
    }

    /// The bundle directory.
    pub fn bundle(&self) -> PathBuf {
        self.dir().join(&self.bundle_name)
    }

    /// The shim's own log (logrus lines), for failure messages.
    pub fn log(&self) -> String {
        let shim = self
            .leftovers
            .shim_log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        let runc = fs::read_to_string(self.bundle().join("log.json")).unwrap_or_default();
        format!("shim log:\n{shim}\nruncs' log.json:\n{runc}")
    }

    /// Waits until the shim's log holds `needle` (the log is copied by another thread).
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The test's temp dir.
    pub fn dir(&self) -> &Path {
        self.leftovers.dir()
    }

    /// The shim server's pid (from `shim.pid`).
    pub fn shim_pid(&self) -> Option<i32> {
        self.leftovers.shim_pid
    }

    /// The shim's socket path.
    pub fn socket(&self) -> Option<&Path> {
        self.leftovers.socket.as_deref()
    }

    /// The runc root the task runs under (`<root>/<namespace>` is runc's own).
    pub fn runc_state_dir(&self) -> PathBuf {
        self.leftovers.runc_state_dir()
    }

    /// runc `Options` naming `binary` and this shim's private runc root.
    pub fn options(&self, binary: &Path) -> Any {
        let mut o = Options::new();
        o.binary_name = binary.to_string_lossy().into_owned();
        o.root = self.leftovers.runc_root.to_string_lossy().into_owned();
        let mut any = Any::new();
        any.type_url = RUNC_OPTIONS.into();
        any.value = o.write_to_bytes().expect("encode runc Options");
        any
    }

    /// Sets `process.terminal` in the bundle's config (before Create).
    pub fn set_terminal(&self, terminal: bool) {
        let path = self.bundle().join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).expect("read config.json"))
                .expect("config.json is JSON");
        config["process"]["terminal"] = serde_json::json!(terminal);
        fs::write(&path, config.to_string()).expect("write config.json");
    }

    /// The spec of an exec running `args`, from the bundle's own process (its env, user,
    /// capabilities), as containerd sends it in `ExecProcessRequest.spec`.
    pub fn exec_spec(&self, args: &[&str], terminal: bool) -> Any {
        let config: serde_json::Value = serde_json::from_slice(
            &fs::read(self.bundle().join("config.json")).expect("read config.json"),
        )
        .expect("config.json is JSON");
        let mut process = config["process"].clone();
        process["args"] = serde_json::json!(args);
        process["terminal"] = serde_json::json!(terminal);
        let mut any = Any::new();
        any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
        any.value = serde_json::to_vec(&process).expect("encode the process spec");
        any
    }

    /// Creates task `id` (real runc) with its stdout into a FIFO the test holds open
    /// and does not read yet; returns the FIFO's read end (non-blocking). Output beyond
    /// what the FIFO holds goes to the shim's spool until the test reads.
    pub fn create_with_stdout_fifo(&self, id: &str) -> fs::File {
        use std::os::unix::fs::OpenOptionsExt;
        let fifo = self.dir().join("stdout");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo stdout");
        let reader = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .expect("open the stdout FIFO");
        let mut create = api::CreateTaskRequest::new();
        create.id = id.into();
        create.bundle = self.bundle().to_string_lossy().into_owned();
        create.stdout = fifo.to_string_lossy().into_owned();
        create.options = Some(self.options(&crate::require::tool("runc", "runc"))).into();
        self.client
            .create(ctx(), &create)
            .unwrap_or_else(|e| panic!("Create {id}: {e}\n{}", self.log()));
        reader
    }

    /// Start of task `id`; returns its pid.
    pub fn start_task(&self, id: &str) -> u32 {
        let mut start = api::StartRequest::new();
        start.id = id.into();
        self.client
            .start(ctx(), &start)
            .unwrap_or_else(|e| panic!("Start {id}: {e}\n{}", self.log()))
            .pid
    }

    /// Create (with `options`) and Start of task `id`; returns its pid.
    pub fn create_and_start(&self, id: &str, options: Any) -> u32 {
        let mut create = api::CreateTaskRequest::new();
        create.id = id.into();
        create.bundle = self.bundle().to_string_lossy().into_owned();
        create.options = Some(options).into();
        self.client
            .create(ctx(), &create)
            .unwrap_or_else(|e| panic!("Create {id}: {e}"));
        let mut start = api::StartRequest::new();
        start.id = id.into();
        self.client
            .start(ctx(), &start)
            .unwrap_or_else(|e| panic!("Start {id}: {e}"))
            .pid
    }

    /// SIGKILLs task `id`'s init and waits for its exit, as containerd's force-kill does.
    pub fn kill_and_wait(&self, id: &str) -> api::WaitResponse {
        let mut kill = api::KillRequest::new();
        kill.id = id.into();
        kill.signal = libc::SIGKILL as u32;
        self.client.kill(ctx(), &kill).expect("Kill");
        let mut wait = api::WaitRequest::new();
        wait.id = id.into();
        self.client.wait(ctx(), &wait).expect("Wait")
    }

    /// Ends task `id` and the shim as containerd does after a force-kill: SIGKILL, Wait,
    /// Delete, then Shutdown (the shim exits once nothing is in flight).
    pub fn kill_delete_and_shut_down(&self, id: &str) {
        self.kill_and_wait(id);
        let mut delete = api::DeleteRequest::new();
        delete.id = id.into();
        self.client.delete(ctx(), &delete).expect("Delete");
        self.client
            .shutdown(ctx(), &api::ShutdownRequest::new())
            .expect("Shutdown");
    }

    /// The entries runc still has in this shim's state dir (its containers).
    pub fn runc_state_left(&self) -> Vec<std::ffi::OsString> {
        fs::read_dir(self.runc_state_dir())
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default()
    }

    /// After Delete and Shutdown: the shim has exited and left neither its socket nor
    /// runc state.
    pub fn assert_nothing_left(&self) {
        assert!(
            self.wait_shim_exit(Duration::from_secs(10)),
            "the shim still runs after Delete and Shutdown"
        );
        if let Some(socket) = self.socket() {
            assert!(!socket.exists(), "socket {} left behind", socket.display());
        }
        let left = self.runc_state_left();
        assert!(
            left.is_empty(),
            "runc state left in {}: {left:?}",
            self.runc_state_dir().display()
        );
    }

    /// Waits until the shim server has exited; false when it still runs after `timeout`.
    pub fn wait_shim_exit(&self, timeout: Duration) -> bool {
        let Some(pid) = self.leftovers.shim_pid else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !pid_alive(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        !pid_alive(pid)
    }
}

/// One run of a shim subcommand (`start`, `delete`) this process waited for.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubcommandRun {
    /// From spawning it to reaping it.
    pub took: Duration,
    /// Its CPU time (user + system), with that of the children it waited for.
    pub cpu: Duration,
}

impl SubcommandRun {
    /// The wall clock and this process's reaped children's CPU time, now.
    fn clock() -> (Instant, Duration) {
        (Instant::now(), children_cpu())
    }

    /// What passed since `before` ([`SubcommandRun::clock`]): right for one subcommand
    /// at a time, since every child this process reaps meanwhile counts.
    fn since(before: (Instant, Duration)) -> Self {
        SubcommandRun {
            took: before.0.elapsed(),
            cpu: children_cpu().saturating_sub(before.1),
        }
    }
}

/// User + system CPU time of this process's reaped children (and theirs).
pub fn children_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(Duration::ZERO, |u| {
        let d = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
                + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
        };
        d(u.user_time()) + d(u.system_time())
    })
}

/// A raw ttrpc connection to the shim: requests written and responses read frame by frame,
/// so a test sees the order in which the shim wrote its replies (the ttrpc client hands
/// them to different threads, whose wake-up order says nothing).
pub struct RawConn {
    sock: std::os::unix::net::UnixStream,
}

impl RawConn {
    /// Connects to the shim's socket.
    pub fn connect(shim: &DirectShim) -> Self {
        let sock = std::os::unix::net::UnixStream::connect(shim.socket().expect("shim socket"))
            .expect("connect to the shim");
        sock.set_read_timeout(Some(CALL_TIMEOUT))
            .expect("read timeout");
        RawConn { sock }
    }

    /// Sends a call of `containerd.task.v2.Task` on ttrpc stream `stream` (odd numbers).
    pub fn send(&mut self, stream: u32, method: &str, request: &impl Message) {
        self.send_with_timeout(stream, method, request, None);
    }

    /// [`RawConn::send`] with the caller's `timeout` in the request (ttrpc's
    /// `timeout_nano`, as a Go client with a context deadline sends it); `None`: no timeout.
    pub fn send_with_timeout(
        &mut self,
        stream: u32,
        method: &str,
        request: &impl Message,
        timeout: Option<Duration>,
    ) {
        self.send_to("containerd.task.v2.Task", stream, method, request, timeout);
    }

    /// [`RawConn::send_with_timeout`] to another ttrpc `service` (e.g.
    /// `containerd.task.v3.Task`, which containerd 2.x calls).
    pub fn send_to(
        &mut self,
        service: &str,
        stream: u32,
        method: &str,
        request: &impl Message,
        timeout: Option<Duration>,
    ) {
        use std::io::Write;
        let mut req = containerd_shim_protos::ttrpc::Request::new();
        req.service = service.into();
        req.method = method.into();
        req.timeout_nano = timeout.map_or(0, |t| i64::try_from(t.as_nanos()).unwrap_or(i64::MAX));
        req.payload = request.write_to_bytes().expect("encode the request");
        let body = req.write_to_bytes().expect("encode the ttrpc request");
        let mut frame = Vec::with_capacity(10 + body.len());
        frame.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(&[1, 0]);
        frame.extend_from_slice(&body);
        self.sock.write_all(&frame).expect("send the request");
    }

    /// Parks a Wait for task `id` (stream 1), then sends it SIGKILL (stream 3) with the
    /// caller's `timeout`, as containerd's CRI does: one connection, in that order.
    pub fn wait_then_kill(&mut self, id: &str, timeout: Option<Duration>) {
        let mut wait = api::WaitRequest::new();
        wait.id = id.into();
        self.send(1, "Wait", &wait);
        let mut kill = api::KillRequest::new();
        kill.id = id.into();
        kill.signal = libc::SIGKILL as u32;
        self.send_with_timeout(3, "Kill", &kill, timeout);
    }

    /// The next response frame: its stream and the response.
    pub fn recv(&mut self) -> (u32, containerd_shim_protos::ttrpc::Response) {
        let mut header = [0u8; 10];
        self.sock
            .read_exact(&mut header)
            .expect("a response header");
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let stream = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let mut body = vec![0u8; len];
        self.sock.read_exact(&mut body).expect("a response body");
        let resp = containerd_shim_protos::ttrpc::Response::parse_from_bytes(&body)
            .expect("decode the response");
        (stream, resp)
    }
}

/// A fresh context with the test's call timeout.
pub fn ctx() -> context::Context {
    context::with_timeout(i64::try_from(CALL_TIMEOUT.as_nanos()).unwrap())
}

/// Makes the `log` FIFO and copies what the shim writes there into `sink`. Like
/// containerd, it holds the FIFO open for reading and writing, so `start` closing its
/// end is no EOF and the server finds a reader when it opens its own (a detached thread
/// of the test process; it blocks on the FIFO once the shim is gone).
fn drain_log_fifo(path: &Path, sink: Arc<Mutex<String>>) {
    if nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).is_err() {
        return;
    }
    let Ok(mut fifo) = fs::OpenOptions::new().read(true).write(true).open(path) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = fifo.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut log) = sink.lock() {
                log.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
}

/// The pid of a process running `binary` whose working directory is `dir`.
fn server_in(binary: &Path, dir: &Path) -> Option<i32> {
    let binary = fs::canonicalize(binary).ok()?;
    let dir = fs::canonicalize(dir).ok()?;
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let path = entry.path();
        (fs::read_link(path.join("exe")).ok()? == binary
            && fs::read_link(path.join("cwd")).ok()? == dir)
            .then_some(pid)
    })
}

/// Whether `pid` runs (a zombie does not).
pub fn pid_alive(pid: i32) -> bool {
    // A zombie is gone for our purposes; the shim is reparented to init, which reaps it.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

impl Leftovers {
    fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/"))
    }

    fn runc_state_dir(&self) -> PathBuf {
        self.runc_root.join(&self.namespace)
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if let Some(pid) = self.shim_pid.filter(|p| pid_alive(*p)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // A runtime (or wrapper) that hangs outlives the shim: end whatever still runs
        // from this test's directory, even what blocks SIGTERM.
        if let Some(dir) = &self.dir {
            for (pid, _) in cleanup::processes_mentioning(&dir.path().to_string_lossy()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let runc = crate::require::tool("runc", "runc");
        cleanup::delete_all_containers(&runc, &self.runc_state_dir());
        if let Some(socket) = &self.socket {
            let _ = fs::remove_file(socket);
        }
        if let Some(dir) = self.dir.take() {
            cleanup::unmount_under(dir.path());
            let _ = dir.close();
        }
    }
}

/// `shim`'s command, run through `launcher` (a program and its arguments, e.g. `sh -c
/// 'trap "" HUP; exec "$0" "$@"'`) when one is given, else directly.
fn through(launcher: &[&str], shim: &Path) -> Command {
    match launcher.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(shim);
            c
        }
        None => Command::new(shim),
    }
}

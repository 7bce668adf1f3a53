//! Starting a shim as containerd does: `start` run in a fresh busybox bundle (through a
//! launcher, with options on its stdin or another shim binary when asked), its log FIFO
//! drained, the server found and a ttrpc client connected to the address it prints; and
//! the shim's other subcommands (`delete`, or any action's command line) run the same way.

use super::leftovers::Leftovers;
use super::{DirectShim, SubcommandRun, RUNC_OPTIONS};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::Options;
use containerd_shim_protos::{Client, TaskClient};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

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

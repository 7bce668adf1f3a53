//! One test's private world for the standalone supervisor: a [`RuncEnv`] (own runc root,
//! temp dir, cleanup guard) plus a depot inside its temp dir, and helpers to run the
//! shim's subcommands against them.
//!
//! Dropping it deletes the depot's containers through the CLI (best effort), then the
//! `RuncEnv` guard force-deletes whatever runc still knows, kills every process whose
//! command line mentions the temp dir (the supervisors name their process directory) and
//! removes the dir.

use crate::bundle::Bundle;
use crate::runc_env::RuncEnv;
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A depot, a runc root and the shim binary for one test.
pub struct StandaloneEnv {
    depot: PathBuf,
    shim: PathBuf,
    /// runc's root is the default, `<depot>/.runc`, instead of the `RuncEnv`'s.
    runc_root_in_depot: bool,
    /// `--runc` instead of the real runc (a wrapper).
    runc_binary: Option<PathBuf>,
    /// A command the subcommands run through (see [`StandaloneEnv::through`]).
    launcher: Vec<String>,
    containers: std::sync::Mutex<Vec<String>>,
    // Last: dropped after our own cleanup.
    runc: RuncEnv,
}

impl StandaloneEnv {
    /// A fresh environment (checks root, runc, busybox like [`RuncEnv::new`]).
    pub fn new() -> Self {
        let runc = RuncEnv::new();
        let depot = runc.dir().join("depot");
        StandaloneEnv {
            depot,
            shim: crate::containerd_env::shim_binary(),
            runc_root_in_depot: false,
            runc_binary: None,
            launcher: Vec::new(),
            containers: Default::default(),
            runc,
        }
    }

    /// Like [`StandaloneEnv::new`], but the commands use the default runc root inside the
    /// depot (`<depot>/.runc`), as an operator who gives no `--runc-root` does.
    pub fn with_runc_root_in_depot() -> Self {
        let mut env = Self::new();
        env.runc_root_in_depot = true;
        env
    }

    /// The commands give `--runc binary` (a wrapper around the real runc) from now on.
    pub fn use_runc(&mut self, binary: &Path) {
        self.runc_binary = Some(binary.to_path_buf());
    }

    /// The commands run through `launcher` (a command and its arguments, given the
    /// shim's command line after them) from now on, e.g. `signal_record::IGNORING`.
    pub fn through(&mut self, launcher: &[&str]) {
        self.launcher = launcher.iter().map(|s| s.to_string()).collect();
    }

    /// The runc root the commands use.
    pub fn runc_root(&self) -> PathBuf {
        if self.runc_root_in_depot {
            self.depot.join(".runc")
        } else {
            self.runc.root().to_path_buf()
        }
    }

    /// The underlying runc environment.
    pub fn runc_env(&self) -> &RuncEnv {
        &self.runc
    }

    /// The depot directory.
    pub fn depot(&self) -> &Path {
        &self.depot
    }

    /// The process directory of `process` in `container`.
    pub fn process_dir(&self, container: &str, process: &str) -> PathBuf {
        self.depot.join(container).join("processes").join(process)
    }

    /// A command running the shim's `sub` subcommand against this depot and runc root.
    pub fn cmd(&self, sub: &str) -> Command {
        let mut c = match self.launcher.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&self.shim);
                c
            }
            None => Command::new(&self.shim),
        };
        c.arg(sub)
            .arg("--depot")
            .arg(&self.depot)
            .arg("--runc")
            .arg(
                self.runc_binary
                    .as_deref()
                    .unwrap_or(self.runc.runc_binary()),
            );
        if !self.runc_root_in_depot {
            c.arg("--runc-root").arg(self.runc.root());
        }
        c
    }

    /// Runs `sub args...` to completion (stdin /dev/null), killed after 60 s.
    pub fn output(&self, sub: &str, args: &[&str]) -> Output {
        let mut c = self.cmd(sub);
        c.args(args).stdin(Stdio::null());
        output_bounded(c, Duration::from_secs(60))
    }

    /// Runs `sub args...` and asserts success; returns stdout.
    pub fn ok(&self, sub: &str, args: &[&str]) -> String {
        let out = self.output(sub, args);
        assert!(
            out.status.success(),
            "{sub} {args:?}: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A busybox bundle named `name` running `args` (no terminal).
    pub fn bundle(&self, name: &str, args: &[&str]) -> Bundle {
        self.runc.bundle(name, args)
    }

    /// `run --bundle B ID --json`; returns the init's pid. The container is deleted when
    /// the environment is dropped.
    pub fn run(&self, id: &str, bundle: &Bundle) -> i32 {
        self.run_with(id, bundle, &[])
    }

    /// [`StandaloneEnv::run`] with `extra` options (such as `--io-uid N`).
    pub fn run_with(&self, id: &str, bundle: &Bundle, extra: &[&str]) -> i32 {
        self.containers.lock().unwrap().push(id.to_string());
        let mut args = vec!["--bundle", bundle.path().to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        args.push(id);
        let out = self.ok("run", &args);
        let v: Value = serde_json::from_str(out.trim()).expect("run --json output");
        i32::try_from(v["pid"].as_i64().expect("pid")).unwrap()
    }

    /// Writes `process` (an OCI process) to a file and runs `exec`; returns the output.
    pub fn exec_output(&self, id: &str, process_id: &str, process: &Value) -> Output {
        self.exec_output_with(id, process_id, process, &[])
    }

    /// [`StandaloneEnv::exec_output`] with `extra` options (such as `--io-uid N`).
    pub fn exec_output_with(
        &self,
        id: &str,
        process_id: &str,
        process: &Value,
        extra: &[&str],
    ) -> Output {
        let file = self.runc.dir().join(format!("{process_id}.process.json"));
        std::fs::write(&file, serde_json::to_vec(process).unwrap()).unwrap();
        let mut args = vec!["--process", file.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        args.extend([id, process_id]);
        self.output("exec", &args)
    }

    /// Lets every user traverse (not list) the test's temp dir, so that a manager running
    /// as another user can reach the depot in it (the temp dir is 0700; a real depot's
    /// parents are the operator's to open).
    pub fn let_others_traverse(&self) {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.runc.dir();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .expect("chmod the test's temp dir");
    }

    /// [`StandaloneEnv::exec_output`], asserting success; returns the pid.
    pub fn exec(&self, id: &str, process_id: &str, process: &Value) -> i32 {
        let out = self.exec_output(id, process_id, process);
        assert!(
            out.status.success(),
            "exec {process_id}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("exec --json output");
        i32::try_from(v["pid"].as_i64().expect("pid")).unwrap()
    }

    /// A unique id.
    pub fn id(&self, prefix: &str) -> String {
        self.runc.id(prefix)
    }
}

impl Default for StandaloneEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StandaloneEnv {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.containers.lock().unwrap_or_else(|p| p.into_inner()));
        for id in ids {
            let mut c = self.cmd("delete");
            c.args(["--force", &id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = output_bounded(c, Duration::from_secs(20));
        }
        if self.runc_root_in_depot {
            // What the CLI could not delete (the `RuncEnv` guard knows only its own root).
            crate::cleanup::delete_all_containers(self.runc.runc_binary(), &self.runc_root());
        }
    }
}

/// Waits until whoever reads the FIFO behind `end` (a supervisor) has taken everything
/// written to it: FIONREAD sees the FIFO's one buffer from either end. Fails the test
/// after 10 s.
pub fn wait_read(end: &std::fs::File) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while fifo::unread(end) != Some(0) {
        assert!(Instant::now() < deadline, "nobody read the FIFO");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for `child` at most `timeout`; then kills it (and reaps it) and returns `None`.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Runs `cmd` with captured output, killing it after `timeout` (then the output so far
/// is returned with a failed status).
pub fn output_bounded(cmd: Command, timeout: Duration) -> Output {
    output_bounded_impl(cmd, None, timeout)
}

/// [`output_bounded`], with `input` written to the command's stdin (a pipe, closed once
/// everything is written).
pub fn output_bounded_with_input(cmd: Command, input: &[u8], timeout: Duration) -> Output {
    output_bounded_impl(cmd, Some(input.to_vec()), timeout)
}

fn output_bounded_impl(mut cmd: Command, input: Option<Vec<u8>>, timeout: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn the command");
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A thread: the child may read its stdin only once it has written output.
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
    }
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                break child.wait().expect("wait for the shim");
            }
        }
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

//! The daemon itself: starting containerd on the test's config and waiting until it
//! answers, stopping, killing and restarting it (the shims run on, as in an upgrade or a
//! crash), switching to another containerd build, and the log it writes.

use super::bounded_run::run_bounded;
use super::ctr::ctr_base;
use super::{ContainerdEnv, READY_TIMEOUT};
use crate::containerd_version::{self, DaemonVersion};
use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// How many lines of containerd's log a failure message quotes.
const LOG_TAIL_LINES: usize = 80;

impl ContainerdEnv {
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

    /// Starts containerd on the test's config with `<dir>/bin` (the shim) and the working
    /// `criu`'s dir first on its PATH, and waits until it answers `ctr version`.
    pub(super) fn spawn_daemon(&mut self) {
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
}

/// SIGTERM, then SIGKILL after `grace`; reaps the daemon.
pub(super) fn stop_daemon(mut child: Child, grace: Duration) {
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

/// Appends `text` to containerd's log with the time, marking what the test did to it.
fn append_log(log: &Path, text: &str) {
    if let Ok(mut f) = fs::OpenOptions::new().append(true).open(log) {
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let _ = writeln!(f, "{text}(unix time {stamp:.3})");
    }
}

/// The last [`LOG_TAIL_LINES`] lines of containerd's log.
pub(super) fn log_tail(log: &Path) -> String {
    let text = fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", log.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

//! The CRI test bed (`tests/scripts/cri/env.sh`) for one test: a private containerd with
//! its CRI plugin and the runtime handlers `runc` (the Go shim) and `tether`, in its own
//! PID, mount and network namespaces, driven with `crictl` the way kubelet drives a node.
//!
//! [`CriEnv::start`] runs `env.sh serve` and waits until the bed is up; `crictl` then runs
//! inside the bed's network and mount namespaces (`nsenter`), because containerd's
//! streaming server (exec, attach) listens on the bed's own 127.0.0.1, and in its PID
//! namespace, whose /proc the bed's mount namespace shows. Dropping the
//! [`CriEnv`] ends the bed: every process in its PID namespace dies with it, its mounts
//! vanish with its mount namespace, and env.sh removes its cgroups and work dir.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long the bed may take to come up (images are built on the first run).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound of one crictl call (pulls and pod starts included).
const CRICTL_TIMEOUT_SECS: u32 = 90;
/// How long the bed may take to go away after it is told to.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How many lines of containerd's log a failure message quotes.
const LOG_TAIL_LINES: usize = 60;

/// Writes `value` as `dir/name` (a crictl config file); returns its path.
pub fn write_json(dir: &Path, name: &str, value: serde_json::Value) -> String {
    let path = dir.join(name);
    fs::write(&path, value.to_string()).expect("write a crictl config file");
    path.display().to_string()
}

/// The lines of a CRI container log file: (stream, tag, message).
pub fn cri_log_lines(path: &Path) -> Vec<(String, String, String)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(4, ' ');
            let _timestamp = it.next()?;
            Some((
                it.next()?.to_string(),
                it.next()?.to_string(),
                it.next().unwrap_or("").to_string(),
            ))
        })
        .collect()
}

/// The default crictl: cri-tools built by `tests/scripts/go-tools.sh cri-tools`.
const DEFAULT_CRICTL: &str = "/var/cache/tether/go/cri-tools-v1.37.0/bin/crictl";

/// A running CRI test bed. See the module docs.
pub struct CriEnv {
    child: Option<Child>,
    vars: HashMap<String, String>,
    ns_pid: i32,
    crictl: PathBuf,
    shim: PathBuf,
    _ready_dir: tempfile::TempDir,
}

impl CriEnv {
    /// The crictl the bed is driven with: `$CRICTL`, else the go-tools.sh build.
    fn crictl_binary() -> PathBuf {
        std::env::var_os("CRICTL")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CRICTL))
    }

    /// [`CriEnv::start`], unless what only the CRI bed needs is missing: crictl (a Go
    /// build, `tests/scripts/go-tools.sh cri-tools`) or the CNI plugins and iptables
    /// (`make cri-deps`), which a plain `cargo test` / `make test` does not provide. Then
    /// the test is skipped ([`crate::skip`](mod@crate::skip)), or fails if `TETHER_CRI_REQUIRED=1`
    /// (`make test-cri` sets it).
    pub fn start_or_skip(test: &str) -> Option<Self> {
        let crictl = Self::crictl_binary();
        let mut missing: Vec<String> = Vec::new();
        if !crictl.is_file() {
            missing.push(format!(
                "crictl at {} (tests/scripts/go-tools.sh cri-tools)",
                crictl.display()
            ));
        }
        for plugin in ["bridge", "host-local", "loopback", "portmap"] {
            if !Path::new("/usr/lib/cni").join(plugin).is_file() {
                missing.push(format!(
                    "/usr/lib/cni/{plugin} (containernetworking-plugins)"
                ));
            }
        }
        if !["/usr/sbin/iptables", "/sbin/iptables"]
            .iter()
            .any(|p| Path::new(p).exists())
        {
            missing.push("iptables".to_string());
        }
        if !missing.is_empty() && std::env::var("TETHER_CRI_REQUIRED").as_deref() != Ok("1") {
            crate::skip(
                test,
                &format!(
                    "the CRI test bed needs {} (make test-cri provides them)",
                    missing.join(", ")
                ),
            );
            return None;
        }
        Some(Self::start())
    }

    /// Starts the bed with the containerd named by `$CRI_CONTAINERD` (`1.6`, the default,
    /// or `2.3`) and the shim of [`crate::containerd_env::shim_binary`]; panics with a
    /// message naming what is missing if it cannot.
    pub fn start() -> Self {
        crate::require::root();
        crate::require::tool("nsenter", "util-linux");
        crate::require::tool("script", "bsdutils");
        let crictl = Self::crictl_binary();
        assert!(
            crictl.is_file(),
            "crictl not found at {}: run tests/scripts/go-tools.sh cri-tools (or set CRICTL)",
            crictl.display()
        );
        let shim = crate::containerd_env::shim_binary();
        let shim = fs::canonicalize(&shim).unwrap_or(shim);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cri/env.sh");
        let ready_dir = tempfile::Builder::new()
            .prefix("tether-cri-ready-")
            .tempdir()
            .expect("temp dir for the bed's ready file");
        let ready = ready_dir.path().join("ready");
        let mut child = Command::new("bash")
            .arg(&script)
            .arg("serve")
            .arg(&ready)
            .env("TETHER_SHIM", &shim)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let deadline = Instant::now() + START_TIMEOUT;
        while !ready.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the CRI test bed did not start ({status}); its messages are above");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the CRI test bed did not become ready in {START_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(100));
        }
        let text = fs::read_to_string(&ready).expect("read the bed's ready file");
        let vars: HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ns_pid = vars
            .get("CRI_NS_PID")
            .and_then(|p| p.parse().ok())
            .expect("CRI_NS_PID in the bed's ready file");
        CriEnv {
            child: Some(child),
            vars,
            ns_pid,
            crictl,
            shim,
            _ready_dir: ready_dir,
        }
    }

    /// A value of the bed's ready file (`CRI_WORK`, `CRI_ENDPOINT`, `CRI_LOG`, ...).
    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{key} missing from the bed's ready file"))
    }

    /// The bed's work dir (containerd root, state, logs; visible from the host).
    pub fn work(&self) -> PathBuf {
        PathBuf::from(self.var("CRI_WORK"))
    }

    /// The tether shim binary the bed runs (its real path: what `/proc/<pid>/exe` shows).
    pub fn shim_binary(&self) -> &Path {
        &self.shim
    }

    /// Path of `path` (absolute, as the bed sees it) seen through the bed's mount namespace.
    pub fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.ns_pid))
    }

    /// Polls `cond` until it holds; panics after `limit` naming `what`, with containerd's
    /// log.
    pub fn wait_until(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n--- containerd log ---\n{}",
                self.log_tail()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of containerd's log (shim logs included), for failure messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.var("CRI_LOG")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// A crictl command line run inside the bed's network and mount namespaces.
    fn crictl_command<S: AsRef<str>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", &CRICTL_TIMEOUT_SECS.to_string()])
            .arg("nsenter")
            .arg(format!("--target={}", self.ns_pid))
            .args(["--net", "--mount", "--pid", "--"])
            .arg(&self.crictl)
            .arg("--config")
            .arg(self.var("CRI_CRICTL_CONFIG"));
        for a in args {
            cmd.arg(a.as_ref());
        }
        cmd
    }

    /// A command run inside the bed's network, mount and PID namespaces (its /proc, its
    /// /run/containerd), bounded like crictl.
    pub fn inside_command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", &CRICTL_TIMEOUT_SECS.to_string()])
            .arg("nsenter")
            .arg(format!("--target={}", self.ns_pid))
            .args(["--net", "--mount", "--pid", "--"])
            .arg(program);
        cmd
    }

    /// `ctr` against the bed's containerd, in namespace `namespace`.
    pub fn ctr<S: AsRef<str>>(&self, namespace: &str, args: &[S]) -> Output {
        let address = self
            .var("CRI_ENDPOINT")
            .trim_start_matches("unix://")
            .to_string();
        let mut cmd = self.inside_command(Path::new("ctr"));
        cmd.args(["--address", &address, "--namespace", namespace]);
        for a in args {
            cmd.arg(a.as_ref());
        }
        cmd.stdin(Stdio::null()).output().expect("run ctr")
    }

    /// Starts crictl with `args` in the background, on a pseudo-terminal (`script`), its
    /// output into `out`: a session that lasts (an attach, a streaming exec).
    pub fn crictl_background<S: AsRef<str>>(&self, args: &[S], out: &Path) -> Child {
        let line = self.crictl_line(args);
        let file = fs::File::create(out).expect("the background crictl's output file");
        Command::new("nsenter")
            .arg(format!("--target={}", self.ns_pid))
            .args(["--net", "--mount", "--pid", "--"])
            .args(["script", "-qefc", &line, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("run crictl in the background")
    }

    /// Runs crictl with `args`; returns its output whatever its status.
    pub fn crictl<S: AsRef<str>>(&self, args: &[S]) -> Output {
        self.crictl_command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run crictl")
    }

    /// Runs crictl with `args` and `input` on its stdin.
    pub fn crictl_with_stdin<S: AsRef<str>>(&self, args: &[S], input: &[u8]) -> Output {
        let mut child = self
            .crictl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run crictl");
        let mut stdin = child.stdin.take().expect("crictl stdin");
        stdin.write_all(input).expect("write crictl's stdin");
        drop(stdin);
        child.wait_with_output().expect("wait for crictl")
    }

    /// Runs crictl with `args` on a pseudo-terminal (util-linux `script`), as `crictl exec
    /// -it` runs in an operator's shell; returns what the terminal showed.
    pub fn crictl_on_tty<S: AsRef<str>>(&self, args: &[S]) -> Output {
        Command::new("timeout")
            .args(["-k", "5", &CRICTL_TIMEOUT_SECS.to_string()])
            .arg("nsenter")
            .arg(format!("--target={}", self.ns_pid))
            .args(["--net", "--mount", "--pid", "--"])
            .args(["script", "-qefc", &self.crictl_line(args), "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .expect("run crictl under script")
    }

    /// crictl with `args` as one shell command line (for `script -c`).
    fn crictl_line<S: AsRef<str>>(&self, args: &[S]) -> String {
        std::iter::once(self.crictl.display().to_string())
            .chain(["--config".into(), self.var("CRI_CRICTL_CONFIG").into()])
            .chain(args.iter().map(|a| a.as_ref().to_string()))
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs crictl with `args`, panics (with containerd's log) unless it succeeds, and
    /// returns its trimmed stdout.
    pub fn crictl_ok<S: AsRef<str>>(&self, args: &[S]) -> String {
        let out = self.crictl(args);
        assert!(
            out.status.success(),
            "crictl {} failed ({})\nstdout: {}\nstderr: {}\n--- containerd log ---\n{}",
            args.iter()
                .map(|a| a.as_ref())
                .collect::<Vec<_>>()
                .join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Processes of the bed's PID namespace and the namespaces nested in it (containers),
    /// read from the bed's own /proc: pids are the bed's, as containerd and CRI report them.
    pub fn processes(&self) -> Vec<BedProcess> {
        let proc_dir = PathBuf::from(format!("/proc/{}/root/proc", self.ns_pid));
        let mut found = Vec::new();
        let Ok(entries) = fs::read_dir(&proc_dir) else {
            return found;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) S ppid ...": comm may hold spaces and parens
            let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("?").to_string();
            let ppid = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let status = fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let pid_ns_depth = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .map(|l| l.split_whitespace().count())
                .unwrap_or(0);
            let exe = fs::read_link(entry.path().join("exe")).unwrap_or_default();
            let cmdline = fs::read(entry.path().join("cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .trim()
                        .to_string()
                })
                .unwrap_or_default();
            found.push(BedProcess {
                pid,
                ppid,
                pid_ns_depth,
                state,
                exe,
                cmdline,
            });
        }
        found
    }

    /// Live (non-zombie) processes of the tether shim binary in the bed.
    pub fn tether_shims(&self) -> Vec<BedProcess> {
        self.processes_of(&self.shim)
    }

    /// Live (non-zombie) processes of the bed running the binary `exe`.
    pub fn processes_of(&self, exe: &Path) -> Vec<BedProcess> {
        self.processes()
            .into_iter()
            .filter(|p| p.exe == exe && p.state != "Z")
            .collect()
    }

    /// Mount points of the bed's mount namespace whose path contains `needle`.
    pub fn mounts_mentioning(&self, needle: &str) -> Vec<String> {
        let info =
            fs::read_to_string(format!("/proc/{}/mountinfo", self.ns_pid)).unwrap_or_default();
        info.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Unix sockets and FIFOs below `dir` (a host path, or one from [`CriEnv::inside`]).
    pub fn sockets_and_fifos(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(e.path());
                } else if ft.is_socket() || ft.is_fifo() {
                    found.push(e.path());
                }
            }
        }
        found
    }

    /// Cgroup directories (any controller) named after `id` or containing it.
    pub fn cgroups_of(id: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
        while let Some(d) = stack.pop() {
            let Ok(entries) = fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    continue;
                }
                if e.file_name().to_string_lossy().contains(id) {
                    found.push(e.path());
                } else {
                    stack.push(e.path());
                }
            }
        }
        found
    }

    /// How often each handler's runc wrapper (its BinaryName) ran `verb` (None: any verb).
    pub fn runc_calls(&self, handler: &str, verb: Option<&str>) -> usize {
        let path = Path::new(self.var("CRI_RUNC_CALLS_DIR")).join(handler);
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| match verb {
                Some(v) => *l == v,
                None => true,
            })
            .count()
    }
}

/// One process of the bed's PID namespace.
#[derive(Debug, Clone)]
pub struct BedProcess {
    /// Its pid in the bed's PID namespace (what containerd and CRI report).
    pub pid: i32,
    /// The bed's pid of its parent.
    pub ppid: i32,
    /// PID namespaces it is in, counted from the bed's (1: the bed's own, 2: a container's).
    pub pid_ns_depth: usize,
    /// State letter from `/proc/<pid>/stat` (`Z`: zombie).
    pub state: String,
    /// `/proc/<pid>/exe` (empty for kernel-owned or vanished processes).
    pub exe: PathBuf,
    /// Its command line, NULs as spaces.
    pub cmdline: String,
}

impl Drop for CriEnv {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // env.sh tears down when its stdin closes, or on SIGTERM. Not both at once: a
        // SIGTERM that lands while the exit that the closed stdin caused is entering its
        // teardown ended the shell before it killed the bed's namespace (seen: a bed's
        // unshare, containerd and registry left running after cri_pod). SIGTERM only for
        // a bed that has not begun to go after a while.
        drop(child.stdin.take());
        let started = Instant::now();
        let deadline = started + STOP_TIMEOUT;
        let mut termed = false;
        loop {
            if !termed && started.elapsed() > STOP_TIMEOUT / 3 {
                termed = true;
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
            }
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    eprintln!("cri_env: the bed did not stop in {STOP_TIMEOUT:?}; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn shell_quote_quotes_only_when_needed() {
        assert_eq!(shell_quote("crictl"), "crictl");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}

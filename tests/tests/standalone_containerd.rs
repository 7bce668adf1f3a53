//! Garden's containerd mode: containerd (through tether's shim face) runs a container, and
//! the standalone face starts and supervises processes in it (`exec --runc-root` with
//! containerd's runc root), which must not disturb the shim and must learn how they end
//! when containerd kills the container.
//!
//! The namespace is the `ContainerdEnv`'s own unique one (`ns-<pid>-<n>-x`), not Garden's
//! `garden`: a fixed name would collide between tests running in parallel (and with a
//! real Garden on the host). The runc root follows it, `/run/containerd/runc/<ns>`, as it
//! would be `/run/containerd/runc/garden`.

use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tether_tests::manager_output::read_then_kill;
use tether_tests::standalone_env::{output_bounded, wait_bounded};
use tether_tests::{cleanup, ContainerdEnv};

const POLL: Duration = Duration::from_secs(20);

/// The manager's side: a depot of its own and the standalone face pointed at containerd's
/// runc root. Dropping it force-deletes the depot entry and kills any supervisor left.
struct Manager {
    depot: tempfile::TempDir,
    shim: PathBuf,
    runc_root: PathBuf,
    container: String,
}

impl Manager {
    fn cmd(&self, sub: &str) -> Command {
        let mut c = Command::new(&self.shim);
        c.arg(sub)
            .arg("--depot")
            .arg(self.depot.path())
            .arg("--runc-root")
            .arg(&self.runc_root);
        c
    }

    fn output(&self, sub: &str, args: &[&str]) -> Output {
        let mut c = self.cmd(sub);
        c.args(args).stdin(Stdio::null());
        output_bounded(c, Duration::from_secs(60))
    }

    fn ok(&self, sub: &str, args: &[&str]) -> String {
        let out = self.output(sub, args);
        assert!(
            out.status.success(),
            "{sub} {args:?}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn exec(&self, process: &str, script: &str) -> i32 {
        let spec = json!({
            "args": ["/bin/sh", "-c", script],
            "cwd": "/",
            "env": ["PATH=/bin"],
            "user": {"uid": 0, "gid": 0},
        });
        let file = self.depot.path().join(format!("{process}.json"));
        std::fs::write(&file, serde_json::to_vec(&spec).unwrap()).unwrap();
        let out = self.ok(
            "exec",
            &[
                "--process",
                file.to_str().unwrap(),
                "--json",
                &self.container,
                process,
            ],
        );
        let _ = std::fs::remove_file(&file);
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        i32::try_from(v["pid"].as_i64().unwrap()).unwrap()
    }

    fn dir(&self, process: &str) -> PathBuf {
        self.depot
            .path()
            .join(&self.container)
            .join("processes")
            .join(process)
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let mut c = self.cmd("delete");
        c.args(["--force", &self.container]).stdin(Stdio::null());
        let _ = output_bounded(c, Duration::from_secs(20));
        let needle = self.depot.path().to_string_lossy().into_owned();
        for (pid, _) in cleanup::processes_mentioning(&needle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn read_exit_code(dir: &Path) -> i32 {
    let mut exit = fifo::open_read(&dir.join("exit"), false).unwrap();
    let mut rest = Vec::new();
    exit.read_to_end(&mut rest).unwrap();
    fifo::ProcessDir::from_path(dir)
        .unwrap()
        .read_exit()
        .unwrap()
        .expect("exitcode")
        .code
}

#[test]
fn processes_in_a_container_containerd_runs() {
    let env = ContainerdEnv::start();
    let id = env.run_sleeper("garden", POLL);
    let manager = Manager {
        depot: tempfile::Builder::new()
            .prefix("tt-depot-")
            .tempdir_in("/tmp")
            .unwrap(),
        shim: env.shim_binary().to_path_buf(),
        runc_root: env.runc_root(),
        container: id.clone(),
    };

    // Three processes, each with its own supervisor and process directory in our depot,
    // started at once: they race to give the container its depot entry, and agree on one.
    let counter = "i=0; while :; do i=$((i+1)); echo line$i; sleep 0.02; done";
    let scripts = [
        ("p1", counter),
        ("p2", "sleep 1000"),
        ("p3", "trap '' TERM; while :; do sleep 1; done"),
    ];
    let pids: Vec<i32> = std::thread::scope(|s| {
        let started: Vec<_> = scripts
            .iter()
            .map(|(p, script)| s.spawn(|| manager.exec(p, script)))
            .collect();
        started.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let hidden: Vec<_> = std::fs::read_dir(manager.depot.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".adopt"))
        .collect();
    assert!(hidden.is_empty(), "half-made entries left: {hidden:?}");
    // Each is its supervisor's child (reparented to it, a subreaper, when runc exits),
    // never the shim's: the shim's reaper cannot see, reap or report them.
    for (p, pid) in ["p1", "p2", "p3"].iter().zip(pids.iter().copied()) {
        let sup = std::fs::read_to_string(manager.dir(p).join("supervisor.pid")).unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .unwrap();
        assert_eq!(ppid.trim(), sup.trim(), "{p}'s parent is its supervisor");
    }
    let state: Value = serde_json::from_str(&manager.ok("state", &["--json", &id])).unwrap();
    assert_eq!(state["external"], true);
    assert_eq!(state["status"], "running");
    assert_eq!(state["processes"].as_array().unwrap().len(), 3);
    // The shim is undisturbed: containerd sees the processes in the container (its
    // cgroup), the task runs, and its own execs work.
    let ps = env.ctr_ok(&["task", "ps", &id]);
    for pid in &pids {
        assert!(
            ps.lines()
                .any(|l| l.split_whitespace().next() == Some(&pid.to_string())),
            "ctr task ps lists {pid}: {ps}"
        );
    }
    let out = env.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "/bin/sh",
        "-c",
        "exit 3",
    ]);
    env.assert_exit(&out, 3, "ctr task exec beside ours");
    assert_eq!(env.task_status(&id).as_deref(), Some("RUNNING"));

    // A manager reads p1 and is SIGKILLed mid-stream; the next one reattaches.
    let mut first = manager.cmd("attach");
    first.args([&id, "p1"]);
    // SIGKILLed mid-stream; what it had passed on stays ours
    let mut got = read_then_kill(first, 10);
    let mut second = manager.cmd("attach");
    second
        .args([&id, "p1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut second = second.spawn().unwrap();
    let mut out2 = second.stdout.take().unwrap();
    let reading = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out2.read_to_string(&mut s);
        s
    });
    std::thread::sleep(Duration::from_millis(300));

    // containerd kills the container: every process's `exit` reaches EOF with its code.
    env.kill_task(&id, POLL);
    for p in ["p1", "p2", "p3"] {
        assert_eq!(read_exit_code(&manager.dir(p)), 137, "{p}");
        let wait = manager.output("wait", &[&id, p]);
        assert_eq!(wait.status.code(), Some(137), "wait {p}");
    }
    let status = wait_bounded(&mut second, POLL);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(137),
        "the reattached manager"
    );
    got.push_str(&reading.join().unwrap());
    let n = got.lines().count();
    assert!(n > 10, "lines after the reattach: {got}");
    let want: String = (1..=n).map(|i| format!("line{i}\n")).collect();
    assert_eq!(got, want, "every line, in order");

    // containerd deletes its container; the manager deletes its depot entry (never the
    // container: that was containerd's to delete).
    let out = env.ctr(&["task", "rm", &id]);
    env.assert_exit(&out, 0, "ctr task rm");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exit code 137"),
        "the shim reports its init's exit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ctr_ok(&["container", "rm", &id]);
    manager.ok("delete", &[&id]);
    let left: Vec<_> = std::fs::read_dir(manager.depot.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "depot entries left: {left:?}");
    let depot = manager.depot.path().to_string_lossy().into_owned();
    assert!(
        cleanup::processes_mentioning(&depot).is_empty(),
        "supervisors left"
    );
    env.assert_no_leaks();
}

#[test]
fn deleting_the_depot_entry_never_deletes_containerds_container() {
    let env = ContainerdEnv::start();
    let id = env.run_sleeper("garden-del", POLL);
    let manager = Manager {
        depot: tempfile::Builder::new()
            .prefix("tt-depot-")
            .tempdir_in("/tmp")
            .unwrap(),
        shim: env.shim_binary().to_path_buf(),
        runc_root: env.runc_root(),
        container: id.clone(),
    };
    // The contract: kill one process, close another's stdin.
    manager.exec("k", "sleep 1000");
    manager.ok("kill", &["--signal", "KILL", &id, "k"]);
    assert_eq!(manager.output("wait", &[&id, "k"]).status.code(), Some(137));
    manager.exec("c", "cat; exit 6");
    let mut attach = manager.cmd("attach");
    attach.args(["--close-stdin", &id, "c"]);
    let out = tether_tests::standalone_env::output_bounded_with_input(
        attach,
        b"through stdin\n",
        Duration::from_secs(30),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(env.task_status(&id).as_deref(), Some("RUNNING"));
    let pid = manager.exec("p1", "sleep 1000");
    // No init of ours to signal or attach to.
    assert_eq!(manager.output("kill", &[&id]).status.code(), Some(2));
    assert_eq!(manager.output("attach", &[&id]).status.code(), Some(2));
    // Its processes run: refused without --force (124); with it they are killed, the
    // container stays containerd's.
    assert_eq!(manager.output("delete", &[&id]).status.code(), Some(124));
    manager.ok("delete", &["--force", &id]);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || {
            std::thread::sleep(Duration::from_millis(200));
            !Path::new(&format!("/proc/{pid}")).exists()
        }
    );
    assert_eq!(env.task_status(&id).as_deref(), Some("RUNNING"));

    env.kill_and_remove(&id, POLL);
    env.assert_no_leaks();
}

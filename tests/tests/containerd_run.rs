//! tether under a real containerd, driven by `ctr` exactly as a user would: each test has
//! its own containerd (see `ContainerdEnv`) and ends by checking that nothing leaked.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tether_tests::cgroup::{self, Hierarchy};
use tether_tests::containerd_env::{ps_lists_exec, ContainerdEnv, StdinAfter};
use tether_tests::skip;

/// Generous bound for polls (status changes, events): they normally take milliseconds.
const POLL: Duration = Duration::from_secs(10);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn run_rm_forwards_stdout_stderr_and_exit_code() {
    let env = ContainerdEnv::start();
    let id = env.id("c");
    let out = env.ctr(&env.run_args(
        &["--rm"],
        &id,
        &["/bin/sh", "-c", "echo out; echo err >&2; exit 7"],
    ));
    env.assert_exit(&out, 7, "ctr run --rm");
    assert_eq!(text(&out.stdout), "out\n");
    assert!(
        text(&out.stderr).contains("err"),
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(env.task_status(&id), None, "--rm removed the task");
    env.assert_no_leaks();
}

#[test]
fn file_log_uri_collects_stdout_and_stderr() {
    let env = ContainerdEnv::start();
    let id = env.id("c");
    let log = env.dir().join("container.log");
    let uri = format!("file://{}", log.display());
    let out = env.ctr(&env.run_args(
        &["--rm", "--log-uri", &uri],
        &id,
        &["/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
    ));
    env.assert_exit(&out, 3, "ctr run --rm --log-uri file://");
    let got = std::fs::read_to_string(&log).unwrap_or_default();
    // stdout and stderr share the file; their order between the two pipes is not fixed.
    let mut lines: Vec<&str> = got.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["err", "out"], "{} holds {got:?}", log.display());
    env.assert_no_leaks();
}

#[test]
fn stdin_is_piped_to_the_container() {
    let env = ContainerdEnv::start();
    let id = env.id("c");
    // ctr copies its stdin into the task's stdin FIFO and calls CloseIO at EOF: cat then
    // sees EOF and exits.
    let out = env.ctr_with_stdin(
        &env.run_args(&["--rm"], &id, &["/bin/cat"]),
        b"hello\n",
        StdinAfter::TaskRunning(id.clone()),
    );
    env.assert_exit(&out, 0, "ctr run --rm cat");
    assert_eq!(text(&out.stdout), "hello\n");
    env.assert_no_leaks();
}

#[test]
fn detached_run_exec_ps_kill_delete() {
    let env = ContainerdEnv::start();
    let id = env.run_sleeper("c", POLL);
    // What assert_no_leaks looks for at the end exists while the container runs.
    assert_eq!(env.shim_pids().len(), 1, "one tether shim for {id}");
    let socket = env.shim_socket(&id);
    assert!(socket.exists(), "the shim listens on {}", socket.display());

    let out = env.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "/bin/sh",
        "-c",
        "echo in-exec; exit 4",
    ]);
    env.assert_exit(&out, 4, "ctr task exec");
    assert_eq!(text(&out.stdout), "in-exec\n");
    // An exec joins its task's cgroup (on v2 runc exec enters the unified directory).
    let out = env.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        &id,
        "/bin/sh",
        "-c",
        "cat /proc/1/cgroup; echo --; cat /proc/self/cgroup",
    ]);
    env.assert_exit(&out, 0, "ctr task exec cat /proc/*/cgroup");
    let cgroups = text(&out.stdout);
    let (init_cg, exec_cg) = cgroups.split_once("--\n").expect("both cgroup files");
    assert!(!init_cg.trim().is_empty(), "init's cgroup: {cgroups}");
    assert_eq!(init_cg, exec_cg, "the exec runs in the init's cgroup");

    let pid = env.task_pid(&id).expect("ctr task ls lists the task");
    assert!(pid > 0);
    // The task's cgroup, as the host sees it: gone once the task is deleted.
    let task_cgroup = cgroup::dir_of(pid, "memory");
    assert!(task_cgroup.is_dir(), "{}", task_cgroup.display());
    let ps = env.ctr_ok(&["task", "ps", &id]);
    assert!(
        ps.lines()
            .skip(1)
            .any(|l| l.split_whitespace().next() == Some(&pid.to_string())),
        "ctr task ps lists the init pid {pid}: {ps}"
    );
    assert_eq!(env.task_status(&id).as_deref(), Some("RUNNING"));

    env.kill_task(&id, POLL);
    let out = env.ctr(&["task", "rm", &id]);
    env.assert_exit(&out, 0, "ctr task rm");
    // ctr reports a non-zero exit on delete: 128 + SIGKILL.
    assert!(
        text(&out.stderr).contains("exit code 137"),
        "ctr task rm: {}",
        text(&out.stderr)
    );
    assert_eq!(env.task_status(&id), None);
    assert!(
        !task_cgroup.exists(),
        "Delete removes the task's cgroup {} ({})",
        task_cgroup.display(),
        Hierarchy::current().name()
    );
    env.ctr_ok(&["container", "rm", &id]);
    env.assert_no_leaks();
}

#[test]
fn terminal_run_gets_a_pty() {
    let env = ContainerdEnv::start();
    let id = env.id("c");
    // ctr -t needs a terminal of its own: script(1) gives it one.
    let line = env.ctr_shell_line(&env.run_args(&["-t", "--rm"], &id, &["/bin/tty"]));
    let mut cmd = Command::new(tether_tests::require::tool("script", "bsdutils"));
    cmd.args(["-qec", &line, "/dev/null"]);
    let out = env.run_with_timeout(cmd);
    env.assert_exit(&out, 0, "script ctr run -t");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("/dev/pts/"), "tty output: {stdout:?}");
    env.assert_no_leaks();
}

/// What the kernel says of a task's freeze: v2 `cgroup.freeze` (what runc writes) and the
/// `frozen` key of `cgroup.events` (what the kernel reached), v1 `freezer.state`.
fn assert_frozen(dir: &Path, frozen: bool) {
    match Hierarchy::current() {
        Hierarchy::V2 => {
            assert_eq!(
                cgroup::read(dir, "cgroup.freeze"),
                if frozen { "1" } else { "0" },
                "{}/cgroup.freeze",
                dir.display()
            );
            let events = cgroup::read(dir, "cgroup.events");
            assert_eq!(
                cgroup::keyed_value(&events, "frozen"),
                Some(u64::from(frozen)),
                "{}/cgroup.events: {events}",
                dir.display()
            );
        }
        Hierarchy::V1 => assert_eq!(
            cgroup::read(dir, "freezer.state"),
            if frozen { "FROZEN" } else { "THAWED" },
            "{}/freezer.state",
            dir.display()
        ),
    }
}

#[test]
fn pause_and_resume() {
    let env = ContainerdEnv::start();
    let id = env.run_sleeper("c", POLL);
    let pid = env.task_pid(&id).expect("ctr task ls lists the task");
    let freezer = cgroup::dir_of(pid, "freezer");
    assert_frozen(&freezer, false);
    env.ctr_ok(&["task", "pause", &id]);
    assert_eq!(env.task_status(&id).as_deref(), Some("PAUSED"));
    assert_frozen(&freezer, true);
    env.ctr_ok(&["task", "resume", &id]);
    assert_eq!(env.task_status(&id).as_deref(), Some("RUNNING"));
    assert_frozen(&freezer, false);
    env.kill_and_remove(&id, POLL);
    env.assert_no_leaks();
}

#[test]
fn metrics_report_memory_and_pids() {
    let env = ContainerdEnv::start();
    let id = env.run_sleeper("c", POLL);
    // ctr 1.6 prints an `ID TIMESTAMP` table, then `METRIC VALUE` rows (cgroup v1 names
    // such as memory.usage_in_bytes and pids.current; cgroup v2 ones such as
    // memory.usage and pids.current).
    let metrics = env.ctr_ok(&["task", "metrics", &id]);
    assert!(metrics.contains("METRIC"), "metrics: {metrics}");
    let value = |name: &str| -> Option<String> {
        metrics.lines().find_map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next() == Some(name)).then(|| cols.next().unwrap_or("").to_string())
        })
    };
    // The Metrics type follows the hierarchy (io.containerd.cgroups.v1/v2.Metrics), and
    // ctr prints each with its own names: a v1 name on v2 (or the reverse) means the shim
    // sent the wrong type.
    let (usage, v1_names, v2_names): (&str, &[&str], &[&str]) = (
        match Hierarchy::current() {
            Hierarchy::V1 => "memory.usage_in_bytes",
            Hierarchy::V2 => "memory.usage",
        },
        &[
            "memory.usage_in_bytes",
            "memory.limit_in_bytes",
            "cpuacct.usage",
        ],
        &[
            "memory.usage",
            "memory.usage_limit",
            "cpu.usage_usec",
            "cpu.user_usec",
        ],
    );
    let (present, absent) = match Hierarchy::current() {
        Hierarchy::V1 => (v1_names, v2_names),
        Hierarchy::V2 => (v2_names, v1_names),
    };
    for name in present {
        assert!(
            value(name).is_some(),
            "{name} ({}) in the metrics: {metrics}",
            Hierarchy::current().name()
        );
    }
    for name in absent {
        assert!(
            value(name).is_none(),
            "no {name} on {}: {metrics}",
            Hierarchy::current().name()
        );
    }
    assert!(
        value(usage)
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v > 0),
        "{usage} > 0 in the metrics: {metrics}"
    );
    assert_eq!(
        value("pids.current").as_deref(),
        Some("1"),
        "one process (sleep) in the container: {metrics}"
    );
    env.kill_and_remove(&id, POLL);
    env.assert_no_leaks();
}

#[test]
fn oom_kill_is_published() {
    let env = ContainerdEnv::start();
    let id = env.id("c");
    let events = env.events();
    let out = env.ctr(&env.run_args(
        &["--rm", "--memory-limit", "16777216"],
        &id,
        &["/bin/sh", "-c", "x=a; while true; do x=$x$x; done"],
    ));
    env.assert_exit(&out, 137, "ctr run under a 16 MiB limit");
    let oom = events.wait_for_line(&["/tasks/oom", &id], POLL);
    assert!(
        oom.is_some(),
        "no /tasks/oom event for {id}; events:\n{}\n--- containerd log ---\n{}",
        events.stdout(),
        env.log_tail()
    );
    let exit = events.wait_for_line(&["/tasks/exit", &id], POLL);
    assert!(
        exit.as_deref()
            .is_some_and(|l| l.contains("\"exit_status\":137")),
        "exit event with status 137: {exit:?}"
    );
    // containerd learns of the OOM before the exit it caused (CRI reports the container's
    // reason as OOMKilled only then). On v2 the OOM comes from memory.events' oom_kill.
    let all = events.stdout();
    let position = |topic: &str| {
        all.lines()
            .position(|l| l.contains(topic) && l.contains(&id))
            .unwrap_or_else(|| panic!("{topic} for {id} in:\n{all}"))
    };
    assert!(
        position("/tasks/oom") < position("/tasks/exit"),
        "/tasks/oom before /tasks/exit ({}):\n{all}",
        Hierarchy::current().name()
    );
    drop(events);
    env.assert_no_leaks();
}

#[test]
fn missing_binary_fails_with_runcs_message() {
    let env = ContainerdEnv::start();
    let id = env.id("c");
    let out = env.ctr(&env.run_args(&["--rm"], &id, &["/no/such/bin"]));
    assert!(
        !out.status.success(),
        "ctr run of a missing binary succeeded"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no such file or directory") && stderr.contains("/no/such/bin"),
        "runc's error reaches the user: {stderr}"
    );
    assert_eq!(env.task_status(&id), None, "no task left");
    let containers = env.ctr_ok(&["container", "ls", "-q"]);
    assert!(
        !containers.lines().any(|l| l.trim() == id),
        "ctr run --rm removed the container: {containers}"
    );
    env.assert_no_leaks();
}

/// containerd restarts while a container runs: the shim lives on, the new containerd
/// reconnects to it, sees the task, can attach to its output and learns its exit status.
///
/// What ctr can show: `ctr task attach` reopens the task's FIFOs, copies the output, waits
/// for the exit (its own exit code is the task's) and then deletes the task; `ctr events`
/// shows `/tasks/exit` with `exit_status`. (ctr 1.6 has no `task wait`; `ctr task rm`
/// would warn "exit with non-zero exit code N", checked in `detached_run_exec_ps_kill_delete`.)
#[test]
fn containerd_restart_keeps_the_task() {
    let mut env = ContainerdEnv::start();
    let id = env.id("c");
    let go = env.rootfs().join("tmp/go");
    // Prints "waiting" until the test creates /tmp/go in the (host-visible) rootfs, then
    // 20 numbered lines, then exits 5: no timing assumptions.
    let script = "while [ ! -e /tmp/go ]; do echo waiting; sleep 0.1; done; \
                  i=0; while [ $i -lt 20 ]; do echo after$i; i=$((i+1)); done; exit 5";
    env.ctr_ok(&env.run_args(&["-d"], &id, &["/bin/sh", "-c", script]));
    env.wait_task_status(&id, "RUNNING", POLL);
    let shims = env.shim_pids();
    assert_eq!(shims.len(), 1, "one shim for the container: {shims:?}");

    env.restart_containerd();
    assert_eq!(env.shim_pids(), shims, "the shim survived the restart");
    assert_eq!(
        env.task_status(&id).as_deref(),
        Some("RUNNING"),
        "the new containerd sees the task"
    );
    let events = env.events();

    let attach = env.spawn_ctr(&["task", "attach", &id]);
    assert!(
        attach.wait_for_line(&["waiting"], POLL).is_some(),
        "attach shows the running output: {}\n--- containerd log ---\n{}",
        attach.stdout(),
        env.log_tail()
    );
    std::fs::write(&go, b"").expect("create /tmp/go in the rootfs");
    let (code, stdout, stderr) = attach.finish(Duration::from_secs(20));
    assert_eq!(
        code,
        Some(5),
        "ctr task attach returns the task's exit code\nstdout: {stdout}\nstderr: {stderr}\n--- containerd log ---\n{}",
        env.log_tail()
    );
    assert!(
        stdout.contains("after19"),
        "all output after the restart: {stdout}"
    );

    let exit = events.wait_for_line(&["/tasks/exit", &id], POLL);
    assert!(
        exit.as_deref()
            .is_some_and(|l| l.contains("\"exit_status\":5")),
        "exit event with status 5: {exit:?}\nevents: {}",
        events.stdout()
    );
    drop(events);
    // ctr task attach deletes the task once it has its exit status.
    assert_eq!(
        env.task_status(&id),
        None,
        "ctr task attach deleted the task"
    );
    env.ctr_ok(&["container", "rm", &id]);
    env.assert_no_leaks();
}

#[test]
fn duplicate_container_and_exec_ids_are_refused() {
    let env = ContainerdEnv::start();
    let id = env.run_sleeper("c", POLL);

    let again = env.ctr(&env.run_args(&["-d"], &id, &["/bin/sleep", "1000"]));
    assert!(
        !again.status.success(),
        "a second container {id} was created"
    );
    assert!(
        text(&again.stderr).contains("already exists"),
        "clear error for a duplicate container id: {}",
        text(&again.stderr)
    );

    env.ctr_ok(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "e2",
        &id,
        "/bin/sleep",
        "1000",
    ]);
    let again = env.ctr(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "e2",
        &id,
        "/bin/sleep",
        "1000",
    ]);
    assert!(!again.status.success(), "a second exec e2 was started");
    let stderr = text(&again.stderr);
    assert!(
        stderr.contains("already exists") && stderr.contains("e2"),
        "clear error for a duplicate exec id: {stderr}"
    );
    assert_eq!(env.task_status(&id).as_deref(), Some("RUNNING"));
    // The running exec shows in `ctr task ps` next to init, with its exec id.
    let ps = env.ctr_ok(&["task", "ps", &id]);
    assert_eq!(ps.lines().skip(1).count(), 2, "init and e2: {ps}");
    assert!(
        ps_lists_exec(&ps, "e2"),
        "ctr task ps names the exec (containerd.runc.v1.ProcessDetails): {ps}"
    );

    env.ctr_ok(&["task", "kill", "-a", "-s", "KILL", &id]);
    env.wait_task_status(&id, "STOPPED", POLL);
    env.ctr_ok(&["task", "rm", &id]);
    env.ctr_ok(&["container", "rm", &id]);
    env.assert_no_leaks();
}

#[test]
fn repeated_runs_leave_nothing_behind() {
    let env = ContainerdEnv::start();
    for n in 0..3 {
        let id = env.id("c");
        let out = env.ctr(&env.run_args(&["--rm"], &id, &["/bin/echo", &format!("run{n}")]));
        env.assert_exit(&out, 0, "ctr run --rm echo");
        assert_eq!(text(&out.stdout), format!("run{n}\n"));
    }
    let id = env.run_sleeper("c", POLL);
    let out = env.ctr(&["task", "exec", "--exec-id", "x", &id, "/bin/true"]);
    env.assert_exit(&out, 0, "ctr task exec true");
    env.kill_and_remove(&id, POLL);
    env.assert_no_leaks();
}

/// Far more output than a pipe holds flows through the shim's pumps, byte for byte.
///
/// The container waits (for /tmp/go, created by the test) until ctr has received it all
/// before it exits. Output still in flight when the container exits can be lost with ctr
/// 1.6 whatever the shim: its `task.Delete` closes the client's FIFOs *before* waiting for
/// the copy to finish (containerd 1.7+ waits first); under load this truncates
/// containerd-shim-runc-v2's output too.
#[test]
fn large_output_is_not_truncated() {
    let env = ContainerdEnv::start();
    let id = env.id("c");
    let go = env.rootfs().join("tmp/go");
    const OUT: usize = 1_000_000;
    const ERR: usize = 300_000;
    let script = format!(
        "head -c {OUT} /dev/zero | tr '\\0' a; head -c {ERR} /dev/zero | tr '\\0' b >&2; \
         while [ ! -e /tmp/go ]; do sleep 0.05; done"
    );
    let ctr = env.spawn_ctr(&env.run_args(&["--rm"], &id, &["/bin/sh", "-c", &script]));
    let arrived = ctr.wait_output(
        |out, err| out.len() >= OUT && err.len() >= ERR,
        Duration::from_secs(20),
    );
    std::fs::write(&go, b"").expect("create /tmp/go in the rootfs");
    let (code, stdout, stderr) = ctr.finish(Duration::from_secs(20));
    let stdout_ok = stdout.len() == OUT && stdout.bytes().all(|b| b == b'a');
    let stderr_ok = stderr.len() == ERR && stderr.bytes().all(|b| b == b'b');
    assert!(
        arrived && stdout_ok && stderr_ok && code == Some(0),
        "all the output arrives: exit {code:?}, {} of {OUT} bytes of stdout, {} of {ERR} \
         of stderr (stderr starts {:?})\n--- containerd log ---\n{}",
        stdout.len(),
        stderr.len(),
        &stderr[..stderr.len().min(200)],
        env.log_tail()
    );
    env.assert_no_leaks();
}

#[test]
fn exec_with_a_terminal_stdin_and_kill() {
    let env = ContainerdEnv::start();
    let id = env.run_sleeper("c", POLL);

    let line = env.ctr_shell_line(&[
        "task",
        "exec",
        "-t",
        "--exec-id",
        "t1",
        &id,
        "/bin/sh",
        "-c",
        "tty; exit 3",
    ]);
    let mut cmd = Command::new(tether_tests::require::tool("script", "bsdutils"));
    cmd.args(["-qec", &line, "/dev/null"]);
    let out = env.run_with_timeout(cmd);
    env.assert_exit(&out, 3, "script ctr task exec -t");
    assert!(
        text(&out.stdout).contains("/dev/pts/"),
        "exec tty: {}",
        text(&out.stdout)
    );

    // stdin of an exec: ctr calls CloseIO with the exec id at EOF.
    let out = env.ctr_with_stdin(
        &["task", "exec", "--exec-id", "s1", &id, "/bin/cat"],
        b"to-exec\n",
        StdinAfter::ExecRunning {
            id: id.clone(),
            exec_id: "s1".into(),
        },
    );
    env.assert_exit(&out, 0, "ctr task exec cat");
    assert_eq!(text(&out.stdout), "to-exec\n");

    // An exec killed by its exec id from another ctr: the attached ctr gets 128 + 9.
    let exec = env.spawn_ctr(&["task", "exec", "--exec-id", "k1", &id, "/bin/sleep", "1000"]);
    let deadline = std::time::Instant::now() + POLL;
    while !ps_lists_exec(&env.ctr_ok(&["task", "ps", &id]), "k1") {
        assert!(
            std::time::Instant::now() < deadline,
            "exec k1 never showed in ctr task ps"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    env.ctr_ok(&["task", "kill", "--exec-id", "k1", "-s", "KILL", &id]);
    let (code, stdout, stderr) = exec.finish(Duration::from_secs(20));
    assert_eq!(
        code,
        Some(137),
        "killed exec\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert_eq!(
        env.task_status(&id).as_deref(),
        Some("RUNNING"),
        "init lives on"
    );

    env.kill_and_remove(&id, POLL);
    env.assert_no_leaks();
}

/// The daemon and the shim agree on the task API: containerd 2.3 and later start the shim
/// with `BootstrapParams` and connect with task API v3 (what the shim's `BootstrapResult`
/// says); older daemons get the plain address and speak v2. The same holds when a
/// restarted daemon reconnects to the running shim.
#[test]
fn shim_speaks_the_task_api_of_its_daemon() {
    const TEST: &str = "shim_speaks_the_task_api_of_its_daemon";
    let version = tether_tests::containerd_version();
    if !version.at_least(2, 0) {
        skip(
            TEST,
            &format!(
                "containerd {version} logs no `connecting to shim` line with the task API \
                 version (it speaks only v2, which every other test uses)"
            ),
        );
        return;
    }
    let want = if version.at_least(2, 3) { 3 } else { 2 };
    let mut env = ContainerdEnv::start();
    let id = env.id("c");
    let connects = |env: &ContainerdEnv| -> Vec<String> {
        let log = std::fs::read_to_string(env.log_path()).unwrap_or_default();
        let needle = format!("connecting to shim {id}\"");
        log.lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_string)
            .collect()
    };
    env.ctr_ok(&env.run_args(&["-d"], &id, &["/bin/sleep", "1000"]));
    env.wait_task_status(&id, "RUNNING", POLL);
    env.restart_containerd();
    assert_eq!(env.task_status(&id).as_deref(), Some("RUNNING"));
    let lines = connects(&env);
    assert_eq!(
        lines.len(),
        2,
        "containerd {version} connects to the shim at start and after its restart: {lines:#?}\n\
         --- containerd log ---\n{}",
        env.log_tail()
    );
    for line in &lines {
        assert!(
            line.contains("protocol=ttrpc") && line.contains(&format!("version={want}")),
            "containerd {version} speaks task API v{want} over ttrpc with the shim: {line}"
        );
    }
    env.kill_and_remove(&id, POLL);
    env.assert_no_leaks();
}

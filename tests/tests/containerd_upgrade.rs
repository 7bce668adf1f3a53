//! Upgrading containerd with containers running through tether: the daemon of
//! `TETHER_CONTAINERD_DIR` (an older one, e.g. 2.1) starts the containers, is stopped, and
//! the daemon of `TETHER_CONTAINERD_UPGRADE_TO` (e.g. 2.3, the long-term-support line)
//! takes over the same root, state and address, as an operator upgrades a node. The shims
//! started by the old daemon must serve the new one: the containers keep running, keep
//! their output, and report their exits, including one that exited while no daemon ran.
//!
//! `tests/scripts/containerd-matrix.sh` runs it (2.1 -> 2.3); without the variable the
//! test is skipped and says so.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use tether_tests::containerd_env::{ps_lists_exec, ContainerdEnv};
use tether_tests::containerd_version::version_of;
use tether_tests::skip;

/// The environment variable naming the dir of the newer `containerd` and `ctr`.
const UPGRADE_TO_ENV: &str = "TETHER_CONTAINERD_UPGRADE_TO";
/// Generous bound for polls (status changes, events): they normally take milliseconds.
const POLL: Duration = Duration::from_secs(10);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A shell script that prints `waiting` every 100 ms until `/tmp/<flag>` exists in the
/// (host-visible) rootfs, then 20 numbered lines, then exits with `code`.
fn wait_for_flag(flag: &str, code: i32) -> String {
    format!(
        "while [ ! -e /tmp/{flag} ]; do echo waiting; sleep 0.1; done; \
         i=0; while [ $i -lt 20 ]; do echo after$i; i=$((i+1)); done; exit {code}"
    )
}

#[test]
fn upgrade_keeps_containers_running_with_output_and_exits() {
    const TEST: &str = "upgrade_keeps_containers_running_with_output_and_exits";
    let Some(to) = std::env::var_os(UPGRADE_TO_ENV).filter(|v| !v.is_empty()) else {
        skip(
            TEST,
            &format!(
                "{UPGRADE_TO_ENV} is not set (the dir of the containerd to upgrade to; \
                 tests/scripts/containerd-matrix.sh sets it)"
            ),
        );
        return;
    };
    let to = PathBuf::from(to);
    let to_version = version_of(&to.join("containerd"));
    let mut env = ContainerdEnv::start();
    let from_version = env.version();
    eprintln!("upgrade: containerd {from_version} -> {to_version}");
    let rootfs = env.rootfs();

    // c1 runs through the upgrade and exits 3 after it; c2 runs until killed, with a
    // detached exec e1; c3 exits 5 while no containerd runs.
    let c1 = env.id("c");
    let c2 = env.id("c");
    let c3 = env.id("c");
    env.ctr_ok(&env.run_args(&["-d"], &c1, &["/bin/sh", "-c", &wait_for_flag("go1", 3)]));
    env.ctr_ok(&env.run_args(&["-d"], &c2, &["/bin/sleep", "1000"]));
    env.ctr_ok(&env.run_args(&["-d"], &c3, &["/bin/sh", "-c", &wait_for_flag("go3", 5)]));
    for id in [&c1, &c2, &c3] {
        env.wait_task_status(id, "RUNNING", POLL);
    }
    env.ctr_ok(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "e1",
        &c2,
        "/bin/sleep",
        "1000",
    ]);
    let shims = {
        let mut pids = env.shim_pids();
        pids.sort_unstable();
        pids
    };
    assert_eq!(shims.len(), 3, "one shim per container: {shims:?}");
    let c3_pid = env.task_pid(&c3).expect("ctr task ls lists c3");

    env.stop_containerd();
    // c3 exits while no daemon listens.
    std::fs::write(rootfs.join("tmp/go3"), b"").expect("create /tmp/go3 in the rootfs");
    let deadline = Instant::now() + POLL;
    while std::path::Path::new(&format!("/proc/{c3_pid}")).exists() {
        assert!(Instant::now() < deadline, "c3 (pid {c3_pid}) did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    let version = env.start_containerd_from(&to);
    assert_eq!(version, to_version);

    let mut now = env.shim_pids();
    now.sort_unstable();
    // c3's shim may be gone already: containerd 1.7+ deletes a task without processes
    // when it reloads its shim (see below).
    assert!(
        now.len() >= 2 && now.iter().all(|p| shims.contains(p)),
        "the shims of the old daemon serve the new one: {shims:?} before, {now:?} after"
    );
    let status = |id: &str| env.task_status(id);
    assert_eq!(
        status(&c1).as_deref(),
        Some("RUNNING"),
        "c1 after the upgrade"
    );
    assert_eq!(
        status(&c2).as_deref(),
        Some("RUNNING"),
        "c2 after the upgrade"
    );
    let c3_after = status(&c3);
    let events = env.events();

    // c1: its output is still there to attach to, and its exit code reaches ctr.
    let attach = env.spawn_ctr(&["task", "attach", &c1]);
    assert!(
        attach.wait_for_line(&["waiting"], POLL).is_some(),
        "attach to c1 shows its output: {}\n--- containerd log ---\n{}",
        attach.stdout(),
        env.log_tail()
    );
    std::fs::write(rootfs.join("tmp/go1"), b"").expect("create /tmp/go1 in the rootfs");
    let (code, stdout, stderr) = attach.finish(Duration::from_secs(20));
    assert_eq!(
        code,
        Some(3),
        "ctr task attach returns c1's exit code\nstdout: {stdout}\nstderr: {stderr}\n\
         --- containerd log ---\n{}",
        env.log_tail()
    );
    assert!(stdout.contains("after19"), "all of c1's output: {stdout}");

    // c2: a new exec through the new daemon; the old exec is listed and killed by id.
    let out = env.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        &c2,
        "/bin/sh",
        "-c",
        "echo from-new-daemon; exit 4",
    ]);
    env.assert_exit(&out, 4, "ctr task exec after the upgrade");
    assert_eq!(text(&out.stdout), "from-new-daemon\n");
    let ps = env.ctr_ok(&["task", "ps", &c2]);
    assert!(
        ps_lists_exec(&ps, "e1"),
        "exec e1 survived the upgrade: {ps}"
    );
    env.ctr_ok(&["task", "kill", "--exec-id", "e1", "-s", "KILL", &c2]);
    let e1_exit = events.wait_for_line(&["/tasks/exit", "\"e1\""], POLL);
    assert!(
        e1_exit
            .as_deref()
            .is_some_and(|l| l.contains("\"exit_status\":137")),
        "exit event of exec e1 with status 137: {e1_exit:?}\nevents: {}",
        events.stdout()
    );
    env.kill_task(&c2, POLL);
    let out = env.ctr(&["task", "rm", &c2]);
    env.assert_exit(&out, 0, "ctr task rm c2");
    assert!(
        text(&out.stderr).contains("exit code 137"),
        "c2 killed: {}",
        text(&out.stderr)
    );

    // c3 exited while no daemon ran. containerd 1.6 lists it as STOPPED and learns its
    // exit status at delete; 1.7 and later ask each reloaded shim for its pids and delete
    // the task of a shim that has none at load time ("cleaning leaked shim process", the
    // same for the Go shim), before any client can watch.
    match c3_after.as_deref() {
        Some("STOPPED") => {
            let out = env.ctr(&["task", "rm", &c3]);
            env.assert_exit(&out, 0, "ctr task rm c3");
            assert!(
                text(&out.stderr).contains("exit code 5"),
                "c3's exit code reaches the new daemon: {}",
                text(&out.stderr)
            );
        }
        None => {
            let log = std::fs::read_to_string(env.log_path()).unwrap_or_default();
            assert!(
                log.lines()
                    .any(|l| l.contains("cleaning leaked shim process") && l.contains(&c3)),
                "c3 is gone without containerd deleting it\n--- containerd log ---\n{}",
                env.log_tail()
            );
            eprintln!(
                "upgrade: c3 (exited while no daemon ran) was deleted by containerd \
                 {to_version} at load, as for the Go shim"
            );
        }
        other => panic!(
            "c3 exited while no daemon ran, yet is {other:?}\n--- containerd log ---\n{}",
            env.log_tail()
        ),
    }

    let c1_exit = events.wait_for_line(&["/tasks/exit", &c1], POLL);
    assert!(
        c1_exit
            .as_deref()
            .is_some_and(|l| l.contains("\"exit_status\":3")),
        "exit event of c1 with status 3: {c1_exit:?}\nevents: {}",
        events.stdout()
    );
    drop(events);
    for id in [&c1, &c2, &c3] {
        env.ctr_ok(&["container", "rm", id]);
    }
    env.assert_no_leaks();
}

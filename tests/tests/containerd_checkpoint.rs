//! Checkpoint and restore through tether under a real containerd, driven by `ctr`, with a
//! criu that works on this kernel (`../shared/criu/install.sh`; see
//! `tether_tests::require::criu_dir`). Without one the tests skip and say why.

use std::time::Duration;
use tether_tests::containerd_env::ContainerdEnv;
use tether_tests::skip;

/// Generous bound for polls (status changes): they normally take milliseconds.
const POLL: Duration = Duration::from_secs(10);

/// A counter that lives only in the shell's memory, written to `/tmp/count` in the
/// (host-visible) rootfs every 50 ms: a fresh start writes 1, 2, 3…; a restored process
/// carries on from where it was checkpointed.
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The counter's last value, once it is at least `min` (polled for up to [`POLL`]).
fn count_at_least(env: &ContainerdEnv, min: u64) -> u64 {
    let file = env.rootfs().join("tmp/count");
    let deadline = std::time::Instant::now() + POLL;
    loop {
        let now = std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        match now {
            Some(n) if n >= min => return n,
            _ if std::time::Instant::now() >= deadline => panic!(
                "the counter in {} is {now:?}, not >= {min} after {POLL:?}\n--- containerd log ---\n{}",
                file.display(),
                env.log_tail()
            ),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The env, unless criu is missing (then the test is skipped, with the reason).
fn env_with_criu(test: &str) -> Option<ContainerdEnv> {
    if let Err(why) = tether_tests::require::criu_dir() {
        skip(test, &why);
        return None;
    }
    Some(ContainerdEnv::start())
}

/// `ctr task checkpoint` of a running task leaves it running (containerd pauses it around
/// the dump, and resumes it) and stores a checkpoint image.
#[test]
fn checkpoint_leaves_the_task_running() {
    let Some(env) = env_with_criu("checkpoint_leaves_the_task_running") else {
        return;
    };
    let id = env.id("c");
    env.ctr_ok(&env.run_args(&["-d"], &id, &["/bin/sh", "-c", COUNTER]));
    env.wait_task_status(&id, "RUNNING", POLL);
    let before = count_at_least(&env, 3);

    let image = env.ctr_ok(&["task", "checkpoint", &id]);
    let image = image.trim();
    assert!(
        image.contains("checkpoint/"),
        "ctr task checkpoint names the checkpoint image: {image:?}"
    );
    assert_eq!(
        env.task_status(&id).as_deref(),
        Some("RUNNING"),
        "a checkpoint without --exit leaves the task running"
    );
    count_at_least(&env, before + 3);
    let images = env.ctr_ok(&["images", "ls", "-q"]);
    assert!(
        images.lines().any(|l| l.trim() == image),
        "checkpoint image {image} stored: {images}"
    );
    env.ctr_ok(&["task", "kill", "-s", "KILL", &id]);
    env.wait_task_status(&id, "STOPPED", POLL);
    env.ctr_ok(&["task", "rm", &id]);
    env.ctr_ok(&["container", "rm", &id]);
    env.assert_no_leaks();
}

/// `ctr task checkpoint --exit` stops the task once it is dumped.
#[test]
fn checkpoint_with_exit_stops_the_task() {
    const TEST: &str = "checkpoint_with_exit_stops_the_task";
    let version = tether_tests::containerd_version();
    if !version.at_least(2, 0) {
        skip(
            TEST,
            &format!(
                "ctr {version} sends checkpoint options (--exit) only to runtimes named \
                 io.containerd.runc.v1/v2: for tether the flag is dropped and the task runs on"
            ),
        );
        return;
    }
    let Some(env) = env_with_criu(TEST) else {
        return;
    };
    let id = env.id("c");
    env.ctr_ok(&env.run_args(&["-d"], &id, &["/bin/sh", "-c", COUNTER]));
    env.wait_task_status(&id, "RUNNING", POLL);
    count_at_least(&env, 3);
    let image = env.ctr_ok(&["task", "checkpoint", "--exit", &id]);
    env.wait_task_status(&id, "STOPPED", POLL);
    let images = env.ctr_ok(&["images", "ls", "-q"]);
    assert!(
        images.lines().any(|l| l.trim() == image.trim()),
        "checkpoint image {image} stored: {images}"
    );
    env.ctr_ok(&["task", "rm", &id]);
    env.ctr_ok(&["container", "rm", &id]);
    env.assert_no_leaks();
}

/// A container from an image, checkpointed with its task (`ctr containers checkpoint
/// --task`), killed and deleted, then restored live (`ctr containers restore --live`),
/// carries on with its memory: the counter goes on from where it was, and the process did
/// not start again (a fresh start writes /tmp/started; the restore gets a fresh snapshot
/// of the image without that file).
#[test]
fn restore_continues_from_the_checkpoint() {
    const TEST: &str = "restore_continues_from_the_checkpoint";
    let Some(env) = env_with_criu(TEST) else {
        return;
    };
    let image = env.import_busybox_image();
    let id = env.id("c");
    let script = format!("echo yes > /tmp/started; {COUNTER}");
    env.ctr_ok(&env.image_run_args(&["-d"], &image, &id, &["/bin/sh", "-c", &script]));
    env.wait_task_status(&id, "RUNNING", POLL);
    let read_count = |what: &str| -> u64 {
        let out = env.ctr(&[
            "task",
            "exec",
            "--exec-id",
            what,
            &id,
            "/bin/cat",
            "/tmp/count",
        ]);
        env.assert_exit(&out, 0, "ctr task exec cat /tmp/count");
        text(&out.stdout).trim().parse().unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + POLL;
    while read_count("r0") < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "the counter does not count"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = read_count("r1");

    let checkpoint = format!("docker.io/tether-test/checkpoint:{id}");
    env.ctr_ok(&["containers", "checkpoint", "--task", &id, &checkpoint]);
    assert_eq!(
        env.task_status(&id).as_deref(),
        Some("RUNNING"),
        "the task runs on after the checkpoint"
    );
    env.ctr_ok(&["task", "kill", "-s", "KILL", &id]);
    env.wait_task_status(&id, "STOPPED", POLL);
    env.ctr_ok(&["task", "rm", &id]);
    env.ctr_ok(&["containers", "rm", &id]);

    env.ctr_ok(&["containers", "restore", "--live", &id, &checkpoint]);
    env.wait_task_status(&id, "RUNNING", POLL);
    let after = read_count("r2");
    assert!(
        after > before,
        "the restored counter goes on from {before} (reads {after})\n--- containerd log ---\n{}",
        env.log_tail()
    );
    let fresh = env.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "r3",
        &id,
        "/bin/test",
        "-e",
        "/tmp/started",
    ]);
    env.assert_exit(
        &fresh,
        1,
        "test -e /tmp/started (no fresh start after the restore)",
    );

    env.ctr_ok(&["task", "kill", "-s", "KILL", &id]);
    env.wait_task_status(&id, "STOPPED", POLL);
    env.ctr_ok(&["task", "rm", &id]);
    env.ctr_ok(&["containers", "rm", &id]);
    env.assert_no_leaks();
}

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

/// The end of the criu log that runc names in its error ("log file: PATH"), if any.
fn criu_log_tail(runc_error: &str) -> String {
    let Some(path) = runc_error
        .split("log file: ")
        .nth(1)
        .and_then(|rest| rest.split([':', '\n']).next())
    else {
        return "(runc names no criu log)".into();
    };
    match std::fs::read_to_string(path.trim()) {
        Ok(log) => {
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        }
        Err(e) => format!("(cannot read {path}: {e})"),
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
    env.kill_and_remove(&id, POLL);
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

/// A container from an image, checkpointed with its task and its writable layer (`ctr
/// containers checkpoint --task --rw`), killed and deleted, then restored live (`ctr
/// containers restore --live --rw`), carries on with its memory: the counter goes on from
/// where it was, and the process did not start again (each start appends a line to
/// /tmp/starts, which the restored layer holds once).
///
/// The writable layer must come back: the shell may hold /tmp/count open at the dump, and
/// criu reopens it (and checks its size) on restore.
#[test]
fn restore_continues_from_the_checkpoint() {
    const TEST: &str = "restore_continues_from_the_checkpoint";
    let Some(env) = env_with_criu(TEST) else {
        return;
    };
    let image = env.import_busybox_image();
    let id = env.id("c");
    let script = format!("echo start >> /tmp/starts; {COUNTER}");
    env.ctr_ok(&env.image_run_args(&["-d"], &image, &id, &["/bin/sh", "-c", &script]));
    env.wait_task_status(&id, "RUNNING", POLL);
    // The counter's value, read by an exec; the shell truncates the file before each
    // write, so an empty read is retried (with a fresh exec id each time).
    let reads = std::cell::Cell::new(0u32);
    let read_count = || -> u64 {
        let deadline = std::time::Instant::now() + POLL;
        loop {
            reads.set(reads.get() + 1);
            let exec_id = format!("r{}", reads.get());
            let out = env.ctr(&[
                "task",
                "exec",
                "--exec-id",
                &exec_id,
                &id,
                "/bin/cat",
                "/tmp/count",
            ]);
            env.assert_exit(&out, 0, "ctr task exec cat /tmp/count");
            if let Ok(n) = text(&out.stdout).trim().parse() {
                return n;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "/tmp/count never holds a number"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let deadline = std::time::Instant::now() + POLL;
    while read_count() < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "the counter does not count"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = read_count();

    let checkpoint = format!("docker.io/tether-test/checkpoint:{id}");
    env.ctr_ok(&[
        "containers",
        "checkpoint",
        "--task",
        "--rw",
        &id,
        &checkpoint,
    ]);
    assert_eq!(
        env.task_status(&id).as_deref(),
        Some("RUNNING"),
        "the task runs on after the checkpoint"
    );
    env.kill_and_remove(&id, POLL);

    let out = env.ctr(&["containers", "restore", "--live", "--rw", &id, &checkpoint]);
    if !out.status.success() {
        panic!(
            "ctr containers restore --live failed ({}): {}\n--- criu's log ---\n{}\n\
             --- containerd log ---\n{}",
            out.status,
            text(&out.stderr),
            criu_log_tail(&text(&out.stderr)),
            env.log_tail()
        );
    }
    env.wait_task_status(&id, "RUNNING", POLL);
    let after = read_count();
    assert!(
        after > before,
        "the restored counter goes on from {before} (reads {after})\n--- containerd log ---\n{}",
        env.log_tail()
    );
    let starts = env.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "starts",
        &id,
        "/bin/cat",
        "/tmp/starts",
    ]);
    env.assert_exit(&starts, 0, "cat /tmp/starts");
    assert_eq!(
        text(&starts.stdout),
        "start\n",
        "the restored process did not start again"
    );

    env.kill_and_remove(&id, POLL);
    env.assert_no_leaks();
}

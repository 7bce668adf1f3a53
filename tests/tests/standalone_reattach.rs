//! Standalone supervisor: managers die and come back; output and exit codes survive.

use std::io::Read;
use std::time::Duration;
use tether_tests::manager_output::{counter, expected, read_then_kill};
use tether_tests::StandaloneEnv;

#[test]
fn a_new_manager_gets_the_rest_of_the_output_in_order() {
    let env = StandaloneEnv::new();
    let id = env.id("reattach");
    let bundle = env.bundle("b", &["sh", "-c", &counter(150, "0.01", 5)]);
    env.run(&id, &bundle);

    // The first manager reads part of the output and is killed mid-stream.
    let mut first = env.cmd("attach");
    first.arg(&id);
    // SIGKILLed mid-stream; what it had passed on stays ours
    let mut got = read_then_kill(first, 20);
    assert!(got.len() < expected(150).len(), "killed too late: {got}");

    // A new manager that knows only the directory receives the rest, in order.
    let dir = env.process_dir(&id, "init");
    let out = env.output("attach", &["--dir", dir.to_str().unwrap()]);
    got.push_str(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(got, expected(150));
    assert_eq!(
        out.status.code(),
        Some(5),
        "attach exits with the exit code"
    );

    // The exit code arrives through `exit` (EOF) + `exitcode`.
    let mut exit = fifo::open_read(&dir.join("exit"), false).unwrap();
    let mut rest = Vec::new();
    exit.read_to_end(&mut rest).unwrap();
    let rec = fifo::ProcessDir::from_path(&dir)
        .unwrap()
        .read_exit()
        .unwrap()
        .expect("exitcode");
    assert_eq!(rec.code, 5);
    let wait = env.output("wait", &[&id]);
    assert_eq!(wait.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&wait.stdout).trim(), "5");
}

#[test]
fn output_and_exit_code_outlive_an_absent_manager() {
    let env = StandaloneEnv::new();
    let id = env.id("absent");
    // ~170 KB: more than a default 64 KiB pipe, within the 1 MiB the FIFOs are raised to.
    let bundle = env.bundle(
        "b",
        &["sh", "-c", "seq 1 30000; echo to-stderr >&2; exit 4"],
    );
    env.run(&id, &bundle);
    // Nobody attached: the process still exits, and `wait` gets the code.
    let wait = env.output("wait", &["--json", &id]);
    assert_eq!(wait.status.code(), Some(4));
    let v: serde_json::Value = serde_json::from_slice(&wait.stdout).unwrap();
    assert_eq!(v["exit_code"], 4);
    assert!(v["exited_at"].as_str().unwrap().ends_with('Z'));
    // And again: the code stays.
    assert_eq!(env.output("wait", &[&id]).status.code(), Some(4));
    let ps = env.ok("ps", &["--json", &id]);
    let ps: serde_json::Value = serde_json::from_str(&ps).unwrap();
    assert_eq!(ps[0]["status"], "exited");
    assert_eq!(ps[0]["exit_code"], 4);

    // The buffered output is delivered to the next manager.
    std::thread::sleep(Duration::from_millis(300));
    let out = env.output("attach", &[&id]);
    assert_eq!(out.status.code(), Some(4));
    let want: String = (1..=30000).map(|i| format!("{i}\n")).collect();
    assert!(
        String::from_utf8_lossy(&out.stdout) == want,
        "stdout differs"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-stderr\n");
    // Delivered once: the supervisor has gone and a later attach just gets the code.
    let again = env.output("attach", &[&id]);
    assert_eq!(again.status.code(), Some(4));
    assert!(again.stdout.is_empty());
}

#[test]
fn output_beyond_pipe_capacity_blocks_the_process_and_is_not_lost() {
    let env = StandaloneEnv::new();
    let id = env.id("big");
    // ~2.9 MB: more than the process pipe and the FIFO hold together, without a spool
    // (`--spool-limit 0`: see standalone_spool.rs for the spool).
    let bundle = env.bundle("b", &["sh", "-c", "seq 1 400000; exit 0"]);
    env.run_with(&id, &bundle, &["--spool-limit", "0"]);
    std::thread::sleep(Duration::from_secs(1));
    let ps = env.ok("ps", &["--json", &id]);
    let ps: serde_json::Value = serde_json::from_str(&ps).unwrap();
    assert_eq!(ps[0]["status"], "running", "blocked on write: {ps}");
    let out = env.output("attach", &[&id]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut n = 0u32;
    for line in text.lines() {
        n += 1;
        assert_eq!(line, n.to_string());
    }
    assert_eq!(n, 400000);
}

//! Issue 23: containerd 1.6's client (`ctr run`, `ctr task attach`) calls Delete as soon as
//! its Wait returns, and that Delete first closes the FIFOs' read ends: whatever its copy
//! goroutine had not taken from a FIFO by then was lost. tether answers such a Wait only
//! once a reader has emptied the output FIFOs (or has taken nothing for a moment, or a
//! few seconds have passed): `shim/src/containerd/wait_hold.rs`.
//!
//! The readers here are slow on purpose: ctr's stdout is a pipe this test drains a chunk
//! at a time, so the FIFO is full when the process exits and while its Wait is answered.

use containerd_shim_protos::api;
use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tether_tests::containerd_env::ContainerdEnv;
use tether_tests::direct_shim::{ctx, DirectShim};

/// How long a ctr gets: a few MB at the slow reader's pace take a few seconds.
const CTR: Duration = Duration::from_secs(60);
/// Lines the writer writes at once and exits: about 3.4 MB.
const LINES: u64 = 500_000;
/// The slow reader: this much every few milliseconds (about 2 MB/s).
const CHUNK: usize = 8 * 1024;
const PAUSE: Duration = Duration::from_millis(4);

/// Reads `child`'s stdout a chunk at a time, pausing between chunks, until EOF; then waits
/// for it (killed past [`CTR`]). Returns its exit code, stdout and stderr.
fn read_slowly(mut child: Child) -> (Option<i32>, Vec<u8>, String) {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        if started.elapsed() > CTR {
            let _ = child.kill();
            break;
        }
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading ctr's stdout: {e}"),
        }
        std::thread::sleep(PAUSE);
    }
    let status = child.wait().expect("wait for ctr");
    (status.code(), out, err_reader.join().unwrap_or_default())
}

fn spawn_piped(env: &ContainerdEnv, args: &[String]) -> Child {
    let mut cmd = env.ctr_command(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("spawn ctr")
}

/// Asserts `out` is exactly `seq 1 LINES`; says how much of the tail is missing if not.
fn assert_every_line(out: &[u8], what: &str, env: &ContainerdEnv) {
    let expected: usize = (1..=LINES).map(|n| n.to_string().len() + 1).sum();
    let text = String::from_utf8_lossy(out);
    let last = text
        .lines()
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
        .to_string();
    assert_eq!(
        out.len(),
        expected,
        "{what}: {} of {expected} bytes ({} short), last line {last:?}\n{}",
        out.len(),
        expected.saturating_sub(out.len()),
        env.log_tail()
    );
    for (i, line) in text.lines().enumerate() {
        assert_eq!(line, (i as u64 + 1).to_string(), "{what}: line {}", i + 1);
    }
}

/// What the shim logged of the Wait's hold for `id` (how long, and the reader's longest
/// pause, against the hold's 250 ms), for the figures; the log reaches containerd's
/// through a FIFO, so it is polled for a moment.
fn hold_line(env: &ContainerdEnv, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(env.log_path()).unwrap_or_default();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("Wait of") && l.contains(id))
        {
            let msg = line.split("msg=").nth(1).unwrap_or(line);
            return msg.split(" id=").next().unwrap_or(msg).to_string();
        }
        if Instant::now() > deadline {
            return "no hold logged".into();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctr_run_with_a_slow_reader_gets_every_byte_of_a_burst_written_at_exit() {
    let env = ContainerdEnv::start();
    let id = env.id("burst");
    let cmd = format!("seq 1 {LINES}");
    let ctr = spawn_piped(
        &env,
        &env.run_args(&["--rm"], &id, &["/bin/sh", "-c", &cmd]),
    );
    let started = Instant::now();
    let (code, out, err) = read_slowly(ctr);
    assert_eq!(code, Some(0), "ctr run: {err}\n{}", env.log_tail());
    assert_every_line(&out, "ctr run", &env);
    eprintln!(
        "ctr run: {} bytes in {:?} through a slow reader; {}",
        out.len(),
        started.elapsed(),
        hold_line(&env, &id)
    );
    env.assert_no_leaks();
}

#[test]
fn ctr_task_attach_with_a_slow_reader_gets_every_byte_after_the_exit() {
    let env = ContainerdEnv::start();
    let id = env.id("attach");
    // Written once `ctr run -d` has gone (it copies the FIFOs until it exits): nobody
    // reads until the attach, after the exit.
    let cmd = format!("sleep 1; seq 1 {LINES}");
    env.ctr_ok(&env.run_args(&["-d"], &id, &["/bin/sh", "-c", &cmd]));
    env.wait_task_status(&id, "STOPPED", CTR);
    let attach = spawn_piped(&env, &["task".into(), "attach".into(), id.clone()]);
    let (code, out, err) = read_slowly(attach);
    assert_eq!(code, Some(0), "ctr task attach: {err}\n{}", env.log_tail());
    assert_every_line(&out, "ctr task attach", &env);
    eprintln!("ctr task attach: {}", hold_line(&env, &id));
    // `ctr task attach` deleted the task when it was done.
    env.ctr_ok(&["containers", "delete", id.as_str()]);
    env.assert_no_leaks();
}

/// Nobody reads: the FIFO holds what the process wrote (less than it takes, so nothing is
/// spooled) and a Wait is answered after the hold's short no-progress delay, not its limit;
/// the bytes stay in the FIFO for a reader that comes later. Driven directly (ctr 1.6 has
/// no `task wait`; `ctr run -d` and Delete send none).
#[test]
fn a_wait_with_nobody_reading_is_held_only_briefly() {
    let id = tether_tests::unique_id("unread");
    let shim = DirectShim::start(&id, &["sh", "-c", "head -c 60000 /dev/zero; exit 3"]);
    // Held open, not read.
    let mut fifo = shim.create_with_stdout_fifo(&id);
    shim.start_task(&id);
    let deadline = Instant::now() + CTR;
    loop {
        let mut state = api::StateRequest::new();
        state.id = id.clone();
        let s = shim.client().state(ctx(), &state).expect("State");
        if s.status.value() == containerd_shim_protos::types::task::Status::STOPPED as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "no exit\n{}", shim.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut wait = api::WaitRequest::new();
    wait.id = id.clone();
    let started = Instant::now();
    let status = shim.client().wait(ctx(), &wait).expect("Wait").exit_status;
    let waited = started.elapsed();
    assert_eq!(status, 3, "{}", shim.log());
    assert!(
        shim.wait_log("untaken for", Duration::from_secs(5)),
        "the Wait was held for the unread FIFO and let go for want of a reader\n{}",
        shim.log()
    );
    // The hold's no-progress delay is 250 ms, its limit 3 s.
    assert!(
        waited < Duration::from_millis(1500),
        "Wait took {waited:?}\n{}",
        shim.log()
    );
    eprintln!("Wait with nobody reading: {waited:?}");
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match fifo.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("read the FIFO: {e}"),
        }
    }
    assert_eq!(
        got.len(),
        60000,
        "what the FIFO still held for a later reader"
    );
    let mut delete = api::DeleteRequest::new();
    delete.id = id.clone();
    shim.client().delete(ctx(), &delete).expect("Delete");
}

//! Standalone supervisor: the output spool (issue 13). A process whose manager is gone
//! keeps running; the next manager gets everything, in order; drop-oldest counts what it
//! drops in the process directory; block blocks.

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tether_tests::StandaloneEnv;

/// Checks that `text` is the lines `from`, `from + 1`, ... with nothing missing; returns
/// how many.
fn check_lines(text: &[u8], from: u64) -> u64 {
    let mut n = from;
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let got = std::str::from_utf8(line).unwrap_or("?");
        assert_eq!(got, n.to_string(), "line {} out of order", n - from + 1);
        n += 1;
    }
    n - from
}

/// The resident memory (VmRSS, KiB) of process `pid`.
fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_manager_killed_with_100_mb_to_come_loses_nothing() {
    let env = StandaloneEnv::new();
    let id = env.id("spool");
    // 13,000,000 lines, ~102 MB; a 256 MiB spool holds what nobody reads.
    const LINES: u64 = 13_000_000;
    let bundle = env.bundle("b", &["sh", "-c", &format!("seq 1 {LINES}")]);
    env.run_with(&id, &bundle, &["--spool-limit", "256M"]);

    let mut first = env.cmd("attach");
    first.arg(&id).stdin(Stdio::null()).stdout(Stdio::piped());
    let mut first = first.spawn().unwrap();
    let mut reader = BufReader::new(first.stdout.take().unwrap());
    let mut got = Vec::new();
    for _ in 0..1000 {
        assert!(reader.read_until(b'\n', &mut got).unwrap() > 0, "early EOF");
    }
    first.kill().unwrap();
    first.wait().unwrap();
    reader.read_to_end(&mut got).unwrap();
    // Killed mid-line, maybe: the next manager gets the rest of that line.
    let complete = got.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let partial = got.split_off(complete);
    let first_lines = check_lines(&got, 1);
    assert!(first_lines < LINES / 2, "killed too late");

    // The writer finishes while nobody reads.
    let dir = env.process_dir(&id, "init");
    let supervisor = std::fs::read_to_string(dir.join("supervisor.pid")).unwrap();
    let supervisor = supervisor.trim().to_string();
    let started = Instant::now();
    let wait = env.output("wait", &[&id]);
    assert_eq!(wait.status.code(), Some(0));
    let finished_in = started.elapsed();
    let rss = rss_kib(&supervisor).unwrap_or(0);

    let started = Instant::now();
    let out = env.output("attach", &[&id]);
    let drained_in = started.elapsed();
    assert_eq!(out.status.code(), Some(0));
    // The second manager starts where the first stopped: together, every line once.
    let second_lines = check_lines(&[partial, out.stdout.clone()].concat(), first_lines + 1);
    assert_eq!(first_lines + second_lines, LINES);
    eprintln!(
        "{} MB spooled; the writer finished {finished_in:?} after the manager was killed; \
         supervisor RSS {rss} KiB with it all spooled; the next manager drained it in \
         {drained_in:?}",
        out.stdout.len() / 1_000_000
    );
    assert!(
        rss > 0 && rss < 16 * 1024,
        "the supervisor's RSS grew: {rss} KiB"
    );
    assert!(!dir.join("spool-dropped").exists(), "nothing dropped");
}

#[test]
fn drop_oldest_counts_what_it_dropped_in_the_process_directory() {
    let env = StandaloneEnv::new();
    let id = env.id("drop");
    // 8 MiB of 8-byte lines against a 1 MiB spool.
    const LINES: u64 = 1 << 20;
    let script = format!("seq 1000000 {}", 1_000_000 + LINES - 1);
    let bundle = env.bundle("b", &["sh", "-c", &script]);
    env.run_with(
        &id,
        &bundle,
        &["--spool-limit", "1M", "--spool-policy", "drop-oldest"],
    );
    let wait = env.output("wait", &[&id]);
    assert_eq!(wait.status.code(), Some(0), "the writer never blocks");
    let out = env.output("attach", &[&id]);
    assert_eq!(out.status.code(), Some(0));
    let dir = env.process_dir(&id, "init");
    // Written by the supervisor before it exits (attach returns at the FIFO's EOF, just
    // before).
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let text = std::fs::read_to_string(dir.join("spool-dropped")).unwrap_or_default();
        let supervisor_gone = std::fs::read_to_string(dir.join("supervisor.pid"))
            .map(|p| !std::path::Path::new(&format!("/proc/{}", p.trim())).exists())
            .unwrap_or(true);
        if supervisor_gone || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout_dropped: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("stdout "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no stdout count in spool-dropped: {report:?}"));
    assert!(stdout_dropped > 0);
    assert_eq!(
        out.stdout.len() as u64 + stdout_dropped,
        LINES * 8,
        "received {} + dropped {stdout_dropped} = written",
        out.stdout.len()
    );
    let last = format!("{}\n", 1_000_000 + LINES - 1);
    assert!(
        out.stdout.ends_with(last.as_bytes()),
        "the newest bytes are kept"
    );
}

#[test]
fn block_at_the_limit_blocks_the_process() {
    let env = StandaloneEnv::new();
    let id = env.id("block");
    let bundle = env.bundle("b", &["sh", "-c", "seq 1 1000000"]);
    env.run_with(
        &id,
        &bundle,
        &["--spool-limit", "1M", "--spool-policy", "block"],
    );
    std::thread::sleep(Duration::from_secs(2));
    let ps = env.ok("ps", &["--json", &id]);
    let ps: serde_json::Value = serde_json::from_str(&ps).unwrap();
    assert_eq!(ps[0]["status"], "running", "blocked on write: {ps}");
    let out = env.output("attach", &[&id]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(check_lines(&out.stdout, 1), 1_000_000);
}

/// What waits for a manager without a spool (`--spool-limit 0`), for docs/standalone.md: the
/// process's pipe and the FIFO, 1 MiB each, hold whole pages as they come, so small
/// writes take a page slot each (256 slots per 1 MiB pipe).
#[test]
fn without_a_spool_what_waits_depends_on_the_write_size() {
    let env = StandaloneEnv::new();
    for (name, script) in [
        // One 8-byte write(2) per line.
        (
            "8-byte writes",
            "i=1000000; while :; do echo $i; i=$((i+1)); done",
        ),
        // 64 KiB writes.
        ("64 KiB writes", "while :; do head -c 65536 /dev/zero; done"),
    ] {
        let id = env.id("nospool");
        let bundle = env.bundle(&id, &["sh", "-c", script]);
        env.run_with(&id, &bundle, &["--spool-limit", "0"]);
        // Blocked long before this.
        std::thread::sleep(Duration::from_secs(4));
        env.ok("kill", &["--signal", "KILL", &id]);
        let out = env.output("attach", &[&id]);
        eprintln!(
            "without a spool, {name}: {} bytes waited for a manager",
            out.stdout.len()
        );
        assert!(!out.stdout.is_empty());
        env.ok("delete", &[&id]);
    }
}

/// A process that wrote `seq 1 LINES` (~23 MB) while nobody read: it all waits in the
/// spool (and the FIFO). Returns once it has exited.
const DELETE_LINES: u64 = 3_000_000;

fn spooled_and_exited(env: &StandaloneEnv, id: &str) {
    let bundle = env.bundle(id, &["sh", "-c", &format!("seq 1 {DELETE_LINES}")]);
    env.run(id, &bundle);
    let wait = env.output("wait", &[id]);
    assert_eq!(wait.status.code(), Some(0), "the writer finished unread");
}

#[test]
fn delete_waits_while_a_manager_takes_the_spool() {
    let env = StandaloneEnv::new();
    let id = env.id("linger");
    spooled_and_exited(&env, &id);
    // A manager that takes ~8 MiB/s: about 3 s for it all.
    let mut attach = env.cmd("attach");
    attach.arg(&id).stdin(Stdio::null()).stdout(Stdio::piped());
    let mut attach = attach.spawn().unwrap();
    let stdout = attach.stdout.take().unwrap();
    let (reader, got) = tether_tests::paced_reader::start(stdout, 8 << 20);
    let started = Instant::now();
    let deleted = env.output("delete", &[&id]);
    let took = started.elapsed();
    assert_eq!(
        deleted.status.code(),
        Some(0),
        "delete: {}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    let at_delete = got.load(std::sync::atomic::Ordering::SeqCst);
    let out = reader.join().unwrap();
    let _ = attach.wait();
    eprintln!(
        "delete took {took:?}; the manager had {at_delete} of {} bytes then",
        out.len()
    );
    assert_eq!(check_lines(&out, 1), DELETE_LINES, "every line, once");
    assert!(took < Duration::from_secs(10), "delete took {took:?}");
}

#[test]
fn delete_with_no_manager_does_not_wait_and_reports_the_drop() {
    let env = StandaloneEnv::new();
    let id = env.id("nolinger");
    spooled_and_exited(&env, &id);
    let dir = env.process_dir(&id, "init");
    // Read before delete removes the directory: the supervisor writes the final counts
    // as it goes, so watch for them from another thread.
    let report = dir.join("spool-dropped");
    let watcher = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(text) = std::fs::read_to_string(&report) {
                last = text;
            } else if !last.is_empty() {
                return last;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        last
    });
    let started = Instant::now();
    let deleted = env.output("delete", &[&id]);
    let took = started.elapsed();
    assert_eq!(deleted.status.code(), Some(0));
    let report = watcher.join().unwrap();
    eprintln!("delete with nobody reading took {took:?}; spool-dropped: {report:?}");
    assert!(took < Duration::from_secs(2), "delete waited {took:?}");
    let stdout_dropped: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("stdout "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(stdout_dropped > 0, "the drop is reported: {report:?}");
}

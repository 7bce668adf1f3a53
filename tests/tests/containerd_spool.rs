//! The output spool (issue 13) under a real containerd: a container whose reader is gone
//! keeps running, and the next reader gets what it wrote, in order; at the limit,
//! `drop-oldest` reports exactly what it dropped and `block` blocks.

use std::time::{Duration, Instant};
use tether_tests::containerd_env::ContainerdEnv;

/// How long the writers get: they finish in a few seconds when nothing blocks them.
const WRITER: Duration = Duration::from_secs(60);
/// ctr copies a FIFO to its stdout through a 32 KiB buffer: what a SIGKILLed ctr had read
/// and not yet written is lost in ctr, whatever the shim does.
const CTR_COPY_BUFFER: usize = 32 * 1024;

/// The numbers of the complete lines of `out` (a partial last line is left out).
fn numbers(out: &str) -> Vec<u64> {
    let complete = match out.rfind('\n') {
        Some(i) => &out[..=i],
        None => "",
    };
    complete
        .lines()
        .map(|l| {
            l.trim()
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {l:?}"))
        })
        .collect()
}

#[test]
fn a_reader_killed_mid_stream_loses_nothing_the_next_one_reads() {
    let env = ContainerdEnv::start();
    let id = env.id("spool");
    const LINES: u64 = 3_000_000;
    let cmd = format!("seq 1 {LINES}");
    let first = env.spawn_ctr(&env.run_args(&[], &id, &["/bin/sh", "-c", &cmd]));
    std::thread::sleep(Duration::from_millis(500));
    // SIGKILL (finish kills what is still running once the timeout is over).
    let (_, out1, _) = first.finish(Duration::ZERO);
    let started = Instant::now();
    env.wait_task_status(&id, "STOPPED", WRITER);
    let wrote_in = started.elapsed();
    // Its exit is known before anyone reads again; now a reader comes back.
    let second = env.spawn_ctr(&["task", "attach", id.as_str()]);
    let (code, out2, err2) = second.finish(WRITER);
    assert_eq!(code, Some(0), "attach: {err2}\n{}", env.log_tail());
    let a = numbers(&out1);
    // A line the first reader got only the start of: the second gets (at most) the rest.
    let out2_whole = if out1.is_empty() || out1.ends_with('\n') {
        &out2[..]
    } else {
        out2.split_once('\n').map_or("", |(_, rest)| rest)
    };
    let b = numbers(out2_whole);
    // Each reader saw a contiguous run, in order.
    for (name, run) in [("first", &a), ("second", &b)] {
        if let Some(w) = run.windows(2).find(|w| w[1] != w[0] + 1) {
            panic!(
                "{name} reader: {} follows {}; first {:?}..{:?}, second {:?}..{:?} ({} lines)",
                w[1],
                w[0],
                a.first(),
                a.last(),
                b.first(),
                b.last(),
                b.len()
            );
        }
    }
    assert_eq!(a.first().copied().unwrap_or(1), 1);
    let log = std::fs::read_to_string(env.log_path()).unwrap_or_default();
    let spool_lines: Vec<&str> = log.lines().filter(|l| l.contains("spool")).collect();
    assert_eq!(
        b.last().copied(),
        Some(LINES),
        "the second reader got the end: first {:?}..{:?}, second {:?}..{:?}, {} bytes\n{spool_lines:#?}",
        a.first(),
        a.last(),
        b.first(),
        b.last(),
        out2.len()
    );
    // The second run starts right where the first ended, but for what the killed ctr
    // held in its copy buffer (never the shim's to deliver).
    let first_end = a.last().copied().unwrap_or(0);
    let second_start = b[0];
    assert!(
        second_start > first_end,
        "no line twice: {first_end} then {second_start}"
    );
    let gap_bytes: usize = (first_end + 1..second_start)
        .map(|n| n.to_string().len() + 1)
        .sum::<usize>();
    assert!(
        gap_bytes <= CTR_COPY_BUFFER,
        "lines {}..{} ({gap_bytes} bytes) lost between the readers",
        first_end + 1,
        second_start
    );
    eprintln!(
        "first reader: {} lines; the writer finished {wrote_in:?} after it was killed; \
         second reader: {} lines; {gap_bytes} bytes lost in the killed ctr",
        a.len(),
        b.len()
    );
    // `ctr task attach` deleted the task when it was done.
    env.ctr_ok(&["containers", "delete", id.as_str()]);
    env.assert_no_leaks();
}

/// `ctr run -d`: the FIFOs are made and nobody reads them until `ctr task attach`.
/// Returns what ctr read before it detached (it copies the FIFOs until it exits).
fn run_unread(env: &ContainerdEnv, id: &str, annotations: &[&str], script: &str) -> String {
    let mut flags = vec!["-d"];
    for a in annotations {
        flags.extend(["--annotation", a]);
    }
    env.ctr_ok(&env.run_args(&flags, id, &["/bin/sh", "-c", script]))
}

/// The total the shim logged as dropped by drop-oldest for `id`.
fn logged_drops(env: &ContainerdEnv, id: &str) -> Option<u64> {
    let log = std::fs::read_to_string(env.log_path()).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains(id) && l.contains("dropped in all by drop-oldest"))
        .filter_map(|l| {
            let tail = &l[l.find(": ")? + 2..];
            let start = tail.find(|c: char| c.is_ascii_digit())?;
            let digits: String = tail[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u64>().ok()
        })
        .reduce(|a, b| a + b)
}

#[test]
fn drop_oldest_reports_exactly_what_it_dropped() {
    let env = ContainerdEnv::start();
    let id = env.id("drop");
    // 8 MiB of 8-byte lines, with a 1 MiB spool: most of it must go.
    const LINES: u64 = 1 << 20;
    // After `ctr run -d` has gone: what it read and had not written yet would be lost in
    // ctr, not in the shim, and spoil the count.
    let script = format!("sleep 1; seq 1000000 {} ", 1_000_000 + LINES - 1);
    let head = run_unread(
        &env,
        &id,
        &[
            "io.tether.spool-limit=1M",
            "io.tether.spool-policy=drop-oldest",
        ],
        &script,
    );
    env.wait_task_status(&id, "STOPPED", WRITER);
    let reader = env.spawn_ctr(&["task", "attach", id.as_str()]);
    let (code, tail, err) = reader.finish(WRITER);
    assert_eq!(code, Some(0), "attach: {err}");
    let out = head + &tail;
    let total = LINES * 8;
    // The count is logged once the spool is gone (after the reader took it all).
    let deadline = Instant::now() + Duration::from_secs(10);
    let dropped = loop {
        if let Some(d) = logged_drops(&env, &id) {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "no drop count logged:\n{}",
            env.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(dropped > 0);
    assert_eq!(
        out.len() as u64 + dropped,
        total,
        "received {} + dropped {dropped} = written {total}",
        out.len()
    );
    assert!(out.ends_with(&format!("{}\n", 1_000_000 + LINES - 1)));
    // `ctr task attach` deleted the task when it was done.
    env.ctr_ok(&["containers", "delete", id.as_str()]);
    env.assert_no_leaks();
}

#[test]
fn block_at_the_limit_blocks_the_writer() {
    let env = ContainerdEnv::start();
    let id = env.id("block");
    // 8 MiB against a 1 MiB spool that blocks: the writer cannot finish unread.
    let head = run_unread(
        &env,
        &id,
        &["io.tether.spool-limit=1M", "io.tether.spool-policy=block"],
        "sleep 1; seq 1000000 2048575; touch /tmp/done",
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.task_status(&id).as_deref(), Some("RUNNING"));
    assert!(!env.rootfs().join("tmp/done").exists());
    let reader = env.spawn_ctr(&["task", "attach", id.as_str()]);
    let (code, tail, err) = reader.finish(WRITER);
    assert_eq!(code, Some(0), "attach: {err}");
    let n = numbers(&(head + &tail));
    let log = std::fs::read_to_string(env.log_path()).unwrap_or_default();
    let spool_lines: Vec<&str> = log.lines().filter(|l| l.contains("spool")).collect();
    assert_eq!(
        n.len(),
        1 << 20,
        "every line, once; first {:?} last {:?}\n{spool_lines:#?}",
        n.first(),
        n.last()
    );
    assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "in order");
    let _ = std::fs::remove_file(env.rootfs().join("tmp/done"));
    // `ctr task attach` deleted the task when it was done.
    env.ctr_ok(&["containers", "delete", id.as_str()]);
    env.assert_no_leaks();
}

/// The resident memory (VmRSS, KiB) of process `pid`.
fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn the_shim_stays_small_while_a_gib_is_spooled() {
    let env = ContainerdEnv::start();
    let id = env.id("gib");
    const GIB: u64 = 1 << 30;
    let started = Instant::now();
    run_unread(
        &env,
        &id,
        &["io.tether.spool-limit=2G"],
        &format!("dd if=/dev/zero bs=65536 count={} 2>/dev/null", GIB / 65536),
    );
    let shims = env.shim_pids();
    let before: u64 = shims.iter().filter_map(|p| rss_kib(*p)).sum();
    let mut peak = before;
    let deadline = Instant::now() + Duration::from_secs(120);
    while env.task_status(&id).as_deref() != Some("STOPPED") {
        assert!(Instant::now() < deadline, "the writer did not finish");
        peak = peak.max(shims.iter().filter_map(|p| rss_kib(*p)).sum());
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = started.elapsed();
    let after: u64 = shims.iter().filter_map(|p| rss_kib(*p)).sum();
    eprintln!(
        "1 GiB written unread in {took:?} ({:.0} MiB/s into the spool); shim RSS {before} KiB \
         before, {peak} KiB at most, {after} KiB after",
        1024.0 / took.as_secs_f64()
    );
    assert!(
        peak < before + 4096,
        "the shim grew with the spool: {before} -> {peak} KiB"
    );
    env.ctr_ok(&["task", "delete", id.as_str()]);
    env.ctr_ok(&["containers", "delete", id.as_str()]);
    let log = std::fs::read_to_string(env.log_path()).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains(&id) && l.contains("spooled bytes dropped unread")),
        "the delete reports what it dropped"
    );
    env.assert_no_leaks();
}

/// Streaming throughput through `ctr run` with the spool on (default) and off
/// (`io.tether.spool-limit=0`), interleaved (`cargo test -- --ignored`; the README's
/// figures, with the release build in `TETHER_SHIM`).
#[test]
#[ignore]
fn streaming_throughput_with_and_without_the_spool() {
    let env = ContainerdEnv::start();
    const MIB: u64 = 256;
    let mut results: Vec<(&str, f64)> = Vec::new();
    for round in 0..9 {
        for (name, ann) in [
            ("spool on", None),
            ("spool off", Some("io.tether.spool-limit=0")),
        ] {
            let id = env.id("tp");
            let mut flags = vec!["--rm"];
            if let Some(a) = ann {
                flags.extend(["--annotation", a]);
            }
            let script = format!("dd if=/dev/zero bs=65536 count={} 2>/dev/null", MIB * 16);
            let mut cmd = env.ctr_command(&env.run_args(&flags, &id, &["/bin/sh", "-c", &script]));
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null());
            let started = Instant::now();
            let mut child = cmd.spawn().unwrap();
            let mut out = child.stdout.take().unwrap();
            let n = std::io::copy(&mut out, &mut std::io::sink()).unwrap();
            child.wait().unwrap();
            let secs = started.elapsed().as_secs_f64();
            assert_eq!(n, MIB << 20, "{name}: every byte");
            let rate = MIB as f64 / secs;
            eprintln!("round {round} {name}: {rate:.0} MiB/s");
            results.push((name, rate));
        }
    }
    let log = std::fs::read_to_string(env.log_path()).unwrap_or_default();
    let spooled = log.lines().filter(|l| l.contains("output spooled")).count();
    eprintln!("runs in which the spool was used: {spooled}");
    for name in ["spool on", "spool off"] {
        let mut r: Vec<f64> = results
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, r)| *r)
            .collect();
        r.sort_by(|a, b| a.total_cmp(b));
        eprintln!("{name}: median {:.0} MiB/s", r[r.len() / 2]);
    }
    env.assert_no_leaks();
}

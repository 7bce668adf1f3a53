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
// ctr 1.6's `task attach` returns as soon as its Wait is answered and closes its FIFOs
// at once: tether answers that Wait only once the reader has emptied them (issue 23,
// `containerd_wait_drain`), so every reader here gets the very end (no allowance).

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
    // The second reader may start mid-line: after what the first one got, or after what
    // the killed ctr had read into its copy buffer and never wrote (which can end
    // mid-line although its output ends with a whole one). Its first line is left out.
    let out2_whole = if out1.is_empty() {
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
    let last = b.last().copied().unwrap_or(0);
    let tail_missing: usize = (last + 1..=LINES).map(|n| n.to_string().len() + 1).sum();
    assert!(
        tail_missing == 0,
        "the second reader got the end ({tail_missing} bytes short): first {:?}..{:?}, second {:?}..{:?}, {} bytes\n{spool_lines:#?}",
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
        gap_bytes <= CTR_COPY_BUFFER + 16,
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
    // Lines are 8 bytes (7 digits and a newline): the reader got the end, and the rest is
    // counted exactly.
    let last = numbers(&out).last().copied().unwrap_or(0);
    // (less the start of the next line, when the reader stopped inside it)
    let partial = out.len() - out.rfind('\n').map_or(0, |i| i + 1);
    let tail_missing = (1_000_000 + LINES - 1 - last) * 8 - partial as u64;
    assert!(
        tail_missing == 0,
        "the reader stopped {tail_missing} bytes short of the end (line {last})"
    );
    assert_eq!(
        out.len() as u64 + dropped,
        total,
        "received {} + dropped {dropped} = written {total}",
        out.len()
    );
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
    // Every line once, in order, from the first to the last.
    let tail_missing = (2_048_575 - n.last().copied().unwrap_or(0)) * 8;
    assert!(
        n.first() == Some(&1_000_000) && tail_missing == 0,
        "every line, once; first {:?} last {:?} ({tail_missing} bytes short)\n{spool_lines:#?}",
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
    // The shim's log reaches containerd's through its log FIFO, copied by containerd on
    // its own time: the line may land after `task delete` has returned.
    let reported = tether_tests::runc_gate::eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(env.log_path())
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(&id) && l.contains("spooled bytes dropped unread"))
    });
    assert!(reported, "the delete reports what it dropped");
    env.assert_no_leaks();
}

/// Streaming throughput through `ctr run` with the spool on (default) and off
/// (`io.tether.spool-limit=0`), interleaved (`cargo test -- --ignored`; docs/spool.md's
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

/// 200 MiB in 51,200 lines of exactly 4,096 bytes: `SEQUENCE UPTIME PADDING\n`, the
/// sequence number from 0 (8 digits), the time the line was written (10 digits:
/// `/proc/uptime` in centiseconds, the finest clock busybox offers without `date +%N`).
/// The writer also keeps the longest time between two of its writes and leaves it, in
/// centiseconds, in the file named by `$1` when done.
const RESTART_LINES: usize = 51_200;
const RESTART_LINE: usize = 4096;
const TIMED_WRITER: &str = r#"pad=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
for k in 1 2 3 4 5 6; do pad=$pad$pad; done
pad=${pad:0:4075}
read up x < /proc/uptime; last=${up%.*}${up#*.}; max=0; n=0
while [ $n -lt 51200 ]; do
  read up x < /proc/uptime; cs=${up%.*}${up#*.}
  g=$((cs-last)); [ $g -gt $max ] && max=$g; last=$cs
  printf '%08d %010d %s\n' $n $cs "$pad"
  n=$((n+1))
done
echo $max > "$1""#;

/// The host's `/proc/uptime` in centiseconds (the clock `TIMED_WRITER` stamps its lines
/// with: it is not namespaced).
fn uptime_cs() -> u64 {
    let s = std::fs::read_to_string("/proc/uptime").expect("read /proc/uptime");
    // "12345.67": seconds with two decimals, read as integers (no float rounding)
    let secs = s.split_whitespace().next().unwrap_or("0");
    let (whole, frac) = secs.split_once('.').unwrap_or((secs, "0"));
    let cs: u64 = format!("{frac:0<2}")[..2].parse().unwrap_or(0);
    whole.parse::<u64>().unwrap_or(0) * 100 + cs
}

/// Whether `bytes` start one of `TIMED_WRITER`'s lines (`NNNNNNNN UUUUUUUUUU 0123`).
fn starts_a_line(bytes: &[u8]) -> bool {
    bytes.len() >= 24
        && bytes[..8].iter().all(u8::is_ascii_digit)
        && bytes[8] == b' '
        && bytes[9..19].iter().all(u8::is_ascii_digit)
        && bytes[19..24] == *b" 0123"
}

/// `(sequence, uptime)` of the complete `TIMED_WRITER` lines of `out`, from the first line
/// that starts in it (`out` may start mid-line, after what another reader got). Panics on
/// a line that is not one of the writer's (a corrupted byte).
fn timed_lines(out: &[u8]) -> Vec<(u64, u64)> {
    let mut rest = out;
    if !starts_a_line(rest) {
        rest = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => &rest[i + 1..],
            None => &[],
        };
    }
    let mut lines = Vec::with_capacity(rest.len() / RESTART_LINE);
    for line in rest.chunks(RESTART_LINE) {
        if line.len() < RESTART_LINE {
            break;
        }
        let text = std::str::from_utf8(&line[..20]).unwrap_or("");
        let parsed = (|| {
            let (seq, up) = text.trim_end().split_once(' ')?;
            Some((seq.parse().ok()?, up.parse().ok()?))
        })();
        match parsed {
            Some(p) if line[RESTART_LINE - 1] == b'\n' && starts_a_line(line) => lines.push(p),
            _ => panic!(
                "line {} is not the writer's: {:?}",
                lines.len(),
                String::from_utf8_lossy(&line[..40.min(line.len())])
            ),
        }
    }
    lines
}

/// The issue's restart case: containerd (and the `ctr` reading the container) SIGKILLed
/// while the container writes 200 MiB, containerd started again, `ctr task attach`: the
/// writer never waited a second for anybody, and the reader after the restart gets every
/// line the first one did not, in order, once.
#[test]
fn containerd_sigkilled_mid_stream_neither_blocks_the_writer_nor_loses_output() {
    let mut env = ContainerdEnv::start();
    let id = env.id("restart");
    let gap_file = format!("tmp/{id}.gap");
    // Larger than the whole output: this test is about the restart, not the limit
    // (whatever containerd's absence leaves unread is spooled, up to 200 MiB).
    let first = env.spawn_ctr(&env.run_args(
        &["--annotation", "io.tether.spool-limit=256M"],
        &id,
        &["/bin/sh", "-c", TIMED_WRITER, "sh", &format!("/{gap_file}")],
    ));
    assert!(
        first.wait_output(|out, _| out.len() >= 8 << 20, WRITER),
        "the first reader got less than 8 MiB\n{}",
        env.log_tail()
    );
    // The reader first: a ctr that outlived its containerd would exit by itself and
    // remove its FIFOs. Both are SIGKILLed (finish kills once the timeout is over).
    let down_at = uptime_cs();
    let (_, out1, _) = first.finish(Duration::ZERO);
    env.kill_containerd();
    // As long as a restart under load takes: the writer must not notice.
    std::thread::sleep(Duration::from_secs(2));
    env.restart_containerd();
    let up_at = uptime_cs();
    let second = env.spawn_ctr(&["task", "attach", id.as_str()]);
    let (code, out2, err2) = second.finish(WRITER);
    assert_eq!(code, Some(0), "attach: {err2}\n{}", env.log_tail());
    let (out1, out2) = (out1.into_bytes(), out2.into_bytes());
    let a = timed_lines(&out1);
    let b = timed_lines(&out2);
    for (name, run) in [("first", &a), ("second", &b)] {
        if let Some(w) = run.windows(2).find(|w| w[1].0 != w[0].0 + 1) {
            panic!("{name} reader: line {} follows line {}", w[1].0, w[0].0);
        }
    }
    assert_eq!(
        a.first().map(|l| l.0),
        Some(0),
        "the first reader got the start"
    );
    let last = b.last().map_or(0, |l| l.0);
    let tail_missing = (RESTART_LINES - 1 - usize::try_from(last).unwrap_or(0)) * RESTART_LINE;
    assert!(
        tail_missing == 0,
        "the reader after the restart got the end ({tail_missing} bytes short): {} lines from {:?}\n{}",
        b.len(),
        b.first(),
        env.log_tail()
    );
    let first_end = a.last().map_or(0, |l| l.0);
    let second_start = b.first().map_or(0, |l| l.0);
    assert!(
        second_start > first_end,
        "no line twice: {first_end} then {second_start}"
    );
    // What the killed ctr had read and not yet written: lost in ctr, not in the shim.
    // The second reader got the end, so where it started is known to the byte.
    let total = RESTART_LINES * RESTART_LINE;
    assert!(
        out1.len() + out2.len() <= total + RESTART_LINE,
        "{} + {} bytes read of {total}: some twice",
        out1.len(),
        out2.len()
    );
    let lost = total.saturating_sub(out1.len() + out2.len());
    assert!(
        lost <= CTR_COPY_BUFFER,
        "{lost} bytes (lines {}..{}) lost between the readers",
        first_end + 1,
        second_start
    );
    // The writer's own measure of its longest wait, and the one its lines show.
    let gap_path = env.rootfs().join(&gap_file);
    let max_gap: u64 = std::fs::read_to_string(&gap_path)
        .unwrap_or_else(|e| panic!("{}: {e}", gap_path.display()))
        .trim()
        .parse()
        .expect("the writer's longest gap");
    let _ = std::fs::remove_file(&gap_path);
    let seen_gap = a
        .windows(2)
        .chain(b.windows(2))
        .map(|w| w[1].1.saturating_sub(w[0].1))
        .max()
        .unwrap_or(0);
    let while_down = a
        .iter()
        .chain(&b)
        .filter(|l| (down_at..=up_at).contains(&l.1))
        .count();
    let last_written = b.last().map_or(0, |l| l.1);
    eprintln!(
        "first reader: {} lines; containerd down for {} ms, during which the writer wrote \
         {} lines ({} MiB); the writer finished {} ms after the restart; second reader: {} \
         lines; {lost} bytes lost in the killed ctr; longest gap between two writes: {} ms \
         (the lines show {} ms)",
        a.len(),
        (up_at - down_at) * 10,
        while_down,
        (while_down * RESTART_LINE) >> 20,
        last_written.saturating_sub(up_at) * 10,
        b.len(),
        max_gap * 10,
        seen_gap * 10
    );
    assert!(
        max_gap < 100,
        "the writer waited {} ms between two writes",
        max_gap * 10
    );
    assert!(
        while_down > 0,
        "the writer wrote nothing while containerd was down"
    );
    // `ctr task attach` deleted the task when it was done.
    env.ctr_ok(&["containers", "delete", id.as_str()]);
    env.assert_no_leaks();
}

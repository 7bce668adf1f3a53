//! The shim under a careless or hostile client of its ttrpc socket (issue 12): each test
//! is a probe that found a defect, kept as a test. The Go shim's figures, measured the
//! same way on this machine, are in the comments.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};
use tether_tests::direct_shim::DirectShim;

/// A ttrpc request frame: 10-byte header (length, stream id, type 1) + `ttrpc.Request`
/// (service = 1, method = 2, payload = 3), encoded by hand so the probe does not depend on
/// the code under test.
fn frame(stream_id: u32, service: &str, method: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [(1u8, service), (2, method)] {
        body.push(field << 3 | 2);
        body.push(u8::try_from(value.len()).expect("short strings"));
        body.extend_from_slice(value.as_bytes());
    }
    let len = u32::try_from(body.len()).expect("small frame");
    let mut f = Vec::with_capacity(10 + body.len());
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&stream_id.to_be_bytes());
    f.extend_from_slice(&[1, 0]);
    f.extend_from_slice(&body);
    f
}

fn status_field(pid: i32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: i32) -> u64 {
    status_field(pid, "VmRSS:")
}

fn threads(pid: i32) -> u64 {
    status_field(pid, "Threads:")
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the comm.
    fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0)
}

fn connect(shim: &DirectShim) -> UnixStream {
    UnixStream::connect(shim.socket().expect("the shim's socket")).expect("connect to the shim")
}

#[test]
fn a_client_that_never_reads_its_replies_does_not_grow_the_shim() {
    // Before: the shim read every request and queued every reply: 901 MiB in 20 s.
    // The Go shim stops reading such a connection at ~200 KB.
    let id = tether_tests::unique_id("fault");
    let shim = DirectShim::start(&id, &["true"]);
    let pid = shim.shim_pid().expect("shim pid");
    let before = rss_kib(pid);
    let sock = connect(&shim);
    sock.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // State of an unknown task: answered on the loop with an error, at once.
    let request = frame(1, "containerd.task.v2.Task", "State");
    let burst: Vec<u8> = request.repeat(1024);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut sent = 0usize;
    while Instant::now() < deadline {
        match (&sock).write(&burst) {
            Ok(n) => sent += n,
            Err(_) => break, // the shim stopped reading: what we want
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_kib(pid);
    eprintln!("sent {sent} bytes of calls never read; shim RSS {before} -> {after} KiB");
    assert!(
        after < before + 16 * 1024,
        "shim RSS grew from {before} KiB to {after} KiB after {sent} bytes of unread calls"
    );
    // The shim still serves others.
    let mut other = connect(&shim);
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    other
        .write_all(&frame(3, "containerd.task.v2.Task", "Connect"))
        .unwrap();
    let mut header = [0u8; 10];
    other
        .read_exact(&mut header)
        .expect("another client is answered");
    assert_eq!(u32::from_be_bytes(header[4..8].try_into().unwrap()), 3);
}

#[test]
fn unknown_calls_take_no_worker_thread() {
    // Before: 10,000 pipelined unknown-method calls took a shim from 3 to 70 threads.
    let id = tether_tests::unique_id("fault");
    let shim = DirectShim::start(&id, &["true"]);
    let pid = shim.shim_pid().expect("shim pid");
    let mut sock = connect(&shim);
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // One round trip first: the shim has started all its threads by then.
    sock.write_all(&frame(1, "containerd.task.v2.Task", "Connect"))
        .unwrap();
    let mut reply = [0u8; 10];
    sock.read_exact(&mut reply).unwrap();
    let len = u32::from_be_bytes(reply[..4].try_into().unwrap()) as usize;
    sock.read_exact(&mut vec![0u8; len]).unwrap();
    let at_rest = threads(pid);
    let calls = 10_000u32;
    let writer = {
        let mut w = sock.try_clone().unwrap();
        std::thread::spawn(move || {
            for i in 0..calls {
                let method = if i % 2 == 0 { "NoSuchMethod" } else { "Nope" };
                if w.write_all(&frame(2 * i + 3, "containerd.task.v2.Task", method))
                    .is_err()
                {
                    return;
                }
            }
        })
    };
    let mut most = at_rest;
    let mut answered = 0u32;
    let mut header = [0u8; 10];
    while answered < calls {
        sock.read_exact(&mut header)
            .expect("an answer to each call");
        let len = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len];
        sock.read_exact(&mut body).unwrap();
        answered += 1;
        if answered.is_multiple_of(500) {
            most = most.max(threads(pid));
        }
    }
    writer.join().unwrap();
    assert!(
        most <= at_rest,
        "threads went from {at_rest} to {most} for calls that need no worker"
    );
}

#[test]
fn accept_failures_back_off_instead_of_spinning() {
    // Before: with the shim out of file descriptors, the level-triggered listener fired
    // again at once: ~2 CPU-seconds per 5 s, and a flood of identical warnings.
    let id = tether_tests::unique_id("fault");
    let shim = DirectShim::start(&id, &["true"]);
    let pid = shim.shim_pid().expect("shim pid");
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let limit = open + 2;
    let prlimit = |soft: usize| {
        let status = Command::new("prlimit")
            .arg("--pid")
            .arg(pid.to_string())
            .arg(format!("--nofile={soft}:"))
            .status()
            .expect("run prlimit (util-linux)");
        assert!(status.success(), "prlimit --nofile={soft}");
    };
    prlimit(limit);
    // Two connections use the last descriptors; the rest wait in the backlog.
    let held: Vec<UnixStream> = (0..6).map(|_| connect(&shim)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let ticks_before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(pid) - ticks_before;
    // 100 ticks per second here: a spinning loop spends ~160 of 200.
    assert!(
        spent < 20,
        "the shim spent {spent} ticks of CPU in 2 s while out of descriptors"
    );
    prlimit(1024);
    // Once descriptors are back, every waiting connection is served.
    for (i, mut c) in held.into_iter().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let stream = 2 * u32::try_from(i).unwrap() + 1;
        c.write_all(&frame(stream, "containerd.task.v2.Task", "Connect"))
            .unwrap();
        let mut header = [0u8; 10];
        c.read_exact(&mut header)
            .unwrap_or_else(|e| panic!("connection {i} not served after the limit rose: {e}"));
    }
    assert!(
        shim.wait_log("accepting connections again", Duration::from_secs(2)),
        "no recovery logged:\n{}",
        shim.log()
    );
    let log = shim.log();
    let warnings = log.matches("level=warning msg=\"accept:").count();
    assert!(
        warnings <= 1,
        "accept failures logged {warnings} times:\n{log}"
    );
}

#[test]
fn a_shim_that_never_gets_a_container_exits_by_itself() {
    // Before: a shim whose containerd failed between `start` and Create (or never sent
    // Shutdown) stayed for ever, with its socket, where a later create of the same group
    // could join it. The bound is 60 s; the test shortens it.
    let id = tether_tests::unique_id("fault");
    let shim = DirectShim::start_with_env(&id, &["true"], &[("TETHER_IDLE_EXIT_SECS", "1")]);
    assert!(
        shim.wait_shim_exit(Duration::from_secs(10)),
        "the shim with no container still runs"
    );
    let socket = shim.socket().expect("the shim's socket");
    assert!(!socket.exists(), "{} left behind", socket.display());
    assert!(
        shim.wait_log("no container for", Duration::from_secs(2)),
        "{}",
        shim.log()
    );
}

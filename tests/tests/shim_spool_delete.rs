//! Delete and the output spool (issue 13), against the shim driven directly (as CRI
//! drives it: Delete right after the exit, while its own reader is still taking output):
//! Delete waits while a reader takes the spooled output, and not when nobody reads.

use containerd_shim_protos::api;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether_tests::direct_shim::{ctx, DirectShim};

/// `seq 1 LINES`: about 23 MB, far more than the FIFO holds, less than the spool's 64 MiB.
const LINES: u64 = 3_000_000;
/// The shim's bound on Delete's wait (`process_stdio::DELETE_LINGER`).
const DELETE_LINGER: Duration = Duration::from_secs(10);
/// How long no read means no reader (`process_stdio::READER_IDLE`).
const READER_IDLE: Duration = Duration::from_secs(1);

/// A shim whose task writes `seq 1 LINES` into the FIFO `stdout`, which the test holds
/// open (returned, non-blocking) and does not read: the output goes to the spool. Returns
/// once the task has exited.
fn spooled_task(id: &str) -> (DirectShim, File) {
    let cmd = format!("seq 1 {LINES}");
    let shim = DirectShim::start(id, &["sh", "-c", &cmd]);
    let reader = shim.create_with_stdout_fifo(id);
    shim.start_task(id);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut state = api::StateRequest::new();
        state.id = id.into();
        let s = shim.client().state(ctx(), &state).expect("State");
        if s.status.value() == containerd_shim_protos::types::task::Status::STOPPED as i32 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the writer did not finish unread\n{}",
            shim.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (shim, reader)
}

/// Reads the FIFO `fifo` (made blocking) at most `rate` bytes a second; returns once
/// the reader has read something.
fn slow_reader(fifo: File, rate: u64) -> (std::thread::JoinHandle<Vec<u8>>, Arc<AtomicU64>) {
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&fifo),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .expect("make the FIFO blocking");
    tether_tests::paced_reader::start(fifo, rate)
}

/// `seq 1 LINES`'s output, exactly.
fn assert_every_line(out: &[u8], log: impl Fn() -> String) {
    let text = String::from_utf8_lossy(out);
    let mut expect = 1u64;
    for line in text.lines() {
        assert_eq!(
            line.parse::<u64>().ok(),
            Some(expect),
            "line {expect} missing or out of order\n{}",
            log()
        );
        expect += 1;
    }
    assert_eq!(expect - 1, LINES, "every line\n{}", log());
}

fn delete(shim: &DirectShim, id: &str) -> Duration {
    let mut delete = api::DeleteRequest::new();
    delete.id = id.into();
    let started = Instant::now();
    shim.client()
        .delete(ctx(), &delete)
        .unwrap_or_else(|e| panic!("Delete: {e}\n{}", shim.log()));
    started.elapsed()
}

fn seq_bytes() -> u64 {
    (1..=LINES).map(|n| n.to_string().len() as u64 + 1).sum()
}

/// A Delete sent while a reader takes the spooled output at `rate` bytes a second.
struct DeleteWhileReading {
    shim: DirectShim,
    /// How long Delete took.
    took: Duration,
    /// What the reader had when Delete returned.
    at_delete: u64,
    /// Everything the reader got, to EOF.
    out: Vec<u8>,
}

fn delete_while_reading(prefix: &str, rate: u64) -> DeleteWhileReading {
    let id = tether_tests::unique_id(prefix);
    let (shim, fifo) = spooled_task(&id);
    let (reader, got) = slow_reader(fifo, rate);
    let took = delete(&shim, &id);
    let at_delete = got.load(Ordering::SeqCst);
    let out = reader.join().expect("the reader");
    DeleteWhileReading {
        shim,
        took,
        at_delete,
        out,
    }
}

#[test]
fn delete_waits_while_a_reader_takes_the_spool() {
    // About 3 s of reading: far less than the bound, far more than the idle rule.
    let DeleteWhileReading {
        shim,
        took,
        at_delete,
        out,
    } = delete_while_reading("linger", 8 << 20);
    let total = seq_bytes();
    eprintln!("Delete took {took:?}; the reader had {at_delete} of {total} bytes when it returned");
    assert_every_line(&out, || shim.log());
    // Delete returned once the spool was empty: what was left was in the FIFO (at most
    // its 1 MiB) or the reader's hands.
    assert!(
        at_delete + (1 << 20) + (64 << 10) >= total,
        "Delete returned with {} bytes not yet read\n{}",
        total - at_delete,
        shim.log()
    );
    assert!(took < DELETE_LINGER, "Delete took {took:?}");
    let log = shim.log();
    assert!(
        log.contains("the reader took the spooled output"),
        "the wait is logged\n{log}"
    );
    assert!(!log.contains("dropped unread"), "nothing dropped\n{log}");
}

#[test]
fn delete_with_nobody_reading_does_not_wait() {
    let id = tether_tests::unique_id("nolinger");
    let (shim, fifo) = spooled_task(&id);
    // The FIFO is full and held open, and nobody reads it.
    let took = delete(&shim, &id);
    eprintln!("Delete with nobody reading took {took:?}");
    assert!(
        took < READER_IDLE + Duration::from_secs(1),
        "Delete waited {took:?} for a reader that is not there\n{}",
        shim.log()
    );
    assert!(
        shim.wait_log("spooled bytes dropped unread", Duration::from_secs(5)),
        "the dropped bytes are logged\n{}",
        shim.log()
    );
    drop(fifo);
}

#[test]
fn delete_waits_at_most_the_bound_for_a_slow_reader() {
    // 1 MiB/s: 23 MB would take 20 s.
    let DeleteWhileReading {
        shim, took, out, ..
    } = delete_while_reading("bound", 1 << 20);
    let total = seq_bytes();
    eprintln!(
        "Delete took {took:?}; the reader got {} of {total} bytes",
        out.len()
    );
    assert!(
        took >= DELETE_LINGER - Duration::from_millis(500)
            && took < DELETE_LINGER + Duration::from_secs(3),
        "Delete took {took:?}"
    );
    assert!((out.len() as u64) < total);
    // What the reader got is the start, in order; the spool's drop count is the rest,
    // exactly (the FIFO's bytes stay for the reader after the shim closes its end).
    let log = shim.log();
    assert!(
        log.contains("spooled bytes dropped unread (still spooled after"),
        "Delete says why it stopped waiting\n{log}"
    );
    let dropped: u64 = log
        .lines()
        .filter_map(|l| {
            let head = &l[..l.find(" spooled bytes dropped unread (the process was deleted)")?];
            head.rsplit(' ').next()?.parse::<u64>().ok()
        })
        .sum();
    assert!(dropped > 0, "the dropped count is logged\n{log}");
    assert_eq!(
        out.len() as u64 + dropped,
        total,
        "received {} + dropped {dropped} = written {total}",
        out.len()
    );
    let complete = &out[..out.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)];
    let text = String::from_utf8_lossy(complete);
    for (i, line) in text.lines().enumerate() {
        assert_eq!(line.parse::<u64>().ok(), Some(i as u64 + 1), "in order");
    }
}

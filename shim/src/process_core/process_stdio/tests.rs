//! The pumps of a process as a loop runs them: registration, a pump's end, the exit's
//! drain and its grace, abandoning idle outputs, and FIFO bytes no reader took yet.

use super::*;
use crate::process_core::epoll::Ready;
use crate::process_core::pump::Direction;
use nix::fcntl::OFlag;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use crate::process_core::test_fds::{close_writer, pipe, read_all_now};

fn output(src: OwnedFd, dst: OwnedFd) -> Pump {
    Pump::new(Direction::Output, src, dst, None).unwrap()
}

/// Waits for readiness and runs what is ready, as a loop would; returns the pumps
/// that ended.
fn turn(poller: &Poller, stdio: &mut ProcessStdio, ready: &mut Vec<Ready>) -> Vec<Ended> {
    poller.wait(Some(1000), ready).unwrap();
    let mut ended = Vec::new();
    for r in ready.iter() {
        let Token::Stdio(7, stream) = r.token else {
            panic!("unexpected token {:?}", r.token)
        };
        ended.extend(stdio.run(poller, stream));
    }
    ended
}

use crate::process_core::spool::test_spool_in as spool_in;

#[test]
fn the_backlog_counts_spooled_streams_only() {
    use crate::process_core::pump::set_nonblocking;
    use std::os::fd::AsFd;
    let poller = Poller::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (src_r, src_w) = pipe();
    // Nobody reads the destination: once it is full, the rest is spooled.
    let (_dst_r, dst_w) = pipe();
    let mut stdio = ProcessStdio::default();
    stdio.add(
        Stream::Stdout,
        output(src_r, dst_w).with_spool(spool_in(dir.path())),
    );
    stdio.register(&poller, 7).unwrap();
    assert_eq!(stdio.backlog(), Backlog::default());
    // Fill the destination through the pump, then the source (the writer would block).
    let mut writer = File::from(src_w);
    set_nonblocking(writer.as_fd()).unwrap();
    let chunk = [b'x'; 4096];
    for _ in 0..64 {
        let _ = writer.write(&chunk);
        stdio.run(&poller, Stream::Stdout);
    }
    while writer.write(&chunk).is_ok() {}
    assert_eq!(
        stdio.backlog(),
        Backlog::default(),
        "a moment ago the reader took some"
    );
    // The exit spools what the source holds.
    stdio.exited(&poller, Instant::now(), Duration::ZERO);
    let backlog = stdio.backlog();
    assert!(backlog.spooled > 0, "{backlog:?}");
    assert!(backlog.last_taken.is_some_and(|t| t <= Instant::now()));
}

#[test]
fn a_fifos_unread_bytes_are_seen_after_its_pump_has_gone() {
    let poller = Poller::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stdout");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (writer, keepalive) = fifo::KeepAliveWriter::open(&path).unwrap().into_parts();
    let (src_r, src_w) = pipe();
    let hangup = src_r.try_clone().unwrap();
    let mut stdio = ProcessStdio::default();
    assert_eq!(stdio.fifo_unread(), None, "no FIFO");
    let pump = Pump::new(Direction::Output, src_r, writer.into(), Some(keepalive)).unwrap();
    stdio.add(Stream::Stdout, pump);
    stdio.register(&poller, 7).unwrap();
    let mut src_w = File::from(src_w);
    src_w.write_all(&[b'x'; 1000]).unwrap();
    close_writer(src_w, hangup.as_fd());
    assert!(stdio.run(&poller, Stream::Stdout).is_some(), "EOF");
    assert!(!stdio.is_open(Stream::Stdout), "the pump is gone");
    assert_eq!(stdio.fifo_unread(), Some(1000), "kept for a reader");
    let mut reader = fifo::open_read(&path, true).unwrap();
    let mut got = [0u8; 600];
    assert_eq!(reader.read(&mut got).unwrap(), 600);
    assert_eq!(stdio.fifo_unread(), Some(400));
    // Carried across a live upgrade.
    let now = Instant::now();
    let mut out = crate::process_core::carried_fds::FdsOut::default();
    let saved = stdio.save(&mut out, now);
    assert!(saved.ended_fifos[Stream::Stdout.index()].is_some());
    std::mem::forget(stdio);
    let mut fds = crate::process_core::carried_fds::FdsIn::new(out.fds());
    let mut stdio = ProcessStdio::restore(saved, &mut fds, now).unwrap();
    assert!(fds.untaken().is_empty());
    assert_eq!(stdio.fifo_unread(), Some(400));
    stdio.close_all(&poller);
    assert_eq!(stdio.fifo_unread(), None, "let go at delete");
}

/// The CPU time of the calling thread, in ns (schedstat: no unsafe, ns resolution).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Moves `bytes` from a writer thread through one output pump (with a spool or
/// without) to a reader thread that keeps up, as a face's loop would; returns the
/// CPU time the pumping thread took.
fn pump_cpu_ns(bytes: usize, spool: Option<crate::process_core::spool::Spool>) -> u64 {
    let poller = Poller::new().unwrap();
    let (src_r, src_w) = pipe();
    let (dst_r, dst_w) = pipe();
    let mut pump = output(src_r, dst_w);
    if let Some(spool) = spool {
        pump = pump.with_spool(spool);
    }
    let mut stdio = ProcessStdio::default();
    stdio.add(Stream::Stdout, pump);
    stdio.register(&poller, 7).unwrap();
    let writer = std::thread::spawn(move || {
        let mut w = File::from(src_w);
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..bytes / chunk.len() {
            w.write_all(&chunk).unwrap();
        }
    });
    let reader = std::thread::spawn(move || read_all_now(File::from(dst_r)));
    let mut ready = Vec::new();
    let started = thread_cpu_ns();
    while stdio.is_open(Stream::Stdout) {
        let timeout = stdio.next_recheck().map(|at| {
            let ms = at.saturating_duration_since(Instant::now()).as_millis();
            u16::try_from(ms).unwrap_or(u16::MAX)
        });
        poller.wait(timeout.or(Some(1000)), &mut ready).unwrap();
        stdio.run(&poller, Stream::Stdout);
        for stream in stdio.due_rechecks(Instant::now()) {
            stdio.run(&poller, stream);
        }
    }
    let cpu = thread_cpu_ns() - started;
    writer.join().unwrap();
    assert_eq!(reader.join().unwrap(), bytes, "every byte");
    cpu
}

/// What the spool costs the direct path (issue 13: streaming must not slow down):
/// the pumping thread's CPU time for 256 MiB with a spool attached (and never used:
/// the reader keeps up) and without, interleaved. Not a wall-clock rate: CPU time
/// moves far less with the machine's load. `cargo test --release -- --ignored`.
#[test]
#[ignore]
fn the_direct_path_costs_the_same_with_a_spool() {
    let dir = tempfile::tempdir().unwrap();
    const BYTES: usize = 256 << 20;
    const ROUNDS: usize = 25;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let spool = || Some(spool_in(dir.path()));
        if round % 2 == 0 {
            with.push(pump_cpu_ns(BYTES, spool()));
            without.push(pump_cpu_ns(BYTES, None));
        } else {
            without.push(pump_cpu_ns(BYTES, None));
            with.push(pump_cpu_ns(BYTES, spool()));
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ms = |v: &[u64]| v.iter().map(|n| *n as f64 / 1e6).collect::<Vec<_>>();
    let ratios: Vec<f64> = with
        .iter()
        .zip(&without)
        .map(|(w, wo)| *w as f64 / *wo as f64)
        .collect();
    eprintln!(
        "pump CPU for 256 MiB, median of {ROUNDS}: with a spool {:.1} ms, without {:.1} \
         ms; median of the rounds' ratios {:.3}",
        median(&ms(&with)),
        median(&ms(&without)),
        median(&ratios)
    );
}

#[test]
fn streams_are_a_small_set() {
    let mut s = Streams::default();
    assert_eq!(s.outputs(), 0);
    s.insert(Stream::Stdin);
    s.insert(Stream::Stderr);
    assert!(s.contains(Stream::Stdin) && s.contains(Stream::Stderr));
    assert!(!s.contains(Stream::Stdout));
    assert_eq!(s.outputs(), 1);
    for stream in Stream::ALL {
        assert_eq!(Stream::from_bits(stream.to_bits()), Some(stream));
    }
    assert_eq!(Stream::from_bits(3), None);
    assert_eq!(Streams::from(Stream::Stdin).outputs(), 0);
    assert_eq!(Streams::from(Stream::Stdout).outputs(), 1);
}

#[test]
fn runs_on_readiness_and_drops_an_ended_pump() {
    let poller = Poller::new().unwrap();
    let (src_r, src_w) = pipe();
    let (dst_r, dst_w) = pipe();
    let hangup = src_r.try_clone().unwrap();
    let mut stdio = ProcessStdio::default();
    stdio.add(Stream::Stdout, output(src_r, dst_w));
    stdio.register(&poller, 7).unwrap();
    assert_eq!(stdio.open_outputs(), 1);
    let mut ready = Vec::new();
    let mut writer = File::from(src_w);
    writer.write_all(b"hello").unwrap();
    assert!(turn(&poller, &mut stdio, &mut ready).is_empty());
    close_writer(writer, hangup.as_fd());
    let ended = turn(&poller, &mut stdio, &mut ready);
    assert_eq!(
        ended,
        [Ended {
            stream: Stream::Stdout,
            moved: 5,
            read: 5,
            how: Some(crate::process_core::pump::SourceEnd {
                by: crate::process_core::pump::EndedBy::Splice,
                errno: None
            })
        }]
    );
    assert!(stdio.is_empty() && !stdio.is_open(Stream::Stdout));
    let mut out = String::new();
    File::from(dst_r).read_to_string(&mut out).unwrap();
    assert_eq!(out, "hello", "EOF: the pump's write end was closed");
    poller.wait(Some(0), &mut ready).unwrap();
    assert!(ready.is_empty(), "deregistered: {ready:?}");
}

#[test]
fn a_regular_file_destination_needs_no_registration() {
    let poller = Poller::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let file = File::create(&path).unwrap();
    let (src_r, src_w) = pipe();
    let hangup = src_r.try_clone().unwrap();
    let mut stdio = ProcessStdio::default();
    stdio.add(Stream::Stderr, output(src_r, file.into()));
    stdio.register(&poller, 7).unwrap();
    let mut src_w = File::from(src_w);
    src_w.write_all(b"to a file").unwrap();
    close_writer(src_w, hangup.as_fd());
    let mut ready = Vec::new();
    let ended = turn(&poller, &mut stdio, &mut ready);
    assert_eq!(ended.len(), 1, "EOF after the bytes: {ended:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "to a file");
}

#[test]
fn a_pump_that_cannot_be_registered_is_dropped_and_named() {
    let poller = Poller::new().unwrap();
    let (src_r, _src_w) = pipe();
    let (_dst_r, dst_w) = pipe();
    let file = tempfile::tempfile().unwrap();
    let mut stdio = ProcessStdio::default();
    stdio.add(Stream::Stdout, output(src_r, dst_w));
    // epoll cannot watch a regular file as a source.
    let (_in_r, in_w) = pipe();
    stdio.add(
        Stream::Stdin,
        Pump::new(Direction::Input, file.into(), in_w, None).unwrap(),
    );
    let err = stdio.register(&poller, 7).unwrap_err();
    assert_eq!(err.error.raw_os_error(), Some(libc::EPERM));
    assert!(err.streams.contains(Stream::Stdin) && err.streams.outputs() == 0);
    assert!(!stdio.is_open(Stream::Stdin) && stdio.is_open(Stream::Stdout));
}

#[test]
fn the_exit_moves_what_is_buffered_and_starts_the_grace() {
    let poller = Poller::new().unwrap();
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let (dst_r, dst_w) = pipe();
    let (_dst2_r, dst2_w) = pipe();
    let hangup = out_r.try_clone().unwrap();
    let mut stdio = ProcessStdio::default();
    stdio.add(Stream::Stdout, output(out_r, dst_w));
    stdio.add(Stream::Stderr, output(err_r, dst2_w));
    stdio.register(&poller, 7).unwrap();
    let mut out = File::from(out_w);
    out.write_all(b"last words").unwrap();
    close_writer(out, hangup.as_fd());
    // stderr's writer lives on (a descendant holds it), idle.
    let _held = err_w;
    let now = Instant::now();
    assert!(
        !stdio.drain_overdue(now + Duration::from_secs(100)),
        "no exit yet"
    );
    let ended = stdio.exited(&poller, now, Duration::from_secs(2));
    assert!(ended.contains(Stream::Stdout) && ended.outputs() == 1);
    assert_eq!(stdio.drain_deadline(), Some(now + Duration::from_secs(2)));
    // A second exit does not restart the grace.
    stdio.exited(
        &poller,
        now + Duration::from_secs(1),
        Duration::from_secs(2),
    );
    assert_eq!(stdio.drain_deadline(), Some(now + Duration::from_secs(2)));
    let mut moved = vec![0u8; 64];
    let n = File::from(dst_r).read(&mut moved).unwrap();
    assert_eq!(&moved[..n], b"last words");

    assert!(!stdio.drain_overdue(now + Duration::from_millis(1999)));
    let none = Streams::default();
    let early = stdio.abandon_idle_outputs(&poller, now + Duration::from_millis(1999));
    assert_eq!(early, none);
    assert!(stdio.drain_overdue(now + Duration::from_secs(2)));
    let dropped = stdio.abandon_idle_outputs(&poller, now + Duration::from_secs(2));
    assert!(dropped.contains(Stream::Stderr));
    assert_eq!(stdio.open_outputs(), 0);
}

#[test]
fn a_source_still_carrying_bytes_is_not_abandoned() {
    let poller = Poller::new().unwrap();
    let (src_r, src_w) = pipe();
    // A full destination: the bytes stay in the source.
    let (_dst_r, dst_w) = pipe();
    let mut stdio = ProcessStdio::default();
    stdio.add(Stream::Stdout, output(src_r, dst_w));
    stdio.register(&poller, 7).unwrap();
    let mut fill = File::from(src_w);
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&fill),
        nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
    )
    .unwrap();
    let chunk = [1u8; 4096];
    // Fill the destination through the pump, then the source.
    for _ in 0..64 {
        let _ = fill.write(&chunk);
        stdio.run(&poller, Stream::Stdout);
    }
    while fill.write(&chunk).is_ok() {}
    let now = Instant::now();
    stdio.exited(&poller, now, Duration::ZERO);
    assert!(stdio.drain_overdue(now));
    assert_eq!(stdio.abandon_idle_outputs(&poller, now), Streams::default());
    assert!(stdio.is_open(Stream::Stdout));
}

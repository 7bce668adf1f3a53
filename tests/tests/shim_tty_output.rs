//! A TTY's last bytes (issue 23, part 2) and how soon a Wait follows them (part 3),
//! driven over raw ttrpc (`direct_shim`), the way containerd drives an exec.
//!
//! An exec's exit may be reported (its Wait answered) only once its pty master has given
//! EOF or EIO and everything read from it is in the output: containerd's client stops
//! reading the exec's output when the Wait returns (`process.Delete` cancels the copy).
//! The test takes the Wait's answer as that client does: at that instant it stops the
//! reader, takes what the FIFO holds, and counts. Under busy loops on every core (where
//! containerd 2.1's `TestContainerExecLargeOutputWithTTY` once lost the end), with runc
//! started straight and through a `sh` wrapper (`exec runc "$@"`: another fork and exec,
//! another timing of the runtime's start), the output must be complete, byte for byte.
//!
//! A client that reads slower than the process writes is held to the same: when its
//! Wait returns it has *read* everything (containerd's client closes its FIFOs then, so
//! what is still in them is lost; the shim counts it through the read end it holds).
//!
//! Two shapes of output, in turn: `seq 1 1000000` (a line per number), and containerd's
//! own test's `sh -c 'seq -s " " 1000000'` (one 6.9 MB line, through a shell). Under
//! heavy load the second shape once ended 8.6 KB short (1 round of 30: the pump saw the
//! pty's end that early; not seen again in 469 rounds) and, in ~2 % of rounds, its Wait
//! waited 10 s for a spool already empty (fixed; the table's unit test
//! `spool_emptied_at_the_reap`): each round's Wait must also come within [`WAIT_BOUND`]
//! of the last bytes.
//!
//! Rounds: `TETHER_TTY_ROUNDS` (default 12; 6.9-7.9 MB each), `TETHER_TTY_WAIT_ROUNDS`
//! (default 100), `TETHER_TTY_BUSY` (busy loops, default one per core plus one).

use containerd_shim_protos::api;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use tether_tests::busy::Busy;
use tether_tests::direct_shim::{ctx, DirectShim};
use tether_tests::output_diff::describe_difference;

/// What `seq 1 N` prints through a pty (ONLCR: each `\n` becomes `\r\n`).
fn seq_through_a_pty(n: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(n as usize * 9);
    for i in 1..=n {
        out.extend_from_slice(i.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// What `seq -s " " N` prints through a pty: one line.
fn seq_one_line_through_a_pty(n: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(n as usize * 8);
    for i in 1..=n {
        if i > 1 {
            out.push(b' ');
        }
        out.extend_from_slice(i.to_string().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// How soon after the last bytes a Wait must come in the complete-output test (generous:
/// a loaded, shared machine; the stall it catches was 10 s).
const WAIT_BOUND: Duration = Duration::from_secs(1);

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a reader of an exec's stdout FIFO got, shared between its thread and the test.
#[derive(Default)]
struct Captured {
    data: Vec<u8>,
    /// When the last bytes were read.
    last_read: Option<Instant>,
    eof: bool,
}

/// Reads everything `fifo` holds now (non-blocking) into `c`.
fn drain_now(fifo: &mut File, c: &mut Captured) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match fifo.read(&mut buf) {
            Ok(0) => {
                c.eof = true;
                return;
            }
            Ok(n) => {
                c.data.extend_from_slice(&buf[..n]);
                c.last_read = Some(Instant::now());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return, // EAGAIN: empty for now
        }
    }
}

/// A reader thread on a FIFO: reads as fast as bytes come, until EOF or `stop`.
struct Reader {
    captured: Arc<Mutex<Captured>>,
    fifo: Arc<Mutex<File>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Reader {
    fn start(fifo: File) -> Self {
        let captured = Arc::new(Mutex::new(Captured::default()));
        let fifo = Arc::new(Mutex::new(fifo));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (captured, fifo, stop) = (captured.clone(), fifo.clone(), stop.clone());
            thread::spawn(move || loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                {
                    let f = fifo.lock().unwrap();
                    let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::from(10u16));
                }
                let mut f = fifo.lock().unwrap();
                let mut c = captured.lock().unwrap();
                drain_now(&mut f, &mut c);
            })
        };
        Reader {
            captured,
            fifo,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the reader as a client does at the Wait's answer: what the FIFO holds at
    /// this instant is taken, nothing after. Returns what was read and when the last
    /// bytes came.
    fn stop_now(mut self) -> (Vec<u8>, Option<Instant>) {
        self.stop.store(true, Ordering::SeqCst);
        let (data, last) = {
            let mut f = self.fifo.lock().unwrap();
            let mut c = self.captured.lock().unwrap();
            drain_now(&mut f, &mut c);
            (std::mem::take(&mut c.data), c.last_read)
        };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (data, last)
    }
}

/// A `sh` wrapper around the real runc (`exec runc "$@"`): one more fork and exec
/// before runc runs.
fn sh_wrapped_runc(dir: &Path) -> PathBuf {
    let real = tether_tests::require::tool("runc", "runc");
    let path = dir.join("sh-runc");
    std::fs::write(
        &path,
        format!("#!/bin/sh\nexec {} \"$@\"\n", real.display()),
    )
    .expect("write the runc wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("make the wrapper executable");
    path
}

/// A FIFO in the shim's directory for an exec's stdout, opened for reading without
/// blocking (so that opening does not wait for the shim's writer).
fn stdout_fifo(shim: &DirectShim, exec_id: &str) -> (PathBuf, File) {
    let fifo_path = shim.dir().join(format!("{exec_id}.out"));
    nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .expect("mkfifo");
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo_path)
        .expect("open the stdout FIFO");
    (fifo_path, fifo)
}

/// One TTY exec of `args` whose stdout FIFO a reader takes; returns what the reader had
/// when the Wait returned, the Wait's status, and how long after the last bytes came the
/// Wait returned (negative: before).
fn tty_exec_round(
    shim: &DirectShim,
    id: &str,
    exec_id: &str,
    args: &[&str],
) -> (Vec<u8>, u32, f64) {
    let (fifo_path, fifo) = stdout_fifo(shim, exec_id);
    let mut exec = api::ExecProcessRequest::new();
    exec.id = id.into();
    exec.exec_id = exec_id.into();
    exec.terminal = true;
    exec.stdout = fifo_path.to_string_lossy().into_owned();
    exec.spec = Some(shim.exec_spec(args, true)).into();
    shim.client()
        .exec(ctx(), &exec)
        .unwrap_or_else(|e| panic!("Exec {exec_id}: {e}\n{}", shim.log()));
    let reader = Reader::start(fifo);
    let mut start = api::StartRequest::new();
    start.id = id.into();
    start.exec_id = exec_id.into();
    shim.client()
        .start(ctx(), &start)
        .unwrap_or_else(|e| panic!("Start {exec_id}: {e}\n{}", shim.log()));
    let mut wait = api::WaitRequest::new();
    wait.id = id.into();
    wait.exec_id = exec_id.into();
    let status = shim
        .client()
        .wait(ctx(), &wait)
        .unwrap_or_else(|e| panic!("Wait {exec_id}: {e}\n{}", shim.log()))
        .exit_status;
    let answered = Instant::now();
    let (data, last) = reader.stop_now();
    let after_last = match last {
        Some(t) if answered >= t => answered.duration_since(t).as_secs_f64(),
        Some(t) => -t.duration_since(answered).as_secs_f64(),
        None => f64::NAN,
    };
    let mut delete = api::DeleteRequest::new();
    delete.id = id.into();
    delete.exec_id = exec_id.into();
    shim.client()
        .delete(ctx(), &delete)
        .unwrap_or_else(|e| panic!("Delete {exec_id}: {e}\n{}", shim.log()));
    let _ = std::fs::remove_file(&fifo_path);
    (data, status, after_last)
}

#[test]
fn a_tty_execs_output_is_complete_when_its_wait_returns_under_load() {
    let id = tether_tests::unique_id("tty");
    let shim = DirectShim::start(&id, &["sleep", "1000"]);
    let real = tether_tests::require::tool("runc", "runc");
    let wrapped = sh_wrapped_runc(shim.dir());
    // The init runs under the real runc; the runtime's start for the execs alternates
    // between the real runc and the wrapper (BinaryName is the container's, so one
    // container per way).
    let second = format!("{id}-w");
    shim.create_and_start(&id, shim.options(&real));
    let mut create = api::CreateTaskRequest::new();
    create.id = second.clone();
    let bundle2 = shim.dir().join("bundle2");
    tether_tests::Bundle::busybox(&bundle2, &["sleep", "1000"]).expect("second bundle");
    create.bundle = bundle2.to_string_lossy().into_owned();
    create.options = Some(shim.options(&wrapped)).into();
    shim.client()
        .create(ctx(), &create)
        .unwrap_or_else(|e| panic!("Create {second}: {e}\n{}", shim.log()));
    shim.start_task(&second);
    let rounds = env_number("TETHER_TTY_ROUNDS", 12);
    let cores = thread::available_parallelism().map_or(2, |n| n.get());
    let busy = Busy::start(env_number("TETHER_TTY_BUSY", cores + 1));
    let lines = seq_through_a_pty(1_000_000);
    let one_line = seq_one_line_through_a_pty(1_000_000);
    let mut failures = Vec::new();
    for round in 0..rounds {
        let (container, way) = if round % 2 == 0 {
            (id.as_str(), "runc")
        } else {
            (second.as_str(), "sh + runc")
        };
        // Both ways for each shape: rounds 0, 1 lines; 2, 3 one line; and so on.
        let (shape, args, want): (_, &[&str], _) = if round % 4 < 2 {
            ("lines", &["seq", "1", "1000000"], &lines)
        } else {
            ("one line", &["sh", "-c", "seq -s ' ' 1000000"], &one_line)
        };
        let exec_id = format!("seq{round}");
        let (got, status, after_last) = tty_exec_round(&shim, container, &exec_id, args);
        eprintln!(
            "round {round} ({way}, {shape}): {} bytes at the Wait, status {status}, Wait {:.1} ms after the last bytes",
            got.len(),
            after_last * 1000.0
        );
        if status != 0 || &got != want {
            failures.push(format!(
                "round {round} ({way}, {shape}): status {status}, {}",
                describe_difference(&got, want)
            ));
        } else if after_last > WAIT_BOUND.as_secs_f64() {
            failures.push(format!(
                "round {round} ({way}, {shape}): the Wait came {:.1} ms after the last bytes (bound {WAIT_BOUND:?})",
                after_last * 1000.0
            ));
        }
    }
    drop(busy);
    assert!(
        failures.is_empty(),
        "{} of {rounds} rounds incomplete or late at the Wait:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        shim.log()
    );
    for c in [&id, &second] {
        shim.kill_and_wait(c);
        let mut delete = api::DeleteRequest::new();
        delete.id = c.to_string();
        shim.client().delete(ctx(), &delete).expect("Delete");
    }
}

/// A Wait follows the pty's last bytes soon, every time (issue 3's 10 s stall, seen in 4
/// of 16 runs of a change that gathered reads, never again): the Wait's answer is timed
/// from the moment the reader got the last bytes, with busy loops on every core. The bound
/// asserted is generous (a shared, loaded 2-core machine); the figures are printed (issue
/// 23's aim, 100 ms in every round, held with room on the machine: max 21 ms; at load ~12
/// besides the busy loops, 4 of 100 rounds took longer, up to 280 ms: docs/benchmarks.md).
#[test]
fn a_wait_follows_the_ptys_last_bytes_within_a_bound_every_round() {
    const BOUND: Duration = Duration::from_secs(1);
    let id = tether_tests::unique_id("ttyw");
    let shim = DirectShim::start(&id, &["sleep", "1000"]);
    shim.create_and_start(
        &id,
        shim.options(&tether_tests::require::tool("runc", "runc")),
    );
    let rounds = env_number("TETHER_TTY_WAIT_ROUNDS", 100);
    let cores = thread::available_parallelism().map_or(2, |n| n.get());
    let busy = Busy::start(env_number("TETHER_TTY_BUSY", cores + 1));
    let want = seq_through_a_pty(20_000);
    let mut gaps = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let exec_id = format!("w{round}");
        let (got, status, after_last) =
            tty_exec_round(&shim, &id, &exec_id, &["seq", "1", "20000"]);
        assert_eq!(status, 0, "round {round}\n{}", shim.log());
        assert!(
            got == want,
            "round {round}: {}\n{}",
            describe_difference(&got, &want),
            shim.log()
        );
        gaps.push(after_last.max(0.0));
    }
    drop(busy);
    let mut sorted = gaps.clone();
    sorted.sort_by(f64::total_cmp);
    // Quantiles by index: `percent` of the way through the sorted rounds.
    let ms = |percent: usize| sorted[(sorted.len() - 1) * percent / 100] * 1000.0;
    eprintln!(
        "Wait after the last bytes over {rounds} rounds: median {:.1} ms, p90 {:.1} ms, max {:.1} ms, over 100 ms: {}",
        ms(50),
        ms(90),
        ms(100),
        gaps.iter().filter(|g| **g > 0.1).count()
    );
    let worst = sorted.last().copied().unwrap_or(0.0);
    assert!(
        worst < BOUND.as_secs_f64(),
        "a Wait came {worst:.3} s after the last bytes"
    );
    shim.kill_and_wait(&id);
}

/// A reader slower than the writer (a client on a loaded machine): when the Wait returns
/// the shim has written every byte into the FIFO (what the client has not read yet is at
/// most the FIFO's pipe buffer), and a client that reads on after Delete gets them all.
/// (The Wait is even held until the reader has emptied the FIFO, for clients that stop
/// reading at the Wait, as ctr 1.6 does: `containerd_wait_drain`; but only while the
/// reader takes bytes at least every 250 ms, which a paced reader on a loaded machine may
/// not, so the bound here stays the FIFO's.)
/// A FIFO's pipe buffer (Linux's default, 16 pages), plus the paced reader's one chunk in
/// flight between its read and its count.
const FIFO_BUFFER: u64 = 64 * 1024 + 64 * 1024;

#[test]
fn a_slower_reader_has_read_everything_when_the_wait_returns() {
    const RATE: u64 = 4 << 20; // bytes per second
    let id = tether_tests::unique_id("ttys");
    let shim = DirectShim::start(&id, &["sleep", "1000"]);
    shim.create_and_start(
        &id,
        shim.options(&tether_tests::require::tool("runc", "runc")),
    );
    let want = seq_through_a_pty(120_000);
    for round in 0..3 {
        let exec_id = format!("slow{round}");
        let (fifo_path, fifo) = stdout_fifo(&shim, &exec_id);
        // Blocking from here on: the paced reader reads until EOF.
        let flags =
            nix::fcntl::fcntl(fifo.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).expect("F_GETFL");
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fifo.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).expect("F_SETFL");
        let mut exec = api::ExecProcessRequest::new();
        exec.id = id.clone();
        exec.exec_id = exec_id.clone();
        exec.terminal = true;
        exec.stdout = fifo_path.to_string_lossy().into_owned();
        exec.spec = Some(shim.exec_spec(&["seq", "1", "120000"], true)).into();
        shim.client()
            .exec(ctx(), &exec)
            .unwrap_or_else(|e| panic!("Exec: {e}\n{}", shim.log()));
        let mut start = api::StartRequest::new();
        start.id = id.clone();
        start.exec_id = exec_id.clone();
        shim.client()
            .start(ctx(), &start)
            .unwrap_or_else(|e| panic!("Start: {e}\n{}", shim.log()));
        let (reader, got) = tether_tests::paced_reader::start(fifo, RATE);
        let mut wait = api::WaitRequest::new();
        wait.id = id.clone();
        wait.exec_id = exec_id.clone();
        let status = shim.client().wait(ctx(), &wait).expect("Wait").exit_status;
        let read_at_wait = got.load(Ordering::SeqCst);
        eprintln!(
            "round {round}: read {read_at_wait} of {} when the Wait returned",
            want.len()
        );
        assert_eq!(status, 0, "{}", shim.log());
        let mut delete = api::DeleteRequest::new();
        delete.id = id.clone();
        delete.exec_id = exec_id.clone();
        shim.client().delete(ctx(), &delete).expect("Delete");
        let all = reader.join().expect("the reader");
        assert!(
            all == want,
            "round {round}: {}",
            describe_difference(&all, &want)
        );
        let unread = want.len() as u64 - read_at_wait.min(want.len() as u64);
        assert!(
            unread <= FIFO_BUFFER,
            "round {round}: the Wait returned with {unread} bytes not yet in the FIFO's buffer"
        );
    }
    shim.kill_and_wait(&id);
}

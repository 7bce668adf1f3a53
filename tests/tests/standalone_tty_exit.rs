//! Standalone supervisor: when `exit` reaches EOF, the process's output is in its FIFOs
//! (issue 23: "an exec's or init's exit is reported only after its pty master has given
//! EOF or EIO and everything read from it is written").
//!
//! A manager that trusts "`exit` EOF means the process is over and its output is in the
//! FIFOs" (Garden's guardian driving dadoo: it stops copying a process's output once it
//! has the exit code) must find every byte the process wrote either read already or
//! waiting in the `stdout` FIFO at that instant. The test is such a manager, reading
//! slower than the process writes (so the FIFO is full and the supervisor holds bytes: in
//! the pty or the pipe, in its spool), with pauses long enough for the spool to take over
//! mid-stream. It watches `exit` and `stdout` in one loop: at the instant `exit` reaches
//! EOF it counts what it has read and what the FIFO holds (`FIONREAD`) and reads
//! `exitcode`; then it reads on to `stdout`'s EOF, and everything must be there, byte for
//! byte. Rounds with a terminal and with pipes, half of them under busy loops on every
//! core; a pea with a terminal too.
//!
//! Rounds: `TETHER_TTY_EXIT_ROUNDS` (default 4 per way; 3.9 MB each through a pty).

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde_json::json;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};
use tether_tests::busy::Busy;
use tether_tests::output_diff::describe_difference;
use tether_tests::{Bundle, StandaloneEnv};

/// Lines `seq` prints: ~3.4 MB (3.9 MB through a pty).
const LINES: u32 = 500_000;
/// The manager's pace while reading, and its pauses: a pause every `PAUSE_EVERY` bytes,
/// longer than the pump's 100 ms stall rule, so the supervisor spools mid-stream, and
/// shorter than the 1 s after which a reader counts as gone.
const RATE: f64 = 1024.0 * 1024.0;
const PAUSE_EVERY: usize = 512 << 10;
const PAUSE: Duration = Duration::from_millis(300);
/// One read takes at most this.
const CHUNK: usize = 64 << 10;
/// The process's exit code (not 0: the code at the EOF is the process's own).
const CODE: i32 = 3;

/// What `seq 1 n` prints, through a pty (ONLCR: `\r\n`) or a pipe.
fn seq_output(n: u32, tty: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(n as usize * 9);
    for i in 1..=n {
        out.extend_from_slice(i.to_string().as_bytes());
        out.extend_from_slice(if tty { b"\r\n" } else { b"\n" });
    }
    out
}

fn rounds() -> usize {
    std::env::var("TETHER_TTY_EXIT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// Opens a FIFO of the process directory for reading without blocking on the open (and
/// without a writer, the reads return EOF at once rather than hanging).
fn open_nonblocking(path: &Path) -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Bytes waiting in a pipe or FIFO.
fn fionread(f: &File) -> usize {
    fifo::unread(f).expect("FIONREAD")
}

/// The code and the time of the exit in `exitcode`, if it is there.
fn exit_record(dir: &Path) -> Option<(i32, SystemTime)> {
    let text = std::fs::read_to_string(dir.join("exitcode")).ok()?;
    let mut lines = text.lines();
    let code = lines.next()?.trim().parse().ok()?;
    let at = fifo::rfc3339::parse(lines.next()?.trim()).ok()?;
    Some((code, at))
}

/// How long after the process's exit (the time in `exitcode`) `exit` reached EOF.
fn since_exit(record: Option<(i32, SystemTime)>, eof: SystemTime) -> Option<Duration> {
    eof.duration_since(record?.1).ok()
}

/// What the manager saw at the instant `exit` reached EOF.
#[derive(Debug, Clone, Copy)]
struct AtExit {
    /// Bytes it had read from `stdout`.
    read: usize,
    /// Bytes waiting in the `stdout` FIFO.
    in_fifo: usize,
    /// `exitcode`'s code.
    code: Option<i32>,
    /// How long after the process's exit `exit` reached EOF.
    after_exit: Option<Duration>,
}

/// The manager: reads `stdout` at [`RATE`] with [`PAUSE`]s until its EOF, watching `exit`
/// in the same loop. Returns what it saw at `exit`'s EOF (`None`: `stdout` ended first)
/// and everything it read.
fn manage(dir: &Path) -> (Option<AtExit>, Vec<u8>) {
    let exit = open_nonblocking(&dir.join("exit"));
    let mut stdout = open_nonblocking(&dir.join("stdout"));
    let began = Instant::now();
    let deadline = began + Duration::from_secs(120);
    let mut got = Vec::new();
    let mut at_exit = None;
    let mut buf = vec![0u8; CHUNK];
    let due = |read: usize| {
        began
            + Duration::from_secs_f64(read as f64 / RATE)
            + PAUSE * u32::try_from(read / PAUSE_EVERY).unwrap_or(u32::MAX)
    };
    loop {
        let now = Instant::now();
        assert!(now < deadline, "stdout never ended; read {}", got.len());
        let next = due(got.len());
        let reading = now >= next;
        let timeout = if reading {
            Duration::from_millis(1000)
        } else {
            next - now
        };
        let watch_exit = at_exit.is_none();
        let mut fds = Vec::with_capacity(2);
        if watch_exit {
            fds.push(PollFd::new(exit.as_fd(), PollFlags::POLLIN));
        }
        if reading {
            fds.push(PollFd::new(stdout.as_fd(), PollFlags::POLLIN));
        }
        let ms = u16::try_from(timeout.as_millis().max(1)).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
        let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        let exit_ready = watch_exit && ready(0);
        let stdout_ready = reading && ready(usize::from(watch_exit));
        drop(fds);
        if exit_ready {
            // Nobody writes to `exit`: readable means EOF. Count first, then look.
            let eof = SystemTime::now();
            let (read, in_fifo) = (got.len(), fionread(&stdout));
            let record = exit_record(dir);
            let seen = AtExit {
                read,
                in_fifo,
                code: record.map(|r| r.0),
                after_exit: since_exit(record, eof),
            };
            let n = (&exit).read(&mut [0u8; 16]).expect("read exit");
            assert_eq!(n, 0, "bytes on `exit`");
            at_exit = Some(seen);
        }
        if stdout_ready {
            match stdout.read(&mut buf) {
                Ok(0) => return (at_exit, got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read stdout: {e}"),
            }
        }
    }
}

/// Checks one round: at `exit`'s EOF, `exitcode` said [`CODE`] and what was read plus
/// what the FIFO held was all of `want`; all of it arrived. Returns the failure, if any.
fn check(round: &str, at_exit: Option<AtExit>, all: &[u8], want: &[u8]) -> Option<String> {
    let Some(at) = at_exit else {
        return Some(format!("{round}: stdout ended before exit did"));
    };
    eprintln!(
        "{round}: at exit's EOF ({} ms after the exit) {} bytes read, {} in the FIFO, \
         exitcode {:?}; {} bytes in all",
        at.after_exit
            .map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        at.read,
        at.in_fifo,
        at.code,
        all.len()
    );
    if all != want {
        return Some(format!("{round}: {}", describe_difference(all, want)));
    }
    if at.code != Some(CODE) {
        return Some(format!(
            "{round}: exitcode said {:?} at exit's EOF",
            at.code
        ));
    }
    if at.read + at.in_fifo != want.len() {
        return Some(format!(
            "{round}: at exit's EOF {} bytes read and {} in the FIFO: {} of {} not delivered",
            at.read,
            at.in_fifo,
            want.len() - (at.read + at.in_fifo).min(want.len()),
            want.len()
        ));
    }
    None
}

/// `exec`s of `seq` (with a terminal or with pipes), each read by [`manage`]; half the
/// rounds under busy loops on every core.
fn rounds_of_seq(tty: bool) {
    let env = StandaloneEnv::new();
    let id = env.id(if tty { "ttyx" } else { "pipex" });
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.run(&id, &bundle);
    let script = format!("seq 1 {LINES} | cat; exit {CODE}");
    let want = seq_output(LINES, tty);
    let mut failures = Vec::new();
    let rounds = rounds();
    for round in 0..rounds {
        let busy = (round % 2 == 1).then(Busy::every_core);
        let process_id = format!("p{round}");
        let process = bundle.exec_process(&["sh", "-c", &script], tty);
        env.exec(&id, &process_id, &process);
        let dir = env.process_dir(&id, &process_id);
        let (at_exit, all) = manage(&dir);
        drop(busy);
        let name = format!("round {round} (tty {tty}, busy {})", round % 2 == 1);
        failures.extend(check(&name, at_exit, &all, &want));
        env.ok("delete", &[&id, &process_id]);
    }
    assert!(
        failures.is_empty(),
        "{} of {rounds} rounds:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_tty_processs_output_is_in_its_fifo_when_exit_reaches_eof() {
    rounds_of_seq(true);
}

#[test]
fn a_piped_processs_output_is_in_its_fifo_when_exit_reaches_eof() {
    rounds_of_seq(false);
}

#[test]
fn a_tty_peas_output_is_in_its_fifo_when_exit_reaches_eof() {
    let env = StandaloneEnv::new();
    let id = env.id("peax");
    env.run(&id, &env.bundle("outer", &["sleep", "1000"]));
    let script = format!("seq 1 {LINES} | cat; exit {CODE}");
    let mut pea: Bundle = env.bundle("pea", &["sh", "-c", &script]);
    pea.config_mut()["process"]["terminal"] = json!(true);
    pea.save().unwrap();
    let want = seq_output(LINES, true);
    let mut failures = Vec::new();
    for round in 0..2 {
        let busy = (round % 2 == 1).then(Busy::every_core);
        let process_id = format!("pea{round}");
        let out = env.output(
            "exec",
            &[
                "--bundle",
                pea.path().to_str().unwrap(),
                "--tty",
                "--share",
                "net",
                &id,
                &process_id,
            ],
        );
        assert!(
            out.status.success(),
            "exec --bundle: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = env.process_dir(&id, &process_id);
        let (at_exit, all) = manage(&dir);
        drop(busy);
        failures.extend(check(&format!("pea round {round}"), at_exit, &all, &want));
        env.ok("delete", &[&id, &process_id]);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A manager that waits on `exit` and reads no output: the exit is not held for it (at
/// most the 1 s after which a reader counts as gone, from the output's last move, plus the
/// sources' 500 ms), and a manager that attaches afterwards gets every byte.
#[test]
fn an_exit_whose_output_nobody_reads_is_recorded_within_a_bound() {
    const BOUND: Duration = Duration::from_secs(3);
    let env = StandaloneEnv::new();
    let id = env.id("noreader");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.run(&id, &bundle);
    let script = format!("seq 1 {LINES} | cat; exit {CODE}");
    let want = seq_output(LINES, true);
    let process = bundle.exec_process(&["sh", "-c", &script], true);
    env.exec(&id, "p", &process);
    let dir = env.process_dir(&id, "p");
    let exit = open_nonblocking(&dir.join("exit"));
    let mut fds = [PollFd::new(exit.as_fd(), PollFlags::POLLIN)];
    let n = poll(&mut fds, PollTimeout::from(60_000u16)).expect("poll exit");
    assert_eq!(n, 1, "exit never reached EOF");
    let eof = SystemTime::now();
    let record = exit_record(&dir);
    let after = since_exit(record, eof).expect("exitcode with a time in the past");
    eprintln!(
        "nobody reading: exit's EOF {} ms after the exit",
        after.as_millis()
    );
    assert_eq!(record.map(|r| r.0), Some(CODE));
    assert!(after < BOUND, "exit's EOF {after:?} after the exit");
    let out = env.output("attach", &[&id, "p"]);
    assert_eq!(out.status.code(), Some(CODE));
    assert!(
        out.stdout == want,
        "{}",
        describe_difference(&out.stdout, &want)
    );
}

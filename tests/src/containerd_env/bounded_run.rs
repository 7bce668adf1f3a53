//! Running a command with a bound on its time: stdout and stderr collected on threads (so
//! neither pipe can fill and block it), stdin written once the caller says it may be, and
//! the command killed at the deadline with what it printed so far kept for the report.

use super::READY_TIMEOUT;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What a command printed before it was killed for taking too long.
pub(super) struct Partial {
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
}

/// Input for a command's stdin: written once `ready` says so (or after `READY_TIMEOUT`, 60 s), then the
/// pipe is closed.
pub(super) struct Input {
    pub(super) data: Vec<u8>,
    pub(super) ready: Box<dyn FnMut() -> bool + Send>,
}

/// Runs `cmd` with captured stdout and stderr, stdin from `input` or /dev/null; kills it
/// after `timeout`.
pub(super) fn run_bounded(
    mut cmd: Command,
    input: Option<Input>,
    timeout: Duration,
) -> Result<Output, Partial> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Ok(Output {
                status: ExitStatus::from_raw(127 << 8),
                stdout: Vec::new(),
                stderr: format!("spawn {cmd:?}: {e}").into_bytes(),
            })
        }
    };
    let (out, out_reader) = collect_stream(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let (err, err_reader) = collect_stream(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    if let (Some(mut input), Some(mut stdin)) = (input, child.stdin.take()) {
        thread::spawn(move || {
            let deadline = Instant::now() + READY_TIMEOUT;
            while !(input.ready)() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
            let _ = stdin.write_all(&input.data);
            // Dropping stdin closes the pipe: EOF for ctr.
        });
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => break None,
        }
    };
    let take =
        |b: &Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().unwrap_or_else(|p| p.into_inner()));
    match status {
        Some(status) => {
            for r in [out_reader, err_reader].into_iter().flatten() {
                let _ = r.join();
            }
            Ok(Output {
                status,
                stdout: take(&out),
                stderr: take(&err),
            })
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            // Give the readers a moment to drain; do not join (a grandchild may hold the
            // pipes open).
            thread::sleep(Duration::from_millis(100));
            Err(Partial {
                stdout: take(&out),
                stderr: take(&err),
            })
        }
    }
}

/// Reads `stream` (if any) to EOF on a thread, into a shared buffer the caller can look
/// at while the reading goes on.
pub(super) fn collect_stream(
    stream: Option<Box<dyn Read + Send>>,
) -> (Arc<Mutex<Vec<u8>>>, Option<thread::JoinHandle<()>>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buf);
    let handle = stream.map(|mut s| {
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = s.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&chunk[..n]);
            }
        })
    });
    (buf, handle)
}

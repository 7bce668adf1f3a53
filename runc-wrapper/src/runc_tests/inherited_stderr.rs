//! runc's stderr for the verbs that hand their stdio to the process: read from a pipe of
//! this crate's when the process has a terminal (bounded, and not waiting for what runc
//! left running), or from [`ProcessIo::stderr_reader`] after a failure without one.

use super::fake_runc::{Fake, NOPE, NOPE_LINE};
use crate::{CreateOpts, Error, ProcessIo};
use std::time::{Duration, Instant};

/// What the fake runtimes below print as their reason for failing.
const REASON: &str = "my-runtime: cannot frobnicate the bundle";

/// A `create` with a console socket (the process has a terminal), failing.
fn tty_create(f: &Fake) -> Error {
    f.runc
        .create(
            "c1",
            f.dir.path(),
            CreateOpts {
                console_socket: Some(f.path("console.sock")),
                ..Default::default()
            },
        )
        .unwrap_err()
}

#[test]
fn a_create_with_a_terminal_reports_runcs_stderr_when_the_log_has_nothing() {
    let f = Fake::new(
        &format!("echo 'some noise' >&2; echo '{REASON}' >&2; exit 1"),
        true,
    );
    assert_eq!(tty_create(&f).runtime_message(), Some(REASON));
    // The log still comes first.
    let f = Fake::new(
        &format!("printf '%s\\n' '{NOPE_LINE}' >> \"$LOG\"\necho '{REASON}' >&2; exit 1"),
        true,
    );
    assert_eq!(tty_create(&f).runtime_message(), Some(NOPE));
}

#[test]
fn a_runtime_writing_much_to_stderr_neither_blocks_nor_grows_the_message() {
    // 1 MiB, far more than a pipe holds, then the reason.
    let f = Fake::new(
        &format!(
            "head -c 1048576 /dev/zero | tr '\\0' x >&2; echo >&2; echo '{REASON}' >&2; exit 1"
        ),
        false,
    );
    let started = Instant::now();
    assert_eq!(tty_create(&f).runtime_message(), Some(REASON));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn stderr_held_open_by_what_runc_left_does_not_hold_the_call() {
    let f = Fake::new(&format!("sleep 3 & echo '{REASON}' >&2; exit 1"), false);
    let started = Instant::now();
    assert_eq!(tty_create(&f).runtime_message(), Some(REASON));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited for the pipe's EOF: {:?}",
        started.elapsed()
    );
}

/// `create` with `io` as runc's stdio.
fn create_with_io(f: &Fake, io: ProcessIo) -> Error {
    f.runc
        .create(
            "c1",
            f.dir.path(),
            CreateOpts {
                io,
                ..Default::default()
            },
        )
        .unwrap_err()
}

#[test]
fn a_create_without_a_terminal_reads_its_stderr_pipe_after_a_failure() {
    let f = Fake::new(&format!("echo '{REASON}' >&2; exit 1"), true);
    let (r, w) = nix::unistd::pipe().unwrap();
    let io = ProcessIo {
        stderr: Some(w),
        stderr_reader: Some(r.try_clone().unwrap()),
        ..Default::default()
    };
    assert_eq!(create_with_io(&f, io).runtime_message(), Some(REASON));
    // Without a reader: the status, as before.
    let (_r2, w2) = nix::unistd::pipe().unwrap();
    let io = ProcessIo {
        stderr: Some(w2),
        ..Default::default()
    };
    assert_eq!(
        create_with_io(&f, io).runtime_message(),
        Some("exit status 1")
    );
}

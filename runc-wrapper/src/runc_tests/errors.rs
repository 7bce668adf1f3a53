//! How a failing runc becomes an [`Error`]: its message from this invocation's log lines,
//! else its stderr, a kill by a signal, output that does not parse, a verb it lacks, and
//! when `run`'s exit status is the container's exit code rather than a failure.

use super::fake_runc::{Fake, NOPE, NOPE_LINE};
use crate::{CreateOpts, Error, RestoreOpts};
use std::fs;

#[test]
fn create_error_from_log() {
    let f = Fake::new(
        &format!("printf '%s\\n' '{NOPE_LINE}' >> \"$LOG\"\necho 'ignored stderr' >&2\nexit 1"),
        true,
    );
    let e = f
        .runc
        .create("c1", f.dir.path(), CreateOpts::default())
        .unwrap_err();
    match &e {
        Error::Runtime {
            command,
            status,
            message,
        } => {
            assert_eq!(*command, "create");
            assert_eq!(*status, Some(1));
            assert_eq!(message, NOPE);
        }
        other => panic!("{other}"),
    }
    assert_eq!(e.to_string(), format!("runc create failed: {NOPE}"));
    assert_eq!(e.runtime_message(), Some(NOPE));
}

#[test]
fn only_this_invocations_log_lines_count() {
    let f = Fake::new("exit 2", true);
    fs::write(f.path("log.json"), format!("{NOPE_LINE}\n")).unwrap();
    let e = f
        .runc
        .create("c1", f.dir.path(), CreateOpts::default())
        .unwrap_err();
    assert_eq!(e.runtime_message(), Some("exit status 2"));
    let e = f.runc.start("c1").unwrap_err();
    assert_eq!(e.runtime_message(), Some("exit status 2"));
}

#[test]
fn killed_by_signal() {
    let f = Fake::new("kill -9 $$", false);
    let e = f.runc.pause("c1").unwrap_err();
    assert!(
        matches!(&e, Error::Runtime { command: "pause", status: None, message } if message == "killed by signal 9"),
        "{e:?}"
    );
    let e = f
        .runc
        .run("c1", f.dir.path(), CreateOpts::default())
        .unwrap_err();
    assert_eq!(e.runtime_message(), Some("killed by signal 9"));
}

#[test]
fn stderr_message_without_log() {
    let f = Fake::new(
        "echo 'time=\"2024-01-01T00:00:00Z\" level=error msg=\"container does not exist\"' >&2; exit 1",
        false,
    );
    for e in [
        f.runc.state("c1").unwrap_err(),
        f.runc.kill("c1", 15, false).unwrap_err(),
        f.runc.delete("c1", false).unwrap_err(),
        f.runc.ps("c1").unwrap_err(),
        f.runc.stats("c1").unwrap_err(),
        f.runc.resume("c1").unwrap_err(),
        f.runc.update("c1", b"{}").unwrap_err(),
    ] {
        assert!(e.is_not_found(), "{e}");
        assert_eq!(e.runtime_message(), Some("container does not exist"));
    }
    // Verbs with inherited stdio never capture stderr.
    let e = f
        .runc
        .create("c1", f.dir.path(), CreateOpts::default())
        .unwrap_err();
    assert_eq!(e.runtime_message(), Some("exit status 1"));
}

#[test]
fn log_is_preferred_over_stderr() {
    let f = Fake::new(
        "echo '{\"level\":\"error\",\"msg\":\"container does not exist\"}' >> \"$LOG\"; echo 'plain stderr' >&2; exit 1",
        true,
    );
    let e = f.runc.state("c1").unwrap_err();
    assert_eq!(e.runtime_message(), Some("container does not exist"));
    assert!(e.is_not_found());
    // No log line: the stderr line is used.
    let f = Fake::new("echo 'plain stderr' >&2; exit 1", true);
    let e = f.runc.state("c1").unwrap_err();
    assert_eq!(e.runtime_message(), Some("plain stderr"));
}

#[test]
fn garbage_output_is_a_parse_error() {
    let f = Fake::new("echo 'this is not json'", false);
    let e = f.runc.state("c1").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Parse {
                command: "state",
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        f.runc.list(),
        Err(Error::Parse {
            command: "list",
            ..
        })
    ));
    assert!(matches!(
        f.runc.ps("c1"),
        Err(Error::Parse { command: "ps", .. })
    ));
    assert!(matches!(
        f.runc.stats("c1"),
        Err(Error::Parse {
            command: "events",
            ..
        })
    ));
    assert!(matches!(
        f.runc.features(),
        Err(Error::Parse {
            command: "features",
            ..
        })
    ));
    let f = Fake::new("exit 0", false);
    assert!(matches!(f.runc.state("c1"), Err(Error::Parse { .. })));
}

#[test]
fn features_missing_is_a_runtime_error() {
    let f = Fake::new(
        "echo 'No help topic for '\"'\"'features'\"'\"'' >&2; exit 3",
        false,
    );
    let e = f.runc.features().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Runtime {
                command: "features",
                status: Some(3),
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.runtime_message(), Some("No help topic for 'features'"));
}

#[test]
fn run_exit_codes() {
    // Container exit code, no runc error logged.
    let f = Fake::new("exit 3", true);
    assert_eq!(
        f.runc
            .run("c1", f.dir.path(), CreateOpts::default())
            .unwrap(),
        3
    );
    assert_eq!(
        f.runc
            .restore(
                "c1",
                f.dir.path(),
                RestoreOpts {
                    image_path: "/i".into(),
                    ..Default::default()
                }
            )
            .unwrap(),
        3
    );
    // Detached: any failure is an error.
    let e = f
        .runc
        .run(
            "c1",
            f.dir.path(),
            CreateOpts {
                detach: true,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.runtime_message(), Some("exit status 3"));
    // runc logged an error: it is runc's failure, not the container's exit code.
    let f = Fake::new(
        &format!("printf '%s\\n' '{NOPE_LINE}' >> \"$LOG\"; exit 1"),
        true,
    );
    let e = f
        .runc
        .run("c1", f.dir.path(), CreateOpts::default())
        .unwrap_err();
    assert!(
        matches!(&e, Error::Runtime { command: "run", status: Some(1), message } if message == NOPE),
        "{e}"
    );
    let f = Fake::new("exit 0", true);
    assert_eq!(
        f.runc
            .run(
                "c1",
                f.dir.path(),
                CreateOpts {
                    detach: true,
                    ..Default::default()
                }
            )
            .unwrap(),
        0
    );
}

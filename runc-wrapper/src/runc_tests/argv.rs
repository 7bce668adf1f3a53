//! The command lines [`Runc`] builds for every verb with and without global options, the ids
//! and paths it refuses before it spawns anything, a binary that cannot be run, and that
//! handles can be shared between threads.

use crate::{CheckpointOpts, CreateOpts, Error, ExecOpts, RestoreOpts, Runc};
use std::ffi::OsString;
use std::path::Path;

/// `args` as `&str`s, to compare with literals.
fn strs(args: &[OsString]) -> Vec<&str> {
    args.iter().map(|a| a.to_str().unwrap()).collect()
}

/// A [`Runc`] with every global option set.
fn full() -> Runc {
    Runc::builder()
        .binary("/usr/bin/crun")
        .root("/run/r")
        .log("/l/log.json")
        .systemd_cgroup(true)
        .criu("/sbin/criu")
        .debug(true)
        .build()
}

/// The global options of [`full`], as they lead every command line.
const GLOBAL: [&str; 10] = [
    "--root",
    "/run/r",
    "--log",
    "/l/log.json",
    "--log-format",
    "json",
    "--systemd-cgroup",
    "--criu",
    "/sbin/criu",
    "--debug",
];

/// [`GLOBAL`] followed by `rest`.
fn with_global(rest: &[&str]) -> Vec<String> {
    GLOBAL.iter().chain(rest).map(|s| s.to_string()).collect()
}

#[test]
fn defaults_and_accessors() {
    let r = Runc::new();
    assert_eq!(r.binary(), Path::new("runc"));
    assert_eq!(r.root(), None);
    assert_eq!(r.log_path(), None);
    assert_eq!(strs(&r.args("state")), ["state"]);
    let r = Runc::default();
    assert_eq!(r.binary(), Path::new("runc"));
    let r = full();
    assert_eq!(r.binary(), Path::new("/usr/bin/crun"));
    assert_eq!(r.root(), Some(Path::new("/run/r")));
    assert_eq!(r.log_path(), Some(Path::new("/l/log.json")));
    assert_eq!(strs(&r.args("state")), with_global(&["state"]));
    let r = Runc::builder()
        .systemd_cgroup(true)
        .systemd_cgroup(false)
        .debug(false)
        .build();
    assert_eq!(strs(&r.args("list")), ["list"]);
}

#[test]
fn argv_every_verb() {
    let r = full();
    let b = Path::new("/bundle");
    let a = r
        .create_args(
            "c1",
            b,
            &CreateOpts {
                pid_file: Some("/p".into()),
                detach: true,
                extra_args: vec!["--preserve-fds".into(), "2".into()],
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        strs(&a),
        with_global(&[
            "create",
            "--bundle",
            "/bundle",
            "--pid-file",
            "/p",
            "--preserve-fds",
            "2",
            "c1"
        ])
    );
    let a = r
        .run_args(
            "c1",
            b,
            &CreateOpts {
                detach: true,
                console_socket: Some("/s".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        strs(&a),
        with_global(&[
            "run",
            "--bundle",
            "/bundle",
            "--detach",
            "--console-socket",
            "/s",
            "c1"
        ])
    );
    let a = r.exec_args(
        "c1",
        Path::new("/t/p.json"),
        &ExecOpts {
            detach: true,
            pid_file: Some("/p".into()),
            ..Default::default()
        },
    );
    assert_eq!(
        strs(&a),
        with_global(&[
            "exec",
            "--process",
            "/t/p.json",
            "--detach",
            "--pid-file",
            "/p",
            "c1"
        ])
    );
    for verb in ["start", "state", "pause", "resume"] {
        assert_eq!(
            strs(&r.simple_args(verb, "c1").unwrap()),
            with_global(&[verb, "c1"])
        );
    }
    assert_eq!(
        strs(&r.kill_args("c1", 9, false).unwrap()),
        with_global(&["kill", "c1", "9"])
    );
    assert_eq!(
        strs(&r.kill_args("c1", 15, true).unwrap()),
        with_global(&["kill", "--all", "c1", "15"])
    );
    assert!(matches!(
        r.kill_args("c1", -1, true),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(
        strs(&r.delete_args("c1", false).unwrap()),
        with_global(&["delete", "c1"])
    );
    assert_eq!(
        strs(&r.delete_args("c1", true).unwrap()),
        with_global(&["delete", "--force", "c1"])
    );
    assert_eq!(
        strs(&r.list_args()),
        with_global(&["list", "--format", "json"])
    );
    assert_eq!(
        strs(&r.ps_args("c1").unwrap()),
        with_global(&["ps", "--format", "json", "c1"])
    );
    assert_eq!(
        strs(&r.update_args("c1").unwrap()),
        with_global(&["update", "--resources", "-", "c1"])
    );
    let a = r
        .checkpoint_args(
            "c1",
            &CheckpointOpts {
                image_path: "/img".into(),
                leave_running: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        strs(&a),
        with_global(&[
            "checkpoint",
            "--image-path",
            "/img",
            "--leave-running",
            "c1"
        ])
    );
    let a = r
        .restore_args(
            "c1",
            b,
            &RestoreOpts {
                image_path: "/img".into(),
                detach: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        strs(&a),
        with_global(&[
            "restore",
            "--bundle",
            "/bundle",
            "--image-path",
            "/img",
            "--detach",
            "c1"
        ])
    );
    assert_eq!(
        strs(&r.stats_args("c1").unwrap()),
        with_global(&["events", "--stats", "c1"])
    );
    assert_eq!(strs(&r.args("features")), with_global(&["features"]));
}

#[test]
fn bad_ids_and_paths_are_rejected_before_spawning() {
    // The binary does not exist: reaching the spawn would give Error::Spawn instead.
    let r = Runc::builder().binary("/nonexistent/runc").build();
    let b = Path::new("/b");
    for id in ["", "-x", "--help", "a\0b"] {
        let errs = [
            r.create(id, b, CreateOpts::default()).unwrap_err(),
            r.run(id, b, CreateOpts::default()).unwrap_err(),
            r.start(id).unwrap_err(),
            r.exec(id, b"{}", ExecOpts::default()).unwrap_err(),
            r.kill(id, 9, false).unwrap_err(),
            r.delete(id, true).unwrap_err(),
            r.state(id).unwrap_err(),
            r.ps(id).unwrap_err(),
            r.pause(id).unwrap_err(),
            r.resume(id).unwrap_err(),
            r.update(id, b"{}").unwrap_err(),
            r.stats(id).unwrap_err(),
            r.checkpoint(
                id,
                &CheckpointOpts {
                    image_path: "/i".into(),
                    ..Default::default()
                },
            )
            .unwrap_err(),
            r.restore(
                id,
                b,
                RestoreOpts {
                    image_path: "/i".into(),
                    ..Default::default()
                },
            )
            .unwrap_err(),
        ];
        for e in errs {
            assert!(matches!(e, Error::InvalidArgument(_)), "{id:?}: {e}");
        }
    }
    assert!(matches!(
        r.checkpoint("ok", &CheckpointOpts::default()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        r.restore("ok", b, RestoreOpts::default()),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn spawn_error() {
    let r = Runc::builder().binary("/nonexistent/runc").build();
    let e = r.state("c1").unwrap_err();
    assert!(matches!(e, Error::Spawn { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "cannot run runc binary \"/nonexistent/runc\": No such file or directory (os error 2)"
    );
    let e = r
        .create("c1", Path::new("/b"), CreateOpts::default())
        .unwrap_err();
    assert!(matches!(e, Error::Spawn { .. }), "{e}");
    let e = r.version().unwrap_err();
    assert!(matches!(e, Error::Spawn { .. }), "{e}");
}

#[test]
fn handles_are_shareable() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
    assert_send_sync::<Runc>();
    assert_error::<Error>();
}

//! Tests for [`Runc`]: argv construction (nothing is run), error paths against fake runc shell
//! scripts, and a smoke test against the real runc when available.

use super::*;
use crate::io::ProcessIo;
use crate::spawn::{RuntimeChild, RuntimeCommand};
use crate::ContainerStatus;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

fn strs(args: &[OsString]) -> Vec<&str> {
    args.iter().map(|a| a.to_str().unwrap()).collect()
}

// ---------------------------------------------------------------------------------------------
// argv construction

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

// ---------------------------------------------------------------------------------------------
// fake runc scripts

/// Retries spawning on ETXTBSY: a script just written by one test thread may still be open for
/// writing in a child forked concurrently by another.
#[derive(Debug)]
struct RetryMonitor;

impl ProcessMonitor for RetryMonitor {
    fn start(&self, cmd: &RuntimeCommand) -> std::io::Result<RuntimeChild> {
        let mut tries = 0;
        loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => return r,
            }
        }
    }

    fn wait(&self, child: &mut RuntimeChild) -> std::io::Result<ExitStatus> {
        child.wait()
    }
}

struct Fake {
    dir: tempfile::TempDir,
    runc: Runc,
}

impl Fake {
    /// A fake runc running `body` (sh), with `$LOG` set to the value after `--log` and `$D` to the
    /// temp dir, and the positional args after the global options left in `$@`.
    fn new(body: &str, with_log: bool) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("runc");
        let text = format!(
            "#!/bin/sh\nD='{d}'\nLOG=\nwhile [ $# -gt 0 ]; do case \"$1\" in\n  --log) LOG=\"$2\"; shift 2;;\n  --log-format|--root|--criu) shift 2;;\n  --debug|--systemd-cgroup) shift;;\n  *) break;;\nesac; done\n{body}\n",
            d = dir.path().display()
        );
        fs::write(&script, text).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let mut b = Runc::builder()
            .binary(&script)
            .root(dir.path().join("root"))
            .monitor(Arc::new(RetryMonitor));
        if with_log {
            b = b.log(dir.path().join("log.json"));
        }
        Fake {
            runc: b.build(),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

const NOPE_LINE: &str = r#"{"level":"error","msg":"exec: \"nope\": executable file not found in $PATH","time":"2024-01-01T00:00:00Z"}"#;
const NOPE: &str = "exec: \"nope\": executable file not found in $PATH";

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
fn output_verbs_parse() {
    let f = Fake::new(
        r#"case "$1" in
  list) echo null;;
  ps) echo '[12,34]';;
  state) echo '{"ociVersion":"1.0.2","id":"'"$2"'","pid":7,"status":"paused","bundle":"/b","rootfs":"/b/rootfs","created":"t","owner":""}';;
  events) echo '{"type":"stats","id":"x","data":{"pids":{"current":3}}}';;
  features) echo '{"ociVersionMin":"1.0.0"}';;
  --version) printf 'runc version 9.9\ncommit: abc\n';;
  *) exit 3;;
esac"#,
        false,
    );
    assert!(f.runc.list().unwrap().is_empty());
    assert_eq!(f.runc.ps("c1").unwrap(), vec![12, 34]);
    let s = f.runc.state("c9").unwrap();
    assert_eq!(
        (s.id.as_str(), s.pid, s.status),
        ("c9", 7, ContainerStatus::Paused)
    );
    assert_eq!(f.runc.stats("c1").unwrap().pids.current, 3);
    assert_eq!(
        f.runc.features().unwrap(),
        b"{\"ociVersionMin\":\"1.0.0\"}\n"
    );
    assert_eq!(f.runc.version().unwrap(), "runc version 9.9\ncommit: abc");
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
fn large_stdout_and_stderr_do_not_deadlock() {
    // 2 MB on each stream, interleaved in time: a sequential reader would block forever.
    let f = Fake::new(
        "head -c 2000000 /dev/zero | tr '\\0' e >&2 &\nprintf '\"'; head -c 2000000 /dev/zero | tr '\\0' a; printf '\"'\nwait",
        false,
    );
    let out = f.runc.features().unwrap();
    assert_eq!(out.len(), 2_000_002);
}

#[test]
fn update_writes_stdin_verbatim() {
    let f = Fake::new(
        "cat > \"$D/stdin.out\"; echo \"$@\" > \"$D/args.out\"",
        false,
    );
    let json = br#"{"memory":{"limit":1048576},"pids":{"limit":5}}"#;
    f.runc.update("c1", json).unwrap();
    assert_eq!(fs::read(f.path("stdin.out")).unwrap(), json);
    assert_eq!(
        fs::read_to_string(f.path("args.out")).unwrap(),
        "update --resources - c1\n"
    );
    // Big input.
    let big = vec![b'x'; 1 << 20];
    f.runc.update("c1", &big).unwrap();
    assert_eq!(fs::read(f.path("stdin.out")).unwrap(), big);
    // typed form
    let res = oci_spec::runtime::LinuxResourcesBuilder::default()
        .pids(
            oci_spec::runtime::LinuxPidsBuilder::default()
                .limit(5)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    f.runc.update_resources("c1", &res).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(f.path("stdin.out")).unwrap()).unwrap();
    assert_eq!(v["pids"]["limit"], 5);
}

#[test]
fn update_child_not_reading_stdin() {
    let f = Fake::new("echo 'bad resources' >&2; exit 1", false);
    let big = vec![b'x'; 4 << 20];
    let e = f.runc.update("c1", &big).unwrap_err();
    assert_eq!(e.runtime_message(), Some("bad resources"));
}

#[test]
fn exec_temp_file_is_passed_and_removed() {
    for (code, detach) in [(0, true), (1, false)] {
        let f = Fake::new(
            &format!(
                "[ \"$1\" = exec ] || exit 9\nP=\"$3\"\necho \"$@\" > \"$D/args.out\"\ncp \"$P\" \"$D/copy.json\"\necho \"$P\" > \"$D/path.out\"\nexit {code}"
            ),
            false,
        );
        let pdir = f.path("procs");
        fs::create_dir(&pdir).unwrap();
        let json = br#"{"args":["true"],"cwd":"/","terminal":false,"user":{"uid":0,"gid":0}}"#;
        let r = f.runc.exec(
            "c1",
            json,
            ExecOpts {
                detach,
                process_dir: Some(pdir.clone()),
                ..Default::default()
            },
        );
        assert_eq!(r.is_ok(), code == 0, "{r:?}");
        if let Err(e) = r {
            assert!(
                matches!(
                    &e,
                    Error::Runtime {
                        command: "exec",
                        status: Some(1),
                        ..
                    }
                ),
                "{e}"
            );
        }
        assert_eq!(fs::read(f.path("copy.json")).unwrap(), json);
        let p = fs::read_to_string(f.path("path.out")).unwrap();
        let p = Path::new(p.trim_end());
        assert!(p.starts_with(&pdir), "{p:?}");
        assert!(!p.exists());
        assert_eq!(fs::read_dir(&pdir).unwrap().count(), 0);
        let args = fs::read_to_string(f.path("args.out")).unwrap();
        let expect = if detach {
            format!("exec --process {} --detach c1\n", p.display())
        } else {
            format!("exec --process {} c1\n", p.display())
        };
        assert_eq!(args, expect);
    }
}

#[test]
fn exec_without_a_process_dir_passes_a_memfd_that_runc_can_read() {
    let f = Fake::new(
        "[ \"$1\" = exec ] || exit 9\nP=\"$3\"\ncp \"$P\" \"$D/copy.json\"\necho \"$P\" > \"$D/path.out\"\nls -l /proc/$$/fd > \"$D/fds.out\" 2>&1\nexit 0",
        false,
    );
    let json = br#"{"args":["true"],"cwd":"/","terminal":false,"user":{"uid":0,"gid":0}}"#;
    f.runc
        .exec(
            "c1",
            json,
            ExecOpts {
                detach: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(fs::read(f.path("copy.json")).unwrap(), json);
    let p = fs::read_to_string(f.path("path.out")).unwrap();
    let prefix = format!("/proc/{}/fd/", std::process::id());
    assert!(p.starts_with(&prefix), "{p:?}");
    // Close-on-exec: runc reopens it, it does not inherit it.
    let fds = fs::read_to_string(f.path("fds.out")).unwrap();
    assert!(!fds.contains("memfd:runc-process"), "{fds}");
    // Closed once runc is done.
    assert!(!Path::new(p.trim_end()).exists(), "{p:?} still open");
}

#[test]
fn exec_process_serialises_oci_process() {
    let f = Fake::new("cp \"$3\" \"$D/copy.json\"", false);
    let process = oci_spec::runtime::ProcessBuilder::default()
        .args(vec!["sh".to_string(), "-c".to_string(), "true".to_string()])
        .cwd("/")
        .build()
        .unwrap();
    f.runc
        .exec_process(
            "c1",
            &process,
            ExecOpts {
                process_dir: Some(f.dir.path().to_owned()),
                ..Default::default()
            },
        )
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(f.path("copy.json")).unwrap()).unwrap();
    assert_eq!(v["args"], serde_json::json!(["sh", "-c", "true"]));
}

#[test]
fn inherited_io_is_used_and_not_waited_on() {
    // The script leaves a background process holding its stdout/stderr open: if the wrapper
    // piped them it would wait for that process.
    let f = Fake::new("echo out; echo err >&2; sleep 5 & exit 0", false);
    let out = fs::File::create(f.path("out")).unwrap();
    let err = fs::File::create(f.path("err")).unwrap();
    let start = Instant::now();
    f.runc
        .create(
            "c1",
            f.dir.path(),
            CreateOpts {
                io: ProcessIo::from_fds(None, Some(out.into()), Some(err.into())),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(4));
    assert_eq!(fs::read_to_string(f.path("out")).unwrap(), "out\n");
    assert_eq!(fs::read_to_string(f.path("err")).unwrap(), "err\n");
    // And with None => /dev/null.
    let start = Instant::now();
    f.runc
        .create("c1", f.dir.path(), CreateOpts::default())
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(4));
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

#[test]
fn checkpoint_and_simple_verbs_succeed() {
    let f = Fake::new("echo \"$@\" >> \"$D/args.out\"", false);
    f.runc
        .checkpoint(
            "c1",
            &CheckpointOpts {
                image_path: "/img".into(),
                ..Default::default()
            },
        )
        .unwrap();
    f.runc.start("c1").unwrap();
    f.runc.kill("c1", 9, true).unwrap();
    f.runc.delete("c1", true).unwrap();
    f.runc.pause("c1").unwrap();
    f.runc.resume("c1").unwrap();
    assert_eq!(
        fs::read_to_string(f.path("args.out")).unwrap(),
        "checkpoint --image-path /img c1\nstart c1\nkill --all c1 9\ndelete --force c1\npause c1\nresume c1\n"
    );
}

#[test]
fn custom_monitor_is_used() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    #[derive(Debug, Default)]
    struct Counting {
        started: AtomicUsize,
        waited: AtomicUsize,
    }
    impl ProcessMonitor for Counting {
        fn start(&self, cmd: &RuntimeCommand) -> std::io::Result<RuntimeChild> {
            self.started.fetch_add(1, Ordering::SeqCst);
            RetryMonitor.start(cmd)
        }
        fn wait(&self, child: &mut RuntimeChild) -> std::io::Result<ExitStatus> {
            self.waited.fetch_add(1, Ordering::SeqCst);
            child.wait()
        }
    }
    let f = Fake::new("echo '[1]'", false);
    let m = Arc::new(Counting::default());
    let r = Runc::builder()
        .binary(f.runc.binary())
        .monitor(m.clone())
        .build();
    assert_eq!(r.ps("c1").unwrap(), vec![1]);
    r.create("c1", f.dir.path(), CreateOpts::default()).unwrap();
    r.exec(
        "c1",
        b"{}",
        ExecOpts {
            process_dir: Some(f.dir.path().to_owned()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(m.started.load(Ordering::SeqCst), 3);
    assert_eq!(m.waited.load(Ordering::SeqCst), 3);
}

// ---------------------------------------------------------------------------------------------
// real runc

fn real_runc_available() -> bool {
    Path::new("/usr/bin/runc").exists()
        && Path::new("/bin/busybox").exists()
        && nix::unistd::geteuid().is_root()
}

/// Force-deletes the container on drop, even when the test panics.
struct Cleanup<'a> {
    runc: &'a Runc,
    ids: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.runc.delete(id, true);
        }
    }
}

fn make_bundle(dir: &Path, rootfs: &Path, args: &[&str]) {
    fs::create_dir_all(dir).unwrap();
    let _ = fs::remove_file(dir.join("config.json"));
    let status = Command::new("/usr/bin/runc")
        .args(["spec", "--bundle"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
    let path = dir.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(args);
    spec["root"]["path"] = rootfs.to_str().unwrap().into();
    fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
}

#[test]
fn smoke_real_runc() {
    if !real_runc_available() {
        test_skip::skip("needs root, /usr/bin/runc and /bin/busybox");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for l in ["sh", "sleep", "true"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(l)).unwrap();
    }
    let bundle = tmp.path().join("bundle");
    make_bundle(&bundle, &rootfs, &["sleep", "100"]);
    let runc = Runc::builder()
        .binary("/usr/bin/runc")
        .root(tmp.path().join("root"))
        .log(tmp.path().join("log.json"))
        .build();
    let id = format!("rw-smoke-{}", std::process::id());
    let run_id = format!("{id}-run");
    let _cleanup = Cleanup {
        runc: &runc,
        ids: vec![id.clone(), run_id.clone()],
    };

    assert!(runc.version().unwrap().starts_with("runc version"));
    assert!(runc.list().unwrap().is_empty());
    let e = runc.state(&id).unwrap_err();
    assert!(e.is_not_found(), "{e}");

    let pid_file = tmp.path().join("pid");
    runc.create(
        &id,
        &bundle,
        CreateOpts {
            pid_file: Some(pid_file.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let st = runc.state(&id).unwrap();
    assert_eq!(st.status, ContainerStatus::Created);
    assert_eq!(st.id, id);
    assert_eq!(
        fs::read_to_string(&pid_file).unwrap().trim(),
        st.pid.to_string()
    );
    runc.start(&id).unwrap();
    assert_eq!(runc.state(&id).unwrap().status, ContainerStatus::Running);
    let pids = runc.ps(&id).unwrap();
    assert!(pids.contains(&st.pid), "{pids:?} {}", st.pid);
    let list = runc.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, id);
    let stats = runc.stats(&id).unwrap();
    assert!(stats.pids.current >= 1);
    assert!(runc.features().unwrap().starts_with(b"{"));

    runc.pause(&id).unwrap();
    assert_eq!(runc.state(&id).unwrap().status, ContainerStatus::Paused);
    runc.resume(&id).unwrap();
    assert_eq!(runc.state(&id).unwrap().status, ContainerStatus::Running);

    runc.update(&id, br#"{"pids":{"limit":50}}"#).unwrap();
    assert_eq!(runc.stats(&id).unwrap().pids.limit, 50);

    let process = |args: &[&str]| {
        serde_json::to_vec(&serde_json::json!({
            "args": args, "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}
        }))
        .unwrap()
    };
    let e = runc
        .exec(
            &id,
            &process(&["nope"]),
            ExecOpts {
                detach: true,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Runtime {
                command: "exec",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.runtime_message()
            .unwrap()
            .contains("executable file not found"),
        "{e}"
    );
    runc.exec(&id, &process(&["true"]), ExecOpts::default())
        .unwrap();
    let e = runc
        .exec(&id, &process(&["sh", "-c", "exit 7"]), ExecOpts::default())
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Runtime {
                status: Some(7),
                ..
            }
        ),
        "{e}"
    );

    runc.kill(&id, libc::SIGKILL, false).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while runc.state(&id).unwrap().status != ContainerStatus::Stopped {
        assert!(Instant::now() < deadline, "container did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    runc.delete(&id, false).unwrap();
    let e = runc.state(&id).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let e = runc.delete(&id, false).unwrap_err();
    assert!(e.is_not_found(), "{e}");

    // Foreground run returns the container's exit code.
    let bundle2 = tmp.path().join("bundle2");
    make_bundle(&bundle2, &rootfs, &["sh", "-c", "exit 3"]);
    assert_eq!(
        runc.run(&run_id, &bundle2, CreateOpts::default()).unwrap(),
        3
    );
    // And a runc failure while running is an error, not an exit code.
    make_bundle(&bundle2, &rootfs, &["nope"]);
    let e = runc
        .run(&run_id, &bundle2, CreateOpts::default())
        .unwrap_err();
    assert!(
        e.runtime_message()
            .unwrap()
            .contains("executable file not found"),
        "{e}"
    );
    assert!(runc.list().unwrap().is_empty());
}

#[test]
fn handles_are_shareable() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
    assert_send_sync::<Runc>();
    assert_error::<Error>();
}

#[test]
fn no_fds_leak_into_runc() {
    let f = Fake::new("ls -l /proc/$$/fd > \"$D/fds.$1\" 2>&1", false);
    let console = crate::ConsoleSocket::new_in(f.dir.path()).unwrap();
    f.runc.start("c1").unwrap();
    f.runc
        .exec(
            "c1",
            b"{}",
            ExecOpts {
                console_socket: Some(console.path().to_owned()),
                process_dir: Some(f.dir.path().to_owned()),
                ..Default::default()
            },
        )
        .unwrap();
    for verb in ["start", "exec"] {
        let fds = fs::read_to_string(f.path(&format!("fds.{verb}"))).unwrap();
        assert!(!fds.contains("socket:"), "{verb}: {fds}");
        assert!(!fds.contains(".runc-process-"), "{verb}: {fds}");
    }
}

// ---------------------------------------------------------------------------------------------
// deadlines

/// A fake runc that, for `verb`, writes its pid and its `sleep` child's to `$D/pids` and hangs;
/// every verb it was called with goes to `$D/verbs`.
fn hanging(verb: &str) -> Fake {
    Fake::new(
        &format!(
            "echo \"$1\" >> \"$D/verbs\"\n[ \"$1\" = {verb} ] && sh -c 'echo $PPID $$ >> \"$1\"; exec sleep 30' - \"$D/pids\"\nexit 0"
        ),
        false,
    )
}

fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn pids_of(f: &Fake) -> Vec<i32> {
    fs::read_to_string(f.path("pids"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

#[test]
fn a_runc_past_its_deadline_is_killed_with_its_children() {
    for verb in ["kill", "pause", "update"] {
        let f = hanging(verb);
        let runc = f
            .runc
            .with_deadline(Instant::now() + Duration::from_millis(300));
        let started = Instant::now();
        let e = match verb {
            "kill" => runc.kill("c1", 9, false),
            "pause" => runc.pause("c1"),
            _ => runc.update("c1", b"{}"),
        }
        .unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(&e, Error::DeadlineExceeded { command, ran: Some(_), .. } if *command == verb),
            "{e:?}"
        );
        assert_eq!(e.kind(), crate::ErrorKind::DeadlineExceeded);
        assert!(took < Duration::from_secs(5), "{verb}: {took:?}");
        let pids = pids_of(&f);
        assert_eq!(pids.len(), 2, "{verb}: the fake ran its sleep");
        // The wrapper is reaped; its sleep child (the same process group) was killed.
        let until = Instant::now() + Duration::from_secs(2);
        while pids.iter().any(|p| alive(*p)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!pids.iter().any(|p| alive(*p)), "{verb}: {pids:?} left");
    }
}

#[test]
fn a_passed_deadline_runs_nothing_and_none_waits() {
    let f = hanging("never");
    let past = f.runc.with_deadline(Instant::now());
    let e = past.pause("c1").unwrap_err();
    assert!(
        matches!(
            &e,
            Error::DeadlineExceeded {
                command: "pause",
                ran: None,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!f.path("verbs").exists(), "runc was started");
    // No deadline: as before; a far one changes nothing for a runc that finishes.
    f.runc.pause("c1").unwrap();
    f.runc
        .with_deadline(Instant::now() + Duration::from_secs(60))
        .resume("c1")
        .unwrap();
    assert_eq!(
        fs::read_to_string(f.path("verbs")).unwrap(),
        "pause\nresume\n"
    );
}

#[test]
fn a_create_killed_at_its_deadline_is_deleted() {
    let f = hanging("create");
    let e = f
        .runc
        .with_deadline(Instant::now() + Duration::from_millis(300))
        .create("c1", f.dir.path(), CreateOpts::default())
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::DeadlineExceeded {
                command: "create",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        fs::read_to_string(f.path("verbs")).unwrap(),
        "create\ndelete\n",
        "delete --force follows the killed create"
    );
}

#[test]
fn the_monitors_deadline_applies_unless_the_runc_has_its_own() {
    #[derive(Debug)]
    struct Due(Instant);
    impl ProcessMonitor for Due {
        fn start(&self, cmd: &RuntimeCommand) -> std::io::Result<RuntimeChild> {
            RetryMonitor.start(cmd)
        }
        fn wait(&self, child: &mut RuntimeChild) -> std::io::Result<ExitStatus> {
            child.wait()
        }
        fn deadline(&self) -> Option<Instant> {
            Some(self.0)
        }
    }
    let f = hanging("never");
    let passed = Instant::now();
    let runc = Runc::builder()
        .binary(f.runc.binary())
        .monitor(Arc::new(Due(passed)))
        .build();
    assert_eq!(runc.deadline(), Some(passed));
    assert!(matches!(
        runc.pause("c1").unwrap_err(),
        Error::DeadlineExceeded { ran: None, .. }
    ));
    let later = Instant::now() + Duration::from_secs(60);
    assert_eq!(runc.with_deadline(later).deadline(), Some(later));
    runc.with_deadline(later).pause("c1").unwrap();
}

// ---------------------------------------------------------------------------------------------
// runc's stderr for the verbs that hand their stdio to the process

const REASON: &str = "my-runtime: cannot frobnicate the bundle";

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

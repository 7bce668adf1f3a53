//! What each verb hands runc and reads back from it: parsed output, both output streams at
//! once, `update`'s stdin, `exec`'s process file (a temp file or a memfd), the stdio the
//! container inherits, the argv of the verbs that print nothing, and no descriptor of this
//! process leaking into runc.

use super::fake_runc::Fake;
use crate::{CheckpointOpts, ContainerStatus, CreateOpts, Error, ExecOpts, ProcessIo};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

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

//! The logger URI parser, and real loggers (`/bin/sh` scripts) started and fed: argv,
//! environment, descriptors, both readiness schemes, and the failures. `sh_logger` and
//! `COPYING_LOGGER` serve `stdio_uris`'s tests too.

use super::*;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::io::Write;
use std::path::{Path, PathBuf};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn parses_path_args_and_env() {
    let spec = parse("binary:///usr/bin/log%20ger?z=1&--driver=awslogs&a=&z=2&env.TZ=UTC&env.CONTAINER_ID=no&b=x+y%26").unwrap();
    assert_eq!(spec.path, PathBuf::from("/usr/bin/log ger"));
    // Sorted by key, first value of a repeated key, empty values kept.
    assert_eq!(
        spec.args,
        s(&["--driver", "awslogs", "a", "", "b", "x y&", "z", "1"])
    );
    assert_eq!(spec.env, vec![("TZ".to_string(), "UTC".to_string())]);
    let bare = parse("binary:///bin/logger").unwrap();
    assert_eq!(bare.path, PathBuf::from("/bin/logger"));
    assert!(bare.args.is_empty() && bare.env.is_empty());
    assert_eq!(parse("binary:///l?flag").unwrap().args, s(&["flag", ""]));
    assert!(!bare.strict_ready);
    // binary-v2: the same syntax, strict readiness.
    let v2 = parse("binary-v2:///usr/bin/log%20ger?z=1&env.TZ=UTC").unwrap();
    assert_eq!(v2.path, PathBuf::from("/usr/bin/log ger"));
    assert_eq!(v2.args, s(&["z", "1"]));
    assert_eq!(v2.env, vec![("TZ".to_string(), "UTC".to_string())]);
    assert!(v2.strict_ready);
    assert!(is_logger_uri("binary:///x") && is_logger_uri("binary-v2:///x"));
    assert!(!is_logger_uri("file:///x") && !is_logger_uri("/run/x/binary://"));
}

#[test]
fn refuses_bad_uris() {
    for (uri, why) in [
        ("binary://", "no logger path"),
        ("binary://?a=b", "no logger path"),
        ("binary://host/usr/bin/x", "no host"),
        ("binary:///x%zz", "bad escape"),
        ("binary:///x?a=%4", "bad escape"),
        ("binary:///x?a=%+1", "bad escape"),
        ("binary:///x?a=1;b=2", "';'"),
        ("binary:///x?a=%00", "NUL"),
        ("binary:///x?env.=1", "environment name"),
        ("binary-v2://", "no logger path"),
        ("binary-v2://host/x", "binary-v2:///absolute"),
        ("binary-v3:///x", "not a binary"),
        ("file:///x", "not a binary"),
    ] {
        let e = parse(uri).unwrap_err().to_string();
        assert!(e.contains(why), "{uri}: {e}");
        assert!(e.contains(uri), "{uri}: {e}");
    }
}

/// Percent-encodes everything but a few safe characters.
pub(crate) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A logger URI running `/bin/sh -c SCRIPT dir DIR` (keys sort `-c` before `dir`, so
/// the script sees `$0` = "dir", `$1` = DIR). The loggers are never files the tests
/// write: exec'ing a file just written fails with ETXTBSY while another test's fork
/// still holds the write fd.
pub(crate) fn sh_logger(script: &str, dir: &Path) -> String {
    format!(
        "binary:///bin/sh?dir={}&-c={}",
        encode(&dir.display().to_string()),
        encode(script)
    )
}

/// Copies fd 3 and 4 into DIR/out and DIR/err; records argv, the environment and its
/// open fds (without opening any while it looks).
pub(crate) const COPYING_LOGGER: &str = r#"d=$1
fds= n=0
while [ $n -lt 1024 ]; do [ -e /proc/$$/fd/$n ] && fds="$fds $n"; n=$((n+1)); done
echo $fds > "$d/fds"
env > "$d/env"
printf '%s\n' "$0" "$@" > "$d/args"
PATH=/usr/bin:/bin
cat <&3 > "$d/out" 4<&- 5>&- &
cat <&4 > "$d/err" 3<&- 5>&- &
exec 3<&- 4<&- 5>&-
wait
"#;

fn exit_status(pid: i32) -> WaitStatus {
    waitpid(Pid::from_raw(pid), None).unwrap()
}

#[test]
fn a_logger_gets_the_output_its_args_and_the_ids() {
    let dir = tempfile::tempdir().unwrap();
    let spec = parse(&sh_logger(COPYING_LOGGER, dir.path())).unwrap();
    assert_eq!(spec.path, PathBuf::from("/bin/sh"));
    assert_eq!(spec.args[0], "-c");
    assert_eq!(spec.args[1], COPYING_LOGGER);
    let env = [
        ("CONTAINER_ID".to_string(), "c1".to_string()),
        ("CONTAINER_NAMESPACE".to_string(), "ns1".to_string()),
    ];
    // Not close-on-exec, as a careless library would make it: must not reach the logger.
    let leak = nix::unistd::pipe().unwrap();
    let started = start(&spec, &env, Streams::Pipes).unwrap();
    drop(leak);
    let mut out = File::from(started.stdout);
    let mut err = File::from(started.stderr.expect("a stderr pipe"));
    out.write_all(b"hello\n").unwrap();
    err.write_all(b"oops\n").unwrap();
    out.write_all(b"world\n").unwrap();
    drop((out, err));
    assert_eq!(
        exit_status(started.pid),
        WaitStatus::Exited(Pid::from_raw(started.pid), 0)
    );
    let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
    assert_eq!(read("out"), "hello\nworld\n");
    assert_eq!(read("err"), "oops\n");
    assert_eq!(read("fds"), "0 1 2 3 4 5\n");
    assert_eq!(read("args"), format!("dir\n{}\n", dir.path().display()));
    let env = read("env");
    assert!(env.lines().any(|l| l == "CONTAINER_ID=c1"), "{env}");
    assert!(env.lines().any(|l| l == "CONTAINER_NAMESPACE=ns1"), "{env}");
    if std::env::var_os("CARGO_MANIFEST_DIR").is_some() {
        assert!(
            !env.contains("CARGO_MANIFEST_DIR="),
            "shim env leaked: {env}"
        );
    }
}

#[test]
fn a_terminal_logger_reads_one_stream_and_eof_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let spec = parse(&sh_logger(COPYING_LOGGER, dir.path())).unwrap();
    let started = start(&spec, &[], Streams::Terminal).unwrap();
    assert!(started.stderr.is_none());
    let mut out = File::from(started.stdout);
    out.write_all(b"from the pty\r\n").unwrap();
    drop(out);
    assert!(matches!(exit_status(started.pid), WaitStatus::Exited(_, 0)));
    let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
    assert_eq!(read("out"), "from the pty\r\n");
    assert_eq!(read("err"), "");
}

#[test]
fn a_logger_may_signal_ready_by_writing() {
    let dir = tempfile::tempdir().unwrap();
    // Stays alive with fd 5 open after writing to it; exits at EOF on fd 3.
    let script = "echo ready >&5; exec cat <&3 >/dev/null";
    let spec = parse(&sh_logger(script, dir.path())).unwrap();
    let started = start_with_timeout(&spec, &[], Streams::Pipes, Duration::from_secs(5)).unwrap();
    drop((started.stdout, started.stderr));
    assert!(matches!(exit_status(started.pid), WaitStatus::Exited(_, 0)));
}

/// `sh_logger` for the strict scheme.
fn sh_logger_v2(script: &str, dir: &Path) -> String {
    sh_logger(script, dir).replacen("binary://", "binary-v2://", 1)
}

#[test]
fn a_binary_v2_logger_is_ready_once_it_writes_a_byte() {
    let dir = tempfile::tempdir().unwrap();
    // What containerd's logging.Run does: one zero byte, then close fd 5.
    let script = r#"printf '\0' >&5; exec 5>&-; exec cat <&3 >"$1/out""#;
    let spec = parse(&sh_logger_v2(script, dir.path())).unwrap();
    let started = start_with_timeout(&spec, &[], Streams::Pipes, Duration::from_secs(5)).unwrap();
    let mut out = File::from(started.stdout);
    out.write_all(b"v2\n").unwrap();
    drop((out, started.stderr));
    assert!(matches!(exit_status(started.pid), WaitStatus::Exited(_, 0)));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out")).unwrap(),
        "v2\n"
    );
}

#[test]
fn a_binary_v2_logger_that_closes_fd_5_without_a_byte_is_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    // Alive and reading, but never said ready: the legacy scheme takes it, v2 does not.
    let script = r#"echo $$ > "$1/pid"; exec 5>&-; exec cat <&3 >/dev/null"#;
    let legacy = parse(&sh_logger(script, dir.path())).unwrap();
    let started = start_with_timeout(&legacy, &[], Streams::Pipes, Duration::from_secs(5)).unwrap();
    drop((started.stdout, started.stderr));
    assert!(matches!(exit_status(started.pid), WaitStatus::Exited(_, 0)));

    let strict = parse(&sh_logger_v2(script, dir.path())).unwrap();
    let e = start_with_timeout(&strict, &[], Streams::Pipes, Duration::from_secs(5)).unwrap_err();
    assert!(e.to_string().contains("did not signal ready"), "{e}");
    let pid: i32 = std::fs::read_to_string(dir.path().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        matches!(
            exit_status(pid),
            WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)
        ),
        "the logger is killed"
    );
    // One that exits before saying anything fails too.
    let spec = parse(&sh_logger_v2("exit 0", dir.path())).unwrap();
    assert!(start_with_timeout(&spec, &[], Streams::Pipes, Duration::from_secs(5)).is_err());
}

#[test]
fn a_logger_that_is_never_ready_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let spec = parse(&sh_logger(
        r#"echo $$ > "$1/pid"; exec sleep 30"#,
        dir.path(),
    ))
    .unwrap();
    // Long enough for the shell to write its pid even in an emulated guest (200 ms
    // was not: the logger was killed before it ran, and left no pid to check).
    let t0 = Instant::now();
    let e = start_with_timeout(&spec, &[], Streams::Pipes, Duration::from_secs(2)).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("/bin/sh") && msg.contains("fd 5"), "{msg}");
    let pid: i32 = std::fs::read_to_string(dir.path().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        matches!(
            exit_status(pid),
            WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)
        ),
        "the logger is killed"
    );
}

#[test]
fn a_logger_that_exits_at_once_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = parse(&sh_logger("exit 3", dir.path())).unwrap();
    let e = start_with_timeout(&spec, &[], Streams::Pipes, Duration::from_secs(5)).unwrap_err();
    assert!(
        e.to_string().contains("/bin/sh") && e.to_string().contains("exited"),
        "{e}"
    );
}

#[test]
fn a_missing_logger_is_a_clear_error() {
    let spec = parse("binary:///nonexistent/tether-logger").unwrap();
    let e = start(&spec, &[], Streams::Pipes).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(e.to_string().contains("/nonexistent/tether-logger"), "{e}");
}

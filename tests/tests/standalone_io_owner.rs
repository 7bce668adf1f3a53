//! Standalone supervisor: `run`/`exec --io-uid UID --io-gid GID` make a process directory
//! that a manager running as that user, without root, can attach to, resize, close
//! stdin of and wait on; other users get nothing, and the manager cannot change the
//! directory root writes in.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tether_tests::standalone_env::{output_bounded, output_bounded_with_input};
use tether_tests::StandaloneEnv;

/// The manager's user and group.
const IO_ID: u32 = 1234;
/// Somebody else.
const OTHER_ID: u32 = 4321;
const TIMEOUT: Duration = Duration::from_secs(30);

/// (uid, gid, permission bits, is a FIFO) of `path`, not following symlinks.
fn stat(path: &Path) -> (u32, u32, u32, bool) {
    let m =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (m.uid(), m.gid(), m.mode() & 0o7777, m.file_type().is_fifo())
}

/// Checks the layout `--io-uid IO_ID --io-gid IO_ID` promises (docs/standalone.md, io_owner.rs).
fn assert_opened_to_manager(dir: &Path) {
    assert_eq!(stat(dir), (0, IO_ID, 0o710, false), "the directory");
    for name in ["stdin", "stdout", "stderr", "winsz", "control"] {
        assert_eq!(stat(&dir.join(name)), (IO_ID, IO_ID, 0o600, true), "{name}");
    }
    assert_eq!(stat(&dir.join("exit")), (0, IO_ID, 0o640, true), "exit");
}

/// `cmd` dropped to `uid`:`gid` (std also drops the supplementary groups, and with uid 0
/// gone every capability goes).
fn as_user(mut cmd: Command, id: u32) -> Command {
    cmd.uid(id).gid(id);
    cmd
}

/// `sh -c script` as `id`, stdin /dev/null.
fn sh_as(id: u32, script: &str) -> Output {
    let mut c = Command::new("/bin/sh");
    c.args(["-c", script]).stdin(Stdio::null());
    output_bounded(as_user(c, id), TIMEOUT)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_manager_running_as_the_io_user_attaches_and_waits_without_root() {
    let env = StandaloneEnv::new();
    env.let_others_traverse();
    let id = env.id("iou");
    let bundle = env.bundle(
        "b",
        &[
            "sh",
            "-c",
            "read line; echo out:$line; echo err >&2; exit 7",
        ],
    );
    let uid = IO_ID.to_string();
    env.run_with(&id, &bundle, &["--io-uid", &uid, "--io-gid", &uid]);
    let dir = env.process_dir(&id, "init");
    assert_opened_to_manager(&dir);
    let d = dir.to_str().unwrap();

    // The manager: attach by directory, as uid 1234, feeding the process a line.
    let mut attach = env.cmd("attach");
    attach.args(["--dir", d]);
    let out = output_bounded_with_input(as_user(attach, IO_ID), b"hello\n", TIMEOUT);
    assert_eq!(
        (out.status.code(), text(&out.stdout), text(&out.stderr)),
        (Some(7), "out:hello\n".into(), "err\n".into())
    );
    // It waits (reads `exit` to EOF, then `exitcode`), with the CLI and without it.
    let mut wait = env.cmd("wait");
    wait.args(["--json", "--dir", d]).stdin(Stdio::null());
    let out = output_bounded(as_user(wait, IO_ID), TIMEOUT);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("\"exit_code\":7"), "{out:?}");
    // (Not `cat exit`: with the supervisor gone, a blocking open waits for a writer.)
    let out = sh_as(
        IO_ID,
        &format!("test -r {d}/exit && ! test -w {d}/exit && head -n1 {d}/exitcode"),
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "7\n".into())
    );
    assert_eq!(stat(&dir.join("exitcode")), (0, 0, 0o644, false));

    // Traverse only: it can neither list the directory nor change what is in it, nor
    // write to `exit` (which would hold off every other waiter's EOF).
    for script in [
        format!("ls {d}"),
        format!("touch {d}/new"),
        format!("rm -f {d}/exitcode"),
        format!("mv {d}/pidfile {d}/x"),
        format!("echo x > {d}/exit"),
    ] {
        let out = sh_as(IO_ID, &script);
        assert!(!out.status.success(), "{script} succeeded as the io user");
    }
    assert!(dir.join("exitcode").is_file() && dir.join("pidfile").is_file());
    // Another user cannot even reach the files.
    for script in [format!("cat {d}/exitcode"), format!("cat {d}/stdout")] {
        let out = sh_as(OTHER_ID, &script);
        assert!(!out.status.success(), "{script} succeeded as another user");
        assert!(text(&out.stderr).contains("ermission denied"), "{out:?}");
    }
}

#[test]
fn exec_with_an_io_owner_lets_that_user_resize_and_close_stdin() {
    let env = StandaloneEnv::new();
    env.let_others_traverse();
    let id = env.id("ioe");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.run(&id, &bundle);
    // Without the flags the init's directory is root's alone, as before.
    let init = env.process_dir(&id, "init");
    assert_eq!(stat(&init), (0, 0, 0o700, false));
    assert_eq!(stat(&init.join("control")), (0, 0, 0o600, true));

    let uid = IO_ID.to_string();
    let cat = bundle.exec_process(&["sh", "-c", "cat; echo done"], false);
    let out = env.exec_output_with(&id, "c", &cat, &["--io-uid", &uid, "--io-gid", &uid]);
    assert!(out.status.success(), "exec: {}", text(&out.stderr));
    let dir = env.process_dir(&id, "c");
    assert_opened_to_manager(&dir);
    let d = dir.to_str().unwrap();

    // A resize (nothing to resize without a tty, but the write goes through) and output
    // read from the FIFO directly, both as the io user.
    let out = sh_as(
        IO_ID,
        &format!(r#"printf '{{"columns":80,"rows":24}}' > {d}/winsz"#),
    );
    assert!(out.status.success(), "winsz: {}", text(&out.stderr));
    // attach --close-stdin goes through the `control` FIFO once our stdin ends.
    let mut attach = env.cmd("attach");
    attach.args(["--close-stdin", "--dir", d]);
    let out = output_bounded_with_input(as_user(attach, IO_ID), b"abc\n", TIMEOUT);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "abc\ndone\n".into()),
        "{}",
        text(&out.stderr)
    );
    let mut wait = env.cmd("wait");
    wait.args(["--dir", d]).stdin(Stdio::null());
    assert_eq!(
        output_bounded(as_user(wait, IO_ID), TIMEOUT).status.code(),
        Some(0)
    );

    // The same user gets nothing from a process exec'd without the flags.
    env.exec(
        &id,
        "plain",
        &bundle.exec_process(&["sleep", "1000"], false),
    );
    let plain = env.process_dir(&id, "plain");
    let out = sh_as(IO_ID, &format!("cat {}/exitcode", plain.display()));
    assert!(text(&out.stderr).contains("ermission denied"), "{out:?}");
}

#[test]
fn bad_io_ids_are_usage_errors_that_leave_nothing() {
    let env = StandaloneEnv::new();
    let id = env.id("iob");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    let b = bundle.path().to_str().unwrap();
    for (extra, says) in [
        (
            &["--io-uid", "abc", "--io-gid", "1"][..],
            "--io-uid \"abc\"",
        ),
        (&["--io-uid", "1", "--io-gid", "-5"][..], "--io-gid \"-5\""),
        (&["--io-uid=4294967295", "--io-gid=1"][..], "4294967294"),
        (&["--io-uid", "1234"][..], "go together"),
    ] {
        let mut args = vec!["--bundle", b];
        args.extend_from_slice(extra);
        args.push(&id);
        let out = env.output("run", &args);
        assert_eq!(out.status.code(), Some(2), "run {extra:?}");
        assert!(text(&out.stderr).contains(says), "{extra:?}: {out:?}");
        assert!(
            !env.depot().join(&id).exists(),
            "{extra:?} left the container"
        );
    }

    env.run(&id, &bundle);
    let out = env.exec_output_with(
        &id,
        "e",
        &bundle.exec_process(&["true"], false),
        &["--io-uid", "1", "--io-gid", "root"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("not a name"), "{out:?}");
    assert!(!env.process_dir(&id, "e").exists());

    // Both help texts document the flags.
    for sub in ["run", "exec"] {
        let help = text(&env.output(sub, &["--help"]).stdout);
        assert!(
            help.contains("--io-uid UID --io-gid GID") && help.contains("0710"),
            "{sub} --help: {help}"
        );
    }
}

//! Standalone supervisor: a manager closes a process's stdin (the supervisor otherwise
//! holds it open for ever), through `attach --close-stdin`, the `close-stdin` command, or
//! the `control` FIFO when it knows only the directory; what was written first arrives.
//! A manager's own end keeps stdin open: checked by what arrives after the close, which
//! an early EOF (whenever it came) would have cut off.

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tether_tests::standalone_env::{output_bounded, wait_bounded, wait_read};
use tether_tests::StandaloneEnv;

#[test]
fn attach_close_stdin_lets_cat_finish() {
    let env = StandaloneEnv::new();
    let id = env.id("cat");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.run(&id, &bundle);
    let cat = bundle.exec_process(&["sh", "-c", "cat; echo done"], false);
    env.exec(&id, "c", &cat);

    let mut attach = env.cmd("attach");
    attach
        .args(["--close-stdin", &id, "c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut attach = attach.spawn().unwrap();
    let mut stdin = attach.stdin.take().unwrap();
    stdin.write_all(b"hello\nworld\n").unwrap();
    drop(stdin);
    let mut out = attach.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let status = wait_bounded(&mut attach, Duration::from_secs(30));
    let mut err = String::new();
    let _ = attach.stderr.take().unwrap().read_to_string(&mut err);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "stderr: {err}");
    assert_eq!(reader.join().unwrap(), "hello\nworld\ndone\n");
    assert_eq!(env.output("wait", &[&id, "c"]).status.code(), Some(0));

    // A regular file is not forwarded: with --close-stdin that is refused, not ignored.
    env.exec(&id, "c2", &cat);
    let file = env.runc_env().dir().join("input.txt");
    std::fs::write(&file, "x\n").unwrap();
    let mut refused = env.cmd("attach");
    refused
        .args(["--close-stdin", &id, "c2"])
        .stdin(std::fs::File::open(&file).unwrap());
    let refused = output_bounded(refused, Duration::from_secs(30));
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("regular file"));
    // --no-stdin --close-stdin closes at once.
    let out = env.output("attach", &["--no-stdin", "--close-stdin", &id, "c2"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
}

#[test]
fn a_manager_that_knows_only_the_directory_closes_stdin() {
    let env = StandaloneEnv::new();
    let id = env.id("wc");
    // The container's init this time.
    let bundle = env.bundle("b", &["sh", "-c", "wc -c; exit 0"]);
    env.run(&id, &bundle);
    let dir = env.process_dir(&id, "init");

    // More than a pipe holds: everything written before the close must still arrive.
    let mut stdin = fifo::open_write_timeout(&dir.join("stdin"), Duration::from_secs(5)).unwrap();
    stdin.write_all(&vec![b'x'; 300_000]).unwrap();
    let mut control =
        fifo::open_write_timeout(&dir.join("control"), Duration::from_secs(5)).unwrap();
    control.write_all(b"close-stdin\n").unwrap();
    // Taken: the supervisor acts on a request in the turn it reads it.
    wait_read(&control);
    drop(control);
    // Our own write end is still open: the process's stdin stays open until we close it,
    // so what we write now arrives too.
    stdin.write_all(&vec![b'y'; 1000]).unwrap();
    drop(stdin);

    let out = env.output("attach", &["--dir", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "301000");
    // Fine to repeat, and after the exit.
    env.ok("close-stdin", &["--dir", dir.to_str().unwrap()]);
    env.ok("close-stdin", &[&id]);
    // The control FIFO has no reader any more: a non-blocking open fails, never hangs.
    assert!(matches!(
        fifo::open_write(&dir.join("control"), true),
        Err(fifo::Error::NoReader { .. })
    ));
    let missing = env.output("close-stdin", &[&id, "nope"]);
    assert_eq!(missing.status.code(), Some(121));
    let no_container = env.output("close-stdin", &["no-such-container"]);
    assert_eq!(no_container.status.code(), Some(121));
}

#[test]
fn close_stdin_sends_a_tty_process_its_eof() {
    let env = StandaloneEnv::new();
    let id = env.id("ttycat");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.run(&id, &bundle);
    let script = "while read l; do echo got-$l; done; echo done; exit 4";
    let process = bundle.exec_process(&["sh", "-c", script], true);
    env.exec(&id, "t", &process);
    let dir = env.process_dir(&id, "t");
    let mut attach = env.cmd("attach");
    attach
        .args(["--no-stdin", &id, "t"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut attach = attach.spawn().unwrap();
    let screen = Arc::new(Mutex::new(String::new()));
    let (mut out, sink) = (attach.stdout.take().unwrap(), screen.clone());
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !screen.lock().unwrap().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} never came: {:?}",
                screen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // A manager writes a line and closes its end...
    let mut stdin = fifo::open_write_timeout(&dir.join("stdin"), Duration::from_secs(5)).unwrap();
    stdin.write_all(b"hi\n").unwrap();
    drop(stdin);
    wait_for("got-hi");
    // ...which is no EOF: the next manager's line is still read.
    let mut stdin = fifo::open_write_timeout(&dir.join("stdin"), Duration::from_secs(5)).unwrap();
    stdin.write_all(b"again\n").unwrap();
    drop(stdin);
    wait_for("got-again");
    env.ok("close-stdin", &[&id, "t"]);
    let status = wait_bounded(&mut attach, Duration::from_secs(30));
    reader.join().unwrap();
    let text = screen.lock().unwrap().clone();
    assert_eq!(status.and_then(|s| s.code()), Some(4), "{text:?}");
    assert!(text.contains("done"), "{text:?}");
}

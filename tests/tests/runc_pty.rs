//! Terminals through runc's console socket: the pty master arrives over SCM_RIGHTS.

use runc_wrapper::{ConsoleSocket, ContainerStatus, CreateOpts, ExecOpts};
use std::fs::File;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use tether_tests::RuncEnv;

/// Reads from a pty master until `needle` shows up (or EIO: the slave side closed).
fn read_until(master: &mut File, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&seen).contains(needle) {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn init_process_with_a_terminal() {
    let env = RuncEnv::new();
    let id = env.id("ptyinit");
    let mut bundle = env.bundle("b", &["sh", "-c", "tty; read line; echo got:$line"]);
    bundle.set_terminal(true).save().unwrap();
    let socket = ConsoleSocket::new_in(env.dir()).expect("console socket");
    env.runc()
        .create(
            &id,
            bundle.path(),
            CreateOpts {
                console_socket: Some(socket.path().to_path_buf()),
                ..Default::default()
            },
        )
        .expect("create with a terminal");
    let mut master = File::from(
        socket
            .receive_master(Duration::from_secs(5))
            .expect("pty master"),
    );
    env.runc().start(&id).expect("start");
    let out = read_until(&mut master, "/dev/");
    assert!(out.contains("/dev/pts/0"), "init sees a pty: {out:?}");
    master.write_all(b"ping\n").unwrap();
    let out = read_until(&mut master, "got:ping");
    assert!(out.contains("got:ping"), "input through the pty: {out:?}");
    env.runc().delete(&id, true).expect("delete --force");
}

#[test]
fn exec_with_a_terminal() {
    let env = RuncEnv::new();
    let id = env.id("ptyexec");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.runc()
        .create(&id, bundle.path(), CreateOpts::default())
        .expect("create");
    env.runc().start(&id).expect("start");
    assert_eq!(
        env.runc().state(&id).unwrap().status,
        ContainerStatus::Running
    );

    let socket = ConsoleSocket::new().expect("console socket in a private dir");
    let process = bundle.exec_process(&["sh", "-c", "tty; echo done"], true);
    env.runc()
        .exec(
            &id,
            &serde_json::to_vec(&process).unwrap(),
            ExecOpts {
                console_socket: Some(socket.path().to_path_buf()),
                detach: true,
                ..Default::default()
            },
        )
        .expect("exec with a terminal");
    let mut master = File::from(
        socket
            .receive_master(Duration::from_secs(5))
            .expect("pty master"),
    );
    let out = read_until(&mut master, "done");
    assert!(out.contains("/dev/pts/"), "exec sees a pty: {out:?}");
    assert!(out.contains("done"));
    env.runc().delete(&id, true).expect("delete --force");
}

#[test]
fn console_socket_times_out_without_a_connection() {
    let socket = ConsoleSocket::new().expect("console socket");
    let started = Instant::now();
    let err = socket
        .receive_master(Duration::from_millis(200))
        .expect_err("nobody connects");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!err.to_string().is_empty());
    let path = socket.path().to_path_buf();
    drop(socket);
    assert!(!path.exists(), "the socket file is removed on drop");
}

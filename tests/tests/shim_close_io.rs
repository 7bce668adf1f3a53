//! The end of an exec's stdin (CloseIO) reaches the process whenever it arrives relative
//! to the exec's Start, driven over raw ttrpc (`direct_shim`).
//!
//! containerd's clients send CloseIO as soon as their own input ends: nerdctl (`exec -i`)
//! as soon as it has the process handle, which for a short or empty input is while the
//! exec's Start is in flight (the shim opened the stdin FIFO, the client wrote its bytes
//! and reached EOF, runc has not returned yet) or before Start was even sent. A runc
//! wrapper that waits at a gate before `exec` holds the Start in flight for exactly as
//! long as the test needs (issue 26: `nerdctl exec -i CONTAINER cat` never finished).

use containerd_shim_protos::api;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;
use tether_tests::direct_shim::DirectShim;
use tether_tests::runc_gate::{GateAt, RuncGate};

/// How long the test waits for a gated runc to be reached, and for an exec's exit.
const BOUND: Duration = Duration::from_secs(20);

fn mkfifo(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    path
}

/// Opens the read end of `fifo` without waiting for a writer (the shim holds one).
fn open_reader(fifo: &Path) -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .expect("open the stdout FIFO")
}

/// Reads what `reader` holds until EOF or `BOUND` (the shim's keep-alive write end is
/// gone once the exec is deleted, so EOF comes then).
fn read_all(mut reader: File) -> Vec<u8> {
    let deadline = std::time::Instant::now() + BOUND;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() >= deadline {
                    return out;
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("read the stdout FIFO: {e}"),
        }
    }
}

/// Exec of `args` with a stdin and a stdout FIFO; returns the stdin's path and the
/// stdout's read end (open before the process starts, as containerd's client has it: a
/// FIFO whose every end closed loses what it held).
fn exec_request(shim: &DirectShim, id: &str, exec_id: &str, args: &[&str]) -> (PathBuf, File) {
    let stdin = mkfifo(shim.dir(), &format!("{exec_id}-stdin"));
    let stdout = mkfifo(shim.dir(), &format!("{exec_id}-stdout"));
    let reader = open_reader(&stdout);
    let mut exec = api::ExecProcessRequest::new();
    exec.id = id.into();
    exec.exec_id = exec_id.into();
    exec.stdin = stdin.to_string_lossy().into_owned();
    exec.stdout = stdout.to_string_lossy().into_owned();
    exec.spec = Some(shim.exec_spec(args, false)).into();
    shim.client().exec(ctx(), &exec).expect("Exec");
    (stdin, reader)
}

fn close_stdin(shim: &DirectShim, id: &str, exec_id: &str) {
    let mut close = api::CloseIORequest::new();
    close.id = id.into();
    close.exec_id = exec_id.into();
    close.stdin = true;
    shim.client().close_io(ctx(), &close).expect("CloseIO");
}

fn start(shim: &DirectShim, id: &str, exec_id: &str) -> Result<u32, String> {
    let mut start = api::StartRequest::new();
    start.id = id.into();
    start.exec_id = exec_id.into();
    shim.client()
        .start(ctx(), &start)
        .map(|r| r.pid)
        .map_err(|e| e.to_string())
}

/// Waits for the exec's exit, at most `BOUND`: its status, or why there is none.
fn wait(shim: &DirectShim, id: &str, exec_id: &str) -> Result<u32, String> {
    let mut wait = api::WaitRequest::new();
    wait.id = id.into();
    wait.exec_id = exec_id.into();
    let bounded = containerd_shim_protos::ttrpc::context::with_timeout(
        i64::try_from(BOUND.as_nanos()).expect("a small bound"),
    );
    shim.client()
        .wait(bounded, &wait)
        .map(|r| r.exit_status)
        .map_err(|e| e.to_string())
}

fn delete(shim: &DirectShim, id: &str, exec_id: &str) {
    let mut delete = api::DeleteRequest::new();
    delete.id = id.into();
    delete.exec_id = exec_id.into();
    shim.client().delete(ctx(), &delete).expect("Delete");
}

fn ctx() -> containerd_shim_protos::ttrpc::context::Context {
    tether_tests::direct_shim::ctx()
}

#[test]
fn a_close_of_stdin_while_the_exec_starts_reaches_it() {
    let id = tether_tests::unique_id("closeio");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    let runc = RuncGate::write(shim.dir(), &["exec"], GateAt::BeforeWork);
    shim.create_and_start(&id, shim.options(runc.path()));

    // 1. CloseIO while runc exec is held at the gate: the shim has opened the stdin FIFO
    //    (the client's write succeeds), the process does not exist yet.
    let (stdin, out) = exec_request(&shim, &id, "racing", &["cat"]);
    thread::scope(|s| {
        let starting = s.spawn(|| start(&shim, &id, "racing"));
        runc.wait_reached("exec");
        let mut client = fifo::open_write(&stdin, false).expect("open the stdin FIFO to write");
        client.write_all(b"short input\n").expect("write stdin");
        drop(client);
        close_stdin(&shim, &id, "racing");
        runc.open("exec");
        starting
            .join()
            .expect("the Start thread")
            .expect("Start of the exec");
    });
    let status = wait(&shim, &id, "racing");
    assert_eq!(
        status,
        Ok(0),
        "the end of stdin never reached `cat` (CloseIO came during Start)\n{}",
        shim.log()
    );
    delete(&shim, &id, "racing");
    assert_eq!(
        String::from_utf8_lossy(&read_all(out)),
        "short input\n",
        "what was written before CloseIO arrives whole"
    );

    // 2. CloseIO before Start (an empty input: nerdctl closes as soon as it has the
    //    process handle). The gate is open now.
    let (_stdin, out) = exec_request(&shim, &id, "early", &["sh", "-c", "cat; exit 3"]);
    close_stdin(&shim, &id, "early");
    start(&shim, &id, "early").expect("Start of the exec");
    let status = wait(&shim, &id, "early");
    assert_eq!(
        status,
        Ok(3),
        "the end of stdin never reached the exec (CloseIO came before Start)\n{}",
        shim.log()
    );
    delete(&shim, &id, "early");
    assert!(read_all(out).is_empty());

    // 3. The usual order still holds stdin open until CloseIO: a client that closes its
    //    end is no EOF for the process.
    let (stdin, out) = exec_request(&shim, &id, "held", &["cat"]);
    start(&shim, &id, "held").expect("Start of the exec");
    let mut client = fifo::open_write(&stdin, false).expect("open the stdin FIFO to write");
    client.write_all(b"first\n").expect("write stdin");
    drop(client);
    let mut client = fifo::open_write(&stdin, false).expect("reopen the stdin FIFO");
    client.write_all(b"second\n").expect("write stdin again");
    drop(client);
    close_stdin(&shim, &id, "held");
    assert_eq!(wait(&shim, &id, "held"), Ok(0), "{}", shim.log());
    delete(&shim, &id, "held");
    assert_eq!(String::from_utf8_lossy(&read_all(out)), "first\nsecond\n");

    shim.kill_delete_and_shut_down(&id);
    shim.assert_nothing_left();
}

//! A terminal together with a `binary://` logger, for an init and for an exec, driven over
//! raw ttrpc (`direct_shim`): what nerdctl asks for with `run -d -t` and `create -t`
//! (issue 26: refused before).
//!
//! As with containerd's runc shim, the pty master's output goes to the logger's stdout
//! pipe (fd 3) and its stderr pipe (fd 4) gets nothing; ResizePty resizes the pty; a stdin
//! FIFO feeds the master. And the exit ordering of the pipe path holds: when the exit is
//! reported (Wait answers), the shim has written everything the pty held into the logger's
//! pipe and closed its end (nerdctl's logger stops reading once it learns of the exit).

use containerd_shim_protos::api;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};
use tether_tests::direct_shim::{ctx, DirectShim};
use tether_tests::uri::percent_encode;

/// Generous bound for what normally takes milliseconds.
const BOUND: Duration = Duration::from_secs(20);
/// Bytes the process writes through the pty after the resize: more than a pty and a pipe
/// hold, so the pump is still moving them when the process exits.
const BULK: usize = 300_000;

/// A logger (run by /bin/sh with `$1` = its directory) that records which pipe it reads
/// on fd 3, copies fd 3 to `out` and fd 4 to `err`, and marks `done` when both ended.
const LOGGER: &str = r#"d=$1
PATH=/usr/bin:/bin
readlink /proc/$$/fd/3 > "$d/pipe"
echo $$ > "$d/pid"
cat <&3 > "$d/out" 4<&- 5>&- &
cat <&4 > "$d/err" 3<&- 5>&- &
exec 3<&- 4<&- 5>&-
wait
: > "$d/done"
"#;

/// The logger's URI, writing into `dir` (its keys sort `-c` before `dir`: `$1` = dir).
fn logger_uri(dir: &Path) -> String {
    format!(
        "binary:///bin/sh?dir={}&-c={}",
        percent_encode(&dir.display().to_string()),
        percent_encode(LOGGER)
    )
}

fn wait_until(what: &str, shim: &DirectShim, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            shim.log()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// Whether process `pid` holds an fd on `link` (e.g. `pipe:[1234]`).
fn holds(pid: i32, link: &str) -> bool {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .any(|e| fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == link.trim()))
        })
        .unwrap_or(false)
}

/// The script both processes run: answer a line read from the pty, wait for the test to
/// resize it (`/tmp/<gate>` in the rootfs), report its size (runc makes it 0x0, which
/// busybox's `stty size` refuses to print), then write `BULK` bytes and a last line.
fn script(gate: &str) -> String {
    format!(
        "read line; echo \"got $line\"; \
         while [ ! -e /tmp/{gate} ]; do sleep 0.02; done; stty size; \
         head -c {BULK} /dev/zero | tr '\\0' x; echo; echo end"
    )
}

/// Drives one process (the init when `exec_id` is empty) whose stdio is `logs` (its
/// logger's directory) through the pty: a line typed on stdin, a resize, bulk output,
/// its exit; and checks what the logger got.
fn drive(shim: &DirectShim, id: &str, exec_id: &str, logs: &Path, stdin: &Path) {
    let gate = if exec_id.is_empty() {
        "go-init"
    } else {
        "go-exec"
    };
    // The typed line comes back twice: the pty's echo, then the process's answer.
    let mut input = fifo::open_write(stdin, false).expect("open the stdin FIFO");
    std::io::Write::write_all(&mut input, b"typed\n").expect("type a line");
    wait_until("the answer", shim, || {
        read(&logs.join("out")).contains("got typed\r\n")
    });
    let mut resize = api::ResizePtyRequest::new();
    resize.id = id.into();
    resize.exec_id = exec_id.into();
    resize.width = 100;
    resize.height = 40;
    shim.client().resize_pty(ctx(), &resize).expect("ResizePty");
    fs::write(shim.bundle().join("rootfs/tmp").join(gate), b"").expect("open the gate");
    let mut wait = api::WaitRequest::new();
    wait.id = id.into();
    wait.exec_id = exec_id.into();
    let status = shim.client().wait(ctx(), &wait).expect("Wait").exit_status;
    assert_eq!(status, 0, "{}", shim.log());
    // The exit is reported: the shim no longer holds the logger's pipe, so everything the
    // pty held is in it (or read already).
    let pipe = read(&logs.join("pipe"));
    assert!(pipe.starts_with("pipe:["), "the logger's fd 3: {pipe:?}");
    let shim_pid = shim.shim_pid().expect("shim pid");
    assert!(
        !holds(shim_pid, &pipe),
        "the exit was reported while the shim still wrote into the logger's pipe"
    );
    drop(input);
    wait_until("the logger to finish", shim, || logs.join("done").exists());
    let out = read(&logs.join("out"));
    let expected = format!(
        "typed\r\ngot typed\r\n40 100\r\n{}\r\nend\r\n",
        "x".repeat(BULK)
    );
    assert!(
        out == expected,
        "the logger got {} bytes, expected {}: starts {:?}, ends {:?}",
        out.len(),
        expected.len(),
        &out[..out.len().min(80)],
        &out[out.len().saturating_sub(40)..]
    );
    assert_eq!(read(&logs.join("err")), "", "a terminal has no stderr");
}

fn logs_dir(shim: &DirectShim, name: &str) -> PathBuf {
    let dir = shim.dir().join(name);
    fs::create_dir_all(&dir).expect("logger dir");
    dir
}

fn stdin_fifo(shim: &DirectShim, name: &str) -> PathBuf {
    let path = shim.dir().join(name);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    path
}

#[test]
fn a_terminal_with_a_binary_logger_for_an_init_and_an_exec() {
    let id = tether_tests::unique_id("ttylog");
    let init_script = script("go-init");
    let shim = DirectShim::start(&id, &["sh", "-c", &init_script]);
    shim.set_terminal(true);
    let runc = tether_tests::require::tool("runc", "runc");

    let init_logs = logs_dir(&shim, "init-logs");
    let init_stdin = stdin_fifo(&shim, "init-stdin");
    let uri = logger_uri(&init_logs);
    let mut create = api::CreateTaskRequest::new();
    create.id = id.clone();
    create.bundle = shim.bundle().to_string_lossy().into_owned();
    create.options = Some(shim.options(&runc)).into();
    create.terminal = true;
    create.stdin = init_stdin.to_string_lossy().into_owned();
    create.stdout = uri.clone();
    create.stderr = uri;
    shim.client()
        .create(ctx(), &create)
        .unwrap_or_else(|e| panic!("Create with a terminal and a binary:// logger: {e}"));
    let mut start = api::StartRequest::new();
    start.id = id.clone();
    shim.client().start(ctx(), &start).expect("Start");
    let logger_pid: i32 = {
        wait_until("the logger's pid", &shim, || {
            !read(&init_logs.join("pid")).is_empty()
        });
        read(&init_logs.join("pid")).trim().parse().expect("a pid")
    };
    assert_eq!(
        read(&PathBuf::from(format!("/proc/{logger_pid}/environ")))
            .replace('\0', " ")
            .trim(),
        format!(
            "CONTAINER_ID={id} CONTAINER_NAMESPACE={}",
            namespace_of(&shim)
        ),
        "the logger's environment"
    );

    // An exec with its own terminal and logger, while the init waits at its gate.
    let exec_logs = logs_dir(&shim, "exec-logs");
    let exec_stdin = stdin_fifo(&shim, "exec-stdin");
    let uri = logger_uri(&exec_logs);
    let exec_script = script("go-exec");
    let mut exec = api::ExecProcessRequest::new();
    exec.id = id.clone();
    exec.exec_id = "tty".into();
    exec.terminal = true;
    exec.stdin = exec_stdin.to_string_lossy().into_owned();
    exec.stdout = uri.clone();
    exec.stderr = uri;
    exec.spec = Some(shim.exec_spec(&["sh", "-c", &exec_script], true)).into();
    shim.client().exec(ctx(), &exec).expect("Exec");
    let mut start = api::StartRequest::new();
    start.id = id.clone();
    start.exec_id = "tty".into();
    shim.client()
        .start(ctx(), &start)
        .unwrap_or_else(|e| panic!("Start of an exec with a terminal and a logger: {e}"));
    drive(&shim, &id, "tty", &exec_logs, &exec_stdin);
    let mut delete = api::DeleteRequest::new();
    delete.id = id.clone();
    delete.exec_id = "tty".into();
    shim.client()
        .delete(ctx(), &delete)
        .expect("Delete the exec");

    drive(&shim, &id, "", &init_logs, &init_stdin);
    let mut delete = api::DeleteRequest::new();
    delete.id = id.clone();
    shim.client().delete(ctx(), &delete).expect("Delete");
    shim.client()
        .shutdown(ctx(), &api::ShutdownRequest::new())
        .expect("Shutdown");
    shim.assert_nothing_left();
    for logs in [&init_logs, &exec_logs] {
        let pid: i32 = read(&logs.join("pid")).trim().parse().expect("a pid");
        wait_until("the logger to exit", &shim, || {
            !tether_tests::direct_shim::pid_alive(pid)
        });
    }
}

/// The containerd namespace the shim was started in (its `-namespace`).
fn namespace_of(shim: &DirectShim) -> String {
    let pid = shim.shim_pid().expect("shim pid");
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).expect("the shim's cmdline");
    let words: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    words
        .windows(2)
        .find(|w| w[0] == "-namespace")
        .map(|w| w[1].clone())
        .expect("a -namespace argument")
}

//! Standalone supervisor: what happens when a supervisor is SIGKILLed (an OOM kill, an
//! operator's mistake) while its process runs (issue 12 point 7, issue 23 part 1).
//!
//! * supervisors ask the OOM killer to spare them (`oom_score_adj` -999, when this root
//!   may lower it), and their processes do not inherit that;
//! * the supervisor's keeper (its parent, a child subreaper) takes the process over: the
//!   manager attached before the kill reads every line written before it (and after),
//!   `exit` does not reach EOF when the supervisor dies but once the process has ended,
//!   with its real exit code in `exitcode`; `wait`, `attach`, `ps` and `state` say so;
//!   nothing is left running. The same for a tty process, for a pea, for two supervisors
//!   killed at once, and once the manager's session (that started the keeper) is gone;
//! * only when the keeper is killed too is the status lost: `wait`, `attach` and `ps`
//!   then say at once what is known (116 "unsupervised" while the process runs, 117
//!   "lost" once it is gone), never a hang or a made-up exit code.
//!
//! Every step is ordered by what the test observes: the process writes its lines, leaves
//! a mark in its rootfs and waits for a file the test creates after the kill.

use serde_json::Value;
use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tether_tests::standalone_env::{output_bounded, wait_bounded};
use tether_tests::{Bundle, StandaloneEnv};

/// Lines the process writes on each stream before its mark.
const LINES: u32 = 200;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: i32) -> bool {
    fifo::StartRecord::of(pid).is_some()
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn oom_score_adj(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Whether a process of ours may lower its `oom_score_adj` (CAP_SYS_RESOURCE).
fn may_lower_oom_score() -> bool {
    Command::new("/bin/sh")
        .args(["-c", "echo -999 > /proc/self/oom_score_adj"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `sub args` bounded by 10 s: a hang fails the test instead of stalling it.
fn quick(env: &StandaloneEnv, sub: &str, args: &[&str]) -> Output {
    let mut c = env.cmd(sub);
    c.args(args).stdin(Stdio::null());
    let started = Instant::now();
    let out = output_bounded(c, Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{sub} {args:?} hung: {out:?}"
    );
    out
}

/// The most private memory a keeper may have (10x what it was measured at).
const MAX_KEEPER_USS_KIB: u64 = 512;

/// `pid`'s unique set size (`Private_Clean` + `Private_Dirty`, as smem counts it), KiB.
fn uss_kib(pid: i32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    rollup
        .lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

fn kill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// The process writes [`LINES`] lines on stdout and stderr, leaves `/written-NAME`,
/// waits for `/go-NAME` (which the test creates after the kill), writes one more line on
/// each, and exits with `code`.
fn script(name: &str, code: i32) -> String {
    format!(
        "i=0; while [ $i -lt {LINES} ]; do i=$((i+1)); echo out$i; echo err$i >&2; done; \
         touch /written-{name}; while [ ! -e /go-{name} ]; do sleep 0.02; done; \
         echo after; echo after-err >&2; exit {code}"
    )
}

/// A process being watched by a manager: `wait` and `attach` started before the kill,
/// and a non-blocking read end of its `exit` FIFO.
struct Watched {
    name: String,
    code: i32,
    tty: bool,
    rootfs: PathBuf,
    dir: PathBuf,
    pid: i32,
    supervisor: i32,
    exit: File,
    wait: Child,
    attach: Child,
    attach_out: PathBuf,
    attach_err: PathBuf,
}

/// Starts watching process `name` (pid `pid`, in `dir`, its marks in `rootfs`): a
/// `wait` and an `attach` (output to files), then waits for the process's mark.
fn watch(
    env: &StandaloneEnv,
    id: &str,
    name: &str,
    code: i32,
    tty: bool,
    rootfs: PathBuf,
    pid: i32,
) -> Watched {
    let dir = env.process_dir(id, name);
    let supervisor = read_pid(&dir.join("supervisor.pid")).expect("supervisor.pid");
    let exit = fifo::open_read(&dir.join("exit"), true).unwrap();
    let mut wait = env.cmd("wait");
    wait.args(["--json", id, name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let wait = wait.spawn().unwrap();
    let base = env.runc_env().dir().join(format!("attach-{name}"));
    let (attach_out, attach_err) = (base.with_extension("out"), base.with_extension("err"));
    let mut attach = env.cmd("attach");
    attach
        .args([id, name])
        .stdin(Stdio::null())
        .stdout(File::create(&attach_out).unwrap())
        .stderr(File::create(&attach_err).unwrap());
    let attach = attach.spawn().unwrap();
    let mark = rootfs.join(format!("written-{name}"));
    assert!(
        eventually(Duration::from_secs(30), || mark.exists()),
        "{name}: no mark"
    );
    Watched {
        name: name.to_string(),
        code,
        tty,
        rootfs,
        dir,
        pid,
        supervisor,
        exit,
        wait,
        attach,
        attach_out,
        attach_err,
    }
}

/// `exec`s process `name` running [`script`] in container `id` and watches it.
fn exec_and_watch(
    env: &StandaloneEnv,
    id: &str,
    bundle: &Bundle,
    name: &str,
    code: i32,
    tty: bool,
) -> Watched {
    let process = bundle.exec_process(&["sh", "-c", &script(name, code)], tty);
    let pid = env.exec(id, name, &process);
    watch(env, id, name, code, tty, bundle.rootfs(), pid)
}

/// Whether `pid` has exited (a zombie, or gone): its descriptors are closed.
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// The supervisor is dead; its process runs on and `exit` has not reached EOF.
fn assert_taken_over(w: &mut Watched) {
    assert!(
        eventually(Duration::from_secs(10), || dead(w.supervisor)),
        "{}: the supervisor survived SIGKILL",
        w.name
    );
    assert!(
        alive(w.pid),
        "{}: the process died with its supervisor",
        w.name
    );
    let mut buf = [0u8; 16];
    match w.exit.read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!(
            "{}: `exit` is not held once the supervisor is dead ({other:?}): EOF before \
             the process ended",
            w.name
        ),
    }
    assert!(
        !w.dir.join("exitcode").exists(),
        "{}: an exit code before the exit",
        w.name
    );
}

/// Lets the process finish and checks what every manager sees: `exit` reaches EOF after
/// the process's end with its code in `exitcode`, `wait` and `attach` (both started before
/// the kill) end with it, `attach` got every line, `ps` says "exited"; nothing is left.
fn assert_exit_recorded(env: &StandaloneEnv, id: &str, mut w: Watched) {
    std::fs::write(w.rootfs.join(format!("go-{}", w.name)), "").unwrap();
    // `exit`: EOF only once the process is gone and `exitcode` is final.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 16];
    loop {
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&w.exit),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
        match w.exit.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{}: read exit: {e}", w.name),
        }
        assert!(
            Instant::now() < deadline,
            "{}: `exit` never reached EOF",
            w.name
        );
    }
    assert!(
        !alive(w.pid),
        "{}: `exit` EOF while the process runs",
        w.name
    );
    let record = fifo::ProcessDir::from_path(&w.dir)
        .unwrap()
        .read_exit()
        .unwrap()
        .unwrap_or_else(|| panic!("{}: `exit` EOF without `exitcode`", w.name));
    assert_eq!(record.code, w.code, "{}: exitcode", w.name);

    let status = wait_bounded(&mut w.wait, Duration::from_secs(30));
    let mut out = String::new();
    w.wait
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    w.wait
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(w.code),
        "{}: wait: {err}",
        w.name
    );
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["exit_code"], w.code, "{out}");

    let status = wait_bounded(&mut w.attach, Duration::from_secs(30));
    let out = std::fs::read_to_string(&w.attach_out).unwrap();
    let err = std::fs::read_to_string(&w.attach_err).unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(w.code),
        "{}: attach: {err}",
        w.name
    );
    // Every line, those written before the kill and after it; a tty merges the streams.
    let lines = |s: &str| -> HashSet<String> { s.lines().map(|l| l.trim().to_string()).collect() };
    let (outs, errs) = if w.tty {
        let all = lines(&out);
        (all.clone(), all)
    } else {
        (lines(&out), lines(&err))
    };
    for i in 1..=LINES {
        assert!(outs.contains(&format!("out{i}")), "{}: out{i} lost", w.name);
        assert!(errs.contains(&format!("err{i}")), "{}: err{i} lost", w.name);
    }
    assert!(
        outs.contains("after"),
        "{}: the line after the kill",
        w.name
    );
    assert!(errs.contains("after-err"), "{}: after-err", w.name);

    let ps: Value = serde_json::from_str(&env.ok("ps", &["--json", id])).unwrap();
    let entry = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == w.name.as_str())
        .unwrap_or_else(|| panic!("{ps}"));
    assert_eq!(entry["status"], "exited", "{ps}");
    assert_eq!(entry["exit_code"], w.code, "{ps}");
    // A later manager learns the same.
    let out = quick(env, "wait", &[id, &w.name]);
    assert_eq!(out.status.code(), Some(w.code), "{}", text(&out.stderr));
    // Nothing of it left running: process, supervisor, keeper.
    let needle = w.dir.to_string_lossy().into_owned();
    assert!(
        eventually(Duration::from_secs(10), || {
            tether_tests::cleanup::processes_mentioning(&needle).is_empty()
        }),
        "{}: left running: {:?}",
        w.name,
        tether_tests::cleanup::processes_mentioning(&needle)
    );
}

fn killed_supervisor_case(tty: bool) {
    let env = StandaloneEnv::new();
    let id = env.id(if tty { "kept-t" } else { "kept" });
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.run(&id, &bundle);
    let mut w = exec_and_watch(&env, &id, &bundle, "w", 7, tty);
    let ours = oom_score_adj(nix::unistd::getpid().as_raw());
    if may_lower_oom_score() {
        assert_eq!(oom_score_adj(w.supervisor), -999, "the supervisor's score");
    } else {
        eprintln!("this root may not lower oom_score_adj: the supervisor keeps {ours}");
        assert_eq!(oom_score_adj(w.supervisor), ours);
        let log = std::fs::read_to_string(w.dir.join("supervisor.log")).unwrap_or_default();
        assert!(
            log.contains("level=warning") && log.contains("oom_score_adj"),
            "supervisor.log: {log:?}"
        );
    }
    assert_eq!(
        oom_score_adj(w.pid),
        ours,
        "the process does not inherit it"
    );
    // The keeper is small: 52-56 KiB measured (docs/standalone.md).
    let keeper = read_pid(&w.dir.join("keeper.pid")).expect("keeper.pid");
    let uss = uss_kib(keeper);
    assert!(uss < MAX_KEEPER_USS_KIB, "the keeper's USS is {uss} KiB");

    kill(w.supervisor);
    assert_taken_over(&mut w);
    // Until the process ends: still running, as far as a manager can tell.
    let ps: Value = serde_json::from_str(&env.ok("ps", &["--json", &id])).unwrap();
    assert_eq!(ps[1]["status"], "kept", "{ps}");
    // Its stdin closed with the supervisor (its only writer); a terminal's cannot be closed
    // by a keeper, which passes no input on.
    let out = quick(&env, "close-stdin", &[&id, "w"]);
    let want = if tty { 125 } else { 0 };
    assert_eq!(out.status.code(), Some(want), "{}", text(&out.stderr));
    assert_exit_recorded(&env, &id, w);
}

#[test]
fn a_killed_supervisors_exit_code_is_recorded_by_its_keeper() {
    killed_supervisor_case(false);
}

#[test]
fn a_killed_supervisors_tty_process_exit_code_is_recorded() {
    killed_supervisor_case(true);
}

#[test]
fn two_supervisors_killed_at_once_lose_nothing() {
    let env = StandaloneEnv::new();
    let id = env.id("kept2");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.run(&id, &bundle);
    let mut a = exec_and_watch(&env, &id, &bundle, "a", 7, false);
    let mut b = exec_and_watch(&env, &id, &bundle, "b", 9, true);
    kill(a.supervisor);
    kill(b.supervisor);
    assert_taken_over(&mut a);
    assert_taken_over(&mut b);
    assert_exit_recorded(&env, &id, a);
    assert_exit_recorded(&env, &id, b);
}

#[test]
fn a_killed_peas_exit_code_is_recorded() {
    let env = StandaloneEnv::new();
    let id = env.id("kept-pea");
    env.run(&id, &env.bundle("outer", &["sleep", "1000"]));
    let pea = env.bundle("pea", &["sh", "-c", &script("p", 7)]);
    let out = env.output(
        "exec",
        &[
            "--bundle",
            pea.path().to_str().unwrap(),
            "--share",
            "net",
            "--json",
            &id,
            "p",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pid = i32::try_from(v["pid"].as_i64().unwrap()).unwrap();
    let mut w = watch(&env, &id, "p", 7, false, pea.rootfs(), pid);
    kill(w.supervisor);
    assert_taken_over(&mut w);
    assert_exit_recorded(&env, &id, w);
    // Its runc container (left to `delete`: the keeper runs no runc) goes with the
    // container.
    env.ok("delete", &["--force", &id]);
    let out = Command::new(env.runc_env().runc_binary())
        .arg("--root")
        .arg(env.runc_root())
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout).trim(), "", "runc containers left");
}

/// Quotes `s` for sh.
fn sh_quote(s: &std::ffi::OsStr) -> String {
    format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"))
}

/// The manager runs `exec` and then `attach` in a session of its own, which then goes
/// (SIGHUP and SIGKILL to the whole session): the keeper and the supervisor are in theirs,
/// and the exit code is recorded all the same.
#[test]
fn the_exit_code_is_recorded_after_the_managers_session_is_gone() {
    let env = StandaloneEnv::new();
    let id = env.id("kept-sess");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.run(&id, &bundle);
    let process = bundle.exec_process(&["sh", "-c", &script("s", 7)], false);
    let spec = env.runc_env().dir().join("s.process.json");
    std::fs::write(&spec, serde_json::to_vec(&process).unwrap()).unwrap();
    let command = |sub: &str, args: &[&str]| {
        let mut c = env.cmd(sub);
        c.args(args);
        std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(sh_quote)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let seen = env.runc_env().dir().join("session-attach.out");
    let script = format!(
        "{} >/dev/null && exec {} >{} 2>&1",
        command("exec", &["--process", spec.to_str().unwrap(), &id, "s"]),
        command("attach", &[&id, "s"]),
        sh_quote(seen.as_os_str())
    );
    // setsid(1) makes its own session and execs sh in it (we are not a group leader).
    let mut manager = Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let session = i32::try_from(manager.id()).unwrap();
    let mark = bundle.rootfs().join("written-s");
    assert!(eventually(Duration::from_secs(30), || mark.exists()));
    let dir = env.process_dir(&id, "s");
    let supervisor = read_pid(&dir.join("supervisor.pid")).unwrap();
    // The attached manager has seen output: the session is the keeper's parent's.
    assert!(eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(&seen).is_ok_and(|s| s.contains("out1\n"))
    }));
    for sig in [
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGKILL,
    ] {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-session), sig);
    }
    let _ = manager.wait();
    assert!(
        alive(supervisor),
        "the supervisor went with the manager's session"
    );
    let pid = fifo::ProcessDir::from_path(&dir)
        .unwrap()
        .read_pid()
        .unwrap()
        .unwrap();
    // A new manager watches it, then the supervisor is killed.
    let mut w = watch(&env, &id, "s", 7, false, bundle.rootfs(), pid);
    kill(w.supervisor);
    assert_taken_over(&mut w);
    std::fs::write(bundle.rootfs().join("go-s"), "").unwrap();
    let out = quick(&env, "wait", &["--json", &id, "s"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    // The new attach got what the killed one had not read, and the code.
    let status = wait_bounded(&mut w.attach, Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(7));
    let got = std::fs::read_to_string(&w.attach_out).unwrap();
    assert!(got.lines().any(|l| l == "after"), "{got}");
    let _ = wait_bounded(&mut w.wait, Duration::from_secs(30));
    let needle = dir.to_string_lossy().into_owned();
    assert!(
        eventually(Duration::from_secs(10), || {
            tether_tests::cleanup::processes_mentioning(&needle).is_empty()
        }),
        "left running: {:?}",
        tether_tests::cleanup::processes_mentioning(&needle)
    );
}

/// Supervisor and keeper both killed: the status is lost, and every verb says what is
/// known at once. (The process writes nothing: with nobody holding its output's read
/// ends any more, a write would end it with SIGPIPE.)
#[test]
fn with_its_keeper_killed_too_wait_says_the_status_is_lost() {
    let env = StandaloneEnv::new();
    let id = env.id("lost");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.run(&id, &bundle);
    let sleeper = bundle.exec_process(&["sleep", "1000"], false);
    let pid = env.exec(&id, "w", &sleeper);
    let dir = env.process_dir(&id, "w");
    let sup = read_pid(&dir.join("supervisor.pid")).unwrap();
    if let Some(keeper) = read_pid(&dir.join("keeper.pid")) {
        kill(keeper);
        assert!(eventually(Duration::from_secs(10), || dead(keeper)));
    }
    kill(sup);
    assert!(eventually(Duration::from_secs(10), || !alive(sup)));
    assert!(alive(pid), "the process died with its supervisor");

    for sub in ["wait", "attach", "close-stdin"] {
        let out = quick(&env, sub, &[&id, "w"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(116), "{sub}: {err}");
        assert!(
            err.contains(&format!("still runs as pid {pid}")),
            "{sub}: {err}"
        );
        assert!(out.stdout.is_empty(), "{sub}: {}", text(&out.stdout));
    }
    let ps: Value = serde_json::from_str(&env.ok("ps", &["--json", &id])).unwrap();
    assert_eq!(ps[1]["id"], "w", "{ps}");
    assert_eq!(ps[1]["status"], "unsupervised", "{ps}");
    assert!(alive(pid), "still running after wait and attach");

    // Now the process goes too: nobody can know its exit status.
    kill(pid);
    assert!(eventually(Duration::from_secs(10), || !alive(pid)));
    let out = quick(&env, "wait", &["--json", &id, "w"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(117), "{err}");
    assert!(
        err.contains("exit status was lost") && err.contains(&format!("pid {pid}")),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let out = quick(&env, "attach", &[&id, "w"]);
    assert_eq!(out.status.code(), Some(117), "{}", text(&out.stderr));
    let ps: Value = serde_json::from_str(&env.ok("ps", &["--json", &id])).unwrap();
    assert_eq!(ps[1]["status"], "lost", "{ps}");
    let needle = dir.to_string_lossy().into_owned();
    assert!(eventually(Duration::from_secs(5), || {
        tether_tests::cleanup::processes_mentioning(&needle).is_empty()
    }));
}

//! Standalone supervisor: what happens when a supervisor is SIGKILLed (an OOM kill, an
//! operator's mistake) while its process runs (issue 12, point 7).
//!
//! * supervisors ask the OOM killer to spare them (`oom_score_adj` -999, when this root
//!   may lower it), and their processes do not inherit that;
//! * the process survives the supervisor's death, writing on (no SIGPIPE: the keeper
//!   holds the read ends of its output);
//! * `wait`, `attach` and `ps` say at once what is known: the process still runs as pid
//!   N (exit code 116, status "unsupervised"), and once it is gone, that its status was
//!   lost (117, "lost"); never a hang or a made-up exit code.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tether_tests::standalone_env::output_bounded;
use tether_tests::StandaloneEnv;

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

fn killed_supervisor_case(tty: bool) {
    let env = StandaloneEnv::new();
    let id = env.id(if tty { "supkt" } else { "supk" });
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.run(&id, &bundle);
    // An exec process, not the container's init: an init is its pid namespace's pid 1,
    // which the kernel never kills with a signal it raised itself (SIGPIPE, SIGHUP).
    // Writes a line every 20 ms, to stdout and stderr, for ever.
    let writer = bundle.exec_process(
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo out$i; echo err$i >&2; sleep 0.02; done",
        ],
        tty,
    );
    let pid = env.exec(&id, "w", &writer);
    let dir = env.process_dir(&id, "w");
    let sup: i32 = std::fs::read_to_string(dir.join("supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ours = oom_score_adj(nix::unistd::getpid().as_raw());
    if may_lower_oom_score() {
        assert_eq!(oom_score_adj(sup), -999, "the supervisor's score");
    } else {
        eprintln!("this root may not lower oom_score_adj: the supervisor keeps {ours}");
        assert_eq!(oom_score_adj(sup), ours);
        // Detected and logged, not fatal.
        let log = std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
        assert!(
            log.contains("level=warning") && log.contains("oom_score_adj"),
            "supervisor.log: {log:?}"
        );
    }
    assert_eq!(oom_score_adj(pid), ours, "the process does not inherit it");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(10), || !alive(sup)));
    // It goes on writing: 50 lines a second, for a second, on each stream.
    std::thread::sleep(Duration::from_secs(1));
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
    let ps: serde_json::Value = serde_json::from_str(&env.ok("ps", &["--json", &id])).unwrap();
    assert_eq!(ps[1]["id"], "w", "{ps}");
    assert_eq!(ps[1]["status"], "unsupervised", "{ps}");
    assert!(alive(pid), "still running after wait and attach");

    // Now the process goes too: nobody can know its exit status.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
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
    let ps: serde_json::Value = serde_json::from_str(&env.ok("ps", &["--json", &id])).unwrap();
    assert_eq!(ps[1]["status"], "lost", "{ps}");
    // The keeper has gone with the process.
    assert!(eventually(Duration::from_secs(5), || {
        !tether_tests::cleanup::processes_mentioning(dir.to_str().unwrap())
            .iter()
            .any(|(p, _)| alive(*p))
    }));
}

#[test]
fn a_killed_supervisor_leaves_its_process_writing_and_wait_says_so() {
    killed_supervisor_case(false);
}

#[test]
fn a_killed_supervisor_leaves_its_tty_process_running() {
    killed_supervisor_case(true);
}

//! Faults under a real containerd (issue 12): the shim or containerd SIGKILLed at a bad
//! moment. Each test has its own containerd (`ContainerdEnv`) and ends by checking that
//! nothing leaked. The Go shim's behaviour, where measured, is in the comments.

use std::time::{Duration, Instant};
use tether_tests::containerd_env::ContainerdEnv;

/// Generous bound for polls (status changes, events): they normally take milliseconds.
const POLL: Duration = Duration::from_secs(15);

fn sigkill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap_or_else(|e| panic!("kill -9 {pid}: {e}"));
}

#[test]
fn a_sigkilled_shim_is_cleaned_up_and_its_exit_has_the_real_pid() {
    // Before: the exit event had pid 0. containerd's runc shim reports the init's pid and
    // 137 (its `delete` answers "killed"), and so must tether's `delete`. The Go shim,
    // run through this very test (runtime io.containerd.runc.v2), passes it.
    let env = ContainerdEnv::start();
    let id = env.id("c");
    env.ctr_ok(&env.run_args(&["-d"], &id, &["/bin/sleep", "600"]));
    env.wait_task_status(&id, "RUNNING", POLL);
    let pid = env.task_pid(&id).expect("the task's pid");
    let shims = env.shim_pids();
    assert_eq!(shims.len(), 1, "one shim: {shims:?}");
    let events = env.events();
    sigkill(shims[0]);
    let exit = events.wait_for_line(&["/tasks/exit", &id], POLL);
    assert!(
        exit.as_deref().is_some_and(|l| l.contains(&format!("\"pid\":{pid}"))
            && l.contains("\"exit_status\":137")),
        "exit event with pid {pid} and status 137: {exit:?}\nevents: {}\n--- containerd log ---\n{}",
        events.stdout(),
        env.log_tail()
    );
    drop(events);
    // containerd deleted the task (runc delete --force killed the init).
    let deadline = Instant::now() + POLL;
    while env.task_status(&id).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = env.ctr(&["task", "rm", "-f", &id]);
    // Gone, or a zombie waiting for whichever ancestor reaps orphans.
    let state = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()?
                    .split_whitespace()
                    .next()
                    .map(str::to_owned)
            })
    };
    let deadline = Instant::now() + POLL;
    while state(pid).is_some_and(|s| s != "Z") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        state(pid).is_none_or(|s| s == "Z"),
        "the container's init {pid} outlived its shim (state {:?})\n--- containerd log ---\n{}",
        state(pid),
        env.log_tail()
    );
    env.ctr_ok(&["container", "rm", &id]);
    env.assert_no_leaks();
}

#[test]
fn execs_running_while_containerd_is_sigkilled_report_their_exit_codes_after_restart() {
    // 20 execs started in parallel, containerd SIGKILLed while they run, restarted: each
    // exec's exit (code = its number) reaches the new containerd.
    const EXECS: usize = 20;
    let mut env = ContainerdEnv::start();
    let id = env.id("c");
    env.ctr_ok(&env.run_args(&["-d"], &id, &["/bin/sleep", "600"]));
    env.wait_task_status(&id, "RUNNING", POLL);
    let go = env.rootfs().join("tmp/go");
    // Each exec marks that it runs (`/tmp/s<n>`): `ctr task ps` would also count the
    // shells' `sleep` children, and an exec whose ctr had not sent Start yet when
    // containerd was killed never runs (its ctr is killed with it).
    let script = "touch /tmp/s$0; while [ ! -e /tmp/go ]; do sleep 0.1; done; exit $0";
    let clients: Vec<_> = (1..=EXECS)
        .map(|n| {
            env.spawn_ctr(&[
                "task".to_string(),
                "exec".into(),
                "--exec-id".into(),
                format!("e{n}"),
                id.clone(),
                "/bin/sh".into(),
                "-c".into(),
                script.into(),
                n.to_string(),
            ])
        })
        .collect();
    // All started: every exec has left its mark in the rootfs.
    let tmp = env.rootfs().join("tmp");
    let deadline = Instant::now() + POLL;
    loop {
        let started = (1..=EXECS)
            .filter(|n| tmp.join(format!("s{n}")).exists())
            .count();
        if started == EXECS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{started} of {EXECS} execs started:\n{}",
            env.ctr_ok(&["task", "ps", &id])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    env.kill_containerd();
    drop(clients);
    env.restart_containerd();
    let events = env.events();
    std::fs::write(&go, b"").expect("create /tmp/go in the rootfs");
    let deadline = Instant::now() + POLL;
    let mut missing: Vec<usize> = (1..=EXECS).collect();
    while !missing.is_empty() && Instant::now() < deadline {
        let seen = events.stdout();
        missing.retain(|n| {
            !seen.lines().any(|l| {
                l.contains("/tasks/exit")
                    && l.contains(&format!("\"id\":\"e{n}\""))
                    && l.contains(&format!("\"exit_status\":{n}"))
            })
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        missing.is_empty(),
        "no exit with the right code for execs {missing:?}\nevents: {}\n--- containerd log ---\n{}",
        events.stdout(),
        env.log_tail()
    );
    drop(events);
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    let deadline = Instant::now() + POLL;
    while env.task_status(&id).as_deref() != Some("STOPPED") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = env.ctr(&["task", "rm", &id]);
    env.ctr_ok(&["container", "rm", &id]);
    env.assert_no_leaks();
}

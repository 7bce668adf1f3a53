//! runc-wrapper against real runc: the container lifecycle verbs on a busybox bundle.

use runc_wrapper::{ContainerStatus, CreateOpts, ExecOpts, ProcessIo};
use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};
use tether_tests::cgroup::{self, Hierarchy};
use tether_tests::{cleanup, RuncEnv};

/// A pipe whose write end becomes a container's stdout; the read end stays with the test.
fn pipe() -> (fs::File, OwnedFd) {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    (fs::File::from(r), w)
}

fn wait_for_status(env: &RuncEnv, id: &str, want: ContainerStatus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = env.runc().state(id).expect("runc state");
        if state.status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} stuck in {:?}, wanted {want:?}",
            state.status
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn create_start_state_ps_pause_resume_kill_delete() {
    let env = RuncEnv::new();
    let id = env.id("life");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    let pid_file = env.dir().join("init.pid");
    env.runc()
        .create(
            &id,
            bundle.path(),
            CreateOpts {
                pid_file: Some(pid_file.clone()),
                ..Default::default()
            },
        )
        .expect("runc create");

    let state = env.runc().state(&id).expect("state after create");
    assert_eq!(state.status, ContainerStatus::Created);
    assert_eq!(state.id, id);
    let pid: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(state.pid, pid, "state pid and --pid-file agree");

    env.runc().start(&id).expect("runc start");
    wait_for_status(&env, &id, ContainerStatus::Running);
    assert_eq!(env.runc().ps(&id).expect("ps"), vec![pid]);
    let listed = env.runc().list().expect("list");
    assert!(listed.iter().any(|s| s.id == id), "list shows {id}");

    env.runc().pause(&id).expect("pause");
    assert_eq!(
        env.runc().state(&id).unwrap().status,
        ContainerStatus::Paused
    );
    env.runc().resume(&id).expect("resume");
    assert_eq!(
        env.runc().state(&id).unwrap().status,
        ContainerStatus::Running
    );

    env.runc().kill(&id, libc::SIGKILL, false).expect("kill");
    wait_for_status(&env, &id, ContainerStatus::Stopped);
    env.runc().delete(&id, false).expect("delete");
    let err = env
        .runc()
        .state(&id)
        .expect_err("state of a deleted container");
    assert!(err.is_not_found(), "not-found error, got: {err}");
    assert!(cleanup::mounts_under(env.dir()).is_empty());
    assert!(cleanup::processes_mentioning(&id).is_empty());
}

#[test]
fn container_stdout_reaches_the_pipe_given_to_create() {
    let env = RuncEnv::new();
    let id = env.id("out");
    let bundle = env.bundle(
        "b",
        &["sh", "-c", "echo hello from $(hostname); echo oops >&2"],
    );
    let (mut out_r, out_w) = pipe();
    let (mut err_r, err_w) = pipe();
    env.runc()
        .create(
            &id,
            bundle.path(),
            CreateOpts {
                io: ProcessIo::from_fds(None, Some(out_w), Some(err_w)),
                ..Default::default()
            },
        )
        .expect("create");
    env.runc().start(&id).expect("start");
    let mut out = String::new();
    out_r.read_to_string(&mut out).unwrap();
    let mut err = String::new();
    err_r.read_to_string(&mut err).unwrap();
    assert_eq!(out, "hello from runc\n");
    assert_eq!(err, "oops\n");
    wait_for_status(&env, &id, ContainerStatus::Stopped);
    env.runc().delete(&id, false).expect("delete");
}

#[test]
fn exec_runs_a_process_and_reports_a_missing_binary_by_name() {
    let env = RuncEnv::new();
    let id = env.id("exec");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.runc()
        .create(&id, bundle.path(), CreateOpts::default())
        .expect("create");
    env.runc().start(&id).expect("start");

    let (mut out_r, out_w) = pipe();
    let process = bundle.exec_process(&["sh", "-c", "echo exec says hi; exit 0"], false);
    let pid_file = env.dir().join("exec.pid");
    env.runc()
        .exec(
            &id,
            &serde_json::to_vec(&process).unwrap(),
            ExecOpts {
                pid_file: Some(pid_file.clone()),
                detach: true,
                io: ProcessIo::from_fds(None, Some(out_w), None),
                ..Default::default()
            },
        )
        .expect("exec");
    let mut out = String::new();
    out_r.read_to_string(&mut out).unwrap();
    assert_eq!(out, "exec says hi\n");
    assert!(pid_file.exists(), "exec wrote its --pid-file");

    let missing = bundle.exec_process(&["/no/such/binary"], false);
    let err = env
        .runc()
        .exec(
            &id,
            &serde_json::to_vec(&missing).unwrap(),
            ExecOpts {
                detach: true,
                ..Default::default()
            },
        )
        .expect_err("exec of a missing binary fails");
    let msg = err.to_string();
    eprintln!("error as the user sees it: {msg}");
    assert!(
        msg.contains("/no/such/binary") && msg.contains("no such file or directory"),
        "runc's own message names the binary: {msg}"
    );
    env.runc().delete(&id, true).expect("delete --force");
}

#[test]
fn update_changes_the_memory_limit_and_stats_see_the_container() {
    let env = RuncEnv::new();
    let id = env.id("upd");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.runc()
        .create(&id, bundle.path(), CreateOpts::default())
        .expect("create");
    env.runc().start(&id).expect("start");

    let limit: i64 = 64 * 1024 * 1024;
    env.runc()
        .update(
            &id,
            format!(r#"{{"memory":{{"limit":{limit}}},"pids":{{"limit":77}}}}"#).as_bytes(),
        )
        .expect("update");
    let pid = env.runc().state(&id).unwrap().pid;
    // The limit as the kernel has it: v1's memory.limit_in_bytes or v2's memory.max (a
    // process with neither fails the test rather than passing unchecked).
    let memcg = cgroup::dir_of(pid, "memory");
    let file = memcg.join(match Hierarchy::current() {
        Hierarchy::V1 => "memory.limit_in_bytes",
        Hierarchy::V2 => "memory.max",
    });
    let file = file.display();
    let got: i64 = fs::read_to_string(file.to_string())
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(got, limit, "{file}");
    let pids = cgroup::dir_of(pid, "pids");
    assert_eq!(cgroup::read(&pids, "pids.max"), "77", "{}", pids.display());

    let stats = env.runc().stats(&id).expect("events --stats");
    assert!(stats.pids.current >= 1, "stats count the init process");
    assert_eq!(stats.pids.limit, 77);
    assert!(stats.memory.usage.usage > 0, "memory usage reported");

    env.runc()
        .kill(&id, libc::SIGKILL, true)
        .expect("kill --all");
    wait_for_status(&env, &id, ContainerStatus::Stopped);
    env.runc().delete(&id, false).expect("delete");
}

#[test]
fn missing_binary_in_create_gives_runcs_message() {
    let env = RuncEnv::new();
    let id = env.id("nobin");
    let bundle = env.bundle("b", &["nope"]);
    let err = env
        .runc()
        .create(&id, bundle.path(), CreateOpts::default())
        .expect_err("create of a missing binary fails");
    let msg = err.to_string();
    eprintln!("error as the user sees it: {msg}");
    assert!(
        msg.contains(r#"exec: "nope": executable file not found in $PATH"#),
        "runc's own message: {msg}"
    );
    assert!(err.runtime_message().is_some());
}

#[test]
fn missing_rootfs_is_named_in_the_error() {
    let env = RuncEnv::new();
    let id = env.id("norootfs");
    let bundle = env.bundle("b", &["true"]);
    fs::remove_dir_all(bundle.rootfs()).unwrap();
    let err = env
        .runc()
        .create(&id, bundle.path(), CreateOpts::default())
        .expect_err("create without a rootfs fails");
    let msg = err.to_string();
    eprintln!("error as the user sees it: {msg}");
    assert!(msg.contains("rootfs"), "error names the rootfs: {msg}");
    assert!(env.runc().state(&id).is_err(), "nothing half-created");
}

#[test]
fn malformed_config_is_reported() {
    let env = RuncEnv::new();
    let id = env.id("badcfg");
    let bundle = env.bundle("b", &["true"]);
    fs::write(bundle.path().join("config.json"), b"{ this is not json").unwrap();
    let err = env
        .runc()
        .create(&id, bundle.path(), CreateOpts::default())
        .expect_err("create with a bad config fails");
    let msg = err.to_string();
    eprintln!("error as the user sees it: {msg}");
    assert!(
        msg.contains("config") || msg.contains("invalid character"),
        "error says the config is bad: {msg}"
    );
}

#[test]
fn operations_on_an_unknown_container_are_not_found() {
    let env = RuncEnv::new();
    let id = env.id("ghost");
    for err in [
        env.runc().state(&id).unwrap_err(),
        env.runc().kill(&id, libc::SIGTERM, false).unwrap_err(),
        env.runc().pause(&id).unwrap_err(),
        env.runc().ps(&id).unwrap_err(),
    ] {
        assert!(err.is_not_found(), "not found: {err}");
        assert!(err.to_string().contains(&id) || err.to_string().contains("not exist"));
    }
}

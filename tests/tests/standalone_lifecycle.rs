//! Standalone supervisor: it outlives its manager; the container's init takes its
//! processes with it; errors are clear, distinct and leave nothing behind.

use std::io::Read;
use std::path::Path;
use std::time::Duration;
use tether_tests::StandaloneEnv;

fn supervisor_pid(dir: &Path) -> i32 {
    std::fs::read_to_string(dir.join("supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// (ppid, sid) of `pid`, from /proc.
fn ppid_sid(pid: i32) -> (i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    (f[1].parse().unwrap(), f[3].parse().unwrap())
}

#[test]
fn supervisors_outlive_their_manager_and_init_takes_its_processes_along() {
    let env = StandaloneEnv::new();
    let id = env.id("life");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.run(&id, &bundle);
    let names: Vec<String> = (0..3).map(|n| format!("e{n}")).collect();
    for n in &names {
        env.exec(&id, n, &bundle.exec_process(&["sleep", "1000"], false));
    }
    // The manager (the `exec` command) has exited; the supervisors live on, detached,
    // each the child of its keeper, each of the two leading a session of its own.
    for n in names.iter().map(String::as_str).chain(["init"]) {
        let dir = env.process_dir(&id, n);
        let pid = supervisor_pid(&dir);
        let keeper: i32 = std::fs::read_to_string(dir.join("keeper.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let (ppid, sid) = ppid_sid(pid);
        assert_eq!(ppid, keeper, "the keeper is the supervisor's parent");
        assert_eq!(sid, pid, "the supervisor leads its own session");
        let (ppid, sid) = ppid_sid(keeper);
        assert_ne!(ppid, nix::unistd::getpid().as_raw());
        assert_eq!(sid, keeper, "the keeper leads its own session");
    }
    // Readers of every exec's `exit` FIFO, started while the processes live.
    let readers: Vec<_> = names
        .iter()
        .map(|n| {
            let path = env.process_dir(&id, n).join("exit");
            let mut f = fifo::open_read(&path, false).unwrap();
            std::thread::spawn(move || {
                let mut b = Vec::new();
                f.read_to_end(&mut b).unwrap();
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    assert!(readers.iter().all(|r| !r.is_finished()));

    env.ok("kill", &["--signal", "KILL", &id]);
    for r in readers {
        r.join().unwrap();
    }
    for n in &names {
        let out = env.output("wait", &[&id, n]);
        assert_eq!(out.status.code(), Some(137), "{n}");
    }
    assert_eq!(env.output("wait", &[&id]).status.code(), Some(137));
    let state: serde_json::Value =
        serde_json::from_str(&env.ok("state", &["--json", &id])).unwrap();
    assert_eq!(state["status"], "stopped");

    env.ok("delete", &[&id]);
    assert!(!env.depot().join(&id).exists());
    let left = tether_tests::cleanup::processes_mentioning(&env.depot().to_string_lossy());
    assert!(left.is_empty(), "supervisors left: {left:?}");
    assert_eq!(env.output("state", &[&id]).status.code(), Some(121));
}

#[test]
fn errors_have_distinct_codes_and_leave_nothing_behind() {
    let env = StandaloneEnv::new();
    let id = env.id("err");
    let bundle = env.bundle("b", &["sleep", "1000"]);

    // Not a bundle.
    let not_bundle = env.runc_env().dir().join("empty");
    std::fs::create_dir(&not_bundle).unwrap();
    let out = env.output("run", &["--bundle", not_bundle.to_str().unwrap(), &id]);
    assert_eq!(out.status.code(), Some(122), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an OCI bundle"));
    assert!(!env.depot().join(&id).exists());

    // Usage.
    assert_eq!(env.output("run", &[&id]).status.code(), Some(2));
    assert_eq!(
        env.output("run", &["--bundle", "x", "a/b"]).status.code(),
        Some(2)
    );

    env.run(&id, &bundle);
    // The container id exists.
    let out = env.output("run", &["--bundle", bundle.path().to_str().unwrap(), &id]);
    assert_eq!(out.status.code(), Some(120));
    // The process id exists.
    let p = bundle.exec_process(&["sleep", "1000"], false);
    env.exec(&id, "x", &p);
    let out = env.exec_output(&id, "x", &p);
    assert_eq!(out.status.code(), Some(120), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    // A process spec that is not one.
    let out = env.exec_output(&id, "bad", &serde_json::json!({"args": []}));
    assert_eq!(out.status.code(), Some(122));
    assert!(!env.process_dir(&id, "bad").exists());
    // runc fails (no such binary in the container): the directory goes again.
    let out = env.exec_output(&id, "nobin", &bundle.exec_process(&["/nope"], false));
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(!env.process_dir(&id, "nobin").exists());
    // Running: delete refuses without --force.
    assert_eq!(env.output("delete", &[&id]).status.code(), Some(124));
    // Unknown container / process.
    assert_eq!(env.output("wait", &["nope"]).status.code(), Some(121));
    assert_eq!(
        env.output("attach", &[&id, "nope"]).status.code(),
        Some(121)
    );

    // The container is gone (behind our back): exec says so.
    std::process::Command::new(env.runc_env().runc_binary())
        .arg("--root")
        .arg(env.runc_env().root())
        .args(["delete", "--force", &id])
        .status()
        .unwrap();
    let out = env.exec_output(&id, "late", &p);
    assert_eq!(out.status.code(), Some(121), "{out:?}");
    assert!(!env.process_dir(&id, "late").exists());
    env.ok("delete", &[&id]);

    // A depot the caller may not write (read-only file system).
    let ro = env.runc_env().dir().join("ro");
    std::fs::create_dir(&ro).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &ro,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .unwrap();
    let mut cmd = env.cmd("run");
    // A later --depot wins.
    cmd.args(["--depot", ro.join("depot").to_str().unwrap()]);
    cmd.args(["--bundle", bundle.path().to_str().unwrap(), &id]);
    let out = tether_tests::standalone_env::output_bounded(cmd, Duration::from_secs(30));
    let _ = nix::mount::umount2(&ro, nix::mount::MntFlags::MNT_DETACH);
    assert_eq!(out.status.code(), Some(123), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));
}

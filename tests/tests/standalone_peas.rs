//! Peas (`exec --bundle`): a process that is its own runc container, with its own rootfs
//! and limits, joining namespaces of the outer container's init; supervised like any
//! process, its life tied to the outer container's. Real runc: a busybox rootfs for the
//! outer container, another one (with a marker file) for the pea.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;
use tether_tests::manager_output::{counter, expected, read_then_kill};
use tether_tests::{Bundle, StandaloneEnv};

/// The pea's memory limit.
const PEA_MEMORY: u64 = 64 << 20;

/// A bundle with its own busybox rootfs, which holds `/marker` (the outer's does not), a
/// memory limit of its own, running `script`.
fn pea_bundle(env: &StandaloneEnv, name: &str, script: &str) -> Bundle {
    let mut b = env.bundle(name, &["sh", "-c", script]);
    std::fs::write(b.rootfs().join("marker"), "pea-rootfs\n").unwrap();
    b.config_mut()["linux"]["resources"]["memory"] = json!({ "limit": PEA_MEMORY });
    b.save().unwrap();
    b
}

fn exec_pea(env: &StandaloneEnv, id: &str, pea: &str, bundle: &Bundle, extra: &[&str]) -> Output {
    let mut args = vec!["--bundle", bundle.path().to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    args.extend([id, pea]);
    env.output("exec", &args)
}

fn exec_pea_ok(env: &StandaloneEnv, id: &str, pea: &str, bundle: &Bundle, extra: &[&str]) -> i32 {
    let out = exec_pea(env, id, pea, bundle, extra);
    assert!(
        out.status.success(),
        "exec --bundle {pea}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    i32::try_from(v["pid"].as_i64().unwrap()).unwrap()
}

/// What `runc list` under the env's root shows.
fn runc_list(env: &StandaloneEnv) -> Vec<String> {
    let out = std::process::Command::new(env.runc_env().runc_binary())
        .arg("--root")
        .arg(env.runc_root())
        .args(["list", "-q"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The memory cgroup directory of `pid` and its limit file (v1 or v2).
fn memory_limit_file(pid: i32) -> PathBuf {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        if controllers.split(',').any(|c| c == "memory") {
            return Path::new("/sys/fs/cgroup/memory")
                .join(path.trim_start_matches('/'))
                .join("memory.limit_in_bytes");
        }
    }
    let v2 = cgroup.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    Path::new("/sys/fs/cgroup")
        .join(v2.trim_start_matches('/'))
        .join("memory.max")
}

fn read_exit_code(dir: &Path) -> i32 {
    // `exit` reaches EOF, then `exitcode` is final.
    let mut exit = fifo::open_read(&dir.join("exit"), false).unwrap();
    let mut rest = Vec::new();
    exit.read_to_end(&mut rest).unwrap();
    fifo::ProcessDir::from_path(dir)
        .unwrap()
        .read_exit()
        .unwrap()
        .expect("exitcode")
        .code
}

/// Nothing of the test's containers left: no runc container, no process mentioning the
/// test's dir, no depot entry.
fn assert_nothing_left(env: &StandaloneEnv, id: &str) {
    assert_eq!(
        runc_list(env),
        Vec::<String>::new(),
        "runc still knows containers"
    );
    assert!(!env.depot().join(id).exists(), "depot entry left");
    let dir = env.runc_env().dir().to_string_lossy().into_owned();
    let left = tether_tests::cleanup::processes_mentioning(&dir);
    assert!(left.is_empty(), "processes left: {left:?}");
}

#[test]
fn a_pea_has_its_own_rootfs_and_memory_limit_and_shares_net_and_pid() {
    let env = StandaloneEnv::new();
    let id = env.id("pea-outer");
    // The outer container answers on 127.0.0.1:7777 in its own network namespace.
    let outer = env.bundle(
        "outer",
        &["nc", "-ll", "-p", "7777", "-e", "echo", "hello-from-outer"],
    );
    let outer_pid = env.run(&id, &outer);
    assert!(!outer.rootfs().join("marker").exists());
    let script = "cat /marker; readlink /proc/self/ns/net; tr '\\0' ' ' </proc/1/cmdline; echo; \
                  i=0; until nc 127.0.0.1 7777 </dev/null; do i=$((i+1)); [ $i -gt 50 ] && break; \
                  sleep 0.1; done; echo ready; sleep 30";
    let bundle = pea_bundle(&env, "pea", script);
    let pea_pid = exec_pea_ok(&env, &id, "p1", &bundle, &["--share", "net,pid,ipc,uts"]);

    // Its own runc container, a process of the outer container for the depot.
    let runc_id = format!("{id}.p1");
    assert!(
        runc_list(&env).contains(&runc_id),
        "runc list: {:?}",
        runc_list(&env)
    );
    let ps: Value = serde_json::from_str(&env.ok("ps", &["--json", &id])).unwrap();
    let p1 = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "p1")
        .unwrap();
    assert_eq!(p1["kind"], "pea");
    assert_eq!(p1["runc_id"], runc_id.as_str());
    assert_eq!(p1["status"], "running");
    let dir = env.process_dir(&id, "p1");
    assert!(
        dir.join("config.json").is_file(),
        "the process directory is its bundle"
    );

    let mut attach = env.cmd("attach");
    attach
        .args([&id, "p1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut attach = attach.spawn().unwrap();
    let mut reader = BufReader::new(attach.stdout.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "EOF after {lines:?}"
        );
        let done = line == "ready\n";
        lines.push(line);
        if done {
            break;
        }
    }
    let outer_net = std::fs::read_link(format!("/proc/{outer_pid}/ns/net")).unwrap();
    assert_eq!(lines[0], "pea-rootfs\n", "its own rootfs: {lines:?}");
    assert_eq!(
        lines[1].trim(),
        outer_net.to_str().unwrap(),
        "the outer's netns"
    );
    assert!(
        lines[2].starts_with("nc -ll -p 7777"),
        "pid 1 of its pid namespace is the outer init: {lines:?}"
    );
    assert!(
        lines.contains(&"hello-from-outer\n".to_string()),
        "reached the outer's socket: {lines:?}"
    );
    let limit = std::fs::read_to_string(memory_limit_file(pea_pid)).unwrap();
    assert_eq!(limit.trim(), PEA_MEMORY.to_string(), "its own memory limit");
    let outer_limit = std::fs::read_to_string(memory_limit_file(outer_pid)).unwrap();
    assert_ne!(outer_limit.trim(), PEA_MEMORY.to_string());

    // Killing the pea leaves the outer container alone; its runc container goes.
    env.ok("kill", &["--signal", "KILL", &id, "p1"]);
    let status = tether_tests::standalone_env::wait_bounded(&mut attach, Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(137));
    assert_eq!(read_exit_code(&dir), 137);
    assert!(!runc_list(&env).contains(&runc_id), "deleted at its exit");
    let state: Value = serde_json::from_str(&env.ok("state", &["--json", &id])).unwrap();
    assert_eq!(
        state["status"], "running",
        "a pea's exit does not touch the outer"
    );

    env.ok("delete", &["--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn a_new_manager_gets_the_rest_of_a_peas_output_in_order() {
    let env = StandaloneEnv::new();
    let id = env.id("pea-reattach");
    env.run(&id, &env.bundle("outer", &["sleep", "1000"]));
    let bundle = pea_bundle(&env, "pea", &counter(150, "0.01", 5));
    exec_pea_ok(&env, &id, "p1", &bundle, &["--share", "net"]);

    let mut first = env.cmd("attach");
    first.args([&id, "p1"]);
    // SIGKILLed mid-stream; what it had passed on stays ours
    let mut got = read_then_kill(first, 20);
    assert!(got.len() < expected(150).len(), "killed too late");

    let dir = env.process_dir(&id, "p1");
    let out = env.output("attach", &["--dir", dir.to_str().unwrap()]);
    got.push_str(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(got, expected(150), "every line, in order");
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(read_exit_code(&dir), 5);
    assert_eq!(env.output("wait", &[&id, "p1"]).status.code(), Some(5));

    env.ok("delete", &["--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn killing_the_outer_init_kills_its_peas() {
    let env = StandaloneEnv::new();
    let id = env.id("pea-tied");
    env.run(&id, &env.bundle("outer", &["sleep", "1000"]));
    // Its own pid namespace: only the tie to the outer init can end it.
    let bundle = pea_bundle(&env, "pea", "while :; do echo tick; sleep 0.05; done");
    let pea_pid = exec_pea_ok(&env, &id, "p1", &bundle, &["--share", "net,ipc"]);
    let cgroup = memory_limit_file(pea_pid);
    let cgroup = cgroup.parent().unwrap().to_path_buf();
    assert!(cgroup.is_dir());
    let runc_id = format!("{id}.p1");
    assert!(runc_list(&env).contains(&runc_id));

    env.ok("kill", &["--signal", "KILL", &id]);
    let wait = env.output("wait", &[&id, "p1"]);
    assert_eq!(wait.status.code(), Some(137), "the pea's exit reaches EOF");
    let dir = env.process_dir(&id, "p1");
    assert_eq!(read_exit_code(&dir), 137);
    assert!(!runc_list(&env).contains(&runc_id));
    assert!(!cgroup.exists(), "its cgroup {} is gone", cgroup.display());
    // The outer container stays (stopped) until deleted, with its pea's record.
    let ps: Value = serde_json::from_str(&env.ok("ps", &["--json", &id])).unwrap();
    assert!(
        ps.as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"] == "exited"),
        "{ps}"
    );

    env.ok("delete", &[&id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn delete_force_of_the_outer_container_deletes_its_peas() {
    let env = StandaloneEnv::new();
    let id = env.id("pea-del");
    env.run(&id, &env.bundle("outer", &["sleep", "1000"]));
    let bundle = pea_bundle(&env, "pea", "sleep 1000");
    exec_pea_ok(&env, &id, "p1", &bundle, &["--share", "net,pid"]);
    exec_pea_ok(&env, &id, "p2", &bundle, &[]);
    assert_eq!(runc_list(&env).len(), 3);
    env.ok("delete", &["--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn a_pea_with_a_terminal() {
    let env = StandaloneEnv::new();
    let id = env.id("pea-tty");
    env.run(&id, &env.bundle("outer", &["sleep", "1000"]));
    let bundle = pea_bundle(&env, "pea", "tty; cat /marker; sleep 1; stty size; exit 4");
    exec_pea_ok(&env, &id, "p1", &bundle, &["--tty"]);
    let dir = env.process_dir(&id, "p1");
    assert!(dir.join("tty").exists());
    // Resized through `winsz` as any process is.
    let mut winsz = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(dir.join("winsz"))
        .unwrap();
    std::io::Write::write_all(&mut winsz, b"{\"columns\":100,\"rows\":30}").unwrap();
    drop(winsz);
    let out = env.output("attach", &[&id, "p1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("/dev/pts/"), "{text:?}");
    assert!(text.contains("pea-rootfs\r\n"), "{text:?}");
    assert!(text.contains("30 100\r\n"), "{text:?}");
    assert_eq!(out.status.code(), Some(4));
    env.ok("delete", &["--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn bad_peas_are_refused_and_leave_nothing() {
    let env = StandaloneEnv::new();
    let id = env.id("pea-bad");
    env.run(&id, &env.bundle("outer", &["sleep", "1000"]));
    let bundle = pea_bundle(&env, "pea", "true");
    let code = |out: &Output| out.status.code();

    // Not a bundle: a directory without config.json.
    let out = env.output(
        "exec",
        &["--bundle", bundle.rootfs().to_str().unwrap(), &id, "p1"],
    );
    assert_eq!(
        code(&out),
        Some(122),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an OCI bundle"));
    // A namespace the outer container does not have of its own (runc's template makes no
    // user namespace): it would join the host's.
    let out = exec_pea(&env, &id, "p1", &bundle, &["--share", "net,user"]);
    assert_eq!(code(&out), Some(122));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no user namespace of its own"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An unknown kind.
    let out = exec_pea(&env, &id, "p1", &bundle, &["--share", "net,nope"]);
    assert_eq!(code(&out), Some(2));
    // A pea whose process cannot start: runc's message, nothing half-created.
    let mut broken = pea_bundle(&env, "broken", "true");
    broken.set_args(&["/no/such/binary"]).save().unwrap();
    let out = exec_pea(&env, &id, "p1", &broken, &[]);
    assert_eq!(code(&out), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/no/such/binary"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(runc_list(&env), vec![id.clone()], "no half-created pea");
    assert!(
        !env.process_dir(&id, "p1").exists(),
        "no process directory left"
    );

    // A runc container of the pea's name: refused (120), and that container untouched.
    let namesake = format!("{id}.p1");
    env.run(&namesake, &env.bundle("namesake", &["sleep", "1000"]));
    let out = exec_pea(&env, &id, "p1", &bundle, &[]);
    assert_eq!(
        code(&out),
        Some(120),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state: Value = serde_json::from_str(&env.ok("state", &["--json", &namesake])).unwrap();
    assert_eq!(state["status"], "running");
    assert!(!env.process_dir(&id, "p1").exists());
    env.ok("delete", &["--force", &namesake]);

    // The outer container is not running.
    env.ok("kill", &["--signal", "KILL", &id]);
    env.output("wait", &[&id]);
    let out = exec_pea(&env, &id, "p1", &bundle, &["--share", "net"]);
    assert_eq!(
        code(&out),
        Some(121),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!env.process_dir(&id, "p1").exists());
    assert_eq!(runc_list(&env), vec![id.clone()]);

    env.ok("delete", &[&id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn a_manager_without_root_uses_a_peas_directory() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    const IO_ID: u32 = 1234;
    let env = StandaloneEnv::new();
    env.let_others_traverse();
    let id = env.id("pea-iou");
    env.run(&id, &env.bundle("outer", &["sleep", "1000"]));
    let bundle = pea_bundle(
        &env,
        "pea",
        "read line; echo out:$line; cat /marker; exit 7",
    );
    let uid = IO_ID.to_string();
    exec_pea_ok(
        &env,
        &id,
        "p1",
        &bundle,
        &["--share", "net", "--io-uid", &uid, "--io-gid", &uid],
    );
    let dir = env.process_dir(&id, "p1");
    let meta = std::fs::metadata(&dir).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, IO_ID, 0o710)
    );
    let config = std::fs::metadata(dir.join("config.json")).unwrap();
    assert_eq!(
        (config.uid(), config.mode() & 0o7777),
        (0, 0o600),
        "root's alone"
    );

    // The manager, as uid 1234, attaches by directory and feeds it a line.
    let mut attach = env.cmd("attach");
    attach
        .args(["--dir", dir.to_str().unwrap()])
        .uid(IO_ID)
        .gid(IO_ID);
    let out = tether_tests::standalone_env::output_bounded_with_input(
        attach,
        b"hello\n",
        Duration::from_secs(30),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "out:hello\npea-rootfs\n"
    );
    assert_eq!(out.status.code(), Some(7));
    env.ok("delete", &["--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn deleting_a_pea_alone_deletes_its_runc_container() {
    let env = StandaloneEnv::new();
    let id = env.id("pea-del1");
    env.run(&id, &env.bundle("outer", &["sleep", "1000"]));
    let bundle = pea_bundle(&env, "pea", "sleep 1000");
    let pea_pid = exec_pea_ok(&env, &id, "p1", &bundle, &["--share", "net"]);
    let cgroup = memory_limit_file(pea_pid).parent().unwrap().to_path_buf();
    let runc_id = format!("{id}.p1");
    // Running: refused (124) without --force.
    assert_eq!(env.output("delete", &[&id, "p1"]).status.code(), Some(124));
    assert!(runc_list(&env).contains(&runc_id));
    // The init goes only with its container.
    assert_eq!(env.output("delete", &[&id, "init"]).status.code(), Some(2));
    env.ok("delete", &["--force", &id, "p1"]);
    assert!(!env.process_dir(&id, "p1").exists());
    assert!(!runc_list(&env).contains(&runc_id), "{:?}", runc_list(&env));
    assert!(!cgroup.exists(), "its cgroup is gone");
    assert!(!std::path::Path::new(&format!("/proc/{pea_pid}")).exists());
    let state: Value = serde_json::from_str(&env.ok("state", &["--json", &id])).unwrap();
    assert_eq!(state["status"], "running", "the container is untouched");
    assert_eq!(state["processes"].as_array().unwrap().len(), 1);
    env.ok("delete", &["--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn a_pea_whose_container_stops_while_it_starts_is_undone() {
    use std::os::unix::fs::PermissionsExt;
    let env = StandaloneEnv::new();
    let id = env.id("pea-race");
    env.run(&id, &env.bundle("outer", &["sleep", "1000"]));
    // A runc that, after `run` has started the pea, waits for the test to kill the
    // container's init (injecting the race, not replacing runc).
    let dir = env.runc_env().dir();
    let mark = dir.join("pea-started");
    let wrapper = dir.join("runc-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\"{real}\" \"$@\"; rc=$?\ncase \" $* \" in *\" run \"*) touch \"{mark}\"; \
             while [ ! -e \"{mark}.go\" ]; do sleep 0.05; done;; esac\nexit $rc\n",
            real = env.runc_env().runc_binary().display(),
            mark = mark.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bundle = pea_bundle(&env, "pea", "sleep 1000");
    let mut exec = env.cmd("exec");
    exec.args(["--runc", wrapper.to_str().unwrap()])
        .args([
            "--bundle",
            bundle.path().to_str().unwrap(),
            "--share",
            "net",
            &id,
            "p1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut exec = exec.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !mark.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "runc run never returned"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        runc_list(&env).contains(&format!("{id}.p1")),
        "the pea started"
    );
    env.ok("kill", &["--signal", "KILL", &id]);
    assert_eq!(env.output("wait", &[&id]).status.code(), Some(137));
    std::fs::write(mark.with_extension("go"), "").unwrap();
    let status = tether_tests::standalone_env::wait_bounded(&mut exec, Duration::from_secs(20));
    let mut err = String::new();
    exec.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(121), "{err}");
    assert!(err.contains("stopped while its pea started"), "{err}");
    assert!(
        !env.process_dir(&id, "p1").exists(),
        "no process directory left"
    );
    assert_eq!(runc_list(&env), vec![id.clone()], "no pea left in runc");
    env.ok("delete", &[&id]);
    assert_nothing_left(&env, &id);
}

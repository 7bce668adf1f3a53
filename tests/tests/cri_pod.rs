//! A pod driven through containerd's CRI with `crictl`, the way kubelet drives a node
//! (see `tether_tests::cri_env`): `runp` a pod on a runtime handler, `create` + `start` two
//! containers in it, `exec -s`, an exec on a terminal, `logs`, `stats`, `stop` + `rm` of
//! one container while the other runs, `stopp` + `rmp`.
//!
//! For `tether` it asserts exactly one shim process per pod, serving the pause container
//! and both containers, that the shim exits once the pod is removed, and that nothing is
//! left: no process, mount, cgroup, socket or FIFO. The same scenario on the `runc`
//! handler (the Go shim) keeps the scenario itself honest.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};
use tether_tests::cri_env::{cri_log_lines, BedProcess};
use tether_tests::CriEnv;

/// critest's default image (served offline by the bed).
const IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
/// Lines the talking container writes to each of stdout and stderr.
const LINES: usize = 50;
/// Generous bound for polls that normally take milliseconds.
const POLL: Duration = Duration::from_secs(15);

/// The Go shim of containerd 1.6 (Debian) or of the 2.3 build, by `CRI_CONTAINERD`.
fn go_shim() -> PathBuf {
    match std::env::var("CRI_CONTAINERD").as_deref() {
        Ok("2.3") => {
            PathBuf::from("/var/cache/tether/go/containerd-v2.3.7/bin/containerd-shim-runc-v2")
        }
        _ => PathBuf::from("/usr/bin/containerd-shim-runc-v2"),
    }
}

fn write_json(dir: &Path, name: &str, value: serde_json::Value) -> String {
    let path = dir.join(name);
    fs::write(&path, value.to_string()).expect("write a crictl config file");
    path.display().to_string()
}

fn wait_until(what: &str, env: &CriEnv, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + POLL;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n--- containerd log ---\n{}",
            env.log_tail()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// `crictl inspect[p] -o json` → `.info.pid` (a pid in the bed's PID namespace).
fn bed_pid_of(env: &CriEnv, verb: &str, id: &str) -> i32 {
    let json: serde_json::Value =
        serde_json::from_str(&env.crictl_ok(&[verb, "-o", "json", id])).expect("inspect JSON");
    let pid = json["info"]["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no .info.pid in crictl {verb} {id}: {json}"));
    i32::try_from(pid).expect("a pid fits in i32")
}

fn container_state(env: &CriEnv, id: &str) -> String {
    let json: serde_json::Value =
        serde_json::from_str(&env.crictl_ok(&["inspect", "-o", "json", id])).expect("JSON");
    json["status"]["state"].as_str().unwrap_or("?").to_string()
}

fn numbered(prefix: &str) -> Vec<String> {
    (1..=LINES).map(|i| format!("{prefix}-{i}")).collect()
}

/// The scenario on `handler`, whose shim processes run `shim_exe`.
fn pod_scenario(handler: &str, shim_exe: &Path) {
    let Some(env) = CriEnv::start_or_skip(&format!("cri_pod on {handler}")) else {
        return;
    };
    let work = env.work();
    let logs = work.join("podlogs");
    fs::create_dir_all(&logs).expect("pod log dir");
    let shims_before = env.processes_of(shim_exe).len();
    assert_eq!(shims_before, 0, "a {handler} shim runs before any pod");

    let pod = write_json(
        &work,
        "pod.json",
        serde_json::json!({
            "metadata": {"name": "cri-pod", "namespace": "tether-test", "uid": "cri-pod-uid", "attempt": 0},
            "hostname": "cri-pod",
            "log_directory": logs,
            "linux": {}
        }),
    );
    let talker_script = format!(
        "i=1; while [ $i -le {LINES} ]; do echo out-$i; echo err-$i >&2; i=$((i+1)); done; \
         trap 'exit 0' TERM; while :; do sleep 1; done"
    );
    let talker = write_json(
        &work,
        "talker.json",
        serde_json::json!({
            "metadata": {"name": "talker"},
            "image": {"image": IMAGE},
            "command": ["/bin/sh", "-c", talker_script],
            "log_path": "talker.log"
        }),
    );
    let worker = write_json(
        &work,
        "worker.json",
        serde_json::json!({
            "metadata": {"name": "worker"},
            "image": {"image": IMAGE},
            "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
            "log_path": "worker.log"
        }),
    );

    env.crictl_ok(&["pull", IMAGE]);
    let pod_id = env.crictl_ok(&["runp", "--runtime", handler, &pod]);
    let talker_id = env.crictl_ok(&["create", &pod_id, &talker, &pod]);
    let worker_id = env.crictl_ok(&["create", &pod_id, &worker, &pod]);
    env.crictl_ok(&["start", &talker_id]);
    env.crictl_ok(&["start", &worker_id]);
    wait_until("both containers running", &env, || {
        container_state(&env, &talker_id) == "CONTAINER_RUNNING"
            && container_state(&env, &worker_id) == "CONTAINER_RUNNING"
    });

    // --- exactly one shim for the pod, serving the pause container and both containers
    let shims = env.processes_of(shim_exe);
    assert_eq!(
        shims.len(),
        1,
        "{handler}: expected one shim for the pod, found {shims:#?}"
    );
    let shim = &shims[0];
    if handler == "tether" {
        // The handler's TOML names a ShimCgroup (env.sh): the pod's shim runs in it.
        let wanted = format!(
            "/tether-cri-shims-{}",
            work.file_name().unwrap_or_default().to_string_lossy()
        );
        let cgroups = fs::read_to_string(env.inside(&format!("/proc/{}/cgroup", shim.pid)))
            .unwrap_or_default();
        assert!(
            cgroups.lines().any(|l| l.ends_with(&wanted)),
            "the tether shim is not in its ShimCgroup {wanted}:\n{cgroups}"
        );
    }
    let procs = env.processes();
    let by_bed_pid = |bed_pid: i32| -> BedProcess {
        procs
            .iter()
            .find(|p| p.pid == bed_pid)
            .cloned()
            .unwrap_or_else(|| panic!("no process with pid {bed_pid} in the bed"))
    };
    for (what, verb, id) in [
        ("pause", "inspectp", &pod_id),
        ("talker", "inspect", &talker_id),
        ("worker", "inspect", &worker_id),
    ] {
        let p = by_bed_pid(bed_pid_of(&env, verb, id));
        assert_eq!(
            p.ppid, shim.pid,
            "{handler}: the {what} process {p:?} is not a child of the pod's shim {shim:?}"
        );
    }
    let task_dir = work.join("state/io.containerd.runtime.v2.task/k8s.io");
    // the shim's address: containerd 1.6 keeps it in the bundle's `address`, 2.x in
    // `bootstrap.json`
    let address = |id: &str| -> Option<String> {
        let bundle = task_dir.join(id);
        fs::read_to_string(bundle.join("address")).ok().or_else(|| {
            let json: serde_json::Value =
                serde_json::from_str(&fs::read_to_string(bundle.join("bootstrap.json")).ok()?)
                    .ok()?;
            json["address"].as_str().map(str::to_string)
        })
    };
    assert!(address(&pod_id).is_some(), "no shim address for the pod");
    assert_eq!(address(&talker_id), address(&pod_id), "talker's shim");
    assert_eq!(address(&worker_id), address(&pod_id), "worker's shim");

    // --- exec -s: output of both streams, in that order, and the exit code (crictl reports a non-zero
    // one in its error message and exits 1)
    let out = env.crictl(&[
        "exec",
        "-s",
        &worker_id,
        "sh",
        "-c",
        "echo to-out; echo to-err >&2",
    ]);
    assert!(out.status.success(), "exec -s: {out:?}");
    // crictl prints the exec's stdout, then its stderr, each with a newline, on stdout
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-out\n\nto-err\n\n");
    let out = env.crictl(&["exec", "-s", &worker_id, "sh", "-c", "exit 3"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("exited with 3"),
        "exec -s of `exit 3`: {out:?}"
    );
    assert_eq!(
        env.crictl_ok(&["exec", "-s", &talker_id, "cat", "/etc/hostname"]),
        "cri-pod"
    );

    // --- an exec on a terminal (crictl exec -it from an operator's shell)
    let out = env.crictl_on_tty(&[
        "exec",
        "-it",
        &worker_id,
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo on-a-tty; tty",
    ]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && shown.contains("on-a-tty") && shown.contains("/dev/pts/"),
        "exec -it: {out:?}\n--- containerd log ---\n{}",
        env.log_tail()
    );

    // --- logs: the CRI log file containerd writes from the shim's FIFOs, every line, in
    // order within its stream, with the right stream tag (streams interleave freely)
    let log_path = logs.join("talker.log");
    wait_until("the talker's log to hold every line", &env, || {
        cri_log_lines(&log_path).len() >= 2 * LINES
    });
    let lines = cri_log_lines(&log_path);
    assert_eq!(lines.len(), 2 * LINES, "log lines: {lines:#?}");
    assert!(lines.iter().all(|(_, tag, _)| tag == "F"), "{lines:#?}");
    let stream = |s: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|(st, _, _)| st == s)
            .map(|(_, _, m)| m.clone())
            .collect()
    };
    assert_eq!(stream("stdout"), numbered("out"));
    assert_eq!(stream("stderr"), numbered("err"));
    let out = env.crictl(&["logs", &talker_id]);
    assert!(out.status.success(), "crictl logs: {out:?}");
    let stdout_lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(stdout_lines, numbered("out"), "crictl logs stdout");
    let stderr_lines: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(stderr_lines, numbered("err"), "crictl logs stderr");

    // --- stats
    let stats: serde_json::Value =
        serde_json::from_str(&env.crictl_ok(&["stats", "-o", "json", &talker_id]))
            .expect("stats JSON");
    let entry = stats["stats"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|s| s["attributes"]["id"] == talker_id.as_str())
        })
        .unwrap_or_else(|| panic!("no stats for the talker: {stats}"));
    assert!(
        entry["memory"]["workingSetBytes"]["value"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| entry["memory"]["workingSetBytes"]["value"].as_u64())
            .is_some_and(|v| v > 0),
        "memory stats of the talker: {entry}"
    );

    // --- stop + rm one container while the other runs
    env.crictl_ok(&["stop", "--timeout", "10", &talker_id]);
    let json: serde_json::Value =
        serde_json::from_str(&env.crictl_ok(&["inspect", "-o", "json", &talker_id])).expect("JSON");
    assert_eq!(json["status"]["state"], "CONTAINER_EXITED", "{json}");
    assert_eq!(
        json["status"]["exitCode"].as_i64().unwrap_or(0),
        0,
        "the talker traps SIGTERM and exits 0: {json}"
    );
    env.crictl_ok(&["rm", &talker_id]);
    assert_eq!(container_state(&env, &worker_id), "CONTAINER_RUNNING");
    assert_eq!(
        env.crictl_ok(&["exec", "-s", &worker_id, "echo", "still-here"]),
        "still-here"
    );
    let shims = env.processes_of(shim_exe);
    assert_eq!(
        shims.iter().map(|p| p.pid).collect::<Vec<_>>(),
        vec![shim.pid],
        "{handler}: the pod's one shim changed after removing a container"
    );

    // --- stopp + rmp: the shim exits and nothing is left
    env.crictl_ok(&["stopp", &pod_id]);
    env.crictl_ok(&["rmp", &pod_id]);
    wait_until("the pod's shim to exit", &env, || {
        env.processes_of(shim_exe).is_empty()
    });
    assert_eq!(env.crictl_ok(&["pods", "-q"]), "", "pods left");
    assert_eq!(env.crictl_ok(&["ps", "-aq"]), "", "containers left");
    let leftovers: Vec<BedProcess> = env
        .processes()
        .into_iter()
        .filter(|p| p.state != "Z")
        .filter(|p| {
            p.pid_ns_depth > 1
                || p.cmdline.contains("runc")
                || p.cmdline.contains("containerd-shim")
        })
        .collect();
    assert!(leftovers.is_empty(), "processes left: {leftovers:#?}");
    for id in [&pod_id, &talker_id, &worker_id] {
        assert_eq!(
            env.mounts_mentioning(id),
            Vec::<String>::new(),
            "mounts of {id}"
        );
        assert_eq!(
            CriEnv::cgroups_of(id),
            Vec::<PathBuf>::new(),
            "cgroups of {id}"
        );
    }
    assert_eq!(
        env.mounts_mentioning("/run/netns/"),
        Vec::<String>::new(),
        "pod network namespace mounts"
    );
    for dir in [env.inside("/run/containerd"), work.join("state")] {
        assert_eq!(
            CriEnv::sockets_and_fifos(&dir),
            Vec::<PathBuf>::new(),
            "sockets or FIFOs left under {}",
            dir.display()
        );
    }

    // --- the handler's options were honoured: its runc root and its BinaryName
    let runc_root = PathBuf::from(env.var(&format!("CRI_RUNC_ROOT_{handler}")));
    let states: Vec<PathBuf> = fs::read_dir(runc_root.join("k8s.io"))
        .unwrap_or_else(|e| {
            panic!(
                "{handler}'s runc root {} (its Root option) unused: {e}",
                runc_root.display()
            )
        })
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(states.is_empty(), "runc state left: {states:?}");
    assert!(
        env.runc_calls(handler, Some("create")) >= 3,
        "{handler} did not run runc through its BinaryName (wrapper calls: {})",
        env.runc_calls(handler, None)
    );
}

#[test]
fn tether_pod_one_shim_serves_pause_and_two_containers_and_leaves_nothing() {
    let shim = tether_tests::containerd_env::shim_binary();
    let shim = fs::canonicalize(&shim).unwrap_or(shim);
    pod_scenario("tether", &shim);
}

#[test]
fn runc_handler_pod_scenario_baseline() {
    pod_scenario("runc", &go_shim());
}

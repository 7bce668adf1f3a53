//! Live upgrade under CRI (issue 22): a pod on tether with a container writing numbered
//! lines as fast as it can, a container on a terminal with an attach session, a paused
//! container and a streaming exec, while the pod's shim is moved A -> B -> A twenty times
//! (A: the build under test, B: the same source built with another revision,
//! `make upgrade-peer`). Holds: every line exactly once and in order in the CRI log, the
//! exec's output whole and its exit code, exit codes real and reported once, the shim's pid
//! unchanged and `/proc/PID/exe` the new binary after each step, crictl seeing no change,
//! containerd's log without a shim disconnect, RSS after the twentieth upgrade within
//! 64 KiB of before. `CRI_CONTAINERD=1.6|2.3` picks the daemon.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_tests::cri_env::{cri_log_lines, write_json};
use tether_tests::CriEnv;

const IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
const ROUNDS: usize = 20;
const POLL: Duration = Duration::from_secs(30);

/// The peer binary (`make upgrade-peer`), or `None` (the test says it skips).
fn peer() -> Option<PathBuf> {
    let p =
        PathBuf::from(std::env::var("TETHER_UPGRADE_PEER").unwrap_or_else(|_| {
            "/var/cache/tether/upgrade-peer/bin/containerd-shim-tether-v2".into()
        }));
    p.is_file().then_some(p)
}

fn inspect(env: &CriEnv, id: &str) -> serde_json::Value {
    serde_json::from_str(&env.crictl_ok(&["inspect", "-o", "json", id])).expect("inspect JSON")
}

fn state(env: &CriEnv, id: &str) -> String {
    inspect(env, id)["status"]["state"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

/// `VmRSS` of a bed process, in KiB.
fn rss_kib(env: &CriEnv, pid: i32) -> u64 {
    fs::read_to_string(env.inside(&format!("/proc/{pid}/status")))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The numbers of a stream of `prefix<n>` lines, checked to be 0, 1, 2, ... once each.
fn assert_sequence(what: &str, lines: impl Iterator<Item = String>, prefix: &str) -> u64 {
    let mut expect = 0u64;
    for l in lines {
        let l = l.trim_end_matches('\r');
        let Some(n) = l.strip_prefix(prefix).and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        assert_eq!(
            n, expect,
            "{what}: line {expect} missing, repeated or out of order"
        );
        expect += 1;
    }
    expect
}

#[test]
fn a_pod_moves_between_two_builds_twenty_times_with_nothing_lost() {
    let Some(env) = CriEnv::start_or_skip("cri_upgrade") else {
        return;
    };
    let Some(b) = peer() else {
        tether_tests::skip(
            "cri_upgrade",
            "no peer build at /var/cache/tether/upgrade-peer/bin (make upgrade-peer, or TETHER_UPGRADE_PEER)",
        );
        return;
    };
    let a = env.shim_binary().to_path_buf();
    let work = env.work();
    let logs = work.join("podlogs");
    fs::create_dir_all(&logs).expect("pod log dir");
    let pod = write_json(
        &work,
        "pod.json",
        serde_json::json!({
            "metadata": {"name": "upgrade-pod", "namespace": "tether-test", "uid": "upgrade-pod-uid", "attempt": 0},
            "hostname": "upgrade-pod",
            "log_directory": logs,
            "linux": {}
        }),
    );
    let container = |name: &str, script: &str, tty: bool| {
        write_json(
            &work,
            &format!("{name}.json"),
            serde_json::json!({
                "metadata": {"name": name},
                "image": {"image": IMAGE},
                "command": ["/bin/sh", "-c", script],
                "log_path": format!("{name}.log"),
                "tty": tty,
                "stdin": tty,
            }),
        )
    };
    let writer = container(
        "writer",
        "i=0; while :; do echo n$i; i=$((i+1)); done",
        false,
    );
    let terminal = container(
        "terminal",
        "i=0; while :; do echo t$i; i=$((i+1)); sleep 0.05; done",
        true,
    );
    let sleeper = container(
        "sleeper",
        "trap 'exit 0' TERM; while :; do sleep 1; done",
        false,
    );
    env.crictl_ok(&["pull", IMAGE]);
    let pod_id = env.crictl_ok(&["runp", "--runtime", "tether", &pod]);
    let ids: Vec<String> = [&writer, &terminal, &sleeper]
        .iter()
        .map(|c| env.crictl_ok(&["create", &pod_id, c, &pod]))
        .collect();
    for id in &ids {
        env.crictl_ok(&["start", id]);
    }
    let (writer_id, terminal_id, sleeper_id) = (&ids[0], &ids[1], &ids[2]);
    env.wait_until("the containers running", POLL, || {
        ids.iter().all(|id| state(&env, id) == "CONTAINER_RUNNING")
    });
    // An attach session on the terminal, a streaming exec until told to stop, and the
    // sleeper paused (through ctr: CRI has no pause).
    let attach_out = work.join("attach.out");
    let mut attach = env.crictl_background(&["attach", "--tty", terminal_id], &attach_out);
    let exec_out = work.join("exec.out");
    let mut exec = env.crictl_background(
        &[
            "exec",
            writer_id,
            "sh",
            "-c",
            "i=0; while [ ! -e /tmp/stop ]; do echo x$i; i=$((i+1)); sleep 0.02; done; exit 5",
        ],
        &exec_out,
    );
    env.wait_until("the exec writing", POLL, || {
        fs::read_to_string(&exec_out)
            .unwrap_or_default()
            .contains("x3")
    });
    let paused = env.ctr("k8s.io", &["task", "pause", sleeper_id]);
    assert!(paused.status.success(), "ctr task pause: {paused:?}");

    // Every event containerd publishes while the shim moves: none may say a task exited
    // or was deleted (nothing did).
    let events_out = work.join("events.out");
    let address = env
        .var("CRI_ENDPOINT")
        .trim_start_matches("unix://")
        .to_string();
    let mut events = env
        .inside_command(Path::new("ctr"))
        .args(["--address", &address, "events"])
        .stdout(fs::File::create(&events_out).expect("the events file"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ctr events");
    let shims = env.tether_shims();
    assert_eq!(shims.len(), 1, "one shim for the pod: {shims:#?}");
    let pid = shims[0].pid;
    let rss_before = rss_kib(&env, pid);
    let ps_before = env.crictl_ok(&["ps", "-q"]);
    let mut pauses = Vec::new();
    for round in 0..ROUNDS {
        let to = if round % 2 == 0 { &b } else { &a };
        let out = env
            .inside_command(&a)
            .args(["upgrade", "--all", "--binary"])
            .arg(to)
            .output()
            .expect("run the upgrade command in the bed");
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success(),
            "round {round}: {line} {}\n--- containerd log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            env.log_tail()
        );
        if let Some(ms) = line
            .rsplit_once("paused ")
            .and_then(|(_, p)| p.trim_end_matches(" ms").parse::<f64>().ok())
        {
            pauses.push(ms);
        }
        let exe = fs::read_link(env.inside(&format!("/proc/{pid}/exe"))).expect("the shim's exe");
        assert_eq!(&exe, to, "round {round}: {line}");
        assert_eq!(
            env.crictl_ok(&["ps", "-q"]),
            ps_before,
            "round {round}: crictl ps"
        );
    }
    let rss_after = rss_kib(&env, pid);

    pauses.sort_by(f64::total_cmp);
    eprintln!(
        "{ROUNDS} upgrades: pause median {:.1} ms, max {:.1} ms; RSS {rss_before} -> {rss_after} KiB",
        pauses[pauses.len() / 2],
        pauses[pauses.len() - 1]
    );
    assert!(
        rss_after <= rss_before + 64,
        "RSS grew from {rss_before} to {rss_after} KiB over {ROUNDS} upgrades"
    );
    assert_eq!(env.tether_shims().len(), 1, "still one shim");

    // The paused container resumes; the exec finishes with its own exit code and all of
    // its output; the attach session saw the terminal's lines.
    let resumed = env.ctr("k8s.io", &["task", "resume", sleeper_id]);
    assert!(resumed.status.success(), "ctr task resume: {resumed:?}");
    // The subscription was live all along: the resume's event is there, after the
    // upgrades, and nothing exited or was deleted before it.
    env.wait_until("the resume's event", POLL, || {
        fs::read_to_string(&events_out)
            .unwrap_or_default()
            .contains("/tasks/resumed")
    });
    let _ = events.kill();
    let _ = events.wait();
    let seen = fs::read_to_string(&events_out).unwrap_or_default();
    for topic in ["/tasks/exit", "/tasks/delete", "/tasks/oom"] {
        assert!(
            !seen.contains(topic),
            "containerd published {topic} during the upgrades:\n{seen}"
        );
    }
    env.crictl_ok(&["exec", "-s", writer_id, "touch", "/tmp/stop"]);
    let status = exec.wait().expect("wait for the streaming exec");
    let exec_lines = fs::read_to_string(&exec_out).unwrap_or_default();
    // crictl exits 1 for a command that failed and names its exit code.
    let tail: String = exec_lines
        .lines()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .join(" | ");
    assert!(
        status.code() == Some(1)
            && (tail.contains("exit code 5") || tail.contains("exited with 5")),
        "the exec's own exit code (5): crictl {status}, said {tail:?}"
    );
    let n = assert_sequence("exec output", exec_lines.lines().map(str::to_string), "x");
    assert!(n > 10, "the exec wrote through the upgrades ({n} lines)");
    let _ = attach.kill();
    let _ = attach.wait();
    let attached = fs::read_to_string(&attach_out).unwrap_or_default();
    assert_sequence(
        "attach on the terminal",
        attached.lines().map(str::to_string),
        "t",
    );

    // Until here no connection of containerd's to the shim has closed (a deleted
    // container's own connection closes, and containerd says so, when it is removed).
    let containerd_log = fs::read_to_string(env.var("CRI_LOG")).unwrap_or_default();
    for bad in [
        "shim disconnected",
        "ttrpc: closed",
        "cleaning up after shim",
    ] {
        let lines: Vec<&str> = containerd_log.lines().collect();
        if let Some(i) = lines.iter().position(|l| l.contains(bad)) {
            panic!(
                "containerd's log says {bad:?}:\n{}",
                lines[i.saturating_sub(25)..(i + 3).min(lines.len())].join("\n")
            );
        }
    }
    assert_eq!(
        containerd_log.matches("upgraded from").count(),
        ROUNDS,
        "each upgrade logged once by the shim"
    );
    // The writer stops with the real exit code; its log holds every line once, in order.
    env.crictl_ok(&["stop", "-t", "0", writer_id]);
    env.wait_until("the writer exited", POLL, || {
        state(&env, writer_id) == "CONTAINER_EXITED"
    });
    let code = inspect(&env, writer_id)["status"]["exitCode"].as_i64();
    assert_eq!(code, Some(137), "SIGKILL's exit code");
    let log = logs.join("writer.log");
    let n = assert_sequence(
        "writer log",
        cri_log_lines(&log).into_iter().map(|(_, _, m)| m),
        "n",
    );
    assert!(
        n > 1000,
        "the writer wrote through the upgrades ({n} lines)"
    );
    let terminal_lines = cri_log_lines(&logs.join("terminal.log"));
    assert_sequence(
        "terminal log",
        terminal_lines.into_iter().map(|(_, _, m)| m),
        "t",
    );
    env.crictl_ok(&["stopp", &pod_id]);
    env.crictl_ok(&["rmp", &pod_id]);
    env.wait_until("the pod's shim gone", POLL, || {
        env.tether_shims().is_empty()
    });
}

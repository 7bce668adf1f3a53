//! What a runtime (runc, crun, a `BinaryName` wrapper) and a `binary://` logger inherit
//! from tether (issue 23, part 2): the shim and the standalone supervisor block SIGCHLD,
//! SIGTERM, SIGINT and SIGHUP for their signalfd, and whoever started them may have left
//! signals ignored (`nohup`, a shell's `&`). Neither may reach a runtime call, a logger or
//! a container's process: a wrapper shell's `wait` hangs with SIGCHLD blocked, and an
//! ignored SIGHUP or SIGINT goes on through runc into the container.
//!
//! Each path is checked with a recording runc wrapper (`signal_record`), with the face
//! started through `sh -c 'trap "" HUP INT QUIT; exec …'`: every runtime call of the
//! containerd face (create, start, exec, kill, delete, the `delete` subcommand), the
//! `binary://` logger, the standalone face (run, exec, a pea, kill, delete), and the
//! container processes themselves. Before the fix (main at e0de598) every runtime call
//! of the shim, and the standalone supervisor's create/start/exec/run/delete, started with
//! SIGHUP, SIGINT, SIGTERM and SIGCHLD blocked (std's `Command` passes the caller's mask
//! on), every runtime call with SIGHUP, SIGINT and SIGQUIT ignored as the face's caller
//! left them, and with glibc's internal signals 32 and 33 ignored (its `posix_spawn`),
//! the containers' processes with signal 32 ignored; the logger was clean but for 32, 33.

use containerd_shim_protos::api;
use serde_json::json;
use std::fs;
use std::time::Duration;
use tether_tests::direct_shim::{ctx, DirectShim};
use tether_tests::signal_record::{
    of_pid, signals_in, Inherited, RecordingRunc, IGNORING, STATUS_LINE,
};
use tether_tests::standalone_env::StandaloneEnv;
use tether_tests::uri::percent_encode;

/// glibc's two internal signals (32: SIGCANCEL, 33: SIGSETXID): its `posix_spawn`, which
/// starts a `binary://` logger, leaves them ignored in the child whatever the attributes
/// say (`sigfillset` leaves them out of SETSIGDEF), so only a logger may show them.
const GLIBC_INTERNAL: u64 = (1 << 31) | (1 << 32);

/// Fails naming every record that inherited a blocked or an ignored signal.
fn assert_clean(records: &[Inherited], context: &str) {
    let dirty: Vec<String> = records
        .iter()
        .filter(|r| {
            let allowed = if r.who == "logger" { GLIBC_INTERNAL } else { 0 };
            r.blocked != 0 || r.ignored & !allowed != 0
        })
        .map(|r| {
            format!(
                "{} blocked {:?} ignored {:?}",
                r.who,
                signals_in(r.blocked),
                signals_in(r.ignored)
            )
        })
        .collect();
    assert!(
        dirty.is_empty(),
        "inherited signals: {dirty:?}\nall records: {records:?}\n{context}"
    );
}

fn count(records: &[Inherited], who: &str) -> usize {
    records.iter().filter(|r| r.who == who).count()
}

#[test]
fn the_containerd_faces_runtime_calls_and_logger_inherit_no_blocked_or_ignored_signal() {
    let id = tether_tests::unique_id("sig");
    let shim = DirectShim::start_through(&id, &["sleep", "1000"], &IGNORING);
    let runc = RecordingRunc::write(shim.dir());
    let logger = format!(
        "{STATUS_LINE}echo \"logger$line\" >>{record}\n\
         cat <&3 >/dev/null 4<&- 5>&- &\n\
         cat <&4 >/dev/null 3<&- 5>&- &\n\
         exec 3<&- 4<&- 5>&-\n\
         wait\n",
        record = runc.record().display()
    );
    let mut create = api::CreateTaskRequest::new();
    create.id = id.clone();
    create.bundle = shim.bundle().to_string_lossy().into_owned();
    create.stdout = format!("binary:///bin/sh?-c={}", percent_encode(&logger));
    create.options = Some(shim.options(runc.path())).into();
    shim.client()
        .create(ctx(), &create)
        .unwrap_or_else(|e| panic!("Create: {e}\n{}", shim.log()));
    let init = shim.start_task(&id);
    let mut records = Vec::new();
    records.extend(of_pid(init.cast_signed(), "container-init"));
    // An exec that stays until the test has looked at it.
    let mut exec = api::ExecProcessRequest::new();
    exec.id = id.clone();
    exec.exec_id = "e1".into();
    exec.spec = Some(shim.exec_spec(&["sleep", "1000"], false)).into();
    shim.client().exec(ctx(), &exec).expect("Exec");
    let mut start = api::StartRequest::new();
    start.id = id.clone();
    start.exec_id = "e1".into();
    let exec_pid = shim.client().start(ctx(), &start).expect("Start exec").pid;
    records.extend(of_pid(exec_pid.cast_signed(), "container-exec"));
    // `--all`, so that runc kill runs (a running init's plain Kill is the shim's own).
    let mut kill = api::KillRequest::new();
    kill.id = id.clone();
    kill.signal = libc::SIGKILL as u32;
    kill.all = true;
    shim.client().kill(ctx(), &kill).expect("Kill --all");
    let mut wait = api::WaitRequest::new();
    wait.id = id.clone();
    let wait = shim.client().wait(ctx(), &wait).expect("Wait");
    assert_eq!(wait.exit_status, 137, "{}", shim.log());
    // containerd's cleanup after a shim that went away: `delete` in the bundle, which runs
    // `runc delete --force` while runc still holds the container (it skips runc once
    // nothing is left: containerd_faults), then the server's Delete finds it gone.
    let out = shim
        .action_command(&id, "delete", &IGNORING)
        .output()
        .expect("run the shim's delete");
    assert!(
        out.status.success(),
        "delete: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut delete = api::DeleteRequest::new();
    delete.id = id.clone();
    shim.client().delete(ctx(), &delete).expect("Delete");
    records.extend(runc.calls());
    let context = shim.log();
    for who in [
        "runc-create",
        "runc-start",
        "runc-exec",
        "runc-kill",
        "logger",
        "container-init",
        "container-exec",
    ] {
        assert!(
            count(&records, who) >= 1,
            "no {who} in {records:?}\n{context}"
        );
    }
    assert!(
        count(&records, "runc-delete") >= 2,
        "Delete and the delete subcommand each run runc delete: {records:?}"
    );
    assert_clean(&records, &context);
}

#[test]
fn the_standalone_faces_runtime_calls_and_processes_inherit_no_blocked_or_ignored_signal() {
    let mut env = StandaloneEnv::new();
    let runc = RecordingRunc::write(env.runc_env().dir());
    env.use_runc(runc.path());
    env.through(&IGNORING);
    let id = env.id("sig");
    let mut bundle = env.bundle("b", &["sleep", "1000"]);
    let init = env.run(&id, &bundle);
    let mut records = Vec::new();
    records.extend(of_pid(init, "container-init"));
    let process = bundle.config_mut()["process"].clone();
    let mut exec = process.clone();
    exec["args"] = json!(["sleep", "1000"]);
    let exec_pid = env.exec(&id, "p1", &exec);
    records.extend(of_pid(exec_pid, "container-exec"));
    // A pea: its own runc container, started by a supervisor of its own.
    let pea = env.bundle("pea", &["sleep", "1000"]);
    let out = env.output(
        "exec",
        &[
            "--bundle",
            pea.path().to_str().unwrap(),
            "--json",
            "--share",
            "pid",
            &id,
            "pea1",
        ],
    );
    assert!(
        out.status.success(),
        "exec --bundle: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("exec --json");
    let pea_pid = i32::try_from(v["pid"].as_i64().expect("pea pid")).unwrap();
    records.extend(of_pid(pea_pid, "pea-process"));
    env.ok("kill", &["--signal", "KILL", &id]);
    let _ = env.output("wait", &[&id]); // exits with the init's status, 137
    env.ok("delete", &["--force", &id]);
    records.extend(runc.calls());
    for who in [
        "container-init",
        "container-exec",
        "pea-process",
        "runc-exec",
        "runc-kill",
        "runc-delete",
    ] {
        assert!(count(&records, who) >= 1, "no {who} in {records:?}");
    }
    // The init's and the pea's containers: `run` (or create + start) each.
    let launches = count(&records, "runc-run") + count(&records, "runc-create");
    assert!(launches >= 2, "the init and the pea launched: {records:?}");
    assert_clean(&records, "");
    // Nothing of the container is left to a later test.
    assert!(tether_tests::runc_gate::eventually(
        Duration::from_secs(20),
        || !std::path::Path::new(&format!("/proc/{init}")).exists()
    ));
    let _ = fs::remove_file(runc.record());
}

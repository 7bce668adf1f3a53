//! Bytes that are not UTF-8 in a bundle's `config.json` or an exec's process spec (args
//! and env are bytes on Linux): runc and containerd's Go shim take them, reading each such
//! byte as U+FFFD as Go's JSON decoder does; the shim must not refuse them (issue 12 #8).

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use std::time::Duration;
use tether_tests::direct_shim::{ctx, DirectShim};

/// `sh -c` script that prints `$X` as hex bytes to stdout.
const PRINT_X: &str = "printf '%s' \"$X\" | od -An -tx1";

fn runc() -> std::path::PathBuf {
    tether_tests::require::tool("runc", "runc")
}

/// Replaces the quoted placeholder `@RAW@` in `file` by `raw` (bytes JSON may not carry).
fn put_raw(file: &std::path::Path, raw: &[u8]) {
    let text = std::fs::read(file).unwrap();
    let at = text
        .windows(5)
        .position(|w| w == b"@RAW@")
        .expect("placeholder");
    let mut out = text[..at].to_vec();
    out.extend_from_slice(raw);
    out.extend_from_slice(&text[at + 5..]);
    std::fs::write(file, out).unwrap();
}

fn wait_for_output(path: &std::path::Path) -> String {
    for _ in 0..100 {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.trim().is_empty() {
                return s;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    String::new()
}

#[test]
fn an_init_and_an_exec_with_invalid_utf8_run_as_runc_runs_them() {
    let id = tether_tests::unique_id("utf8");
    let shim = DirectShim::start(&id, &["sh", "-c", &format!("{PRINT_X}; sleep 600")]);
    let config = shim.bundle().join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    spec["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push("X=@RAW@".into());
    std::fs::write(&config, serde_json::to_vec(&spec).unwrap()).unwrap();
    put_raw(&config, b"a\xffb");

    let out = shim.dir().join("init.out");
    let mut create = api::CreateTaskRequest::new();
    create.id = id.clone();
    create.bundle = shim.bundle().to_string_lossy().into_owned();
    create.options = Some(shim.options(&runc())).into();
    create.stdout = format!("file://{}", out.display());
    shim.client()
        .create(ctx(), &create)
        .unwrap_or_else(|e| panic!("Create refused a config.json runc takes: {e}"));
    let mut start = api::StartRequest::new();
    start.id = id.clone();
    shim.client().start(ctx(), &start).expect("Start");
    assert_eq!(
        wait_for_output(&out).split_whitespace().collect::<Vec<_>>(),
        ["61", "ef", "bf", "bd", "62"],
        "the init's X as runc passes it"
    );

    // An exec spec with a raw byte and a lone surrogate escape.
    let mut process = spec["process"].clone();
    process["args"] = serde_json::json!(["/bin/sh", "-c", PRINT_X]);
    process["env"] = serde_json::json!(["X=@RAW@"]);
    let mut raw = serde_json::to_vec(&process).unwrap();
    let at = raw.windows(5).position(|w| w == b"@RAW@").unwrap();
    raw.splice(at..at + 5, b"c\xfe\\ud800d".iter().copied());
    let exec_out = shim.dir().join("exec.out");
    let mut exec = api::ExecProcessRequest::new();
    exec.id = id.clone();
    exec.exec_id = "x1".into();
    exec.stdout = format!("file://{}", exec_out.display());
    let mut any = Any::new();
    any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
    any.value = raw;
    exec.spec = Some(any).into();
    shim.client()
        .exec(ctx(), &exec)
        .unwrap_or_else(|e| panic!("Exec refused a process spec runc takes: {e}"));
    let mut start = api::StartRequest::new();
    start.id = id.clone();
    start.exec_id = "x1".into();
    shim.client().start(ctx(), &start).expect("Start the exec");
    assert_eq!(
        wait_for_output(&exec_out)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["63", "ef", "bf", "bd", "ef", "bf", "bd", "64"],
        "the exec's X as runc passes it"
    );

    shim.kill_and_wait(&id);
    let mut delete = api::DeleteRequest::new();
    delete.id = id.clone();
    delete.exec_id = "x1".into();
    let _ = shim.client().delete(ctx(), &delete);
    delete.exec_id.clear();
    shim.client().delete(ctx(), &delete).expect("Delete");
    shim.client()
        .shutdown(ctx(), &api::ShutdownRequest::new())
        .expect("Shutdown");
    assert!(shim.wait_shim_exit(Duration::from_secs(10)));
}

//! A smoke test against the real runc (root, `/usr/bin/runc` and `/bin/busybox`): a busybox
//! container through every verb, and runc's own failures as errors.

use crate::{ContainerStatus, CreateOpts, Error, ExecOpts, Runc};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Whether the smoke test can run: root, `/usr/bin/runc` and `/bin/busybox`.
fn real_runc_available() -> bool {
    Path::new("/usr/bin/runc").exists()
        && Path::new("/bin/busybox").exists()
        && nix::unistd::geteuid().is_root()
}

/// Force-deletes the container on drop, even when the test panics.
struct Cleanup<'a> {
    runc: &'a Runc,
    ids: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.runc.delete(id, true);
        }
    }
}

/// A bundle in `dir` (from `runc spec`) running `args` on `rootfs`, without a terminal.
fn make_bundle(dir: &Path, rootfs: &Path, args: &[&str]) {
    fs::create_dir_all(dir).unwrap();
    let _ = fs::remove_file(dir.join("config.json"));
    let status = Command::new("/usr/bin/runc")
        .args(["spec", "--bundle"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
    let path = dir.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(args);
    spec["root"]["path"] = rootfs.to_str().unwrap().into();
    fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
}

#[test]
fn smoke_real_runc() {
    if !real_runc_available() {
        test_skip::skip("needs root, /usr/bin/runc and /bin/busybox");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for l in ["sh", "sleep", "true"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(l)).unwrap();
    }
    let bundle = tmp.path().join("bundle");
    make_bundle(&bundle, &rootfs, &["sleep", "100"]);
    let runc = Runc::builder()
        .binary("/usr/bin/runc")
        .root(tmp.path().join("root"))
        .log(tmp.path().join("log.json"))
        .build();
    let id = format!("rw-smoke-{}", std::process::id());
    let run_id = format!("{id}-run");
    let _cleanup = Cleanup {
        runc: &runc,
        ids: vec![id.clone(), run_id.clone()],
    };

    assert!(runc.version().unwrap().starts_with("runc version"));
    assert!(runc.list().unwrap().is_empty());
    let e = runc.state(&id).unwrap_err();
    assert!(e.is_not_found(), "{e}");

    let pid_file = tmp.path().join("pid");
    runc.create(
        &id,
        &bundle,
        CreateOpts {
            pid_file: Some(pid_file.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let st = runc.state(&id).unwrap();
    assert_eq!(st.status, ContainerStatus::Created);
    assert_eq!(st.id, id);
    assert_eq!(
        fs::read_to_string(&pid_file).unwrap().trim(),
        st.pid.to_string()
    );
    runc.start(&id).unwrap();
    assert_eq!(runc.state(&id).unwrap().status, ContainerStatus::Running);
    let pids = runc.ps(&id).unwrap();
    assert!(pids.contains(&st.pid), "{pids:?} {}", st.pid);
    let list = runc.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, id);
    let stats = runc.stats(&id).unwrap();
    assert!(stats.pids.current >= 1);
    assert!(runc.features().unwrap().starts_with(b"{"));

    runc.pause(&id).unwrap();
    assert_eq!(runc.state(&id).unwrap().status, ContainerStatus::Paused);
    runc.resume(&id).unwrap();
    assert_eq!(runc.state(&id).unwrap().status, ContainerStatus::Running);

    runc.update(&id, br#"{"pids":{"limit":50}}"#).unwrap();
    assert_eq!(runc.stats(&id).unwrap().pids.limit, 50);

    let process = |args: &[&str]| {
        serde_json::to_vec(&serde_json::json!({
            "args": args, "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}
        }))
        .unwrap()
    };
    let e = runc
        .exec(
            &id,
            &process(&["nope"]),
            ExecOpts {
                detach: true,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Runtime {
                command: "exec",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.runtime_message()
            .unwrap()
            .contains("executable file not found"),
        "{e}"
    );
    runc.exec(&id, &process(&["true"]), ExecOpts::default())
        .unwrap();
    let e = runc
        .exec(&id, &process(&["sh", "-c", "exit 7"]), ExecOpts::default())
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Runtime {
                status: Some(7),
                ..
            }
        ),
        "{e}"
    );

    runc.kill(&id, libc::SIGKILL, false).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while runc.state(&id).unwrap().status != ContainerStatus::Stopped {
        assert!(Instant::now() < deadline, "container did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    runc.delete(&id, false).unwrap();
    let e = runc.state(&id).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let e = runc.delete(&id, false).unwrap_err();
    assert!(e.is_not_found(), "{e}");

    // Foreground run returns the container's exit code.
    let bundle2 = tmp.path().join("bundle2");
    make_bundle(&bundle2, &rootfs, &["sh", "-c", "exit 3"]);
    assert_eq!(
        runc.run(&run_id, &bundle2, CreateOpts::default()).unwrap(),
        3
    );
    // And a runc failure while running is an error, not an exit code.
    make_bundle(&bundle2, &rootfs, &["nope"]);
    let e = runc
        .run(&run_id, &bundle2, CreateOpts::default())
        .unwrap_err();
    assert!(
        e.runtime_message()
            .unwrap()
            .contains("executable file not found"),
        "{e}"
    );
    assert!(runc.list().unwrap().is_empty());
}

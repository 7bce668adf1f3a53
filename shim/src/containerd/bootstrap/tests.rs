//! `start`'s reading of its input in both bootstrap protocols (against the byte vectors
//! in `bootstrap_protocol`), and `delete`'s exit report and socket clean-up.

use super::delete::{exit_after_shim_died, remove_dead_socket};
use super::start_config::options_from_extensions;
use super::*;
use crate::containerd::address;
use crate::containerd::bootstrap_protocol::vectors::*;
use crate::containerd::exit_status::{self, RecordedExit};
use crate::containerd::options::RuncOptions;
use protobuf::well_known_types::any::Any;
use std::path::Path;

fn flags(id: &str, namespace: &str) -> Flags {
    Flags {
        namespace: namespace.into(),
        id: id.into(),
        address: "/run/containerd/containerd.sock".into(),
        publish_binary: "/usr/bin/containerd".into(),
        ..Flags::default()
    }
}

#[test]
fn containerd_2_3_start_takes_everything_from_the_params() {
    let c = StartConfig::new(&flags("ctr-1", "default"), &unhex(PARAMS_FULL)).unwrap();
    assert!(c.bootstrap);
    assert!(
        c.flags.debug,
        "log_level debug turns -debug on for the server"
    );
    assert_eq!(c.options.binary_name, "crun");
    assert_eq!(c.options.root, "/run/tether-test");
    assert!(c.options.systemd_cgroup);
    assert_eq!(c.socket_dir, Some(PathBuf::from("/tmp/tether-s")));
    assert_eq!(
        c.ttrpc_address.as_deref(),
        Some("/run/containerd/containerd.sock.ttrpc")
    );
    // printf '%s' '/run/containerd/containerd.sock/default/ctr-1' | sha256sum
    let sock = c.socket("ctr-1").unwrap();
    assert_eq!(sock.parent(), Some(Path::new("/tmp/tether-s")));
    assert_eq!(
        sock,
        address::socket_path_in(
            Path::new("/tmp/tether-s"),
            "/run/containerd/containerd.sock",
            "default",
            "ctr-1"
        )
    );
    // The answer is the BootstrapResult containerd's runc shim gives: task API v3.
    let addr =
        "unix:///run/containerd/s/8cb244a719603fe00870d5ce1d8e1f1db43a654cb993d107df1f1ae23ddffa59";
    assert_eq!(c.reply(addr), unhex(RESULT_V3));
}

#[test]
fn containerd_2_2_start_answers_with_the_plain_address() {
    let c = StartConfig::new(&flags("ctr-1", "default"), &unhex(LEGACY_ANY)).unwrap();
    assert!(!c.bootstrap);
    assert!(!c.flags.debug);
    assert_eq!(c.options.binary_name, "runc");
    assert_eq!(c.options.root, "/run/r");
    assert_eq!(c.socket_dir, None);
    assert_eq!(c.ttrpc_address, None);
    assert_eq!(c.flags, flags("ctr-1", "default"));
    assert_eq!(
        c.socket("ctr-1").unwrap(),
        address::socket_path("/run/containerd/containerd.sock", "default", "ctr-1")
    );
    assert_eq!(c.reply("unix:///x"), b"unix:///x");
}

#[test]
fn empty_stdin_means_defaults_and_the_plain_address() {
    let c = StartConfig::new(&flags("ctr-1", "default"), b"").unwrap();
    assert!(!c.bootstrap);
    assert_eq!(c.options, RuncOptions::default());
    assert_eq!(c.reply("unix:///x"), b"unix:///x");
}

#[test]
fn params_for_another_container_are_not_taken_for_ours() {
    // Bytes that are BootstrapParams for ctr-1, given to -id ctr-9: the legacy path,
    // where they are an Any of the unknown type "ctr-1".
    let e = StartConfig::new(&flags("ctr-9", "default"), &unhex(PARAMS_FULL)).unwrap_err();
    assert!(e.to_string().contains("ctr-1"), "{e}");
}

#[test]
fn minimal_params_keep_the_flags_and_default_socket_dir() {
    let c = StartConfig::new(&flags("ctr-2", "k8s.io"), &unhex(PARAMS_MIN)).unwrap();
    assert!(c.bootstrap);
    assert!(!c.flags.debug);
    // No containerd_binary in the params: -publish-binary stays.
    assert_eq!(c.flags.publish_binary, "/usr/bin/containerd");
    assert_eq!(c.options, RuncOptions::default());
    assert_eq!(
        c.socket("ctr-2").unwrap().parent(),
        Some(Path::new(address::SOCKET_DIR))
    );
    // An explicit -socket wins over everything.
    let mut f = flags("ctr-2", "k8s.io");
    f.socket = Some("unix:///tmp/explicit.sock".into());
    let c = StartConfig::new(&f, &unhex(PARAMS_MIN)).unwrap();
    assert_eq!(
        c.socket("ctr-2").unwrap(),
        PathBuf::from("/tmp/explicit.sock")
    );
}

#[test]
fn unknown_extensions_are_skipped() {
    let mut other = Any::new();
    other.type_url = "containerd.io/cri.v1.PodSandboxConfig".into();
    other.value = vec![1, 2, 3];
    let mut runc = Any::new();
    runc.type_url = "containerd.runc.v1.Options".into();
    runc.value = vec![0x32, 0x04, b'c', b'r', b'u', b'n'];
    assert_eq!(
        options_from_extensions(&[other.clone(), runc])
            .unwrap()
            .binary_name,
        "crun"
    );
    assert_eq!(
        options_from_extensions(&[other]).unwrap(),
        RuncOptions::default()
    );
    let mut broken = Any::new();
    broken.type_url = "containerd.runc.v1.Options".into();
    broken.value = vec![0x32, 0x09];
    assert!(options_from_extensions(&[broken]).is_err());
}

#[test]
fn delete_reports_the_recorded_exit_else_137_with_the_init_pid() {
    use std::time::{Duration, UNIX_EPOCH};
    let dir = tempfile::tempdir().unwrap();
    let killed_at = UNIX_EPOCH + Duration::from_secs(1_796_083_200);
    // Nothing at all: 137, pid 0, now.
    assert_eq!(
        exit_after_shim_died(dir.path(), killed_at),
        RecordedExit {
            pid: 0,
            status: 137,
            exited_at: killed_at
        }
    );
    // A pid file: the real pid.
    std::fs::write(dir.path().join("init.pid"), "4242").unwrap();
    assert_eq!(exit_after_shim_died(dir.path(), killed_at).pid, 4242);
    assert_eq!(exit_after_shim_died(dir.path(), killed_at).status, 137);
    // A garbage record is ignored; a valid one wins.
    std::fs::write(dir.path().join("exit.json"), "{").unwrap();
    assert_eq!(exit_after_shim_died(dir.path(), killed_at).pid, 4242);
    let recorded = RecordedExit {
        pid: 4242,
        status: 3,
        exited_at: killed_at - Duration::from_secs(60),
    };
    exit_status::write(dir.path(), &recorded).unwrap();
    assert_eq!(exit_after_shim_died(dir.path(), killed_at), recorded);
}

#[test]
fn delete_finds_the_socket_under_the_socket_dir_of_start() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle_dir = tmp.path().join("bundle");
    std::fs::create_dir(&bundle_dir).unwrap();
    let socket_dir = tmp.path().join("s");
    let f = flags("ctr-1", "default");
    // What start does for a 2.3 daemon's socket_dir.
    address::write_socket_dir_link(&bundle_dir, &socket_dir).unwrap();
    let sock = address::socket_path_in(&socket_dir, &f.address, &f.namespace, &f.id);
    drop(address::bind_socket(&sock).unwrap());
    assert!(sock.exists());
    remove_dead_socket(&bundle_dir, &f);
    assert!(!sock.exists());

    // A container of a group leaves the group's socket alone.
    std::fs::write(
        bundle_dir.join("config.json"),
        r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod"}}"#,
    )
    .unwrap();
    let group_sock = address::socket_path_in(&socket_dir, &f.address, &f.namespace, "pod");
    drop(address::bind_socket(&group_sock).unwrap());
    remove_dead_socket(&bundle_dir, &f);
    assert!(group_sock.exists());
}

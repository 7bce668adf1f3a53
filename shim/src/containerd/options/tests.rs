//! Decoding runtime options in every form, from hand-encoded and real messages.

use super::*;
use containerd_shim_protos::shim::oci;
use protobuf::Message;

/// A tiny protobuf encoder for hand-built legacy/CRI messages.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn varint(&mut self, mut v: u64) -> &mut Self {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return self;
            }
            self.0.push(b | 0x80);
        }
    }
    fn key(&mut self, field: u32, wt: u8) -> &mut Self {
        self.varint((u64::from(field) << 3) | u64::from(wt))
    }
    fn uint(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, 0).varint(v)
    }
    fn bool(&mut self, field: u32, v: bool) -> &mut Self {
        self.uint(field, u64::from(v))
    }
    fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.key(field, 2).varint(v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }
    fn str(&mut self, field: u32, v: &str) -> &mut Self {
        self.bytes(field, v.as_bytes())
    }
    fn done(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

fn full_options() -> RuncOptions {
    RuncOptions {
        binary_name: "/usr/local/bin/runc".into(),
        root: "/run/tether/runc".into(),
        systemd_cgroup: true,
        no_pivot_root: true,
        no_new_keyring: true,
        io_uid: 1000,
        io_gid: 1001,
        shim_cgroup: "/tether/shim".into(),
        criu_path: String::new(),
        criu_image_path: "/img".into(),
        criu_work_path: "/work".into(),
        ..RuncOptions::default()
    }
}

#[test]
fn empty_any_is_default() {
    assert_eq!(decode_options("", &[]).unwrap(), RuncOptions::default());
    assert_eq!(
        decode_checkpoint_options("", &[]).unwrap(),
        CheckpointOptions::default()
    );
    assert!(matches!(
        decode_options("", &[8, 1]),
        Err(OptionsError::UnknownType(t)) if t.is_empty()
    ));
}

#[test]
fn unknown_type_is_named() {
    let err = decode_options("containerd.runhcs.v1.Options", &[]).unwrap_err();
    assert!(matches!(&err, OptionsError::UnknownType(t) if t == "containerd.runhcs.v1.Options"));
    assert!(err.to_string().contains("containerd.runhcs.v1.Options"));
    // Only the googleapis prefix is stripped.
    assert!(matches!(
        decode_options("example.com/containerd.runc.v1.Options", &[]),
        Err(OptionsError::UnknownType(_))
    ));
}

#[test]
fn runc_v1_round_trip() {
    let want = full_options();
    let m = oci::Options {
        no_pivot_root: want.no_pivot_root,
        no_new_keyring: want.no_new_keyring,
        shim_cgroup: want.shim_cgroup.clone(),
        io_uid: want.io_uid,
        io_gid: want.io_gid,
        binary_name: want.binary_name.clone(),
        root: want.root.clone(),
        systemd_cgroup: want.systemd_cgroup,
        criu_image_path: want.criu_image_path.clone(),
        criu_work_path: want.criu_work_path.clone(),
        task_api_address: "ttrpc+unix:///x".into(),
        task_api_version: 3,
        ..Default::default()
    };
    let bytes = m.write_to_bytes().unwrap();
    assert_eq!(decode_options(RUNC_V1_OPTIONS, &bytes).unwrap(), want);
    assert_eq!(
        decode_options("type.googleapis.com/containerd.runc.v1.Options", &bytes).unwrap(),
        want
    );
}

#[test]
fn runc_v1_criu_path_from_containerd_1x() {
    let mut bytes = oci::Options {
        root: "/r".into(),
        ..Default::default()
    }
    .write_to_bytes()
    .unwrap();
    bytes.extend(Enc::default().str(8, "/opt/criu").done());
    let got = decode_options(RUNC_V1_OPTIONS, &bytes).unwrap();
    assert_eq!(got.criu_path, "/opt/criu");
    assert_eq!(got.root, "/r");
}

#[test]
fn runc_v1_garbage_is_an_error() {
    for bad in [
        &[0x0a, 0x05, b'a'][..],
        &[0xff; 11],
        &[0x3a, 0x02, 0xff, 0xfe],
    ] {
        let err = decode_options(RUNC_V1_OPTIONS, bad).unwrap_err();
        assert!(matches!(err, OptionsError::Decode { .. }), "{err:?}");
    }
}

#[test]
fn legacy_create_options() {
    let mut e = Enc::default();
    e.bool(1, true)
        .bool(2, true)
        .str(6, "network")
        .str(6, "ipc")
        .str(7, "soft")
        .bool(8, true)
        .str(9, "/shim")
        .uint(10, 7)
        .uint(11, 8)
        .str(12, "/work")
        .str(13, "/img")
        // Unknown fields of every wire type are skipped.
        .uint(99, 1)
        .key(100, 1);
    e.0.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    e.key(101, 5);
    e.0.extend_from_slice(&[1, 2, 3, 4]);
    e.key(102, 3).uint(1, 5).str(2, "x").key(102, 4);
    let bytes = e.done();
    let got = decode_options(LEGACY_CREATE_OPTIONS, &bytes).unwrap();
    assert_eq!(
        got,
        RuncOptions {
            no_pivot_root: true,
            no_new_keyring: true,
            shim_cgroup: "/shim".into(),
            io_uid: 7,
            io_gid: 8,
            criu_work_path: "/work".into(),
            criu_image_path: "/img".into(),
            ..Default::default()
        }
    );
}

#[test]
fn a_uint32_longer_than_32_bits_is_refused() {
    // Go's decoder truncates it; rust-protobuf refuses it. No Go encoder sends one (a uint32
    // is at most 5 bytes), and the runc v1 options were always decoded so.
    // io_gid of the legacy message, io_uid of the runc v1 one.
    for (t, field) in [(LEGACY_CREATE_OPTIONS, 11), (RUNC_V1_OPTIONS, 4)] {
        let bytes = Enc::default().uint(field, (1 << 32) | 8).done();
        assert!(
            matches!(decode_options(t, &bytes), Err(OptionsError::Decode { .. })),
            "{t}"
        );
    }
}

#[test]
fn legacy_runc_options() {
    let bytes = Enc::default()
        .str(1, "crun")
        .str(2, "/run/crun")
        .str(3, "/criu")
        .bool(4, true)
        .done();
    let got = decode_options(LEGACY_RUNC_OPTIONS, &bytes).unwrap();
    assert_eq!(got.binary_name, "crun");
    assert_eq!(got.root, "/run/crun");
    assert_eq!(got.criu_path, "/criu");
    assert!(got.systemd_cgroup);
}

#[test]
fn wire_errors_do_not_panic() {
    let cases: &[&[u8]] = &[
        &[0x08],             // truncated varint value
        &[0x80],             // truncated key
        &[0x00, 0x01],       // field number 0
        &[0x12, 0x0a, b'a'], // length past the end
        &[0x0f],             // wire type 7
        &[0x0c],             // stray end-group
        &[0x0b, 0x08, 0x01], // unterminated group
        &[0x49, 1, 2, 3],    // truncated fixed64
        &[0x4d, 1, 2],       // truncated fixed32
        &[
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ], // overflow
        &[
            0x4a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ], // huge length
    ];
    for bad in cases {
        for t in [
            LEGACY_CREATE_OPTIONS,
            LEGACY_RUNC_OPTIONS,
            CRI_RUNTIME_OPTIONS,
        ] {
            let r = decode_options(t, bad);
            assert!(
                matches!(r, Err(OptionsError::Decode { .. })),
                "{t} {bad:?}: {r:?}"
            );
        }
        let r = decode_checkpoint_options(LEGACY_CHECKPOINT_OPTIONS, bad);
        assert!(r.is_err(), "{bad:?}");
    }
    // A string that is not UTF-8 is refused, as Go's proto3 decoder refuses it.
    for t in [LEGACY_RUNC_OPTIONS, CRI_RUNTIME_OPTIONS] {
        let r = decode_options(t, &[0x12, 0x01, 0xff]);
        assert!(matches!(r, Err(OptionsError::Decode { .. })), "{t}: {r:?}");
    }
    // A known field with another wire type is kept as an unknown field and ignored, as
    // Go's decoder does (and the generated runc v1 decoder always did).
    for (t, odd) in [
        (LEGACY_CREATE_OPTIONS, &[0x0a, 0x00][..]), // bool sent as bytes
        (LEGACY_RUNC_OPTIONS, &[0x08, 0x01]),       // string sent as varint
        (CRI_RUNTIME_OPTIONS, &[0x1d, 0, 0, 0, 0]), // bytes sent as fixed32
    ] {
        assert_eq!(
            decode_options(t, odd).unwrap(),
            RuncOptions::default(),
            "{t}"
        );
    }
    // A group is skipped to its first end-group, whichever field's (rust-protobuf; Go
    // also checks it is the group's own). No Go encoder writes groups into these messages.
    assert_eq!(
        decode_options(LEGACY_CREATE_OPTIONS, &[0x0b, 0x14]).unwrap(),
        RuncOptions::default()
    );
    // Deeply nested groups are refused, not recursed into.
    let mut deep = Vec::new();
    for _ in 0..200 {
        deep.extend(Enc::default().key(50, 3).done());
    }
    assert!(decode_options(LEGACY_CREATE_OPTIONS, &deep).is_err());
    // Random bytes: any result is fine, panicking is not.
    let mut x: u32 = 0x1234_5678;
    for len in 0..300 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x.to_le_bytes()[0]
            })
            .collect();
        for t in [
            RUNC_V1_OPTIONS,
            LEGACY_CREATE_OPTIONS,
            LEGACY_RUNC_OPTIONS,
            CRI_RUNTIME_OPTIONS,
        ] {
            let _ = decode_options(t, &bytes);
        }
        let _ = decode_checkpoint_options(LEGACY_CHECKPOINT_OPTIONS, &bytes);
        let _ = decode_checkpoint_options(RUNC_V1_CHECKPOINT_OPTIONS, &bytes);
    }
}

#[test]
fn checkpoint_runc_v1_round_trip() {
    let m = oci::CheckpointOptions {
        exit: true,
        open_tcp: true,
        external_unix_sockets: true,
        terminal: true,
        file_locks: true,
        empty_namespaces: vec!["network".into(), "uts".into()],
        cgroups_mode: "soft".into(),
        image_path: "/img".into(),
        work_path: "/work".into(),
        ..Default::default()
    };
    let got = decode_checkpoint_options(RUNC_V1_CHECKPOINT_OPTIONS, &m.write_to_bytes().unwrap())
        .unwrap();
    assert_eq!(
        got,
        CheckpointOptions {
            exit: true,
            open_tcp: true,
            external_unix_sockets: true,
            terminal: true,
            file_locks: true,
            empty_namespaces: vec!["network".into(), "uts".into()],
            cgroups_mode: "soft".into(),
            image_path: "/img".into(),
            work_path: "/work".into(),
        }
    );
    assert!(decode_checkpoint_options(RUNC_V1_CHECKPOINT_OPTIONS, &[0x42, 0x09]).is_err());
    assert!(matches!(
        decode_checkpoint_options(RUNC_V1_OPTIONS, &[]),
        Err(OptionsError::UnknownType(_))
    ));
}

#[test]
fn checkpoint_legacy() {
    let bytes = Enc::default()
        .bool(1, true)
        .bool(3, true)
        .bool(5, true)
        .str(6, "ipc")
        .str(7, "full")
        .str(8, "/work")
        .str(9, "/img")
        .uint(42, 1)
        .done();
    let got = decode_checkpoint_options(LEGACY_CHECKPOINT_OPTIONS, &bytes).unwrap();
    assert_eq!(
        got,
        CheckpointOptions {
            exit: true,
            external_unix_sockets: true,
            file_locks: true,
            empty_namespaces: vec!["ipc".into()],
            cgroups_mode: "full".into(),
            work_path: "/work".into(),
            image_path: "/img".into(),
            ..Default::default()
        }
    );
}

#[test]
fn cri_config_body() {
    // What containerd's go-toml v2 marshals for the runtime's options table.
    let body = "BinaryName = '/usr/bin/runc'\nSystemdCgroup = true\nIoUid = 10\nTypeUrl = 'x'\n";
    let bytes = Enc::default()
        .str(1, "io.containerd.tether.v1.Options")
        .str(2, "/nonexistent/ignored-when-body-present.toml")
        .bytes(3, body.as_bytes())
        .done();
    let got = decode_options(CRI_RUNTIME_OPTIONS, &bytes).unwrap();
    assert_eq!(
        got,
        RuncOptions {
            binary_name: "/usr/bin/runc".into(),
            systemd_cgroup: true,
            io_uid: 10,
            ..Default::default()
        }
    );
    // Old package name, empty message.
    assert_eq!(
        decode_options(CRI_RUNTIME_OPTIONS_OLD, &[]).unwrap(),
        RuncOptions::default()
    );
}

#[test]
fn cri_config_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runc.toml");
    std::fs::write(
        &path,
        "# tether runtime options\n[options]\n  Root = \"/run/tether\" # trailing\n  NoPivotRoot = true\n",
    )
    .unwrap();
    let bytes = Enc::default().str(2, path.to_str().unwrap()).done();
    let got = decode_options(CRI_RUNTIME_OPTIONS, &bytes).unwrap();
    assert_eq!(got.root, "/run/tether");
    assert!(got.no_pivot_root);

    let missing = dir.path().join("missing.toml");
    let bytes = Enc::default().str(2, missing.to_str().unwrap()).done();
    let err = decode_options(CRI_RUNTIME_OPTIONS, &bytes).unwrap_err();
    assert!(
        matches!(&err, OptionsError::ConfigRead { path, .. } if path.ends_with("missing.toml"))
    );
    assert!(err.to_string().contains("missing.toml"));

    std::fs::write(&path, "Root = \"/a\"\nSystemdCgroup = yes\n").unwrap();
    let bytes = Enc::default().str(2, path.to_str().unwrap()).done();
    let err = decode_options(CRI_RUNTIME_OPTIONS, &bytes).unwrap_err();
    match &err {
        OptionsError::Toml { file, line, .. } => {
            assert!(file.ends_with("runc.toml"));
            assert_eq!(*line, 2);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("runc.toml"), "{err}");

    std::fs::write(&path, b"Root = \"/a\"\n\nRoot = \"\xff\"\n").unwrap();
    let err = read_toml_config(&path).unwrap_err();
    assert!(matches!(err, OptionsError::Toml { line: 3, .. }), "{err:?}");
}

#[test]
fn toml_full_sample() {
    let text = r#"
# comment line
title = "ignored" # trailing comment

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.tether]
  runtime_type = "io.containerd.tether.v2"
  pod_annotations = ["a.b/*", 'c',
 # comment inside an array
 "d",
  ]
  privileged_without_host_devices = false
  limits = { cpu = 1.5, nested = { deep = [1, 2] } }
  when = 1979-05-27T07:32:00Z
  later = 1979-05-27 07:32:00
  ratio = 6.02e23
  big = 0x7fff_ffff
  neg = -17
  "quoted key" = 1
  a.b.c = 2

[[array.of.tables]]
  x = 1

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.tether.options]
  BinaryName = "/opt/bin/\"runc\"\\\t\n\u00e9"
  Root = '/literal\path'
  SystemdCgroup = true
  NoNewKeyring = true
  IoUid = 1_000
  IoGid = +2000
  ShimCgroup = """
/multi\
   line"""
  CriuPath = '''/criu'''
  CriuImagePath = "/i"
  criu_work_path = "/w"
  SpoolLimit = 1048576
  spool_policy = "drop-oldest"
"#;
    let got = options_from_toml("sample.toml", text).unwrap();
    assert_eq!(
        got,
        RuncOptions {
            binary_name: "/opt/bin/\"runc\"\\\t\n\u{e9}".into(),
            root: "/literal\\path".into(),
            systemd_cgroup: true,
            no_pivot_root: false,
            no_new_keyring: true,
            io_uid: 1000,
            io_gid: 2000,
            shim_cgroup: "/multiline".into(),
            criu_path: "/criu".into(),
            criu_image_path: "/i".into(),
            criu_work_path: "/w".into(),
            spool_limit: "1048576".into(),
            spool_policy: "drop-oldest".into(),
        }
    );
    // CRLF line endings are fine too.
    let got = options_from_toml("crlf.toml", "Root = \"/x\"\r\nSystemdCgroup = true\r\n").unwrap();
    assert_eq!(got.root, "/x");
    assert!(got.systemd_cgroup);
}

#[test]
fn toml_errors_name_file_and_line() {
    let cases: &[(&str, usize)] = &[
        ("Root = \"/a\"\nRoot = \"unterminated\n", 2),
        ("\n\nRoot /a\n", 3),
        ("[table\nRoot = \"/a\"\n", 1),
        ("Root = \"/a\" junk\n", 1),
        ("Root = \"bad \\q escape\"\n", 1),
        ("IoUid = -1\n", 1),
        ("IoUid = 4294967296\n", 1),
        ("IoUid = \"1000\"\n", 1),
        ("SystemdCgroup = \"true\"\n", 1),
        ("Root = true\n", 1),
        ("x = 0123\n", 1),
        ("x = 99999999999999999999\n", 1),
        // The toml crate points at the array that is not closed (the old parser: the end).
        ("x = [1, 2\n", 1),
        ("x = { a = 1\n", 1),
        // An unclosed multi-line string: the toml crate names where the input ended.
        ("x = \"\"\"never closed\n\n", 3),
        ("= 1\n", 1),
        ("x = \n", 1),
        ("x = nope\n", 1),
        ("x = 1\ry = 2\n", 1),
        ("x = \"\\u12\"\n", 1),
        ("x = \"\\uD800\"\n", 1),
    ];
    for (text, line) in cases {
        match options_from_toml("bad.toml", text) {
            Err(OptionsError::Toml {
                file,
                line: l,
                message,
            }) => {
                assert_eq!(file, "bad.toml");
                assert_eq!(l, *line, "{text:?}: {message}");
            }
            other => panic!("{text:?}: expected a TOML error, got {other:?}"),
        }
    }
    // Deep nesting is refused without overflowing the stack.
    let deep = format!("x = {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    assert!(options_from_toml("deep.toml", &deep).is_err());
}

#[test]
fn json_round_trip() {
    let o = full_options();
    let json = o.to_json();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["binary_name"], "/usr/local/bin/runc");
    assert_eq!(v["systemd_cgroup"], true);
    assert_eq!(v["io_uid"], 1000);
    assert!(v.get("criu_path").is_none(), "empty fields are omitted");
    assert_eq!(RuncOptions::from_json(&json).unwrap(), o);

    assert_eq!(RuncOptions::default().to_json(), b"{}");
    assert_eq!(
        RuncOptions::from_json(b"{}").unwrap(),
        RuncOptions::default()
    );
    // What the Go shim writes, including keys tether does not know.
    let go = br#"{"root":"/run/containerd/runc","binary_name":"runc","task_api_address":"x","task_api_version":3}"#;
    let got = RuncOptions::from_json(go).unwrap();
    assert_eq!(got.root, "/run/containerd/runc");
    assert_eq!(got.binary_name, "runc");
    assert!(matches!(
        RuncOptions::from_json(b"{\"io_uid\": -1}"),
        Err(OptionsError::Json(_))
    ));
    assert!(RuncOptions::from_json(b"not json").is_err());
}

#[test]
fn merged_with_prefers_set_task_fields() {
    let base = RuncOptions {
        binary_name: "runc".into(),
        root: "/run/base".into(),
        systemd_cgroup: true,
        io_uid: 5,
        ..Default::default()
    };
    let task = RuncOptions {
        root: "/run/task".into(),
        no_pivot_root: true,
        io_gid: 9,
        ..Default::default()
    };
    let m = base.merged_with(&task);
    assert_eq!(
        m,
        RuncOptions {
            binary_name: "runc".into(),
            root: "/run/task".into(),
            systemd_cgroup: true,
            no_pivot_root: true,
            io_uid: 5,
            io_gid: 9,
            ..Default::default()
        }
    );
    assert_eq!(base.merged_with(&RuncOptions::default()), base);
    assert_eq!(RuncOptions::default().merged_with(&base), base);
}

#[test]
fn options_json_is_written_for_root_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("options.json");
    // An older tether left it 0644: the mode is corrected, not only set on creation.
    std::fs::write(&path, b"{}").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let opts = RuncOptions {
        binary_name: "crun".into(),
        ..RuncOptions::default()
    };
    opts.write_json(&path).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        RuncOptions::from_json(&std::fs::read(&path).unwrap()).unwrap(),
        opts
    );
}

#[test]
fn default_options_leave_no_options_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("options.json");
    // The defaults write nothing: `delete` takes them when the file is missing.
    RuncOptions::default().record_in_bundle(dir.path()).unwrap();
    assert!(!path.exists());
    let crun = RuncOptions {
        binary_name: "crun".into(),
        ..RuncOptions::default()
    };
    crun.record_in_bundle(dir.path()).unwrap();
    assert_eq!(
        RuncOptions::from_json(&std::fs::read(&path).unwrap()).unwrap(),
        crun
    );
    // A file a previous task left goes when the options are the defaults again.
    RuncOptions::default().record_in_bundle(dir.path()).unwrap();
    assert!(!path.exists());
}

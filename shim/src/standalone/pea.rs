//! Peas: a process that is its own runc container, joining some namespaces of the outer
//! container's init (Garden's processes with their own `Image` or limits).
//!
//! `exec --bundle DIR [--share KINDS] CONTAINER PROCESS` makes the process directory
//! `<depot>/CONTAINER/processes/PROCESS/` both the pea's process directory (the usual
//! FIFOs and files) and its bundle: the supervisor writes `config.json` there (the
//! manager's, with `root.path` and relative bind-mount sources made absolute against the
//! manager's bundle, and the namespaces named by `--share` pointed at the outer init's
//! `/proc/PID/ns/*`), plus `pea.json` (the runc id), then runs `runc run --detach` on it.
//! This file prepares that config ([`prepare`]), names the runc container ([`runc_id`]),
//! and reads and writes `pea.json` ([`PeaRecord`]). The launch itself is the supervisor's
//! one launch path (`supervise/start.rs`), which also ties the pea's life to the outer init.

use super::errors::{CliError, CliResult};
use crate::process_core::go_json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The pea's record in its process directory.
pub const PEA_JSON: &str = "pea.json";
/// The pea's bundle config in its process directory (also the runc bundle).
pub const CONFIG_JSON: &str = "config.json";
/// Mode of `config.json`: it may hold secrets (env), and only root's runc reads it.
pub const CONFIG_MODE: u32 = 0o600;
/// Mode of `pea.json`.
pub const PEA_JSON_MODE: u32 = 0o644;

/// What `pea.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeaRecord {
    /// The pea's runc container id (in the same runc root as the outer container).
    pub runc_id: String,
    /// The manager's bundle the pea was made from.
    pub bundle: PathBuf,
}

impl PeaRecord {
    /// The record of the process in `dir`, if it is a pea (`None` for other processes).
    pub fn read(dir: &Path) -> Option<PeaRecord> {
        let bytes = std::fs::read(dir.join(PEA_JSON)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// A namespace kind: its OCI `type` and its file in `/proc/PID/ns/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsKind {
    /// The OCI name (`linux.namespaces[].type`).
    pub oci: &'static str,
    /// The file in `/proc/PID/ns/`.
    pub proc_file: &'static str,
}

/// Every kind `--share` takes: by its OCI name or its `/proc/PID/ns` name.
const KINDS: &[NsKind] = &[
    NsKind {
        oci: "network",
        proc_file: "net",
    },
    NsKind {
        oci: "ipc",
        proc_file: "ipc",
    },
    NsKind {
        oci: "uts",
        proc_file: "uts",
    },
    NsKind {
        oci: "pid",
        proc_file: "pid",
    },
    NsKind {
        oci: "mount",
        proc_file: "mnt",
    },
    NsKind {
        oci: "user",
        proc_file: "user",
    },
    NsKind {
        oci: "cgroup",
        proc_file: "cgroup",
    },
    NsKind {
        oci: "time",
        proc_file: "time",
    },
];

/// Parses `--share`'s comma-separated kinds (`net,ipc,uts,pid`; OCI names such as
/// `network` work too), without duplicates. An empty list shares nothing.
pub fn parse_share(text: &str) -> CliResult<Vec<NsKind>> {
    let mut out: Vec<NsKind> = Vec::new();
    for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let kind = KINDS
            .iter()
            .find(|k| k.oci == word || k.proc_file == word)
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "--share: unknown namespace kind {word:?} (one of net ipc uts pid mnt user \
                     cgroup time)"
                ))
            })?;
        if !out.contains(kind) {
            out.push(*kind);
        }
    }
    Ok(out)
}

/// The pea's runc container id: `<container>.<process>`, checked against what runc
/// accepts (letters, digits, `_ + - .`). Two peas can only collide with an id of that
/// form already in the runc root, which runc refuses (exit code 120).
pub fn runc_id(container: &str, process: &str) -> CliResult<String> {
    let id = format!("{container}.{process}");
    let ok = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'));
    if !ok {
        return Err(CliError::Usage(format!(
            "a pea is a runc container named {id:?}: container and process ids of a pea may \
             hold only letters, digits and _ + - ."
        )));
    }
    Ok(id)
}

/// The manager's bundle, checked and turned into the pea's `config.json`.
#[derive(Debug)]
pub struct Prepared {
    /// The config to write into the process directory.
    pub config: Vec<u8>,
    /// The bundle, absolute.
    pub bundle: PathBuf,
    /// Whether the pea's process has a terminal.
    pub tty: bool,
}

/// Reads `bundle/config.json` (as runc reads it) and prepares the pea's config: root and
/// relative bind-mount sources made absolute against the bundle (the pea's bundle is its
/// process directory), `process.terminal` forced on by `force_tty`, and every kind in
/// `share` pointed at `/proc/<outer_pid>/ns/<kind>`. Errors: [`CliError::InvalidSpec`]
/// for a bundle that is not one, a kind the outer init does not have a namespace of its
/// own for (it shares ours: the pea would join the host's), or a kind the bundle already
/// gives another path.
pub fn prepare(
    bundle: &Path,
    share: &[NsKind],
    outer_pid: i32,
    force_tty: bool,
) -> CliResult<Prepared> {
    let not_bundle = |why: String| {
        CliError::InvalidSpec(format!("{} is not an OCI bundle: {why}", bundle.display()))
    };
    let abs = std::fs::canonicalize(bundle).map_err(|e| not_bundle(e.to_string()))?;
    let bytes = std::fs::read(abs.join(CONFIG_JSON))
        .map_err(|e| not_bundle(format!("config.json: {e}")))?;
    let mut config: Value = serde_json::from_str(&go_json::as_go_reads(&bytes))
        .map_err(|e| not_bundle(format!("config.json: {e}")))?;
    let shared: Vec<(NsKind, String)> = share
        .iter()
        .map(|k| (*k, format!("/proc/{outer_pid}/ns/{}", k.proc_file)))
        .collect();
    for (kind, path) in &shared {
        check_own_namespace(*kind, path)?;
    }
    let tty =
        rewrite(&mut config, &abs, &shared, force_tty).map_err(|e| not_bundle(e.to_string()))?;
    let config = serde_json::to_vec(&config).map_err(|e| not_bundle(e.to_string()))?;
    Ok(Prepared {
        config,
        bundle: abs,
        tty,
    })
}

/// The outer init must have a namespace of `kind` of its own: if it shares ours (the
/// host's), `--share` would put the pea in the host's.
fn check_own_namespace(kind: NsKind, outer: &str) -> CliResult<()> {
    let ours = format!("/proc/self/ns/{}", kind.proc_file);
    let id = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
    match (id(outer), id(&ours)) {
        (Ok(theirs), Ok(mine)) if theirs == mine => Err(CliError::InvalidSpec(format!(
            "--share {}: the container has no {} namespace of its own (its init shares the \
             host's)",
            kind.proc_file, kind.oci
        ))),
        (Ok(_), _) => Ok(()),
        (Err(e), _) => Err(CliError::InvalidSpec(format!(
            "--share {}: {outer}: {e}",
            kind.proc_file
        ))),
    }
}

/// Why a pea's `config.json` cannot be made its runc config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum RewriteError {
    #[error("config.json is not a JSON object")]
    NotAnObject,
    #[error("config.json has no process")]
    NoProcess,
    #[error("process.args must be a non-empty array of strings")]
    BadArgs,
    #[error("config.json has no root.path")]
    NoRootPath,
    #[error("rootfs {0:?} is not a directory")]
    RootfsNotADirectory(String),
    #[error("linux is not an object")]
    LinuxNotAnObject,
    #[error("linux.namespaces is not an array")]
    NamespacesNotAnArray,
    /// The bundle names another path for a namespace `--share` asks for.
    #[error(
        "linux.namespaces gives {oci} the path {existing:?}, and --share {proc_file} asks for \
         the container's"
    )]
    NamespaceConflict {
        oci: &'static str,
        existing: String,
        proc_file: &'static str,
    },
}

/// Edits a parsed config in place (see [`prepare`]); returns whether it has a terminal.
fn rewrite(
    config: &mut Value,
    bundle: &Path,
    shared: &[(NsKind, String)],
    force_tty: bool,
) -> Result<bool, RewriteError> {
    let obj = config.as_object_mut().ok_or(RewriteError::NotAnObject)?;
    let process = obj
        .get_mut("process")
        .and_then(Value::as_object_mut)
        .ok_or(RewriteError::NoProcess)?;
    let args_ok = process
        .get("args")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string));
    if !args_ok {
        return Err(RewriteError::BadArgs);
    }
    if force_tty {
        process.insert("terminal".into(), Value::Bool(true));
    }
    let tty = process
        .get("terminal")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let root = obj
        .get_mut("root")
        .and_then(Value::as_object_mut)
        .ok_or(RewriteError::NoRootPath)?;
    let root_path = root
        .get("path")
        .and_then(Value::as_str)
        .ok_or(RewriteError::NoRootPath)?;
    // runc refuses a rootfs path through a symlink: resolved here, against the bundle.
    let root_abs = std::fs::canonicalize(bundle.join(root_path))
        .ok()
        .filter(|p| p.is_dir())
        .ok_or_else(|| RewriteError::RootfsNotADirectory(root_path.to_string()))?;
    root.insert("path".into(), json!(root_abs));
    if let Some(mounts) = obj.get_mut("mounts").and_then(Value::as_array_mut) {
        for m in mounts.iter_mut().filter_map(Value::as_object_mut) {
            absolutize_bind_source(m, bundle);
        }
    }
    if !shared.is_empty() {
        let linux = obj
            .entry("linux")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or(RewriteError::LinuxNotAnObject)?;
        let namespaces = linux
            .entry("namespaces")
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .ok_or(RewriteError::NamespacesNotAnArray)?;
        for (kind, path) in shared {
            share_namespace(namespaces, *kind, path)?;
        }
    }
    Ok(tty)
}

/// A bind mount's relative source is the bundle's (runc resolves it from its working
/// directory, the bundle; the pea's bundle is its process directory).
fn absolutize_bind_source(mount: &mut Map<String, Value>, bundle: &Path) {
    let is_bind = mount.get("type").and_then(Value::as_str) == Some("bind")
        || mount
            .get("options")
            .and_then(Value::as_array)
            .is_some_and(|o| o.iter().any(|v| v == "bind" || v == "rbind"));
    let Some(source) = mount.get("source").and_then(Value::as_str) else {
        return;
    };
    if is_bind && !Path::new(source).is_absolute() {
        let abs = bundle.join(source);
        mount.insert("source".into(), json!(abs));
    }
}

/// Points the namespace entry of `kind` at `path` (adds it if missing). A bundle that
/// already names another path for it is refused: two answers to one question.
fn share_namespace(
    namespaces: &mut Vec<Value>,
    kind: NsKind,
    path: &str,
) -> Result<(), RewriteError> {
    let existing = namespaces
        .iter_mut()
        .filter_map(Value::as_object_mut)
        .find(|n| n.get("type").and_then(Value::as_str) == Some(kind.oci));
    match existing {
        Some(entry) => {
            match entry.get("path").and_then(Value::as_str) {
                Some(p) if !p.is_empty() && p != path => {
                    return Err(RewriteError::NamespaceConflict {
                        oci: kind.oci,
                        existing: p.to_string(),
                        proc_file: kind.proc_file,
                    })
                }
                _ => {}
            }
            entry.insert("path".into(), json!(path));
        }
        None => namespaces.push(json!({"type": kind.oci, "path": path})),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_kinds_parse_by_either_name() {
        let k = parse_share("net,ipc, uts,pid,network").unwrap();
        let names: Vec<_> = k.iter().map(|k| k.oci).collect();
        assert_eq!(names, ["network", "ipc", "uts", "pid"]);
        assert!(parse_share("").unwrap().is_empty());
        assert_eq!(parse_share("mnt").unwrap()[0].oci, "mount");
        let e = parse_share("net,bogus").unwrap_err();
        assert_eq!(e.exit_code(), super::super::errors::EXIT_USAGE);
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn runc_ids_are_checked() {
        assert_eq!(runc_id("web", "job-1").unwrap(), "web.job-1");
        assert!(runc_id("web", "a b").is_err());
        assert!(runc_id("web", "é").is_err());
    }

    fn bundle_with_rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        dir
    }

    #[test]
    fn rewrite_makes_paths_absolute_and_fills_shared_namespaces() {
        let b = bundle_with_rootfs();
        let mut config = json!({
            "process": {"args": ["sh"]},
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/data", "type": "bind", "source": "data", "options": ["rbind"]},
                {"destination": "/x", "type": "none", "source": "x", "options": ["bind"]},
                {"destination": "/proc", "type": "proc", "source": "proc"}
            ],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}]}
        });
        let net = KINDS[0];
        let ipc = KINDS[1];
        let shared = vec![
            (net, "/proc/7/ns/net".to_string()),
            (ipc, "/proc/7/ns/ipc".to_string()),
        ];
        let tty = rewrite(&mut config, b.path(), &shared, true).unwrap();
        assert!(tty);
        let real = std::fs::canonicalize(b.path()).unwrap();
        assert_eq!(config["root"]["path"], json!(real.join("rootfs")));
        assert_eq!(config["mounts"][0]["source"], json!(b.path().join("data")));
        assert_eq!(config["mounts"][1]["source"], json!(b.path().join("x")));
        assert_eq!(config["mounts"][2]["source"], "proc", "not a bind mount");
        let ns = config["linux"]["namespaces"].as_array().unwrap();
        assert_eq!(ns[1], json!({"type": "network", "path": "/proc/7/ns/net"}));
        assert_eq!(ns[3], json!({"type": "ipc", "path": "/proc/7/ns/ipc"}));
        assert_eq!(ns[0], json!({"type": "pid"}), "not shared: untouched");
    }

    #[test]
    fn rewrite_refuses_what_is_not_a_bundle() {
        let b = bundle_with_rootfs();
        let bad = |mut c: Value| {
            rewrite(&mut c, b.path(), &[], false)
                .unwrap_err()
                .to_string()
        };
        assert!(bad(json!([])).contains("not a JSON object"));
        assert!(bad(json!({"root": {"path": "rootfs"}})).contains("no process"));
        assert!(bad(json!({"process": {"args": []}, "root": {"path": "rootfs"}})).contains("args"));
        assert!(bad(json!({"process": {"args": ["sh"]}})).contains("root.path"));
        assert!(
            bad(json!({"process": {"args": ["sh"]}, "root": {"path": "nope"}}))
                .contains("not a directory")
        );
        let mut conflict = json!({
            "process": {"args": ["sh"]}, "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": "network", "path": "/var/run/netns/x"}]}
        });
        let e = rewrite(
            &mut conflict,
            b.path(),
            &[(KINDS[0], "/proc/7/ns/net".into())],
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/var/run/netns/x"), "{e}");
    }

    #[test]
    fn a_namespace_the_host_shares_is_refused() {
        // Our own namespaces are the host's as far as this check goes.
        let me = std::process::id();
        let e = check_own_namespace(KINDS[0], &format!("/proc/{me}/ns/net")).unwrap_err();
        assert_eq!(e.exit_code(), super::super::errors::EXIT_INVALID_SPEC);
        assert!(
            e.to_string().contains("no network namespace of its own"),
            "{e}"
        );
    }

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(PeaRecord::read(dir.path()), None);
        let rec = PeaRecord {
            runc_id: "c.p".into(),
            bundle: "/b".into(),
        };
        std::fs::write(dir.path().join(PEA_JSON), serde_json::to_vec(&rec).unwrap()).unwrap();
        assert_eq!(PeaRecord::read(dir.path()), Some(rec));
    }
}

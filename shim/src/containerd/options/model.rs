//! The runc options tether honours, and checkpoint options, whatever form they came in.

use super::OptionsError;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The runc options tether honours, whatever form they arrived in.
///
/// Empty strings, `false` and `0` mean "not set": callers apply the defaults
/// (`runc` for the binary, `/run/containerd/runc/<namespace>` for the root).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuncOptions {
    /// runc binary name or path; empty means `runc`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub binary_name: String,
    /// `runc --root`; empty means the default per-namespace root.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub root: String,
    /// Use the systemd cgroup driver (`runc --systemd-cgroup`).
    #[serde(skip_serializing_if = "is_false")]
    pub systemd_cgroup: bool,
    /// `runc create --no-pivot`.
    #[serde(skip_serializing_if = "is_false")]
    pub no_pivot_root: bool,
    /// `runc create --no-new-keyring`.
    #[serde(skip_serializing_if = "is_false")]
    pub no_new_keyring: bool,
    /// Owner uid of the I/O pipes.
    #[serde(skip_serializing_if = "is_zero")]
    pub io_uid: u32,
    /// Owner gid of the I/O pipes.
    #[serde(skip_serializing_if = "is_zero")]
    pub io_gid: u32,
    /// cgroup to move the shim into.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub shim_cgroup: String,
    /// criu binary path (removed from containerd 2.0's message, still sent by 1.x).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub criu_path: String,
    /// Checkpoint image path used for restore.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub criu_image_path: String,
    /// criu work directory.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub criu_work_path: String,
    /// tether's per-stream output spool limit (`SpoolLimit` in the TOML options; bytes,
    /// `K`/`M`/`G` suffixes, an integer or a string; see `spool_setting`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub spool_limit: String,
    /// tether's spool policy at the limit (`SpoolPolicy`: `block` or `drop-oldest`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub spool_policy: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl RuncOptions {
    /// JSON for the bundle's `options.json`, with the Go shim's snake_case
    /// keys; empty, `false` and zero fields are omitted.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, bools and integers always serialises; the
        // fallback only exists so this path cannot panic.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// Parses `options.json` as written by [`RuncOptions::to_json`] or by the
    /// Go runc shim: missing keys take their defaults, unknown keys (such as
    /// `task_api_address`) are ignored.
    pub fn from_json(bytes: &[u8]) -> Result<Self, OptionsError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// Writes [`Self::to_json`] to `path` (a bundle's `options.json`), readable by root
    /// only (0600, as the Go shim writes it: the options name binaries and paths), the mode
    /// set on an existing file too.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(&self.to_json())
    }

    /// Records these options in `bundle`'s `options.json` for `delete` (which finds the
    /// runtime and its root by it after the shim died): written when they differ from the
    /// defaults; for the defaults, which `delete` takes when the file is missing, a file
    /// left there is removed instead, sparing the file system one file per container
    /// (`ctr`'s tasks, most often, carry no options).
    pub fn record_in_bundle(&self, bundle: &Path) -> std::io::Result<()> {
        let path = bundle.join("options.json");
        if *self != RuncOptions::default() {
            return self.write_json(&path);
        }
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Layers task-level options over these container-level (start-time)
    /// ones: every non-empty string, `true` flag or non-zero id in `task`
    /// wins; everything else keeps the value from `self`. A flag cannot be
    /// turned off by a task-level override, because protobuf cannot tell an
    /// explicit `false` from "not set".
    pub fn merged_with(&self, task: &RuncOptions) -> RuncOptions {
        fn s(base: &str, over: &str) -> String {
            if over.is_empty() { base } else { over }.to_string()
        }
        fn n(base: u32, over: u32) -> u32 {
            if over != 0 {
                over
            } else {
                base
            }
        }
        RuncOptions {
            binary_name: s(&self.binary_name, &task.binary_name),
            root: s(&self.root, &task.root),
            systemd_cgroup: self.systemd_cgroup || task.systemd_cgroup,
            no_pivot_root: self.no_pivot_root || task.no_pivot_root,
            no_new_keyring: self.no_new_keyring || task.no_new_keyring,
            io_uid: n(self.io_uid, task.io_uid),
            io_gid: n(self.io_gid, task.io_gid),
            shim_cgroup: s(&self.shim_cgroup, &task.shim_cgroup),
            criu_path: s(&self.criu_path, &task.criu_path),
            criu_image_path: s(&self.criu_image_path, &task.criu_image_path),
            criu_work_path: s(&self.criu_work_path, &task.criu_work_path),
            spool_limit: s(&self.spool_limit, &task.spool_limit),
            spool_policy: s(&self.spool_policy, &task.spool_policy),
        }
    }
}

/// Checkpoint options, from `containerd.runc.v1.CheckpointOptions` or the
/// legacy `containerd.linux.runc.CheckpointOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointOptions {
    /// Stop the container after checkpointing (`runc checkpoint` without `--leave-running`).
    pub exit: bool,
    /// `--tcp-established`.
    pub open_tcp: bool,
    /// `--ext-unix-sk`.
    pub external_unix_sockets: bool,
    /// `--shell-job`.
    pub terminal: bool,
    /// `--file-locks`.
    pub file_locks: bool,
    /// `--empty-ns` values.
    pub empty_namespaces: Vec<String>,
    /// `--manage-cgroups-mode` (soft, full, strict); empty means runc's default.
    pub cgroups_mode: String,
    /// `--image-path`.
    pub image_path: String,
    /// `--work-path`.
    pub work_path: String,
}

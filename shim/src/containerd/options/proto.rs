//! The protobuf forms of runtime options: runc v1 `Options` (`containerd-shim-protos`), the
//! legacy `runctypes` messages and CRI's `runtimeoptions.v1.Options`, which points at TOML
//! (both generated from `shim/proto/`, see `containerd/protos.rs`).
//!
//! Every form decodes as containerd's Go decoder does on what Go encoders send: a field of
//! an unknown number, or of a known number with another wire type, is kept as an unknown
//! field (ignored). On what no Go encoder sends, rust-protobuf is stricter in one place
//! (a `uint32` field longer than its 32-bit varint form is an error; Go truncates) and
//! laxer in another (a group is skipped to its first end-group, whichever field's; Go
//! checks it is the group's own).

use super::cri_toml::options_from_toml_bytes;
use super::{decode_err, read_toml_config, CheckpointOptions, OptionsError, RuncOptions};
use crate::containerd::protos::{runctypes, runtimeoptions};
use containerd_shim_protos::shim::oci;
use protobuf::Message;
use std::path::Path;

/// Why the bytes of a protobuf options message do not decode.
#[derive(Debug, thiserror::Error)]
pub(super) enum ProtoError {
    /// The generated decoder refused them.
    #[error("{0}")]
    Protobuf(#[from] protobuf::Error),
    /// containerd 1.x's `criu_path`, kept as an unknown field, is not a string.
    #[error("field 8 (criu_path) is not valid UTF-8")]
    CriuPathNotUtf8,
}

pub(super) fn decode_runc_v1(value: &[u8]) -> Result<RuncOptions, ProtoError> {
    let m = oci::Options::parse_from_bytes(value)?;
    // criu_path (field 8) was removed from the message in containerd 2.0 but
    // containerd 1.x still sends it; the generated type keeps it as unknown.
    let criu_path = match m.special_fields.unknown_fields().get(8) {
        Some(protobuf::UnknownValueRef::LengthDelimited(b)) => std::str::from_utf8(b)
            .map_err(|_| ProtoError::CriuPathNotUtf8)?
            .to_string(),
        _ => String::new(),
    };
    Ok(RuncOptions {
        binary_name: m.binary_name,
        root: m.root,
        systemd_cgroup: m.systemd_cgroup,
        no_pivot_root: m.no_pivot_root,
        no_new_keyring: m.no_new_keyring,
        io_uid: m.io_uid,
        io_gid: m.io_gid,
        shim_cgroup: m.shim_cgroup,
        criu_path,
        criu_image_path: m.criu_image_path,
        criu_work_path: m.criu_work_path,
        ..RuncOptions::default()
    })
}

/// `containerd.runc.v1.CheckpointOptions`.
pub(super) fn decode_runc_v1_checkpoint(value: &[u8]) -> Result<CheckpointOptions, ProtoError> {
    let m = oci::CheckpointOptions::parse_from_bytes(value)?;
    Ok(CheckpointOptions {
        exit: m.exit,
        open_tcp: m.open_tcp,
        external_unix_sockets: m.external_unix_sockets,
        terminal: m.terminal,
        file_locks: m.file_locks,
        empty_namespaces: m.empty_namespaces,
        cgroups_mode: m.cgroups_mode,
        image_path: m.image_path,
        work_path: m.work_path,
    })
}

/// `containerd.linux.runc.CreateOptions`. Its checkpoint/restore settings (`open_tcp`,
/// `external_unix_sockets`, `terminal`, `file_locks`, `empty_namespaces`, `cgroups_mode`)
/// have no place in [`RuncOptions`]: decoded, then dropped.
pub(super) fn decode_legacy_create(value: &[u8]) -> Result<RuncOptions, ProtoError> {
    let m = runctypes::CreateOptions::parse_from_bytes(value)?;
    Ok(RuncOptions {
        no_pivot_root: m.no_pivot_root,
        no_new_keyring: m.no_new_keyring,
        shim_cgroup: m.shim_cgroup,
        io_uid: m.io_uid,
        io_gid: m.io_gid,
        criu_work_path: m.criu_work_path,
        criu_image_path: m.criu_image_path,
        ..RuncOptions::default()
    })
}

/// `containerd.linux.runc.RuncOptions`.
pub(super) fn decode_legacy_runc(value: &[u8]) -> Result<RuncOptions, ProtoError> {
    let m = runctypes::RuncOptions::parse_from_bytes(value)?;
    Ok(RuncOptions {
        binary_name: m.runtime,
        root: m.runtime_root,
        criu_path: m.criu_path,
        systemd_cgroup: m.systemd_cgroup,
        ..RuncOptions::default()
    })
}

/// `containerd.linux.runc.CheckpointOptions` (its `work_path` is 8 and `image_path` 9, the
/// reverse of the runc v1 message: the generated type takes care of it).
pub(super) fn decode_legacy_checkpoint(value: &[u8]) -> Result<CheckpointOptions, ProtoError> {
    let m = runctypes::CheckpointOptions::parse_from_bytes(value)?;
    Ok(CheckpointOptions {
        exit: m.exit,
        open_tcp: m.open_tcp,
        external_unix_sockets: m.external_unix_sockets,
        terminal: m.terminal,
        file_locks: m.file_locks,
        empty_namespaces: m.empty_namespaces,
        cgroups_mode: m.cgroups_mode,
        image_path: m.image_path,
        work_path: m.work_path,
    })
}

/// CRI's `runtimeoptions.v1.Options`: 1 type_url, 2 config_path, 3 config_body.
pub(super) fn decode_cri(type_url: &str, value: &[u8]) -> Result<RuncOptions, OptionsError> {
    let m =
        runtimeoptions::Options::parse_from_bytes(value).map_err(|e| decode_err(type_url, e))?;
    // containerd >= 1.7 inlines the options table; prefer it over a file that
    // may have changed since CRI read its config.
    if !m.config_body.is_empty() {
        return options_from_toml_bytes("<config_body>", &m.config_body);
    }
    if m.config_path.is_empty() {
        return Ok(RuncOptions::default());
    }
    read_toml_config(Path::new(&m.config_path))
}

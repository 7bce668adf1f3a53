//! The protobuf forms of runtime options: runc v1 `Options`, the legacy `runctypes`
//! messages, and CRI's `runtimeoptions.v1.Options` (which points at TOML).

use super::cri_toml::options_from_toml_bytes;
use super::{decode_err, read_toml_config, CheckpointOptions, OptionsError, RuncOptions};
use crate::containerd::wire::{self, WireError};
use containerd_shim_protos::shim::oci;
use protobuf::Message;
use std::path::Path;

/// Why the bytes of a protobuf options message do not decode.
#[derive(Debug, thiserror::Error)]
pub(super) enum ProtoError {
    /// The generated decoder refused them.
    #[error("{0}")]
    Protobuf(#[from] protobuf::Error),
    /// The hand-written wire reader refused them.
    #[error(transparent)]
    Wire(#[from] WireError),
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

/// `containerd.linux.runc.CreateOptions` (runtime/linux/runctypes/runc.proto).
pub(super) fn decode_legacy_create(value: &[u8]) -> Result<RuncOptions, ProtoError> {
    let mut o = RuncOptions::default();
    let mut r = wire::Reader::new(value);
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => o.no_pivot_root = v.bool(field)?,
            // open_tcp, external_unix_sockets, terminal, file_locks,
            // empty_namespaces, cgroups_mode: checkpoint/restore settings
            // RuncOptions has no place for; type-checked, then dropped.
            2..=5 => {
                v.bool(field)?;
            }
            6 | 7 => {
                v.string(field)?;
            }
            8 => o.no_new_keyring = v.bool(field)?,
            9 => o.shim_cgroup = v.string(field)?,
            10 => o.io_uid = v.uint32(field)?,
            11 => o.io_gid = v.uint32(field)?,
            12 => o.criu_work_path = v.string(field)?,
            13 => o.criu_image_path = v.string(field)?,
            _ => {}
        }
    }
    Ok(o)
}

/// `containerd.linux.runc.RuncOptions` (runtime/linux/runctypes/runc.proto).
pub(super) fn decode_legacy_runc(value: &[u8]) -> Result<RuncOptions, ProtoError> {
    let mut o = RuncOptions::default();
    let mut r = wire::Reader::new(value);
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => o.binary_name = v.string(field)?,
            2 => o.root = v.string(field)?,
            3 => o.criu_path = v.string(field)?,
            4 => o.systemd_cgroup = v.bool(field)?,
            _ => {}
        }
    }
    Ok(o)
}

/// `containerd.linux.runc.CheckpointOptions`. Note the legacy message numbers
/// `work_path` 8 and `image_path` 9, the reverse of the runc v1 message.
pub(super) fn decode_legacy_checkpoint(value: &[u8]) -> Result<CheckpointOptions, ProtoError> {
    let mut o = CheckpointOptions::default();
    let mut r = wire::Reader::new(value);
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => o.exit = v.bool(field)?,
            2 => o.open_tcp = v.bool(field)?,
            3 => o.external_unix_sockets = v.bool(field)?,
            4 => o.terminal = v.bool(field)?,
            5 => o.file_locks = v.bool(field)?,
            6 => o.empty_namespaces.push(v.string(field)?),
            7 => o.cgroups_mode = v.string(field)?,
            8 => o.work_path = v.string(field)?,
            9 => o.image_path = v.string(field)?,
            _ => {}
        }
    }
    Ok(o)
}

/// CRI's `runtimeoptions.v1.Options`: 1 type_url, 2 config_path, 3 config_body.
pub(super) fn decode_cri(type_url: &str, value: &[u8]) -> Result<RuncOptions, OptionsError> {
    let mut config_path = String::new();
    let mut config_body: &[u8] = &[];
    let mut r = wire::Reader::new(value);
    loop {
        let (field, v) = match r.next_field() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(decode_err(type_url, e)),
        };
        match field {
            1 => {
                v.string(field).map_err(|e| decode_err(type_url, e))?;
            }
            2 => config_path = v.string(field).map_err(|e| decode_err(type_url, e))?,
            3 => config_body = v.bytes(field).map_err(|e| decode_err(type_url, e))?,
            _ => {}
        }
    }
    // containerd >= 1.7 inlines the options table; prefer it over a file that
    // may have changed since CRI read its config.
    if !config_body.is_empty() {
        return options_from_toml_bytes("<config_body>", config_body);
    }
    if config_path.is_empty() {
        return Ok(RuncOptions::default());
    }
    read_toml_config(Path::new(&config_path))
}

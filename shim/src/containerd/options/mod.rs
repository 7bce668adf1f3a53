//! Runtime options in every form containerd sends them.
//!
//! containerd hands the shim its runc options as a protobuf `Any` in three
//! places: `CreateTaskRequest.options` (container-level, set at create time),
//! the bundle's `options.json` written by a previous shim (so `delete` after a
//! dead shim still knows `Root`/`BinaryName`), and task-level overrides. The
//! message inside the `Any` depends on who built it:
//!
//! * `containerd.runc.v1.Options`: the runc v2 shim's own message (ctr,
//!   nerdctl, CRI with `runtime_type = "io.containerd.runc.v2"`).
//! * `containerd.linux.runc.CreateOptions` / `containerd.linux.runc.RuncOptions`:
//!   the legacy `runctypes` messages of the v1 linux runtime.
//! * `runtimeoptions.v1.Options`: what CRI sends to any runtime type it does not
//!   know (ours: `io.containerd.tether.v2`): a path to, or the body of, the TOML
//!   `options` table of the runtime's CRI config.
//!
//! Everything is decoded without panicking on any input: malformed bytes or
//! TOML become an [`OptionsError`] that names the problem.
//!
//! One concern per file: [`model`] is what tether honours, `proto` decodes the protobuf
//! forms (messages generated from `shim/proto/`, or `containerd-shim-protos`'), and
//! `cri_toml` maps CRI's TOML (parsed by the `toml` crate) onto the model.

mod cri_toml;
mod model;
mod proto;
#[cfg(test)]
mod tests;

pub use cri_toml::{options_from_toml, read_toml_config};
pub use model::{CheckpointOptions, RuncOptions};
use proto::{
    decode_cri, decode_legacy_checkpoint, decode_legacy_create, decode_legacy_runc, decode_runc_v1,
    decode_runc_v1_checkpoint,
};

/// Full name of the runc v2 shim's options message.
pub const RUNC_V1_OPTIONS: &str = "containerd.runc.v1.Options";
/// Full name of the runc v2 shim's checkpoint options message.
pub const RUNC_V1_CHECKPOINT_OPTIONS: &str = "containerd.runc.v1.CheckpointOptions";
/// Full name of the legacy (`runctypes`) create options message.
pub const LEGACY_CREATE_OPTIONS: &str = "containerd.linux.runc.CreateOptions";
/// Full name of the legacy (`runctypes`) runtime options message.
pub const LEGACY_RUNC_OPTIONS: &str = "containerd.linux.runc.RuncOptions";
/// Full name of the legacy (`runctypes`) checkpoint options message.
pub const LEGACY_CHECKPOINT_OPTIONS: &str = "containerd.linux.runc.CheckpointOptions";
/// Full name of CRI's generic runtime options message.
pub const CRI_RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";
/// The same message under its older package name (containerd 1.3-1.4 `pkg/cri`).
pub const CRI_RUNTIME_OPTIONS_OLD: &str = "cri.runtimeoptions.v1.Options";

/// Prefix `anypb` puts in front of full message names; containerd's typeurl
/// uses the bare full name, but other clients may send the prefixed form.
const GOOGLE_TYPE_PREFIX: &str = "type.googleapis.com/";

/// Why runtime options could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// The `Any` carried a message type tether does not understand.
    #[error("unsupported runtime options type {0:?}")]
    UnknownType(String),
    /// The bytes were not a valid encoding of the named message.
    #[error("cannot decode {type_url} runtime options: {reason}")]
    Decode {
        /// The message type that was being decoded.
        type_url: String,
        /// What was wrong with the bytes.
        reason: String,
    },
    /// The TOML config named by CRI's `config_path` could not be read.
    #[error("cannot read runtime options config {path}: {source}")]
    ConfigRead {
        /// The path from `config_path`.
        path: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML config is malformed, or a known key has a value of the wrong type.
    #[error("runtime options config {file}, line {line}: {message}")]
    Toml {
        /// The config file path, or `<config_body>` for an inline body.
        file: String,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// `options.json` is not valid JSON of the expected shape.
    #[error("invalid options.json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Strips the `type.googleapis.com/` prefix `anypb` uses; any other type URL
/// is returned unchanged (containerd's typeurl sends bare full names).
fn bare_type_name(type_url: &str) -> &str {
    match type_url.strip_prefix(GOOGLE_TYPE_PREFIX) {
        Some(rest) => rest.rsplit('/').next().unwrap_or(rest),
        None => type_url,
    }
}

pub(super) fn decode_err(type_url: &str, reason: impl std::fmt::Display) -> OptionsError {
    OptionsError::Decode {
        type_url: type_url.to_string(),
        reason: reason.to_string(),
    }
}

/// Decodes runtime options from a protobuf `Any`'s `type_url` and `value`.
///
/// Accepts `containerd.runc.v1.Options`, the legacy
/// `containerd.linux.runc.CreateOptions` and `containerd.linux.runc.RuncOptions`,
/// and CRI's `runtimeoptions.v1.Options` (whose TOML `config_body`, or the file
/// at `config_path`, is read). An empty `Any` yields the defaults; any other
/// type is [`OptionsError::UnknownType`]. Never panics on malformed input.
pub fn decode_options(type_url: &str, value: &[u8]) -> Result<RuncOptions, OptionsError> {
    match bare_type_name(type_url) {
        "" if value.is_empty() => Ok(RuncOptions::default()),
        RUNC_V1_OPTIONS => decode_runc_v1(value).map_err(|e| decode_err(type_url, e)),
        LEGACY_CREATE_OPTIONS => decode_legacy_create(value).map_err(|e| decode_err(type_url, e)),
        LEGACY_RUNC_OPTIONS => decode_legacy_runc(value).map_err(|e| decode_err(type_url, e)),
        CRI_RUNTIME_OPTIONS | CRI_RUNTIME_OPTIONS_OLD => decode_cri(type_url, value),
        _ => Err(OptionsError::UnknownType(type_url.to_string())),
    }
}

/// Decodes checkpoint options from a protobuf `Any`'s `type_url` and `value`:
/// `containerd.runc.v1.CheckpointOptions` or the legacy
/// `containerd.linux.runc.CheckpointOptions`. An empty `Any` yields the
/// defaults; any other type is [`OptionsError::UnknownType`].
pub fn decode_checkpoint_options(
    type_url: &str,
    value: &[u8],
) -> Result<CheckpointOptions, OptionsError> {
    match bare_type_name(type_url) {
        "" if value.is_empty() => Ok(CheckpointOptions::default()),
        RUNC_V1_CHECKPOINT_OPTIONS => {
            decode_runc_v1_checkpoint(value).map_err(|e| decode_err(type_url, e))
        }
        LEGACY_CHECKPOINT_OPTIONS => {
            decode_legacy_checkpoint(value).map_err(|e| decode_err(type_url, e))
        }
        _ => Err(OptionsError::UnknownType(type_url.to_string())),
    }
}

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

use std::path::Path;

use crate::containerd::wire;
use containerd_shim_protos::shim::oci;
use protobuf::Message;
use serde::{Deserialize, Serialize};

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

/// Largest TOML config file we are willing to read: the real ones are a few
/// lines; anything bigger is a mistake and must not balloon the resident shim.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

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

/// Strips the `type.googleapis.com/` prefix `anypb` uses; any other type URL
/// is returned unchanged (containerd's typeurl sends bare full names).
fn bare_type_name(type_url: &str) -> &str {
    match type_url.strip_prefix(GOOGLE_TYPE_PREFIX) {
        Some(rest) => rest.rsplit('/').next().unwrap_or(rest),
        None => type_url,
    }
}

fn decode_err(type_url: &str, reason: impl std::fmt::Display) -> OptionsError {
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
            let m = oci::CheckpointOptions::parse_from_bytes(value)
                .map_err(|e| decode_err(type_url, e))?;
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
        LEGACY_CHECKPOINT_OPTIONS => {
            decode_legacy_checkpoint(value).map_err(|e| decode_err(type_url, e))
        }
        _ => Err(OptionsError::UnknownType(type_url.to_string())),
    }
}

fn decode_runc_v1(value: &[u8]) -> Result<RuncOptions, String> {
    let m = oci::Options::parse_from_bytes(value).map_err(|e| e.to_string())?;
    // criu_path (field 8) was removed from the message in containerd 2.0 but
    // containerd 1.x still sends it; the generated type keeps it as unknown.
    let criu_path = match m.special_fields.unknown_fields().get(8) {
        Some(protobuf::UnknownValueRef::LengthDelimited(b)) => std::str::from_utf8(b)
            .map_err(|_| "field 8 (criu_path) is not valid UTF-8".to_string())?
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

/// `containerd.linux.runc.CreateOptions` (runtime/linux/runctypes/runc.proto).
fn decode_legacy_create(value: &[u8]) -> Result<RuncOptions, String> {
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
fn decode_legacy_runc(value: &[u8]) -> Result<RuncOptions, String> {
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
fn decode_legacy_checkpoint(value: &[u8]) -> Result<CheckpointOptions, String> {
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
fn decode_cri(type_url: &str, value: &[u8]) -> Result<RuncOptions, OptionsError> {
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

/// Reads runc options from a TOML file (CRI's `ConfigPath`): keys such as
/// `BinaryName`, `SystemdCgroup`, `IoUid` are taken from the top level and from
/// any table; unknown keys are ignored.
pub fn read_toml_config(path: &Path) -> Result<RuncOptions, OptionsError> {
    use std::io::Read;
    let name = path.display().to_string();
    let read_err = |source| OptionsError::ConfigRead {
        path: name.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_CONFIG_BYTES} bytes"),
        )));
    }
    options_from_toml_bytes(&name, &bytes)
}

fn options_from_toml_bytes(file: &str, bytes: &[u8]) -> Result<RuncOptions, OptionsError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        OptionsError::Toml {
            file: file.to_string(),
            line,
            message: "not valid UTF-8".to_string(),
        }
    })?;
    options_from_toml(file, text)
}

/// Maps the TOML keys CRI writes for runc-like runtimes onto [`RuncOptions`].
/// `file` only names the source in errors.
pub fn options_from_toml(file: &str, text: &str) -> Result<RuncOptions, OptionsError> {
    let toml_err = |line, message: String| OptionsError::Toml {
        file: file.to_string(),
        line,
        message,
    };
    let entries = toml::parse(text).map_err(|e| toml_err(e.line, e.message))?;
    let mut o = RuncOptions::default();
    for entry in entries {
        // BurntSushi/toml, which the Go shim decodes with, matches keys to
        // field names case-insensitively; also accept snake_case spellings.
        let key: String = entry
            .key
            .chars()
            .filter(|&c| c != '_' && c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let want_str = |v: toml::Value| match v {
            toml::Value::Str(s) => Ok(s),
            other => Err(toml_err(
                entry.line,
                format!("{} must be a string, not {}", entry.key, other.kind()),
            )),
        };
        let want_bool = |v: toml::Value| match v {
            toml::Value::Bool(b) => Ok(b),
            other => Err(toml_err(
                entry.line,
                format!("{} must be true or false, not {}", entry.key, other.kind()),
            )),
        };
        let want_u32 = |v: toml::Value| match v {
            toml::Value::Int(i) => u32::try_from(i).map_err(|_| {
                toml_err(
                    entry.line,
                    format!("{} = {i} is outside 0..={}", entry.key, u32::MAX),
                )
            }),
            other => Err(toml_err(
                entry.line,
                format!("{} must be an integer, not {}", entry.key, other.kind()),
            )),
        };
        match key.as_str() {
            "binaryname" => o.binary_name = want_str(entry.value)?,
            "root" => o.root = want_str(entry.value)?,
            "systemdcgroup" => o.systemd_cgroup = want_bool(entry.value)?,
            "nopivotroot" => o.no_pivot_root = want_bool(entry.value)?,
            "nonewkeyring" => o.no_new_keyring = want_bool(entry.value)?,
            "iouid" => o.io_uid = want_u32(entry.value)?,
            "iogid" => o.io_gid = want_u32(entry.value)?,
            "shimcgroup" => o.shim_cgroup = want_str(entry.value)?,
            "criupath" => o.criu_path = want_str(entry.value)?,
            "criuimagepath" => o.criu_image_path = want_str(entry.value)?,
            "criuworkpath" => o.criu_work_path = want_str(entry.value)?,
            "spoollimit" => {
                o.spool_limit = match entry.value {
                    toml::Value::Int(i) => i.to_string(),
                    v => want_str(v)?,
                }
            }
            "spoolpolicy" => o.spool_policy = want_str(entry.value)?,
            _ => {}
        }
    }
    Ok(o)
}

/// A strict-enough TOML subset: comments, `[table]` / `[[array]]` headers,
/// bare/quoted/dotted keys, basic and literal strings (single and multi-line),
/// booleans, integers; floats, dates, arrays and inline tables are parsed for
/// syntax and returned as [`toml::Value::Other`].
mod toml {
    /// Arrays and inline tables nest at most this deep (stack safety).
    const MAX_DEPTH: usize = 32;

    /// A value, reduced to what runtime options need.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) enum Value {
        Str(String),
        Bool(bool),
        Int(i64),
        /// Float, date-time, array or inline table: syntax-checked, not kept.
        Other,
    }

    impl Value {
        pub(super) fn kind(&self) -> &'static str {
            match self {
                Value::Str(_) => "a string",
                Value::Bool(_) => "a boolean",
                Value::Int(_) => "an integer",
                Value::Other => "a float, date, array or table",
            }
        }
    }

    /// A `key = value` line; `key` is the last component of a dotted key.
    #[derive(Debug)]
    pub(super) struct Entry {
        pub(super) key: String,
        pub(super) value: Value,
        pub(super) line: usize,
    }

    #[derive(Debug)]
    pub(super) struct Error {
        pub(super) line: usize,
        pub(super) message: String,
    }

    struct Parser {
        chars: Vec<char>,
        pos: usize,
        line: usize,
    }

    pub(super) fn parse(text: &str) -> Result<Vec<Entry>, Error> {
        let mut p = Parser {
            chars: text.chars().collect(),
            pos: 0,
            line: 1,
        };
        let mut out = Vec::new();
        loop {
            p.skip_ws();
            match p.peek() {
                None => return Ok(out),
                Some('\n') | Some('\r') => p.newline()?,
                Some('#') => p.skip_comment(),
                Some('[') => {
                    p.table_header()?;
                    p.line_end()?;
                }
                Some(_) => {
                    let line = p.line;
                    let (key, value) = p.keyval(0)?;
                    out.push(Entry { key, value, line });
                    p.line_end()?;
                }
            }
        }
    }

    fn is_bare(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_' || c == '-'
    }

    impl Parser {
        fn err<T>(&self, message: impl Into<String>) -> Result<T, Error> {
            Err(Error {
                line: self.line,
                message: message.into(),
            })
        }

        fn peek(&self) -> Option<char> {
            self.chars.get(self.pos).copied()
        }

        fn peek_at(&self, n: usize) -> Option<char> {
            self.chars.get(self.pos + n).copied()
        }

        fn starts_with(&self, s: &str) -> bool {
            s.chars()
                .enumerate()
                .all(|(i, c)| self.peek_at(i) == Some(c))
        }

        fn bump(&mut self) -> Option<char> {
            let c = self.peek()?;
            self.pos += 1;
            if c == '\n' {
                self.line += 1;
            }
            Some(c)
        }

        fn expect(&mut self, want: char) -> Result<(), Error> {
            match self.peek() {
                Some(c) if c == want => {
                    self.bump();
                    Ok(())
                }
                Some(c) => self.err(format!("expected '{want}', found '{}'", c.escape_debug())),
                None => self.err(format!("expected '{want}', found end of file")),
            }
        }

        fn skip_ws(&mut self) {
            while matches!(self.peek(), Some(' ') | Some('\t')) {
                self.bump();
            }
        }

        fn skip_comment(&mut self) {
            while !matches!(self.peek(), None | Some('\n')) {
                self.bump();
            }
        }

        /// Consumes one `\n` or `\r\n`.
        fn newline(&mut self) -> Result<(), Error> {
            if self.peek() == Some('\r') {
                self.bump();
                if self.peek() != Some('\n') {
                    return self.err("carriage return not followed by newline");
                }
            }
            self.bump();
            Ok(())
        }

        /// After a header or key/value: optional comment, then newline or EOF.
        fn line_end(&mut self) -> Result<(), Error> {
            self.skip_ws();
            match self.peek() {
                None => Ok(()),
                Some('#') => {
                    self.skip_comment();
                    Ok(())
                }
                Some('\n') | Some('\r') => self.newline(),
                Some(c) => self.err(format!(
                    "expected end of line, found '{}'",
                    c.escape_debug()
                )),
            }
        }

        /// Skips whitespace, newlines and comments (inside arrays).
        fn skip_ws_nl(&mut self) -> Result<(), Error> {
            loop {
                self.skip_ws();
                match self.peek() {
                    Some('#') => self.skip_comment(),
                    Some('\n') | Some('\r') => self.newline()?,
                    _ => return Ok(()),
                }
            }
        }

        fn table_header(&mut self) -> Result<(), Error> {
            self.expect('[')?;
            let array = self.peek() == Some('[');
            if array {
                self.bump();
            }
            self.skip_ws();
            self.key()?;
            self.skip_ws();
            self.expect(']')?;
            if array {
                self.expect(']')?;
            }
            Ok(())
        }

        /// A possibly dotted key; returns its last component.
        fn key(&mut self) -> Result<String, Error> {
            let mut last = self.simple_key()?;
            loop {
                self.skip_ws();
                if self.peek() != Some('.') {
                    return Ok(last);
                }
                self.bump();
                self.skip_ws();
                last = self.simple_key()?;
            }
        }

        fn simple_key(&mut self) -> Result<String, Error> {
            match self.peek() {
                Some('"') => {
                    self.bump();
                    self.basic_string()
                }
                Some('\'') => {
                    self.bump();
                    self.literal_string()
                }
                _ => {
                    let start = self.pos;
                    while self.peek().is_some_and(is_bare) {
                        self.bump();
                    }
                    if self.pos == start {
                        return match self.peek() {
                            Some(c) => {
                                self.err(format!("expected a key, found '{}'", c.escape_debug()))
                            }
                            None => self.err("expected a key, found end of file"),
                        };
                    }
                    Ok(self.chars[start..self.pos].iter().collect())
                }
            }
        }

        fn keyval(&mut self, depth: usize) -> Result<(String, Value), Error> {
            let key = self.key()?;
            self.skip_ws();
            self.expect('=')?;
            self.skip_ws();
            let value = self.value(depth)?;
            Ok((key, value))
        }

        fn value(&mut self, depth: usize) -> Result<Value, Error> {
            if depth > MAX_DEPTH {
                return self.err("arrays or inline tables nested too deeply");
            }
            match self.peek() {
                Some('"') if self.starts_with("\"\"\"") => {
                    self.pos += 3;
                    self.ml_string(true).map(Value::Str)
                }
                Some('"') => {
                    self.bump();
                    self.basic_string().map(Value::Str)
                }
                Some('\'') if self.starts_with("'''") => {
                    self.pos += 3;
                    self.ml_string(false).map(Value::Str)
                }
                Some('\'') => {
                    self.bump();
                    self.literal_string().map(Value::Str)
                }
                Some('[') => self.array(depth),
                Some('{') => self.inline_table(depth),
                Some(_) => self.scalar(),
                None => self.err("expected a value, found end of file"),
            }
        }

        /// Bare scalar: boolean, integer, float or date-time.
        fn scalar(&mut self) -> Result<Value, Error> {
            let token_char = |c: char| c.is_ascii_alphanumeric() || "+-_.:".contains(c);
            let start = self.pos;
            while self.peek().is_some_and(token_char) {
                self.bump();
            }
            // A date and a time may be separated by one space (RFC 3339 as TOML allows).
            if self.pos - start == 10
                && self.peek() == Some(' ')
                && self.peek_at(1).is_some_and(|c| c.is_ascii_digit())
                && self.chars.get(start + 4) == Some(&'-')
            {
                self.bump();
                while self.peek().is_some_and(token_char) {
                    self.bump();
                }
            }
            let token: String = self.chars[start..self.pos].iter().collect();
            if token.is_empty() {
                return match self.peek() {
                    Some(c) => self.err(format!("expected a value, found '{}'", c.escape_debug())),
                    None => self.err("expected a value, found end of file"),
                };
            }
            match token.as_str() {
                "true" => return Ok(Value::Bool(true)),
                "false" => return Ok(Value::Bool(false)),
                _ => {}
            }
            if let Some(i) = parse_integer(&token) {
                return i.map(Value::Int).or_else(|m| self.err(m));
            }
            if is_float(&token) || is_datetime(&token) {
                return Ok(Value::Other);
            }
            self.err(format!("invalid value '{token}'"))
        }

        fn escape(&mut self) -> Result<char, Error> {
            let c = match self.bump() {
                Some(c) => c,
                None => return self.err("unterminated string"),
            };
            let hex_len = match c {
                'b' => return Ok('\u{8}'),
                't' => return Ok('\t'),
                'n' => return Ok('\n'),
                'f' => return Ok('\u{c}'),
                'r' => return Ok('\r'),
                '"' => return Ok('"'),
                '\\' => return Ok('\\'),
                'u' => 4,
                'U' => 8,
                other => return self.err(format!("invalid escape '\\{}'", other.escape_debug())),
            };
            let mut code: u32 = 0;
            for _ in 0..hex_len {
                let d = self.peek().and_then(|c| c.to_digit(16));
                match d {
                    Some(d) => {
                        self.bump();
                        code = code * 16 + d;
                    }
                    None => return self.err(format!("\\{c} needs {hex_len} hex digits")),
                }
            }
            match char::from_u32(code) {
                Some(ch) => Ok(ch),
                None => self.err(format!("\\{c}{code:X} is not a Unicode scalar value")),
            }
        }

        /// After the opening `"`.
        fn basic_string(&mut self) -> Result<String, Error> {
            let mut s = String::new();
            loop {
                match self.peek() {
                    None | Some('\n') | Some('\r') => return self.err("unterminated string"),
                    Some('"') => {
                        self.bump();
                        return Ok(s);
                    }
                    Some('\\') => {
                        self.bump();
                        s.push(self.escape()?);
                    }
                    Some(c) if c.is_control() && c != '\t' => {
                        return self.err(format!(
                            "control character '{}' in string",
                            c.escape_debug()
                        ))
                    }
                    Some(c) => {
                        self.bump();
                        s.push(c);
                    }
                }
            }
        }

        /// After the opening `'`.
        fn literal_string(&mut self) -> Result<String, Error> {
            let mut s = String::new();
            loop {
                match self.peek() {
                    None | Some('\n') | Some('\r') => return self.err("unterminated string"),
                    Some('\'') => {
                        self.bump();
                        return Ok(s);
                    }
                    Some(c) if c.is_control() && c != '\t' => {
                        return self.err(format!(
                            "control character '{}' in string",
                            c.escape_debug()
                        ))
                    }
                    Some(c) => {
                        self.bump();
                        s.push(c);
                    }
                }
            }
        }

        /// After the opening `"""` (basic) or `'''` (literal).
        fn ml_string(&mut self, basic: bool) -> Result<String, Error> {
            let quote = if basic { '"' } else { '\'' };
            let close = quote.to_string().repeat(3);
            let start_line = self.line;
            // A newline right after the opening delimiter is not part of the string.
            if self.peek() == Some('\n') || self.starts_with("\r\n") {
                self.newline()?;
            }
            let mut s = String::new();
            loop {
                if self.starts_with(&close) {
                    self.pos += 3;
                    // Up to two quotes right before the delimiter belong to the string.
                    for _ in 0..2 {
                        if self.peek() == Some(quote) {
                            self.bump();
                            s.push(quote);
                        }
                    }
                    return Ok(s);
                }
                match self.peek() {
                    None => {
                        return Err(Error {
                            line: start_line,
                            message: "unterminated multi-line string".to_string(),
                        })
                    }
                    Some('\\') if basic => {
                        self.bump();
                        // "Line ending backslash": trims the newline and the
                        // whitespace that follows it.
                        let mut look = self.pos;
                        while matches!(self.chars.get(look), Some(' ') | Some('\t')) {
                            look += 1;
                        }
                        if matches!(self.chars.get(look), Some('\n') | Some('\r')) {
                            self.skip_ws();
                            self.skip_ws_nl_only()?;
                        } else {
                            s.push(self.escape()?);
                        }
                    }
                    Some('\r') => {
                        self.newline()?;
                        s.push('\n');
                    }
                    Some(c) if c.is_control() && c != '\t' && c != '\n' => {
                        return self.err(format!(
                            "control character '{}' in string",
                            c.escape_debug()
                        ))
                    }
                    Some(c) => {
                        self.bump();
                        s.push(c);
                    }
                }
            }
        }

        /// Skips whitespace and newlines, but not comments (inside strings).
        fn skip_ws_nl_only(&mut self) -> Result<(), Error> {
            loop {
                self.skip_ws();
                match self.peek() {
                    Some('\n') | Some('\r') => self.newline()?,
                    _ => return Ok(()),
                }
            }
        }

        fn array(&mut self, depth: usize) -> Result<Value, Error> {
            self.expect('[')?;
            loop {
                self.skip_ws_nl()?;
                if self.peek() == Some(']') {
                    self.bump();
                    return Ok(Value::Other);
                }
                self.value(depth + 1)?;
                self.skip_ws_nl()?;
                match self.peek() {
                    Some(',') => {
                        self.bump();
                    }
                    Some(']') => {
                        self.bump();
                        return Ok(Value::Other);
                    }
                    Some(c) => {
                        return self.err(format!(
                            "expected ',' or ']' in array, found '{}'",
                            c.escape_debug()
                        ))
                    }
                    None => return self.err("unterminated array"),
                }
            }
        }

        fn inline_table(&mut self, depth: usize) -> Result<Value, Error> {
            self.expect('{')?;
            self.skip_ws();
            if self.peek() == Some('}') {
                self.bump();
                return Ok(Value::Other);
            }
            loop {
                self.skip_ws();
                self.keyval(depth + 1)?;
                self.skip_ws();
                match self.peek() {
                    Some(',') => {
                        self.bump();
                    }
                    Some('}') => {
                        self.bump();
                        return Ok(Value::Other);
                    }
                    Some(c) => {
                        return self.err(format!(
                            "expected ',' or '}}' in inline table, found '{}'",
                            c.escape_debug()
                        ))
                    }
                    None => return self.err("unterminated inline table"),
                }
            }
        }
    }

    /// `None` if `token` is not shaped like an integer; `Some(Err)` if it is
    /// but is malformed or out of range.
    fn parse_integer(token: &str) -> Option<Result<i64, String>> {
        let (neg, body) = match token.as_bytes().first() {
            Some(b'+') => (false, &token[1..]),
            Some(b'-') => (true, &token[1..]),
            _ => (false, token),
        };
        let (radix, digits) = if let Some(d) = body.strip_prefix("0x") {
            (16, d)
        } else if let Some(d) = body.strip_prefix("0o") {
            (8, d)
        } else if let Some(d) = body.strip_prefix("0b") {
            (2, d)
        } else {
            (10, body)
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix) || c == '_') {
            return None;
        }
        let bad = || Some(Err(format!("invalid integer '{token}'")));
        if digits.starts_with('_') || digits.ends_with('_') || digits.contains("__") {
            return bad();
        }
        if radix == 10 && digits.len() > 1 && digits.starts_with('0') {
            return bad();
        }
        if radix != 10 && token.starts_with(['+', '-']) {
            return bad();
        }
        let clean: String = digits.chars().filter(|&c| c != '_').collect();
        let magnitude = match i128::from_str_radix(&clean, radix) {
            Ok(m) => m,
            Err(_) => return Some(Err(format!("integer '{token}' is out of range"))),
        };
        let v = if neg { -magnitude } else { magnitude };
        Some(i64::try_from(v).map_err(|_| format!("integer '{token}' is out of range")))
    }

    fn is_float(token: &str) -> bool {
        let body = token.trim_start_matches(['+', '-']);
        if matches!(body, "inf" | "nan") {
            return true;
        }
        let clean: String = token.chars().filter(|&c| c != '_').collect();
        body.starts_with(|c: char| c.is_ascii_digit())
            && body.contains(['.', 'e', 'E'])
            && clean.parse::<f64>().is_ok()
    }

    fn is_datetime(token: &str) -> bool {
        let b = token.as_bytes();
        let date = b.len() >= 10
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && b[5..7].iter().all(u8::is_ascii_digit)
            && b[7] == b'-'
            && b[8..10].iter().all(u8::is_ascii_digit);
        let time = b.len() >= 8
            && b[..2].iter().all(u8::is_ascii_digit)
            && b[2] == b':'
            && b[3..5].iter().all(u8::is_ascii_digit)
            && b[5] == b':';
        (date || time)
            && token
                .chars()
                .all(|c| c.is_ascii_digit() || "-:.TtZz+ ".contains(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(
            matches!(&err, OptionsError::UnknownType(t) if t == "containerd.runhcs.v1.Options")
        );
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
        // A uint32 field sent as a 64-bit varint is truncated, as protobuf does.
        e.uint(11, (1 << 32) | 8);
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
            &[0x12, 0x01, 0xff], // invalid UTF-8 / bytes for a bool
            &[0x0f],             // wire type 7
            &[0x0c],             // stray end-group
            &[0x0b, 0x08, 0x01], // unterminated group
            &[0x0b, 0x14],       // group closed by another field
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
        // A known field with the wrong wire type is an error, not a silent skip.
        for (t, bad) in [
            (LEGACY_CREATE_OPTIONS, &[0x0a, 0x00][..]), // bool sent as bytes
            (LEGACY_RUNC_OPTIONS, &[0x08, 0x01]),       // string sent as varint
            (CRI_RUNTIME_OPTIONS, &[0x1d, 0, 0, 0, 0]), // bytes sent as fixed32
        ] {
            let err = decode_options(t, bad).unwrap_err();
            assert!(err.to_string().contains("field"), "{err}");
        }
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
                    x as u8
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
        let got =
            decode_checkpoint_options(RUNC_V1_CHECKPOINT_OPTIONS, &m.write_to_bytes().unwrap())
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
        let body =
            "BinaryName = '/usr/bin/runc'\nSystemdCgroup = true\nIoUid = 10\nTypeUrl = 'x'\n";
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
        let got =
            options_from_toml("crlf.toml", "Root = \"/x\"\r\nSystemdCgroup = true\r\n").unwrap();
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
            ("x = [1, 2\n", 2),
            ("x = { a = 1\n", 1),
            ("x = \"\"\"never closed\n\n", 1),
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
}

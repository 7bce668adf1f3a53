//! CRI's runtime `options` TOML (a `ConfigPath` file or a config body) mapped onto
//! [`RuncOptions`].

use super::toml;
use super::{OptionsError, RuncOptions};
use std::path::Path;

/// Largest TOML config file we are willing to read: the real ones are a few
/// lines; anything bigger is a mistake and must not balloon the resident shim.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

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

pub(super) fn options_from_toml_bytes(
    file: &str,
    bytes: &[u8],
) -> Result<RuncOptions, OptionsError> {
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
            _ => {}
        }
    }
    Ok(o)
}

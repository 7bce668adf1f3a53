//! CRI's runtime `options` TOML (a `ConfigPath` file or a config body) mapped onto
//! [`RuncOptions`].
//!
//! The TOML is parsed by the `toml` crate (its span-keeping `DeTable`, so errors name the
//! line; its nesting limit keeps hostile input off the stack). Keys are taken from every
//! table of the document, in document order (a later one wins), so the whole CRI runtime
//! table works as well as its `options` table alone.

use super::{OptionsError, RuncOptions};
use std::ops::Range;
use std::path::Path;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

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

/// A value, reduced to what runtime options need.
enum Value {
    Str(String),
    Bool(bool),
    Int(i64),
    /// A float, date-time, array or table: not an option's type.
    Other,
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Other => "a float, date, array or table",
        }
    }
}

/// A `key = value` of any table: `key` is the last component of a dotted key, `at` where
/// the key starts (bytes into the text).
struct Entry {
    key: String,
    value: Value,
    at: usize,
}

/// 1-based line of byte `at` of `text`.
fn line_of(text: &str, at: usize) -> usize {
    1 + text
        .as_bytes()
        .iter()
        .take(at)
        .filter(|&&b| b == b'\n')
        .count()
}

/// Every `key = value` of `table` and the tables below it (array elements included),
/// into `out`. An integer outside 64 bits is an error at its place, wherever it is, as in
/// any TOML reader.
fn collect(table: &DeTable<'_>, out: &mut Vec<Entry>) -> Result<(), Range<usize>> {
    for (key, value) in table {
        let v = reduce(value, out)?;
        out.push(Entry {
            key: key.get_ref().to_string(),
            value: v,
            at: key.span().start,
        });
    }
    Ok(())
}

fn reduce(value: &Spanned<DeValue<'_>>, out: &mut Vec<Entry>) -> Result<Value, Range<usize>> {
    Ok(match value.get_ref() {
        DeValue::String(s) => Value::Str(s.to_string()),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Integer(i) => {
            Value::Int(i64::from_str_radix(i.as_str(), i.radix()).map_err(|_| value.span())?)
        }
        DeValue::Table(t) => {
            collect(t, out)?;
            Value::Other
        }
        DeValue::Array(items) => {
            for item in items.iter() {
                reduce(item, out)?;
            }
            Value::Other
        }
        DeValue::Float(_) | DeValue::Datetime(_) => Value::Other,
    })
}

/// Maps the TOML keys CRI writes for runc-like runtimes onto [`RuncOptions`].
/// `file` only names the source in errors.
pub fn options_from_toml(file: &str, text: &str) -> Result<RuncOptions, OptionsError> {
    let toml_err = |line, message: String| OptionsError::Toml {
        file: file.to_string(),
        line,
        message,
    };
    let document = DeTable::parse(text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        toml_err(line_of(text, at), e.message().trim_end().to_string())
    })?;
    let mut entries = Vec::new();
    collect(document.get_ref(), &mut entries).map_err(|span| {
        toml_err(
            line_of(text, span.start),
            "integer out of the 64-bit range".to_string(),
        )
    })?;
    // The table keeps its keys sorted; the options are applied in document order.
    entries.sort_by_key(|e| e.at);
    let mut o = RuncOptions::default();
    for entry in entries {
        let line = line_of(text, entry.at);
        // BurntSushi/toml, which the Go shim decodes with, matches keys to
        // field names case-insensitively; also accept snake_case spellings.
        let key: String = entry
            .key
            .chars()
            .filter(|&c| c != '_' && c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let want_str = |v: Value| match v {
            Value::Str(s) => Ok(s),
            other => Err(toml_err(
                line,
                format!("{} must be a string, not {}", entry.key, other.kind()),
            )),
        };
        let want_bool = |v: Value| match v {
            Value::Bool(b) => Ok(b),
            other => Err(toml_err(
                line,
                format!("{} must be true or false, not {}", entry.key, other.kind()),
            )),
        };
        let want_u32 = |v: Value| match v {
            Value::Int(i) => u32::try_from(i).map_err(|_| {
                toml_err(
                    line,
                    format!("{} = {i} is outside 0..={}", entry.key, u32::MAX),
                )
            }),
            other => Err(toml_err(
                line,
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
                    Value::Int(i) => i.to_string(),
                    v => want_str(v)?,
                }
            }
            "spoolpolicy" => o.spool_policy = want_str(entry.value)?,
            _ => {}
        }
    }
    Ok(o)
}

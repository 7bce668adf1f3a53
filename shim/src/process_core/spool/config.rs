//! How a stream spools, as a face's configuration says it: the limit (with its parser:
//! `64M`, `1GiB`, `0` for none) and what a full spool does ([`SpoolPolicy`]). Plain data
//! with no I/O: the option parsers of both faces use it without touching a spool.

use std::path::PathBuf;

/// Default per-stream limit when a face enables the spool without naming one.
pub const DEFAULT_LIMIT: u64 = 64 << 20;

/// What a full spool does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SpoolPolicy {
    /// Take no more bytes: the process blocks in `write` until the reader catches up.
    #[default]
    Block,
    /// Discard the oldest spooled bytes to make room (counted and reported).
    DropOldest,
}

impl std::str::FromStr for SpoolPolicy {
    type Err = SpoolConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "block" => Ok(SpoolPolicy::Block),
            "drop-oldest" => Ok(SpoolPolicy::DropOldest),
            other => Err(SpoolConfigError::Policy(other.to_string())),
        }
    }
}

/// A spool setting that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolConfigError {
    #[error("spool policy {0:?}: expected \"block\" or \"drop-oldest\"")]
    Policy(String),
    #[error("spool limit {0:?}: expected a byte count, optionally with a K, M or G suffix (KiB, MiB, GiB)")]
    Limit(String),
}

/// Parses a spool limit: a byte count with an optional `K`/`M`/`G` suffix (binary units,
/// `KiB`/`MiB`/`GiB` accepted too). `0` disables the spool.
pub fn parse_limit(s: &str) -> Result<u64, SpoolConfigError> {
    let t = s.trim();
    let err = || SpoolConfigError::Limit(s.to_string());
    let upper = t.to_ascii_uppercase();
    let digits_end = upper
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(upper.len());
    let (num, unit) = upper.split_at(digits_end);
    let n: u64 = num.parse().map_err(|_| err())?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(err()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(err)
}

/// Where and how a stream spools. A limit of 0 means no spool (today's blocking).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpoolConfig {
    /// What the spool belongs to, in log lines (e.g. `container/exec`).
    pub name: String,
    /// Directory of the spool files (they are created unlinked there).
    pub dir: PathBuf,
    /// Most bytes a stream's spool holds.
    pub limit: u64,
    pub policy: SpoolPolicy,
}

impl SpoolConfig {
    /// Whether a spool is to be made at all.
    pub fn enabled(&self) -> bool {
        self.limit > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits_and_policies() {
        assert_eq!(parse_limit("0"), Ok(0));
        assert_eq!(parse_limit("4096"), Ok(4096));
        assert_eq!(parse_limit("64M"), Ok(64 << 20));
        assert_eq!(parse_limit("64MiB"), Ok(64 << 20));
        assert_eq!(parse_limit("1k"), Ok(1024));
        assert_eq!(parse_limit("2G"), Ok(2 << 30));
        assert!(parse_limit("").is_err());
        assert!(parse_limit("-1").is_err());
        assert!(parse_limit("1T").is_err());
        assert!(parse_limit("99999999999999999999G").is_err());
        assert_eq!("block".parse(), Ok(SpoolPolicy::Block));
        assert_eq!("drop-oldest".parse(), Ok(SpoolPolicy::DropOldest));
        assert!("drop".parse::<SpoolPolicy>().is_err());
    }
}

//! The containerd face's spool settings (issue 13): per container, from the container
//! spec's annotations, else the runtime options, else the default.
//!
//! - annotation `io.tether.spool-limit` (bytes; `K`/`M`/`G` suffixes; `0` = no spool:
//!   the container blocks while its FIFO is full, as with the Go shim), and
//!   `io.tether.spool-policy` (`block` or `drop-oldest`);
//! - runtime options (CRI's TOML `options` table): `SpoolLimit`, `SpoolPolicy`, same
//!   values;
//! - default: 64 MiB per stream, `block`.
//!
//! The spool files live (unlinked) in the bundle directory. An exec's streams use their
//! container's settings.

use crate::process_core::spool::{self, SpoolConfig, SpoolConfigError, SpoolPolicy};
use std::collections::HashMap;
use std::path::Path;

/// Annotation naming the per-stream spool limit.
pub const LIMIT_ANNOTATION: &str = "io.tether.spool-limit";
/// Annotation naming the policy at the limit.
pub const POLICY_ANNOTATION: &str = "io.tether.spool-policy";

/// The spool settings of a container: `annotations` first, then the runtime options'
/// `limit`/`policy` (empty = not set). `None` when the limit is 0. Errors quote the
/// setting that cannot be parsed and say what it may be.
pub fn for_container(
    annotations: &HashMap<String, String>,
    option_limit: &str,
    option_policy: &str,
    bundle: &Path,
    name: &str,
) -> Result<Option<SpoolConfig>, SpoolConfigError> {
    let limit_text = annotations
        .get(LIMIT_ANNOTATION)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .or(Some(option_limit).filter(|s| !s.is_empty()));
    let policy_text = annotations
        .get(POLICY_ANNOTATION)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .or(Some(option_policy).filter(|s| !s.is_empty()));
    let limit = match limit_text {
        Some(t) => spool::parse_limit(t)?,
        None => spool::DEFAULT_LIMIT,
    };
    let policy: SpoolPolicy = match policy_text {
        Some(t) => t.parse()?,
        None => SpoolPolicy::Block,
    };
    if limit == 0 {
        return Ok(None);
    }
    Ok(Some(SpoolConfig {
        name: name.to_string(),
        dir: bundle.to_path_buf(),
        limit,
        policy,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_to_64_mib_blocking() {
        let c = for_container(&ann(&[]), "", "", Path::new("/b"), "c")
            .unwrap()
            .unwrap();
        assert_eq!(c.limit, 64 << 20);
        assert_eq!(c.policy, SpoolPolicy::Block);
        assert_eq!(c.dir, Path::new("/b"));
    }

    #[test]
    fn annotations_win_over_options() {
        let a = ann(&[(LIMIT_ANNOTATION, "1M"), (POLICY_ANNOTATION, "drop-oldest")]);
        let c = for_container(&a, "5G", "block", Path::new("/b"), "c")
            .unwrap()
            .unwrap();
        assert_eq!((c.limit, c.policy), (1 << 20, SpoolPolicy::DropOldest));
        let c = for_container(&ann(&[]), "5G", "drop-oldest", Path::new("/b"), "c")
            .unwrap()
            .unwrap();
        assert_eq!((c.limit, c.policy), (5 << 30, SpoolPolicy::DropOldest));
    }

    #[test]
    fn zero_disables_and_garbage_is_refused() {
        let a = ann(&[(LIMIT_ANNOTATION, "0")]);
        assert_eq!(for_container(&a, "", "", Path::new("/b"), "c"), Ok(None));
        let a = ann(&[(LIMIT_ANNOTATION, "lots")]);
        let err = for_container(&a, "", "", Path::new("/b"), "c").unwrap_err();
        assert_eq!(err, SpoolConfigError::Limit("lots".into()));
        assert!(err.to_string().contains("\"lots\""), "{err}");
        let a = ann(&[(POLICY_ANNOTATION, "drop-newest")]);
        let err = for_container(&a, "", "", Path::new("/b"), "c").unwrap_err();
        assert_eq!(err, SpoolConfigError::Policy("drop-newest".into()));
        assert!(err.to_string().contains("\"drop-newest\""), "{err}");
    }
}

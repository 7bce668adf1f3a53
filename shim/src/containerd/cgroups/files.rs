//! Reading cgroupfs files for metrics and OOM watching: absent files are not errors, limit
//! files say `max`, flat keyed files, hugetlb page sizes. Also the error every cgroup read
//! reports, shared by `metrics`, `v1` and `v2`.

use super::kept_files::{read_whole, KeptFiles};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Why metrics could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// `/proc/<pid>/cgroup` could not be read (usually: the process is gone).
    #[error("cannot read the cgroups of process {pid}: {source}")]
    ProcCgroup {
        /// The process asked about.
        pid: i32,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The host is cgroup v2 but the process's cgroup2 path could not be resolved.
    #[error("the process is in no mounted cgroup2 hierarchy")]
    NoUnifiedCgroup,
    /// A cgroup file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The metrics message could not be encoded.
    #[error("cannot encode metrics: {0}")]
    Encode(#[from] protobuf::Error),
}

/// Where one collection reads its cgroup files: each opened, read and closed, or through
/// the container's [`KeptFiles`], open from one collection to the next.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reader<'a> {
    kept: Option<&'a KeptFiles>,
}

impl<'a> Reader<'a> {
    /// Opens each file for each read.
    pub(crate) fn fresh() -> Self {
        Reader { kept: None }
    }

    /// Reads through `kept`.
    pub(crate) fn kept(kept: &'a KeptFiles) -> Self {
        Reader { kept: Some(kept) }
    }

    /// Reads a cgroup file, `Ok(None)` if it is absent. ENODEV (cgroup being
    /// removed), EOPNOTSUPP and EINVAL (interface disabled in this kernel) count
    /// as absent too: one odd file must not fail the whole `Stats` call.
    pub(crate) fn read_opt(&self, path: &Path) -> Result<Option<String>, MetricsError> {
        let read = match self.kept {
            Some(kept) => kept.read(path, counts_as_absent),
            None => read_fresh(path),
        };
        read.map_err(|source| MetricsError::Read {
            path: path.to_path_buf(),
            source,
        })
    }

    /// A single-number file; `None` if absent or not a number.
    pub(crate) fn read_u64(&self, path: &Path) -> Result<Option<u64>, MetricsError> {
        Ok(self.read_opt(path)?.as_deref().and_then(parse_u64))
    }

    /// A limit file where `max` means unlimited, reported as `unlimited`.
    pub(crate) fn read_limit(
        &self,
        path: &Path,
        unlimited: u64,
    ) -> Result<Option<u64>, MetricsError> {
        Ok(self
            .read_opt(path)?
            .as_deref()
            .and_then(|s| parse_limit(s, unlimited)))
    }
}

/// Whether a read's error means the file is not there to read (see [`Reader::read_opt`]).
fn counts_as_absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || matches!(
            e.raw_os_error(),
            Some(libc::ENODEV) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
        )
}

/// Opens, reads and closes `path` (no `statx` for a size hint: cgroupfs says 0).
fn read_fresh(path: &Path) -> io::Result<Option<String>> {
    match File::open(path).and_then(|f| read_whole(&f)) {
        Ok(s) => Ok(Some(s)),
        Err(e) if counts_as_absent(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Parses a file holding one unsigned integer.
pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

/// Parses a limit file: an integer, or `max` reported as `unlimited`.
pub(crate) fn parse_limit(s: &str, unlimited: u64) -> Option<u64> {
    match s.trim() {
        "max" => Some(unlimited),
        t => t.parse().ok(),
    }
}

/// Iterates a flat keyed file (`key value` per line, e.g. `memory.stat`,
/// `cpu.stat`, `memory.events`); malformed lines are skipped.
pub(crate) fn flat_keyed(s: &str) -> impl Iterator<Item = (&str, u64)> {
    s.lines().filter_map(|line| {
        let mut it = line.split_whitespace();
        let key = it.next()?;
        let value = it.next()?.parse().ok()?;
        it.next().is_none().then_some((key, value))
    })
}

/// Sizes `s` such that `<prefix><s><suffix>` names a file in `dir` (e.g. the
/// hugetlb page sizes from `hugetlb.2MB.usage_in_bytes`), sorted. Sizes with
/// dots (the `rsvd` variants) are excluded.
pub(crate) fn hugetlb_sizes(dir: &Path, suffix: &str) -> Result<Vec<String>, MetricsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(MetricsError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut sizes: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
            (!size.is_empty() && !size.contains('.')).then(|| size.to_string())
        })
        .collect();
    sizes.sort();
    Ok(sizes)
}

/// Sorts hugetlb page sizes by size ("2MB" before "1GB"), as the Go shim lists them in
/// v2 metrics; names that do not parse go last, in name order.
pub(crate) fn sort_by_page_size(sizes: &mut [String]) {
    sizes.sort_by_key(|s| (hugepage_bytes(s).unwrap_or(u64::MAX), s.clone()));
}

/// The bytes of a hugetlb page size as the kernel names it in cgroup files (`2MB`,
/// `1GB`, `64KB`).
fn hugepage_bytes(size: &str) -> Option<u64> {
    let (digits, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit())?);
    let shift = match unit {
        "KB" => 10,
        "MB" => 20,
        "GB" => 30,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugetlb_sizes_come_by_page_size() {
        let dir = tempfile::tempdir().unwrap();
        for size in ["1GB", "2MB", "64KB", "odd"] {
            std::fs::write(dir.path().join(format!("hugetlb.{size}.current")), "0\n").unwrap();
        }
        std::fs::write(dir.path().join("hugetlb.2MB.rsvd.current"), "0\n").unwrap();
        let mut sizes = hugetlb_sizes(dir.path(), ".current").unwrap();
        assert_eq!(sizes, ["1GB", "2MB", "64KB", "odd"], "name order (v1)");
        sort_by_page_size(&mut sizes);
        assert_eq!(sizes, ["64KB", "2MB", "1GB", "odd"], "size order (v2)");
        assert_eq!(hugepage_bytes("2MB"), Some(2 << 20));
        assert_eq!(hugepage_bytes("MB"), None);
        assert_eq!(hugepage_bytes("99999999999999GB"), None);
    }

    #[test]
    fn small_parsers() {
        assert_eq!(parse_u64(" 42\n"), Some(42));
        assert_eq!(parse_u64("max\n"), None);
        assert_eq!(parse_u64(""), None);
        assert_eq!(parse_u64("-1"), None);
        assert_eq!(parse_limit("max\n", 0), Some(0));
        assert_eq!(parse_limit("max\n", u64::MAX), Some(u64::MAX));
        assert_eq!(parse_limit("1024\n", 0), Some(1024));
        assert_eq!(parse_limit("junk", 0), None);
        let v: Vec<_> = flat_keyed("a 1\nb 2 3\n\nc x\nd 4\n  \ne\n").collect();
        assert_eq!(v, vec![("a", 1), ("d", 4)]);
    }

    #[test]
    fn read_opt_absent_is_none() {
        let kept = KeptFiles::default();
        for r in [Reader::fresh(), Reader::kept(&kept)] {
            let dir = tempfile::tempdir().unwrap();
            assert_eq!(r.read_opt(&dir.path().join("nope")).unwrap(), None);
            std::fs::write(dir.path().join("n"), "7\n").unwrap();
            assert_eq!(r.read_u64(&dir.path().join("n")).unwrap(), Some(7));
            // A directory is not readable as a file: a real error naming the path.
            let err = r.read_opt(dir.path()).unwrap_err();
            assert!(err.to_string().contains(&dir.path().display().to_string()));
        }
        assert_eq!(
            hugetlb_sizes(std::path::Path::new("/nope"), ".x").unwrap(),
            Vec::<String>::new()
        );
    }
}

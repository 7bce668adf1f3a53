//! Which containerd the integration tests drive, and its version.
//!
//! The daemon and its `ctr` come from the directory in `TETHER_CONTAINERD_DIR` (the test
//! matrix sets it: `tests/scripts/containerd-matrix.sh`), else from PATH. A test that
//! cannot run on some version asks [`containerd_version`] up front and skips with a reason
//! (`crate::skip`).

use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The environment variable naming a directory that holds `containerd` and `ctr`.
pub const CONTAINERD_DIR_ENV: &str = "TETHER_CONTAINERD_DIR";

/// A containerd release, as `containerd --version` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DaemonVersion {
    /// 1 or 2.
    pub major: u32,
    /// The release line within the major version.
    pub minor: u32,
    /// The patch release.
    pub patch: u32,
}

impl DaemonVersion {
    /// Parses the output of `containerd --version`: `containerd <package> <version> <revision>`,
    /// e.g. `containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3`
    /// (Debian), `... /v2 2.1.9+unknown` (Debian sid), `... /v2 2.3.7+unknown` or `v2.3.7`
    /// (built from source). The version is the first word after `containerd` that starts
    /// with a digit (or `v` and a digit); `None` if there is none.
    pub fn parse(output: &str) -> Option<Self> {
        let word = output
            .split_whitespace()
            .skip(1)
            .map(|w| w.strip_prefix('v').unwrap_or(w))
            .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
        let mut numbers = word.split('.').map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        let major = numbers.next()??;
        let minor = numbers.next()??;
        let patch = numbers.next().flatten().unwrap_or(0);
        Some(DaemonVersion {
            major,
            minor,
            patch,
        })
    }

    /// Whether this release is `major.minor` or newer.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl fmt::Display for DaemonVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The `containerd` and `ctr` to test: `$TETHER_CONTAINERD_DIR/{containerd,ctr}`, else the
/// ones on PATH. Panics with what to install or set when one is missing.
pub fn containerd_tools() -> (PathBuf, PathBuf) {
    match std::env::var_os(CONTAINERD_DIR_ENV) {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            let pick = |name: &str| {
                let path = dir.join(name);
                assert!(
                    path.is_file(),
                    "{CONTAINERD_DIR_ENV}={} has no `{name}` (tests/scripts/containerd-daemon.sh \
                     prints the dir of each containerd of the matrix)",
                    dir.display()
                );
                path
            };
            (pick("containerd"), pick("ctr"))
        }
        _ => (
            crate::require::tool("containerd", "containerd"),
            crate::require::tool("ctr", "containerd"),
        ),
    }
}

/// The version of the `containerd` binary at `containerd` (`containerd --version`).
/// Panics when it does not run or says something unexpected.
pub fn version_of(containerd: &std::path::Path) -> DaemonVersion {
    let out = Command::new(containerd)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("run {} --version: {e}", containerd.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    DaemonVersion::parse(&text).unwrap_or_else(|| {
        panic!(
            "cannot tell the version of {} from `--version`: {text:?}",
            containerd.display()
        )
    })
}

/// The version of the containerd the tests drive (see [`containerd_tools`]); asked once
/// per test binary.
pub fn containerd_version() -> DaemonVersion {
    static VERSION: OnceLock<DaemonVersion> = OnceLock::new();
    *VERSION.get_or_init(|| version_of(&containerd_tools().0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32, minor: u32, patch: u32) -> DaemonVersion {
        DaemonVersion {
            major,
            minor,
            patch,
        }
    }

    #[test]
    fn parses_what_each_build_prints() {
        // Debian 12's package, Debian sid's, and a build from the module sources.
        let cases = [
            (
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n",
                v(1, 6, 20),
            ),
            (
                "containerd github.com/containerd/containerd/v2 2.1.9+unknown \n",
                v(2, 1, 9),
            ),
            (
                "containerd github.com/containerd/containerd/v2 v2.3.7 abcdef0\n",
                v(2, 3, 7),
            ),
            ("containerd containerd.io 1.7.24 88bf19b\n", v(1, 7, 24)),
        ];
        for (text, want) in cases {
            assert_eq!(DaemonVersion::parse(text), Some(want), "{text:?}");
        }
    }

    #[test]
    fn refuses_output_without_a_version() {
        assert_eq!(DaemonVersion::parse(""), None);
        assert_eq!(DaemonVersion::parse("containerd"), None);
        assert_eq!(
            DaemonVersion::parse("containerd github.com/containerd/containerd/v2"),
            None
        );
        assert_eq!(DaemonVersion::parse("containerd x 7"), None);
    }

    #[test]
    fn orders_by_release_line() {
        assert!(v(2, 3, 0).at_least(2, 3));
        assert!(v(2, 4, 2).at_least(2, 3));
        assert!(!v(2, 2, 9).at_least(2, 3));
        assert!(!v(1, 6, 20).at_least(2, 0));
        assert_eq!(v(2, 1, 9).to_string(), "2.1.9");
    }
}

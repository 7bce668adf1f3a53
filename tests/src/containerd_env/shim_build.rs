//! Which build of tether's shim the tests run: the one `TETHER_SHIM` names, else the
//! newest the workspace has built.

use super::SHIM_BINARY;
use std::fs;
use std::path::{Path, PathBuf};

/// The shim to test: `$TETHER_SHIM`, else the newest of the workspace's builds: `make`'s
/// static release build (`target/<host triple>/release`), a plain `cargo build --release`
/// (`target/release`) or a debug build (`target/debug`).
pub fn shim_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TETHER_SHIM") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "TETHER_SHIM={} is not a file", p.display());
        return p;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let mut candidates = vec![
        target.join("release").join(SHIM_BINARY),
        target.join("debug").join(SHIM_BINARY),
    ];
    if let Ok(entries) = fs::read_dir(&target) {
        candidates.extend(
            entries
                .flatten()
                .map(|e| e.path().join("release").join(SHIM_BINARY)),
        );
    }
    let newest = candidates
        .into_iter()
        .filter_map(|p| Some((fs::metadata(&p).and_then(|m| m.modified()).ok()?, p)))
        .max_by_key(|(mtime, _)| *mtime)
        .map(|(_, p)| p);
    let Some(chosen) = newest else {
        panic!(
            "{SHIM_BINARY} not found under {}: run `make build` (or `cargo build -p \
             tether-shim`) first (`make test` builds it), or point TETHER_SHIM at a build",
            target.display()
        )
    };
    fs::canonicalize(&chosen).unwrap_or(chosen)
}

//! Preconditions of the integration tests, checked up front so a missing tool fails with
//! a message that says what to install instead of an obscure error deep inside a test.

use std::path::{Path, PathBuf};

/// Panics with a clear message unless the test runs as root (containers need it).
pub fn root() {
    if !nix::unistd::Uid::effective().is_root() {
        panic!(
            "integration tests start real containers and must run as root (try: sudo make test)"
        );
    }
}

/// Returns the absolute path of `tool` on PATH, or panics naming the Debian package to install.
pub fn tool(tool: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(tool);
        if is_executable(&candidate) {
            return candidate;
        }
    }
    panic!("`{tool}` not found on PATH: install it with `apt-get install {package}` (or run `make deps`)");
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The static busybox the rootfs is built from.
pub fn busybox() -> PathBuf {
    let path = PathBuf::from("/bin/busybox");
    if !is_executable(&path) {
        panic!("/bin/busybox missing: install it with `apt-get install busybox-static` (or run `make deps`)");
    }
    // A dynamically linked busybox (Debian's `busybox` package, which replaces
    // `busybox-static`) cannot run in a rootfs without its libraries: every container
    // would fail with "exec /bin/sh: no such file or directory".
    if std::fs::read(&path).is_ok_and(|elf| names_a_dynamic_loader(&elf)) {
        panic!(
            "/bin/busybox is dynamically linked (Debian's `busybox` package): the test rootfs \
             needs `apt-get install busybox-static` (or run `make deps`)"
        );
    }
    path
}

/// Whether an executable names the glibc dynamic loader (a static one does not).
fn names_a_dynamic_loader(elf: &[u8]) -> bool {
    const LOADER: &[u8] = b"/lib64/ld-linux";
    elf.windows(LOADER.len()).any(|w| w == LOADER)
}

/// The environment variable naming a directory that holds the `criu` to use.
pub const CRIU_DIR_ENV: &str = "TETHER_CRIU_DIR";
/// Where `../shared/criu/install.sh` puts a criu that works on this kernel (Debian 12's
/// criu 3.17 fails `criu check` on kernel 6.x).
pub const SHARED_CRIU_DIR: &str = "/opt/criu-trixie/bin";

/// A directory whose `criu` passes `criu check`: `$TETHER_CRIU_DIR`, else
/// [`SHARED_CRIU_DIR`], else the first `criu` on PATH. `Err` says why there is none (for a
/// test to skip with). Checked once per test binary.
pub fn criu_dir() -> Result<PathBuf, String> {
    static FOUND: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            let mut candidates: Vec<PathBuf> = Vec::new();
            if let Some(dir) = std::env::var_os(CRIU_DIR_ENV) {
                candidates.push(dir.into());
            }
            candidates.push(SHARED_CRIU_DIR.into());
            let path = std::env::var_os("PATH").unwrap_or_default();
            candidates.extend(std::env::split_paths(&path));
            let mut tried = Vec::new();
            for dir in candidates {
                let criu = dir.join("criu");
                if !is_executable(&criu) {
                    continue;
                }
                let check = std::process::Command::new(&criu).arg("check").output();
                match check {
                    Ok(out) if out.status.success() => return Ok(dir),
                    Ok(out) => tried.push(format!(
                        "{}: `criu check` failed: {}",
                        criu.display(),
                        String::from_utf8_lossy(&out.stderr)
                            .lines()
                            .last()
                            .unwrap_or("")
                    )),
                    Err(e) => tried.push(format!("{}: {e}", criu.display())),
                }
            }
            if tried.is_empty() {
                tried.push("no criu on PATH".into());
            }
            Err(format!(
                "no working criu ({}); install one with ../shared/criu/install.sh or set \
                 {CRIU_DIR_ENV}",
                tried.join("; ")
            ))
        })
        .clone()
}

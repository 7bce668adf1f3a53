//! One test's private containerd, run exactly as a user would run one, with tether's
//! freshly built shim first on its PATH.
//!
//! Each [`ContainerdEnv`] owns a temp dir under `/tmp` (short, because the unix sockets
//! inside must fit in `sun_path`) holding containerd's root, state, sockets, config and log,
//! and uses a containerd namespace of its own, so shim sockets
//! (`/run/containerd/s/<sha256 of "<address>/<ns>/<id>">`), runc roots
//! (`/run/containerd/runc/<ns>`) and cgroups (`/<ns>/<id>`) never collide between parallel
//! tests. Dropping it tears everything down whatever the test did, without panicking.
//!
//! The daemon is `$TETHER_CONTAINERD_DIR/containerd` (with that dir's `ctr`) when the
//! variable is set, else the one on PATH: the same tests run against every containerd of
//! the matrix (1.6 to 2.4; `tests/scripts/containerd-matrix.sh`). One config serves them
//! all: containerd 2.x migrates a `version = 2` file itself.
//!
//! The parts, one concern a file: `config` writes containerd's config, `daemon` starts,
//! stops and restarts it (and keeps its log), `ctr` runs `ctr` against it with a bound on
//! the time, `tasks` reads and ends tasks through `ctr`, `background_ctr` keeps a `ctr`
//! running beside the test, `footprint` finds what the test's containers leave on the host,
//! `leak_check` asserts none of it is left and `teardown` removes it; `shim_build` picks
//! the shim binary under test and `bounded_run` runs a command killed at a deadline.

mod background_ctr;
mod bounded_run;
mod config;
mod ctr;
mod daemon;
mod footprint;
mod leak_check;
mod shim_build;
mod tasks;
mod teardown;

pub use background_ctr::BackgroundCtr;
pub use ctr::{ps_lists_exec, StdinAfter};
pub use shim_build::shim_binary;

use crate::containerd_version::{self, DaemonVersion};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::time::Duration;

/// The runtime type that selects tether (`containerd-shim-tether-v2`).
pub const RUNTIME: &str = "io.containerd.tether.v2";
/// The shim binary containerd looks up on its PATH for [`RUNTIME`].
pub const SHIM_BINARY: &str = "containerd-shim-tether-v2";

/// Where containerd's shims put their sockets (whatever containerd's own state dir).
pub const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
/// The default runc root of containerd's runc shims; tether keeps `<root>/<namespace>`.
pub const RUNC_ROOT: &str = "/run/containerd/runc";

/// How long containerd may take to answer `ctr version` after it starts: in the cgroup v2
/// leg's QEMU guest (TCG, no hardware virtualisation) on a loaded host, containerd 1.6 has
/// taken 4.6 s from its first log line to its second and missed a 10 s bound; a daemon that
/// does not start is not what these tests are about.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A private containerd daemon for one test. See the module docs.
pub struct ContainerdEnv {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    namespace: String,
    address: PathBuf,
    config: PathBuf,
    log: PathBuf,
    shim: PathBuf,
    containerd_bin: PathBuf,
    ctr_bin: PathBuf,
    version: DaemonVersion,
    runc_bin: PathBuf,
    criu_dir: Option<PathBuf>,
    daemon: Option<Child>,
    ids: Mutex<Vec<String>>,
    rootfs: Mutex<Option<PathBuf>>,
}

impl ContainerdEnv {
    /// Checks the preconditions (root, containerd, ctr, runc, a built shim), writes the
    /// config, starts containerd and waits until it answers. A `criu` that works (see
    /// [`crate::require::criu_dir`]) goes on containerd's PATH, for runc.
    pub fn start() -> Self {
        crate::require::root();
        let (containerd_bin, ctr_bin) = containerd_version::containerd_tools();
        let version = containerd_version::version_of(&containerd_bin);
        let runc_bin = crate::require::tool("runc", "runc");
        let shim = shim_binary();
        let dir = tempfile::Builder::new()
            .prefix("tc-")
            .tempdir_in("/tmp")
            .expect("create the test's temp dir under /tmp");
        let path = dir.path().to_path_buf();
        let bin = path.join("bin");
        fs::create_dir_all(&bin).expect("create <dir>/bin");
        // A hard link pins this build of the shim even if someone rebuilds it meanwhile
        // (the linker writes a new file); a symlink when /tmp is another file system.
        let link = bin.join(SHIM_BINARY);
        if fs::hard_link(&shim, &link).is_err() {
            std::os::unix::fs::symlink(&shim, &link).expect("link the shim into <dir>/bin");
        }
        let address = path.join("c.sock");
        let config = path.join("config.toml");
        config::write(&config, &path, &address);
        let mut env = ContainerdEnv {
            dir: Some(dir),
            log: path.join("containerd.log"),
            path,
            // The "-x" suffix makes the name unique as a substring too: no namespace of
            // another test can contain this one.
            namespace: format!("{}-x", crate::unique_id("ns")),
            address,
            config,
            shim,
            containerd_bin,
            ctr_bin,
            version,
            runc_bin,
            criu_dir: crate::require::criu_dir().ok(),
            daemon: None,
            ids: Mutex::new(Vec::new()),
            rootfs: Mutex::new(None),
        };
        env.spawn_daemon();
        let ns = env.namespace.clone();
        env.ctr_ok(&["namespaces", "create", &ns]);
        env
    }

    /// The version of the running containerd.
    pub fn version(&self) -> DaemonVersion {
        self.version
    }

    /// The dir of the working `criu` on containerd's PATH, if there is one.
    pub fn criu_dir(&self) -> Option<&Path> {
        self.criu_dir.as_deref()
    }

    /// The test's temp dir.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// This test's containerd namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// containerd's grpc socket (what `ctr -a` and the shim's `-address` take).
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// The shim binary this containerd runs (the original, not the link in `<dir>/bin`).
    pub fn shim_binary(&self) -> &Path {
        &self.shim
    }

    /// containerd's log file: its stdout and stderr, which include the shims' own logs
    /// (containerd copies each shim's log FIFO into its stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last lines of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        daemon::log_tail(&self.log)
    }

    /// A container id unique to this test run; remembered so [`Self::assert_no_leaks`]
    /// checks that its shim socket is gone.
    pub fn id(&self, prefix: &str) -> String {
        let id = crate::unique_id(prefix);
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id.clone());
        id
    }

    /// A busybox rootfs in `<dir>/rootfs`, built on first use. With `ctr run --rootfs` ctr
    /// puts no `PATH` in the spec: commands must be absolute (`/bin/sh`).
    pub fn rootfs(&self) -> PathBuf {
        let mut cached = self.rootfs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = cached.as_ref() {
            return path.clone();
        }
        let path = self.path.join("rootfs");
        crate::rootfs::build_busybox(&path).expect("build the busybox rootfs");
        *cached = Some(path.clone());
        path
    }

    /// The arguments of `ctr run` through tether on the busybox rootfs:
    /// `run --runtime io.containerd.tether.v2 FLAGS… --rootfs ROOTFS ID CMD…`.
    pub fn run_args(&self, flags: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
        let mut args = vec!["run".to_string(), "--runtime".into(), RUNTIME.into()];
        args.extend(flags.iter().map(|s| s.to_string()));
        args.push("--rootfs".into());
        args.push(self.rootfs().to_string_lossy().into_owned());
        args.push(id.into());
        args.extend(cmd.iter().map(|s| s.to_string()));
        args
    }

    /// Imports the busybox rootfs as a one-layer image (see [`crate::oci_image`]) into this
    /// namespace, unpacked for the default snapshotter; returns its name. For what only
    /// containers from an image can do (`ctr containers checkpoint/restore`).
    pub fn import_busybox_image(&self) -> String {
        const NAME: &str = "docker.io/tether-test/busybox:latest";
        let archive = self.path.join("busybox-image.tar");
        crate::oci_image::write_archive(
            &self.rootfs(),
            NAME,
            &self.path.join("image-work"),
            &archive,
        )
        .expect("write the busybox image archive");
        self.ctr_ok(&["images".as_ref(), "import".as_ref(), archive.as_os_str()]);
        let _ = fs::remove_file(&archive);
        NAME.to_string()
    }

    /// The arguments of `ctr run` through tether of `image`:
    /// `run --runtime io.containerd.tether.v2 FLAGS… IMAGE ID CMD…`.
    pub fn image_run_args(
        &self,
        flags: &[&str],
        image: &str,
        id: &str,
        cmd: &[&str],
    ) -> Vec<String> {
        let mut args = vec!["run".to_string(), "--runtime".into(), RUNTIME.into()];
        args.extend(flags.iter().map(|s| s.to_string()));
        args.push(image.into());
        args.push(id.into());
        args.extend(cmd.iter().map(|s| s.to_string()));
        args
    }
}

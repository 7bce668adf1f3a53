//! nerdctl, the containerd CLI many people use in place of Docker, as a test client of one
//! test's private containerd ([`ContainerdEnv`]).
//!
//! nerdctl is built from the Go module proxy by `tests/scripts/go-tools.sh nerdctl` and
//! cached; `$TETHER_NERDCTL` names another binary. Everything nerdctl keeps (its data root,
//! the `binary://` logger's logs, its CNI config dir, its config file) lives in the test's
//! temp dir; containers run with `--net none`, so no CNI plugin or netns is involved. The
//! busybox image is imported with `nerdctl load` from an OCI archive (`oci_image`).
//!
//! containerd's own Go shim (`containerd-shim-runc-v2` beside the daemon in
//! `$TETHER_CONTAINERD_DIR`) is linked onto the daemon's PATH, so the same scenario runs
//! with it as the runtime: the oracle.

use crate::containerd_env::ContainerdEnv;
use crate::pty_session::PtySession;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The environment variable naming the nerdctl binary to use.
pub const NERDCTL_ENV: &str = "TETHER_NERDCTL";
/// Where `tests/scripts/go-tools.sh nerdctl` caches nerdctl (the pinned version).
pub const CACHED_NERDCTL: &str = "/var/cache/tether/go/nerdctl-v2.4.2/bin/nerdctl";
/// containerd's Go shim, the oracle's runtime.
pub const GO_SHIM_RUNTIME: &str = "io.containerd.runc.v2";
/// The image every container runs.
pub const IMAGE: &str = "docker.io/tether-test/busybox:latest";

/// The nerdctl to use, or why there is none (for a test to skip with).
pub fn nerdctl_binary() -> Result<PathBuf, String> {
    let path = std::env::var_os(NERDCTL_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CACHED_NERDCTL));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no nerdctl at {} (`make test-nerdctl` builds it: tests/scripts/go-tools.sh \
             nerdctl; or set {NERDCTL_ENV})",
            path.display()
        ))
    }
}

/// A private containerd with nerdctl pointed at it. See the module docs.
pub struct NerdctlEnv {
    // Dropped first: nerdctl's state goes with the temp dir the daemon's env removes.
    containerd: ContainerdEnv,
    nerdctl: PathBuf,
    data_root: PathBuf,
    cni_conf: PathBuf,
    toml: PathBuf,
}

impl NerdctlEnv {
    /// Starts containerd (see [`ContainerdEnv::start`]) with its Go shim on its PATH and
    /// loads the busybox image; `Err` says why nerdctl cannot run here (no nerdctl, or a
    /// containerd older than 2.0).
    pub fn start() -> Result<Self, String> {
        let nerdctl = nerdctl_binary()?;
        crate::require::root();
        let version = crate::containerd_version();
        if !version.at_least(2, 0) {
            return Err(format!(
                "nerdctl runs against containerd 2.x here, this is {version} (`make \
                 test-nerdctl` uses the 2.3 build: TETHER_CONTAINERD_DIR)"
            ));
        }
        let containerd = ContainerdEnv::start();
        if let Some(dir) = std::env::var_os(crate::containerd_version::CONTAINERD_DIR_ENV) {
            let go_shim = Path::new(&dir).join("containerd-shim-runc-v2");
            if go_shim.is_file() {
                let link = containerd.dir().join("bin/containerd-shim-runc-v2");
                std::os::unix::fs::symlink(&go_shim, &link)
                    .expect("link the Go shim onto containerd's PATH");
            }
        }
        let dir = containerd.dir().to_path_buf();
        let env = NerdctlEnv {
            data_root: dir.join("nerdctl"),
            cni_conf: dir.join("cni"),
            toml: dir.join("nerdctl.toml"),
            containerd,
            nerdctl,
        };
        fs::write(&env.toml, "").expect("write an empty nerdctl.toml");
        let archive = dir.join("busybox-image.tar");
        crate::oci_image::write_archive(
            &env.containerd.rootfs(),
            IMAGE,
            &dir.join("image-work"),
            &archive,
        )
        .expect("write the busybox image archive");
        env.ok(&["load".as_ref(), "-i".as_ref(), archive.as_os_str()]);
        // What `load` prints of the names varies (progress lines): ask for the image.
        env.ok(&["image", "inspect", IMAGE]);
        let _ = fs::remove_file(&archive);
        Ok(env)
    }

    /// The daemon and its checks ([`ContainerdEnv::assert_no_leaks`]).
    pub fn containerd(&self) -> &ContainerdEnv {
        &self.containerd
    }

    /// The global flags that point nerdctl at this test's daemon and state.
    fn global_args(&self) -> Vec<String> {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        vec![
            "--address".into(),
            path(self.containerd.address()),
            "--namespace".into(),
            self.containerd.namespace().into(),
            "--data-root".into(),
            path(&self.data_root),
            "--cni-netconfpath".into(),
            path(&self.cni_conf),
        ]
    }

    /// `nerdctl GLOBAL-FLAGS ARGS…`, for a caller that drives the process itself.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.nerdctl);
        cmd.env("NERDCTL_TOML", &self.toml)
            .args(self.global_args())
            .args(args);
        cmd
    }

    /// Runs nerdctl with stdin from /dev/null, bounded (the test fails, with containerd's
    /// log, if it takes longer than 30 s).
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.containerd.run_with_timeout(self.command(args))
    }

    /// [`NerdctlEnv::run`] with `input` written to its stdin at once, then closed.
    pub fn run_with_input<S: AsRef<OsStr>>(&self, args: &[S], input: &[u8]) -> Output {
        self.containerd.run_with_input(self.command(args), input)
    }

    /// [`NerdctlEnv::run`], asserting success; returns stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        let words: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        self.containerd
            .assert_exit(&out, 0, &format!("nerdctl {}", words.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// nerdctl on a terminal of its own ([`PtySession`]).
    pub fn on_pty<S: AsRef<OsStr>>(&self, args: &[S]) -> PtySession {
        let mut all: Vec<std::ffi::OsString> =
            self.global_args().into_iter().map(Into::into).collect();
        all.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        let toml = self.toml.to_string_lossy().into_owned();
        PtySession::spawn(
            self.nerdctl.as_os_str(),
            &all,
            &[("NERDCTL_TOML", toml.as_str())],
        )
    }
}

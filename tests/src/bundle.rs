//! OCI bundles for real busybox containers.

use serde_json::{json, Value};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An OCI bundle directory (`config.json` + `rootfs/`) inside a caller-owned directory.
///
/// The config starts as runc's own `runc spec` template (so it tracks what the installed
/// runc considers a sane default), with a writable rootfs and no terminal.
#[derive(Debug)]
pub struct Bundle {
    dir: PathBuf,
    config: Value,
}

impl Bundle {
    /// Creates `dir` with a busybox rootfs and a config that runs `args`.
    pub fn busybox(dir: &Path, args: &[&str]) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        crate::rootfs::build_busybox(&dir.join("rootfs"))?;
        let template = dir.join("config.json");
        let _ = fs::remove_file(&template);
        let out = Command::new(crate::require::tool("runc", "runc"))
            .args(["spec", "--bundle"])
            .arg(dir)
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "runc spec failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let config: Value = serde_json::from_slice(&fs::read(&template)?)?;
        let mut bundle = Bundle {
            dir: dir.to_path_buf(),
            config,
        };
        bundle.config["root"]["readonly"] = json!(false);
        bundle.config["process"]["terminal"] = json!(false);
        bundle.set_args(args);
        bundle.save()?;
        Ok(bundle)
    }

    /// The bundle directory (what `runc create --bundle` takes).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The rootfs directory.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// The config as JSON, for edits that have no helper here; call [`Bundle::save`] after.
    pub fn config_mut(&mut self) -> &mut Value {
        &mut self.config
    }

    /// Sets `process.args`.
    pub fn set_args(&mut self, args: &[&str]) -> &mut Self {
        self.config["process"]["args"] = json!(args);
        self
    }

    /// Sets `process.terminal`.
    pub fn set_terminal(&mut self, terminal: bool) -> &mut Self {
        self.config["process"]["terminal"] = json!(terminal);
        self
    }

    /// Writes `config.json`.
    pub fn save(&self) -> io::Result<()> {
        fs::write(
            self.dir.join("config.json"),
            serde_json::to_vec_pretty(&self.config)?,
        )
    }

    /// An OCI `Process` for `runc exec`, derived from the bundle's own process (same env,
    /// user, capabilities) with other `args`.
    pub fn exec_process(&self, args: &[&str], terminal: bool) -> Value {
        let mut process = self.config["process"].clone();
        process["args"] = json!(args);
        process["terminal"] = json!(terminal);
        process
    }
}

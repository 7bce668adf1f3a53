//! Overlay lower layers seen through an idmapped clone (containerd 2.x's `uidmap=`/`gidmap=`
//! on an overlay rootfs): see [`crate::containerd::idmap`] for how the clone is made.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MntFlags;

/// Overlay lower directories seen through an idmapped, read-only clone of their common
/// parent, attached on a temporary directory beside the mount target for as long as this
/// lives (the overlay mount takes its own references to the layers).
pub(super) struct IdmappedLowers {
    /// The mount options with `lowerdir=` rewritten to go through the clone.
    pub(super) options: Vec<String>,
    dir: PathBuf,
}

impl IdmappedLowers {
    pub(super) fn attach(
        options: &[String],
        target: &Path,
        userns: &std::os::fd::OwnedFd,
    ) -> Result<Self, crate::containerd::idmap::IdmapError> {
        use crate::containerd::idmap::IdmapError;
        const KEY: &str = "lowerdir=";
        let idx = options
            .iter()
            .position(|o| o.starts_with(KEY))
            .ok_or_else(|| IdmapError::NoCommonDir("(no lowerdir= option)".into()))?;
        let lowers: Vec<&str> = options[idx][KEY.len()..].split(':').collect();
        let common = crate::containerd::idmap::common_dir(&lowers)?;
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            ".idmapped-lowers-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let dir = target.parent().unwrap_or(Path::new("/")).join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| IdmapError::Sys {
                op: format!("mkdir {}", dir.display()),
                errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
        if let Err(e) = crate::containerd::idmap::idmapped_clone(&common, &dir, userns, true) {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        let through: Vec<String> = lowers
            .iter()
            .map(|l| {
                let rel = l
                    .strip_prefix(common.to_str().unwrap_or_default())
                    .unwrap_or(l);
                format!("{}{rel}", dir.display())
            })
            .collect();
        let mut rewritten = options.to_vec();
        rewritten[idx] = format!("{KEY}{}", through.join(":"));
        Ok(IdmappedLowers {
            options: rewritten,
            dir,
        })
    }
}

impl Drop for IdmappedLowers {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.dir, MntFlags::MNT_DETACH) {
            log::warn!("unmount {}: {e}", self.dir.display());
        }
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            log::warn!("remove {}: {e}", self.dir.display());
        }
    }
}

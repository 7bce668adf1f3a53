//! Taking a rootfs's stack of mounts down, top first, busy mounts retried then detached.

use std::io;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::MntFlags;

use super::MountError;

/// How many times an unmount that fails with EBUSY is retried before falling
/// back to a lazy (MNT_DETACH) unmount.
const EBUSY_RETRIES: u32 = 10;
/// Pause between EBUSY retries (10 × 50 ms: half a second at most per mount).
const EBUSY_PAUSE: Duration = Duration::from_millis(50);
/// Upper bound on mounts removed from one target by [`unmount_all`], so a
/// target that never stops reporting mounts cannot loop forever.
const MAX_STACKED_MOUNTS: usize = 1024;

/// Unmounts everything mounted at `target`, top first, until it is no longer a
/// mount point (mounts stack). Blocking; starts no thread.
///
/// A mount that stays busy (EBUSY) is retried 10 times 50 ms apart, then
/// detached lazily (MNT_DETACH), so this blocks at most ~0.5 s per busy mount.
/// Ok if `target` does not exist or nothing is mounted there (EINVAL).
/// Gives up with [`MountError::StillMounted`] after 1024 mounts.
pub fn unmount_all(target: &Path) -> Result<(), MountError> {
    if let Err(e) = std::fs::symlink_metadata(target) {
        if e.kind() == io::ErrorKind::NotFound {
            return Ok(());
        }
    }
    for _ in 0..MAX_STACKED_MOUNTS {
        if !unmount_one(target)? {
            return Ok(());
        }
    }
    Err(MountError::StillMounted {
        target: target.to_path_buf(),
        count: MAX_STACKED_MOUNTS,
    })
}

/// Removes the top mount at `target`: `Ok(true)` if one was removed,
/// `Ok(false)` if nothing is mounted there.
pub(super) fn unmount_one(target: &Path) -> Result<bool, MountError> {
    let err = |errno| MountError::Unmount {
        target: target.to_path_buf(),
        errno,
    };
    for attempt in 1..=EBUSY_RETRIES {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) => return Ok(true),
            // EINVAL: not a mount point. ENOENT: the target went away.
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(false),
            Err(Errno::EBUSY) | Err(Errno::EINTR) => {
                if attempt < EBUSY_RETRIES {
                    std::thread::sleep(EBUSY_PAUSE);
                }
            }
            Err(e) => return Err(err(e)),
        }
    }
    log::warn!(
        "{} still busy after {EBUSY_RETRIES} unmount attempts; detaching it lazily",
        target.display()
    );
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) => Ok(true),
        Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(err(e)),
    }
}

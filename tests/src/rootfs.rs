//! A busybox root filesystem built from the host's static `/bin/busybox`.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

/// Fills `rootfs` (created if missing) with `/bin/busybox`, one symlink per applet in
/// `/bin`, the directories runc mounts over (`proc`, `sys`, `dev`, `tmp`…) and a minimal
/// `/etc/passwd` and `/etc/group`.
///
/// busybox is hard-linked when the rootfs is on the same file system (cheap: tests build
/// one rootfs each), and copied otherwise.
pub fn build_busybox(rootfs: &Path) -> io::Result<()> {
    let busybox = crate::require::busybox();
    for dir in [
        "bin", "proc", "sys", "dev", "tmp", "etc", "root", "run", "var",
    ] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    let target = rootfs.join("bin/busybox");
    if fs::hard_link(&busybox, &target).is_err() {
        fs::copy(&busybox, &target)?;
    }
    for applet in applets(&busybox)? {
        if applet == "busybox" {
            continue;
        }
        let link = rootfs.join("bin").join(&applet);
        if !link.exists() {
            symlink("busybox", link)?;
        }
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\ndaemon:x:1:\ntty:x:5:\nnogroup:x:65534:\n",
    )?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

fn applets(busybox: &Path) -> io::Result<Vec<String>> {
    let out = Command::new(busybox).arg("--list").output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} --list failed",
            busybox.display()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('/'))
        .map(String::from)
        .collect())
}

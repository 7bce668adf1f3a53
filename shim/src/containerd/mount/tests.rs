//! The rootfs mount tests: option parsing and the overlay workaround as pure functions,
//! and real mounts (root only: they skip visibly otherwise) of every kind containerd sends.

use super::plain::{compact_lowerdir, page_size};
use super::*;
use nix::mount::{MntFlags, MsFlags};
use std::fs;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn spec(kind: &str, source: &str, options: &[&str]) -> MountSpec {
    MountSpec {
        kind: kind.into(),
        source: source.into(),
        options: strings(options),
    }
}

/// Mounts stacked on `path`, from /proc/self/mountinfo (field 5).
fn mount_count(path: &Path) -> usize {
    let want = path.to_str().unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(want))
        .count()
}

/// A tempdir whose listed mount points are lazily unmounted before the
/// directory is removed, even when a test fails half way.
struct Scratch {
    mounts: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            mounts: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// Registers a mount point for cleanup and returns it.
    fn mountpoint(&mut self, name: &str) -> PathBuf {
        let p = self.path(name);
        self.mounts.push(p.clone());
        p
    }
    /// A tmpfs at `name`, so overlay tests do not depend on the host's /tmp.
    fn tmpfs(&mut self, name: &str) -> PathBuf {
        let p = self.mountpoint(name);
        mount_all(&[spec("tmpfs", "tmpfs", &["size=16m"])], &p).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Innermost (latest) first; detach so nothing can keep us busy.
        for p in self.mounts.iter().rev() {
            while nix::mount::umount2(p, MntFlags::MNT_DETACH).is_ok() {}
        }
    }
}

macro_rules! require_root {
    () => {
        if test_skip::unless_root() {
            return;
        }
    };
}

#[test]
fn parse_options_table() {
    let f = MsFlags::empty;
    let cases: Vec<(Vec<&str>, MsFlags, Vec<MsFlags>, &str)> = vec![
        (vec![], f(), vec![], ""),
        (vec!["ro"], MsFlags::MS_RDONLY, vec![], ""),
        (vec!["ro", "rw"], f(), vec![], ""),
        (vec!["rw", "ro"], MsFlags::MS_RDONLY, vec![], ""),
        (vec!["bind"], MsFlags::MS_BIND, vec![], ""),
        (
            vec!["rbind", "ro"],
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY,
            vec![],
            "",
        ),
        (
            vec!["nosuid", "nodev", "noexec", "suid"],
            MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            vec![],
            "",
        ),
        (vec!["sync", "async"], f(), vec![], ""),
        (
            vec!["dirsync", "remount", "mand"],
            MsFlags::MS_DIRSYNC | MsFlags::MS_REMOUNT | MsFlags::MS_MANDLOCK,
            vec![],
            "",
        ),
        (vec!["mand", "nomand"], f(), vec![], ""),
        (
            vec!["noatime", "atime", "nodiratime"],
            MsFlags::MS_NODIRATIME,
            vec![],
            "",
        ),
        (vec!["nodiratime", "diratime"], f(), vec![], ""),
        (
            vec!["relatime", "strictatime", "norelatime"],
            MsFlags::MS_STRICTATIME,
            vec![],
            "",
        ),
        (vec!["strictatime", "nostrictatime"], f(), vec![], ""),
        (vec!["nodev", "dev", "noexec", "exec"], f(), vec![], ""),
        (
            vec!["lazytime", "iversion", "silent"],
            MsFlags::MS_LAZYTIME | MsFlags::MS_I_VERSION | MsFlags::MS_SILENT,
            vec![],
            "",
        ),
        (
            vec![
                "lazytime",
                "nolazytime",
                "iversion",
                "noiversion",
                "silent",
                "loud",
            ],
            f(),
            vec![],
            "",
        ),
        (
            vec!["nosymfollow"],
            MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW),
            vec![],
            "",
        ),
        (
            vec!["rprivate", "shared", "rslave", "unbindable"],
            f(),
            vec![
                MsFlags::MS_PRIVATE | MsFlags::MS_REC,
                MsFlags::MS_SHARED,
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
                MsFlags::MS_UNBINDABLE,
            ],
            "",
        ),
        (
            vec!["private", "rshared", "slave", "runbindable"],
            f(),
            vec![
                MsFlags::MS_PRIVATE,
                MsFlags::MS_SHARED | MsFlags::MS_REC,
                MsFlags::MS_SLAVE,
                MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
            ],
            "",
        ),
        (vec!["defaults", "ro"], MsFlags::MS_RDONLY, vec![], ""),
        (
            vec![
                "index=off",
                "lowerdir=/l",
                "ro",
                "upperdir=/u",
                "workdir=/w",
            ],
            MsFlags::MS_RDONLY,
            vec![],
            "index=off,lowerdir=/l,upperdir=/u,workdir=/w",
        ),
        (
            vec!["size=64k", "mode=755", "nosuid"],
            MsFlags::MS_NOSUID,
            vec![],
            "size=64k,mode=755",
        ),
        // Unknown or odd strings are data, never a panic.
        (
            vec!["", "RO", "ro=1", "\u{e9}"],
            f(),
            vec![],
            ",RO,ro=1,\u{e9}",
        ),
    ];
    for (opts, flags, prop, data) in cases {
        let got = parse_options(&strings(&opts));
        assert_eq!(got, (flags, prop, data.to_string()), "options {opts:?}");
    }
}

#[test]
fn compact_lowerdir_cases() {
    let opts = strings(&[
        "index=off",
        "lowerdir=/var/lib/s/snapshots/12/fs:/var/lib/s/snapshots/13/fs:/var/lib/s/snapshots/1/fs",
        "upperdir=/var/lib/s/snapshots/14/fs",
    ]);
    let (dir, new) = compact_lowerdir(&opts).unwrap();
    assert_eq!(dir, PathBuf::from("/var/lib/s/snapshots"));
    assert_eq!(
        new,
        strings(&[
            "index=off",
            "lowerdir=12/fs:13/fs:1/fs",
            "upperdir=/var/lib/s/snapshots/14/fs"
        ])
    );
    // Common prefix ends exactly at a separator.
    let (dir, new) = compact_lowerdir(&strings(&["lowerdir=/a/b/x:/a/b/y"])).unwrap();
    assert_eq!(
        (dir, new),
        (PathBuf::from("/a/b"), strings(&["lowerdir=x:y"]))
    );
    for none in [
        vec!["upperdir=/u"],
        vec!["lowerdir=/only/one"],
        vec!["lowerdir=/a:/b"],
        vec!["lowerdir=rel/a:rel/b"],
        vec!["lowerdir=/x/a\\:b:/x/c"],
        vec!["lowerdir=/x/a::/x/b"],
        vec!["lowerdir=/x/a/:/x/a/b"],
        vec!["lowerdir="],
    ] {
        assert!(compact_lowerdir(&strings(&none)).is_none(), "{none:?}");
    }
    // Multi-byte names: slicing stays on char boundaries.
    let (dir, new) = compact_lowerdir(&strings(&["lowerdir=/d/\u{e9}a:/d/\u{e9}b"])).unwrap();
    assert_eq!(
        (dir, new),
        (PathBuf::from("/d"), strings(&["lowerdir=\u{e9}a:\u{e9}b"]))
    );
    let (dir, _) = compact_lowerdir(&strings(&["lowerdir=/d/x/\u{e9}:/d/x/\u{e8}"])).unwrap();
    assert_eq!(dir, PathBuf::from("/d/x"));
}

#[test]
fn empty_specs_do_nothing() {
    let s = Scratch::new();
    let target = s.path("rootfs");
    mount_all(&[], &target).unwrap();
    assert!(!target.exists());
}

#[test]
fn tmpfs_mount_and_unmount() {
    require_root!();
    let mut s = Scratch::new();
    let target = s.mountpoint("missing/parent/rootfs");
    mount_all(&[spec("tmpfs", "tmpfs", &["size=1m", "mode=755"])], &target).unwrap();
    assert_eq!(mount_count(&target), 1);
    fs::write(target.join("f"), b"x").unwrap();
    unmount_all(&target).unwrap();
    assert_eq!(mount_count(&target), 0);
    assert!(!target.join("f").exists());
}

#[test]
fn bind_mount_shows_source() {
    require_root!();
    let mut s = Scratch::new();
    let src = s.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("hello"), b"world").unwrap();
    let target = s.mountpoint("rootfs");
    mount_all(&[spec("bind", src.to_str().unwrap(), &["rbind"])], &target).unwrap();
    assert_eq!(fs::read(target.join("hello")).unwrap(), b"world");
    fs::write(target.join("new"), b"rw").unwrap();
    assert!(src.join("new").exists());
    unmount_all(&target).unwrap();
    assert_eq!(mount_count(&target), 0);
    assert!(!target.join("hello").exists());
}

#[test]
fn ro_bind_is_read_only() {
    require_root!();
    let mut s = Scratch::new();
    let src = s.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("hello"), b"world").unwrap();
    let target = s.mountpoint("rootfs");
    mount_all(
        &[spec("bind", src.to_str().unwrap(), &["rbind", "ro"])],
        &target,
    )
    .unwrap();
    assert_eq!(fs::read(target.join("hello")).unwrap(), b"world");
    let err = fs::write(target.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    // Only the bind is read-only, not its source.
    fs::write(src.join("new"), b"x").unwrap();
    unmount_all(&target).unwrap();
    assert_eq!(mount_count(&target), 0);
}

/// lower/upper/work dirs on a private tmpfs; returns (lower, upper, work).
fn overlay_dirs(s: &mut Scratch) -> (PathBuf, PathBuf, PathBuf) {
    let base = s.tmpfs("base");
    let dirs: Vec<PathBuf> = ["lower", "upper", "work"]
        .iter()
        .map(|d| base.join(d))
        .collect();
    for d in &dirs {
        fs::create_dir(d).unwrap();
    }
    (dirs[0].clone(), dirs[1].clone(), dirs[2].clone())
}

#[test]
fn overlay_mount() {
    require_root!();
    let mut s = Scratch::new();
    let (lower, upper, work) = overlay_dirs(&mut s);
    fs::write(lower.join("from-lower"), b"l").unwrap();
    let target = s.mountpoint("rootfs");
    let opts = [
        format!("lowerdir={}", lower.display()),
        format!("upperdir={}", upper.display()),
        format!("workdir={}", work.display()),
    ];
    let opts: Vec<&str> = opts.iter().map(|s| s.as_str()).collect();
    mount_all(&[spec("overlay", "overlay", &opts)], &target).unwrap();
    assert_eq!(fs::read(target.join("from-lower")).unwrap(), b"l");
    fs::write(target.join("written"), b"u").unwrap();
    assert_eq!(fs::read(upper.join("written")).unwrap(), b"u");
    assert!(!lower.join("written").exists());
    unmount_all(&target).unwrap();
    assert_eq!(mount_count(&target), 0);
}

#[test]
fn containerd_internal_options_and_transforms_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("rootfs");
    for (m, want) in [
        (
            spec("ext4", "/x.img", &["X-containerd.mkfs.fs=ext4", "rw"]),
            "X-containerd.mkfs.fs=ext4",
        ),
        (
            spec("erofs", "/x", &["ro", "X-containerd.dmverity=/x.meta"]),
            "not consumed",
        ),
        (spec("format/mkdir/overlay", "overlay", &[]), "transform"),
    ] {
        let e = mount_all(&[m], &target).unwrap_err();
        assert!(matches!(e, MountError::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains(want), "{e}");
    }
    assert_eq!(mount_count(&target), 0);
}

#[test]
fn idmap_options_are_taken_out_together() {
    let (m, rest) = split_idmap_options(&strings(&[
        "ro",
        "uidmap=0:100000:65536",
        "lowerdir=/a",
        "gidmap=0:200000:65536",
    ]));
    assert_eq!(
        m,
        Some(("0:100000:65536".to_string(), "0:200000:65536".to_string()))
    );
    assert_eq!(rest, strings(&["ro", "lowerdir=/a"]));
    // One without the other is dropped and nothing is remapped, as containerd does.
    let (m, rest) = split_idmap_options(&strings(&["uidmap=0:1:1", "rw"]));
    assert_eq!(m, None);
    assert_eq!(rest, strings(&["rw"]));
}

/// uid and gid of `path` (not following a final symlink).
fn owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid())
}

#[test]
fn overlay_with_idmapped_lower_dirs() {
    require_root!();
    let mut s = Scratch::new();
    let base = s.tmpfs("base");
    let snapshots = base.join("snapshots");
    let (l1, l2, upper, work) = (
        snapshots.join("1/fs"),
        snapshots.join("2/fs"),
        snapshots.join("3/fs"),
        snapshots.join("3/work"),
    );
    for d in [&l1, &l2, &upper, &work] {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(l1.join("bottom"), b"1").unwrap();
    fs::write(l2.join("top"), b"2").unwrap();
    // The snapshotter gives the upper layer to the container's root already.
    std::os::unix::fs::chown(&upper, Some(100_000), Some(200_000)).unwrap();
    let target = s.mountpoint("bundle/rootfs");
    fs::create_dir(s.path("bundle")).unwrap();
    let opts = [
        format!("lowerdir={}:{}", l2.display(), l1.display()),
        format!("upperdir={}", upper.display()),
        format!("workdir={}", work.display()),
        "uidmap=0:100000:65536".to_string(),
        "gidmap=0:200000:65536".to_string(),
    ];
    let opts: Vec<&str> = opts.iter().map(|s| s.as_str()).collect();
    mount_all(&[spec("overlay", "overlay", &opts)], &target).unwrap();
    // Files root owns in the layers belong to the container's root, as the host sees.
    assert_eq!(owner(&target.join("bottom")), (100_000, 200_000));
    assert_eq!(owner(&target.join("top")), (100_000, 200_000));
    assert_eq!(fs::read(target.join("bottom")).unwrap(), b"1");
    // The layers themselves are untouched, and the temporary mount is gone.
    assert_eq!(owner(&l1.join("bottom")), (0, 0));
    let leftovers: Vec<_> = fs::read_dir(s.path("bundle"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("rootfs")]);
    // No mount point is left there (the overlay's own options still name the paths
    // it was given, as with containerd).
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.lines().any(|l| l
            .split(' ')
            .nth(4)
            .unwrap_or("")
            .contains(".idmapped-lowers-")),
        "{mountinfo}"
    );
    assert_eq!(mount_count(&target), 1);
    unmount_all(&target).unwrap();
    assert_eq!(mount_count(&target), 0);
}

#[test]
fn idmapped_bind_mount() {
    require_root!();
    let mut s = Scratch::new();
    let base = s.tmpfs("base");
    fs::write(base.join("f"), b"x").unwrap();
    let target = s.mountpoint("rootfs");
    let src = base.display().to_string();
    mount_all(
        &[spec(
            "bind",
            &src,
            &["rbind", "uidmap=0:100000:65536", "gidmap=0:100000:65536"],
        )],
        &target,
    )
    .unwrap();
    assert_eq!(owner(&target.join("f")), (100_000, 100_000));
    assert_eq!(owner(&base.join("f")), (0, 0));
    // The bind and its idmapped clone on top: both go on unmount.
    assert_eq!(mount_count(&target), 2);
    unmount_all(&target).unwrap();
    assert_eq!(mount_count(&target), 0);
}

#[test]
fn bad_id_mappings_are_refused_before_mounting() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("rootfs");
    let e = mount_all(
        &[spec(
            "overlay",
            "overlay",
            &["lowerdir=/a/b", "uidmap=0:x:1", "gidmap=0:1:1"],
        )],
        &target,
    )
    .unwrap_err();
    assert!(e.to_string().contains("invalid id mapping"), "{e}");
}

#[test]
fn overlay_with_lowerdirs_longer_than_a_page() {
    require_root!();
    let mut s = Scratch::new();
    let base = s.tmpfs("base");
    let common = base.join("x".repeat(200)).join("snapshots");
    let layers = 40;
    let mut lowers = Vec::new();
    for i in 0..layers {
        let fs_dir = common.join(i.to_string()).join("fs");
        fs::create_dir_all(&fs_dir).unwrap();
        fs::write(fs_dir.join(format!("layer-{i}")), b"").unwrap();
        lowers.push(fs_dir.display().to_string());
    }
    let upper = base.join("upper");
    let work = base.join("work");
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    let opts = vec![
        format!("lowerdir={}", lowers.join(":")),
        format!("upperdir={}", upper.display()),
        format!("workdir={}", work.display()),
    ];
    assert!(parse_options(&opts).2.len() > page_size());
    let cwd = std::env::current_dir().unwrap();
    let target = s.mountpoint("rootfs");
    let m = MountSpec {
        kind: "overlay".into(),
        source: "overlay".into(),
        options: opts,
    };
    mount_all(&[m], &target).unwrap();
    assert_eq!(
        std::env::current_dir().unwrap(),
        cwd,
        "process cwd untouched"
    );
    for i in 0..layers {
        assert!(target.join(format!("layer-{i}")).exists(), "layer {i}");
    }
    unmount_all(&target).unwrap();
    assert_eq!(mount_count(&target), 0);
}

#[test]
fn too_long_options_are_refused() {
    let s = Scratch::new();
    let target = s.path("rootfs");
    let long = format!("lowerdir=/{}", "y".repeat(page_size()));
    for kind in ["overlay", "tmpfs"] {
        let err = mount_all(&[spec(kind, kind, &[&long])], &target).unwrap_err();
        assert!(matches!(err, MountError::OptionsTooLong { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("too long") && msg.contains(kind), "{msg}");
    }
}

#[test]
fn fuse_and_nul_are_refused() {
    let s = Scratch::new();
    let target = s.path("rootfs");
    let err = mount_all(&[spec("fuse3.fuse-overlayfs", "overlay", &[])], &target).unwrap_err();
    assert!(err.to_string().contains("FUSE"), "{err}");
    let err = mount_all(&[spec("tmpfs", "tm\0pfs", &[])], &target).unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
}

#[test]
fn failing_second_mount_unmounts_first() {
    require_root!();
    let mut s = Scratch::new();
    let target = s.mountpoint("rootfs");
    let specs = [
        spec("tmpfs", "tmpfs", &["size=1m"]),
        spec("tether-no-such-fs", "nowhere", &[]),
    ];
    let err = mount_all(&specs, &target).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("tether-no-such-fs")
            && msg.contains("nowhere")
            && msg.contains(target.to_str().unwrap())
            && msg.contains("ENODEV"),
        "{msg}"
    );
    assert!(matches!(
        err,
        MountError::Mount {
            errno: Errno::ENODEV,
            ..
        }
    ));
    assert_eq!(mount_count(&target), 0);
}

#[test]
fn failing_bind_source_reports_it() {
    require_root!();
    let mut s = Scratch::new();
    let target = s.mountpoint("rootfs");
    let missing = s.path("missing");
    let err = mount_all(
        &[spec("bind", missing.to_str().unwrap(), &["rbind", "ro"])],
        &target,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            MountError::Mount {
                errno: Errno::ENOENT,
                step: "mount",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(mount_count(&target), 0);
}

#[test]
fn unmount_all_without_mounts_is_ok() {
    // umount2 refuses anyone without CAP_SYS_ADMIN with EPERM, mount point or not.
    require_root!();
    let s = Scratch::new();
    let dir = s.path("plain");
    fs::create_dir(&dir).unwrap();
    unmount_all(&dir).unwrap();
    unmount_all(&s.path("does/not/exist")).unwrap();
}

#[test]
fn stacked_mounts_are_all_removed() {
    require_root!();
    let mut s = Scratch::new();
    let target = s.mountpoint("rootfs");
    let t = spec("tmpfs", "tmpfs", &["size=1m"]);
    mount_all(&[t.clone(), t.clone(), t], &target).unwrap();
    assert_eq!(mount_count(&target), 3);
    unmount_all(&target).unwrap();
    assert_eq!(mount_count(&target), 0);
}

#[test]
fn remount_changes_top_mount_in_place() {
    require_root!();
    let mut s = Scratch::new();
    let target = s.mountpoint("rootfs");
    let specs = [
        spec("tmpfs", "tmpfs", &["size=1m"]),
        spec("tmpfs", "tmpfs", &["remount", "ro", "size=1m"]),
    ];
    mount_all(&specs, &target).unwrap();
    assert_eq!(mount_count(&target), 1);
    let err = fs::write(target.join("f"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    unmount_all(&target).unwrap();
    assert_eq!(mount_count(&target), 0);
}

#[test]
fn propagation_is_applied() {
    require_root!();
    let mut s = Scratch::new();
    let target = s.mountpoint("rootfs");
    mount_all(&[spec("tmpfs", "tmpfs", &["size=1m", "rshared"])], &target).unwrap();
    let want = target.to_str().unwrap().to_string();
    let line = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(want.as_str()))
        .map(str::to_string)
        .unwrap();
    assert!(line.contains(" shared:"), "{line}");
    unmount_all(&target).unwrap();
}

#[test]
fn busy_mount_is_detached() {
    require_root!();
    let mut s = Scratch::new();
    let target = s.mountpoint("rootfs");
    mount_all(&[spec("tmpfs", "tmpfs", &["size=1m"])], &target).unwrap();
    // An open file keeps the mount busy: umount2 without flags gets EBUSY.
    let _open = fs::File::create(target.join("held")).unwrap();
    unmount_all(&target).unwrap();
    assert_eq!(mount_count(&target), 0);
}

//! fstab-style mount options, parsed as containerd parses them.

use nix::mount::MsFlags;

/// Flag options: name -> (clears the flag?, flag). Same table as containerd's
/// parseMountOptions, plus the newer ones runc knows.
fn flag_option(option: &str) -> Option<(bool, MsFlags)> {
    // nix 0.29 has no constant for it; the bit is the kernel's (Linux 5.10+).
    let nosymfollow = MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW);
    let entry = match option {
        "async" => (true, MsFlags::MS_SYNCHRONOUS),
        "atime" => (true, MsFlags::MS_NOATIME),
        "bind" => (false, MsFlags::MS_BIND),
        "dev" => (true, MsFlags::MS_NODEV),
        "diratime" => (true, MsFlags::MS_NODIRATIME),
        "dirsync" => (false, MsFlags::MS_DIRSYNC),
        "exec" => (true, MsFlags::MS_NOEXEC),
        "iversion" => (false, MsFlags::MS_I_VERSION),
        "lazytime" => (false, MsFlags::MS_LAZYTIME),
        "loud" => (true, MsFlags::MS_SILENT),
        "mand" => (false, MsFlags::MS_MANDLOCK),
        "noatime" => (false, MsFlags::MS_NOATIME),
        "nodev" => (false, MsFlags::MS_NODEV),
        "nodiratime" => (false, MsFlags::MS_NODIRATIME),
        "noexec" => (false, MsFlags::MS_NOEXEC),
        "noiversion" => (true, MsFlags::MS_I_VERSION),
        "nolazytime" => (true, MsFlags::MS_LAZYTIME),
        "nomand" => (true, MsFlags::MS_MANDLOCK),
        "norelatime" => (true, MsFlags::MS_RELATIME),
        "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
        "nosuid" => (false, MsFlags::MS_NOSUID),
        "nosymfollow" => (false, nosymfollow),
        "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
        "relatime" => (false, MsFlags::MS_RELATIME),
        "remount" => (false, MsFlags::MS_REMOUNT),
        "ro" => (false, MsFlags::MS_RDONLY),
        "rw" => (true, MsFlags::MS_RDONLY),
        "silent" => (false, MsFlags::MS_SILENT),
        "strictatime" => (false, MsFlags::MS_STRICTATIME),
        "suid" => (true, MsFlags::MS_NOSUID),
        "symfollow" => (true, nosymfollow),
        "sync" => (false, MsFlags::MS_SYNCHRONOUS),
        _ => return None,
    };
    Some(entry)
}

/// Propagation options, each applied by its own mount(2) call (the kernel
/// accepts one propagation type per call).
fn propagation_option(option: &str) -> Option<MsFlags> {
    let rec = MsFlags::MS_REC;
    Some(match option {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | rec,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | rec,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | rec,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | rec,
        _ => return None,
    })
}

/// Parses fstab-style options like containerd. Pure; never fails.
///
/// Returns `(flags, propagation, data)`: flag options (`ro rw suid nosuid dev
/// nodev exec noexec sync async dirsync remount mand nomand atime noatime
/// diratime nodiratime bind rbind relatime norelatime strictatime
/// nostrictatime lazytime nolazytime iversion noiversion silent loud
/// nosymfollow symfollow`) set or, for the negative forms, clear a bit, later
/// options winning; propagation options (`[r]private [r]shared [r]slave
/// [r]unbindable`) are returned in order, one mount(2) flag set each (with
/// `MS_REC` for the `r` forms); `defaults` is ignored; everything else is
/// joined with `,` as filesystem data, in order.
pub fn parse_options(options: &[String]) -> (MsFlags, Vec<MsFlags>, String) {
    let mut flags = MsFlags::empty();
    let mut propagation = Vec::new();
    let mut data: Vec<&str> = Vec::new();
    for option in options {
        if let Some((clear, flag)) = flag_option(option) {
            if clear {
                flags.remove(flag);
            } else {
                flags.insert(flag);
            }
        } else if let Some(p) = propagation_option(option) {
            propagation.push(p);
        } else if option != "defaults" {
            data.push(option);
        }
    }
    (flags, propagation, data.join(","))
}

//! `/proc/<pid>/mountinfo` text (cgroups/mod.rs `parse_mountinfo`: lines read by
//! procfs-core, paths unescaped by hand): malformed lines are skipped, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let mounts = tether_shim::containerd::cgroups::parse_mountinfo(text);
        assert!(mounts.len() <= text.lines().count() + 1);
    }
});

//! A container's cgroup files kept open between its `Stats` calls.
//!
//! Why: containerd 2.x's CRI plugin collects every container's stats once a second
//! (`StatsCollector`, one `Task.Stats` per container per second, whatever kubelet asks),
//! and a v1 collection reads ~26 files. Opening a cgroupfs file costs most of its read
//! (the path walk, the kernfs open, the close: ~10 µs each on a loaded 2-core machine
//! against ~2 µs for a `pread` of a file already open), so a shim that opened them all
//! each time spent most of its idle CPU doing so. Kept open, each file is read again from
//! offset 0 with `pread`: cgroupfs files are generated afresh by a read at offset 0
//! (seq_file starts over), so the values are as current as a fresh open's.
//!
//! A file found absent is remembered as absent (a container's cgroup keeps its
//! controllers and interface files for its life); a file whose cgroup was removed
//! (`ENODEV`) is closed and counts as absent from then on. The kept descriptors are
//! close-on-exec (runc and a live upgrade's new image never see them) and counted
//! across the process against [`MAX_KEPT_FILES`]: past it, files are opened and closed
//! for each read as before.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Most cgroup files kept open by the whole process (~19 containers' worth of v1 files):
/// a shim serving many containers keeps its descriptor table small.
pub const MAX_KEPT_FILES: usize = 512;

/// Descriptors kept open by every [`KeptFiles`] of this process. A static because the
/// bound is the process's (its descriptor table), not any one container's.
static KEPT_OPEN: AtomicUsize = AtomicUsize::new(0);

/// The largest read of one file in one go; larger files take more reads.
const CHUNK: usize = 4096;

/// What is known of one file.
#[derive(Debug)]
enum Kept {
    Open(File),
    Absent,
}

/// The cgroup files of one container, kept open between collections. Shared by the
/// loop, whose container record owns it and drops it at Delete, and the worker that runs
/// a Stats job with a clone of the `Arc` (the one reason it is `Sync`): the map is read
/// and changed only under its lock, by the workers; the files are read with `pread`,
/// which moves no file offset.
#[derive(Debug, Default)]
pub struct KeptFiles {
    files: Mutex<HashMap<PathBuf, Kept>>,
}

impl KeptFiles {
    /// The text of `path`, read whole; `Ok(None)` if it is absent (`is_absent`).
    pub fn read(
        &self,
        path: &Path,
        is_absent: impl Fn(&io::Error) -> bool,
    ) -> io::Result<Option<String>> {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        match files.get(path) {
            Some(Kept::Absent) => return Ok(None),
            Some(Kept::Open(f)) => match read_whole(f) {
                Ok(text) => return Ok(Some(text)),
                Err(e) if is_absent(&e) => {
                    forget(files.insert(path.to_path_buf(), Kept::Absent));
                    return Ok(None);
                }
                Err(e) => return Err(e),
            },
            None => {}
        }
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                files.insert(path.to_path_buf(), Kept::Absent);
                return Ok(None);
            }
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let text = match read_whole(&file) {
            Ok(text) => text,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let room = KEPT_OPEN
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_KEPT_FILES).then_some(n + 1)
            })
            .is_ok();
        if room {
            files.insert(path.to_path_buf(), Kept::Open(file));
        }
        Ok(Some(text))
    }

    /// How many of its files are open (tests).
    #[cfg(test)]
    fn open_count(&self) -> usize {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        files
            .values()
            .filter(|k| matches!(k, Kept::Open(_)))
            .count()
    }
}

impl Drop for KeptFiles {
    fn drop(&mut self) {
        let files = self.files.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, kept) in files.drain() {
            forget(Some(kept));
        }
    }
}

/// Gives a kept descriptor's place back (the file closes as it drops).
fn forget(kept: Option<Kept>) {
    if let Some(Kept::Open(_)) = kept {
        KEPT_OPEN.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads `file` whole from offset 0 with `pread` (no size hint asked of the kernel:
/// cgroupfs files say size 0), as UTF-8.
pub fn read_whole(file: &File) -> io::Result<String> {
    let mut chunk = [0u8; CHUNK];
    let mut out = Vec::new();
    loop {
        // Why the cast is exact: `out` is at most a few KiB (a usize fits in a u64).
        match file.read_at(&mut chunk, out.len() as u64) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never_absent(_: &io::Error) -> bool {
        false
    }

    #[test]
    fn a_kept_file_is_read_afresh_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.usage_in_bytes");
        std::fs::write(&path, "4096\n").unwrap();
        let kept = KeptFiles::default();
        assert_eq!(
            kept.read(&path, never_absent).unwrap().as_deref(),
            Some("4096\n")
        );
        assert_eq!(kept.open_count(), 1);
        // Rewritten in place (same inode): the kept descriptor reads the new text.
        std::fs::write(&path, "8192000\n").unwrap();
        assert_eq!(
            kept.read(&path, never_absent).unwrap().as_deref(),
            Some("8192000\n")
        );
        std::fs::write(&path, "1\n").unwrap();
        assert_eq!(
            kept.read(&path, never_absent).unwrap().as_deref(),
            Some("1\n")
        );
        assert_eq!(kept.open_count(), 1);
    }

    #[test]
    fn an_absent_file_is_remembered_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.memsw.usage_in_bytes");
        let kept = KeptFiles::default();
        assert_eq!(kept.read(&path, never_absent).unwrap(), None);
        std::fs::write(&path, "1\n").unwrap();
        assert_eq!(kept.read(&path, never_absent).unwrap(), None);
        assert_eq!(kept.open_count(), 0);
    }

    #[test]
    fn a_file_larger_than_a_chunk_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.stat");
        let text: String = (0..1000).map(|i| format!("key{i} {i}\n")).collect();
        assert!(text.len() > 2 * CHUNK);
        std::fs::write(&path, &text).unwrap();
        let kept = KeptFiles::default();
        assert_eq!(
            kept.read(&path, never_absent).unwrap().as_deref(),
            Some(text.as_str())
        );
        assert_eq!(
            kept.read(&path, never_absent).unwrap().as_deref(),
            Some(text.as_str())
        );
    }

    /// A real cgroupfs file kept open follows the kernel's counter: this process's own
    /// CPU time, read through one descriptor before and after it burns some.
    #[test]
    fn a_kept_cgroup_file_follows_the_kernel() {
        let Ok(usage) = std::fs::read_to_string("/sys/fs/cgroup/cpuacct/cpuacct.usage")
            .map(|_| PathBuf::from("/sys/fs/cgroup/cpuacct/cpuacct.usage"))
            .or_else(|_| {
                std::fs::read_to_string("/sys/fs/cgroup/cpu.stat")
                    .map(|_| PathBuf::from("/sys/fs/cgroup/cpu.stat"))
            })
        else {
            test_skip::skip("no root cpuacct.usage or cpu.stat");
            return;
        };
        let kept = KeptFiles::default();
        let before = kept.read(&usage, never_absent).unwrap().unwrap();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box((0..1000u64).sum::<u64>());
        }
        let after = kept.read(&usage, never_absent).unwrap().unwrap();
        assert_ne!(
            before, after,
            "{usage:?} read through a kept descriptor did not change"
        );
        assert_eq!(kept.open_count(), 1);
    }

    #[test]
    fn an_open_file_is_counted_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let kept = KeptFiles::default();
        for i in 0..3 {
            let path = dir.path().join(format!("f{i}"));
            std::fs::write(&path, "x").unwrap();
            kept.read(&path, never_absent).unwrap();
        }
        assert_eq!(kept.open_count(), 3);
        // Other tests keep files beside this one: only a lower bound holds here.
        assert!(KEPT_OPEN.load(Ordering::SeqCst) >= 3);
    }
}

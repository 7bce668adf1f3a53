//! The spool behind a real pump, against pipes, a socket and full filesystems: order kept,
//! the direct path taking over once it empties, `drop-oldest` counting exactly, `block`
//! and a full disk losing nothing.

use super::*;
use crate::process_core::pump::{set_nonblocking, Direction, Pump, PumpState};
use crate::process_core::test_fds::pipe;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

fn cfg(dir: &Path, limit: u64, policy: SpoolPolicy) -> SpoolConfig {
    SpoolConfig {
        name: "test".into(),
        dir: dir.to_path_buf(),
        limit,
        policy,
    }
}

/// Numbered 8-byte records `00000000`, `00000001`...: order and gaps are visible.
fn records(from: usize, n: usize) -> Vec<u8> {
    (from..from + n)
        .flat_map(|i| format!("{i:07}\n").into_bytes())
        .collect()
}

/// A pump from a pipe into a pipe, with a spool; returns the writer (non-blocking)
/// and the destination's reader (non-blocking).
fn spooled_pump(spool: Spool) -> (Pump, File, File) {
    let (src_r, src_w) = pipe();
    let (dst_r, dst_w) = pipe();
    let pump = Pump::new(Direction::Output, src_r, dst_w, None)
        .unwrap()
        .with_spool(spool);
    set_nonblocking(src_w.as_fd()).unwrap();
    set_nonblocking(dst_r.as_fd()).unwrap();
    (pump, File::from(src_w), File::from(dst_r))
}

/// Writes all of `data` while nobody reads the destination, running the pump whenever
/// the source pipe is full; returns how much the writer could write before it would
/// have blocked (the pump, having moved all it could, left the pipe full).
fn write_unread(pump: &mut Pump, writer: &mut File, data: &[u8]) -> usize {
    let mut off = 0;
    let mut stuck = false;
    while off < data.len() {
        match writer.write(&data[off..(off + 65536).min(data.len())]) {
            Ok(n) => {
                off += n;
                stuck = false;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stuck {
                    // Declined while the reader was active a moment ago: the face
                    // runs the pump again at `recheck_at`, as here.
                    match pump.recheck_at() {
                        Some(at) => {
                            std::thread::sleep(
                                at.saturating_duration_since(std::time::Instant::now()),
                            );
                            assert_ne!(pump.run(), PumpState::Done);
                            continue;
                        }
                        None => return off,
                    }
                }
                assert_ne!(pump.run(), PumpState::Done);
                stuck = true;
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert_ne!(pump.run(), PumpState::Done);
    off
}

/// Reads the destination until the pump is done (the writer must be closed).
/// Reads a non-blocking `reader` to EOF; a child another test is spawning may hold a
/// copy of the writer until its exec (process_core::test_fds), so EOF may come late.
fn read_to_eof(reader: &mut File, out: &mut Vec<u8>) {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(std::time::Instant::now() < until, "no EOF");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn read_all(mut pump: Pump, reader: &mut File) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let state = pump.run();
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if state == PumpState::Done {
                    drop(pump);
                    read_to_eof(reader, &mut out);
                    return out;
                }
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    out
}
#[test]
fn the_file_is_unlinked_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&cfg(dir.path(), 1 << 20, SpoolPolicy::Block), "t").unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let mode = spool.file.metadata().unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
}

#[test]
fn a_writer_nobody_reads_never_blocks_and_order_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&cfg(dir.path(), 64 << 20, SpoolPolicy::Block), "t").unwrap();
    let (mut pump, mut writer, mut reader) = spooled_pump(spool);
    // 8 MiB: many times what the two pipes hold.
    let data = records(0, 1 << 20);
    assert_eq!(write_unread(&mut pump, &mut writer, &data), data.len());
    assert!(pump.spooled() > 4 << 20, "spooled {}", pump.spooled());
    // A reader takes some, more comes, through the spool behind the older bytes.
    let mut head = vec![0u8; 100_000];
    let n = reader.read(&mut head).unwrap();
    let more = records(1 << 20, 1000);
    assert_eq!(write_unread(&mut pump, &mut writer, &more), more.len());
    drop(writer);
    let mut out = head[..n].to_vec();
    out.extend(read_all(pump, &mut reader));
    let mut want = data;
    want.extend(more);
    assert!(out == want, "{} bytes out, {} in", out.len(), want.len());
}

#[test]
fn the_spool_empties_and_the_direct_path_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    empties_and_takes_over(dir.path());
}

/// On tmpfs, where a page truncated while a pipe still referenced it read as zeros
/// when the drain spliced (it copies now).
#[test]
fn the_spool_empties_and_the_direct_path_takes_over_on_tmpfs() {
    if !Path::new("/dev/shm").is_dir() {
        test_skip::skip("no /dev/shm");
        return;
    }
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    empties_and_takes_over(dir.path());
}

fn empties_and_takes_over(dir: &Path) {
    let spool = Spool::open(&cfg(dir, 64 << 20, SpoolPolicy::Block), "t").unwrap();
    let (mut pump, mut writer, mut reader) = spooled_pump(spool);
    let mut want = Vec::new();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    for round in 0..5 {
        let data = records(round * 400_000, 400_000);
        assert_eq!(write_unread(&mut pump, &mut writer, &data), data.len());
        want.extend(data);
        // Read until the spool is empty (truncated: the file is 0 bytes again).
        while pump.spooled() > 0 || out.len() < want.len() {
            pump.run();
            if let Ok(n) = reader.read(&mut buf) {
                out.extend_from_slice(&buf[..n]);
            }
        }
        assert_eq!(pump.spooled(), 0);
        // The direct path: a small write goes straight through.
        let small = records(2_000_000 + round, 1);
        writer.write_all(&small).unwrap();
        assert_ne!(pump.run(), PumpState::Done);
        assert_eq!(pump.spooled(), 0, "went straight to the destination");
        want.extend(small);
    }
    drop(writer);
    out.extend(read_all(pump, &mut reader));
    assert!(out == want);
}

#[test]
fn drop_oldest_counts_exactly_what_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&cfg(dir.path(), 1 << 20, SpoolPolicy::DropOldest), "t").unwrap();
    let (mut pump, mut writer, mut reader) = spooled_pump(spool);
    let data = records(0, 1 << 20); // 8 MiB
    assert_eq!(write_unread(&mut pump, &mut writer, &data), data.len());
    assert!(pump.spooled() <= 1 << 20 && pump.spooled() >= 512 << 10);
    let dropped = pump.dropped();
    assert!(dropped > 0);
    drop(writer);
    let out = read_all(pump, &mut reader);
    assert_eq!(out.len() as u64 + dropped, data.len() as u64);
    // What arrived is the head the FIFO held, then the newest bytes (a gap, no
    // reordering): the tail of the output is exactly the tail of what was written.
    let tail = 512 << 10;
    assert!(out[out.len() - tail..] == data[data.len() - tail..]);
    assert!(out[..4096] == data[..4096]);
}

#[test]
fn block_at_the_limit_blocks_the_writer_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&cfg(dir.path(), 256 << 10, SpoolPolicy::Block), "t").unwrap();
    let (mut pump, mut writer, mut reader) = spooled_pump(spool);
    let data = records(0, 1 << 20);
    let written = write_unread(&mut pump, &mut writer, &data);
    assert!(written < data.len(), "the writer must block");
    assert_eq!(pump.spooled(), 256 << 10);
    assert_eq!(pump.dropped(), 0);
    drop(writer);
    let out = read_all(pump, &mut reader);
    assert!(out == data[..written]);
}

#[test]
fn a_full_disk_blocks_instead_of_losing() {
    if test_skip::unless_root() {
        return; // mounting a tmpfs
    }
    let dir = tempfile::tempdir().unwrap();
    if let Err(e) = nix::mount::mount(
        Some("tmpfs"),
        dir.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=256k"),
    ) {
        test_skip::skip(&format!("mount tmpfs: {e}"));
        return;
    }
    let result = std::panic::catch_unwind(|| {
        let spool = Spool::open(&cfg(dir.path(), 64 << 20, SpoolPolicy::Block), "t").unwrap();
        let (mut pump, mut writer, mut reader) = spooled_pump(spool);
        let data = records(0, 1 << 20);
        let written = write_unread(&mut pump, &mut writer, &data);
        assert!(written < data.len(), "the writer must block");
        assert!(pump.spooled() <= 256 << 10);
        assert_eq!(pump.dropped(), 0);
        drop(writer);
        let out = read_all(pump, &mut reader);
        assert!(out == data[..written], "{} of {written}", out.len());
    });
    let _ = nix::mount::umount2(dir.path(), nix::mount::MntFlags::MNT_DETACH);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn a_buffered_source_spools_through_append() {
    // A socket source is not spliceable: the pump's buffer path appends to the spool.
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&cfg(dir.path(), 64 << 20, SpoolPolicy::Block), "t").unwrap();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let (dst_r, dst_w) = pipe();
    let mut pump = Pump::new(Direction::Output, OwnedFd::from(b), dst_w, None)
        .unwrap()
        .with_spool(spool);
    let mut writer = File::from(OwnedFd::from(a));
    set_nonblocking(writer.as_fd()).unwrap();
    let mut reader = File::from(dst_r);
    set_nonblocking(reader.as_fd()).unwrap();
    let data = records(0, 400_000);
    assert_eq!(write_unread(&mut pump, &mut writer, &data), data.len());
    assert!(pump.spooled() > 0);
    drop(writer);
    let out = read_all(pump, &mut reader);
    assert!(out == data);
}

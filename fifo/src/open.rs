//! Creating FIFOs and opening them without ever blocking in open(2).
//!
//! A plain `open(O_WRONLY)` on a FIFO blocks until a reader appears, and `open(O_RDONLY)`
//! until a writer appears: a supervisor that does either while its manager is away hangs.
//! Every open here is therefore done with `O_NONBLOCK` (which never waits for the peer), and
//! the flag is cleared afterwards when the caller wants ordinary blocking reads and writes.
//! Every descriptor is opened with `O_CLOEXEC` (std always adds it) and `O_NOCTTY`.

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};

/// How long `open_write_timeout` sleeps between two attempts.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Where the kernel publishes the largest pipe size an unprivileged process may ask for.
const PIPE_MAX_SIZE: &str = "/proc/sys/fs/pipe-max-size";

/// Creates a FIFO at `path` whose permission bits are exactly `mode & 0o7777` (they are set
/// with chmod after mkfifo, so the umask does not interfere). If `owner` is
/// `Some((uid, gid))` the FIFO is chowned to it (before the chmod, because chown clears
/// set-id bits).
///
/// If `path` already exists and is a FIFO this succeeds, and mode and owner are still
/// applied. If it exists and is anything else — including a symlink, even to a FIFO —
/// returns `Error::NotAFifo` and changes nothing. Other failures are `Error::Io` naming
/// the operation ("mkfifo", "stat", "chown", "chmod") and `path`. Never blocks.
pub fn create(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    let bits = mode & 0o7777;
    match nix::unistd::mkfifo(path, Mode::from_bits_truncate(bits)) {
        Ok(()) => {}
        Err(Errno::EEXIST) => {
            // lstat, not stat: chmod/chown must not be steered through a symlink.
            let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io("stat", path, e))?;
            if !meta.file_type().is_fifo() {
                return Err(Error::NotAFifo { path: path.into() });
            }
        }
        Err(errno) => return Err(Error::nix("mkfifo", path, errno)),
    }
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(|e| Error::io("chown", path, e))?;
    }
    std::fs::set_permissions(path, Permissions::from_mode(bits))
        .map_err(|e| Error::io("chmod", path, e))?;
    Ok(())
}

/// Which end(s) of a FIFO to open.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
}

/// Opens `path` with `O_NONBLOCK`, checks it is a FIFO, then sets the blocking mode the
/// caller asked for.
fn open_fifo(path: &Path, access: Access, nonblocking: bool) -> Result<File> {
    let file = OpenOptions::new()
        .read(access != Access::Write)
        .write(access != Access::Read)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            if access == Access::Write && e.raw_os_error() == Some(libc::ENXIO) {
                Error::NoReader { path: path.into() }
            } else {
                Error::io("open", path, e)
            }
        })?;
    let meta = file.metadata().map_err(|e| Error::io("fstat", path, e))?;
    if !meta.file_type().is_fifo() {
        return Err(Error::NotAFifo { path: path.into() });
    }
    if !nonblocking {
        set_nonblocking(file.as_fd(), false).map_err(|e| Error::nix("fcntl", path, e))?;
    }
    Ok(file)
}

/// Sets or clears `O_NONBLOCK` on `fd`.
fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> nix::Result<()> {
    let raw = fd.as_raw_fd();
    let mut flags = OFlag::from_bits_truncate(fcntl(raw, FcntlArg::F_GETFL)?);
    flags.set(OFlag::O_NONBLOCK, on);
    fcntl(raw, FcntlArg::F_SETFL(flags)).map(drop)
}

/// Opens the read end of the FIFO at `path`. Never blocks in open (it uses
/// `O_RDONLY|O_NONBLOCK`, which succeeds with or without a writer), then clears
/// `O_NONBLOCK` unless `nonblocking`.
///
/// Note that a blocking read on a FIFO that no writer has opened returns EOF at once.
/// Errors: `Error::Io` ("open") if it cannot be opened, `Error::NotAFifo` if `path` is not a
/// FIFO.
pub fn open_read(path: &Path, nonblocking: bool) -> Result<File> {
    open_fifo(path, Access::Read, nonblocking)
}

/// Opens the write end of the FIFO at `path` without blocking (`O_WRONLY|O_NONBLOCK`).
/// If no process has the read end open, returns `Error::NoReader { path }` at once.
/// Clears `O_NONBLOCK` on the returned file unless `nonblocking`.
/// Errors also: `Error::Io` ("open"), `Error::NotAFifo`.
pub fn open_write(path: &Path, nonblocking: bool) -> Result<File> {
    open_fifo(path, Access::Write, nonblocking)
}

/// Opens the write end of the FIFO at `path` (in blocking mode) as soon as a reader exists,
/// polling every 10 ms for at most `timeout` (one attempt if `timeout` is zero).
/// Returns `Error::NoReader { path }` if no reader appeared in time; any other error
/// (missing file, not a FIFO) is returned at once, without waiting.
pub fn open_write_timeout(path: &Path, timeout: Duration) -> Result<File> {
    // A timeout too large for Instant means "wait for ever".
    let deadline = Instant::now().checked_add(timeout);
    loop {
        match open_write(path, false) {
            Err(Error::NoReader { .. }) => {}
            other => return other,
        }
        let pause = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::NoReader { path: path.into() });
                }
                left.min(POLL_INTERVAL)
            }
            None => POLL_INTERVAL,
        };
        std::thread::sleep(pause);
    }
}

/// Opens the FIFO at `path` for reading and writing (`O_RDWR`), in blocking mode.
/// Never blocks in open, and the file holds both ends, so the pipe stays alive (writers
/// never see EPIPE, readers never see EOF) for as long as it is open — Linux semantics,
/// which POSIX leaves undefined. Errors: `Error::Io` ("open"), `Error::NotAFifo`.
pub fn open_rdwr(path: &Path) -> Result<File> {
    open_fifo(path, Access::ReadWrite, false)
}

/// A FIFO write end together with a read end that is never read, so that writes never fail
/// with EPIPE (nor raise SIGPIPE) while the real reader is away. Data written meanwhile stays
/// in the pipe for the next reader; once the pipe buffer is full, writes block (the writer
/// is in blocking mode) until a reader drains it.
#[derive(Debug)]
pub struct KeepAliveWriter {
    writer: File,
    keepalive: File,
}

impl KeepAliveWriter {
    /// Opens a keep-alive read end first (non-blocking) and then the write end (blocking
    /// mode); since a reader then always exists, open never blocks and never fails with
    /// `NoReader`. Errors: `Error::Io` ("open"), `Error::NotAFifo`.
    pub fn open(path: &Path) -> Result<Self> {
        let keepalive = open_read(path, true)?;
        let writer = open_write(path, false)?;
        Ok(KeepAliveWriter { writer, keepalive })
    }

    /// The write end.
    pub fn writer(&self) -> &File {
        &self.writer
    }

    /// Splits into `(writer, keepalive reader)`, e.g. to hand the writer to a child process
    /// while the supervisor keeps the reader. The guarantee against EPIPE lasts only as long
    /// as the keep-alive reader stays open.
    pub fn into_parts(self) -> (File, File) {
        (self.writer, self.keepalive)
    }
}

/// A FIFO read end together with a write end its holder never writes, so that the reader
/// never sees EOF while no real writer is connected: input arriving from one writer after
/// another (managers that come and go) reaches one long-lived reader. Dropping the held
/// write end is how the holder lets EOF through once the real writers are done.
#[derive(Debug)]
pub struct KeepAliveReader {
    reader: File,
    hold: File,
}

impl KeepAliveReader {
    /// Opens the read end first, non-blocking (so the open never waits for a writer), then
    /// the held write end (which cannot block or fail with `NoReader`: the read end
    /// exists). The read end stays non-blocking, for an event loop. Errors: `Error::Io`
    /// ("open"), `Error::NotAFifo`.
    pub fn open(path: &Path) -> Result<Self> {
        let reader = open_read(path, true)?;
        let hold = open_write(path, true)?;
        Ok(KeepAliveReader { reader, hold })
    }

    /// Splits into `(reader, held write end)`.
    pub fn into_parts(self) -> (File, File) {
        (self.reader, self.hold)
    }
}

impl Write for KeepAliveWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}

impl AsFd for KeepAliveWriter {
    /// The write end's descriptor.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.writer.as_fd()
    }
}

/// Tries to raise the buffer of the pipe or FIFO `fd` to at least `bytes` with
/// `F_SETPIPE_SZ`, and returns the size the kernel granted (it rounds up to a power-of-two
/// number of pages). The request is capped by `/proc/sys/fs/pipe-max-size` (so that an
/// unprivileged process does not get EPERM) and never shrinks the buffer: if it is already
/// at least that large, the current size is returned unchanged.
/// Errors: `Error::FdIo` ("F_GETPIPE_SZ"/"F_SETPIPE_SZ"), e.g. EBADF when `fd` is not a
/// pipe, or EPERM when the user's pipe-buffer quota is exhausted.
pub fn set_pipe_size(fd: impl AsFd, bytes: usize) -> Result<usize> {
    let raw = fd.as_fd().as_raw_fd();
    let want = match pipe_max_size() {
        Some(max) => bytes.min(max),
        None => bytes,
    };
    let current = pipe_size(fd.as_fd())?;
    if current >= want {
        return Ok(current);
    }
    let arg = libc::c_int::try_from(want).unwrap_or(libc::c_int::MAX);
    let granted = fcntl(raw, FcntlArg::F_SETPIPE_SZ(arg)).map_err(|e| Error::FdIo {
        op: "F_SETPIPE_SZ",
        fd: raw,
        source: e.into(),
    })?;
    Ok(usize::try_from(granted).unwrap_or(0))
}

/// The current buffer size of the pipe or FIFO `fd`, in bytes (`F_GETPIPE_SZ`).
/// Errors: `Error::FdIo` ("F_GETPIPE_SZ"), e.g. EBADF when `fd` is not a pipe.
pub fn pipe_size(fd: impl AsFd) -> Result<usize> {
    let raw = fd.as_fd().as_raw_fd();
    let size = fcntl(raw, FcntlArg::F_GETPIPE_SZ).map_err(|e| Error::FdIo {
        op: "F_GETPIPE_SZ",
        fd: raw,
        source: e.into(),
    })?;
    Ok(usize::try_from(size).unwrap_or(0))
}

/// `/proc/sys/fs/pipe-max-size`, or None if it cannot be read (no /proc): then the request
/// goes to the kernel uncapped and the kernel decides.
fn pipe_max_size() -> Option<usize> {
    match std::fs::read_to_string(PIPE_MAX_SIZE) {
        Ok(text) => text.trim().parse().ok(),
        Err(e) => {
            log::debug!("cannot read {PIPE_MAX_SIZE}: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Read};
    use std::os::unix::fs::MetadataExt;
    use std::sync::mpsc;

    fn fifo_in(dir: &tempfile::TempDir, name: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        create(&path, 0o600, None).unwrap();
        path
    }

    fn is_nonblocking(f: &File) -> bool {
        let flags = fcntl(f.as_raw_fd(), FcntlArg::F_GETFL).unwrap();
        OFlag::from_bits_truncate(flags).contains(OFlag::O_NONBLOCK)
    }

    fn is_cloexec(f: &File) -> bool {
        let flags = fcntl(f.as_raw_fd(), FcntlArg::F_GETFD).unwrap();
        flags & libc::FD_CLOEXEC != 0
    }

    #[test]
    fn create_sets_exact_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        create(&path, 0o620, None).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.mode() & 0o7777, 0o620);
        // A group/other-writable mode that a typical umask (022) would strip.
        create(&path, 0o666, None).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o666);
    }

    #[test]
    fn create_existing_fifo_is_ok_and_reapplies_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo_in(&dir, "f");
        create(&path, 0o640, None).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.mode() & 0o7777, 0o640);
    }

    #[test]
    fn create_over_non_fifo_fails() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let sub = dir.path().join("dir");
        std::fs::create_dir(&sub).unwrap();
        let fifo = fifo_in(&dir, "fifo");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        for p in [&file, &sub, &link] {
            match create(p, 0o600, None) {
                Err(Error::NotAFifo { path }) => assert_eq!(&path, p),
                other => panic!("{}: {other:?}", p.display()),
            }
        }
        // Nothing was changed on the regular file.
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }

    #[test]
    fn create_in_missing_dir_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("f");
        match create(&path, 0o600, None) {
            Err(e @ Error::Io { op: "mkfifo", .. }) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
                assert!(e.to_string().contains(&path.display().to_string()), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_applies_owner() {
        if test_skip::unless_root() {
            return; // chown
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        create(&path, 0o620, Some((1000, 1000))).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
        assert_eq!(meta.mode() & 0o7777, 0o620);
        // Set-id bits survive because chmod comes after chown.
        create(&path, 0o2620, Some((1001, 1002))).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1001, 1002));
        assert_eq!(meta.mode() & 0o7777, 0o2620);
    }

    #[test]
    fn open_read_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo_in(&dir, "f");
        let start = Instant::now();
        let r = open_read(&path, false).unwrap();
        assert!(!is_nonblocking(&r));
        assert!(is_cloexec(&r));
        let r2 = open_read(&path, true).unwrap();
        assert!(is_nonblocking(&r2));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn open_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        match open_read(&missing, false) {
            Err(e @ Error::Io { op: "open", .. }) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOENT))
            }
            other => panic!("{other:?}"),
        }
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        for res in [
            open_read(&file, false),
            open_write(&file, false),
            open_rdwr(&file),
        ] {
            assert!(matches!(res, Err(Error::NotAFifo { ref path }) if path == &file));
        }
    }

    #[test]
    fn open_write_without_reader_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo_in(&dir, "f");
        match open_write(&path, false) {
            Err(Error::NoReader { path: p }) => assert_eq!(p, path),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn open_write_with_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo_in(&dir, "f");
        let mut r = open_read(&path, true).unwrap();
        let mut w = open_write(&path, false).unwrap();
        assert!(!is_nonblocking(&w));
        assert!(is_cloexec(&w));
        assert!(is_nonblocking(&open_write(&path, true).unwrap()));
        w.write_all(b"hello").unwrap();
        drop(w);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hello");
    }

    #[test]
    fn open_write_timeout_waits_for_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo_in(&dir, "f");
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let reader_path = path.clone();
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut r = open_read(&reader_path, false).unwrap();
            // Read only once the writer has written and closed: a read on a FIFO that
            // never had a writer returns EOF at once.
            done_rx.recv().unwrap();
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            got
        });
        let start = Instant::now();
        let mut w = open_write_timeout(&path, Duration::from_secs(5)).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(40));
        assert!(!is_nonblocking(&w));
        w.write_all(b"late").unwrap();
        drop(w);
        done_tx.send(()).unwrap();
        assert_eq!(reader.join().unwrap(), b"late");
    }

    #[test]
    fn open_write_timeout_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo_in(&dir, "f");
        let start = Instant::now();
        match open_write_timeout(&path, Duration::from_millis(100)) {
            Err(Error::NoReader { path: p }) => assert_eq!(p, path),
            other => panic!("{other:?}"),
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        // Zero timeout: one attempt.
        assert!(matches!(
            open_write_timeout(&path, Duration::ZERO),
            Err(Error::NoReader { .. })
        ));
        // Other errors are not retried.
        let start = Instant::now();
        let missing = dir.path().join("missing");
        assert!(matches!(
            open_write_timeout(&missing, Duration::from_secs(5)),
            Err(Error::Io { op: "open", .. })
        ));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn open_rdwr_holds_both_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo_in(&dir, "f");
        let mut rw = open_rdwr(&path).unwrap();
        assert!(!is_nonblocking(&rw));
        assert!(is_cloexec(&rw));
        // A reader exists, so a non-blocking writer can open.
        let mut w = open_write(&path, false).unwrap();
        w.write_all(b"ab").unwrap();
        drop(w);
        rw.write_all(b"cd").unwrap();
        let mut buf = [0u8; 4];
        rw.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"abcd");
    }

    #[test]
    fn plain_writer_gets_epipe_without_keepalive() {
        // The contrast for the KeepAliveWriter test: a writer whose reader went away fails.
        let dir = tempfile::tempdir().unwrap();
        let path = fifo_in(&dir, "f");
        let r = open_read(&path, true).unwrap();
        let mut w = open_write(&path, false).unwrap();
        drop(r);
        // The Rust runtime ignores SIGPIPE, so this is an EPIPE error rather than death.
        let err = w.write_all(b"x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    }

    #[test]
    fn keepalive_reader_sees_no_eof_between_writers_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo_in(&dir, "f");
        let (mut reader, hold) = KeepAliveReader::open(&path).unwrap().into_parts();
        assert!(is_nonblocking(&reader));
        let mut buf = [0u8; 8];
        for msg in [&b"one"[..], b"two"] {
            let mut w = open_write(&path, false).unwrap();
            w.write_all(msg).unwrap();
            drop(w);
            assert_eq!(reader.read(&mut buf).unwrap(), msg.len());
            // The writer is gone, yet no EOF: the held end keeps the pipe open.
            assert_eq!(
                reader.read(&mut buf).unwrap_err().kind(),
                ErrorKind::WouldBlock
            );
        }
        drop(hold);
        assert_eq!(reader.read(&mut buf).unwrap(), 0, "EOF once released");
    }

    #[test]
    fn keepalive_writer_survives_absent_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo_in(&dir, "f");
        let mut kw = KeepAliveWriter::open(&path).unwrap();
        assert!(!is_nonblocking(kw.writer()));
        kw.write_all(b"one,").unwrap();

        // A reader comes, reads what is there and goes away.
        let mut r1 = open_read(&path, true).unwrap();
        let mut buf = [0u8; 4];
        r1.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"one,");
        drop(r1);

        // No real reader now: writes still succeed and are kept.
        kw.write_all(b"two,").unwrap();
        kw.writer().write_all(b"three").unwrap();

        let mut r2 = open_read(&path, false).unwrap();
        let (w, keepalive) = kw.into_parts();
        drop(w);
        let mut got = Vec::new();
        r2.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"two,three");
        assert!(is_cloexec(&keepalive));
    }

    #[test]
    fn pipe_size_can_be_raised() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo_in(&dir, "f");
        let f = open_rdwr(&path).unwrap();
        let before = pipe_size(&f).unwrap();
        assert!(before > 0);
        let want = 1 << 20;
        let got = set_pipe_size(&f, want).unwrap();
        match pipe_max_size() {
            Some(max) if max < want => assert_eq!(got, max),
            _ => assert!(got >= want, "{got}"),
        }
        assert_eq!(pipe_size(&f).unwrap(), got);
        // Never shrinks.
        assert_eq!(set_pipe_size(&f, 4096).unwrap(), got);
        // Capped, not refused, beyond the maximum.
        let huge = set_pipe_size(&f, usize::MAX).unwrap();
        assert!(huge >= got);
    }

    #[test]
    fn pipe_size_on_non_pipe_fails() {
        let file = tempfile::tempfile().unwrap();
        match pipe_size(&file) {
            Err(
                e @ Error::FdIo {
                    op: "F_GETPIPE_SZ", ..
                },
            ) => {
                assert_eq!(e.raw_os_error(), Some(libc::EBADF));
                assert!(e.to_string().contains(&format!("fd {}", file.as_raw_fd())));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            set_pipe_size(&file, 1 << 20),
            Err(Error::FdIo { .. })
        ));
    }
}

//! Where the shim's ttrpc socket lives, and how it is created and removed.
//!
//! containerd does not choose the socket: the shim's `start` picks an address and prints it.
//! containerd's own Go shims put it at
//! `unix:///run/containerd/s/<hex sha256 of filepath.Join(containerdAddress, namespace, id)>`,
//! and containerd's tests (e.g. `TestShimDoesNotLeakSockets`) look for sockets there, so tether
//! computes exactly the same name. Only filesystem sockets are used: an abstract socket would
//! be reachable from any process in the network namespace.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use sha2::{Digest, Sha256};

/// The directory that holds shim sockets: containerd's default state directory plus `s`.
pub const SOCKET_DIR: &str = "/run/containerd/s";

/// The longest socket path `bind(2)` takes: `sun_path` is 108 bytes including the final NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// Why a socket address could not be parsed, created or bound.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// The address was empty (or `unix://` with nothing after it).
    #[error("empty socket address")]
    Empty,
    /// An abstract socket (`unix://@name` or `@name`): tether only serves filesystem sockets.
    #[error("abstract socket address {0:?} is not supported: use a filesystem path")]
    Abstract(String),
    /// An address with a scheme other than `unix` (e.g. `vsock://`, `tcp://`).
    #[error("unsupported socket address {address:?}: scheme {scheme:?} is not \"unix\"")]
    UnsupportedScheme {
        /// The scheme, without `://`.
        scheme: String,
        /// The whole address.
        address: String,
    },
    /// A path that contains a NUL byte and so cannot be passed to the kernel.
    #[error("socket path {0:?} contains a NUL byte")]
    Nul(String),
    /// The path does not fit in `sun_path`.
    #[error(
        "socket path {} is {len} bytes long, more than the {max} a unix socket allows",
        path.display()
    )]
    TooLong {
        /// The offending path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// [`MAX_SOCKET_PATH`].
        max: usize,
    },
    /// Something is already listening on the socket (another shim for the same container).
    #[error("socket {} is in use: another process is listening on it", .0.display())]
    InUse(PathBuf),
    /// The path exists and is not a socket, so it is not ours to remove.
    #[error("{} exists and is not a socket", .0.display())]
    NotASocket(PathBuf),
    /// The socket directory is owned by another user, so others could replace our socket.
    #[error(
        "socket directory {} is owned by uid {owner}, not by us (uid {us})",
        path.display()
    )]
    ForeignDir {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        us: u32,
    },
    /// A system call on a path failed (`fifo::Error::Io`: the operation, e.g. "mkdir",
    /// "bind", "chmod", and its path).
    #[error(transparent)]
    Io(#[from] fifo::Error),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AddressError + 'a {
    move |source| AddressError::Io(fifo::Error::io(op, path, source))
}

/// Go's `filepath.Clean` on a `/`-separated path: collapses repeated slashes, drops `.`
/// elements, resolves `..` against the preceding element (and drops it at the root), removes
/// a trailing slash; an empty result is `.`.
fn go_clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                // "/.." is "/"; a relative path keeps its leading "..".
                _ if rooted => {}
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Go's `filepath.Join`: the non-empty elements joined with `/` and cleaned; `""` when every
/// element is empty.
fn go_join(elems: &[&str]) -> String {
    let nonempty: Vec<&str> = elems.iter().copied().filter(|e| !e.is_empty()).collect();
    if nonempty.is_empty() {
        return String::new();
    }
    go_clean(&nonempty.join("/"))
}

/// The socket path for the shim of `id` in `namespace` under containerd at
/// `containerd_address`: [`SOCKET_DIR`]`/<hex sha256 of filepath.Join(address, namespace, id)>`,
/// byte for byte what containerd's Go shims compute (so the path is always 82 bytes long).
pub fn socket_path(containerd_address: &str, namespace: &str, id: &str) -> PathBuf {
    socket_path_in(Path::new(SOCKET_DIR), containerd_address, namespace, id)
}

/// Like [`socket_path`], under `dir` instead of [`SOCKET_DIR`] (for a non-default state
/// directory, and for tests).
pub fn socket_path_in(dir: &Path, containerd_address: &str, namespace: &str, id: &str) -> PathBuf {
    let joined = go_join(&[containerd_address, namespace, id]);
    let digest = Sha256::digest(joined.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(hex)
}

/// Name of the symlink in a bundle that points at the socket directory containerd chose
/// (`socket_dir` of the bootstrap parameters), as containerd's Go shim library leaves it, so
/// that whoever cleans up after the shim (the server at exit, `delete` after a crash) finds the
/// socket without the parameters.
pub const SOCKET_DIR_LINK: &str = "s";

/// Points `<bundle>/s` at `socket_dir`, replacing whatever was there.
pub fn write_socket_dir_link(bundle: &Path, socket_dir: &Path) -> Result<(), AddressError> {
    let link = bundle.join(SOCKET_DIR_LINK);
    match fs::remove_file(&link) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove old socket dir link", &link)(e)),
    }
    std::os::unix::fs::symlink(socket_dir, &link).map_err(io_err("symlink", &link))
}

/// The socket directory recorded in `<bundle>/s`, or [`SOCKET_DIR`] when there is no such
/// link (a bundle started by containerd before 2.3, or without `socket_dir`).
pub fn socket_dir_of(bundle: &Path) -> PathBuf {
    match fs::read_link(bundle.join(SOCKET_DIR_LINK)) {
        Ok(dir) if !dir.as_os_str().is_empty() => dir,
        _ => PathBuf::from(SOCKET_DIR),
    }
}

/// The address to print on `start`: `"unix://"` followed by `path` (lossily as UTF-8; shim
/// paths are ASCII).
pub fn socket_uri(path: &Path) -> String {
    format!("unix://{}", path.to_string_lossy())
}

/// The filesystem path of a socket address: `unix:///x` or a plain path `/x` gives `/x`.
///
/// Refuses, with a message naming the address: an empty path, abstract sockets
/// (`unix://@x`, `@x`), other schemes (`vsock://…`), paths with a NUL byte. A relative path is
/// returned as it is (the Go shim does the same). Note that Go's shim would take a plain
/// path without `unix://` for an abstract socket name; tether has no abstract sockets and
/// takes it for a file.
pub fn parse_uri(s: &str) -> Result<PathBuf, AddressError> {
    let path = match s.split_once("://") {
        Some(("unix", rest)) => rest,
        Some((scheme, _)) => {
            return Err(AddressError::UnsupportedScheme {
                scheme: scheme.to_owned(),
                address: s.to_owned(),
            })
        }
        None => s,
    };
    if path.is_empty() {
        return Err(AddressError::Empty);
    }
    if path.starts_with('@') || path.starts_with('\0') {
        return Err(AddressError::Abstract(s.to_owned()));
    }
    if path.contains('\0') {
        return Err(AddressError::Nul(s.to_owned()));
    }
    Ok(PathBuf::from(path))
}

/// Prepares the directory that will hold a socket.
///
/// A missing `dir` is created, with missing parents, mode 0700 (as Go's
/// `MkdirAll(dir, 0700)`), and then held to the rules below. An existing `dir` is held to them
/// only when it is `dedicated` (the shared [`SOCKET_DIR`]): it must be owned by our effective
/// uid and is narrowed to 0700. Any other existing directory (one an explicit `-socket` points
/// into, such as a bundle directory that must stay 0711, or `/tmp`) is used as it is: it is
/// not ours to chmod.
fn prepare_dir(dir: &Path, dedicated: bool) -> Result<(), AddressError> {
    let existed = fs::symlink_metadata(dir).is_ok();
    if !existed {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("mkdir", dir))?;
    } else if !dedicated {
        return Ok(());
    }
    let meta = fs::metadata(dir).map_err(io_err("stat", dir))?;
    let us = nix::unistd::geteuid().as_raw();
    if meta.uid() != us {
        return Err(AddressError::ForeignDir {
            path: dir.to_path_buf(),
            owner: meta.uid(),
            us,
        });
    }
    // An odd umask may have left a new directory without its search bit, or the shared
    // directory predates us with a wider mode: other users must not be able to list or
    // replace shim sockets.
    if meta.mode() & 0o7777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod", dir))?;
    }
    Ok(())
}

/// Whether something accepts connections on the socket at `path`. The probe is non-blocking
/// so a listener with a full backlog (EAGAIN) counts as alive instead of stalling us.
fn is_live(path: &Path) -> Result<bool, AddressError> {
    let addr = UnixAddr::new(path)
        .map_err(|e| AddressError::Io(fifo::Error::io("socket address", path, e.into())))?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| AddressError::Io(fifo::Error::io("socket", path, e.into())))?;
    // The probe descriptor is an OwnedFd and closes when this function returns.
    match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
        Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINPROGRESS) => Ok(true),
        Err(Errno::ECONNREFUSED) | Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(AddressError::Io(fifo::Error::io("connect", path, e.into()))),
    }
}

/// Creates and binds the listening socket at `path`.
///
/// Promises:
/// * a missing parent directory is created with mode 0700; the shared [`SOCKET_DIR`], when it
///   exists already, must be owned by us ([`AddressError::ForeignDir`]) and is narrowed to
///   0700; any other existing parent is used as it is;
/// * a path longer than [`MAX_SOCKET_PATH`] bytes is refused with [`AddressError::TooLong`]
///   before anything is created;
/// * an existing socket file is removed only when nothing listens on it (a stale socket left
///   by a dead shim); if something does, [`AddressError::InUse`]; a non-socket file there is
///   left alone ([`AddressError::NotASocket`]);
/// * the socket file gets mode 0600 (as containerd's current Go shim does): only its owner,
///   containerd running as the same user, may connect;
/// * the listener is close-on-exec (std's default) and blocking: the caller decides.
pub fn bind_socket(path: &Path) -> Result<UnixListener, AddressError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(AddressError::TooLong {
            path: path.to_path_buf(),
            len,
            max: MAX_SOCKET_PATH,
        });
    }
    if len == 0 {
        return Err(AddressError::Empty);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        prepare_dir(parent, parent == Path::new(SOCKET_DIR))?;
    }

    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if is_live(path)? {
                return Err(AddressError::InUse(path.to_path_buf()));
            }
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove stale socket", path)(e)),
            }
        }
        Ok(_) => return Err(AddressError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("stat", path)(e)),
    }

    let listener = UnixListener::bind(path).map_err(|e| {
        // Another shim bound it between our check and our bind.
        if e.kind() == io::ErrorKind::AddrInUse {
            AddressError::InUse(path.to_path_buf())
        } else {
            io_err("bind", path)(e)
        }
    })?;
    if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(0o600)) {
        drop(listener);
        remove_socket(path);
        return Err(io_err("chmod", path)(e));
    }
    Ok(listener)
}

/// Removes the socket file at `path`. Idempotent: a missing file is not an error. Other
/// failures are logged (there is nothing a caller shutting down could do about them).
pub fn remove_socket(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("cannot remove socket {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn known_hash() {
        // printf '%s' '/run/containerd/containerd.sock/default/abc' | sha256sum
        let want =
            "/run/containerd/s/8cb244a719603fe00870d5ce1d8e1f1db43a654cb993d107df1f1ae23ddffa59";
        assert_eq!(
            socket_path("/run/containerd/containerd.sock", "default", "abc"),
            PathBuf::from(want)
        );
        // Join cleans first, so these spell the same path.
        assert_eq!(
            socket_path("/run/containerd//containerd.sock/", "default/", "./abc"),
            PathBuf::from(want)
        );
        assert_eq!(
            socket_path("/run/containerd/x/../containerd.sock", "", "default/abc"),
            PathBuf::from(want)
        );
        // printf '%s' '/run/containerd/containerd.sock/k8s.io/x/y' | sha256sum
        assert_eq!(
            socket_path("/run/containerd/containerd.sock", "k8s.io", "x/y"),
            PathBuf::from(
                "/run/containerd/s/6b2e6094db29f13ca02acbd7873f6fc9af05d8dbcb5c9551355cd46f0b2db74d"
            )
        );
        assert_eq!(
            socket_uri(&socket_path(
                "/run/containerd/containerd.sock",
                "default",
                "abc"
            )),
            format!("unix://{want}")
        );
    }

    #[test]
    fn socket_dir_link_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        // No link: the default directory.
        assert_eq!(socket_dir_of(tmp.path()), PathBuf::from(SOCKET_DIR));
        write_socket_dir_link(tmp.path(), Path::new("/tmp/tether-s")).unwrap();
        assert_eq!(socket_dir_of(tmp.path()), PathBuf::from("/tmp/tether-s"));
        // Replaced, not refused, when start runs again in the same bundle.
        write_socket_dir_link(tmp.path(), Path::new("/run/x/s")).unwrap();
        assert_eq!(socket_dir_of(tmp.path()), PathBuf::from("/run/x/s"));
        assert!(fs::symlink_metadata(tmp.path().join("s"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn go_join_and_clean() {
        for (elems, want) in [
            (&["/a", "b", "c"][..], "/a/b/c"),
            (&["/a/", "/b/", "c/"], "/a/b/c"),
            (&["a//b", ".", "c"], "a/b/c"),
            (&["/a/b", "..", "c"], "/a/c"),
            (&["/", "..", "x"], "/x"),
            (&["a", "../..", "b"], "../b"),
            (&["a", ".."], "."),
            (&["", "", ""], ""),
            (&["", "/x", ""], "/x"),
            (&["/"], "/"),
            (&["/", ""], "/"),
            (&["..", "a"], "../a"),
            (&["a/./b/./"], "a/b"),
        ] {
            assert_eq!(go_join(elems), want, "{elems:?}");
        }
        assert_eq!(go_clean(""), ".");
        assert_eq!(go_clean("//"), "/");
        assert_eq!(go_clean("/../.."), "/");
        assert_eq!(go_clean("../../a/.."), "../..");
    }

    #[test]
    fn parse_uris() {
        assert_eq!(parse_uri("unix:///x/y").ok(), Some(PathBuf::from("/x/y")));
        assert_eq!(parse_uri("/x/y").ok(), Some(PathBuf::from("/x/y")));
        assert_eq!(parse_uri("rel").ok(), Some(PathBuf::from("rel")));
        assert!(matches!(parse_uri(""), Err(AddressError::Empty)));
        assert!(matches!(parse_uri("unix://"), Err(AddressError::Empty)));
        assert!(matches!(
            parse_uri("unix://@abstract"),
            Err(AddressError::Abstract(_))
        ));
        assert!(matches!(
            parse_uri("@abstract"),
            Err(AddressError::Abstract(_))
        ));
        assert!(matches!(
            parse_uri("unix:///a\0b"),
            Err(AddressError::Nul(_))
        ));
        let e = parse_uri("vsock://3:1024").unwrap_err();
        assert!(e.to_string().contains("vsock"), "{e}");
        assert!(matches!(e, AddressError::UnsupportedScheme { .. }));
        assert!(parse_uri("tcp://127.0.0.1:1").is_err());
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn bind_creates_private_dir_and_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run/s");
        let sock = socket_path_in(&dir, "/run/containerd/containerd.sock", "default", "abc");
        let l = bind_socket(&sock).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("run")), 0o700);
        assert_eq!(mode(&sock), 0o600);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&l);
        let fl = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(fl & libc::O_NONBLOCK, 0, "listener must be blocking");
        let fdfl = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(fdfl & libc::FD_CLOEXEC, 0, "listener must be close-on-exec");
        UnixStream::connect(&sock).unwrap();
        drop(l);
        remove_socket(&sock);
        assert!(!sock.exists());
        remove_socket(&sock); // idempotent
    }

    #[test]
    fn dedicated_dir_is_narrowed_to_0700_other_dirs_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)).unwrap();
        // An existing directory that is not the shared socket directory: not ours to chmod.
        let _l = bind_socket(&dir.join("sock")).unwrap();
        assert_eq!(mode(&dir), 0o711);
        // The shared socket directory is narrowed.
        prepare_dir(&dir, true).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn stale_socket_is_replaced_live_one_is_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("s/sock");
        let first = bind_socket(&sock).unwrap();
        // Live: the first listener still accepts connections.
        assert!(matches!(bind_socket(&sock), Err(AddressError::InUse(p)) if p == sock));
        // Closing the listener leaves the file behind: stale, so it is replaced.
        drop(first);
        assert!(sock.exists());
        let second = bind_socket(&sock).unwrap();
        UnixStream::connect(&sock).unwrap();
        drop(second);
    }

    #[test]
    fn foreign_dedicated_dir_is_refused() {
        if test_skip::unless_root() {
            return; // only root can give a directory away
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(54321), None).unwrap();
        let e = prepare_dir(&dir, true).unwrap_err();
        assert!(
            matches!(e, AddressError::ForeignDir { owner: 54321, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("uid 54321"), "{e}");
    }

    #[test]
    fn non_socket_file_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("file");
        fs::write(&path, b"x").unwrap();
        assert!(matches!(
            bind_socket(&path),
            Err(AddressError::NotASocket(_))
        ));
        assert_eq!(fs::read(&path).unwrap(), b"x");
    }

    #[test]
    fn too_long_path_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let long = tmp.path().join("d".repeat(120));
        let e = bind_socket(&long).unwrap_err();
        assert!(matches!(e, AddressError::TooLong { max: 107, .. }), "{e}");
        assert!(e.to_string().contains("more than the 107"), "{e}");
        // Nothing was created.
        assert!(!long.exists());
        // Exactly 107 bytes is accepted by the check (and by the kernel).
        let base = tmp.path().as_os_str().len() + 1;
        if base < MAX_SOCKET_PATH {
            let fit = tmp.path().join("e".repeat(MAX_SOCKET_PATH - base));
            assert_eq!(fit.as_os_str().len(), MAX_SOCKET_PATH);
            let _l = bind_socket(&fit).unwrap();
        }
    }
}

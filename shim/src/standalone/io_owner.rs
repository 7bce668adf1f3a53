//! `run`/`exec --io-uid UID --io-gid GID`: a process directory that a manager running as
//! that user, without root, can attach to, resize, close stdin and wait on.
//!
//! The contract (DESIGN.md, the process directory) gives the stdio FIFOs to IoUid/IoGid
//! with mode 0600. Those alone are not enough: the directory is 0700 root, so the manager
//! could not even reach them, nor wait. What it gets, and why no more:
//!
//! | entry | owner | mode | why |
//! |---|---|---|---|
//! | `stdin` `stdout` `stderr` | UID:GID | 0600 | its streams (the contract) |
//! | `winsz` | UID:GID | 0600 | resizing is part of attaching (the `fifo` crate gives it with the stdio) |
//! | `control` | UID:GID | 0600 | `close-stdin` is a request about the manager's own stdin |
//! | `exit` | creator (root):GID | 0640 | waiting is reading it to EOF; no write end, since any writer but the supervisor would keep every waiter from seeing EOF |
//! | the directory | creator (root):GID | 0710 | it opens the names it knows (`exitcode`, 0644, and the `tty` marker too) but cannot list, create, rename or remove entries: root (the supervisor, runc) writes `exitcode`, `pidfile`, `log.json` and `supervisor.pid` there, and whoever could swap them for symlinks would steer root's writes |
//!
//! Hence the manager runs as UID with GID among its groups, and the two flags go together
//! (the directory and `exit` are reached through the group, the streams through the
//! owner; one without the other grants nothing usable). `--io-uid 0 --io-gid 0` is the
//! layout without the flags: root owns everything already. The directories above the
//! process directory must be searchable by the manager as well: `run` creates the
//! container's and its `processes/` 0711, and the depot 0711 when it does not exist yet;
//! the parents of an existing depot are the operator's.
//!
//! `control` must carry only requests about the stdio: one that is more (a signal, say)
//! would need a FIFO of its own, kept from this user.

use super::args::Parsed;
use super::errors::{CliError, CliResult};
use fifo::{PinnedDir, ProcessDir, ProcessDirOptions};
use std::ffi::OsString;
use std::path::Path;

/// The options, as `args::Spec::valued` entries (no short aliases).
pub const UID_FLAG: &str = "--io-uid";
/// See [`UID_FLAG`].
pub const GID_FLAG: &str = "--io-gid";

/// The paragraph `run --help` and `exec --help` add.
pub const HELP: &str = "\
--io-uid UID --io-gid GID (numeric, given together): the process directory is made for a
manager that runs as UID with GID among its groups, without root: the FIFOs stdin stdout
stderr winsz control are owned by UID:GID (mode 0600), `exit` can be read by GID (0640,
to wait), and GID can traverse the directory (0710) to open those and read `exitcode`,
but not list or change it. The directories above it must be searchable by the manager.";

/// The largest id accepted: `(uid_t)-1` means "leave unchanged" to chown.
const MAX_ID: u32 = u32::MAX - 1;
/// The directory's mode with an owner: the group may traverse, nothing more.
const DIR_MODE: u32 = 0o710;
/// The `exit` FIFO's mode with an owner: the group may read (wait), not write.
const EXIT_MODE: u32 = 0o640;

/// The user and group a process's stdio belongs to (`--io-uid`, `--io-gid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoOwner {
    /// Owner of the FIFOs the manager streams through.
    pub uid: u32,
    /// Their group, and the group that may traverse the directory and read `exit`.
    pub gid: u32,
}

impl IoOwner {
    /// The owner `--io-uid`/`--io-gid` ask for in `p`: `None` when neither is given, or
    /// both are 0. A usage error when only one is given, or when a value is not a decimal
    /// number from 0 to 4294967294 (names are not looked up).
    pub fn from_args(p: &Parsed) -> CliResult<Option<Self>> {
        let uid = p
            .value(UID_FLAG)
            .map(|v| parse_id(UID_FLAG, v))
            .transpose()?;
        let gid = p
            .value(GID_FLAG)
            .map(|v| parse_id(GID_FLAG, v))
            .transpose()?;
        match (uid, gid) {
            (None, None) | (Some(0), Some(0)) => Ok(None),
            (Some(uid), Some(gid)) => Ok(Some(IoOwner { uid, gid })),
            (Some(_), None) | (None, Some(_)) => Err(CliError::Usage(format!(
                "{UID_FLAG} and {GID_FLAG} go together: the manager reaches the directory \
                 through the group and its streams as the owner"
            ))),
        }
    }

    /// `(uid, gid)`, as the `fifo` crate takes an owner.
    pub fn pair(self) -> (u32, u32) {
        (self.uid, self.gid)
    }

    /// The options that give this owner to another command line (the supervisor's), read
    /// back by [`IoOwner::from_args`].
    pub fn to_args(self) -> [OsString; 4] {
        [
            UID_FLAG.into(),
            self.uid.to_string().into(),
            GID_FLAG.into(),
            self.gid.to_string().into(),
        ]
    }
}

/// `value` as an id, or a usage error naming `flag`.
fn parse_id(flag: &str, value: &str) -> CliResult<u32> {
    let bad = || {
        CliError::Usage(format!(
            "{flag} {value:?}: expected a number from 0 to {MAX_ID} (a numeric id, not a name)"
        ))
    };
    // Digits only: `parse` would also take a sign.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value
        .parse::<u32>()
        .ok()
        .filter(|n| *n <= MAX_ID)
        .ok_or_else(bad)
}

/// Creates the process directory `parent/id` (see [`ProcessDir::create`], whose errors it
/// returns): without an owner exactly as the contract's default (everything the caller's,
/// FIFOs 0600, directory 0700); with one, opened to it as the module's table says. On any
/// failure nothing is left behind.
pub fn create_process_dir(
    parent: &Path,
    id: &str,
    owner: Option<IoOwner>,
) -> fifo::Result<ProcessDir> {
    let opts = ProcessDirOptions {
        fifo_mode: 0,
        // stdin, stdout, stderr and winsz.
        owner: owner.map(IoOwner::pair),
    };
    let dir = ProcessDir::create(parent, id, &opts)?;
    if let Some(owner) = owner {
        if let Err(e) = open_to_group(&dir, owner.gid) {
            if let Err(cleanup) = dir.remove() {
                log::warn!(
                    "after failing to set up {}: {cleanup}",
                    dir.path().display()
                );
            }
            return Err(e);
        }
    }
    Ok(dir)
}

/// Lets `gid` read `exit` and traverse the directory; their owner stays the creator.
/// Done through a descriptor of the directory: nothing is re-resolved by path.
fn open_to_group(dir: &ProcessDir, gid: u32) -> fifo::Result<()> {
    let creator = nix::unistd::geteuid().as_raw();
    let pinned = PinnedDir::open(dir.path())?;
    // On an existing FIFO `create` only re-owns and re-modes it, never through a symlink.
    fifo::create(
        &pinned.path().join(fifo::EXIT),
        EXIT_MODE,
        Some((creator, gid)),
    )?;
    pinned.chown(None, Some(gid))?;
    // After the chown, which may clear mode bits.
    pinned.chmod(DIR_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standalone::args::{self, Spec};
    use crate::standalone::errors::EXIT_USAGE;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    const SPEC: Spec = Spec {
        valued: &[(UID_FLAG, None), (GID_FLAG, None)],
        flags: &[],
    };

    fn owner(argv: &[&str]) -> CliResult<Option<IoOwner>> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        IoOwner::from_args(&args::parse(&argv, SPEC)?)
    }

    fn usage_error(argv: &[&str]) -> String {
        match owner(argv) {
            Err(e) => {
                assert_eq!(e.exit_code(), EXIT_USAGE, "{argv:?}: {e}");
                e.to_string()
            }
            Ok(o) => panic!("{argv:?} accepted: {o:?}"),
        }
    }

    #[test]
    fn both_flags_give_an_owner() {
        assert_eq!(
            owner(&["--io-uid", "1234", "--io-gid", "5678"]).unwrap(),
            Some(IoOwner {
                uid: 1234,
                gid: 5678
            })
        );
        assert_eq!(
            owner(&["--io-gid=7", "--io-uid=0"]).unwrap(),
            Some(IoOwner { uid: 0, gid: 7 })
        );
        assert_eq!(
            owner(&["--io-uid", "4294967294", "--io-gid", "00042"]).unwrap(),
            Some(IoOwner {
                uid: MAX_ID,
                gid: 42
            })
        );
    }

    #[test]
    fn none_or_root_is_the_default_layout() {
        assert_eq!(owner(&[]).unwrap(), None);
        assert_eq!(owner(&["--io-uid", "0", "--io-gid", "0"]).unwrap(), None);
    }

    #[test]
    fn rejects_non_numeric_and_out_of_range_values() {
        for bad in ["abc", "", "-1", "+5", "12a", " 12", "1e3", "0x10", "nobody"] {
            let msg = usage_error(&["--io-uid", bad, "--io-gid", "1"]);
            assert!(msg.contains("--io-uid") && msg.contains("number"), "{msg}");
            let msg = usage_error(&["--io-uid", "1", "--io-gid", bad]);
            assert!(msg.contains("--io-gid"), "{msg}");
        }
        // (uid_t)-1 would mean "unchanged" to chown; beyond it does not fit.
        usage_error(&["--io-uid", "4294967295", "--io-gid", "1"]);
        usage_error(&["--io-uid", "1", "--io-gid", "99999999999"]);
    }

    #[test]
    fn one_flag_alone_is_a_usage_error() {
        assert!(usage_error(&["--io-uid", "1234"]).contains("go together"));
        assert!(usage_error(&["--io-gid", "1234"]).contains("go together"));
        // Validation comes first: the value is what is wrong.
        assert!(usage_error(&["--io-uid", "x"]).contains("number"));
    }

    #[test]
    fn run_and_exec_check_the_flags_before_touching_the_depot() {
        use crate::standalone::depot::Depot;
        use crate::standalone::{exec, run};
        let tmp = tempfile::tempdir().unwrap();
        let depot = Depot::new(tmp.path().join("depot"), None, None);
        let argv = |a: &[&str]| -> Vec<String> { a.iter().map(|s| s.to_string()).collect() };
        let bad = ["--io-uid", "abc", "--io-gid", "1"];
        let mut run_argv = argv(&["--bundle", "/nonexistent", "c1"]);
        run_argv.extend(argv(&bad));
        let e = run::main(&depot, &run_argv).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_USAGE, "{e}");
        let mut exec_argv = argv(&["--process", "/nonexistent", "c1", "p1"]);
        exec_argv.extend(argv(&["--io-gid", "7"]));
        let e = exec::main(&depot, &exec_argv).unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
        assert!(!depot.root.exists(), "nothing created");
    }

    #[test]
    fn to_args_round_trips() {
        let o = IoOwner { uid: 12, gid: 34 };
        let argv: Vec<String> = o
            .to_args()
            .iter()
            .map(|a| a.to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            IoOwner::from_args(&args::parse(&argv, SPEC).unwrap()).unwrap(),
            Some(o)
        );
    }

    #[test]
    fn without_an_owner_the_directory_is_the_default() {
        let parent = tempfile::tempdir().unwrap();
        let dir = create_process_dir(parent.path(), "p", None).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let meta = std::fs::metadata(dir.path()).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (me, 0o700));
        for p in [
            dir.stdin(),
            dir.stdout(),
            dir.stderr(),
            dir.winsz(),
            dir.exit(),
        ] {
            let meta = std::fs::symlink_metadata(&p).unwrap();
            assert_eq!((meta.uid(), meta.mode() & 0o7777), (me, 0o600), "{p:?}");
        }
    }

    #[test]
    fn an_owner_gets_its_streams_and_the_group_the_rest() {
        if test_skip::unless_root() {
            return; // chown
        }
        let parent = tempfile::tempdir().unwrap();
        let o = IoOwner {
            uid: 1234,
            gid: 2345,
        };
        let dir = create_process_dir(parent.path(), "p", Some(o)).unwrap();
        let stat = |p: &Path| {
            let m = std::fs::symlink_metadata(p).unwrap();
            (m.uid(), m.gid(), m.mode() & 0o7777)
        };
        assert_eq!(stat(dir.path()), (0, 2345, 0o710));
        for p in [dir.stdin(), dir.stdout(), dir.stderr(), dir.winsz()] {
            assert_eq!(stat(&p), (1234, 2345, 0o600), "{p:?}");
            assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_fifo());
        }
        assert_eq!(stat(&dir.exit()), (0, 2345, 0o640));
    }

    #[test]
    fn failures_leave_nothing() {
        let parent = tempfile::tempdir().unwrap();
        std::fs::create_dir(parent.path().join("taken")).unwrap();
        let o = Some(IoOwner { uid: 1, gid: 1 });
        assert!(matches!(
            create_process_dir(parent.path(), "taken", o),
            Err(fifo::Error::AlreadyExists { .. })
        ));
        assert!(create_process_dir(&parent.path().join("missing"), "p", o).is_err());
        let names: Vec<_> = std::fs::read_dir(parent.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the pre-existing directory");
    }
}

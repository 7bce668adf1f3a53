//! Launching a process with runc: the one sequence both faces use.
//!
//! A launch is: a console socket when the process has a terminal → `runc create`, `run
//! --detach`, `exec --detach` or `restore --detach` with a pid file → the pid read from
//! that file → a pidfd opened on it → the pty master received from runc. It gives back a
//! [`Launched`] process that undoes itself when dropped before [`Launched::commit`]: a
//! container it made is deleted (`runc delete --force`), an exec it started is killed. A
//! failed runc invocation itself leaves nothing either: runc's half-made container is
//! deleted, unless runc refused because the id is taken (the container is someone else's).
//!
//! What stays with the caller: where the process's stdio leads (it passes the process's
//! ends as a [`ProcessIo`] and wires the master it gets back), which runc (binary, root,
//! log, the reaper's monitor) and where the pid file goes, and what a failure means to
//! its own callers ([`LaunchError`] keeps runc's error typed for that).

use crate::process_core::pidfd;
use runc_wrapper::{ConsoleSocket, CreateOpts, ErrorKind, ExecOpts, ProcessIo, RestoreOpts, Runc};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long runc gets to hand the pty master over. runc has sent it by the time its
/// `create`/`exec`/`restore` returns (the receive comes after), so this bounds only a
/// runc that never sends one.
pub const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a container is made (runc's flags of the same names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerFlags {
    /// `--no-pivot`: the rootfs is entered with `chroot`, not `pivot_root`.
    pub no_pivot: bool,
    /// `--no-new-keyring`: the process keeps the caller's session keyring.
    pub no_new_keyring: bool,
}

/// What to launch.
#[derive(Debug, Clone, Copy)]
pub enum Launch<'a> {
    /// A container's init, created from `bundle` (`runc create`): it runs once started
    /// ([`Launched::start`], or later `runc start`).
    Init {
        bundle: &'a Path,
        flags: ContainerFlags,
    },
    /// A container created and started at once (`runc run --detach`).
    Run {
        bundle: &'a Path,
        flags: ContainerFlags,
    },
    /// A process in a running container (`runc exec --detach`): `spec` is its OCI process
    /// as JSON, written to a temporary file in `spec_dir` (default: the temp dir).
    Exec {
        spec: &'a [u8],
        spec_dir: Option<&'a Path>,
    },
    /// A checkpointed container restored from `image` (`runc restore --detach`), criu's
    /// work files in `work`. runc restore has no `--no-new-keyring`.
    Restore {
        bundle: &'a Path,
        image: &'a Path,
        work: &'a Path,
        no_pivot: bool,
    },
}

impl Launch<'_> {
    /// Whether the launch makes a container (undone by deleting it) rather than a process
    /// in one (undone by killing it).
    fn makes_container(&self) -> bool {
        !matches!(self, Launch::Exec { .. })
    }
}

/// The process's side of a launch: its stdio and where runc writes its pid.
#[derive(Debug, Default)]
pub struct LaunchIo {
    /// The process's stdio as runc passes it on (without a terminal; with one, runc's).
    pub io: ProcessIo,
    /// Whether the process gets a terminal: its master comes back in [`Launched`].
    pub terminal: bool,
    /// The pid file runc writes (a stale one is removed first).
    pub pid_file: PathBuf,
}

/// Why a launch failed. Whatever it had made is undone by then.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The console socket for a terminal could not be made.
    #[error("terminal: {0}")]
    ConsoleSocket(runc_wrapper::Error),
    /// runc failed (create, run, exec, restore or start): runc's own error, typed.
    #[error(transparent)]
    Runc(runc_wrapper::Error),
    /// runc did not hand the pty master over.
    #[error("terminal: {0}")]
    Terminal(runc_wrapper::Error),
    /// runc succeeded but wrote no pid file.
    #[error("runc wrote no pid file at {}", .0.display())]
    NoPidFile(PathBuf),
    /// The pid file could not be read.
    #[error(transparent)]
    PidFile(fifo::Error),
}

/// Launches `what` as the runc container (or in the container) `id`.
///
/// On success the process exists (a created or running container's init, or a running
/// exec), its pid is known and, with a terminal, its master has arrived. On failure
/// nothing is left (see the module's doc).
pub fn launch(
    runc: &Runc,
    id: &str,
    what: Launch<'_>,
    io: LaunchIo,
) -> Result<Launched, LaunchError> {
    let LaunchIo {
        io,
        terminal,
        pid_file,
    } = io;
    // The pid read below must be this launch's.
    let _ = std::fs::remove_file(&pid_file);
    let console = if terminal {
        Some(ConsoleSocket::new().map_err(LaunchError::ConsoleSocket)?)
    } else {
        None
    };
    let console_socket = console.as_ref().map(|c| c.path().to_path_buf());
    let pid_file_opt = Some(pid_file.clone());
    let ran = match what {
        Launch::Init { bundle, flags } | Launch::Run { bundle, flags } => {
            let opts = CreateOpts {
                pid_file: pid_file_opt,
                console_socket,
                no_pivot: flags.no_pivot,
                no_new_keyring: flags.no_new_keyring,
                // `create` returns once created anyway; `run` must not wait for the exit.
                detach: true,
                io,
                ..Default::default()
            };
            if let Launch::Init { .. } = what {
                runc.create(id, bundle, opts)
            } else {
                runc.run(id, bundle, opts).map(drop)
            }
        }
        Launch::Exec { spec, spec_dir } => runc.exec(
            id,
            spec,
            ExecOpts {
                pid_file: pid_file_opt,
                console_socket,
                detach: true,
                io,
                process_dir: spec_dir.map(Path::to_path_buf),
                ..Default::default()
            },
        ),
        Launch::Restore {
            bundle,
            image,
            work,
            no_pivot,
        } => runc
            .restore(
                id,
                bundle,
                RestoreOpts {
                    image_path: image.to_path_buf(),
                    work_path: Some(work.to_path_buf()),
                    detach: true,
                    pid_file: pid_file_opt,
                    no_pivot,
                    console_socket,
                    io,
                    ..Default::default()
                },
            )
            .map(drop),
    };
    let undo = if what.makes_container() {
        Undo::Delete
    } else {
        Undo::Kill
    };
    if let Err(e) = ran {
        // A container runc half-made goes again; one whose id was taken is not ours.
        if undo == Undo::Delete && e.kind() != ErrorKind::AlreadyExists {
            delete(runc, id);
        }
        return Err(LaunchError::Runc(e));
    }
    // From here on, dropping `launched` undoes the launch.
    let mut launched = Launched {
        runc: runc.clone(),
        id: id.to_string(),
        pid: 0,
        pidfd: None,
        pidfds_unsupported: false,
        master: None,
        undo: Some(undo),
    };
    launched.pid = match fifo::read_pid_file(&pid_file) {
        Ok(Some(pid)) => pid,
        Ok(None) => return Err(LaunchError::NoPidFile(pid_file)),
        Err(e) => return Err(LaunchError::PidFile(e)),
    };
    match pidfd::open(launched.pid) {
        Ok(fd) => launched.pidfd = Some(fd),
        Err(e) => launched.pidfds_unsupported = e.raw_os_error() == Some(libc::ENOSYS),
    }
    if let Some(console) = &console {
        let master = console
            .receive_master(CONSOLE_TIMEOUT)
            .map_err(LaunchError::Terminal)?;
        launched.master = Some(master);
    }
    Ok(launched)
}

/// How a launch is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Undo {
    /// `runc delete --force` the container it made.
    Delete,
    /// SIGKILL the process it started.
    Kill,
}

/// A launched process, undone when dropped until [`Launched::commit`] keeps it.
#[derive(Debug)]
pub struct Launched {
    runc: Runc,
    id: String,
    pid: i32,
    pidfd: Option<OwnedFd>,
    /// `pidfd_open` does not exist here (kernel < 5.3): the undo kills by pid.
    pidfds_unsupported: bool,
    master: Option<OwnedFd>,
    undo: Option<Undo>,
}

impl Launched {
    /// The process's pid (from runc's pid file).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A pidfd of the process, opened as soon as its pid was read; `None` when it had
    /// exited and been reaped already, or without pidfds.
    ///
    /// A caller whose reaper runs while the launch does must drop it if it finds that the
    /// pid was reaped before (the pid may have been recycled then); one whose reaper
    /// does not run meanwhile (the process is its unreaped child) can keep it as it is.
    pub fn pidfd(&self) -> Option<&OwnedFd> {
        self.pidfd.as_ref()
    }

    /// The pty master of a process launched with a terminal (once: it is moved out).
    pub fn take_master(&mut self) -> Option<OwnedFd> {
        self.master.take()
    }

    /// Starts a created init (`runc start`); a failure still undoes the launch on drop.
    pub fn start(&self) -> Result<(), LaunchError> {
        self.runc.start(&self.id).map_err(LaunchError::Runc)
    }

    /// Keeps the process: nothing is undone any more. Returns what the caller did not
    /// take yet.
    pub fn commit(mut self) -> Committed {
        self.undo = None;
        Committed {
            pid: self.pid,
            pidfd: self.pidfd.take(),
            master: self.master.take(),
        }
    }
}

/// A launched process that is the caller's now.
#[derive(Debug)]
pub struct Committed {
    pub pid: i32,
    pub pidfd: Option<OwnedFd>,
    /// The pty master, unless taken before the commit.
    pub master: Option<OwnedFd>,
}

impl Drop for Launched {
    fn drop(&mut self) {
        match self.undo.take() {
            None => {}
            Some(Undo::Delete) => delete(&self.runc, &self.id),
            Some(Undo::Kill) => {
                // Without pidfds the pid is the only handle; a pid whose pidfd could not
                // be opened for another reason was gone already.
                let sent = if self.pidfd.is_some() || self.pidfds_unsupported {
                    pidfd::signal_process(self.pidfd.as_ref(), self.pid, libc::SIGKILL)
                } else {
                    Ok(())
                };
                if let Err(e) = sent {
                    log::debug!("undo launch of {} pid {}: kill: {e}", self.id, self.pid);
                }
            }
        }
    }
}

/// `runc delete --force id`, best effort (the launch failed already; that error counts).
fn delete(runc: &Runc, id: &str) {
    if let Err(e) = runc.delete(id, true) {
        if !e.is_not_found() {
            log::warn!("undo launch of {id}: runc delete: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    //! The undo paths, against a runc stand-in that records its calls and fails or
    //! succeeds as told (the real sequences run in the integration tests).
    use super::*;
    use std::process::{Child, Command};

    struct Fake {
        dir: tempfile::TempDir,
        runc: Runc,
    }

    impl Fake {
        /// A runc that appends each call's verb and id to `calls` and runs `body` (sh)
        /// with `$VERB`, `$PIDFILE` (the value after `--pid-file`) and `$LOG` set.
        fn new(body: &str) -> Fake {
            let dir = tempfile::tempdir().unwrap();
            let script = dir.path().join("runc");
            let text = format!(
                "#!/bin/sh\nD='{d}'\nLOG=\"$D/log.json\"\nwhile [ $# -gt 0 ]; do case \"$1\" in\n  --log|--log-format|--root) shift 2;;\n  *) break;;\nesac; done\nVERB=$1\nPIDFILE=\nprev=\nfor a in \"$@\"; do [ \"$prev\" = --pid-file ] && PIDFILE=$a; prev=$a; done\neval \"ID=\\${{$#}}\"\necho \"$VERB $ID\" >> \"$D/calls\"\n{body}\n",
                d = dir.path().display()
            );
            // Made executable by another process (`install`): exec'ing a file this one
            // wrote could fail with ETXTBSY while another test thread's fork still holds
            // the write end.
            let source = dir.path().join("runc.sh");
            std::fs::write(&source, text).unwrap();
            let installed = Command::new("install")
                .args(["-m", "0755"])
                .arg(&source)
                .arg(&script)
                .status()
                .unwrap();
            assert!(installed.success());
            let runc = Runc::builder()
                .binary(&script)
                .root(dir.path().join("root"))
                .log(dir.path().join("log.json"))
                .build();
            Fake { dir, runc }
        }

        fn calls(&self) -> Vec<String> {
            std::fs::read_to_string(self.dir.path().join("calls"))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect()
        }

        fn io(&self) -> LaunchIo {
            LaunchIo {
                pid_file: self.dir.path().join("pid"),
                ..Default::default()
            }
        }

        fn exec(&self) -> Launch<'_> {
            Launch::Exec {
                spec: b"{}",
                spec_dir: Some(self.dir.path()),
            }
        }

        fn init(&self) -> Launch<'_> {
            Launch::Init {
                bundle: self.dir.path(),
                flags: ContainerFlags::default(),
            }
        }
    }

    /// runc's error as it logs it.
    fn fails_with(msg: &str) -> String {
        format!("printf '%s\\n' '{{\"level\":\"error\",\"msg\":\"{msg}\"}}' >> \"$LOG\"\nexit 1")
    }

    #[test]
    fn a_failed_create_deletes_what_runc_left() {
        let f = Fake::new(&format!(
            "[ \"$VERB\" = create ] && {{ {}; }}\nexit 0",
            fails_with("mount failed")
        ));
        let e = launch(&f.runc, "c1", f.init(), f.io()).unwrap_err();
        assert!(matches!(e, LaunchError::Runc(_)), "{e}");
        assert_eq!(f.calls(), ["create c1", "delete c1"]);
    }

    #[test]
    fn a_taken_id_is_not_deleted() {
        let f = Fake::new(&format!(
            "[ \"$VERB\" = run ] && {{ {}; }}\nexit 0",
            fails_with("container with given ID already exists")
        ));
        let run = Launch::Run {
            bundle: f.dir.path(),
            flags: ContainerFlags::default(),
        };
        let e = launch(&f.runc, "c1", run, f.io()).unwrap_err();
        let LaunchError::Runc(e) = e else {
            panic!("{e}")
        };
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        assert_eq!(f.calls(), ["run c1"]);
    }

    #[test]
    fn a_container_without_a_pid_file_is_deleted_again() {
        let f = Fake::new("exit 0");
        std::fs::write(f.dir.path().join("pid"), "1\n").unwrap(); // stale: removed first
        let e = launch(&f.runc, "c1", f.init(), f.io()).unwrap_err();
        assert!(matches!(e, LaunchError::NoPidFile(_)), "{e}");
        assert_eq!(f.calls(), ["create c1", "delete c1"]);
    }

    /// A process runc "started": a child of the test, its pid in the pid file.
    fn sleeper() -> Child {
        Command::new("sleep").arg("100").spawn().unwrap()
    }

    fn writes_pid(child: &Child) -> String {
        format!(
            "[ -n \"$PIDFILE\" ] && echo {} > \"$PIDFILE\"\nexit 0",
            child.id()
        )
    }

    #[test]
    fn a_launch_dropped_before_its_commit_is_undone() {
        use std::os::unix::process::ExitStatusExt;
        // An exec is killed.
        let mut child = sleeper();
        let f = Fake::new(&writes_pid(&child));
        let launched = launch(&f.runc, "c1", f.exec(), f.io()).unwrap();
        assert_eq!(launched.pid(), i32::try_from(child.id()).unwrap());
        assert!(launched.pidfd().is_some());
        drop(launched);
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert_eq!(f.calls(), ["exec c1"]);

        // A container is deleted, also when its start failed.
        let mut child = sleeper();
        let f = Fake::new(&format!(
            "[ \"$VERB\" = start ] && {{ {}; }}\n{}",
            fails_with("cannot start"),
            writes_pid(&child)
        ));
        let launched = launch(&f.runc, "c1", f.init(), f.io()).unwrap();
        assert!(matches!(launched.start(), Err(LaunchError::Runc(_))));
        drop(launched);
        assert_eq!(f.calls(), ["create c1", "start c1", "delete c1"]);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_committed_launch_is_kept() {
        let mut child = sleeper();
        let f = Fake::new(&writes_pid(&child));
        let committed = launch(&f.runc, "c1", f.exec(), f.io()).unwrap().commit();
        assert_eq!(committed.pid, i32::try_from(child.id()).unwrap());
        assert!(committed.master.is_none());
        assert_eq!(child.try_wait().unwrap(), None, "still running");
        child.kill().unwrap();
        child.wait().unwrap();
        let launched = launch(&f.runc, "c2", f.init(), f.io()).unwrap();
        launched.commit();
        assert_eq!(f.calls(), ["exec c1", "create c2"]);
    }
}

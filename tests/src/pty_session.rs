//! A client program on a terminal of its own, as a person at a terminal runs it: for
//! clients that insist on a TTY (`nerdctl run -it`, `exec -it`, `attach`), put it in raw
//! mode, forward its size on SIGWINCH and read detach keys from it.
//!
//! [`PtySession::spawn`] opens a pty (24x80), starts the program as the leader of a new
//! session with the pty as its controlling terminal (util-linux's `setsid --ctty`, so no
//! code of ours runs between fork and exec) and reads everything it shows on a thread.
//! [`PtySession::resize`] changes the terminal's size with `stty` on the pty, which makes
//! the kernel send SIGWINCH to the program, as a terminal window does. Dropping the session
//! kills the program.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A program running on a pty. See the module docs.
pub struct PtySession {
    child: Child,
    master: File,
    slave_path: PathBuf,
    screen: Arc<Mutex<Vec<u8>>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl PtySession {
    /// Starts `program ARGS…` with `envs` on a new 24x80 pty.
    pub fn spawn<S: AsRef<OsStr>>(program: &OsStr, args: &[S], envs: &[(&str, &str)]) -> Self {
        let size = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave_path = std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd()))
            .expect("the pty's name");
        let slave = File::from(pty.slave);
        let io = |f: &File| Stdio::from(f.try_clone().expect("dup the pty"));
        let mut cmd = Command::new(crate::require::tool("setsid", "util-linux"));
        cmd.args(["--ctty", "--wait"])
            .arg(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(io(&slave))
            .stdout(io(&slave))
            .stderr(io(&slave));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {} on a pty: {e}", program.to_string_lossy()));
        // Only the program holds the slave now: the master reads EIO once it is gone.
        drop(slave);
        let master = File::from(pty.master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut source = master.try_clone().expect("dup the pty master");
        let sink = Arc::clone(&screen);
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = source.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        PtySession {
            child,
            master,
            slave_path,
            screen,
            reader: Some(reader),
        }
    }

    /// Types `keys` (raw bytes: `\r` is Enter, `\x10\x11` is ctrl-p ctrl-q).
    pub fn send(&mut self, keys: &[u8]) {
        self.master.write_all(keys).expect("type on the pty");
    }

    /// Everything shown so far.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// How much has been shown so far: a mark for [`PtySession::wait_for_after`].
    pub fn mark(&self) -> usize {
        self.screen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Waits until what was shown after `mark` contains `needle`; false after `timeout`.
    pub fn wait_for_after(&self, mark: usize, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let screen = self.screen.lock().unwrap_or_else(|p| p.into_inner());
                let tail = String::from_utf8_lossy(&screen[mark.min(screen.len())..]);
                if tail.contains(needle) {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`PtySession::wait_for_after`] from the start.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_after(0, needle, timeout)
    }

    /// Resizes the terminal to `rows` x `cols`: the program gets SIGWINCH.
    pub fn resize(&self, rows: u16, cols: u16) {
        let status = Command::new(crate::require::tool("stty", "coreutils"))
            .arg("-F")
            .arg(&self.slave_path)
            .args(["rows", &rows.to_string(), "cols", &cols.to_string()])
            .status()
            .expect("run stty");
        assert!(
            status.success(),
            "stty -F {} failed",
            self.slave_path.display()
        );
    }

    /// Waits for the program to exit, killing it after `timeout`: its exit code (`None`
    /// if killed or signalled) and the whole screen.
    pub fn finish(mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        let code = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status.code(),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break None;
                }
            }
        };
        // The reader ends at EIO once nothing holds the slave (a grandchild may still:
        // then what it shows later is not waited for).
        let until = Instant::now() + Duration::from_secs(2);
        while self.reader.as_ref().is_some_and(|r| !r.is_finished()) && Instant::now() < until {
            thread::sleep(Duration::from_millis(10));
        }
        (code, self.screen())
    }
}

impl Drop for PtySession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
    }
}

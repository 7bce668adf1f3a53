//! The supervisor's own log: `supervisor.log` in its process directory, for what an
//! operator should know but that fails nothing (the OOM score could not be lowered, no
//! keeper could be forked). Warnings only, as logrus text lines (the shim's logger); the
//! file is created on the first line, so most process directories never have one, and
//! it is opened through the pinned directory, never through a symlink.

use crate::logger::{self, Logger};
use log::LevelFilter;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Its name in the process directory.
pub const SUPERVISOR_LOG: &str = "supervisor.log";
/// Its mode (as `exitcode`: a manager that may read the directory may read it).
const MODE: u32 = 0o644;

/// A file opened (append, `O_NOFOLLOW`) on the first write.
struct OnFirstWrite {
    path: PathBuf,
    file: Option<File>,
}

impl Write for OnFirstWrite {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.file.is_none() {
            self.file = Some(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(MODE)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&self.path)?,
            );
        }
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

/// Installs the log for the process directory reached at `dir` (a pinned path); `origin`
/// names it in every line. Best effort: a logger installed already is kept.
pub fn install(dir: &std::path::Path, origin: &std::path::Path) {
    let sink = OnFirstWrite {
        path: dir.join(SUPERVISOR_LOG),
        file: None,
    };
    let fields = vec![("dir".to_string(), origin.display().to_string())];
    if logger::install(Logger::new(Box::new(sink), false, fields)).is_ok() {
        log::set_max_level(LevelFilter::Warn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_appears_on_the_first_line_only() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(SUPERVISOR_LOG);
        let mut sink = OnFirstWrite {
            path: path.clone(),
            file: None,
        };
        sink.flush().unwrap();
        assert!(!path.exists());
        sink.write_all(b"one\n").unwrap();
        sink.write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
    }

    #[test]
    fn a_symlink_in_its_place_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, tmp.path().join(SUPERVISOR_LOG)).unwrap();
        let mut sink = OnFirstWrite {
            path: tmp.path().join(SUPERVISOR_LOG),
            file: None,
        };
        assert!(sink.write_all(b"x").is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }
}

//! Per-verb options and the command-line arguments they turn into.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::io::ProcessIo;

/// Options for `runc create` and `runc run`.
#[derive(Debug, Default)]
pub struct CreateOpts {
    /// `--pid-file`: where runc writes the container's init pid.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`: where runc sends the pty master when the process has a terminal.
    pub console_socket: Option<PathBuf>,
    /// `--no-pivot`.
    pub no_pivot: bool,
    /// `--no-new-keyring`.
    pub no_new_keyring: bool,
    /// `--detach`, for `run` only (`create` is always detached in runc and ignores this).
    pub detach: bool,
    /// runc's stdio, inherited by the container process when it has no terminal.
    pub io: ProcessIo,
    /// Further verb options, passed verbatim after the typed ones and before the container id
    /// (e.g. `["--preserve-fds", "2"]`).
    pub extra_args: Vec<String>,
}

/// Options for `runc exec`.
#[derive(Debug, Default)]
pub struct ExecOpts {
    /// `--pid-file`: where runc writes the new process's pid.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`: where runc sends the pty master when the process has a terminal.
    pub console_socket: Option<PathBuf>,
    /// `--detach`: return once the process started instead of waiting for it.
    pub detach: bool,
    /// runc's stdio, inherited by the process when it has no terminal.
    pub io: ProcessIo,
    /// Directory for the temporary `process.json`; default [`std::env::temp_dir`].
    pub process_dir: Option<PathBuf>,
    /// Further verb options, passed verbatim before the container id (e.g. `["--ignore-paused"]`).
    pub extra_args: Vec<String>,
}

/// Options for `runc checkpoint`.
#[derive(Debug, Default, Clone)]
pub struct CheckpointOpts {
    /// `--image-path` (required: must not be empty).
    pub image_path: PathBuf,
    /// `--work-path`.
    pub work_path: Option<PathBuf>,
    /// `--parent-path`.
    pub parent_path: Option<PathBuf>,
    /// `--leave-running`.
    pub leave_running: bool,
    /// `--tcp-established` (allow open TCP connections).
    pub tcp_established: bool,
    /// `--ext-unix-sk`.
    pub ext_unix_sk: bool,
    /// `--shell-job`.
    pub shell_job: bool,
    /// `--file-locks`.
    pub file_locks: bool,
    /// `--pre-dump`.
    pub pre_dump: bool,
    /// `--manage-cgroups-mode` (`soft`, `full`, `strict`).
    pub manage_cgroups_mode: Option<String>,
    /// `--empty-ns NS`, once per entry.
    pub empty_ns: Vec<String>,
    /// Further verb options, passed verbatim before the container id.
    pub extra_args: Vec<String>,
}

/// Options for `runc restore`.
#[derive(Debug, Default)]
pub struct RestoreOpts {
    /// `--image-path` (required: must not be empty).
    pub image_path: PathBuf,
    /// `--work-path`.
    pub work_path: Option<PathBuf>,
    /// `--detach`: return once restored instead of waiting for the container.
    pub detach: bool,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--no-subreaper`.
    pub no_subreaper: bool,
    /// `--no-pivot`.
    pub no_pivot: bool,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
    /// `--tcp-established`.
    pub tcp_established: bool,
    /// `--ext-unix-sk`.
    pub ext_unix_sk: bool,
    /// `--shell-job`.
    pub shell_job: bool,
    /// `--file-locks`.
    pub file_locks: bool,
    /// `--manage-cgroups-mode` (`soft`, `full`, `strict`).
    pub manage_cgroups_mode: Option<String>,
    /// `--empty-ns NS`, once per entry.
    pub empty_ns: Vec<String>,
    /// runc's stdio, inherited by the restored container when it has no terminal.
    pub io: ProcessIo,
    /// Further verb options, passed verbatim before the container id.
    pub extra_args: Vec<String>,
}

/// Small helpers for building an argv.
pub(crate) trait ArgsExt {
    fn flag(&mut self, name: &str, on: bool);
    fn opt(&mut self, name: &str, value: Option<impl Into<OsString>>);
}

impl ArgsExt for Vec<OsString> {
    fn flag(&mut self, name: &str, on: bool) {
        if on {
            self.push(name.into());
        }
    }

    fn opt(&mut self, name: &str, value: Option<impl Into<OsString>>) {
        if let Some(v) = value {
            self.push(name.into());
            self.push(v.into());
        }
    }
}

fn path_opt(p: &Option<PathBuf>) -> Option<&Path> {
    p.as_deref()
}

impl CreateOpts {
    /// Verb options for `create` (`run == false`) or `run`, bundle first, without the id.
    pub(crate) fn append_args(&self, args: &mut Vec<OsString>, bundle: &Path, run: bool) {
        args.opt("--bundle", Some(bundle));
        args.flag("--detach", run && self.detach);
        args.opt("--pid-file", path_opt(&self.pid_file));
        args.opt("--console-socket", path_opt(&self.console_socket));
        args.flag("--no-pivot", self.no_pivot);
        args.flag("--no-new-keyring", self.no_new_keyring);
        args.extend(self.extra_args.iter().map(OsString::from));
    }
}

impl ExecOpts {
    /// Verb options for `exec`, without the id.
    pub(crate) fn append_args(&self, args: &mut Vec<OsString>, process_file: &Path) {
        args.opt("--process", Some(process_file));
        args.flag("--detach", self.detach);
        args.opt("--pid-file", path_opt(&self.pid_file));
        args.opt("--console-socket", path_opt(&self.console_socket));
        args.extend(self.extra_args.iter().map(OsString::from));
    }
}

impl CheckpointOpts {
    /// Verb options for `checkpoint`, without the id.
    pub(crate) fn append_args(&self, args: &mut Vec<OsString>) {
        args.opt("--image-path", Some(&self.image_path));
        args.opt("--work-path", path_opt(&self.work_path));
        args.opt("--parent-path", path_opt(&self.parent_path));
        args.flag("--leave-running", self.leave_running);
        args.flag("--tcp-established", self.tcp_established);
        args.flag("--ext-unix-sk", self.ext_unix_sk);
        args.flag("--shell-job", self.shell_job);
        args.flag("--file-locks", self.file_locks);
        args.flag("--pre-dump", self.pre_dump);
        args.opt("--manage-cgroups-mode", self.manage_cgroups_mode.as_deref());
        for ns in &self.empty_ns {
            args.opt("--empty-ns", Some(ns));
        }
        args.extend(self.extra_args.iter().map(OsString::from));
    }
}

impl RestoreOpts {
    /// Verb options for `restore`, bundle first, without the id.
    pub(crate) fn append_args(&self, args: &mut Vec<OsString>, bundle: &Path) {
        args.opt("--bundle", Some(bundle));
        args.opt("--image-path", Some(&self.image_path));
        args.opt("--work-path", path_opt(&self.work_path));
        args.flag("--detach", self.detach);
        args.opt("--pid-file", path_opt(&self.pid_file));
        args.flag("--no-subreaper", self.no_subreaper);
        args.flag("--no-pivot", self.no_pivot);
        args.opt("--console-socket", path_opt(&self.console_socket));
        args.flag("--tcp-established", self.tcp_established);
        args.flag("--ext-unix-sk", self.ext_unix_sk);
        args.flag("--shell-job", self.shell_job);
        args.flag("--file-locks", self.file_locks);
        args.opt("--manage-cgroups-mode", self.manage_cgroups_mode.as_deref());
        for ns in &self.empty_ns {
            args.opt("--empty-ns", Some(ns));
        }
        args.extend(self.extra_args.iter().map(OsString::from));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(args: &[OsString]) -> Vec<&str> {
        args.iter().map(|a| a.to_str().unwrap()).collect()
    }

    #[test]
    fn create_defaults_and_all() {
        let mut a = Vec::new();
        CreateOpts::default().append_args(&mut a, Path::new("/b"), false);
        assert_eq!(strs(&a), ["--bundle", "/b"]);

        let opts = CreateOpts {
            pid_file: Some("/p".into()),
            console_socket: Some("/c.sock".into()),
            no_pivot: true,
            no_new_keyring: true,
            detach: true,
            io: ProcessIo::default(),
            extra_args: vec!["--preserve-fds".into(), "1".into()],
        };
        let mut a = Vec::new();
        opts.append_args(&mut a, Path::new("/b"), false);
        assert_eq!(
            strs(&a),
            [
                "--bundle",
                "/b",
                "--pid-file",
                "/p",
                "--console-socket",
                "/c.sock",
                "--no-pivot",
                "--no-new-keyring",
                "--preserve-fds",
                "1"
            ]
        );
        let mut a = Vec::new();
        opts.append_args(&mut a, Path::new("/b"), true);
        assert_eq!(strs(&a)[..3], ["--bundle", "/b", "--detach"]);
    }

    #[test]
    fn exec_args() {
        let mut a = Vec::new();
        ExecOpts::default().append_args(&mut a, Path::new("/t/p.json"));
        assert_eq!(strs(&a), ["--process", "/t/p.json"]);
        let opts = ExecOpts {
            pid_file: Some("/p".into()),
            console_socket: Some("/c".into()),
            detach: true,
            extra_args: vec!["--ignore-paused".into()],
            ..Default::default()
        };
        let mut a = Vec::new();
        opts.append_args(&mut a, Path::new("/t/p.json"));
        assert_eq!(
            strs(&a),
            [
                "--process",
                "/t/p.json",
                "--detach",
                "--pid-file",
                "/p",
                "--console-socket",
                "/c",
                "--ignore-paused"
            ]
        );
    }

    #[test]
    fn checkpoint_args() {
        let mut a = Vec::new();
        CheckpointOpts {
            image_path: "/img".into(),
            ..Default::default()
        }
        .append_args(&mut a);
        assert_eq!(strs(&a), ["--image-path", "/img"]);
        let opts = CheckpointOpts {
            image_path: "/img".into(),
            work_path: Some("/work".into()),
            parent_path: Some("../parent".into()),
            leave_running: true,
            tcp_established: true,
            ext_unix_sk: true,
            shell_job: true,
            file_locks: true,
            pre_dump: true,
            manage_cgroups_mode: Some("soft".into()),
            empty_ns: vec!["network".into(), "ipc".into()],
            extra_args: vec!["--auto-dedup".into()],
        };
        let mut a = Vec::new();
        opts.append_args(&mut a);
        assert_eq!(
            strs(&a),
            [
                "--image-path",
                "/img",
                "--work-path",
                "/work",
                "--parent-path",
                "../parent",
                "--leave-running",
                "--tcp-established",
                "--ext-unix-sk",
                "--shell-job",
                "--file-locks",
                "--pre-dump",
                "--manage-cgroups-mode",
                "soft",
                "--empty-ns",
                "network",
                "--empty-ns",
                "ipc",
                "--auto-dedup"
            ]
        );
    }

    #[test]
    fn restore_args() {
        let mut a = Vec::new();
        RestoreOpts {
            image_path: "/img".into(),
            ..Default::default()
        }
        .append_args(&mut a, Path::new("/b"));
        assert_eq!(strs(&a), ["--bundle", "/b", "--image-path", "/img"]);
        let opts = RestoreOpts {
            image_path: "/img".into(),
            work_path: Some("/w".into()),
            detach: true,
            pid_file: Some("/p".into()),
            no_subreaper: true,
            no_pivot: true,
            console_socket: Some("/c".into()),
            tcp_established: true,
            ext_unix_sk: true,
            shell_job: true,
            file_locks: true,
            manage_cgroups_mode: Some("full".into()),
            empty_ns: vec!["network".into()],
            io: ProcessIo::default(),
            extra_args: vec!["--lazy-pages".into()],
        };
        let mut a = Vec::new();
        opts.append_args(&mut a, Path::new("/b"));
        assert_eq!(
            strs(&a),
            [
                "--bundle",
                "/b",
                "--image-path",
                "/img",
                "--work-path",
                "/w",
                "--detach",
                "--pid-file",
                "/p",
                "--no-subreaper",
                "--no-pivot",
                "--console-socket",
                "/c",
                "--tcp-established",
                "--ext-unix-sk",
                "--shell-job",
                "--file-locks",
                "--manage-cgroups-mode",
                "full",
                "--empty-ns",
                "network",
                "--lazy-pages"
            ]
        );
    }
}

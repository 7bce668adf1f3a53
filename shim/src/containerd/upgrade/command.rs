//! The containerd face's half of the operator's `upgrade` command (`crate::upgrade_command`,
//! which parses the command line and prints the answers of both faces): finds the running
//! tether shims (every process running this binary's server, by its command line in
//! /proc) and asks one to move onto the new binary over its own socket.

use super::protocol::{UpgradeReport, UpgradeRequest, METHOD, SERVICE};
use crate::containerd::flags::{self, Action};
use crate::containerd::ttrpc::codec::{self, MessageType};
use protobuf::Message;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// How much longer than the shim's own bound the command waits for the answer (the dry
/// run, the `execve` and the new image's start).
const ANSWER_SLACK: Duration = Duration::from_secs(30);
/// The name of the binary (its servers' argv[0] ends so).
const BINARY_NAME: &str = "containerd-shim-tether-v2";

/// A running shim server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningShim {
    pub pid: u32,
    pub namespace: String,
    pub id: String,
    pub socket: PathBuf,
}

/// Every running tether shim server, by the command lines in /proc.
pub fn running_shims() -> Vec<RunningShim> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<RunningShim> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv: Vec<String> = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let argv0 = std::path::Path::new(argv.first()?).file_name()?.to_str()?;
            if !argv0.starts_with(BINARY_NAME) {
                return None;
            }
            let (f, action) = flags::parse(&argv[1..]).ok()?;
            if action != Action::Serve {
                return None;
            }
            let socket = match &f.socket {
                Some(s) => crate::containerd::address::parse_uri(s).ok()?,
                None => crate::containerd::address::socket_path(&f.address, &f.namespace, &f.id),
            };
            Some(RunningShim {
                pid,
                namespace: f.namespace,
                id: f.id,
                socket,
            })
        })
        .collect();
    found.sort_by(|a, b| (&a.namespace, &a.id).cmp(&(&b.namespace, &b.id)));
    found
}

/// Why a shim could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the shim: {0}")]
    Io(#[from] std::io::Error),
    #[error("reading the answer: {0}")]
    Frame(#[from] codec::ReadFrameError),
    #[error("the shim answered {code:?}: {message}")]
    Status { code: i32, message: String },
    #[error("the answer is not a report: {0}")]
    Report(String),
}

/// Asks the shim listening on `socket` to upgrade; returns its report.
pub fn ask(socket: &std::path::Path, request: &UpgradeRequest) -> Result<UpgradeReport, AskError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| AskError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    let wait = Duration::from_millis(request.timeout_ms) + ANSWER_SLACK;
    stream.set_read_timeout(Some(wait))?;
    let mut req = ttrpc::proto::Request::new();
    req.service = SERVICE.into();
    req.method = METHOD.into();
    req.payload = serde_json::to_vec(request).map_err(|e| AskError::Report(e.to_string()))?;
    let body = req
        .write_to_bytes()
        .map_err(|e| AskError::Report(e.to_string()))?;
    let frame = codec::frame(1, MessageType::Request, &body)
        .map_err(|e| AskError::Report(e.to_string()))?;
    stream.write_all(&frame)?;
    let (_, body) = codec::read_frame(&mut stream)?;
    let resp = ttrpc::proto::Response::parse_from_bytes(&body)
        .map_err(|e| AskError::Report(e.to_string()))?;
    let code = resp.status.code.value();
    if code != 0 {
        return Err(AskError::Status {
            code,
            message: resp.status.message.clone(),
        });
    }
    serde_json::from_slice(&resp.payload).map_err(|e| AskError::Report(e.to_string()))
}

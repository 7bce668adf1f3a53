//! What a runtime or a logger inherits from the shim: a runc wrapper (to be named as the
//! task's `BinaryName`, or the standalone face's `--runc`) that appends, for each call,
//! the verb and its own `SigBlk`/`SigIgn` (`/proc/self/status`, read by the shell itself,
//! no child in between) to a record file, then `exec`s the real runc; and the same lines
//! written by a `binary://` logger or any script through [`STATUS_LINE`].

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Shell code that sets `$line` to ` SigBlk:<hex> SigIgn:<hex>` of the shell running it
/// (builtins only: a child would show its own state, not the shell's).
pub const STATUS_LINE: &str = "line=; while read -r k v; do case \"$k\" in \
     SigBlk:|SigIgn:) line=\"$line $k$v\" ;; esac; done </proc/$$/status\n";

/// The runc verbs recorded by name (any other call is recorded with an empty verb).
const VERBS: &str =
    "create|start|exec|kill|delete|run|restore|checkpoint|state|ps|pause|resume|update|events";

/// A recording runc wrapper; see the module documentation.
#[derive(Debug)]
pub struct RecordingRunc {
    path: PathBuf,
    record: PathBuf,
}

/// One recorded call: who, and the masks it started with (hex, as the kernel prints them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inherited {
    pub who: String,
    pub blocked: u64,
    pub ignored: u64,
}

impl RecordingRunc {
    /// Writes the wrapper `recording-runc` into `dir`, recording into `dir/signals.record`.
    pub fn write(dir: &Path) -> Self {
        let real = crate::require::tool("runc", "runc");
        let path = dir.join("recording-runc");
        let record = dir.join("signals.record");
        let script = format!(
            "#!/bin/sh\n\
             # The real runc, recording what each call inherited.\n\
             verb=\n\
             for a in \"$@\"; do\n\
             \x20 case \"$a\" in {VERBS}) verb=$a; break ;; esac\n\
             done\n\
             {STATUS_LINE}\
             echo \"runc-$verb$line\" >>{record}\n\
             exec {real} \"$@\"\n",
            record = record.display(),
            real = real.display(),
        );
        fs::write(&path, script).expect("write the recording runc");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .expect("make the recording runc executable");
        RecordingRunc { path, record }
    }

    /// The wrapper's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record file (scripts of the test may append their own lines to it).
    pub fn record(&self) -> &Path {
        &self.record
    }

    /// Every call recorded so far.
    pub fn calls(&self) -> Vec<Inherited> {
        parse(&fs::read_to_string(&self.record).unwrap_or_default())
    }
}

/// Parses record lines (`who SigBlk:<hex> SigIgn:<hex>`); malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Inherited> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let who = words.next()?.to_string();
            let mut blocked = None;
            let mut ignored = None;
            for w in words {
                if let Some(hex) = w.strip_prefix("SigBlk:") {
                    blocked = u64::from_str_radix(hex, 16).ok();
                } else if let Some(hex) = w.strip_prefix("SigIgn:") {
                    ignored = u64::from_str_radix(hex, 16).ok();
                }
            }
            Some(Inherited {
                who,
                blocked: blocked?,
                ignored: ignored?,
            })
        })
        .collect()
}

/// `SigBlk`/`SigIgn` of a live process `pid`, as `who`.
pub fn of_pid(pid: i32, who: &str) -> Option<Inherited> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut line = who.to_string();
    for l in status.lines() {
        if let Some(v) = l
            .strip_prefix("SigBlk:")
            .or_else(|| l.strip_prefix("SigIgn:"))
        {
            let key = &l[..7];
            line.push_str(&format!(" {key}{}", v.trim()));
        }
    }
    parse(&line).pop()
}

/// The signal numbers set in a mask (bit N-1 is signal N).
pub fn signals_in(mask: u64) -> Vec<u32> {
    (0..64)
        .filter(|b| mask & (1 << b) != 0)
        .map(|b| b + 1)
        .collect()
}

/// The launcher prefix that starts a command with SIGHUP, SIGINT and SIGQUIT ignored, as
/// `nohup` or a non-interactive shell's `&` leave them: `sh -c 'trap "" …; exec "$@"' sh`.
pub const IGNORING: [&str; 4] = ["/bin/sh", "-c", "trap '' HUP INT QUIT; exec \"$@\"", "sh"];

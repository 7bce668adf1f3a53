//! What a supervisor supervises: the plan `run`/`exec` write on its command line
//! ([`Plan::to_args`]) and the hidden `supervise` subcommand reads back
//! ([`Plan::from_args`]), in one place so the two cannot drift.

use crate::standalone::args;
use crate::standalone::depot::Depot;
use crate::standalone::errors::{CliError, CliResult};
use crate::standalone::io_owner::{IoOwner, GID_FLAG, UID_FLAG};
use crate::standalone::spool_flags::{self, SpoolFlags};
use std::path::PathBuf;

/// What to supervise.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A container's init, created from this bundle.
    Run {
        /// The bundle directory.
        bundle: PathBuf,
    },
    /// A process in a running container; its OCI process spec arrives on stdin.
    Exec,
    /// A pea ([`crate::standalone::pea`]): its own runc container, run from the process directory,
    /// whose `config.json` arrives on stdin; it lives no longer than the outer init.
    Pea {
        /// Its runc container id.
        runc_id: String,
        /// The pid of the outer container's init when `exec` looked (checked again here).
        outer_pid: i32,
        /// The manager's bundle it was made from (recorded in `pea.json`).
        bundle: PathBuf,
    },
}

/// Everything the supervisor is told on its command line.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The global options (runc binary and root).
    pub depot: Depot,
    /// The container.
    pub container: String,
    /// The process directory (already created by the caller).
    pub dir: PathBuf,
    /// Run or exec.
    pub kind: Kind,
    /// Whether the process has a terminal.
    pub tty: bool,
    /// Who the process's stdio belongs to (`--io-uid`/`--io-gid`): it gets `control` too.
    pub io_owner: Option<IoOwner>,
    /// The output spool (`--spool-limit`, `--spool-policy`).
    pub spool: SpoolFlags,
}

impl Plan {
    /// The supervisor's command line (after the binary).
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = vec![
            "supervise".into(),
            "--depot".into(),
            self.depot.root.clone().into(),
            "--runc".into(),
            self.depot.runc_bin.clone().into(),
            "--runc-root".into(),
            self.depot.runc_root.clone().into(),
            "--dir".into(),
            self.dir.clone().into(),
        ];
        match &self.kind {
            Kind::Run { bundle } => {
                a.push("--bundle".into());
                a.push(bundle.clone().into());
            }
            Kind::Exec => a.push("--exec".into()),
            Kind::Pea {
                runc_id,
                outer_pid,
                bundle,
            } => {
                a.push("--pea".into());
                a.push(runc_id.into());
                a.push("--outer-pid".into());
                a.push(outer_pid.to_string().into());
                a.push("--pea-bundle".into());
                a.push(bundle.clone().into());
            }
        }
        if self.tty {
            a.push("--tty".into());
        }
        if let Some(owner) = self.io_owner {
            a.extend(owner.to_args());
        }
        a.extend(self.spool.to_args());
        a.push(self.container.clone().into());
        a
    }

    /// Reads back what [`Plan::to_args`] wrote (the arguments after `supervise`, with the
    /// global options already taken into `depot`).
    pub fn from_args(depot: Depot, rest: &[String]) -> CliResult<Plan> {
        const SPEC: args::Spec = args::Spec {
            valued: &[
                ("--dir", None),
                ("--bundle", None),
                ("--pea", None),
                ("--outer-pid", None),
                ("--pea-bundle", None),
                (UID_FLAG, None),
                (GID_FLAG, None),
                (spool_flags::LIMIT_FLAG, None),
                (spool_flags::POLICY_FLAG, None),
            ],
            flags: &[("--exec", None), ("--tty", None)],
        };
        let p = args::parse(rest, SPEC)?;
        let pos = p.positionals(
            1,
            1,
            "supervise --dir DIR (--bundle B | --exec | --pea RUNC-ID --outer-pid PID \
             [--pea-bundle B]) [--tty] [--io-uid U --io-gid G] ID",
        )?;
        let dir = p
            .value("--dir")
            .ok_or_else(|| CliError::Usage("--dir is required".into()))?;
        let kind = match (p.value("--bundle"), p.flag("--exec"), p.value("--pea")) {
            (Some(b), false, None) => Kind::Run { bundle: b.into() },
            (None, true, None) => Kind::Exec,
            (None, false, Some(runc_id)) => Kind::Pea {
                runc_id: runc_id.to_string(),
                outer_pid: p
                    .value("--outer-pid")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| CliError::Usage("--pea needs --outer-pid PID".into()))?,
                bundle: p.value("--pea-bundle").unwrap_or_default().into(),
            },
            _ => {
                return Err(CliError::Usage(
                    "exactly one of --bundle, --exec, --pea".into(),
                ))
            }
        };
        Ok(Plan {
            depot,
            container: pos[0].clone(),
            dir: dir.into(),
            kind,
            tty: p.flag("--tty"),
            io_owner: IoOwner::from_args(&p)?,
            spool: SpoolFlags::from_args(&p)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process_core::spool::SpoolPolicy;

    fn depot() -> Depot {
        Depot::new(
            PathBuf::from("/run/depot"),
            Some(PathBuf::from("/usr/sbin/runc")),
            Some(PathBuf::from("/run/runc root")),
        )
    }

    /// What `run`/`exec` write, the supervisor reads back: every kind and option.
    #[test]
    fn a_plan_survives_its_command_line() {
        let kinds = [
            Kind::Run {
                bundle: PathBuf::from("/b/with space"),
            },
            Kind::Exec,
            Kind::Pea {
                runc_id: "pea-1".into(),
                outer_pid: 4242,
                bundle: PathBuf::from("/pea/bundle"),
            },
        ];
        for kind in kinds {
            for (tty, io_owner, spool) in [
                (false, None, SpoolFlags::default()),
                (
                    true,
                    Some(IoOwner {
                        uid: 1000,
                        gid: 1001,
                    }),
                    SpoolFlags {
                        limit: 1 << 20,
                        policy: SpoolPolicy::DropOldest,
                    },
                ),
            ] {
                let plan = Plan {
                    depot: depot(),
                    container: "c1".into(),
                    dir: PathBuf::from("/run/depot/c1/processes/p1"),
                    kind: kind.clone(),
                    tty,
                    io_owner,
                    spool,
                };
                let args = plan.to_args();
                assert_eq!(args[0], "supervise");
                let rest: Vec<String> = args[1..]
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                let back = Plan::from_args(depot(), &rest).expect("parses back");
                assert_eq!(format!("{back:?}"), format!("{plan:?}"));
            }
        }
    }

    #[test]
    fn a_plan_needs_exactly_one_kind_and_a_directory() {
        let bad: &[&[&str]] = &[
            &["--dir", "/d", "c1"],
            &["--dir", "/d", "--exec", "--bundle", "/b", "c1"],
            &["--dir", "/d", "--pea", "p", "c1"],
            &["--exec", "c1"],
            &["--dir", "/d", "--exec"],
        ];
        for args in bad {
            let rest: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            let err = Plan::from_args(depot(), &rest).expect_err(&format!("{args:?}"));
            assert!(matches!(err, CliError::Usage(_)), "{args:?}: {err:?}");
        }
    }
}

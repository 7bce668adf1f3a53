//! Tests for [`Runc`](super::Runc), one concern a file: `argv` the command lines it builds
//! and the arguments it refuses (nothing is run), `errors` how a failing runc becomes an
//! [`Error`](crate::Error), `verb_io` what each verb hands runc and reads back,
//! `monitor_and_deadlines` the process monitor and the deadlines, `inherited_stderr` runc's
//! stderr for the verbs that hand their stdio to the process, all against fake runc shell
//! scripts (`fake_runc`); and `real_runc`, a smoke test against the real runc when available.

mod argv;
mod errors;
mod fake_runc;
mod inherited_stderr;
mod monitor_and_deadlines;
mod real_runc;
mod verb_io;

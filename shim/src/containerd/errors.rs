//! Errors as ttrpc statuses: containerd turns the code into its errdefs (NotFound,
//! AlreadyExists, FailedPrecondition…), so the code matters as much as the message.

use crate::containerd::ttrpc::status;
use ttrpc::proto::{Code, Status};

pub type RpcResult<T> = Result<T, Status>;

pub fn not_found(msg: impl Into<String>) -> Status {
    status(Code::NOT_FOUND, msg)
}

pub fn already_exists(msg: impl Into<String>) -> Status {
    status(Code::ALREADY_EXISTS, msg)
}

pub fn failed_precondition(msg: impl Into<String>) -> Status {
    status(Code::FAILED_PRECONDITION, msg)
}

pub fn invalid(msg: impl Into<String>) -> Status {
    status(Code::INVALID_ARGUMENT, msg)
}

pub fn internal(msg: impl Into<String>) -> Status {
    status(Code::INTERNAL, msg)
}

pub fn resource_exhausted(msg: impl Into<String>) -> Status {
    status(Code::RESOURCE_EXHAUSTED, msg)
}

pub fn unimplemented(msg: impl Into<String>) -> Status {
    status(Code::UNIMPLEMENTED, msg)
}

/// The level a failed call is logged at. A client's expected outcome is a debug line, as
/// containerd's Go shim logs none of them: the process is gone (NOT_FOUND: kubelet's exec
/// probes end with a Kill of an exec that has finished), the id is taken, the call does not
/// apply in the process's state, or a method tether does not serve. Anything else (runc
/// failed, a deadline passed, a malformed request) is an info line.
pub fn failure_level(st: &Status) -> log::Level {
    match st.code.enum_value() {
        Ok(
            Code::NOT_FOUND
            | Code::ALREADY_EXISTS
            | Code::FAILED_PRECONDITION
            | Code::UNIMPLEMENTED,
        ) => log::Level::Debug,
        _ => log::Level::Info,
    }
}

/// A runc failure: runc's own message, with the code its kind means to containerd.
pub fn from_runc(err: runc_wrapper::Error) -> Status {
    use runc_wrapper::ErrorKind;
    match (err.kind(), err) {
        (ErrorKind::NotFound, e) => not_found(e.to_string()),
        (ErrorKind::AlreadyExists, e) => already_exists(e.to_string()),
        (ErrorKind::DeadlineExceeded, e) => status(Code::DEADLINE_EXCEEDED, e.to_string()),
        (_, runc_wrapper::Error::InvalidArgument(m)) => invalid(m),
        (_, other) => status(Code::UNKNOWN, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_outcomes_are_debug_lines_and_failures_info() {
        for st in [
            not_found("process already finished"),
            already_exists("id ctr-1 is taken"),
            failed_precondition("container is not paused"),
            unimplemented("method Sandbox is not implemented"),
        ] {
            assert_eq!(failure_level(&st), log::Level::Debug, "{}", st.message);
        }
        for st in [
            internal("stats: no such file"),
            invalid("bad signal"),
            status(Code::DEADLINE_EXCEEDED, "runc kill"),
            status(Code::UNKNOWN, "runc create failed"),
        ] {
            assert_eq!(failure_level(&st), log::Level::Info, "{}", st.message);
        }
    }
}

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

//! A Task call as the loop carries it from its arrival to its reply: who to answer, the
//! caller's deadline, and, for a call waiting at its process's gate, the decoded request.

use crate::containerd::decoded_call::TaskCall;
use std::time::Instant;

/// A call being served: who to answer, and the caller's deadline (ttrpc `timeout_nano`,
/// see `call_deadline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRef {
    pub conn: u32,
    pub stream: u32,
    pub deadline: Option<Instant>,
    /// The method, for logs.
    pub method: &'static str,
    /// Counted among the calls in flight (its connection's and the shim's) until it is
    /// answered: a call that waits for a worker, its gate or its turn (not a parked Wait).
    pub counted: bool,
}

/// A call queued at its process's gate (`process_table::gate`), run when its turn comes.
#[derive(Debug)]
pub struct GatedCall {
    pub call: CallRef,
    pub request: TaskCall,
}

//! The one error of every state machine in tether (a containerd process's `ProcState`, a
//! standalone supervisor's `SupervisorState`): a transition the state does not allow.
//! The machine is left as it was.

/// A transition the state does not allow; the state is left as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a process that is {from} cannot {event}")]
pub struct IllegalTransition {
    /// The state's name.
    pub from: &'static str,
    /// The transition asked for.
    pub event: &'static str,
}

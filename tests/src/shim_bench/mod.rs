//! `make bench-shim`: tether and containerd's Go shim (`containerd-shim-runc-v2`) driven
//! directly over ttrpc, the way containerd drives them, without containerd: the `start`
//! subcommand, then Create, Start, State, Exec, Start (exec), Wait (exec), Delete (exec),
//! Stats, Pids, Kill, Wait, Delete and Shutdown, then the `delete` subcommand; both shims
//! on the same busybox bundle and the same runc, in interleaved rounds.
//!
//! For each call it keeps the latency, the time runc itself took inside it (every runc
//! goes through `runc-timer`, named as the task's `BinaryName`, which logs each run with
//! its pid; the kernel's process events ([`proc_events`]) say when that process was
//! exec'd and when it exited) and so the shim's own share (latency − runc); and the shim's own CPU time (its threads'
//! `schedstat`, children excluded) per container lifecycle and per exec. Events go to a
//! stand-in for containerd's ttrpc events service ([`fake_events`]), which answers them
//! all. The own share of a call that starts a runtime is split further at the kernel's
//! fork, exec and exit stamps of that runtime ([`split`]), and the shim's CPU into user
//! and system time. What any server would cost at the bench's pacing, the paced floor, is
//! a do-nothing server in its own process ([`floor_server`]) called with each lifecycle's
//! gaps between calls replayed ([`paced_floor`]); each call's own share is held against it
//! ([`floor_report`]).

pub mod clock;
pub mod fake_events;
pub mod floor_report;
pub mod floor_server;
pub mod framing;
pub mod lifecycle;
pub mod netlink_parse;
pub mod paced_floor;
pub mod proc_events;
pub mod report;
pub mod runc_log;
pub mod split;
pub mod taskstats;
pub mod wire_client;

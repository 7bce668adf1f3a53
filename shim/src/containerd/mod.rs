//! The containerd face: `containerd-shim-tether-v2`, task API v2 and v3 over ttrpc.

pub mod address;
pub mod bootstrap;
pub mod bootstrap_protocol;
pub mod bundle;
pub mod call_deadline;
pub mod call_gate;
pub mod delete_linger;
pub mod errors;
pub mod events;
pub mod exit_status;
pub mod flags;
pub mod info;
pub mod kill_all;
pub mod options;
pub mod proc_state;
pub mod protos;
pub mod server;
pub mod spool_setting;
pub mod task;
pub mod task_api;
pub mod task_call;
pub mod tasks;
pub mod ttrpc;
pub mod workers;

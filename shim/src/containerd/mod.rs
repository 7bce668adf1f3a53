//! The containerd face: `containerd-shim-tether-v2`, task API v2 and v3 over ttrpc.

pub mod address;
pub mod bootstrap;
pub mod bootstrap_protocol;
pub mod bundle;
pub mod call;
pub mod call_deadline;
pub mod errors;
pub mod events;
pub mod exit_report;
pub mod exit_status;
pub mod flags;
pub mod handlers;
pub mod info;
pub mod kill_all;
pub mod options;
pub mod output;
pub mod process_table;
pub mod shim;
pub mod shim_loop;
pub mod spool_setting;
pub mod task_api;
pub mod task_call;
pub mod ttrpc;
pub mod wire;
pub mod workers;

//! The integration test bed of tether: real busybox bundles, an isolated runc root, and
//! guards that leave nothing behind (containers, mounts, FIFOs, temp dirs) even when a
//! test fails.
//!
//! Every fixture is private to one test (its own temp dir, runc root and container ids),
//! so the tests run in parallel without colliding.
#![deny(unsafe_code)]

pub mod bundle;
pub mod busy;
pub mod cgroup;
pub mod cleanup;
pub mod containerd_env;
pub mod containerd_version;
pub mod cri_env;
pub mod direct_shim;
pub mod manager_output;
pub mod nerdctl_env;
pub mod oci_image;
pub mod output_diff;
pub mod paced_reader;
pub mod pty_session;
pub mod require;
pub mod rootfs;
pub mod runc_env;
pub mod runc_gate;
pub mod shim_bench;
pub mod signal_record;
pub mod skip;
pub mod standalone_env;
pub mod uri;

pub use bundle::Bundle;
pub use containerd_env::ContainerdEnv;
pub use containerd_version::{containerd_version, DaemonVersion};
pub use cri_env::CriEnv;
pub use nerdctl_env::NerdctlEnv;
pub use runc_env::RuncEnv;
pub use skip::skip;
pub use standalone_env::StandaloneEnv;

/// A short unique id for a container or process: `<prefix>-<pid>-<counter>`.
///
/// Unique across the parallel tests of one run (same pid, different counter) and across
/// concurrent runs (different pids), and short, because socket paths built from it must
/// fit in `sun_path`.
pub fn unique_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

//! `Task.Stats` metrics, in the protobuf messages containerd's Go shims send.
//!
//! The values mirror what containerd/cgroups fills: cgroup v1 as
//! `io.containerd.cgroups.v1.Metrics`, cgroup v2 as
//! `io.containerd.cgroups.v2.Metrics`. A file that does not exist (controller
//! not mounted or not enabled, kernel without the feature, cgroup already
//! removed) leaves its fields unset; it is not an error.

use protobuf::Message;

use crate::containerd::cgroups::files::{MetricsError, Reader};
use crate::containerd::cgroups::kept_files::KeptFiles;
use crate::containerd::cgroups::{host_hierarchy, of_pid, v1, v2, Hierarchy, ProcessCgroups};

/// `type_url` of cgroup v1 metrics.
pub const V1_METRICS_TYPE: &str = "io.containerd.cgroups.v1.Metrics";
/// `type_url` of cgroup v2 metrics.
pub const V2_METRICS_TYPE: &str = "io.containerd.cgroups.v2.Metrics";

/// Collects the metrics of the cgroups `pid` belongs to, for `Task.Stats`.
///
/// Returns `(type_url, bytes)` for a protobuf `Any`: on a cgroup v1 (or
/// hybrid) host `io.containerd.cgroups.v1.Metrics`, on a pure cgroup v2 host
/// `io.containerd.cgroups.v2.Metrics`. Reads cgroupfs only; never runs runc.
pub fn collect_metrics(pid: i32) -> Result<(String, Vec<u8>), MetricsError> {
    let cgroups = of_pid(pid).map_err(|source| MetricsError::ProcCgroup { pid, source })?;
    collect_metrics_from(&cgroups)
}

/// Like [`collect_metrics`], for cgroups resolved earlier (e.g. at task start,
/// so stats keep working from the same cgroup while the init process is
/// being reaped).
pub fn collect_metrics_from(cgroups: &ProcessCgroups) -> Result<(String, Vec<u8>), MetricsError> {
    collect(cgroups, &Reader::fresh())
}

/// Like [`collect_metrics_from`], reading through `kept`: the files it opens stay open
/// for the next collection of the same cgroups (`Task.Stats` of one container, once a
/// second under containerd 2.x's CRI).
pub fn collect_metrics_kept(
    cgroups: &ProcessCgroups,
    kept: &KeptFiles,
) -> Result<(String, Vec<u8>), MetricsError> {
    collect(cgroups, &Reader::kept(kept))
}

fn collect(cgroups: &ProcessCgroups, r: &Reader<'_>) -> Result<(String, Vec<u8>), MetricsError> {
    match host_hierarchy() {
        Hierarchy::V1 => {
            let m = v1::metrics(cgroups, r)?;
            Ok((V1_METRICS_TYPE.to_string(), m.write_to_bytes()?))
        }
        Hierarchy::V2 => {
            let dir = cgroups.unified_dir().ok_or(MetricsError::NoUnifiedCgroup)?;
            let m = v2::metrics(dir, r)?;
            Ok((V2_METRICS_TYPE.to_string(), m.write_to_bytes()?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use containerd_shim_protos::{cgroups, cgroups_v2};
    /// Collects for this very process on this machine: whatever controllers
    /// exist must decode; missing ones must not fail.
    #[test]
    fn this_machine() {
        let pid = nix::unistd::getpid().as_raw();
        let (type_url, bytes) = collect_metrics(pid).unwrap();
        match host_hierarchy() {
            Hierarchy::V1 => {
                assert_eq!(type_url, V1_METRICS_TYPE);
                let m = cgroups::metrics::Metrics::parse_from_bytes(&bytes).unwrap();
                println!("{m:#?}");
                let cg = of_pid(pid).unwrap();
                if cg
                    .v1_dir("memory")
                    .is_some_and(|d| d.join("memory.usage_in_bytes").exists())
                {
                    assert!(m.memory.usage.usage > 0, "memory usage should be non-zero");
                }
                if cg
                    .v1_dir("cpuacct")
                    .is_some_and(|d| d.join("cpuacct.usage").exists())
                {
                    assert!(m.cpu.usage.total > 0);
                    assert!(!m.cpu.usage.per_cpu.is_empty());
                }
                if cg
                    .v1_dir("pids")
                    .is_some_and(|d| d.join("pids.current").exists())
                {
                    assert!(m.pids.current > 0);
                }
            }
            Hierarchy::V2 => {
                assert_eq!(type_url, V2_METRICS_TYPE);
                let m = cgroups_v2::metrics::Metrics::parse_from_bytes(&bytes).unwrap();
                println!("{m:#?}");
                assert!(m.cpu.usage_usec > 0);
            }
        }
        assert!(matches!(
            collect_metrics(-5),
            Err(MetricsError::ProcCgroup { pid: -5, .. })
        ));
    }
}

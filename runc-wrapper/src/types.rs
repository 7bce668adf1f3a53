//! Typed forms of runc's JSON output: `state`, `list`, and `events --stats`.
//!
//! Decoding is lenient where runc (Go) is: missing fields and `null` collections decode to their
//! defaults, unknown fields are ignored.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

/// Decodes `null` as the type's default (Go encodes nil slices and maps as `null`).
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The state of a container as printed by `runc state` and `runc list --format json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// OCI runtime spec version the container was created with (`ociVersion`).
    #[serde(rename = "ociVersion", default)]
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Pid of the container's init process as seen from the host (0 once stopped).
    pub pid: i32,
    /// Lifecycle status.
    pub status: ContainerStatus,
    /// Absolute path of the bundle.
    pub bundle: PathBuf,
    /// Absolute path of the root filesystem.
    #[serde(default)]
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339 as printed by runc.
    #[serde(default)]
    pub created: String,
    /// The spec's annotations (empty when absent).
    #[serde(default, deserialize_with = "nullable")]
    pub annotations: HashMap<String, String>,
    /// Owner of the container (empty when absent).
    #[serde(default, deserialize_with = "nullable")]
    pub owner: String,
}

/// A container's lifecycle status; lowercase in JSON. Unrecognised values decode to `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerStatus {
    /// Being created.
    Creating,
    /// Created, user process not started yet.
    Created,
    /// Running.
    Running,
    /// Frozen.
    Paused,
    /// Init process exited.
    Stopped,
    /// Any status this crate does not know.
    #[default]
    #[serde(other)]
    Unknown,
}

impl ContainerStatus {
    /// The lowercase name runc uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Creating => "creating",
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Paused => "paused",
            ContainerStatus::Stopped => "stopped",
            ContainerStatus::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `data` of runc's `{"type":"stats","id":..,"data":{..}}` event (libcontainer/types/events.go).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// CPU accounting.
    #[serde(default, deserialize_with = "nullable")]
    pub cpu: CpuStats,
    /// cpuset controller state (cgroup v1).
    #[serde(default, deserialize_with = "nullable")]
    pub cpuset: CpusetStats,
    /// Memory accounting.
    #[serde(default, deserialize_with = "nullable")]
    pub memory: MemoryStats,
    /// Pids controller.
    #[serde(default, deserialize_with = "nullable")]
    pub pids: PidsStats,
    /// Block I/O accounting.
    #[serde(default, deserialize_with = "nullable")]
    pub blkio: BlkioStats,
    /// Hugetlb accounting keyed by page size (e.g. `"2MB"`).
    #[serde(default, deserialize_with = "nullable")]
    pub hugetlb: HashMap<String, HugetlbStats>,
    /// Network interfaces of the container's network namespace.
    #[serde(default, deserialize_with = "nullable")]
    pub network_interfaces: Vec<NetworkInterface>,
}

/// `cpu` in [`Stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuStats {
    /// CPU time consumed.
    #[serde(default, deserialize_with = "nullable")]
    pub usage: CpuUsage,
    /// CFS throttling.
    #[serde(default, deserialize_with = "nullable")]
    pub throttling: Throttling,
}

/// `cpu.usage`; all values in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuUsage {
    /// Total CPU time.
    #[serde(default)]
    pub total: u64,
    /// Total per CPU.
    #[serde(default, deserialize_with = "nullable")]
    pub percpu: Vec<u64>,
    /// Kernel-mode time per CPU.
    #[serde(default, deserialize_with = "nullable")]
    pub percpu_kernel: Vec<u64>,
    /// User-mode time per CPU.
    #[serde(default, deserialize_with = "nullable")]
    pub percpu_user: Vec<u64>,
    /// Kernel-mode time.
    #[serde(default)]
    pub kernel: u64,
    /// User-mode time.
    #[serde(default)]
    pub user: u64,
}

/// `cpu.throttling` (JSON `periods`, `throttledPeriods`, `throttledTime`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttling {
    /// Enforcement periods elapsed.
    #[serde(default)]
    pub periods: u64,
    /// Periods in which the group was throttled.
    #[serde(default, rename = "throttledPeriods", alias = "throttled_periods")]
    pub throttled_periods: u64,
    /// Total time throttled, nanoseconds.
    #[serde(default, rename = "throttledTime", alias = "throttled_time")]
    pub throttled_time: u64,
}

/// `cpuset` in [`Stats`] (cgroup v1 only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpusetStats {
    /// CPUs in the set.
    #[serde(default, deserialize_with = "nullable")]
    pub cpus: Vec<u32>,
    /// `cpuset.cpu_exclusive`.
    #[serde(default)]
    pub cpu_exclusive: u64,
    /// Memory nodes in the set.
    #[serde(default, deserialize_with = "nullable")]
    pub mems: Vec<u32>,
    /// `cpuset.mem_hardwall`.
    #[serde(default)]
    pub mem_hardwall: u64,
    /// `cpuset.mem_exclusive`.
    #[serde(default)]
    pub mem_exclusive: u64,
    /// `cpuset.memory_migrate`.
    #[serde(default)]
    pub memory_migrate: u64,
    /// `cpuset.memory_spread_page`.
    #[serde(default)]
    pub memory_spread_page: u64,
    /// `cpuset.memory_spread_slab`.
    #[serde(default)]
    pub memory_spread_slab: u64,
    /// `cpuset.memory_pressure`.
    #[serde(default)]
    pub memory_pressure: u64,
    /// `cpuset.sched_load_balance`.
    #[serde(default)]
    pub sched_load_balance: u64,
    /// `cpuset.sched_relax_domain_level` (may be -1).
    #[serde(default)]
    pub sched_relax_domain_level: i64,
}

/// `memory` in [`Stats`]; byte counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// Page cache.
    #[serde(default)]
    pub cache: u64,
    /// Memory usage.
    #[serde(default, deserialize_with = "nullable")]
    pub usage: MemoryEntry,
    /// Memory + swap usage.
    #[serde(default, deserialize_with = "nullable")]
    pub swap: MemoryEntry,
    /// Kernel memory (cgroup v1).
    #[serde(default, deserialize_with = "nullable")]
    pub kernel: MemoryEntry,
    /// Kernel TCP buffer memory (JSON `kernelTCP`).
    #[serde(
        default,
        rename = "kernelTCP",
        alias = "kernel_tcp",
        deserialize_with = "nullable"
    )]
    pub kernel_tcp: MemoryEntry,
    /// The raw `memory.stat` counters.
    #[serde(default, deserialize_with = "nullable")]
    pub raw: HashMap<String, u64>,
}

/// One memory counter group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEntry {
    /// Limit in bytes.
    #[serde(default)]
    pub limit: u64,
    /// Current usage in bytes.
    #[serde(default)]
    pub usage: u64,
    /// Maximum usage recorded.
    #[serde(default)]
    pub max: u64,
    /// Times the limit was hit.
    #[serde(default)]
    pub failcnt: u64,
}

/// `pids` in [`Stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidsStats {
    /// Number of tasks.
    #[serde(default)]
    pub current: u64,
    /// Task limit (0 = none).
    #[serde(default)]
    pub limit: u64,
}

/// `blkio` in [`Stats`] (JSON camelCase, e.g. `ioServiceBytesRecursive`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlkioStats {
    /// Bytes transferred.
    #[serde(
        default,
        rename = "ioServiceBytesRecursive",
        deserialize_with = "nullable"
    )]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    /// I/O operations issued.
    #[serde(default, rename = "ioServicedRecursive", deserialize_with = "nullable")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
    /// Queued operations (JSON `ioQueueRecursive`, runc's spelling).
    #[serde(default, rename = "ioQueueRecursive", deserialize_with = "nullable")]
    pub io_queued_recursive: Vec<BlkioEntry>,
    /// Service time.
    #[serde(
        default,
        rename = "ioServiceTimeRecursive",
        deserialize_with = "nullable"
    )]
    pub io_service_time_recursive: Vec<BlkioEntry>,
    /// Wait time.
    #[serde(default, rename = "ioWaitTimeRecursive", deserialize_with = "nullable")]
    pub io_wait_time_recursive: Vec<BlkioEntry>,
    /// Merged operations.
    #[serde(default, rename = "ioMergedRecursive", deserialize_with = "nullable")]
    pub io_merged_recursive: Vec<BlkioEntry>,
    /// Disk time.
    #[serde(default, rename = "ioTimeRecursive", deserialize_with = "nullable")]
    pub io_time_recursive: Vec<BlkioEntry>,
    /// Sectors transferred.
    #[serde(default, rename = "sectorsRecursive", deserialize_with = "nullable")]
    pub sectors_recursive: Vec<BlkioEntry>,
}

/// One blkio counter for a device and operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlkioEntry {
    /// Device major number.
    #[serde(default)]
    pub major: u64,
    /// Device minor number.
    #[serde(default)]
    pub minor: u64,
    /// Operation (`Read`, `Write`, `Sync`, `Async`, `Total`, ... ; may be empty).
    #[serde(default, deserialize_with = "nullable")]
    pub op: String,
    /// Counter value.
    #[serde(default)]
    pub value: u64,
}

/// Hugetlb accounting for one page size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugetlbStats {
    /// Current usage in bytes.
    #[serde(default)]
    pub usage: u64,
    /// Maximum usage recorded.
    #[serde(default)]
    pub max: u64,
    /// Times the limit was hit.
    #[serde(default)]
    pub failcnt: u64,
}

/// Counters of one network interface (JSON keys are Go field names, e.g. `RxBytes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInterface {
    /// Interface name.
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// Bytes received.
    #[serde(default)]
    pub rx_bytes: u64,
    /// Packets received.
    #[serde(default)]
    pub rx_packets: u64,
    /// Receive errors.
    #[serde(default)]
    pub rx_errors: u64,
    /// Received packets dropped.
    #[serde(default)]
    pub rx_dropped: u64,
    /// Bytes sent.
    #[serde(default)]
    pub tx_bytes: u64,
    /// Packets sent.
    #[serde(default)]
    pub tx_packets: u64,
    /// Send errors.
    #[serde(default)]
    pub tx_errors: u64,
    /// Sent packets dropped.
    #[serde(default)]
    pub tx_dropped: u64,
}

/// runc's event envelope (`runc events`).
#[derive(Debug, Deserialize)]
pub(crate) struct Event {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub data: Option<Stats>,
}

/// Parses `runc state` output.
pub(crate) fn parse_state(out: &[u8]) -> serde_json::Result<State> {
    serde_json::from_slice(out)
}

/// Parses `runc list --format json` output (`null` = no containers).
pub(crate) fn parse_list(out: &[u8]) -> serde_json::Result<Vec<State>> {
    Ok(serde_json::from_slice::<Option<Vec<State>>>(out)?.unwrap_or_default())
}

/// Parses `runc ps --format json` output (`null` = no processes).
pub(crate) fn parse_ps(out: &[u8]) -> serde_json::Result<Vec<i32>> {
    Ok(serde_json::from_slice::<Option<Vec<i32>>>(out)?.unwrap_or_default())
}

/// Parses the first event of `runc events --stats` output, which must be a stats event.
pub(crate) fn parse_stats(out: &[u8]) -> serde_json::Result<Stats> {
    use serde::de::Error as _;
    let event: Event = serde_json::Deserializer::from_slice(out)
        .into_iter()
        .next()
        .unwrap_or_else(|| Err(serde_json::Error::custom("no event in output")))?;
    if event.kind != "stats" {
        return Err(serde_json::Error::custom(format!(
            "expected a \"stats\" event, got {:?}",
            event.kind
        )));
    }
    event
        .data
        .ok_or_else(|| serde_json::Error::custom("stats event without data"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = r#"{
  "ociVersion": "1.0.2-dev",
  "id": "t1",
  "pid": 4084,
  "status": "running",
  "bundle": "/tmp/b",
  "rootfs": "/tmp/b/rootfs",
  "created": "2026-11-23T03:27:54.619507499Z",
  "owner": ""
}"#;

    /// Captured from runc 1.1.5 (cgroup v1) with a busybox `sleep`.
    const STATS: &str = r#"{"type":"stats","id":"t1","data":{"cpu":{"usage":{"total":14566436,"percpu":[7505732,7060704],"percpu_kernel":[3480245,7750422],"percpu_user":[4000000,0],"kernel":10000000,"user":0},"throttling":{}},"cpuset":{"cpus":[0,1],"cpu_exclusive":0,"mems":[0],"mem_hardwall":0,"mem_exclusive":0,"memory_migrate":0,"memory_spread_page":0,"memory_spread_slab":0,"memory_pressure":0,"sched_load_balance":1,"sched_relax_domain_level":-1},"memory":{"cache":12288,"usage":{"limit":9223372036854771712,"usage":442368,"max":2793472,"failcnt":0},"swap":{"limit":9223372036854771712,"usage":442368,"max":2793472,"failcnt":0},"kernel":{"limit":9223372036854771712,"usage":253952,"max":593920,"failcnt":0},"kernelTCP":{"limit":9223372036854771712,"failcnt":0},"raw":{"active_anon":4096,"cache":12288,"pgfault":779,"total_rss":53248}},"pids":{"current":1},"blkio":{},"hugetlb":{},"intel_rdt":{},"network_interfaces":null}}
"#;

    #[test]
    fn state_parses() {
        let s = parse_state(STATE.as_bytes()).unwrap();
        assert_eq!(s.oci_version, "1.0.2-dev");
        assert_eq!(s.id, "t1");
        assert_eq!(s.pid, 4084);
        assert_eq!(s.status, ContainerStatus::Running);
        assert_eq!(s.bundle, PathBuf::from("/tmp/b"));
        assert_eq!(s.rootfs, PathBuf::from("/tmp/b/rootfs"));
        assert_eq!(s.created, "2026-11-23T03:27:54.619507499Z");
        assert!(s.annotations.is_empty());
        assert_eq!(s.owner, "");
    }

    #[test]
    fn state_annotations_and_unknown_status() {
        let s = parse_state(
            br#"{"id":"x","pid":0,"status":"weird","bundle":"/b","annotations":{"a":"b"},"extra":1}"#,
        )
        .unwrap();
        assert_eq!(s.status, ContainerStatus::Unknown);
        assert_eq!(s.annotations.get("a").map(String::as_str), Some("b"));
        assert_eq!(s.oci_version, "");
        let s = parse_state(br#"{"id":"x","pid":0,"status":"stopped","bundle":"/b","annotations":null,"owner":null}"#)
            .unwrap();
        assert_eq!(s.status, ContainerStatus::Stopped);
        for (name, st) in [
            ("creating", ContainerStatus::Creating),
            ("created", ContainerStatus::Created),
            ("paused", ContainerStatus::Paused),
        ] {
            let json = format!(r#"{{"id":"x","pid":1,"status":"{name}","bundle":"/b"}}"#);
            assert_eq!(parse_state(json.as_bytes()).unwrap().status, st);
            assert_eq!(st.to_string(), name);
        }
    }

    #[test]
    fn state_garbage_is_an_error() {
        assert!(parse_state(b"").is_err());
        assert!(parse_state(b"null").is_err());
        assert!(parse_state(b"not json").is_err());
        assert!(parse_state(br#"{"id":"x"}"#).is_err());
        assert!(parse_state(br#"{"id":"x","pid":"1","status":"running","bundle":"/b"}"#).is_err());
    }

    #[test]
    fn list_parses() {
        assert!(parse_list(b"null").unwrap().is_empty());
        assert!(parse_list(b"null\n").unwrap().is_empty());
        assert!(parse_list(b"[]").unwrap().is_empty());
        let l = parse_list(
            br#"[{"ociVersion":"1.0.2-dev","id":"t1","pid":4084,"status":"running","bundle":"/b","rootfs":"/b/rootfs","created":"2026-11-23T03:27:54.619507499Z","owner":"root"},{"id":"t2","pid":0,"status":"stopped","bundle":"/c"}]"#,
        )
        .unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].owner, "root");
        assert_eq!(l[1].status, ContainerStatus::Stopped);
        assert!(parse_list(b"").is_err());
        assert!(parse_list(b"{}").is_err());
    }

    #[test]
    fn ps_parses() {
        assert_eq!(parse_ps(b"[4084]\n").unwrap(), vec![4084]);
        assert_eq!(parse_ps(b"[1, 2,3]").unwrap(), vec![1, 2, 3]);
        assert!(parse_ps(b"null").unwrap().is_empty());
        assert!(parse_ps(b"UID PID\n").is_err());
        assert!(parse_ps(b"[\"1\"]").is_err());
    }

    #[test]
    fn stats_parses_runc_sample() {
        let s = parse_stats(STATS.as_bytes()).unwrap();
        assert_eq!(s.cpu.usage.total, 14566436);
        assert_eq!(s.cpu.usage.percpu, vec![7505732, 7060704]);
        assert_eq!(s.cpu.usage.percpu_kernel, vec![3480245, 7750422]);
        assert_eq!(s.cpu.usage.percpu_user, vec![4000000, 0]);
        assert_eq!(s.cpu.usage.kernel, 10000000);
        assert_eq!(s.cpu.throttling, Throttling::default());
        assert_eq!(s.cpuset.cpus, vec![0, 1]);
        assert_eq!(s.cpuset.sched_relax_domain_level, -1);
        assert_eq!(s.memory.cache, 12288);
        assert_eq!(s.memory.usage.usage, 442368);
        assert_eq!(s.memory.usage.max, 2793472);
        assert_eq!(s.memory.usage.limit, 9223372036854771712);
        assert_eq!(s.memory.kernel.usage, 253952);
        assert_eq!(s.memory.kernel_tcp.limit, 9223372036854771712);
        assert_eq!(s.memory.raw.get("pgfault"), Some(&779));
        assert_eq!(s.pids.current, 1);
        assert!(s.blkio.io_service_bytes_recursive.is_empty());
        assert!(s.hugetlb.is_empty());
        assert!(s.network_interfaces.is_empty());
    }

    #[test]
    fn stats_parses_full_fields() {
        let json = br#"{"type":"stats","id":"x","data":{
            "cpu":{"usage":{"total":1},"throttling":{"periods":10,"throttledPeriods":3,"throttledTime":99}},
            "pids":{"current":2,"limit":100},
            "blkio":{"ioServiceBytesRecursive":[{"major":8,"minor":0,"op":"Read","value":4096}],
                     "ioQueueRecursive":[{"major":8,"op":"Total","value":1}],
                     "sectorsRecursive":null},
            "hugetlb":{"2MB":{"usage":2097152,"max":4194304,"failcnt":1}},
            "network_interfaces":[{"Name":"eth0","RxBytes":10,"TxPackets":2}]}}"#;
        let s = parse_stats(json).unwrap();
        assert_eq!(s.cpu.throttling.periods, 10);
        assert_eq!(s.cpu.throttling.throttled_periods, 3);
        assert_eq!(s.cpu.throttling.throttled_time, 99);
        assert_eq!(s.pids.limit, 100);
        assert_eq!(
            s.blkio.io_service_bytes_recursive,
            vec![BlkioEntry {
                major: 8,
                minor: 0,
                op: "Read".into(),
                value: 4096
            }]
        );
        assert_eq!(s.blkio.io_queued_recursive.len(), 1);
        assert_eq!(s.hugetlb["2MB"].max, 4194304);
        assert_eq!(s.network_interfaces[0].name, "eth0");
        assert_eq!(s.network_interfaces[0].rx_bytes, 10);
        assert_eq!(s.network_interfaces[0].tx_packets, 2);
        // snake_case spellings of the camelCase keys are accepted too.
        let s = parse_stats(
            br#"{"type":"stats","data":{"cpu":{"throttling":{"throttled_periods":4}},"memory":{"kernel_tcp":{"usage":5}}}}"#,
        )
        .unwrap();
        assert_eq!(s.cpu.throttling.throttled_periods, 4);
        assert_eq!(s.memory.kernel_tcp.usage, 5);
    }

    #[test]
    fn stats_garbage_is_an_error() {
        assert!(parse_stats(b"").is_err());
        assert!(parse_stats(b"garbage").is_err());
        assert!(parse_stats(br#"{"type":"oom","id":"x"}"#).is_err());
        assert!(parse_stats(br#"{"type":"stats","id":"x"}"#).is_err());
        assert!(parse_stats(br#"{"type":"stats","data":{"cpu":{"usage":{"total":-1}}}}"#).is_err());
        let e = parse_stats(br#"{"type":"stats","data":null}"#).unwrap_err();
        assert!(e.to_string().contains("without data"), "{e}");
    }
}

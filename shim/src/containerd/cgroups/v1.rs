//! cgroup v1 metrics (`io.containerd.cgroups.v1.Metrics`), filled the way
//! containerd/cgroups' v1 controllers fill them.

use std::collections::HashMap;
use std::path::Path;

use containerd_shim_protos::cgroups::metrics::{
    BlkIOEntry, BlkIOStat, CPUStat, CPUUsage, HugetlbStat, MemoryEntry, MemoryOomControl,
    MemoryStat, Metrics, PidsStat, Throttle,
};
use protobuf::MessageField;

use crate::containerd::cgroups::files::{flat_keyed, hugetlb_sizes, MetricsError, Reader};
use crate::containerd::cgroups::ProcessCgroups;

/// `cpuacct.stat` counts in USER_HZ ticks, which Linux fixes at 100 for
/// userspace on every architecture (containerd hardcodes it the same way).
const USER_HZ: u64 = 100;
const NANOS_PER_TICK: u64 = 1_000_000_000 / USER_HZ;

/// Builds v1 metrics from whichever controllers are mounted.
pub(crate) fn metrics(cg: &ProcessCgroups, r: &Reader<'_>) -> Result<Metrics, MetricsError> {
    let mut m = Metrics::new();
    if let Some(dir) = cg.v1_dir("pids") {
        m.pids = MessageField::from_option(pids(dir, r)?);
    }
    m.cpu = MessageField::from_option(cpu(cg.v1_dir("cpuacct"), cg.v1_dir("cpu"), r)?);
    if let Some(dir) = cg.v1_dir("memory") {
        m.memory = MessageField::from_option(memory(dir, r)?);
        m.memory_oom_control = MessageField::from_option(
            r.read_opt(&dir.join("memory.oom_control"))?
                .as_deref()
                .map(parse_oom_control),
        );
    }
    if let Some(dir) = cg.v1_dir("blkio") {
        m.blkio = MessageField::from_option(blkio(dir, r)?);
    }
    if let Some(dir) = cg.v1_dir("hugetlb") {
        m.hugetlb = hugetlb(dir, r)?;
    }
    Ok(m)
}

fn pids(dir: &Path, r: &Reader<'_>) -> Result<Option<PidsStat>, MetricsError> {
    let Some(current) = r.read_u64(&dir.join("pids.current"))? else {
        return Ok(None);
    };
    let mut p = PidsStat::new();
    p.current = current;
    // containerd reports an unlimited v1 pids.max as 0.
    p.limit = r.read_limit(&dir.join("pids.max"), 0)?.unwrap_or(0);
    Ok(Some(p))
}

fn cpu(
    cpuacct: Option<&Path>,
    cpu: Option<&Path>,
    r: &Reader<'_>,
) -> Result<Option<CPUStat>, MetricsError> {
    let mut usage = None;
    if let Some(dir) = cpuacct {
        if let Some(total) = r.read_u64(&dir.join("cpuacct.usage"))? {
            let mut u = CPUUsage::new();
            u.total = total;
            if let Some(s) = r.read_opt(&dir.join("cpuacct.usage_percpu"))? {
                u.per_cpu = parse_percpu(&s);
            }
            if let Some(s) = r.read_opt(&dir.join("cpuacct.stat"))? {
                (u.user, u.kernel) = parse_cpuacct_stat(&s);
            }
            usage = Some(u);
        }
    }
    let throttling = match cpu {
        Some(dir) => r
            .read_opt(&dir.join("cpu.stat"))?
            .as_deref()
            .map(parse_throttling),
        None => None,
    };
    if usage.is_none() && throttling.is_none() {
        return Ok(None);
    }
    let mut c = CPUStat::new();
    c.usage = MessageField::from_option(usage);
    c.throttling = MessageField::from_option(throttling);
    Ok(Some(c))
}

/// `cpuacct.usage_percpu`: space-separated nanoseconds per CPU.
pub(crate) fn parse_percpu(s: &str) -> Vec<u64> {
    s.split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// `cpuacct.stat` (`user N`, `system N` in ticks) -> (user ns, system ns).
pub(crate) fn parse_cpuacct_stat(s: &str) -> (u64, u64) {
    let (mut user, mut system) = (0, 0);
    for (k, v) in flat_keyed(s) {
        match k {
            "user" => user = v.saturating_mul(NANOS_PER_TICK),
            "system" => system = v.saturating_mul(NANOS_PER_TICK),
            _ => {}
        }
    }
    (user, system)
}

/// `cpu.stat`: CFS bandwidth throttling counters.
pub(crate) fn parse_throttling(s: &str) -> Throttle {
    let mut t = Throttle::new();
    for (k, v) in flat_keyed(s) {
        match k {
            "nr_periods" => t.periods = v,
            "nr_throttled" => t.throttled_periods = v,
            "throttled_time" => t.throttled_time = v,
            _ => {}
        }
    }
    t
}

/// `memory.oom_control`.
pub(crate) fn parse_oom_control(s: &str) -> MemoryOomControl {
    let mut o = MemoryOomControl::new();
    for (k, v) in flat_keyed(s) {
        match k {
            "oom_kill_disable" => o.oom_kill_disable = v,
            "under_oom" => o.under_oom = v,
            "oom_kill" => o.oom_kill = v,
            _ => {}
        }
    }
    o
}

/// Applies `memory.stat` to `m`.
pub(crate) fn parse_memory_stat(s: &str, m: &mut MemoryStat) {
    for (k, v) in flat_keyed(s) {
        let field = match k {
            "cache" => &mut m.cache,
            "rss" => &mut m.rss,
            "rss_huge" => &mut m.rss_huge,
            "mapped_file" => &mut m.mapped_file,
            "dirty" => &mut m.dirty,
            "writeback" => &mut m.writeback,
            "pgpgin" => &mut m.pg_pg_in,
            "pgpgout" => &mut m.pg_pg_out,
            "pgfault" => &mut m.pg_fault,
            "pgmajfault" => &mut m.pg_maj_fault,
            "inactive_anon" => &mut m.inactive_anon,
            "active_anon" => &mut m.active_anon,
            "inactive_file" => &mut m.inactive_file,
            "active_file" => &mut m.active_file,
            "unevictable" => &mut m.unevictable,
            "hierarchical_memory_limit" => &mut m.hierarchical_memory_limit,
            "hierarchical_memsw_limit" => &mut m.hierarchical_swap_limit,
            "total_cache" => &mut m.total_cache,
            "total_rss" => &mut m.total_rss,
            "total_rss_huge" => &mut m.total_rss_huge,
            "total_mapped_file" => &mut m.total_mapped_file,
            "total_dirty" => &mut m.total_dirty,
            "total_writeback" => &mut m.total_writeback,
            "total_pgpgin" => &mut m.total_pg_pg_in,
            "total_pgpgout" => &mut m.total_pg_pg_out,
            "total_pgfault" => &mut m.total_pg_fault,
            "total_pgmajfault" => &mut m.total_pg_maj_fault,
            "total_inactive_anon" => &mut m.total_inactive_anon,
            "total_active_anon" => &mut m.total_active_anon,
            "total_inactive_file" => &mut m.total_inactive_file,
            "total_active_file" => &mut m.total_active_file,
            "total_unevictable" => &mut m.total_unevictable,
            _ => continue,
        };
        *field = v;
    }
}

/// One of `memory.{usage_in_bytes,max_usage_in_bytes,failcnt,limit_in_bytes}`
/// with `prefix` "memory", "memory.memsw", "memory.kmem" or "memory.kmem.tcp";
/// `None` when the usage file is absent (e.g. swap accounting off).
fn memory_entry(
    dir: &Path,
    prefix: &str,
    r: &Reader<'_>,
) -> Result<Option<MemoryEntry>, MetricsError> {
    let Some(usage) = r.read_u64(&dir.join(format!("{prefix}.usage_in_bytes")))? else {
        return Ok(None);
    };
    let mut e = MemoryEntry::new();
    e.usage = usage;
    e.max = r
        .read_u64(&dir.join(format!("{prefix}.max_usage_in_bytes")))?
        .unwrap_or(0);
    e.failcnt = r
        .read_u64(&dir.join(format!("{prefix}.failcnt")))?
        .unwrap_or(0);
    e.limit = r
        .read_u64(&dir.join(format!("{prefix}.limit_in_bytes")))?
        .unwrap_or(0);
    Ok(Some(e))
}

fn memory(dir: &Path, r: &Reader<'_>) -> Result<Option<MemoryStat>, MetricsError> {
    let stat = r.read_opt(&dir.join("memory.stat"))?;
    let usage = memory_entry(dir, "memory", r)?;
    if stat.is_none() && usage.is_none() {
        return Ok(None);
    }
    let mut m = MemoryStat::new();
    if let Some(s) = stat {
        parse_memory_stat(&s, &mut m);
    }
    m.usage = MessageField::from_option(usage);
    m.swap = MessageField::from_option(memory_entry(dir, "memory.memsw", r)?);
    m.kernel = MessageField::from_option(memory_entry(dir, "memory.kmem", r)?);
    m.kernel_tcp = MessageField::from_option(memory_entry(dir, "memory.kmem.tcp", r)?);
    Ok(Some(m))
}

/// Parses a blkio stat file: `MAJ:MIN Op value` lines (or `MAJ:MIN value`
/// for the op-less files), skipping the `Total` line and malformed lines.
/// `device` is left empty for the caller to fill.
pub(crate) fn parse_blkio(s: &str) -> Vec<BlkIOEntry> {
    s.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (dev, op, value) = match fields.as_slice() {
                [dev, op, value] => (*dev, *op, *value),
                [dev, value] => (*dev, "", *value),
                _ => return None,
            };
            let (major, minor) = dev.split_once(':')?;
            let mut e = BlkIOEntry::new();
            e.major = major.parse().ok()?;
            e.minor = minor.parse().ok()?;
            e.op = op.to_string();
            e.value = value.parse().ok()?;
            Some(e)
        })
        .collect()
}

/// Block device node names (`/dev/sda`) by major:minor, from
/// `/sys/dev/block/<maj>:<min>/uevent`, cached for one collection.
struct DeviceNames(HashMap<(u64, u64), String>);

impl DeviceNames {
    fn name(&mut self, major: u64, minor: u64) -> String {
        self.0
            .entry((major, minor))
            .or_insert_with(|| {
                std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
                    .ok()
                    .and_then(|u| {
                        u.lines()
                            .find_map(|l| l.strip_prefix("DEVNAME="))
                            .map(|n| format!("/dev/{n}"))
                    })
                    .unwrap_or_default()
            })
            .clone()
    }
}

fn blkio(dir: &Path, r: &Reader<'_>) -> Result<Option<BlkIOStat>, MetricsError> {
    let mut names = DeviceNames(HashMap::new());
    let mut read = |file: &str| -> Result<Option<Vec<BlkIOEntry>>, MetricsError> {
        Ok(r.read_opt(&dir.join(file))?.map(|s| {
            let mut entries = parse_blkio(&s);
            for e in &mut entries {
                e.device = names.name(e.major, e.minor);
            }
            entries
        }))
    };
    let mut b = BlkIOStat::new();
    let mut any = false;
    // CFQ/BFQ-era kernels keep the full proportional-weight statistics; when
    // they are there and non-empty, containerd reports them.
    let cfq = read("blkio.io_serviced_recursive")?.filter(|e| !e.is_empty());
    if let Some(serviced) = cfq {
        any = true;
        b.io_serviced_recursive = serviced;
        b.io_service_bytes_recursive =
            read("blkio.io_service_bytes_recursive")?.unwrap_or_default();
        b.io_queued_recursive = read("blkio.io_queued_recursive")?.unwrap_or_default();
        b.io_service_time_recursive = read("blkio.io_service_time_recursive")?.unwrap_or_default();
        b.io_wait_time_recursive = read("blkio.io_wait_time_recursive")?.unwrap_or_default();
        b.io_merged_recursive = read("blkio.io_merged_recursive")?.unwrap_or_default();
        b.io_time_recursive = read("blkio.io_time_recursive")?.unwrap_or_default();
        b.sectors_recursive = read("blkio.sectors_recursive")?.unwrap_or_default();
    } else {
        if let Some(e) = read("blkio.throttle.io_service_bytes_recursive")? {
            any = true;
            b.io_service_bytes_recursive = e;
        }
        if let Some(e) = read("blkio.throttle.io_serviced_recursive")? {
            any = true;
            b.io_serviced_recursive = e;
        }
    }
    Ok(any.then_some(b))
}

fn hugetlb(dir: &Path, r: &Reader<'_>) -> Result<Vec<HugetlbStat>, MetricsError> {
    let mut out = Vec::new();
    for size in hugetlb_sizes(dir, ".usage_in_bytes")? {
        let mut h = HugetlbStat::new();
        h.usage = r
            .read_u64(&dir.join(format!("hugetlb.{size}.usage_in_bytes")))?
            .unwrap_or(0);
        h.max = r
            .read_u64(&dir.join(format!("hugetlb.{size}.max_usage_in_bytes")))?
            .unwrap_or(0);
        h.failcnt = r
            .read_u64(&dir.join(format!("hugetlb.{size}.failcnt")))?
            .unwrap_or(0);
        h.pagesize = size;
        out.push(h);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerd::cgroups::{parse_mountinfo, ProcessCgroups};

    const MEMORY_STAT: &str = "\
cache 1000
rss 2000
rss_huge 0
shmem 5
mapped_file 300
dirty 4
writeback 1
pgpgin 11
pgpgout 12
pgfault 13
pgmajfault 14
inactive_anon 15
active_anon 16
inactive_file 17
active_file 18
unevictable 19
hierarchical_memory_limit 9223372036854771712
hierarchical_memsw_limit 9223372036854771712
total_cache 1001
total_rss 2001
total_rss_huge 2
total_mapped_file 301
total_dirty 5
total_writeback 2
total_pgpgin 21
total_pgpgout 22
total_pgfault 23
total_pgmajfault 24
total_inactive_anon 25
total_active_anon 26
total_inactive_file 27
total_active_file 28
total_unevictable 29
";

    #[test]
    fn memory_stat_fields() {
        let mut m = MemoryStat::new();
        parse_memory_stat(MEMORY_STAT, &mut m);
        assert_eq!(m.cache, 1000);
        assert_eq!(m.rss, 2000);
        assert_eq!(m.mapped_file, 300);
        assert_eq!(m.pg_pg_in, 11);
        assert_eq!(m.pg_maj_fault, 14);
        assert_eq!(m.unevictable, 19);
        assert_eq!(m.hierarchical_memory_limit, 9223372036854771712);
        assert_eq!(m.hierarchical_swap_limit, 9223372036854771712);
        assert_eq!(m.total_rss_huge, 2);
        assert_eq!(m.total_pg_maj_fault, 24);
        assert_eq!(m.total_unevictable, 29);
    }

    #[test]
    fn cpu_parsers() {
        assert_eq!(parse_percpu("100 200 300 \n"), vec![100, 200, 300]);
        assert_eq!(parse_percpu(""), Vec::<u64>::new());
        assert_eq!(
            parse_cpuacct_stat("user 150\nsystem 25\n"),
            (1_500_000_000, 250_000_000)
        );
        assert_eq!(
            parse_cpuacct_stat("user 18446744073709551615\n").0,
            u64::MAX
        );
        let t = parse_throttling(
            "nr_periods 10\nnr_throttled 3\nthrottled_time 123456\nnr_bursts 0\nburst_time 0\n",
        );
        assert_eq!(
            (t.periods, t.throttled_periods, t.throttled_time),
            (10, 3, 123456)
        );
        let o = parse_oom_control("oom_kill_disable 0\nunder_oom 1\noom_kill 4\n");
        assert_eq!((o.oom_kill_disable, o.under_oom, o.oom_kill), (0, 1, 4));
    }

    #[test]
    fn blkio_parser() {
        let e = parse_blkio(
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n8:0 Total 12288\n253:1 Read 1\nTotal 12289\n",
        );
        assert_eq!(e.len(), 7);
        assert_eq!(
            (e[0].major, e[0].minor, e[0].op.as_str(), e[0].value),
            (8, 0, "Read", 4096)
        );
        assert_eq!((e[6].major, e[6].minor, e[6].value), (253, 1, 1));
        let e = parse_blkio("8:0 77\nbad line here too\nx:y 5\n");
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].op.as_str(), e[0].value), ("", 77));
        assert!(parse_blkio("").is_empty());
    }

    /// A fake v1 tree: every controller in its own directory of a tempdir.
    #[test]
    fn fake_tree() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let mut mountinfo = String::new();
        for (i, c) in ["pids", "cpu", "cpuacct", "memory", "blkio", "hugetlb"]
            .iter()
            .enumerate()
        {
            std::fs::create_dir_all(r.join(c).join("ctr")).unwrap();
            mountinfo.push_str(&format!(
                "{i} 1 0:{i} / {} rw - cgroup cgroup rw,{c}\n",
                r.join(c).display()
            ));
        }
        let w =
            |c: &str, f: &str, v: &str| std::fs::write(r.join(c).join("ctr").join(f), v).unwrap();
        w("pids", "pids.current", "3\n");
        w("pids", "pids.max", "max\n");
        w("cpuacct", "cpuacct.usage", "5000\n");
        w("cpuacct", "cpuacct.usage_percpu", "2000 3000\n");
        w("cpuacct", "cpuacct.stat", "user 1\nsystem 2\n");
        w(
            "cpu",
            "cpu.stat",
            "nr_periods 4\nnr_throttled 1\nthrottled_time 99\n",
        );
        w("memory", "memory.stat", MEMORY_STAT);
        w("memory", "memory.usage_in_bytes", "4096\n");
        w("memory", "memory.max_usage_in_bytes", "8192\n");
        w("memory", "memory.failcnt", "2\n");
        w("memory", "memory.limit_in_bytes", "9223372036854771712\n");
        w("memory", "memory.kmem.usage_in_bytes", "10\n");
        w(
            "memory",
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        w("blkio", "blkio.io_serviced_recursive", "Total 0\n");
        w(
            "blkio",
            "blkio.throttle.io_service_bytes_recursive",
            "8:0 Read 10\n8:0 Write 20\nTotal 30\n",
        );
        w(
            "blkio",
            "blkio.throttle.io_serviced_recursive",
            "8:0 Read 1\n8:0 Write 2\nTotal 3\n",
        );
        w("hugetlb", "hugetlb.2MB.usage_in_bytes", "2097152\n");
        w("hugetlb", "hugetlb.2MB.max_usage_in_bytes", "4194304\n");
        w("hugetlb", "hugetlb.2MB.failcnt", "1\n");
        w("hugetlb", "hugetlb.2MB.rsvd.usage_in_bytes", "0\n");
        w("hugetlb", "hugetlb.1GB.usage_in_bytes", "0\n");

        let cg = ProcessCgroups::parse(
            "6:hugetlb:/ctr\n5:blkio:/ctr\n4:memory:/ctr\n3:cpuacct:/ctr\n2:cpu:/ctr\n1:pids:/ctr\n",
            &parse_mountinfo(&mountinfo),
        );
        let m = metrics(&cg, &Reader::fresh()).unwrap();
        assert_eq!((m.pids.current, m.pids.limit), (3, 0));
        assert_eq!(m.cpu.usage.total, 5000);
        assert_eq!(m.cpu.usage.per_cpu, vec![2000, 3000]);
        assert_eq!(
            (m.cpu.usage.user, m.cpu.usage.kernel),
            (10_000_000, 20_000_000)
        );
        assert_eq!(m.cpu.throttling.throttled_time, 99);
        assert_eq!(m.memory.cache, 1000);
        let u = &m.memory.usage;
        assert_eq!(
            (u.usage, u.max, u.failcnt, u.limit),
            (4096, 8192, 2, 9223372036854771712)
        );
        assert!(
            m.memory.swap.is_none(),
            "no memsw files: swap accounting off"
        );
        assert_eq!(m.memory.kernel.usage, 10);
        assert_eq!(m.memory_oom_control.oom_kill, 1);
        assert_eq!(m.blkio.io_service_bytes_recursive.len(), 2);
        assert_eq!(m.blkio.io_serviced_recursive[1].value, 2);
        assert_eq!(m.hugetlb.len(), 2);
        assert_eq!(m.hugetlb[1].pagesize, "2MB");
        assert_eq!(
            (m.hugetlb[1].usage, m.hugetlb[1].max, m.hugetlb[1].failcnt),
            (2097152, 4194304, 1)
        );

        // Through kept files, the same metrics; a second collection reads the files
        // again (here rewritten) through the descriptors the first one left open.
        let kept = crate::containerd::cgroups::KeptFiles::default();
        let through_kept = metrics(&cg, &Reader::kept(&kept)).unwrap();
        assert_eq!(through_kept, m);
        w("cpuacct", "cpuacct.usage", "7000\n");
        w("memory", "memory.usage_in_bytes", "12288\n");
        let m2 = metrics(&cg, &Reader::kept(&kept)).unwrap();
        assert_eq!(m2.cpu.usage.total, 7000);
        assert_eq!(m2.memory.usage.usage, 12288);
        assert!(m2.memory.swap.is_none(), "an absent file stays absent");

        // Nothing mounted at all: empty metrics, no error.
        let m = metrics(
            &ProcessCgroups::parse("4:memory:/ctr\n", &[]),
            &Reader::fresh(),
        )
        .unwrap();
        assert!(m.memory.is_none() && m.cpu.is_none() && m.pids.is_none());
        // Controller mounted but cgroup directory gone: fields unset, no error.
        let cg = ProcessCgroups::parse(
            "4:memory:/gone\n1:pids:/gone\n",
            &parse_mountinfo(&mountinfo),
        );
        let m = metrics(&cg, &Reader::fresh()).unwrap();
        assert!(m.memory.is_none() && m.pids.is_none());
    }
}

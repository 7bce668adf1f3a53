//! cgroup v2 metrics (`io.containerd.cgroups.v2.Metrics`), filled the way
//! containerd/cgroups' cgroup2 manager fills them. Times stay in
//! microseconds, as the message's `*_usec` fields say; `max` limits are
//! reported as `u64::MAX`, as containerd does.

use std::path::Path;

use containerd_shim_protos::cgroups_v2::metrics::{
    CPUStat, HugeTlbStat, IOEntry, IOStat, MemoryEvents, MemoryStat, Metrics, PSIData, PSIStats,
    PidsStat,
};
use protobuf::MessageField;

use crate::containerd::cgroups::files::{
    flat_keyed, hugetlb_sizes, sort_by_page_size, MetricsError, Reader,
};

/// Builds v2 metrics for the cgroup directory `dir`.
pub(crate) fn metrics(dir: &Path, r: &Reader<'_>) -> Result<Metrics, MetricsError> {
    let mut m = Metrics::new();
    if let Some(current) = r.read_u64(&dir.join("pids.current"))? {
        let mut p = PidsStat::new();
        p.current = current;
        p.limit = r.read_limit(&dir.join("pids.max"), u64::MAX)?.unwrap_or(0);
        m.pids = MessageField::some(p);
    }
    if let Some(s) = r.read_opt(&dir.join("cpu.stat"))? {
        let mut c = parse_cpu_stat(&s);
        c.psi = MessageField::from_option(read_psi(dir, "cpu.pressure", r)?);
        m.cpu = MessageField::some(c);
    }
    m.memory = MessageField::from_option(memory(dir, r)?);
    if let Some(s) = r.read_opt(&dir.join("memory.events"))? {
        m.memory_events = MessageField::some(parse_memory_events(&s));
    }
    if let Some(s) = r.read_opt(&dir.join("io.stat"))? {
        let mut io = IOStat::new();
        io.usage = parse_io_stat(&s);
        io.psi = MessageField::from_option(read_psi(dir, "io.pressure", r)?);
        m.io = MessageField::some(io);
    }
    m.hugetlb = hugetlb(dir, r)?;
    Ok(m)
}

/// `cpu.stat`.
pub(crate) fn parse_cpu_stat(s: &str) -> CPUStat {
    let mut c = CPUStat::new();
    for (k, v) in flat_keyed(s) {
        let field = match k {
            "usage_usec" => &mut c.usage_usec,
            "user_usec" => &mut c.user_usec,
            "system_usec" => &mut c.system_usec,
            "nr_periods" => &mut c.nr_periods,
            "nr_throttled" => &mut c.nr_throttled,
            "throttled_usec" => &mut c.throttled_usec,
            "nr_bursts" => &mut c.nr_bursts,
            "burst_usec" => &mut c.burst_usec,
            _ => continue,
        };
        *field = v;
    }
    c
}

/// Applies `memory.stat` to `m`.
pub(crate) fn parse_memory_stat(s: &str, m: &mut MemoryStat) {
    // Kernels since 5.9 split some counters into _anon/_file halves; their sum
    // is the old total, used when the old key is not there.
    let (mut refault, mut activate) = (None::<u64>, None::<u64>);
    let (mut refault_split, mut activate_split) = (0u64, 0u64);
    for (k, v) in flat_keyed(s) {
        let field = match k {
            "anon" => &mut m.anon,
            "file" => &mut m.file,
            "kernel_stack" => &mut m.kernel_stack,
            "slab" => &mut m.slab,
            "sock" => &mut m.sock,
            "shmem" => &mut m.shmem,
            "file_mapped" => &mut m.file_mapped,
            "file_dirty" => &mut m.file_dirty,
            "file_writeback" => &mut m.file_writeback,
            "anon_thp" => &mut m.anon_thp,
            "inactive_anon" => &mut m.inactive_anon,
            "active_anon" => &mut m.active_anon,
            "inactive_file" => &mut m.inactive_file,
            "active_file" => &mut m.active_file,
            "unevictable" => &mut m.unevictable,
            "slab_reclaimable" => &mut m.slab_reclaimable,
            "slab_unreclaimable" => &mut m.slab_unreclaimable,
            "pgfault" => &mut m.pgfault,
            "pgmajfault" => &mut m.pgmajfault,
            "workingset_nodereclaim" => &mut m.workingset_nodereclaim,
            "pgrefill" => &mut m.pgrefill,
            "pgscan" => &mut m.pgscan,
            "pgsteal" => &mut m.pgsteal,
            "pgactivate" => &mut m.pgactivate,
            "pgdeactivate" => &mut m.pgdeactivate,
            "pglazyfree" => &mut m.pglazyfree,
            "pglazyfreed" => &mut m.pglazyfreed,
            "thp_fault_alloc" => &mut m.thp_fault_alloc,
            "thp_collapse_alloc" => &mut m.thp_collapse_alloc,
            "workingset_refault" => {
                refault = Some(v);
                continue;
            }
            "workingset_activate" => {
                activate = Some(v);
                continue;
            }
            "workingset_refault_anon" | "workingset_refault_file" => {
                refault_split = refault_split.saturating_add(v);
                continue;
            }
            "workingset_activate_anon" | "workingset_activate_file" => {
                activate_split = activate_split.saturating_add(v);
                continue;
            }
            _ => continue,
        };
        *field = v;
    }
    m.workingset_refault = refault.unwrap_or(refault_split);
    m.workingset_activate = activate.unwrap_or(activate_split);
}

fn memory(dir: &Path, r: &Reader<'_>) -> Result<Option<MemoryStat>, MetricsError> {
    let stat = r.read_opt(&dir.join("memory.stat"))?;
    let usage = r.read_u64(&dir.join("memory.current"))?;
    if stat.is_none() && usage.is_none() {
        return Ok(None);
    }
    let mut m = MemoryStat::new();
    if let Some(s) = stat {
        parse_memory_stat(&s, &mut m);
    }
    m.usage = usage.unwrap_or(0);
    m.usage_limit = r
        .read_limit(&dir.join("memory.max"), u64::MAX)?
        .unwrap_or(0);
    m.swap_usage = r.read_u64(&dir.join("memory.swap.current"))?.unwrap_or(0);
    m.swap_limit = r
        .read_limit(&dir.join("memory.swap.max"), u64::MAX)?
        .unwrap_or(0);
    // memory.peak / memory.swap.peak exist since Linux 5.19 / 6.5.
    m.max_usage = r.read_u64(&dir.join("memory.peak"))?.unwrap_or(0);
    m.swap_max_usage = r.read_u64(&dir.join("memory.swap.peak"))?.unwrap_or(0);
    m.psi = MessageField::from_option(read_psi(dir, "memory.pressure", r)?);
    Ok(Some(m))
}

/// `memory.events`.
pub(crate) fn parse_memory_events(s: &str) -> MemoryEvents {
    let mut e = MemoryEvents::new();
    for (k, v) in flat_keyed(s) {
        let field = match k {
            "low" => &mut e.low,
            "high" => &mut e.high,
            "max" => &mut e.max,
            "oom" => &mut e.oom,
            "oom_kill" => &mut e.oom_kill,
            "oom_group_kill" => &mut e.oom_group_kill,
            _ => continue,
        };
        *field = v;
    }
    e
}

/// `io.stat`: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N` lines.
pub(crate) fn parse_io_stat(s: &str) -> Vec<IOEntry> {
    s.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (major, minor) = fields.next()?.split_once(':')?;
            let mut e = IOEntry::new();
            e.major = major.parse().ok()?;
            e.minor = minor.parse().ok()?;
            for kv in fields {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let Ok(v) = v.parse() else {
                    continue;
                };
                match k {
                    "rbytes" => e.rbytes = v,
                    "wbytes" => e.wbytes = v,
                    "rios" => e.rios = v,
                    "wios" => e.wios = v,
                    _ => {}
                }
            }
            Some(e)
        })
        .collect()
}

/// A PSI file (`cpu.pressure` etc.): `some|full avg10=.. avg60=.. avg300=.. total=..`.
pub(crate) fn parse_psi(s: &str) -> PSIStats {
    let mut psi = PSIStats::new();
    for line in s.lines() {
        let mut fields = line.split_whitespace();
        let slot = match fields.next() {
            Some("some") => &mut psi.some,
            Some("full") => &mut psi.full,
            _ => continue,
        };
        let mut d = PSIData::new();
        for kv in fields {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            match k {
                "avg10" => d.avg10 = v.parse().unwrap_or(0.0),
                "avg60" => d.avg60 = v.parse().unwrap_or(0.0),
                "avg300" => d.avg300 = v.parse().unwrap_or(0.0),
                "total" => d.total = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        *slot = MessageField::some(d);
    }
    psi
}

fn read_psi(dir: &Path, file: &str, r: &Reader<'_>) -> Result<Option<PSIStats>, MetricsError> {
    Ok(r.read_opt(&dir.join(file))?.as_deref().map(parse_psi))
}

fn hugetlb(dir: &Path, r: &Reader<'_>) -> Result<Vec<HugeTlbStat>, MetricsError> {
    let mut out = Vec::new();
    let mut sizes = hugetlb_sizes(dir, ".current")?;
    sort_by_page_size(&mut sizes);
    for size in sizes {
        let mut h = HugeTlbStat::new();
        h.current = r
            .read_u64(&dir.join(format!("hugetlb.{size}.current")))?
            .unwrap_or(0);
        h.max = r
            .read_limit(&dir.join(format!("hugetlb.{size}.max")), u64::MAX)?
            .unwrap_or(0);
        // The "max" count in hugetlb.<size>.events is v2's allocation-failure count.
        h.failcnt = r
            .read_opt(&dir.join(format!("hugetlb.{size}.events")))?
            .as_deref()
            .and_then(|s| flat_keyed(s).find(|(k, _)| *k == "max").map(|(_, v)| v))
            .unwrap_or(0);
        h.pagesize = size;
        out.push(h);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMORY_STAT: &str = "\
anon 1000
file 2000
kernel_stack 3
slab 4
sock 5
shmem 6
file_mapped 7
file_dirty 8
file_writeback 9
anon_thp 10
inactive_anon 11
active_anon 12
inactive_file 13
active_file 14
unevictable 15
slab_reclaimable 16
slab_unreclaimable 17
pgfault 18
pgmajfault 19
workingset_refault_anon 20
workingset_refault_file 1
workingset_activate_anon 21
workingset_activate_file 2
workingset_nodereclaim 22
pgrefill 23
pgscan 24
pgsteal 25
pgactivate 26
pgdeactivate 27
pglazyfree 28
pglazyfreed 29
thp_fault_alloc 30
thp_collapse_alloc 31
";

    #[test]
    fn memory_stat_fields() {
        let mut m = MemoryStat::new();
        parse_memory_stat(MEMORY_STAT, &mut m);
        assert_eq!((m.anon, m.file, m.unevictable), (1000, 2000, 15));
        assert_eq!((m.pgfault, m.pgmajfault), (18, 19));
        assert_eq!(
            m.workingset_refault, 21,
            "anon+file when the total is absent"
        );
        assert_eq!(m.workingset_activate, 23);
        assert_eq!((m.thp_fault_alloc, m.thp_collapse_alloc), (30, 31));
        // Older kernels' single key wins.
        let mut m = MemoryStat::new();
        parse_memory_stat("workingset_refault 5\nworkingset_refault_anon 1\n", &mut m);
        assert_eq!(m.workingset_refault, 5);
    }

    #[test]
    fn cpu_and_events() {
        let c = parse_cpu_stat(
            "usage_usec 100\nuser_usec 60\nsystem_usec 40\nnr_periods 5\nnr_throttled 2\nthrottled_usec 7\nnr_bursts 1\nburst_usec 3\ncore_sched.force_idle_usec 0\n",
        );
        assert_eq!((c.usage_usec, c.user_usec, c.system_usec), (100, 60, 40));
        assert_eq!((c.nr_periods, c.nr_throttled, c.throttled_usec), (5, 2, 7));
        assert_eq!((c.nr_bursts, c.burst_usec), (1, 3));
        let e = parse_memory_events("low 1\nhigh 2\nmax 3\noom 4\noom_kill 5\noom_group_kill 6\n");
        assert_eq!(
            (e.low, e.high, e.max, e.oom, e.oom_kill, e.oom_group_kill),
            (1, 2, 3, 4, 5, 6)
        );
    }

    #[test]
    fn io_stat_parser() {
        let e = parse_io_stat(
            "8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n253:0 rbytes=1 wbytes=2 rios=3 wios=4\nbad\nx:1 rbytes=1\n8:0 rbytes=junk\n",
        );
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e[0].major, e[0].minor, e[0].rbytes, e[0].wbytes),
            (8, 16, 1459200, 314773504)
        );
        assert_eq!((e[0].rios, e[0].wios), (192, 353));
        assert_eq!((e[1].major, e[1].wios), (253, 4));
        assert_eq!(e[2].rbytes, 0);
    }

    #[test]
    fn psi_parser() {
        let p = parse_psi(
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
        );
        assert_eq!(p.some.avg10, 1.5);
        assert_eq!(p.some.avg60, 0.25);
        assert_eq!(p.some.total, 12345);
        assert_eq!(p.full.total, 7);
        let p = parse_psi("some avg10=x total=1\n");
        assert_eq!((p.some.avg10, p.some.total), (0.0, 1));
        assert!(p.full.is_none());
    }

    #[test]
    fn fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let w = |f: &str, v: &str| std::fs::write(d.join(f), v).unwrap();
        w("pids.current", "4\n");
        w("pids.max", "max\n");
        w("cpu.stat", "usage_usec 100\nuser_usec 60\nsystem_usec 40\n");
        w(
            "cpu.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n",
        );
        w("memory.stat", MEMORY_STAT);
        w("memory.current", "4096\n");
        w("memory.max", "8388608\n");
        w("memory.swap.current", "0\n");
        w("memory.swap.max", "max\n");
        w("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
        w(
            "io.stat",
            "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n",
        );
        w("hugetlb.2MB.current", "0\n");
        w("hugetlb.2MB.max", "max\n");
        w("hugetlb.2MB.events", "max 2\n");
        w("hugetlb.2MB.rsvd.current", "0\n");
        let m = metrics(d, &Reader::fresh()).unwrap();
        assert_eq!((m.pids.current, m.pids.limit), (4, u64::MAX));
        assert_eq!(m.cpu.usage_usec, 100);
        assert_eq!(m.cpu.psi.some.total, 9);
        assert_eq!((m.memory.usage, m.memory.usage_limit), (4096, 8388608));
        assert_eq!((m.memory.swap_usage, m.memory.swap_limit), (0, u64::MAX));
        assert_eq!(m.memory.max_usage, 0, "no memory.peak on this kernel");
        assert_eq!(m.memory.anon, 1000);
        assert!(m.memory.psi.is_none());
        assert_eq!((m.memory_events.max, m.memory_events.oom_kill), (3, 1));
        assert_eq!(m.io.usage.len(), 1);
        assert_eq!(m.io.usage[0].wios, 4);
        assert_eq!(m.hugetlb.len(), 1);
        assert_eq!(
            (
                m.hugetlb[0].pagesize.as_str(),
                m.hugetlb[0].max,
                m.hugetlb[0].failcnt
            ),
            ("2MB", u64::MAX, 2)
        );

        // A removed cgroup: all absent, no error.
        let m = metrics(&d.join("gone"), &Reader::fresh()).unwrap();
        assert!(m.pids.is_none() && m.cpu.is_none() && m.memory.is_none() && m.io.is_none());
        assert!(m.hugetlb.is_empty());
    }

    /// The real cgroup2 mount of this machine, whatever controllers it has: every file
    /// there is read into its metric, and this test's own CPU time shows in `cpu.stat`.
    #[test]
    fn this_machine_unified() {
        let cg = crate::containerd::cgroups::of_pid(nix::unistd::getpid().as_raw())
            .expect("this process's /proc/<pid>/cgroup");
        let Some(dir) = cg.unified_dir() else {
            test_skip::skip("no cgroup2 mount");
            return;
        };
        let m = metrics(dir, &Reader::fresh()).unwrap();
        assert_eq!(m.cpu.is_some(), dir.join("cpu.stat").exists(), "{m:#?}");
        assert_eq!(
            m.pids.is_some(),
            dir.join("pids.current").exists(),
            "{m:#?}"
        );
        assert_eq!(
            m.memory_events.is_some(),
            dir.join("memory.events").exists(),
            "{m:#?}"
        );
        assert_eq!(m.io.is_some(), dir.join("io.stat").exists(), "{m:#?}");
        if let Some(cpu) = m.cpu.as_ref() {
            // This process runs in that cgroup (or below it): usage is hierarchical.
            assert!(cpu.usage_usec > 0, "{m:#?}");
        }
    }
}

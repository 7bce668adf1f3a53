#!/usr/bin/env python3
"""make bench: tether (containerd-shim-tether-v2) against containerd's Go shim
(containerd-shim-runc-v2), side by side, in one private containerd.

What it measures (both shims interleaved round-robin, so the machine's drift cancels):
  - run-to-exit latency of `ctr run --rm ... /bin/true` (median, p90), plus the floor:
    `runc run` (create+start+wait+delete) of a bundle with the same rootfs;
  - `ctr run -d` start, `ctr task exec` and `task delete --force` + `container delete`;
  - stdout throughput: 256 MiB from dd in the container through `ctr run` into a counter;
  - TTY throughput: BENCH_TTY_MIB (32) MiB from dd through the container's pty and `ctr
    run -t` (its console a pty of ours), BENCH_TTY_ROUNDS (7) interleaved rounds per shim,
    at load 0 and with a busy loop on every core: the rate, the shim's CPU time, how long
    after the last byte ctr exits (its Wait answered, the task deleted), and the runs that
    lost the end of the output;
  - the output spool (tether only; the Go shim has none): what a container writes while
    nobody reads (`ctr run -d`, dd of BENCH_SPOOL_MIB into the spool, MiB/s as dd
    measures it), the shim's RSS growth meanwhile, and the drain rate into the next
    reader (`ctr task attach`); for the Go shim, how much the same writer gets out in
    the same time (it blocks once the pipe and FIFO are full);
  - with BENCH_TETHER_BASELINE (another tether binary, e.g. a build of an older commit):
    the stdout throughput of both tether binaries in interleaved rounds, and their ratio;
  - memory with N running containers per shim (after one exec into each): per-shim RSS,
    PSS, USS (smaps_rollup), threads, total PSS/USS, USS per extra running container;
  - the stripped binary size of both shims.

Everything it starts (containerd, containers, shims, runc state, cgroups, the temp dir)
is removed at the end, also on Ctrl-C / SIGTERM.

Usage: tests/scripts/bench.py [--iterations N] [--containers 1,30[,100]] [--output FILE]
                              [--only PHASES] [--baseline OLD_TETHER] [SHIM_BINARY]
Environment: BENCH_ITERATIONS (30), BENCH_CONTAINERS ("1,30"), BENCH_OUTPUT
(<repo>/bench-results.json), BENCH_WARMUP (3), BENCH_THROUGHPUT_RUNS (3),
BENCH_GO_SHIM (containerd-shim-runc-v2 found on PATH; another tether binary works too: it
then runs as io.containerd.runc.v2, which changes nothing in a shim, for before/after
figures of every phase), BENCH_SPOOL_MIB (256),
BENCH_TETHER_BASELINE (none), BENCH_BASELINE_ROUNDS (9), BENCH_BULK (30),
BENCH_BULK_ROUNDS (3), BENCH_ONLY (every phase: sizes, run_to_exit, lifecycle, bulk,
throughput, tty, spool, baseline, memory, pods, upgrade).
"""

import argparse
import concurrent.futures
import datetime
import fcntl
import glob
import hashlib
import json
import os
import platform
import pty
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TETHER_NAME = "containerd-shim-tether-v2"
# The baseline tether binary runs under a runtime name of its own.
BASELINE_NAME = "containerd-shim-tetherbase-v2"
GO_NAME = "containerd-shim-runc-v2"
RUNC_STATE = "/run/containerd/runc"
SHIM_SOCKET_DIR = "/run/containerd/s"
DD_MIB = 256
DD_BYTES = DD_MIB * 1024 * 1024
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CMD_TIMEOUT = 120
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
COUNTER_PIPE_SIZE = 1 << 20
PHASES = ("sizes", "run_to_exit", "lifecycle", "bulk", "throughput", "tty", "spool", "baseline",
          "memory", "pods", "upgrade")
# Live upgrades of one pod's shim in the upgrade phase (tether only: no other shim can).
UPGRADE_ROUNDS = 10


# A pod as CRI makes it: the pause container and 3 others, in one shim (grouped by the
# sandbox id annotation, which containerd's CRI sets on every container of a pod).
POD_CONTAINERS = 4
SANDBOX_ANNOTATION = "io.kubernetes.cri.sandbox-id"

def default_shim():
    """make build's static binary: target/<host triple>/release/containerd-shim-tether-v2."""
    try:
        info = subprocess.run(["rustc", "-vV"], capture_output=True, text=True).stdout
        host = next(l.split()[1] for l in info.splitlines() if l.startswith("host:"))
        return f"{TOP}/target/{host}/release/{TETHER_NAME}"
    except (OSError, StopIteration):
        return f"{TOP}/target/release/{TETHER_NAME}"


class BenchError(Exception):
    pass


def log(msg=""):
    print(msg, flush=True)


def progress(msg):
    sys.stdout.write(msg)
    sys.stdout.flush()


def run(cmd, timeout=CMD_TIMEOUT, check=True, **kw):
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    try:
        p = subprocess.run(cmd, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"timed out after {timeout}s: {' '.join(cmd)}") from e
    if check and p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip() if isinstance(p.stderr, bytes) else ""
        raise BenchError(f"exit {p.returncode}: {' '.join(cmd)}\n  {err}")
    return p


def summary(samples):
    s = sorted(samples)
    out = {"n": len(s), "median": statistics.median(s), "min": s[0], "max": s[-1]}
    out["p90"] = statistics.quantiles(s, n=10, method="inclusive")[8] if len(s) > 1 else s[0]
    return out


def throughput_summary(runs):
    """Per runner: its throughput runs, how many went right, and their medians."""
    out = {}
    for s, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        out[s] = {
            "runs": rs,
            "ok_runs": len(ok),
            "median_mib_s": statistics.median(r["mib_s"] for r in ok) if ok else None,
            "median_mib_s_total": statistics.median(r["mib_s_total"] for r in ok) if ok else None,
        }
        cpu = [r["shim_cpu_ms"] for r in ok if "shim_cpu_ms" in r]
        if cpu:
            out[s]["median_shim_cpu_ms"] = statistics.median(cpu)
    return out


def rotated(items, i):
    k = i % len(items)
    return items[k:] + items[:k]


def cgroup_mode():
    fstypes = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            fstypes[parts[1]] = parts[2]
    if fstypes.get("/sys/fs/cgroup") == "cgroup2":
        return "v2 (unified)"
    if fstypes.get("/sys/fs/cgroup/unified") == "cgroup2":
        return "v1 (hybrid)"
    return "v1 (legacy)"


def read_first_line(path, default=""):
    try:
        with open(path) as f:
            return f.readline().strip()
    except OSError:
        return default


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def shim_processes(ns, subcommands=False):
    """(pid, binary basename) of every shim process serving namespace `ns` (with
    `subcommands`, also its `start` and `delete` runs)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        args = proc_cmdline(entry)
        if not args or not os.path.basename(args[0]).startswith("containerd-shim"):
            continue
        served = None
        for j, a in enumerate(args):
            if a == "-namespace" and j + 1 < len(args):
                served = args[j + 1]
            elif a.startswith("-namespace="):
                served = a.split("=", 1)[1]
        if served == ns and (subcommands or "delete" not in args):
            found.append((int(entry), os.path.basename(args[0])))
    return found


def same_binary_processes(path):
    """Pids of every process whose executable is the file `path`."""
    st = os.stat(path)
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                e = os.stat(f"/proc/{entry}/exe")
            except OSError:
                continue
            if (e.st_dev, e.st_ino) == (st.st_dev, st.st_ino):
                pids.append(int(entry))
    return pids


def process_cpu_ns(pid):
    """The CPU time (ns, all threads, from schedstat) of process `pid`; None if unknown."""
    if pid is None:
        return None
    try:
        total = 0
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        return total
    except (OSError, ValueError, IndexError):
        return None


def reaped_children_cpu_ns(pid):
    """The CPU time (ns) of the reaped children of process `pid` (`cutime` + `cstime`):
    for a shim, the runc runs it waited for. 0 if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[13]) + int(fields[14])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0


def shim_memory(pid):
    """RSS/PSS/USS (KiB) from smaps_rollup and the thread count of one process."""
    m = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                m[parts[0].rstrip(":")] = int(parts[1])
    threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
    return {
        "pid": pid,
        "rss_kib": m.get("Rss", 0),
        "pss_kib": m.get("Pss", 0),
        "uss_kib": m.get("Private_Clean", 0) + m.get("Private_Dirty", 0),
        "threads": threads,
    }


class Bench:
    def __init__(self, args):
        self.args = args
        self.tether_bin = os.path.realpath(args.shim)
        self.go_bin = os.path.realpath(args.go_shim)
        self.pid = os.getpid()
        self.work = None
        self.ctd = None
        self.sock = None
        self.ns = {"tether": f"bench-t-{self.pid}", "go": f"bench-g-{self.pid}"}
        self.ns_floor = f"bench-r-{self.pid}"
        self.runtime = {"tether": "io.containerd.tether.v2", "go": "io.containerd.runc.v2"}
        self.ids = {"tether": set(), "go": set()}  # every container id ever created
        self.shims = ["tether", "go"]
        self.base_bin = os.path.realpath(args.baseline) if args.baseline else None
        if self.base_bin:
            self.ns["tether_base"] = f"bench-b-{self.pid}"
            self.runtime["tether_base"] = "io.containerd.tetherbase.v2"
            self.ids["tether_base"] = set()
        self.results = {"errors": []}
        self.seq = 0

    # ---------------------------------------------------------------- setup

    def setup(self):
        self.work = tempfile.mkdtemp(prefix="tether-bench.", dir="/tmp")
        w = self.work
        self.sock = f"{w}/c.sock"
        self.rootfs = f"{w}/rootfs"
        self.fifo_dir = f"{w}/fifo"
        self.runc_root = f"{w}/runc-root"
        os.makedirs(f"{w}/bin")
        os.makedirs(self.fifo_dir)
        # a copy, not a symlink: a concurrent `cargo build` replacing target/release must
        # not hand half of the containers a different tether binary
        shutil.copy2(self.tether_bin, f"{w}/bin/{TETHER_NAME}")
        os.symlink(self.go_bin, f"{w}/bin/{GO_NAME}")
        self.shim_file = {"tether": f"{w}/bin/{TETHER_NAME}", "go": self.go_bin}
        if self.base_bin:
            shutil.copy2(self.base_bin, f"{w}/bin/{BASELINE_NAME}")
            self.shim_file["tether_base"] = f"{w}/bin/{BASELINE_NAME}"

        # busybox rootfs, as in demo.sh
        os.makedirs(f"{self.rootfs}/bin")
        shutil.copy2("/bin/busybox", f"{self.rootfs}/bin/busybox")
        applets = run(["/bin/busybox", "--list"]).stdout.decode().split()
        for a in applets:
            if a != "busybox":
                os.symlink("busybox", f"{self.rootfs}/bin/{a}")
        for d in ("proc", "sys", "dev", "tmp", "etc"):
            os.makedirs(f"{self.rootfs}/{d}", exist_ok=True)
        with open(f"{self.rootfs}/etc/passwd", "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\n")

        # the runc floor bundle: `runc spec`, /bin/true, the same rootfs
        bundle = f"{w}/bundle"
        os.makedirs(bundle)
        run(["runc", "spec", "--bundle", bundle])
        with open(f"{bundle}/config.json") as f:
            spec = json.load(f)
        spec["process"]["terminal"] = False
        spec["process"]["args"] = ["/bin/true"]
        spec["root"] = {"path": self.rootfs, "readonly": False}
        with open(f"{bundle}/config.json", "w") as f:
            json.dump(spec, f)
        self.bundle = bundle

        with open(f"{w}/config.toml", "w") as f:
            f.write(
                f'version = 2\nroot = "{w}/root"\nstate = "{w}/state"\n'
                'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                f'[grpc]\n  address = "{self.sock}"\n'
                f'[ttrpc]\n  address = "{self.sock}.ttrpc"\n'
            )
        env = dict(os.environ, PATH=f"{w}/bin:{SYSTEM_PATH}")
        self.ctd_log = open(f"{w}/containerd.log", "wb")
        # its own session: a Ctrl-C on the terminal must not stop containerd before the
        # cleanup has deleted the tasks through it
        self.ctd = subprocess.Popen(
            ["containerd", "-c", f"{w}/config.toml"],
            stdin=subprocess.DEVNULL, stdout=self.ctd_log, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while True:
            if self.ctd.poll() is not None:
                raise BenchError(f"containerd exited ({self.ctd.returncode}):\n{self.ctd_tail()}")
            if run(["ctr", "-a", self.sock, "version"], check=False, timeout=10).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"containerd did not come up:\n{self.ctd_tail()}")
            time.sleep(0.1)

    def ctd_tail(self, n=15):
        try:
            with open(f"{self.work}/containerd.log", errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    # --------------------------------------------------------------- ctr

    def ctr(self, shim, *args, timeout=CMD_TIMEOUT, check=True):
        return run(["ctr", "-a", self.sock, "-n", self.ns[shim], *args], timeout=timeout, check=check)

    def new_id(self, shim, prefix):
        self.seq += 1
        cid = f"{prefix}-{self.seq}"
        self.ids[shim].add(cid)
        return cid

    def run_args(self, shim, *extra):
        return ["run", *extra, "--runtime", self.runtime[shim], "--fifo-dir", self.fifo_dir,
                "--rootfs", self.rootfs]

    def timed(self, fn, *a, **kw):
        t0 = time.perf_counter()
        fn(*a, **kw)
        return (time.perf_counter() - t0) * 1000.0

    def run_to_exit(self, shim):
        cid = self.new_id(shim, "rte")
        return self.timed(self.ctr, shim, *self.run_args(shim, "--rm"), cid, "/bin/true")

    def runc_run_cmd(self, args):
        """`runc run` (create+start+wait+delete) of the floor bundle running `args`."""
        self.seq += 1
        cid = f"floor-{self.seq}"
        spec_path = f"{self.bundle}/config.json"
        with open(spec_path) as f:
            spec = json.load(f)
        spec["process"]["args"] = args
        spec["linux"]["cgroupsPath"] = f"/{self.ns_floor}/{cid}"
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        return ["runc", "--root", self.runc_root, "run", "--bundle", self.bundle, cid]

    def runc_floor(self):
        return self.timed(run, self.runc_run_cmd(["/bin/true"]))

    def start_detached(self, shim, prefix):
        cid = self.new_id(shim, prefix)
        ms = self.timed(self.ctr, shim, *self.run_args(shim, "-d"), cid, "/bin/sleep", "100000")
        return cid, ms

    def exec_true(self, shim, cid, exec_id):
        return self.timed(self.ctr, shim, "task", "exec", "--fifo-dir", self.fifo_dir,
                          "--exec-id", exec_id, cid, "/bin/true")

    def delete(self, shim, cid):
        def both():
            self.ctr(shim, "task", "delete", "--force", cid)
            self.ctr(shim, "container", "delete", cid)
        return self.timed(both)

    def delete_many(self, shim, cids, timeout=CMD_TIMEOUT):
        """Remove containers (and their tasks) in parallel chunks; untimed."""
        cids = list(cids)
        chunks = [cids[i:i + 8] for i in range(0, len(cids), 8)]

        def one(chunk):
            self.ctr(shim, "task", "delete", "--force", *chunk, timeout=timeout, check=False)
            self.ctr(shim, "container", "delete", *chunk, timeout=timeout, check=False)
        parallel(one, chunks, workers=4)

    # ------------------------------------------------------------ phases

    def phase_sizes(self):
        sizes = {}
        for shim, path in (("tether", self.tether_bin), ("go", self.go_bin)):
            copy = f"{self.work}/{shim}.stripped"
            stripped = bool(shutil.which("strip")) and run(
                ["strip", "--strip-all", "-o", copy, path], check=False).returncode == 0
            sizes[shim] = {
                "path": path,
                "installed_bytes": os.path.getsize(path),
                "stripped_bytes": os.path.getsize(copy) if stripped else None,
            }
            if os.path.exists(copy):
                os.unlink(copy)
        self.results["binary_size"] = sizes

    def phase_run_to_exit(self):
        n, warm = self.args.iterations, self.args.warmup
        runners = [("tether", lambda: self.run_to_exit("tether")),
                   ("go", lambda: self.run_to_exit("go")),
                   ("runc_floor", self.runc_floor)]
        samples = {name: [] for name, _ in runners}
        progress(f"run-to-exit ({warm} warm-up + {n} rounds x tether/go/runc) ")
        for i in range(warm + n):
            for name, fn in rotated(runners, i):
                ms = fn()
                if i >= warm:
                    samples[name].append(ms)
            progress("." if i >= warm else "w")
        log()
        self.results.setdefault("latency_ms", {})["run_to_exit"] = {
            k: dict(summary(v), samples=v) for k, v in samples.items()}

    def start_exec_floor(self):
        """A detached `runc run -d` container of the floor bundle to `runc exec` into."""
        cmd = self.runc_run_cmd(["/bin/sleep", "100000"])
        cmd.insert(cmd.index("run") + 1, "-d")
        run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return cmd[-1]

    def runc_exec_floor(self, cid):
        """`runc exec` of /bin/true into the floor container (runc waits for it)."""
        return self.timed(run, ["runc", "--root", self.runc_root, "exec", cid, "/bin/true"])

    def phase_lifecycle(self):
        n, warm = self.args.iterations, min(self.args.warmup, 2)
        keys = ("start", "exec", "delete")
        samples = {k: {s: [] for s in self.shims} for k in keys}
        samples["exec"]["runc_floor"] = []
        floor_cid = self.start_exec_floor()
        progress(f"run -d / exec / delete ({warm} warm-up + {n} rounds x tether/go, "
                 "runc exec floor) ")
        for i in range(warm + n):
            for shim in rotated(self.shims, i):
                cid, t_start = self.start_detached(shim, "lc")
                t_exec = self.exec_true(shim, cid, f"e{i}")
                t_del = self.delete(shim, cid)
                if i >= warm:
                    samples["start"][shim].append(t_start)
                    samples["exec"][shim].append(t_exec)
                    samples["delete"][shim].append(t_del)
            t_floor = self.runc_exec_floor(floor_cid)
            if i >= warm:
                samples["exec"]["runc_floor"].append(t_floor)
            progress("." if i >= warm else "w")
        log()
        run(["runc", "--root", self.runc_root, "delete", "--force", floor_cid], check=False)
        lat = self.results.setdefault("latency_ms", {})
        for k in keys:
            lat[k] = {s: dict(summary(v), samples=v) for s, v in samples[k].items()}

    def bulk_once(self, shim, n):
        """`n` containers started at once (`ctr run -d`, one thread each: one shim each),
        then killed and deleted at once (`task delete --force` + `container delete`, one
        thread each). Returns the wall time of each wave (ms), the CPU time the shim
        servers spent in the start wave (ms, their own threads, children excluded, read
        after it), when the last `task delete` of the second wave returned (ms), and the
        CPU time (ms) containerd and the ctrs spent in each wave ({wave: [containerd,
        ctrs]})."""
        cids = [self.new_id(shim, "bulk") for _ in range(n)]
        barrier = threading.Barrier(n)
        cpu_of = {}

        def others_cpu():
            """containerd's CPU and that of this bench's reaped children (the ctrs), ns."""
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            return (process_cpu_ns(self.ctd.pid) or 0,
                    int((ru.ru_utime + ru.ru_stime) * 1e9))

        def start(cid):
            barrier.wait()
            self.ctr(shim, *self.run_args(shim, "-d"), cid, "/bin/sleep", "100000")

        before = others_cpu()
        t_start = self.timed(parallel, start, cids, workers=n)
        after = others_cpu()
        cpu_of["start"] = [(a - b) / 1e6 for a, b in zip(after, before)]
        shims = shim_processes(self.ns[shim])
        cpu = sum(process_cpu_ns(pid) or 0 for pid, _ in shims)
        cpu_of["runc_start"] = sum(reaped_children_cpu_ns(pid) for pid, _ in shims) / 1e6

        t0 = None
        task_ms = []

        def delete(cid):
            nonlocal t0
            barrier.wait()
            t0 = t0 or time.perf_counter()
            self.ctr(shim, "task", "delete", "--force", cid)
            task_ms.append((time.perf_counter() - t0) * 1000.0)
            self.ctr(shim, "container", "delete", cid)

        before = others_cpu()
        t_delete = self.timed(parallel, delete, cids, workers=n)
        after = others_cpu()
        cpu_of["delete"] = [(a - b) / 1e6 for a, b in zip(after, before)]
        for cid in cids:
            self.ids[shim].discard(cid)
        return t_start, t_delete, cpu / 1e6, max(task_ms), cpu_of

    def phase_bulk(self):
        n, rounds = self.args.bulk, self.args.bulk_rounds
        samples = {k: {s: [] for s in self.shims}
                   for k in ("start", "delete", "task_delete", "shim_cpu", "runc_cpu_start",
                             "containerd_cpu_start",
                             "ctr_cpu_start", "containerd_cpu_delete", "ctr_cpu_delete")}
        progress(f"bulk: {n} containers started at once, then deleted at once "
                 f"(1 warm-up + {rounds} rounds x tether/go) ")
        for i in range(1 + rounds):
            for shim in rotated(self.shims, i):
                t_start, t_delete, cpu, t_task, cpu_of = self.bulk_once(shim, n)
                if i >= 1:
                    samples["runc_cpu_start"][shim].append(cpu_of["runc_start"])
                    for wave in ("start", "delete"):
                        samples[f"containerd_cpu_{wave}"][shim].append(cpu_of[wave][0])
                        samples[f"ctr_cpu_{wave}"][shim].append(cpu_of[wave][1])
                    samples["start"][shim].append(t_start)
                    samples["delete"][shim].append(t_delete)
                    samples["task_delete"][shim].append(t_task)
                    samples["shim_cpu"][shim].append(cpu)
                # containerd runs each shim's `delete` after its Shutdown, in the
                # background: let the last wave's end before the next wave starts.
                until = time.monotonic() + 30
                while shim_processes(self.ns[shim], True) and time.monotonic() < until:
                    time.sleep(0.1)
                time.sleep(1)
            progress("." if i >= 1 else "w")
        log()
        self.results["bulk"] = {"containers": n, **{
            k: {s: dict(summary(v), samples=v) for s, v in by.items()}
            for k, by in samples.items()}}

    def throughput_once(self, shim, cpu=False):
        """256 MiB of dd through `ctr run` into a counter. With `cpu`, also the CPU time
        the shim spends while the bytes stream (far less noisy than the rate on a busy
        machine; finding the shim takes the counter a few ms, once)."""
        dd = ["/bin/dd", "if=/dev/zero", "bs=1M", f"count={DD_MIB}"]
        if shim == "runc_floor":  # dd's stdout is the counter's pipe itself
            cmd = self.runc_run_cmd(dd)
            cid = cmd[-1]
        else:
            cid = self.new_id(shim, "tp")
            cmd = ["ctr", "-a", self.sock, "-n", self.ns[shim], *self.run_args(shim, "--rm"),
                   cid, *dd]
        errpath = f"{self.work}/dd-{cid}.err"
        with open(errpath, "wb") as err:
            t0 = time.perf_counter()
            rfd, wfd = os.pipe()
            # a 1 MiB pipe into the counter, so the counter is not what limits the rate
            try:
                fcntl.fcntl(wfd, F_SETPIPE_SZ, COUNTER_PIPE_SIZE)
            except OSError:
                pass
            try:
                p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=wfd, stderr=err)
            finally:
                os.close(wfd)
            p.stdout = os.fdopen(rfd, "rb", buffering=0)
            poller = select.poll()
            poller.register(rfd, select.POLLIN)
            deadline = time.monotonic() + CMD_TIMEOUT
            try:
                buf = memoryview(bytearray(1 << 20))
                total, t_first = 0, None
                shim_pid = cpu_first = cpu_eof = None
                while True:
                    if not poller.poll(1000):
                        if time.monotonic() > deadline:
                            raise BenchError(f"throughput {shim}: no EOF after {CMD_TIMEOUT}s "
                                             f"({total} bytes): {' '.join(cmd)}")
                        continue
                    k = p.stdout.readinto(buf)
                    if not k:
                        break
                    if t_first is None:
                        t_first = time.perf_counter()
                        shim_pid = self.shim_of(shim, cid) if cpu else None
                        cpu_first = process_cpu_ns(shim_pid)
                    total += k
                t_eof = time.perf_counter()
                cpu_eof = process_cpu_ns(shim_pid)
                rc = p.wait(timeout=CMD_TIMEOUT)
                t_exit = time.perf_counter()
            except BaseException:
                p.kill()
                p.wait()
                raise
            finally:
                p.stdout.close()
        with open(errpath, errors="replace") as f:
            errtext = f.read().strip()
        rec = {
            "bytes": total,
            "exit_code": rc,
            "seconds_stream": (t_eof - t_first) if t_first else None,
            "seconds_total": t_exit - t0,
        }
        rec["mib_s"] = DD_MIB / rec["seconds_stream"] if rec["seconds_stream"] else 0.0
        rec["mib_s_total"] = DD_MIB / rec["seconds_total"]
        if cpu_first is not None and cpu_eof is not None:
            rec["shim_cpu_ms"] = (cpu_eof - cpu_first) / 1e6
        if total != DD_BYTES or rc != 0:
            rec["error"] = f"got {total} bytes (want {DD_BYTES}), ctr exit {rc}: {errtext[-300:]}"
            self.results["errors"].append(f"throughput {shim}: {rec['error']}")
        return rec

    def phase_throughput(self):
        runners = self.shims + ["runc_floor"]
        runs = {s: [] for s in runners}
        progress(f"stdout throughput ({self.args.throughput_runs} x {DD_MIB} MiB x tether/go/runc) ")
        for i in range(self.args.throughput_runs):
            for shim in rotated(runners, i):
                runs[shim].append(self.throughput_once(shim))
                progress(".")
        log()
        self.results["throughput"] = throughput_summary(runs)

    def tty_once(self, shim, mib):
        """`mib` MiB of zeros from dd through the container's pty and `ctr run --rm -t`,
        whose console is a pty of ours (ctr makes it raw), read from its master until
        ctr has exited. The rate is the stream's (first to last byte); `exit_ms` is how
        long after the last byte ctr exited (the shim reported the exit, answered Wait,
        deleted the task)."""
        cid = self.new_id(shim, "tty")
        script = f"dd if=/dev/zero bs=65536 count={mib * 16} 2>/dev/null"
        cmd = ["ctr", "-a", self.sock, "-n", self.ns[shim], *self.run_args(shim, "--rm", "-t"),
               cid, "/bin/sh", "-c", script]
        master, slave = pty.openpty()
        t0 = time.perf_counter()
        try:
            p = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave)
        finally:
            os.close(slave)
        poller = select.poll()
        poller.register(master, select.POLLIN)
        deadline = time.monotonic() + CMD_TIMEOUT
        total, t_first, t_last = 0, None, None
        shim_pid = cpu_first = cpu_last = None
        try:
            while True:
                if not poller.poll(1000):
                    if time.monotonic() > deadline:
                        raise BenchError(f"tty {shim}: no end after {CMD_TIMEOUT}s ({total} bytes)")
                    continue
                try:
                    chunk = os.read(master, 1 << 20)
                except OSError:  # EIO: ctr (the last holder of our pty's slave) is gone
                    break
                if not chunk:
                    break
                now = time.perf_counter()
                if t_first is None:
                    t_first = now
                    shim_pid = self.shim_of(shim, cid)
                    cpu_first = process_cpu_ns(shim_pid)
                t_last = now
                total += len(chunk)
                if total >= (mib << 20) and cpu_last is None:
                    cpu_last = process_cpu_ns(shim_pid)
            rc = p.wait(timeout=CMD_TIMEOUT)
            t_exit = time.perf_counter()
        except BaseException:
            p.kill()
            p.wait()
            raise
        finally:
            os.close(master)
        want = mib << 20
        rec = {"bytes": total, "exit_code": rc, "seconds_total": t_exit - t0}
        if t_first is not None and t_last > t_first:
            rec["mib_s"] = (total / (1 << 20)) / (t_last - t_first)
            rec["exit_ms"] = (t_exit - t_last) * 1000.0
        if cpu_first is not None and cpu_last is not None:
            rec["shim_cpu_ms"] = (cpu_last - cpu_first) / 1e6
        if total != want or rc != 0:
            rec["error"] = f"got {total} bytes (want {want}), ctr exit {rc}"
            rec["lost_bytes"] = max(want - total, 0)
            # ctr 1.6 closes its FIFOs as soon as Wait returns: tether holds that Wait
            # until they are empty (issue 23), the Go shim does not. Its losses are
            # shown in the table, not counted as the bench's errors.
            if shim == "tether":
                self.results["errors"].append(f"tty {shim}: {rec['error']}")
        return rec

    def busy_loops(self, n):
        """`n` busy loops (one per core), to be killed by the caller."""
        return [subprocess.Popen(["/bin/sh", "-c", "while :; do :; done"],
                                 stdin=subprocess.DEVNULL) for _ in range(n)]

    def phase_tty(self):
        mib, rounds = self.args.tty_mib, self.args.tty_rounds
        cores = os.cpu_count() or 1
        out = {}
        for load in (0, cores):
            runs = {s: [] for s in self.shims}
            progress(f"tty throughput, {load} busy loop(s) ({rounds} x {mib} MiB x tether/go) ")
            busy = self.busy_loops(load)
            try:
                for i in range(rounds):
                    for shim in rotated(self.shims, i):
                        runs[shim].append(self.tty_once(shim, mib))
                        progress(".")
            finally:
                for b in busy:
                    b.kill()
                    b.wait()
            log()
            level = {}
            for shim, rs in runs.items():
                # The rate and the exit's lag count every run (one that lost its end
                # streamed all the same); incomplete runs are counted apart.
                timed = [r for r in rs if "mib_s" in r]
                cpu = [r["shim_cpu_ms"] for r in rs if "shim_cpu_ms" in r]
                level[shim] = {
                    "runs": rs,
                    "incomplete_runs": sum(1 for r in rs if "error" in r),
                    "max_lost_bytes": max([r.get("lost_bytes", 0) for r in rs], default=0),
                    "median_mib_s": statistics.median([r["mib_s"] for r in timed]) if timed else None,
                    "median_exit_ms": statistics.median([r["exit_ms"] for r in timed]) if timed else None,
                    "max_exit_ms": max([r["exit_ms"] for r in timed]) if timed else None,
                    "median_shim_cpu_ms": statistics.median(cpu) if cpu else None,
                }
            out[str(load)] = level
        self.results["tty"] = {"mib": mib, "rounds": rounds, "loads": out}

    def container_file(self, name):
        """A file the containers left in the shared rootfs's /tmp; None if absent."""
        try:
            with open(f"{self.rootfs}/tmp/{name}") as f:
                return f.read()
        except OSError:
            return None

    def shim_of(self, shim, cid):
        """The pid of the shim serving container `cid`."""
        for pid, _ in shim_processes(self.ns[shim]):
            args = proc_cmdline(pid)
            if any(a == "-id" and b == cid for a, b in zip(args, args[1:])):
                return pid
        return None

    def wait_stopped(self, shim, cid, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.ctr(shim, "task", "ls").stdout.decode().splitlines()[1:]:
                f = line.split()
                if f and f[0] == cid and f[-1] == "STOPPED":
                    return True
            time.sleep(0.05)
        return False

    def spool_tether(self, mib):
        """dd of `mib` MiB into a FIFO nobody reads (`ctr run -d`): the spool takes it.
        Returns dd's rate, the shim's RSS before and at most while it spooled, and the
        drain rate into `ctr task attach`."""
        cid = self.new_id("tether", "spool")
        # dd starts once the shim's RSS has been read; the times around it (from
        # /proc/uptime: busybox's dd prints no rate) go to the rootfs
        script = (f"sleep 1; read a x < /proc/uptime; "
                  f"dd if=/dev/zero bs=1M count={mib} 2>/dev/null; "
                  f"read b x < /proc/uptime; echo $a $b > /tmp/{cid}.t; touch /tmp/{cid}.done")
        self.ctr("tether", *self.run_args("tether", "-d", "--annotation",
                                          f"io.tether.spool-limit={2 * mib}M"),
                 cid, "/bin/sh", "-c", script)
        pid = self.shim_of("tether", cid)
        if pid is None:
            raise BenchError(f"spool: no shim for {cid}")
        rss_before = shim_memory(pid)["rss_kib"]
        peak = rss_before
        t0 = time.monotonic()
        while self.container_file(f"{cid}.done") is None:
            peak = max(peak, shim_memory(pid)["rss_kib"])
            if time.monotonic() - t0 > CMD_TIMEOUT:
                raise BenchError(f"spool: dd of {mib} MiB did not finish in {CMD_TIMEOUT}s")
            time.sleep(0.05)
        peak = max(peak, shim_memory(pid)["rss_kib"])
        times = (self.container_file(f"{cid}.t") or "").split()
        try:
            secs = max(float(times[1]) - float(times[0]), 0.01)  # /proc/uptime: 10 ms steps
        except (IndexError, ValueError):
            raise BenchError(f"spool: no times from the writer: {times!r}")
        # the next reader: everything, from the spool, into a counter
        t1 = time.perf_counter()
        p = run(["ctr", "-a", self.sock, "-n", self.ns["tether"], "task", "attach", cid],
                stdout=subprocess.PIPE)
        t2 = time.perf_counter()
        got = len(p.stdout)
        if got != mib << 20:
            self.results["errors"].append(f"spool: attach got {got} bytes of {mib << 20}")
        self.ctr("tether", "task", "delete", "--force", cid, check=False)
        self.ctr("tether", "container", "delete", cid, check=False)
        for f in (f"{cid}.t", f"{cid}.done"):
            try:
                os.unlink(f"{self.rootfs}/tmp/{f}")
            except OSError:
                pass
        return {
            "mib": mib,
            "write_mib_s": mib / secs,
            "write_seconds": secs,
            "rss_before_kib": rss_before,
            "rss_peak_kib": peak,
            "rss_growth_kib": peak - rss_before,
            "drain_mib_s": (got / 1048576) / (t2 - t1),
            "drain_seconds": t2 - t1,
        }

    def spool_go(self, seconds):
        """The same writer, unread, under the Go shim: MiB it wrote in `seconds` (it
        blocks once the pipe and FIFO are full). Counted per 64 KiB by the writer itself
        (a 1 MiB write would not even complete)."""
        cid = self.new_id("go", "spool")
        script = (f"i=0; while :; do dd if=/dev/zero bs=65536 count=1 2>/dev/null; "
                  f"i=$((i+1)); echo $i > /tmp/{cid}.n; done")
        self.ctr("go", *self.run_args("go", "-d"), cid, "/bin/sh", "-c", script)
        time.sleep(seconds)
        n = (self.container_file(f"{cid}.n") or "0").strip()
        self.ctr("go", "task", "kill", "-s", "KILL", cid, check=False)
        self.wait_stopped("go", cid, 15)
        self.ctr("go", "task", "delete", "--force", cid, check=False)
        self.ctr("go", "container", "delete", cid, check=False)
        try:
            os.unlink(f"{self.rootfs}/tmp/{cid}.n")
        except OSError:
            pass
        mib = (int(n) if n.isdigit() else 0) / 16
        return {"seconds": seconds, "mib_written": mib, "write_mib_s": mib / seconds}

    def phase_spool(self):
        mib = self.args.spool_mib
        progress(f"output spool: {mib} MiB written with nobody reading, then drained ")
        t = self.spool_tether(mib)
        progress(".")
        g = self.spool_go(max(3.0, t["write_seconds"]))
        log(".")
        self.results["spool"] = {"tether": t, "go": g}

    def phase_baseline(self):
        """The stdout throughput of this tether and the baseline, interleaved rounds."""
        if not self.base_bin:
            return
        pair = ["tether", "tether_base"]
        runs = {s: [] for s in pair}
        spooled_before = self.spooled_runs() or 0
        n = self.args.baseline_rounds
        progress(f"throughput, this tether vs the baseline ({n} x {DD_MIB} MiB each) ")
        for i in range(n):
            for shim in rotated(pair, i):
                runs[shim].append(self.throughput_once(shim, cpu=True))
                progress(".")
        log()
        self.results["baseline"] = dict(throughput_summary(runs), baseline=self.base_bin,
                                        spooled_runs=(self.spooled_runs() or 0) - spooled_before)

    def spooled_runs(self):
        """How many streams so far spooled: the spool phase's, and any whose reader stalled
        long enough (100 ms) for the spool to take over (the shim logs it once per stream,
        into containerd's log)."""
        try:
            with open(f"{self.work}/containerd.log", errors="replace") as f:
                return sum(1 for line in f if "output spooled" in line)
        except OSError:
            return None

    def phase_memory(self):
        levels = self.args.containers
        running = {s: [] for s in self.shims}
        mem = {}
        for n in levels:
            progress(f"memory at {n} running container(s) per shim: start+exec ")
            k = 0
            while len(running["tether"]) < n or len(running["go"]) < n:
                for shim in rotated(self.shims, k):
                    if len(running[shim]) < n:
                        cid, _ = self.start_detached(shim, "mem")
                        self.exec_true(shim, cid, "m1")
                        running[shim].append(cid)
                k += 1
                if k % 5 == 0:
                    progress(".")
            time.sleep(2)  # let the shims settle after the execs
            level = {}
            for shim in self.shims:
                procs = shim_processes(self.ns[shim])
                want = TETHER_NAME if shim == "tether" else GO_NAME
                wrong = [b for _, b in procs if b != want]
                if wrong:
                    raise BenchError(f"{shim} namespace served by unexpected shim binaries {wrong}")
                if len(procs) != n:
                    self.results["errors"].append(
                        f"memory {shim}: {len(procs)} shim processes for {n} containers")
                per = []
                for pid, _ in procs:
                    try:
                        per.append(shim_memory(pid))
                    except OSError as e:
                        self.results["errors"].append(f"memory {shim}: pid {pid}: {e}")
                if not per:
                    raise BenchError(f"no {shim} shim processes found in {self.ns[shim]}")
                ours = {pid for pid, _ in procs}
                others = [p for p in same_binary_processes(self.shim_file[shim]) if p not in ours]
                level[shim] = {
                    "shim_processes": len(procs),
                    "shims": per,
                    **{f"median_{f}": statistics.median(p[f] for p in per)
                       for f in ("rss_kib", "pss_kib", "uss_kib", "threads")},
                    "total_pss_kib": sum(p["pss_kib"] for p in per),
                    "total_uss_kib": sum(p["uss_kib"] for p in per),
                    "total_rss_kib": sum(p["rss_kib"] for p in per),
                    "total_threads": sum(p["threads"] for p in per),
                    # other processes of the machine running the same binary share its
                    # text pages, which lowers PSS/USS (notably at 1 container)
                    "other_processes_same_binary": len(others),
                }
            mem[str(n)] = level
            log(" measured")
        self.results["memory"] = mem
        base = levels[0]
        extra = {}
        for n in levels[1:]:
            extra[str(n)] = {
                s: {
                    "uss_kib": (mem[str(n)][s]["total_uss_kib"] - mem[str(base)][s]["total_uss_kib"]) / (n - base),
                    "pss_kib": (mem[str(n)][s]["total_pss_kib"] - mem[str(base)][s]["total_pss_kib"]) / (n - base),
                } for s in self.shims}
        self.results["per_extra_container"] = {"base": base, "by_level": extra}
        progress("memory: removing the containers ")
        for shim in self.shims:
            self.delete_many(shim, running[shim])
            progress(".")
        log()

    def phase_pods(self):
        """Shim memory for pods as CRI makes them: a pause container and 3 more, grouped
        into one shim per pod by the `io.kubernetes.cri.sandbox-id` annotation (both shims
        group by it), at each level of BENCH_PODS."""
        pods = {}
        for n in self.args.pods:
            progress(f"pods: {n} pod(s) of pause + {POD_CONTAINERS - 1} per shim ")
            level = {}
            started = {s: [] for s in self.shims}
            for i in range(n):
                for shim in rotated(self.shims, i):
                    self.seq += 1
                    pod = f"pod-{self.seq}"
                    for c in range(POD_CONTAINERS):
                        cid = self.new_id(shim, f"{pod}-c{c}")
                        self.ctr(shim, *self.run_args(shim, "-d", "--annotation",
                                                      f"{SANDBOX_ANNOTATION}={pod}"),
                                 cid, "/bin/sleep", "100000")
                        started[shim].append(cid)
                if i % 5 == 0:
                    progress(".")
            time.sleep(2)
            for shim in self.shims:
                procs = shim_processes(self.ns[shim])
                if len(procs) != n:
                    self.results["errors"].append(
                        f"pods {shim}: {len(procs)} shim processes for {n} pods")
                per = [shim_memory(pid) for pid, _ in procs]
                level[shim] = {
                    "shim_processes": len(procs),
                    "total_pss_kib": sum(p["pss_kib"] for p in per),
                    "total_uss_kib": sum(p["uss_kib"] for p in per),
                    "total_rss_kib": sum(p["rss_kib"] for p in per),
                    "threads_per_shim": statistics.median(p["threads"] for p in per) if per else 0,
                }
            pods[str(n)] = level
            progress(" measured; removing ")
            for shim in self.shims:
                self.delete_many(shim, started[shim])
            log()
        self.results["pods"] = pods

    def phase_upgrade(self):
        """Live upgrade of a pod's shim (tether only): a pod of pause + 3 in one shim, one
        container writing a line every millisecond to `ctr run`'s stdout (read here, each
        line stamped as it arrives); the shim moved between two copies of the binary
        UPGRADE_ROUNDS times. Reports the pause the shim measures (from holding new calls
        to the new image answering) and the longest gap between output lines during the
        upgrades, beside the longest gap in as long a stretch without upgrades."""
        progress(f"live upgrade: a pod of {POD_CONTAINERS}, {UPGRADE_ROUNDS} upgrades ")
        self.seq += 1
        pod = f"pod-up-{self.seq}"
        cids = []
        for c in range(POD_CONTAINERS - 1):
            cid = self.new_id("tether", f"{pod}-c{c}")
            self.ctr("tether", *self.run_args("tether", "-d", "--annotation",
                                               f"{SANDBOX_ANNOTATION}={pod}"),
                     cid, "/bin/sleep", "100000")
            cids.append(cid)
        writer = self.new_id("tether", f"{pod}-writer")
        cmd = ["ctr", "-a", self.sock, "-n", self.ns["tether"],
               *self.run_args("tether", "--annotation", f"{SANDBOX_ANNOTATION}={pod}"),
               writer, "/bin/sh", "-c", "while :; do echo .; usleep 1000; done"]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        stamps = []

        def read():
            for _ in iter(proc.stdout.readline, b""):
                stamps.append(time.monotonic())
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + 20
        while len(stamps) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        other = f"{self.work}/bin-b/{TETHER_NAME}"
        os.makedirs(os.path.dirname(other), exist_ok=True)
        shutil.copy2(self.shim_file["tether"], other)

        def max_gap(t0, t1):
            ts = [t for t in stamps if t0 <= t <= t1]
            return max((b - a for a, b in zip(ts, ts[1:])), default=None)
        idle0 = time.monotonic()
        pauses, windows = [], []
        for i in range(UPGRADE_ROUNDS):
            to = other if i % 2 == 0 else self.shim_file["tether"]
            t0 = time.monotonic()
            out = run([self.shim_file["tether"], "upgrade", "-n", self.ns["tether"], "--all",
                       "--binary", to], check=False)
            t1 = time.monotonic()
            line = out.stdout.decode(errors="replace").strip()
            if out.returncode != 0 or "paused" not in line:
                self.results["errors"].append(f"upgrade {i}: {line}")
                continue
            pauses.append(float(line.rsplit("paused ", 1)[1].split()[0]))
            windows.append((t0, t1 + 0.05))
            time.sleep(0.2)
            progress(".")
        busy = time.monotonic() - idle0
        time.sleep(0.3)
        # as long a stretch without upgrades, for comparison
        calm0 = time.monotonic()
        time.sleep(busy)
        calm1 = time.monotonic()
        stall = max((g for g in (max_gap(a, b) for a, b in windows) if g is not None), default=None)
        calm = max_gap(calm0, calm1)
        self.ctr("tether", "task", "kill", "-s", "KILL", writer, check=False)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        self.delete_many("tether", cids + [writer])
        log()
        self.results["upgrade"] = {
            "rounds": len(pauses),
            "pause_ms": summary(pauses) if pauses else None,
            "longest_output_gap_ms": stall * 1000 if stall is not None else None,
            "longest_gap_without_upgrades_ms": calm * 1000 if calm is not None else None,
        }

    # ----------------------------------------------------------- cleanup

    def cleanup(self):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if self.work is None:
            return
        # 1. through containerd, while it runs
        if self.ctd is not None and self.ctd.poll() is None:
            for shim in self.ns:
                try:
                    tasks = self.ctr(shim, "task", "ls", "-q", timeout=30, check=False).stdout.decode().split()
                    conts = self.ctr(shim, "container", "ls", "-q", timeout=30, check=False).stdout.decode().split()
                    self.delete_many(shim, sorted(set(tasks) | set(conts)), timeout=30)
                except Exception as e:  # keep going: the brute-force steps below follow
                    print(f"cleanup: {shim}: {e}", file=sys.stderr)
        # 2. stop containerd
        if self.ctd is not None:
            if self.ctd.poll() is None:
                self.ctd.terminate()
                try:
                    self.ctd.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.ctd.kill()
                    self.ctd.wait()
            self.ctd_log.close()
        # 3. leftover shims of our namespaces, their containers, runc state, cgroups
        namespaces = list(self.ns.values()) + [self.ns_floor]
        for ns in self.ns.values():
            for pid, _ in shim_processes(ns):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for root in [f"{RUNC_STATE}/{ns}" for ns in self.ns.values()] + [self.runc_root]:
            if os.path.isdir(root):
                p = run(["runc", "--root", root, "list", "-q"], check=False, timeout=30)
                for cid in p.stdout.decode().split():
                    run(["runc", "--root", root, "delete", "--force", cid], check=False, timeout=30)
                if root.startswith(RUNC_STATE + "/"):
                    shutil.rmtree(root, ignore_errors=True)
        for ns in namespaces:
            for top in glob.glob(f"/sys/fs/cgroup/*/{ns}") + glob.glob(f"/sys/fs/cgroup/{ns}"):
                remove_cgroup_tree(top)
        # 4. shim sockets of our containers (normally removed by the shims themselves)
        for shim, ids in self.ids.items():
            for cid in ids:
                key = os.path.normpath(os.path.join(self.sock, self.ns[shim], cid))
                path = f"{SHIM_SOCKET_DIR}/{hashlib.sha256(key.encode()).hexdigest()}"
                for p in (path, path + ".lock"):
                    if os.path.lexists(p):
                        try:
                            os.unlink(p)
                        except OSError:
                            pass
        # 5. mounts under the temp dir, then the temp dir
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f]
        for m in sorted((m for m in mounts if m == self.work or m.startswith(self.work + "/")),
                        reverse=True):
            subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.work, ignore_errors=True)


def remove_cgroup_tree(top):
    for _ in range(50):
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            try:
                with open(f"{dirpath}/cgroup.procs") as f:
                    for pid in f.read().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except (ProcessLookupError, ValueError):
                            pass
            except OSError:
                pass
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
        if not os.path.exists(top):
            return
        time.sleep(0.1)
    print(f"cleanup: could not remove {top}", file=sys.stderr)


def parallel(fn, items, workers):
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    try:
        for fut in [pool.submit(fn, it) for it in items]:
            fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------ report

def fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def ratio(t, g):
    if not isinstance(t, (int, float)) or not isinstance(g, (int, float)) or g == 0:
        return "-"
    return f"{t / g:.2f}x"


def report(res):
    rows = []

    def row(label, t, g, digits=1):
        rows.append((label, fmt(t, digits), fmt(g, digits), ratio(t, g)))

    lat = res.get("latency_ms", {})
    if "run_to_exit" in lat:
        r = lat["run_to_exit"]
        row("run-to-exit median (ms)", r["tether"]["median"], r["go"]["median"])
        row("run-to-exit p90 (ms)", r["tether"]["p90"], r["go"]["p90"])
        fl = r["runc_floor"]["median"]
        row("run-to-exit minus runc floor (ms)", r["tether"]["median"] - fl, r["go"]["median"] - fl)
    for key, label in (("start", "ctr run -d start median (ms)"),
                       ("exec", "ctr task exec median (ms)"),
                       ("delete", "task delete -f + container delete (ms)")):
        if key in lat:
            row(label, lat[key]["tether"]["median"], lat[key]["go"]["median"])
        if key == "exec" and "runc_floor" in lat.get("exec", {}):
            fl = lat["exec"]["runc_floor"]["median"]
            row("ctr task exec minus runc exec floor (ms)", lat["exec"]["tether"]["median"] - fl,
                lat["exec"]["go"]["median"] - fl)
    bulk = res.get("bulk")
    if bulk:
        n = bulk["containers"]
        row(f"[{n} at once] ctr run -d, wall (ms)", bulk["start"]["tether"]["median"],
            bulk["start"]["go"]["median"], 0)
        row(f"[{n} at once] task delete -f + container delete, wall (ms)",
            bulk["delete"]["tether"]["median"], bulk["delete"]["go"]["median"], 0)
        row(f"[{n} at once] … the last task delete -f done (ms)",
            bulk["task_delete"]["tether"]["median"], bulk["task_delete"]["go"]["median"], 0)
        row(f"[{n} at once] shim servers' CPU, start wave (ms)",
            bulk["shim_cpu"]["tether"]["median"], bulk["shim_cpu"]["go"]["median"], 0)
        if "runc_cpu_start" in bulk:
            row(f"[{n} at once] runc's CPU (the shims' reaped children), start wave (ms)",
                bulk["runc_cpu_start"]["tether"]["median"], bulk["runc_cpu_start"]["go"]["median"], 0)
        for wave in ("start", "delete"):
            for who in ("containerd", "ctr"):
                k = f"{who}_cpu_{wave}"
                if k in bulk:
                    row(f"[{n} at once] {who}'s CPU, {wave} wave (ms)",
                        bulk[k]["tether"]["median"], bulk[k]["go"]["median"], 0)
    tp = res.get("throughput")
    if tp:
        row(f"stdout {DD_MIB} MiB, streaming (MiB/s)", tp["tether"]["median_mib_s"],
            tp["go"]["median_mib_s"], 0)
        row(f"stdout {DD_MIB} MiB, incl. run (MiB/s)", tp["tether"]["median_mib_s_total"],
            tp["go"]["median_mib_s_total"], 0)
    tt = res.get("tty")
    if tt:
        for load, level in tt["loads"].items():
            where = "load 0" if load == "0" else f"{load} busy loops"
            row(f"tty {tt['mib']} MiB, streaming, {where} (MiB/s)",
                level["tether"]["median_mib_s"], level["go"]["median_mib_s"], 0)
            row(f"tty: ctr exit after the last byte, {where}, median (ms)",
                level["tether"]["median_exit_ms"], level["go"]["median_exit_ms"])
            row(f"tty: ctr exit after the last byte, {where}, max (ms)",
                level["tether"]["max_exit_ms"], level["go"]["max_exit_ms"])
            row(f"tty: shim CPU while {tt['mib']} MiB stream, {where}, median (ms)",
                level["tether"]["median_shim_cpu_ms"], level["go"]["median_shim_cpu_ms"])
            def lost(lv):
                text = f"{lv['incomplete_runs']}/{tt['rounds']}"
                if lv.get("max_lost_bytes"):  # and the most one lost, in KiB
                    text += f", {lv['max_lost_bytes'] / 1024:.0f}K"
                return text
            row(f"tty: runs that lost the end (most lost), {where}",
                lost(level["tether"]), lost(level["go"]))
    sp = res.get("spool")
    if sp:
        t, g = sp["tether"], sp["go"]
        row(f"spool: {t['mib']} MiB written, nobody reading (MiB/s)", t["write_mib_s"],
            g["write_mib_s"], 2)
        row("spool: drained into the next reader (MiB/s)", t["drain_mib_s"], "-", 0)
        row(f"spool: shim RSS growth while {t['mib']} MiB spooled (KiB)", t["rss_growth_kib"],
            "-", 0)
    for n, level in res.get("memory", {}).items():
        t, g = level["tether"], level["go"]
        row(f"[{n} ctr] shim processes", t["shim_processes"], g["shim_processes"], 0)
        row(f"[{n} ctr] RSS per shim (KiB)", t["median_rss_kib"], g["median_rss_kib"], 0)
        row(f"[{n} ctr] PSS per shim (KiB)", t["median_pss_kib"], g["median_pss_kib"], 0)
        row(f"[{n} ctr] USS per shim (KiB)", t["median_uss_kib"], g["median_uss_kib"], 0)
        row(f"[{n} ctr] threads per shim", t["median_threads"], g["median_threads"], 0)
        row(f"[{n} ctr] total PSS of all shims (KiB)", t["total_pss_kib"], g["total_pss_kib"], 0)
        row(f"[{n} ctr] total USS of all shims (KiB)", t["total_uss_kib"], g["total_uss_kib"], 0)
    for n, level in res.get("pods", {}).items():
        t, g = level["tether"], level["go"]
        row(f"[{n} pod(s) of {POD_CONTAINERS}] shim processes", t["shim_processes"],
            g["shim_processes"], 0)
        row(f"[{n} pod(s) of {POD_CONTAINERS}] total PSS of the shims (KiB)",
            t["total_pss_kib"], g["total_pss_kib"], 0)
        row(f"[{n} pod(s) of {POD_CONTAINERS}] total USS of the shims (KiB)",
            t["total_uss_kib"], g["total_uss_kib"], 0)
        row(f"[{n} pod(s) of {POD_CONTAINERS}] threads per shim", t["threads_per_shim"],
            g["threads_per_shim"], 0)
    pe = res.get("per_extra_container")
    if pe:
        for n, v in pe["by_level"].items():
            row(f"USS per extra running container, {pe['base']}->{n} (KiB)",
                v["tether"]["uss_kib"], v["go"]["uss_kib"], 0)
            row(f"PSS per extra running container, {pe['base']}->{n} (KiB)",
                v["tether"]["pss_kib"], v["go"]["pss_kib"], 0)
    sz = res.get("binary_size")
    if sz:
        def mib(s):
            b = s["stripped_bytes"] if s["stripped_bytes"] is not None else s["installed_bytes"]
            return b / 1048576
        row("stripped binary size (MiB)", mib(sz["tether"]), mib(sz["go"]), 2)

    w0 = max((len(r[0]) for r in rows), default=20) + 2
    log(f"{'measure':<{w0}}{'tether':>12}{'go':>12}{'tether/go':>12}")
    log("-" * (w0 + 36))
    for label, t, g, q in rows:
        log(f"{label:<{w0}}{t:>12}{g:>12}{q:>12}")
    if "run_to_exit" in lat:
        f = lat["run_to_exit"]["runc_floor"]
        log("-" * (w0 + 36))
        log(f"floor: runc run /bin/true, same rootfs (create+start+wait+delete): "
            f"median {f['median']:.1f} ms, p90 {f['p90']:.1f} ms")
    if "runc_floor" in lat.get("exec", {}):
        f = lat["exec"]["runc_floor"]
        log(f"floor: runc exec /bin/true into a running runc container (foreground): "
            f"median {f['median']:.1f} ms, p90 {f['p90']:.1f} ms")
    if tp and tp.get("runc_floor", {}).get("median_mib_s"):
        f = tp["runc_floor"]
        log(f"floor: runc run dd straight into the counter's pipe: "
            f"{f['median_mib_s']:,.0f} MiB/s streaming, {f['median_mib_s_total']:,.0f} MiB/s incl. run")
    if sp:
        t, g = sp["tether"], sp["go"]
        log(f"spool: tether's shim RSS {t['rss_before_kib']:,} KiB before, "
            f"{t['rss_peak_kib']:,} KiB at most while dd wrote {t['mib']} MiB unread in "
            f"{t['write_seconds']:.2f} s; the Go shim's writer got {g['mib_written']:.2f} MiB out "
            f"in {g['seconds']:.1f} s, then blocked (no spool)")
    bl = res.get("baseline")
    if bl and bl["tether"]["median_mib_s"] and bl["tether_base"]["median_mib_s"]:
        t, b = bl["tether"], bl["tether_base"]
        log(f"baseline {bl['baseline']}: stdout {DD_MIB} MiB streaming, median of "
            f"{t['ok_runs']} interleaved rounds: this {t['median_mib_s']:,.0f} MiB/s, "
            f"baseline {b['median_mib_s']:,.0f} MiB/s, ratio "
            f"{t['median_mib_s'] / b['median_mib_s']:.3f} (incl. run: "
            f"{t['median_mib_s_total']:,.0f} vs {b['median_mib_s_total']:,.0f}, ratio "
            f"{t['median_mib_s_total'] / b['median_mib_s_total']:.3f})")
        if bl.get("spooled_runs"):
            log(f"baseline: in {bl['spooled_runs']} stream(s) of this run the reader stalled "
                f"100 ms and the spool took over")
        if t.get("median_shim_cpu_ms") and b.get("median_shim_cpu_ms"):
            log(f"baseline: the shim's CPU time while 256 MiB stream, median: this "
                f"{t['median_shim_cpu_ms']:.1f} ms, baseline {b['median_shim_cpu_ms']:.1f} ms, "
                f"ratio {t['median_shim_cpu_ms'] / b['median_shim_cpu_ms']:.3f}")
    up = res.get("upgrade")
    if up and up.get("pause_ms"):
        p = up["pause_ms"]
        log(f"live upgrade (tether only), a pod of {POD_CONTAINERS}, {up['rounds']} upgrades: "
            f"pause median {p['median']:.1f} ms, max {p['max']:.1f} ms; longest gap in a "
            f"container's output during the upgrades {fmt(up['longest_output_gap_ms'])} ms "
            f"(without upgrades: {fmt(up['longest_gap_without_upgrades_ms'])} ms)")
    log("ratios: lower is better, except MiB/s")
    for n, level in res.get("memory", {}).items():
        for s in ("tether", "go"):
            k = level[s].get("other_processes_same_binary", 0)
            if k:
                log(f"note: at {n} container(s), {k} other process(es) on this machine ran the "
                    f"same {s} binary; they share its text pages (lower PSS/USS)")


# -------------------------------------------------------------------- main

def parse_args():
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("shim", nargs="?", default=default_shim(),
                    help="tether's binary (default: make build's %(default)s)")
    ap.add_argument("--go-shim", default=env("BENCH_GO_SHIM") or shutil.which(GO_NAME, path=SYSTEM_PATH))
    ap.add_argument("--iterations", type=int, default=int(env("BENCH_ITERATIONS", "30")))
    ap.add_argument("--warmup", type=int, default=int(env("BENCH_WARMUP", "3")))
    ap.add_argument("--throughput-runs", type=int, default=int(env("BENCH_THROUGHPUT_RUNS", "3")))
    ap.add_argument("--tty-mib", type=int, default=int(env("BENCH_TTY_MIB", "32")),
                    help="MiB each TTY throughput round writes (%(default)s)")
    ap.add_argument("--tty-rounds", type=int, default=int(env("BENCH_TTY_ROUNDS", "7")),
                    help="TTY throughput rounds per shim and load (%(default)s)")
    ap.add_argument("--containers", default=env("BENCH_CONTAINERS", "1,30"),
                    help='running containers per shim for the memory measure, e.g. "1,30,100"')
    ap.add_argument("--pods", default=env("BENCH_PODS", "1,30"),
                    help='pods (pause + 3 containers, one shim each) for the pod measure; "" skips')
    ap.add_argument("--bulk", type=int, default=int(env("BENCH_BULK", "30")),
                    help="containers started (then deleted) at once in the bulk phase")
    ap.add_argument("--bulk-rounds", type=int, default=int(env("BENCH_BULK_ROUNDS", "3")))
    ap.add_argument("--output", default=env("BENCH_OUTPUT") or f"{TOP}/bench-results.json")
    ap.add_argument("--spool-mib", type=int, default=int(env("BENCH_SPOOL_MIB", "256")),
                    help="MiB the spool measure writes unread (%(default)s)")
    ap.add_argument("--baseline", default=env("BENCH_TETHER_BASELINE") or None,
                    help="another tether binary to compare stdout throughput with")
    ap.add_argument("--baseline-rounds", type=int,
                    default=int(env("BENCH_BASELINE_ROUNDS", "9")))
    ap.add_argument("--only", default=env("BENCH_ONLY", ",".join(PHASES)),
                    help="comma-separated phases to run (default: all)")
    a = ap.parse_args()
    a.only = [x.strip() for x in a.only.split(",") if x.strip()]
    unknown = [x for x in a.only if x not in PHASES]
    if unknown:
        ap.error(f"--only / BENCH_ONLY: unknown phases {unknown}; known: {', '.join(PHASES)}")
    if a.tty_mib < 1 or a.tty_rounds < 1:
        ap.error("need --tty-mib >= 1, --tty-rounds >= 1")
    if a.spool_mib < 1 or a.baseline_rounds < 1:
        ap.error("need --spool-mib >= 1, --baseline-rounds >= 1")
    try:
        a.containers = sorted({int(x) for x in a.containers.split(",") if x.strip()})
    except ValueError:
        ap.error(f"--containers / BENCH_CONTAINERS: not a list of numbers: {a.containers!r}")
    try:
        a.pods = sorted({int(x) for x in a.pods.split(",") if x.strip()})
    except ValueError:
        ap.error(f"--pods / BENCH_PODS: not a list of numbers: {a.pods!r}")
    if not a.containers or a.containers[0] < 1:
        ap.error("--containers: need positive counts")
    if a.iterations < 2 or a.throughput_runs < 1 or a.warmup < 0:
        ap.error("need --iterations >= 2, --throughput-runs >= 1, --warmup >= 0")
    return a


def preflight(a):
    if os.geteuid() != 0:
        raise BenchError("containers need root")
    if not (os.path.isfile(a.shim) and os.access(a.shim, os.X_OK)):
        raise BenchError(f"{a.shim} not built (make build)")
    if not a.go_shim or not os.access(a.go_shim, os.X_OK):
        raise BenchError(f"{GO_NAME} not found (apt-get install containerd)")
    for tool in ("containerd", "ctr", "runc"):
        if not shutil.which(tool, path=SYSTEM_PATH):
            raise BenchError(f"{tool} not found (make deps)")
    if a.baseline and not (os.path.isfile(a.baseline) and os.access(a.baseline, os.X_OK)):
        raise BenchError(f"baseline {a.baseline} is not an executable file")
    if not os.path.exists("/bin/busybox"):
        raise BenchError("/bin/busybox not found (apt-get install busybox-static)")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def version_of(cmd):
    p = run(cmd, check=False, timeout=30)
    return (p.stdout or b"").decode(errors="replace").strip().splitlines()[:3]


def main():
    a = parse_args()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    # also when started in the background by a shell (which ignores SIGINT there): an
    # interrupt must still clean up; SIGHUP only if not ignored on purpose (nohup)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        signal.signal(signal.SIGHUP, on_signal)

    b = Bench(a)
    started = datetime.datetime.now(datetime.timezone.utc).astimezone()
    t_start = time.monotonic()
    status = 0
    try:
        preflight(a)
        meta = {
            "date": started.isoformat(timespec="seconds"),
            "host": platform.node(),
            "nproc": os.cpu_count(),
            "cpu": cpu_model(),
            "kernel": platform.release(),
            "cgroup_mode": cgroup_mode(),
            "mem_total": read_first_line("/proc/meminfo"),
            "loadavg_start": read_first_line("/proc/loadavg"),
            "containerd": version_of(["containerd", "--version"]),
            "runc": version_of(["runc", "--version"])[:1],
            "tether": {"path": b.tether_bin, "version": version_of([b.tether_bin, "-v"]),
                       "sha256": sha256_file(b.tether_bin)},
            "go_shim": {"path": b.go_bin, "version": version_of([b.go_bin, "-v"]),
                        "sha256": sha256_file(b.go_bin)},
            "iterations": a.iterations,
            "warmup": a.warmup,
            "throughput_runs": a.throughput_runs,
            "containers": a.containers,
            "phases": a.only,
            "spool_mib": a.spool_mib,
        }
        if b.base_bin:
            meta["tether_baseline"] = {"path": b.base_bin,
                                       "version": version_of([b.base_bin, "-v"]),
                                       "sha256": sha256_file(b.base_bin)}
        b.results["meta"] = meta
        log(f"tether bench  {meta['date']}")
        log(f"machine: {meta['nproc']} cpus ({meta['cpu']}), kernel {meta['kernel']}, "
            f"cgroup {meta['cgroup_mode']}, loadavg {meta['loadavg_start']}")
        log(f"containerd {' '.join(meta['containerd'][:1])}; {' '.join(meta['runc'])}")
        def ver(v):
            return ", ".join(x.strip() for x in v["version"][1:3])
        log(f"tether: {b.tether_bin} ({ver(meta['tether'])})")
        log(f"go:     {b.go_bin} ({ver(meta['go_shim'])})")
        log(f"iterations {a.iterations} (+{a.warmup} warm-up), containers {a.containers}, "
            f"throughput runs {a.throughput_runs}")
        log()
        b.setup()
        for phase in PHASES:
            if phase in a.only:
                getattr(b, f"phase_{phase}")()
    except KeyboardInterrupt:
        log("\ninterrupted: cleaning up")
        status = 130
    except BenchError as e:
        log(f"\nbench: error: {e}")
        if b.work and b.ctd is not None:
            tail = b.ctd_tail()
            if tail:
                log("containerd log (tail):\n" + tail)
        status = 1
    finally:
        b.cleanup()
    if status == 130:
        return status

    b.results.setdefault("meta", {})["loadavg_end"] = read_first_line("/proc/loadavg")
    b.results["meta"]["duration_s"] = round(time.monotonic() - t_start, 1)
    if status == 0:
        log()
        report(b.results)
        log(f"loadavg at end {b.results['meta']['loadavg_end']}; "
            f"took {b.results['meta']['duration_s']} s")
    for e in b.results["errors"]:
        log(f"ERROR: {e}")
    if b.results["errors"]:
        status = status or 1
    b.results["status"] = "ok" if status == 0 else "failed"
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    with open(a.output, "w") as f:
        json.dump(b.results, f, indent=1)
        f.write("\n")
    log(f"results: {a.output}")
    return status


if __name__ == "__main__":
    sys.exit(main())

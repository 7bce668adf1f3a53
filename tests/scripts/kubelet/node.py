#!/usr/bin/env python3
"""A real Kubernetes node on tether: a standalone kubelet drives pods through containerd's
CRI, once with the Go shim (handler `runc`) and once with tether (handler `tether`) as
containerd's default handler, the same scenario each time (checks.py); the two result
lists are compared and the run fails when tether does worse than the Go shim on any check.

usage (root):
  node.py run [--handlers runc,tether] [--checks a,b,...] [--skip a,b,...]
              [--density N] [--out DIR] [--shape cgroupfs|systemd]
  node.py in-bed HANDLER OUTDIR CHECKS DENSITY     (run by `run`, inside the CRI test bed)
  node.py compare DIR                               (the table of a finished run)

Node shape 1 (this file's `run`): this host's cgroup v1 hierarchy with kubelet's cgroupfs
driver, inside the CRI test bed (tests/scripts/cri/env.sh: its own PID, mount and network
namespaces, a private containerd, images from a local registry). A standalone kubelet has
no API server, so it cannot resolve runtimeClassName and always asks for the default
handler: each handler gets a bed of its own (CRI_DEFAULT_RUNTIME). Inside the bed:

  * kubelet's paths are private: --root-dir, podLogsDir and volumePluginDir in the bed's
    work dir, a tmpfs on /var/log (kubelet's /var/log/containers links);
  * the sysctls kubelet would set on the host (vm.overcommit_memory, vm.panic_on_oom,
    kernel.panic, kernel.panic_on_oops, kernel.keys.root_max{keys,bytes}) are files with
    the values it expects, bind-mounted over /proc/sys in the bed's mount namespace: it
    reads them, finds them right and writes nothing;
  * cgroupRoot is /tether-kubelet-<run> in every hierarchy (made before kubelet starts,
    removed after the bed is gone);
  * its ports listen on 127.0.0.1 of the bed's network namespace (10250 TLS with a
    self-signed certificate and anonymous access, 10255 read-only, 10248 healthz).

Environment: TETHER_SHIM, CRI_CONTAINERD (default 2.3), KUBELET (default: the go-tools.sh
build), CRICTL, KUBELET_CRIU_DIR (default /opt/criu-trixie/bin when it has criu: put on
containerd's PATH for the checkpoint check), KUBELET_KEEP (keep kubelet's and
containerd's logs in the output dir: always done on failure).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
CRI_ENV = os.path.join(REPO, "tests", "scripts", "cri", "env.sh")
GO_TOOLS = os.path.join(REPO, "tests", "scripts", "go-tools.sh")
IMAGE = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
# The sysctls kubelet's container manager checks, with the values it wants
# (pkg/kubelet/cm/container_manager_linux.go setupKernelTunables, 1.34).
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": 1,
    "vm/panic_on_oom": 0,
    "kernel/panic": 10,
    "kernel/panic_on_oops": 1,
    "kernel/keys/root_maxkeys": 1000000,
    "kernel/keys/root_maxbytes": 25000000,
}
ALL_CHECKS = ["pod_ready", "hanging_probe", "restart_backoff", "host_sigkill", "oom_killed",
              "graceful_termination", "log_rotation", "stats_summary", "checkpoint",
              "user_namespaces", "node_restart", "density", "teardown"]


def say(*a):
    print("kubelet-node:", *a, file=sys.stderr, flush=True)


def go_tool(name, *args):
    out = subprocess.run([GO_TOOLS, name, *args], check=True, stdout=subprocess.PIPE,
                         text=True).stdout.strip().splitlines()
    return out[-1]


# --- inside the bed --------------------------------------------------------------------

class Node:
    """The node inside the CRI test bed: kubelet, containerd (restartable), crictl and
    kubelet's HTTP endpoints. Every path it makes is under the bed's work dir."""

    def __init__(self, handler, out, density):
        self.handler = handler
        self.out = out
        self.density = density
        self.work = os.environ["CRI_WORK"]
        self.endpoint = os.environ["CRI_ENDPOINT"]
        self.crictl_config = os.environ["CRI_CRICTL_CONFIG"]
        self.crictl_bin = os.environ["CRICTL"]
        self.kubelet_bin = os.environ["KUBELET"]
        self.cgroup_root = os.environ.get("KUBELET_CGROUP_ROOT", "")
        # cgroupfs (shape 1) or systemd (shape 2: cgroupRoot is systemd's root slice)
        self.cgroup_driver = os.environ.get("KUBELET_CGROUP_DRIVER", "cgroupfs")
        self.ctd_pid = int(os.environ["CRI_CTD_PID"])
        self.ctd_proc = None
        self.kubelet = None
        self.root_dir = os.path.join(self.work, "kubelet")
        self.manifests = os.path.join(self.work, "manifests")
        self.staging = os.path.join(self.work, "manifests.staging")
        self.pod_logs = os.path.join(self.work, "pod-logs")
        self.share = os.path.join(self.work, "share")
        self.node_name = os.uname().nodename.lower()
        for d in (self.root_dir, self.manifests, self.staging, self.pod_logs, self.share):
            os.makedirs(d, exist_ok=True)
        self.shim_name = ("containerd-shim-tether-v2" if handler == "tether"
                          else "containerd-shim-runc-v2")

    # -- setup ---------------------------------------------------------------------
    def private_mounts(self):
        # kubelet links every container log into /var/log/containers (fixed path)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "kubelet-var-log", "/var/log"],
                       check=True)
        d = os.path.join(self.work, "sysctl")
        os.makedirs(d, exist_ok=True)
        for name, value in KUBELET_SYSCTLS.items():
            f = os.path.join(d, name.replace("/", "."))
            with open(f, "w") as fh:
                fh.write("%d\n" % value)
            subprocess.run(["mount", "--bind", f, "/proc/sys/" + name], check=True)

    def write_config(self):
        cfg = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "staticPodPath": self.manifests,
            "fileCheckFrequency": "2s",
            "address": "127.0.0.1",
            "port": 10250,
            "readOnlyPort": 10255,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": self.cgroup_driver,
            "cgroupsPerQOS": True,
            "failSwapOn": False,
            "failCgroupV1": False,
            "containerRuntimeEndpoint": self.endpoint,
            "podLogsDir": self.pod_logs,
            "volumePluginDir": os.path.join(self.work, "volume-plugins"),
            "containerLogMaxSize": "1Mi",
            "containerLogMaxFiles": 3,
            "containerLogMonitorInterval": "3s",
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "oomScoreAdj": 0,
            "maxPods": 110,
            "serializeImagePulls": False,
            "resolvConf": "/etc/resolv.conf",
            # container stats from the runtime (CRI ContainerStats -> the shim's Stats),
            # not from cAdvisor reading the cgroups itself
            "featureGates": {"PodAndContainerStatsFromCRI": True},
        }
        if self.cgroup_driver == "cgroupfs":
            cfg["cgroupRoot"] = "/" + self.cgroup_root
        path = os.path.join(self.work, "kubelet.json")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=1)
        return path

    def cgroup_dirs(self):
        """The cgroupRoot in every cgroup hierarchy this bed sees (systemd: the root)."""
        dirs = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                sep = parts.index("-")
                fstype, mnt = parts[sep + 1], parts[4]
                if fstype in ("cgroup", "cgroup2"):
                    dirs.append(os.path.join(mnt, self.cgroup_root))
        return dirs

    def make_cgroup_root(self):
        for d in self.cgroup_dirs():
            os.makedirs(d, exist_ok=True)
            if os.path.exists(os.path.join(d, "cpuset.cpus")):
                parent = os.path.dirname(d)
                for f in ("cpuset.cpus", "cpuset.mems"):
                    with open(os.path.join(parent, f)) as src:
                        value = src.read().strip()
                    with open(os.path.join(d, f), "w") as dst:
                        dst.write(value)

    def start_kubelet(self):
        log = open(os.path.join(self.work, "kubelet.log"), "a")
        self.kubelet = subprocess.Popen(
            [self.kubelet_bin, "--config", self.config, "--root-dir", self.root_dir, "--v=2"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.wait("kubelet healthz", 60, lambda: self.http("http://127.0.0.1:10248/healthz") == b"ok")

    def setup(self):
        self.private_mounts()
        if self.cgroup_driver == "cgroupfs":
            self.make_cgroup_root()
        self.config = self.write_config()
        self.start_kubelet()

    # -- restarts ------------------------------------------------------------------
    def kill_containerd(self):
        pid = self.ctd_proc.pid if self.ctd_proc else self.ctd_pid
        os.kill(pid, 9)
        if self.ctd_proc:
            self.ctd_proc.wait()
        else:
            self.wait("containerd's end", 10, lambda: not pid_alive(pid))

    def start_containerd(self):
        log = open(os.path.join(self.work, "containerd.log"), "a")
        self.ctd_proc = subprocess.Popen(
            ["containerd", "--config", os.path.join(self.work, "containerd.toml")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.wait("containerd's CRI", 60, lambda: self.crictl_rc(["info"]) == 0)

    def kill_kubelet(self):
        if self.kubelet and self.kubelet.poll() is None:
            self.kubelet.kill()
            self.kubelet.wait()
        # stopped on purpose: not a kubelet that went away (kubelet_gone)
        self.kubelet = None

    def stop(self):
        self.kill_kubelet()
        if self.ctd_proc and self.ctd_proc.poll() is None:
            self.ctd_proc.terminate()
            try:
                self.ctd_proc.wait(20)
            except subprocess.TimeoutExpired:
                self.ctd_proc.kill()
                self.ctd_proc.wait()

    def save_logs(self):
        """Copies kubelet's and containerd's logs and kubelet's config to the output dir."""
        for f in ("kubelet.log", "containerd.log", "kubelet.json"):
            try:
                shutil.copy(os.path.join(self.work, f), self.out)
            except OSError:
                pass

    # -- views -----------------------------------------------------------------------
    def http(self, url, method="GET", tls=False):
        try:
            req = urllib.request.Request(url, method=method)
            ctx = None
            if tls:
                import ssl
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            with urllib.request.urlopen(req, timeout=120 if tls else 10, context=ctx) as r:
                return r.read()
        except OSError as e:
            return ("error: %s" % e).encode()

    def crictl(self, args, timeout=120):
        r = subprocess.run([self.crictl_bin, "--config", self.crictl_config, *args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("crictl %s: %s" % (" ".join(args), r.stderr.strip()))
        return r.stdout

    def crictl_rc(self, args):
        return subprocess.run([self.crictl_bin, "--config", self.crictl_config, *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=60).returncode

    def crictl_json(self, args):
        return json.loads(self.crictl(args[:1] + ["-o", "json"] + args[1:]))

    def kubelet_pods(self):
        """kubelet's own view of its pods (read-only port /pods: a standalone kubelet puts
        its status manager's statuses of static pods there)."""
        raw = self.http("http://127.0.0.1:10255/pods")
        try:
            return json.loads(raw).get("items") or []
        except ValueError:
            return []

    def pod(self, name):
        full = "%s-%s" % (name, self.node_name)
        for p in self.kubelet_pods():
            if p["metadata"]["name"] == full:
                return p
        return None

    def container_status(self, pod, container):
        p = self.pod(pod)
        if not p:
            return None
        st = p.get("status") or {}
        for c in (st.get("containerStatuses") or []) + (st.get("initContainerStatuses") or []):
            if c["name"] == container:
                return c
        return None

    def sandboxes(self, name, ready_only=False):
        full = "%s-%s" % (name, self.node_name)
        return [s for s in self.crictl_json(["pods"]).get("items", [])
                if s["metadata"]["name"] == full
                and (not ready_only or s["state"] == "SANDBOX_READY")]

    def containers(self, name, container=None, all_states=True):
        """The CRI containers of pod `name`'s ready sandbox."""
        sbs = self.sandboxes(name, ready_only=True)
        out = []
        for sb in sbs:
            args = ["ps", "--pod", sb["id"]] + (["-a"] if all_states else [])
            for c in self.crictl_json(args).get("containers", []):
                if container is None or c["metadata"]["name"] == container:
                    out.append(c)
        return out

    def inspect(self, cid):
        return self.crictl_json(["inspect", cid])

    # -- manifests -------------------------------------------------------------------
    def add_pod(self, name, spec, grace=2):
        """Writes a static pod manifest (elsewhere, then renamed in: kubelet never reads
        half a file)."""
        spec.setdefault("terminationGracePeriodSeconds", grace)
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            c.setdefault("image", IMAGE)
            c.setdefault("imagePullPolicy", "IfNotPresent")
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "default"}, "spec": spec}
        tmp = os.path.join(self.staging, name + ".json")
        with open(tmp, "w") as f:
            json.dump(pod, f)
        os.rename(tmp, os.path.join(self.manifests, name + ".json"))

    def remove_pod(self, name):
        try:
            os.unlink(os.path.join(self.manifests, name + ".json"))
        except FileNotFoundError:
            pass

    def wait_pod_gone(self, name, timeout=90):
        """Until pod `name`'s sandbox is stopped (kubelet removes it from the CRI list only
        at its next garbage collection, up to a minute later)."""
        self.wait("pod %s's sandbox to stop" % name, timeout,
                  lambda: not self.sandboxes(name, ready_only=True))

    def kubelet_gone(self):
        """Why kubelet is not running though it should be (it was started and not killed
        on purpose): its exit status and, for a Go panic, the panic and the function that
        panicked, from its log; None while it runs."""
        if self.kubelet is None or self.kubelet.poll() is None:
            return None
        why = "kubelet exited with status %s" % self.kubelet.returncode
        try:
            with open(os.path.join(self.work, "kubelet.log"), errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return why
        for i, line in enumerate(lines):
            if line.startswith("panic: "):
                # "goroutine N [running]:" then the function that panicked
                frames = [x for x in lines[i + 1:i + 8]
                          if x and not x.startswith(("[", "\t", "goroutine"))]
                why += " (%s%s)" % (line, ", in " + frames[0] if frames else "")
                break
        return why

    def wait(self, what, timeout, cond, step=0.5):
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                v = cond()
                if v:
                    return v
            except Exception as e:  # a view that is not there yet
                last = e
            gone = self.kubelet_gone()
            if gone:
                # nothing that waits on kubelet can happen now: say so instead of timing out
                raise RuntimeError("%s while waiting for %s" % (gone, what))
            if time.monotonic() >= deadline:
                raise TimeoutError("timed out after %ss waiting for %s%s" % (
                    timeout, what, " (last error: %s)" % last if last else ""))
            time.sleep(step)

    def shim_pids(self):
        pids = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/comm" % d) as f:
                        comm = f.read().strip()
                    with open("/proc/%s/cmdline" % d, "rb") as f:
                        argv0 = f.read().split(b"\0")[0].decode(errors="replace")
                except OSError:
                    continue
                if os.path.basename(argv0) == self.shim_name or comm == self.shim_name[:15]:
                    pids.append(int(d))
        return pids


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def pss_kib(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def in_bed(handler, out, checks, density):
    import checks as scenario
    os.makedirs(out, exist_ok=True)
    node = Node(handler, out, density)
    results = []
    try:
        node.setup()
        results = scenario.run(node, checks)
    except Exception as e:  # setup failed: every check fails
        say("node setup failed: %s" % e)
        results = [{"check": c, "ok": False, "detail": "node setup failed: %s" % e}
                   for c in checks]
    finally:
        node.stop()
        node.save_logs()
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 0


# --- host side -------------------------------------------------------------------------

def remove_cgroup_tree(name):
    """Removes /sys/fs/cgroup/*/<name> depth first (every process in it is gone with the
    bed's PID namespace; a cgroup empties a moment after its last process died)."""
    roots = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            if parts[sep + 1] in ("cgroup", "cgroup2"):
                roots.append(os.path.join(parts[4], name))
    left = []
    for _ in range(20):
        left = []
        for root in roots:
            if not os.path.isdir(root):
                continue
            for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda t: -len(t[0])):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    left.append(dirpath)
        if not left:
            return []
        time.sleep(0.5)
    return left


def host_run(args):
    handlers = ["runc", "tether"]
    checks = list(ALL_CHECKS)
    density = 110
    out = None
    shape = "cgroupfs"
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--handlers":
            handlers = args[i + 1].split(","); i += 2
        elif a == "--checks":
            checks = args[i + 1].split(","); i += 2
        elif a == "--skip":
            skip = set(args[i + 1].split(","))
            checks = [c for c in checks if c not in skip]; i += 2
        elif a == "--density":
            density = int(args[i + 1]); i += 2
        elif a == "--out":
            out = args[i + 1]; i += 2
        elif a == "--shape":
            shape = args[i + 1]; i += 2
        else:
            say("unknown argument %s" % a)
            return 2
    unknown = [c for c in checks if c not in ALL_CHECKS]
    if unknown:
        say("unknown checks %s (known: %s)" % (unknown, ", ".join(ALL_CHECKS)))
        return 2
    ctd = os.environ.get("CRI_CONTAINERD", "2.3")
    if out is None:
        out = "/var/tmp/tether-kubelet/results/%s-ctd%s" % (time.strftime("%Y%m%d-%H%M%S"), ctd)
        base = os.path.dirname(out)
        if os.path.isdir(base):
            for old in sorted(os.listdir(base))[:-10]:
                shutil.rmtree(os.path.join(base, old), ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    if shape not in ("cgroupfs", "systemd"):
        say("--shape is cgroupfs (this host) or systemd (inside the systemd guest)")
        return 2
    kubelet = os.environ.get("KUBELET") or os.path.join(go_tool("kubelet"), "kubelet")
    crictl = os.environ.get("CRICTL") or os.path.join(go_tool("cri-tools"), "crictl")
    if ctd != "1.6" and not os.environ.get("CRI_CONTAINERD_BIN"):
        go_tool("containerd", ctd)
    criu_dir = os.environ.get("KUBELET_CRIU_DIR", "/opt/criu-trixie/bin")
    say("kubelet %s, containerd %s, handlers %s, checks %s, density %d, results in %s" % (
        kubelet, ctd, handlers, ",".join(checks), density, out))
    started = time.monotonic()
    # `timeout` or CI ending this run still removes the cgroup trees (finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for h in handlers:
        cgroup_root = "tether-kubelet-%d-%s" % (os.getpid(), h)
        env = dict(os.environ, CRI_CONTAINERD=ctd, CRI_DEFAULT_RUNTIME=h, KUBELET=kubelet,
                   CRICTL=crictl, KUBELET_CGROUP_ROOT=cgroup_root, KUBELET_CGROUP_DRIVER=shape)
        if shape == "systemd":
            # runc's systemd driver hands systemd the pid as runc sees it: no PID namespace
            env.update(CRI_SYSTEMD_CGROUP="1", CRI_PID_NAMESPACE="0")
        if os.path.exists(os.path.join(criu_dir, "criu")):
            env["CRI_EXTRA_PATH"] = criu_dir
        t0 = time.monotonic()
        say("handler %s: a fresh bed" % h)
        bed = subprocess.Popen([CRI_ENV, "run", "--", sys.executable, os.path.abspath(__file__),
                                "in-bed", h, os.path.join(out, h), ",".join(checks),
                                str(density)], env=env)
        try:
            rc = bed.wait()
        finally:
            if bed.poll() is None:  # interrupted: env.sh's own trap ends the bed
                bed.terminate()
                bed.wait()
            left = remove_cgroup_tree(cgroup_root) if shape == "cgroupfs" else []
        say("handler %s: %d s (bed status %d)%s" % (
            h, time.monotonic() - t0, rc,
            "; cgroups left: %s" % left[:5] if left else ""))
        if left:
            with open(os.path.join(out, h, "cgroups-left"), "w") as f:
                f.write("\n".join(left) + "\n")
    say("wall time %d s" % (time.monotonic() - started))
    return compare(out, handlers)


def compare(out, handlers=("runc", "tether")):
    base, cand = handlers[0], handlers[-1]
    res = {}
    missing = False
    for h in handlers:
        try:
            with open(os.path.join(out, h, "results.json")) as f:
                res[h] = {r["check"]: r for r in json.load(f)}
        except (OSError, ValueError) as e:
            say("%s: no results (%s)" % (h, e))
            res[h] = {}
            missing = True
        if os.path.exists(os.path.join(out, h, "cgroups-left")):
            res[h]["teardown"] = {"check": "teardown", "ok": False,
                                  "detail": "cgroups left after the bed ended"}
    names = [c for c in ALL_CHECKS if any(c in res[h] for h in handlers)]
    worse = []
    print("%-22s %-8s %-8s  %s" % ("check", base, cand, "detail (%s | %s)" % (base, cand)))
    for n in names:
        cols = []
        for h in (base, cand):
            r = res[h].get(n)
            cols.append("-" if r is None else "ok" if r["ok"] else
                        "n/a" if r.get("unsupported") else "FAIL")
        d = " | ".join((res[h].get(n) or {}).get("detail", "") for h in (base, cand))
        print("%-22s %-8s %-8s  %s" % (n, cols[0], cols[1], d))
        b, c = res[base].get(n), res[cand].get(n)
        if base != cand and (c is None or not c["ok"]) and b is not None and b["ok"]:
            worse.append(n)
    figures = {h: {n: r.get("figures") for n, r in res[h].items() if r.get("figures")}
               for h in handlers}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"results": res, "worse": worse}, f, indent=1)
    for h in handlers:
        for n, fig in figures[h].items():
            print("  %s %s: %s" % (h, n, ", ".join("%s=%s" % kv for kv in fig.items())))
    if missing:
        print("kubelet-node: a handler's node produced no results")
        return 1
    if worse:
        print("kubelet-node: %s does worse than %s on: %s" % (cand, base, ", ".join(worse)))
        return 1
    both = [n for n in names if all(res[h].get(n) and not res[h][n]["ok"] for h in handlers)]
    if both:
        print("kubelet-node: failing for both handlers (not counted): %s" % ", ".join(both))
    print("kubelet-node: %s does no worse than %s on %d checks" % (cand, base, len(names)))
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        say("must run as root")
        return 2
    if argv[1] == "run":
        return host_run(argv[2:])
    if argv[1] == "in-bed":
        sys.path.insert(0, HERE)
        return in_bed(argv[2], argv[3], argv[4].split(","), int(argv[5]))
    if argv[1] == "compare":
        return compare(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

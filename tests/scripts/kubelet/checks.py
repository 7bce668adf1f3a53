"""The scenario a kubelet node runs for one handler (see node.py): each check adds its
pods as static manifests, looks at kubelet's view (read-only port /pods, /stats/summary,
the checkpoint API) and CRI's (crictl), removes its pods and returns
{"check", "ok", "detail", "figures"}. A check that raises fails with the message; the
others still run. The same expectations hold for every handler."""
import gzip
import json
import os
import re
import signal
import time
import traceback

from node import pss_kib

SLEEP = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]


class CheckFailed(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def run(node, checks):
    results = []
    for name in checks:
        t0 = time.monotonic()
        node.current = name
        try:
            r = globals()["check_" + name](node) or {}
            r.setdefault("ok", True)
        except Exception as e:
            detail = str(e) if isinstance(e, (CheckFailed, TimeoutError)) else (
                "%s: %s" % (type(e).__name__, traceback.format_exc().strip().splitlines()[-3:]))
            r = {"ok": False, "detail": detail}
        r["check"] = name
        r["seconds"] = round(time.monotonic() - t0, 1)
        r.setdefault("detail", "")
        print("kubelet-node: [%s] %s %s (%s s) %s" % (node.handler, name,
              "ok" if r["ok"] else "FAIL", r["seconds"], r["detail"]), flush=True)
        results.append(r)
        if not r["ok"]:
            node.save_logs()  # as they were when it failed (a guest may not get further)
        # whatever the check left goes before the next one starts
        for f in os.listdir(node.manifests):
            node.remove_pod(f[:-5])
        try:
            node.wait("every sandbox stopped", 120, lambda: not any(
                s["state"] == "SANDBOX_READY" for s in node.crictl_json(["pods"]).get("items", [])))
        except Exception as e:
            print("kubelet-node: [%s] after %s: %s" % (node.handler, name, e), flush=True)
    return results


def ready(node, name):
    p = node.pod(name)
    if not p:
        return False
    conds = (p.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def running_cid(node, pod, container):
    cs = node.container_status(pod, container)
    if cs and "running" in (cs.get("state") or {}) and cs.get("containerID"):
        return cs["containerID"].split("://", 1)[-1]
    return None


def bed_pid(node, cid):
    return int(node.inspect(cid)["info"]["pid"])


# --- probes --------------------------------------------------------------------------

def web_pod(liveness=True):
    pod = {
        "initContainers": [{"name": "init", "command": ["sh", "-c", "echo ready > /shared/index.html"],
                            "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}],
        "containers": [
            {"name": "web", "command": ["httpd", "-f", "-p", "8080", "-h", "/shared"],
             "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
             "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080},
                                "periodSeconds": 2, "timeoutSeconds": 2},
             "livenessProbe": {"exec": {"command": ["test", "-f", "/shared/index.html"]},
                               "periodSeconds": 2, "timeoutSeconds": 2}},
            {"name": "side", "command": SLEEP,
             "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 2,
                                "timeoutSeconds": 2},
             "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 2,
                               "timeoutSeconds": 2}},
        ],
        "volumes": [{"name": "shared", "emptyDir": {}}],
    }
    if not liveness:
        for c in pod["containers"]:
            del c["livenessProbe"]
    return pod


def check_pod_ready(node):
    t0 = time.monotonic()
    node.add_pod("web", web_pod())
    node.wait("pod web Ready", 120, lambda: ready(node, "web"))
    took = time.monotonic() - t0
    # probes keep passing: no restart, still Ready after a few periods
    time.sleep(8)
    expect(ready(node, "web"), "pod web not Ready any more")
    for c in ("web", "side"):
        cs = node.container_status("web", c)
        expect(cs and cs["restartCount"] == 0, "container %s restarted: %s" % (c, cs))
    init = node.container_status("web", "init")
    term = (init or {}).get("state", {}).get("terminated") or {}
    expect(term.get("exitCode") == 0, "init container: %s" % init)
    return {"detail": "Ready in %.1f s" % took, "figures": {"ready_s": round(took, 1)}}


def check_hanging_probe(node):
    # An exec readiness probe that never ends: kubelet's ExecSync deadline (timeoutSeconds)
    # must fail it, and the hung processes must be killed, not pile up.
    node.add_pod("hang", {"containers": [{
        "name": "hang", "command": SLEEP,
        "readinessProbe": {"exec": {"command": ["sleep", "600"]}, "periodSeconds": 3,
                           "timeoutSeconds": 2}}]})
    cid = node.wait("container hang running", 120, lambda: running_cid(node, "hang", "hang"))
    time.sleep(15)
    cs = node.container_status("hang", "hang")
    expect(cs and not cs.get("ready"), "a hanging readiness probe passed: %s" % cs)
    expect(cs["restartCount"] == 0, "the container restarted: %s" % cs)
    procs = node.crictl(["exec", "-s", cid, "ps", "-o", "args"])
    hung = [l for l in procs.splitlines() if l.strip() == "sleep 600"]
    expect(len(hung) <= 1, "%d hung probe processes left running:\n%s" % (len(hung), procs))
    with open(os.path.join(node.work, "kubelet.log"), errors="replace") as f:
        timeouts = sum(1 for l in f if "hang" in l and "Probe failed" in l and "timed out" in l)
    expect(timeouts >= 2, "kubelet logged %d probe time-outs for pod hang" % timeouts)
    return {"detail": "%d probe time-outs, %d hung exec left" % (timeouts, len(hung))}


# --- restarts ------------------------------------------------------------------------

def check_restart_backoff(node):
    node.add_pod("crash", {"containers": [{"name": "crash",
                                           "command": ["sh", "-c", "sleep 1; exit 1"]}]})
    t0 = time.monotonic()
    # (kubelet's status may show the new restartCount a moment before the last state)
    cs = node.wait("restartCount >= 2 with its last termination", 120,
                   lambda: (lambda c: c if c and c["restartCount"] >= 2
                            and (c.get("lastState") or {}).get("terminated") else None)(
                       node.container_status("crash", "crash")))
    last = (cs.get("lastState") or {}).get("terminated") or {}
    expect(last.get("exitCode") == 1, "last termination: %s" % cs.get("lastState"))
    took = time.monotonic() - t0
    # back-off: 10 s, then 20 s; two restarts cannot come in less than ~10 s
    expect(took >= 8, "two restarts in %.1f s: no back-off" % took)
    wait_state = node.wait("CrashLoopBackOff", 60, lambda: (
        (node.container_status("crash", "crash") or {}).get("state", {}).get("waiting", {})
        .get("reason") == "CrashLoopBackOff"))
    cri = node.containers("crash", "crash")
    attempts = sorted(c["metadata"].get("attempt", 0) for c in cri)
    return {"detail": "restartCount %d after %.1f s, attempts %s" % (cs["restartCount"], took, attempts)}


def check_host_sigkill(node):
    node.add_pod("victim", {"containers": [{"name": "victim", "command": SLEEP}]})
    cid = node.wait("victim running", 120, lambda: running_cid(node, "victim", "victim"))
    pid = bed_pid(node, cid)
    os.kill(pid, signal.SIGKILL)
    cs = node.wait("victim restarted", 60, lambda: (lambda c: c if c and c["restartCount"] == 1
                   and "running" in c["state"] else None)(node.container_status("victim", "victim")))
    last = (cs.get("lastState") or {}).get("terminated") or {}
    expect(last.get("exitCode") == 137, "last termination: %s" % cs.get("lastState"))
    new = cs["containerID"].split("://", 1)[-1]
    expect(new != cid, "the same container id after the restart")
    return {"detail": "restarted, last exit %s (%s)" % (last.get("exitCode"), last.get("reason"))}


def check_oom_killed(node):
    node.add_pod("oom", {"restartPolicy": "Never", "containers": [{
        "name": "oom", "command": ["sh", "-c", "sleep 2; tail /dev/zero"],
        "resources": {"limits": {"memory": "32Mi"}, "requests": {"memory": "32Mi"}}}]})
    cs = node.wait("oom terminated", 120, lambda: (lambda c: c if c and "terminated" in c["state"]
                   else None)(node.container_status("oom", "oom")))
    term = cs["state"]["terminated"]
    cri = node.containers("oom", "oom")
    expect(cri, "no CRI container for oom")
    st = node.inspect(cri[0]["id"])["status"]
    expect(term.get("reason") == "OOMKilled" and term.get("exitCode") == 137,
           "kubelet says %s" % term)
    expect(st.get("reason") == "OOMKilled" and st.get("exitCode") == 137,
           "CRI says reason %r exit %r" % (st.get("reason"), st.get("exitCode")))
    with open(os.path.join(node.work, "containerd.log"), errors="replace") as f:
        misses = sum(1 for l in f if "if oom event occurred" in l)
    expect(misses == 0, "containerd could not check the exit for an OOM %d times "
           "(\"failed to check and update container ... if oom event occurred\")" % misses)
    return {"detail": "kubelet and CRI: %s %s" % (term.get("reason"), term.get("exitCode"))}


# --- termination ---------------------------------------------------------------------

def rfc3339(ts):
    """Seconds since the epoch of CRI's RFC 3339 time (nanoseconds cut to microseconds)."""
    import datetime
    if not ts:
        return float("nan")
    if isinstance(ts, (int, float)) or str(ts).isdigit():  # nanoseconds
        return int(ts) / 1e9
    base, _, frac = ts.rstrip("Z").partition(".")
    t = datetime.datetime.fromisoformat(base).replace(tzinfo=datetime.timezone.utc)
    return t.timestamp() + (float("0." + frac[:6]) if frac else 0.0)


def check_graceful_termination(node):
    share = os.path.join(node.share, "grace")
    os.makedirs(share, exist_ok=True)
    mark = "/share/events"
    # a guest under TCG takes seconds for the preStop exec alone
    grace = int(os.environ.get("KUBELET_GRACE_SECONDS", "10"))
    node.add_pod("grace", {
        "terminationGracePeriodSeconds": grace,
        "volumes": [{"name": "share", "hostPath": {"path": share}}],
        "containers": [
            {"name": "polite",
             "command": ["sh", "-c", "trap 'echo term >> %s; exit 0' TERM; echo up >> %s; "
                         "while :; do sleep 0.2; done" % (mark, mark)],
             "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> %s" % mark]}}},
             "volumeMounts": [{"name": "share", "mountPath": "/share"}]},
            {"name": "stubborn",
             "command": ["sh", "-c", "trap '' TERM; while :; do sleep 0.2; done"]},
        ]}, grace=grace)
    node.wait("both running", 120, lambda: running_cid(node, "grace", "polite")
              and running_cid(node, "grace", "stubborn"))
    ids = {c: running_cid(node, "grace", c) for c in ("polite", "stubborn")}
    t0 = time.time()
    node.remove_pod("grace")
    ends = {}

    def finished():
        for c, cid in ids.items():
            if c in ends:
                continue
            try:
                st = node.inspect(cid)["status"]
            except RuntimeError:
                ends[c] = (None, None)  # removed before we saw it stop
                continue
            if st.get("state") == "CONTAINER_EXITED":
                # when it ended by CRI's clock, not when this poll saw it (a slow guest)
                ends[c] = (st.get("exitCode"), rfc3339(st.get("finishedAt")) - t0)
        return len(ends) == len(ids)
    node.wait("both containers to stop", grace + 90, finished, step=0.2)
    with open(os.path.join(share, "events")) as f:
        events = f.read().split()
    expect(events[:1] == ["up"] and "prestop" in events and "term" in events
           and events.index("prestop") < events.index("term"),
           "the polite container saw %s (want up, prestop, then term)" % events)
    pc, pt = ends["polite"]
    sc, st = ends["stubborn"]
    # the polite one ends by itself (0, not 137) before the grace period is over
    expect(pc == 0 and pt is not None and pt < grace,
           "polite: exit %s after %s s (want 0 inside %d s)" % (pc, pt, grace))
    expect(sc == 137 and st is not None and grace - 1.5 <= st <= grace + 20,
           "stubborn: exit %s after %s s (want 137 at about %d s)" % (sc, st, grace))
    node.wait_pod_gone("grace")
    return {"detail": "polite exit 0 at %.1f s; stubborn 137 at %.1f s (grace %d s)" % (pt, st, grace),
            "figures": {"stubborn_killed_s": round(st, 1)}}


# --- logs ----------------------------------------------------------------------------

def cri_log_messages(text):
    """The messages of CRI log lines ("<time> <stream> <P|F> <msg>"), partial ones joined."""
    out, partial = [], ""
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3:
            continue
        msg = parts[3] if len(parts) == 4 else ""
        if parts[2] == "P":
            partial += msg
        else:
            out.append(partial + msg)
            partial = ""
    return out


def check_log_rotation(node):
    # ~2.4 MB in 4 bursts: with 1 MiB files, kubelet rotates at most twice, so nothing is
    # rotated away (containerLogMaxFiles 3) and every line must be there once.
    lines, per_burst = 24000, 6000
    pad = "x" * 80
    script = ("i=0; for b in 1 2 3 4; do n=0; while [ $n -lt %d ]; do "
              "echo \"line $i %s\"; i=$((i+1)); n=$((n+1)); done; sleep 4; done; "
              "echo done; exec sleep 3600" % (per_burst, pad))
    node.add_pod("logger", {"containers": [{"name": "logger", "command": ["sh", "-c", script]}]})
    cid = node.wait("logger running", 120, lambda: running_cid(node, "logger", "logger"))
    log_path = node.inspect(cid)["status"]["logPath"]
    d = os.path.dirname(log_path)

    def done():
        with open(log_path, errors="replace") as f:
            return "done" in f.read()[-200:]
    node.wait("the logger's last line", 180, done, step=1)
    time.sleep(4)  # one more monitor period: a last rotation would show now
    files = sorted(f for f in os.listdir(d) if f != os.path.basename(log_path))
    msgs = []
    for f in files:  # rotated: <name>.<timestamp>[.gz], oldest first
        p = os.path.join(d, f)
        data = gzip.open(p, "rt", errors="replace").read() if f.endswith(".gz") else \
            open(p, errors="replace").read()
        msgs += cri_log_messages(data)
    with open(log_path, errors="replace") as f:
        current = cri_log_messages(f.read())
    msgs += current
    nums = [int(m.split()[1]) for m in msgs if m.startswith("line ")]
    expect(len(files) >= 1, "no rotation happened (files: %s)" % os.listdir(d))
    expect(nums == list(range(lines)),
           "lines across %d rotated files + the current one: %d of %d, first gap or repeat at %s"
           % (len(files), len(nums), lines,
              next((i for i, n in enumerate(nums) if n != i), len(nums))))
    crictl_logs = node.crictl(["logs", cid], timeout=120)
    expect(crictl_logs.splitlines() == current,
           "crictl logs (%d lines) differs from the current log file (%d lines)"
           % (len(crictl_logs.splitlines()), len(current)))
    with open(os.path.join(node.work, "kubelet.log"), errors="replace") as f:
        errors = [l for l in f if "ailed to rotate log" in l or "ReopenContainerLog" in l and "rror" in l]
    expect(not errors, "kubelet: %s" % errors[:2])
    return {"detail": "%d lines once each across %d rotated files + current" % (len(nums), len(files)),
            "figures": {"rotations": len(files)}}


# --- stats and checkpoint ------------------------------------------------------------

def check_stats_summary(node):
    node.add_pod("web", web_pod())
    node.wait("pod web Ready", 120, lambda: ready(node, "web"))
    full = "web-%s" % node.node_name

    def complete():
        s = json.loads(node.http("http://127.0.0.1:10255/stats/summary"))
        for p in s.get("pods", []):
            if p["podRef"]["name"] != full:
                continue
            cs = {c["name"]: c for c in p.get("containers", [])}
            if set(cs) >= {"web", "side"} and all(
                    (c.get("cpu") or {}).get("usageCoreNanoSeconds", 0) > 0
                    and (c.get("memory") or {}).get("workingSetBytes", 0) > 0
                    for n, c in cs.items() if n in ("web", "side")):
                return cs
        return None
    cs = node.wait("/stats/summary with CPU and memory of web and side", 60, complete, step=2)
    # crictl stats: CRI ContainerStats, straight from the shim's Stats
    stats = node.crictl_json(["stats", "--pod", node.sandboxes("web", ready_only=True)[0]["id"]])
    mem = {s["attributes"]["metadata"]["name"]:
           int(((s.get("memory") or {}).get("workingSetBytes") or {}).get("value", 0))
           for s in stats.get("stats", [])}
    expect(mem.get("web", 0) > 0 and mem.get("side", 0) > 0,
           "crictl stats, working set by container: %s" % mem)
    return {"detail": "; ".join("%s cpu %d ns mem %d B" % (
        n, c["cpu"]["usageCoreNanoSeconds"], c["memory"]["workingSetBytes"])
        for n, c in sorted(cs.items()) if n in ("web", "side"))}


def check_checkpoint(node):
    node.add_pod("ckpt", {"containers": [{"name": "counter", "command": [
        "sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done"]}]})
    cid = node.wait("counter running", 120, lambda: running_cid(node, "ckpt", "counter"))
    url = "https://127.0.0.1:10250/checkpoint/default/ckpt-%s/counter" % node.node_name
    raw = node.http(url, method="POST", tls=True)
    try:
        items = json.loads(raw)["items"]
    except (ValueError, KeyError):
        with open(os.path.join(node.work, "kubelet.log"), errors="replace") as f:
            if any("CheckpointContainer" in l and "Unimplemented" in l for l in f):
                return {"ok": False, "unsupported": True,
                        "detail": "containerd's CRI has no CheckpointContainer (Unimplemented)"}
        raise CheckFailed("checkpoint API: %s" % raw[-400:].decode(errors="replace"))
    expect(len(items) == 1, "checkpoint API: %s" % items)
    path = items[0]
    local = path if os.path.exists(path) else os.path.join(
        node.root_dir, "checkpoints", os.path.basename(path))
    size = os.path.getsize(local)
    import tarfile
    with tarfile.open(local) as t:
        names = t.getnames()
    expect(any(n.startswith("checkpoint/") for n in names) and "config.dump" in names,
           "archive has %s" % names[:10])
    time.sleep(1)
    cs = node.container_status("ckpt", "counter")
    expect(cs and "running" in cs["state"] and cs["restartCount"] == 0
           and running_cid(node, "ckpt", "counter") == cid,
           "the container after its checkpoint: %s" % cs)
    a = node.crictl(["exec", "-s", cid, "cat", "/tmp/count"]).strip()
    time.sleep(1)
    b = node.crictl(["exec", "-s", cid, "cat", "/tmp/count"]).strip()
    expect(int(b) > int(a), "the counter stands still after the checkpoint (%s, %s)" % (a, b))
    return {"detail": "archive %d KiB, %d entries; the container runs on" % (size // 1024, len(names))}


def runc_version():
    import subprocess
    out = subprocess.run(["runc", "--version"], stdout=subprocess.PIPE, text=True).stdout
    return out.split()[2] if len(out.split()) > 2 else "?"


def check_user_namespaces(node):
    node.add_pod("userns", {"hostUsers": False, "containers": [{"name": "u", "command": SLEEP}]})

    log = os.path.join(node.work, "kubelet.log")

    def state():
        cid = running_cid(node, "userns", "u")
        if cid:
            return ("running", cid)
        with open(log, errors="replace") as f:
            if any("runtime does not support user namespaces" in l for l in f):
                # containerd's runtime handler features (runc >= 1.2 and idmapped mounts)
                return ("unsupported", "containerd says the runtime does not support user "
                        "namespaces (runc %s)" % runc_version())
        cs = node.container_status("userns", "u") or {}
        w = (cs.get("state") or {}).get("waiting") or {}
        if w.get("reason") in ("CreateContainerError", "RunContainerError", "CrashLoopBackOff"):
            return ("error", w)
        return None
    try:
        what, v = node.wait("userns container running (or its error)", 60, state)
    except TimeoutError as e:
        with open(os.path.join(node.work, "kubelet.log"), errors="replace") as f:
            err = [l.strip() for l in f if "userns" in l and ("rror" in l)][-1:]
        raise CheckFailed("the node does not run it: %s" % (err[0][-300:] if err else e))
    if what == "unsupported":
        return {"ok": False, "unsupported": True, "detail": v}
    expect(what == "running", "the node does not run it: %s" % v)
    pid = bed_pid(node, v)
    with open("/proc/%d/uid_map" % pid) as f:
        m = f.read().split()
    expect(len(m) == 3 and m[0] == "0" and m[1] != "0",
           "uid_map of the container's process: %s" % m)
    return {"detail": "uid 0 maps to host uid %s (%s ids)" % (m[1], m[2])}


# --- node restart --------------------------------------------------------------------

def check_node_restart(node):
    # no liveness probe: while containerd is away its probes fail, and a slow node (the TCG
    # guest) reaches the failure threshold before containerd is back
    node.add_pod("web", web_pod(liveness=False))
    node.add_pod("ticker", {"containers": [{"name": "ticker", "command": [
        "sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done"]}]})
    node.wait("web Ready", 120, lambda: ready(node, "web"))
    tick = node.wait("ticker running", 120, lambda: running_cid(node, "ticker", "ticker"))
    before = {(p, c): running_cid(node, p, c) for p, c in
              (("web", "web"), ("web", "side"), ("ticker", "ticker"))}
    log_path = node.inspect(tick)["status"]["logPath"]
    node.kill_kubelet()
    node.kill_containerd()
    time.sleep(3)  # the ticker goes on writing into its shim while containerd is away
    node.start_containerd()
    node.start_kubelet()
    node.wait("web Ready again", 120, lambda: ready(node, "web"))
    time.sleep(5)
    for (p, c), cid in before.items():
        cs = node.container_status(p, c)
        expect(cs and cs["restartCount"] == 0 and running_cid(node, p, c) == cid,
               "%s/%s after the node restart: %s" % (p, c, cs))
    size = os.path.getsize(log_path)
    time.sleep(2)
    expect(os.path.getsize(log_path) > size, "the ticker's log does not grow after the restart")
    with open(log_path, errors="replace") as f:
        nums = [int(m.split()[1]) for m in cri_log_messages(f.read()) if m.startswith("tick ")]
    expect(nums == list(range(nums[0], nums[0] + len(nums))),
           "ticks not consecutive across the restart: first break at %s" %
           next((nums[i] for i in range(1, len(nums)) if nums[i] != nums[i - 1] + 1), None))
    return {"detail": "no restart counted; %d ticks in order across the restart" % len(nums)}


# --- density -------------------------------------------------------------------------

def mem_used_kib():
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            info[k] = int(v.split()[0])
    return info["MemTotal"] - info["MemAvailable"]


def pods_memory_kib(node):
    """What kubelet's kubepods cgroup charges (every pod's processes and page cache)."""
    for f in ("/sys/fs/cgroup/kubepods.slice/memory.current",
              os.path.join("/sys/fs/cgroup/memory", node.cgroup_root, "kubepods",
                           "memory.usage_in_bytes"),
              os.path.join("/sys/fs/cgroup", node.cgroup_root, "kubepods", "memory.current")):
        try:
            with open(f) as fh:
                return int(fh.read()) // 1024
        except (OSError, ValueError):
            continue
    return 0


def check_density(node):
    n = node.density
    base_mem = mem_used_kib()
    t0 = time.monotonic()
    for i in range(n):
        node.add_pod("dense-%03d" % i, {"containers": [{"name": "c", "command": SLEEP,
                                                         "resources": {"requests": {"cpu": "1m"}}}]})

    seen = {"count": -1, "at": time.monotonic()}

    def all_running():
        running = [c for c in node.crictl_json(["ps"]).get("containers", [])
                   if c["labels"].get("io.kubernetes.pod.name", "").startswith("dense-")]
        if len(running) != seen["count"] or time.monotonic() - seen["at"] > 30:
            print("kubelet-node: [%s] density: %d of %d running after %.0f s"
                  % (node.handler, len(running), n, time.monotonic() - t0), flush=True)
            seen.update(count=len(running), at=time.monotonic())
        return len(running) >= n
    node.wait("%d pods running" % n, 900, all_running, step=2)
    took = time.monotonic() - t0
    time.sleep(5)
    shims = node.shim_pids()
    pss = sum(pss_kib(p) for p in shims)
    mem = mem_used_kib() - base_mem
    pods_mem = pods_memory_kib(node)
    t1 = time.monotonic()
    for i in range(n):
        node.remove_pod("dense-%03d" % i)
    node.wait("every dense pod stopped", 900, lambda: not any(
        s["metadata"]["name"].startswith("dense-") and s["state"] == "SANDBOX_READY"
        for s in node.crictl_json(["pods"]).get("items", [])), step=2)
    gone = time.monotonic() - t1
    expect(len(shims) >= 1, "no %s process" % node.shim_name)
    # the node's MemAvailable moves with whatever else the machine runs: the pods' own
    # cgroup and the shims' PSS are the figures to compare
    return {"detail": "%d pods Running in %.0f s, stopped in %.0f s; %d shims, total PSS %.1f MiB; "
                      "pods' cgroup %.0f MiB; node memory in use +%.0f MiB"
                      % (n, took, gone, len(shims), pss / 1024, pods_mem / 1024, mem / 1024),
            "figures": {"pods": n, "running_s": round(took, 1), "stopped_s": round(gone, 1),
                        "shims": len(shims), "shim_pss_mib": round(pss / 1024, 1),
                        "pods_cgroup_mib": round(pods_mem / 1024),
                        "node_mem_mib": round(mem / 1024)}}


# --- teardown ------------------------------------------------------------------------

def check_teardown(node):
    node.add_pod("web", web_pod())
    node.wait("web Ready", 120, lambda: ready(node, "web"))
    # every pod of the run (and of the checks before) leaves the CRI list: kubelet's
    # garbage collection removes the containers and sandboxes of deleted pods (every minute)
    node.remove_pod("web")
    node.wait("no sandbox left", 180, lambda: not node.crictl_json(["pods"]).get("items"), step=2)
    node.wait("no container left", 120, lambda: not node.crictl_json(["ps", "-a"]).get("containers"))
    left = []
    node.wait("no shim left", 30, lambda: not node.shim_pids())
    root = os.path.join(node.work, "runc-root", node.handler)
    for dirpath, dirs, files in os.walk(root):
        left += [os.path.join(dirpath, d) for d in dirs if re.fullmatch(r"[0-9a-f]{64}", d)]
    with open("/proc/self/mountinfo") as f:
        mounts = [l.split()[4] for l in f if "/run/containerd/io.containerd.runtime" in l
                  or "/run/netns/" in l or "/pods/" in l and "kubelet" in l]
    left += mounts
    left += [os.path.join("/run/netns", f) for f in os.listdir("/run/netns")]
    for base in ("/run/containerd/s", "/run/containerd/fifo"):
        if os.path.isdir(base):
            left += [os.path.join(base, f) for f in os.listdir(base)]
    if node.cgroup_driver == "systemd":
        # pods are slices kubepods-<qos>-pod<uid>.slice, containers scopes
        # cri-containerd-<id>.scope; systemd removes a scope once it is empty
        for dirpath, dirs, files in os.walk("/sys/fs/cgroup/kubepods.slice"):
            left += [os.path.join(dirpath, x) for x in dirs
                     if "-pod" in x or x.endswith(".scope")]
    else:
        for d in node.cgroup_dirs():
            for dirpath, dirs, files in os.walk(os.path.join(d, "kubepods")):
                left += [os.path.join(dirpath, x) for x in dirs if x.startswith("pod")]
    expect(not left, "left behind: %s" % left[:8])
    return {"detail": "no shim, runc state, mount, netns, socket, FIFO or pod cgroup left"}

#!/usr/bin/env python3
"""Builds, offline, stand-ins for every image critest (cri-tools v1.37.0) pulls, plus the
pause image containerd's CRI starts each pod with. Read by registry.py (same directory).

usage: images.py OUTDIR [BUSYBOX]      (BUSYBOX: default /bin/busybox; env.sh passes
                                        the one of Debian's `busybox` package)
(env.sh passes the busybox of Debian's `busybox` package, unpacked into its cache)

BUSYBOX must be Debian's regular, dynamically linked busybox (package `busybox`): the
static one (busybox-static) runs `ls` as a shell built-in without looking in /bin, which
breaks critest's masked-paths spec. Its shared libraries (from `ldd`) go into the image.

Output layout (registry.py's):
  OUT/blobs/sha256/<hex>   every blob (layers, configs, manifests)
  OUT/refs.json            {"<repository>:<tag>": {"digest", "mediaType", "size"}}
                           (repository without the registry host: registry.py ignores it)
  OUT/mediatypes.json      {"sha256:<hex>": "<manifest media type>"}

Images (all linux/amd64, Docker schema2, deterministic for a given busybox):
  registry.k8s.io/e2e-test-images/busybox:1.29-2   busybox rootfs (critest's default image)
  {registry.k8s.io,k8s.gcr.io}/pause:3.9 (also 3.6, 3.8, 3.10)
                                   the same rootfs + /pause (a shell loop that exits 0 on
                                   SIGTERM/SIGINT); one image, so its id is the same under
                                   both registries (critest checks that)
  registry.k8s.io/e2e-test-images/{nginx:1.14-2,httpd:2.4.39-4}
                                   busybox httpd on :80 serving index.html
  gcr.io/k8s-staging-cri-tools/hostnet-nginx-amd64 busybox httpd on :12003
  gcr.io/k8s-staging-cri-tools/test-image-{latest,tag:test,tag:all,tags:1..3}
                                   the busybox rootfs, one image per name (a label),
                                   test-image-tags:1..3 one image
  gcr.io/k8s-staging-cri-tools/test-image-{1,2,3}:latest
                                   three different images (one extra file each)
  gcr.io/k8s-staging-cri-tools/test-image-user-{uid,username,uid-group,username-group}
                                   USER 1002 / www-data / 1003:1003 / www-data:www-data
  gcr.io/k8s-staging-cri-tools/test-image-predefined-group
                                   USER 1000; /etc/group gives it group 50000
The default image also has /usr/bin/pgrep and /usr/bin/ipcs (scripts): critest runs
them, the upstream busybox has them, Debian's does not.
Not served: test-image-digest@sha256:9700f9... (critest pins the digest of the upstream
image: cannot be made offline) and e2e-test-images/nonewprivs:1.3 (needs a setuid-root
program printing its effective uid); their specs fail for every handler.
"""
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile

MT_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MTIME = 1600000000  # fixed: reproducible digests
CREATED = "2020-09-13T12:26:40Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
www-data:x:33:
users:x:100:
nogroup:x:65534:
"""

# The pod's pause process. PID 1 of a pid namespace ignores signals it has no handler
# for, so SIGTERM/SIGINT are trapped; `wait` also reaps orphans re-parented to it.
PAUSE = """#!/bin/sh
# tether CRI test bed: stand-in for the pause binary
trap 'exit 0' TERM INT
while :; do
    sleep 3600 &
    wait
done
"""


# Applets the upstream busybox image has and Debian's busybox lacks, as small scripts
# (critest runs `pgrep sleep` and `ipcs -m` in its default image).
TOOLS = {
    "pgrep": """#!/bin/sh
# tether CRI test bed: stand-in for pgrep PATTERN (matches the process name)
found=1
for d in /proc/[0-9]*; do
    read -r comm 2>/dev/null <"$d/comm" || continue
    if echo "$comm" | grep -q -- "$1"; then echo "${d#/proc/}"; found=0; fi
done
exit $found
""",
    "ipcs": """#!/bin/sh
# tether CRI test bed: stand-in for `ipcs -m` (shared memory segments of this IPC namespace)
echo "------ Shared Memory Segments --------"
echo "key        shmid      owner      perms      bytes      nattch"
tail -n +2 /proc/sysvipc/shm 2>/dev/null | while read -r key shmid perms size cpid lpid nattch uid rest; do
    printf '0x%08x %-10s %-10s %-10s %-10s %s\\n' "$key" "$shmid" "$uid" "$perms" "$size" "$nattch"
done
""",
}


class Store:
    """Content-addressed blob store plus the tag table registry.py serves."""

    def __init__(self, out):
        self.out = out
        self.blobdir = os.path.join(out, "blobs", "sha256")
        os.makedirs(self.blobdir, exist_ok=True)
        self.refs = {}
        self.mediatypes = {}

    def put(self, data, media_type):
        h = hashlib.sha256(data).hexdigest()
        path = os.path.join(self.blobdir, h)
        if not os.path.exists(path):
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.rename(path + ".tmp", path)
        digest = "sha256:" + h
        if media_type == MT_MANIFEST:
            self.mediatypes[digest] = media_type
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def tag(self, repo_tag, desc):
        self.refs[repo_tag] = {k: desc[k] for k in ("digest", "mediaType", "size")}

    def save(self):
        for name, obj in (("refs.json", self.refs), ("mediatypes.json", self.mediatypes)):
            with open(os.path.join(self.out, name), "w") as f:
                json.dump(obj, f, indent=1, sort_keys=True)


class Layer:
    """A tar layer built in memory, with fixed owners and times."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs = set()

    def _info(self, name, typ, mode):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime = typ, mode, MTIME
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    def dir(self, name, mode=0o755):
        if name not in self.dirs:
            self.dirs.add(name)
            self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode))

    def parents(self, name):
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.dir("/".join(parts[:i]))

    def file(self, name, data, mode=0o644):
        if isinstance(data, str):
            data = data.encode()
        self.parents(name)
        ti = self._info(name, tarfile.REGTYPE, mode)
        ti.size = len(data)
        self.tar.addfile(ti, io.BytesIO(data))

    def hardlink(self, name, target):
        ti = self._info(name, tarfile.LNKTYPE, 0o755)
        ti.linkname = target
        self.tar.addfile(ti)

    def symlink(self, name, target):
        ti = self._info(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tar.addfile(ti)

    def finish(self):
        """Returns (gzip bytes, diff_id)."""
        self.tar.close()
        raw = self.buf.getvalue()
        gz = io.BytesIO()
        with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=6) as g:
            g.write(raw)
        return gz.getvalue(), "sha256:" + hashlib.sha256(raw).hexdigest()


def shared_libraries(binary):
    """Absolute paths of the shared libraries `ldd` lists for binary (and its loader)."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
    if not any("ld-linux" in lib for lib in libs):
        sys.exit("images.py: %s is not dynamically linked (need Debian's `busybox`)" % binary)
    return libs


def busybox_layer(busybox):
    with open(busybox, "rb") as f:
        bb = f.read()
    applets = subprocess.run([busybox, "--list"], check=True, capture_output=True,
                             text=True).stdout.split()
    L = Layer()
    for d, mode in [("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("home", 0o755),
                    ("proc", 0o555), ("root", 0o700), ("sys", 0o555), ("tmp", 0o1777),
                    ("usr", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755), ("var", 0o755),
                    ("var/www", 0o755), ("run", 0o755)]:
        L.dir(d, mode)
    L.file("bin/busybox", bb, 0o755)
    for a in sorted(set(applets)):
        if a != "busybox" and "/" not in a:
            L.hardlink("bin/" + a, "bin/busybox")
    for lib in shared_libraries(busybox):
        real = os.path.realpath(lib)
        with open(real, "rb") as f:
            L.file(lib.lstrip("/"), f.read(), 0o755)
    for name, script in sorted(TOOLS.items()):
        L.file("usr/bin/" + name, script, 0o755)
    L.dir("var/run")
    L.file("etc/passwd", PASSWD)
    L.file("etc/group", GROUP)
    L.file("etc/shadow", "".join("%s:*::0:::::\n" % l.split(":")[0] for l in PASSWD.splitlines()), 0o600)
    L.file("etc/hostname", "localhost\n")
    L.file("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    L.file("etc/resolv.conf", "")
    L.symlink("etc/mtab", "/proc/mounts")
    return L.finish()


def small_layer(files):
    """files: {path: (data, mode)}"""
    L = Layer()
    for path, (data, mode) in sorted(files.items()):
        L.file(path, data, mode)
    return L.finish()


def image(store, layers, config=None):
    """Stores config + layers + manifest; returns the manifest descriptor."""
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": [PATH_ENV], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
        "history": [{"created": CREATED, "created_by": "tests/scripts/cri/images.py"} for _ in layers],
        "created": CREATED,
    }
    cfg["config"].update(config or {})
    cdesc = store.put(json.dumps(cfg, separators=(",", ":"), sort_keys=True).encode(), MT_CONFIG)
    ldescs = [store.put(gz, MT_LAYER) for gz, _ in layers]
    man = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": cdesc, "layers": ldescs}
    return store.put(json.dumps(man, indent=3).encode(), MT_MANIFEST)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: images.py OUTDIR [BUSYBOX]")
    out = sys.argv[1]
    busybox = sys.argv[2] if len(sys.argv) == 3 else "/bin/busybox"
    store = Store(out)
    bb = busybox_layer(busybox)
    base = image(store, [bb])

    store.tag("e2e-test-images/busybox:1.29-2", base)

    pause = image(store, [bb, small_layer({"pause": (PAUSE, 0o755)})],
                  {"Entrypoint": ["/pause"], "Cmd": None})
    for tag in ("3.6", "3.8", "3.9", "3.10"):
        store.tag("pause:" + tag, pause)

    # nginx/httpd stand-ins: busybox httpd. critest looks for /var/run/nginx.pid, for
    # "master process" in /proc/1/cmdline (the shell's $0 below) and for "httpd" in the
    # container's log.
    def web(port, name):
        www = small_layer({"www/index.html": ("<html><body>Welcome to nginx!</body></html>\n", 0o644)})
        script = ("echo $$ >/var/run/nginx.pid; echo '%s stand-in: busybox httpd on :%d'; "
                  "httpd -f -p %d -h /www & trap 'kill $!; exit 0' TERM INT; wait" % (name, port, port))
        return image(store, [bb, www],
                     {"Cmd": ["/bin/sh", "-c", script, name + ": master process"],
                      "ExposedPorts": {"%d/tcp" % port: {}}})

    store.tag("e2e-test-images/nginx:1.14-2", web(80, "nginx"))
    store.tag("e2e-test-images/httpd:2.4.39-4", web(80, "httpd"))
    store.tag("k8s-staging-cri-tools/hostnet-nginx-amd64:latest", web(12003, "nginx"))

    # Every name critest lists or removes separately is its own image (a distinct label),
    # except the tags critest expects on one image (test-image-tags:1..3).
    def variant(label):
        return image(store, [bb], {"Labels": {"tether.cri.test-image": label}})

    cri = "k8s-staging-cri-tools/"
    store.tag(cri + "test-image-latest:latest", variant("latest"))
    store.tag(cri + "test-image-tag:test", variant("tag-test"))
    store.tag(cri + "test-image-tag:all", variant("tag-all"))
    tags = variant("tags")
    for n in (1, 2, 3):
        store.tag(cri + "test-image-tags:%d" % n, tags)
    for n in (1, 2, 3):
        extra = small_layer({"test-image-%d" % n: ("%d\n" % n, 0o644)})
        store.tag(cri + "test-image-%d:latest" % n, image(store, [bb, extra]))

    for name, user in (("uid", "1002"), ("username", "www-data"),
                       ("uid-group", "1003:1003"), ("username-group", "www-data:www-data")):
        store.tag(cri + "test-image-user-%s:latest" % name, image(store, [bb], {"User": user}))

    pg = small_layer({
        "etc/passwd": (PASSWD + "default-user:x:1000:1000::/home/default-user:/bin/sh\n", 0o644),
        "etc/group": (GROUP + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n", 0o644),
    })
    store.tag(cri + "test-image-predefined-group:latest", image(store, [bb, pg], {"User": "1000"}))

    store.save()
    print("images written to", out)


if __name__ == "__main__":
    main()

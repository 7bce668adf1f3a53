#!/bin/bash
# CRI test bed: a private containerd with its CRI plugin and two runtime handlers side by
# side, `runc` (the Go shim io.containerd.runc.v2 of that containerd) and `tether`
# (io.containerd.tether.v2), reached the way kubelet reaches a runtime: through CRI.
#
#   env.sh run -- CMD [ARG...]   start the bed, run CMD inside its namespaces, tear down;
#                                exits with CMD's status
#   env.sh serve READY_FILE      start the bed, write READY_FILE (key=value lines, see
#                                below) and stay up until SIGTERM/SIGINT or stdin closes
#
# Isolation (like ../shared/conformance): `unshare --pid --fork --kill-child --mount-proc
# --mount --net`: only `lo` in the network namespace; own containerd root, state and
# sockets; tmpfs on /run/containerd, /run/netns, /run/nri and /var/lib/cni; a private
# /etc/hosts mapping the registries critest pulls from to 127.0.0.1, where registry.py
# serves the stand-in images of images.py over TLS (private CA, cached). Everything the
# bed starts lives in its PID namespace and dies with it, also on Ctrl-C or failure; the
# cgroups its containers leave are removed on exit and the work dir is deleted.
#
# Environment (all optional):
#   CRI_CONTAINERD       1.6 (Debian's /usr/bin/containerd, default) | 2.3 (go-tools.sh build)
#   TETHER_SHIM          the containerd-shim-tether-v2 to use (default: the release build
#                        target/<host triple>/release/containerd-shim-tether-v2)
#   CRI_KILL_DELAY_MS    >0: the runc wrapper (BinaryName of both handlers) returns from
#                        `runc kill` this many ms late (the delayed-kill mode); default 0
#   CRI_CACHE            cache of images and CA (default /var/tmp/tether-cri)
#   CRI_KEEP_DIR         if set, containerd's log (with the shims' logs) is copied there
#   CRI_DEBUG=1          containerd log level debug (default info)
#   CRI_DEFAULT_RUNTIME  the handler a pod gets when it names none: runc (default) | tether
#                        (a kubelet without an API server cannot resolve runtimeClassName
#                        and always asks for the default handler: tests/scripts/kubelet/)
#   CRI_EXTRA_PATH       a directory put first on the PATH of containerd, its shims and
#                        runc (e.g. /opt/criu-trixie/bin: the criu that runc checkpoints with)
#   CRI_SYSTEMD_CGROUP=1 both handlers get SystemdCgroup = true (runc asks systemd over
#                        D-Bus for a scope per container: a host with systemd as PID 1)
#   CRI_PID_NAMESPACE=0  no PID namespace of the bed's own: for a throwaway guest whose
#                        systemd must be given the containers' pids as it sees them (runc's
#                        systemd driver passes its own view of the pid to StartTransientUnit);
#                        what the bed started is then not ended with it
#   CRI_TETHER_SHIM_CGROUP=0  tether's options leave out ShimCgroup: its shims stay in
#                        containerd's cgroup as the Go shim's do (a benchmark comparing the
#                        two must place both alike: with cgroup v1's cpu controller, one
#                        ShimCgroup is one scheduling entity for every shim and the runc
#                        they run, against a task each for the other handler's)
#   CRI_TETHER_OPTIONS   configpath (default: tether's options table holds only ConfigPath,
#                        the TOML file with BinaryName, Root, ...) | inline (those keys in
#                        the options table itself)
#
# Inside the bed (CMD's environment, also written to READY_FILE):
#   CRI_ENDPOINT   unix socket of containerd's CRI (and containerd API)
#   CRI_WORK       the run's work dir;  CRI_LOG  containerd's log
#   CRI_CRICTL_CONFIG  a crictl config file for CRI_ENDPOINT
#   CRI_RUNC_ROOT_<handler>   the runc root each handler's options name
#   CRI_RUNC_CALLS_DIR        the runc wrapper's per-handler call logs
#   CRI_NS_PID     (READY_FILE only) host pid of the namespace init: nsenter -t it -n -m
set -euo pipefail
# The body is one compound command, parsed whole before it runs: editing this file
# while a run is in progress cannot change what that run executes.
{

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd -P)
say() { echo "cri-env: $*" >&2; }
die() { say "$*"; exit 2; }

[ "$(id -u)" = 0 ] || die "must run as root (containerd, runc, namespaces)"
MODE=${1:-}
case "$MODE" in
    run) shift; [ "${1:-}" = -- ] && shift; [ $# -ge 1 ] || die "usage: env.sh run -- CMD..." ;;
    serve) [ $# = 2 ] || die "usage: env.sh serve READY_FILE"; READY_FILE=$2 ;;
    *) die "usage: env.sh run -- CMD... | env.sh serve READY_FILE" ;;
esac

# --- binaries ------------------------------------------------------------------------
CTD=${CRI_CONTAINERD:-1.6}
case "$CTD" in
    1.6)
        [ -x /usr/bin/containerd ] || die "Debian's containerd is missing: apt-get install containerd"
        CTD_BIN=/usr/bin ;;
    2.3)
        CTD_BIN=${CRI_CONTAINERD_BIN:-/var/cache/tether/go/containerd-v2.3.7/bin}
        [ -x "$CTD_BIN/containerd" ] || die "no $CTD_BIN/containerd: run tests/scripts/go-tools.sh containerd 2.3" ;;
    *) die "CRI_CONTAINERD must be 1.6 or 2.3" ;;
esac
HOST_TRIPLE=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p' || true)
SHIM=${TETHER_SHIM:-$REPO/target/${HOST_TRIPLE:-x86_64-unknown-linux-gnu}/release/containerd-shim-tether-v2}
[ -x "$SHIM" ] || die "no tether shim at $SHIM (make build, or set TETHER_SHIM)"
SHIM=$(readlink -f "$SHIM")
REAL_RUNC=$(command -v runc) || die "runc not found: apt-get install runc"
for p in /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/loopback /usr/lib/cni/portmap; do
    [ -x "$p" ] || die "$p missing: apt-get install containernetworking-plugins"
done
command -v iptables >/dev/null || die "iptables missing (CNI portmap): apt-get install iptables"
command -v openssl >/dev/null || die "openssl missing"
KILL_DELAY_MS=${CRI_KILL_DELAY_MS:-0}
DEFAULT_RUNTIME=${CRI_DEFAULT_RUNTIME:-runc}
SYSTEMD_CGROUP=false
[ "${CRI_SYSTEMD_CGROUP:-0}" = 1 ] && SYSTEMD_CGROUP=true
PID_NS=(--pid --fork --kill-child --mount-proc)
[ "${CRI_PID_NAMESPACE:-1}" = 0 ] && PID_NS=(--fork)
case "$DEFAULT_RUNTIME" in runc|tether) ;; *) die "CRI_DEFAULT_RUNTIME must be runc or tether" ;; esac
[[ "$KILL_DELAY_MS" =~ ^[0-9]+$ ]] || die "CRI_KILL_DELAY_MS must be a number of ms"

# --- cached images and CA (shared by runs; rebuilt when busybox or images.py change) ----
CACHE=${CRI_CACHE:-/var/tmp/tether-cri}
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
# The images' busybox is Debian's regular, dynamically linked one (package `busybox`;
# the static one runs `ls` as a built-in, which breaks critest's masked-paths spec). It
# conflicts with busybox-static, which the other tests need, so it is not installed: its
# .deb is fetched with apt-get download and unpacked into the cache.
BUSYBOX="$CACHE/busybox/bin/busybox"
if [ ! -x "$BUSYBOX" ]; then
    rm -rf "$CACHE/busybox.tmp"; mkdir -p "$CACHE/busybox.tmp"
    (cd "$CACHE/busybox.tmp" && apt-get download -qq busybox >&2) ||
        die "cannot download Debian's busybox package (apt-get download busybox)"
    dpkg-deb -x "$CACHE"/busybox.tmp/busybox_*.deb "$CACHE/busybox.tmp/root"
    rm -rf "$CACHE/busybox"; mv "$CACHE/busybox.tmp/root" "$CACHE/busybox"
    rm -rf "$CACHE/busybox.tmp"
fi
# (not `ldd | grep -q`: with pipefail, grep's early exit fails the pipe with SIGPIPE)
case "$(ldd "$BUSYBOX" 2>/dev/null)" in *libc.so*) ;; *) die "$BUSYBOX is not dynamically linked" ;; esac
key=$(cat "$BUSYBOX" "$HERE/images.py" | sha256sum | cut -c1-16)
IMAGES="$CACHE/images.$key"
if [ ! -f "$IMAGES/refs.json" ]; then
    rm -rf "$IMAGES.tmp"
    python3 "$HERE/images.py" "$IMAGES.tmp" "$BUSYBOX" >&2
    mv "$IMAGES.tmp" "$IMAGES"
fi
touch "$IMAGES"
for d in "$CACHE"/images.*; do   # older image sets nobody used for 2 hours
    [ "$d" = "$IMAGES" ] || [ -n "$(find "$d" -maxdepth 0 -mmin -120)" ] || rm -rf "$d"
done
REGISTRIES="gcr.io registry.k8s.io k8s.gcr.io"
PKI="$CACHE/pki"
if [ ! -f "$PKI/server.pem" ]; then
    rm -rf "$PKI.tmp"; mkdir -p "$PKI.tmp"
    (
        cd "$PKI.tmp"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
            -subj "/CN=tether CRI test bed CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
            -subj "/CN=gcr.io" 2>/dev/null
        printf '%s\n' "subjectAltName=$(for r in $REGISTRIES; do printf 'DNS:%s,' "$r"; done | sed 's/,$//')" \
            "basicConstraints=CA:FALSE" "keyUsage=digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" >ext.cnf
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -out server.pem -days 3650 -extfile ext.cnf 2>/dev/null
    )
    rm -rf "$PKI"; mv "$PKI.tmp" "$PKI"
fi
flock -u 9

# --- the run's work dir ------------------------------------------------------------------
WORK=$(mktemp -d /tmp/tether-cri-XXXXXX)
chmod 0711 "$WORK"
MARK="$WORK/.started"   # cgroups newer than this are ours
touch "$MARK"
UPID=""
CATPID=""
cleanup() {
    set +e
    trap '' INT TERM HUP PIPE   # a second Ctrl-C must not cut the teardown short
    [ -z "$CATPID" ] || kill "$CATPID" 2>/dev/null
    if [ -n "$UPID" ] && kill -0 "$UPID" 2>/dev/null; then
        # unshare --fork ignores SIGTERM/SIGINT: SIGKILL it, and --kill-child then
        # SIGKILLs the namespace init, which takes every process of the namespace along
        kill -KILL "$UPID" 2>/dev/null
        wait "$UPID" 2>/dev/null
    fi
    if [ -n "${CRI_KEEP_DIR:-}" ] && [ -f "$WORK/containerd.log" ]; then
        mkdir -p "$CRI_KEEP_DIR" && cp "$WORK/containerd.log" "$CRI_KEEP_DIR/" 2>/dev/null
    fi
    # Containers' cgroups (cgroup v1: one tree per controller; v2: one tree) are named
    # after the container id under the cgroup parent critest or crictl chose; killed
    # processes take a moment to leave them. Only empty cgroups created by this run
    # (newer than $MARK, 64-hex ids or CRI's "…:cri-containerd:…" names, and the tether
    # handler's ShimCgroup) are removed.
    local i left c
    for i in 1 2 3 4 5 6 7 8 9 10; do
        left=0
        while read -r c; do
            rmdir "$c" 2>/dev/null || left=1
        done < <(find /sys/fs/cgroup -mindepth 1 -type d -newer "$MARK" \
                    \( -regex '.*/[0-9a-f]\{64\}' -o -name '*cri-containerd*' -o -name 'test.slice' \
                       -o -name "tether-cri-shims-$(basename "$WORK")" \) \
                    2>/dev/null | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-)
        [ "$left" = 0 ] && break
        sleep 0.5
    done
    [ "$left" = 0 ] || say "warning: cgroups left behind (see find /sys/fs/cgroup -newer ...)"
    rm -rf "$WORK" 2>/dev/null || say "warning: could not remove $WORK"
    [ -z "${READY_FILE:-}" ] || rm -f "$READY_FILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

mkdir -p "$WORK/bin" "$WORK/calls" "$WORK/runc-root/runc" "$WORK/runc-root/tether" \
         "$WORK/cni/net.d" "$WORK/certs.d" "$WORK/tmp"
ln -s "$SHIM" "$WORK/bin/containerd-shim-tether-v2"
for h in runc tether; do
    sed -e "s|@REAL_RUNC@|$REAL_RUNC|" -e "s|@HANDLER@|$h|" -e "s|@CALLS_DIR@|$WORK/calls|" \
        -e "s|@KILL_DELAY_MS@|$KILL_DELAY_MS|" "$HERE/runc-wrapper.sh" >"$WORK/bin/runc-$h"
    chmod 0755 "$WORK/bin/runc-$h"
done

{
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
    printf '127.0.1.1\t%s\n' "$(hostname)"
    printf '127.0.0.1\t%s\n' "$REGISTRIES"
} >"$WORK/hosts"
for r in $REGISTRIES; do
    mkdir -p "$WORK/certs.d/$r"
    printf 'server = "https://%s"\n\n[host."https://%s"]\n  capabilities = ["pull", "resolve"]\n  ca = "%s"\n' \
        "$r" "$r" "$PKI/ca.pem" >"$WORK/certs.d/$r/hosts.toml"
done

cat >"$WORK/cni/net.d/10-tether-cri.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "tether-cri",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$WORK/cni/ipam",
        "ranges": [[{ "subnet": "10.88.0.0/16" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF

# tether's options go through CRI's runtimeoptions path: containerd sends a runtime it
# does not know (not io.containerd.runc.*) a runtimeoptions.v1.Options; with ConfigPath
# set, that is the path of this TOML file, which the shim reads.
cat >"$WORK/tether-runtime.toml" <<EOF
# runc options of the CRI handler "tether" (read by containerd-shim-tether-v2)
BinaryName = "$WORK/bin/runc-tether"
Root = "$WORK/runc-root/tether"
SystemdCgroup = $SYSTEMD_CGROUP
IoUid = 0
IoGid = 0
$([ "${CRI_TETHER_SHIM_CGROUP:-1}" = 0 ] || echo "ShimCgroup = \"/tether-cri-shims-$(basename "$WORK")\"")
EOF

# CRI_TETHER_OPTIONS=inline: the same keys inline in the handler's options table instead
# of ConfigPath (containerd >= 1.7 then sends them as runtimeoptions' config_body)
TETHER_OPTIONS=${CRI_TETHER_OPTIONS:-configpath}
case "$TETHER_OPTIONS" in configpath|inline) ;; *) die "CRI_TETHER_OPTIONS: configpath or inline" ;; esac
LEVEL=info
[ "${CRI_DEBUG:-}" = 1 ] && LEVEL=debug
cat >"$WORK/containerd.toml" <<EOF
version = 2
root = "$WORK/root"
state = "$WORK/state"

[grpc]
  address = "$WORK/containerd.sock"

[ttrpc]
  address = "$WORK/containerd.sock.ttrpc"

[debug]
  level = "$LEVEL"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  # root here cannot lower an OOM score: without this, runc fails every pod sandbox
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "$DEFAULT_RUNTIME"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$WORK/bin/runc-runc"
        Root = "$WORK/runc-root/runc"
        SystemdCgroup = $SYSTEMD_CGROUP

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.tether]
      runtime_type = "io.containerd.tether.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.tether.options]
$(if [ "$TETHER_OPTIONS" = inline ]; then sed -n 's/^[A-Z]/        &/p' "$WORK/tether-runtime.toml"
  else echo "        ConfigPath = \"$WORK/tether-runtime.toml\""; fi)

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$WORK/cni/net.d"

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$WORK/certs.d"
EOF

cat >"$WORK/crictl.yaml" <<EOF
runtime-endpoint: unix://$WORK/containerd.sock
image-endpoint: unix://$WORK/containerd.sock
timeout: 60
EOF

say "containerd $CTD ($CTD_BIN), tether shim $SHIM, kill delay ${KILL_DELAY_MS}ms, work dir $WORK"
# PATH of containerd, its shims and CMD: tether's shim, then that containerd's binaries
# (2.3: its own containerd-shim-runc-v2), then the system
INNER_PATH="$WORK/bin:$CTD_BIN:$PATH"
[ -z "${CRI_EXTRA_PATH:-}" ] || INNER_PATH="$CRI_EXTRA_PATH:$INNER_PATH"
inner_args=()
if [ "$MODE" = run ]; then inner_args=("$@"); fi
# TETHER_CRI_BED names the checkout whose bed this is: it is on unshare's command line and
# in the environment of everything in the bed, so that beds-left.sh can tell this
# checkout's beds from other people's on a shared machine.
unshare "${PID_NS[@]}" --mount --net --propagation private \
    env TETHER_CRI_BED="$REPO" CRI_WORK="$WORK" CRI_IMAGES="$IMAGES" CRI_PKI="$PKI" CRI_HELPERS="$HERE" \
        CRI_CTD_VERSION="$CTD" CRI_MODE="$MODE" PATH="$INNER_PATH" TMPDIR="$WORK/tmp" \
        bash "$HERE/inner.sh" "${inner_args[@]}" &
UPID=$!

if [ "$MODE" = serve ]; then
    for _ in $(seq 1 300); do
        [ -f "$WORK/ready" ] && break
        kill -0 "$UPID" 2>/dev/null || die "the bed did not start (see above)"
        sleep 0.1
    done
    [ -f "$WORK/ready" ] || die "the bed did not become ready in 30 s"
    NS_PID=$(cat "/proc/$UPID/task/$UPID/children" | awk '{ print $1 }')
    { cat "$WORK/ready"; echo "CRI_NS_PID=$NS_PID"; } >"$READY_FILE.tmp"
    mv "$READY_FILE.tmp" "$READY_FILE"
    # up until stdin closes or a signal arrives (the trap tears down)
    # (a background job's stdin would be /dev/null without the explicit redirection)
    cat <&0 >/dev/null &
    CATPID=$!
    wait "$CATPID" || true
    exit 0
fi
rc=0
wait "$UPID" || rc=$?
UPID=""
exit "$rc"
exit
}

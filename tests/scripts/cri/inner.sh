#!/bin/bash
# PID 1 of the CRI test bed's private namespaces (pid + mount + net), started by env.sh
# through `unshare --pid --fork --kill-child --mount-proc --mount --net --propagation
# private`. Everything started here (registry, containerd, shims, runc, containers, CMD)
# lives in this PID namespace, so the kernel kills all of it when this script exits, and
# every mount made here is private to this mount namespace.
#
#   inner.sh CMD...   (CRI_MODE=run)   set up, run CMD, exit with its status
#   inner.sh          (CRI_MODE=serve) set up, write $CRI_WORK/ready, wait forever
#
# Inputs (environment, from env.sh): CRI_WORK, CRI_IMAGES, CRI_PKI, CRI_HELPERS,
# CRI_CTD_VERSION, CRI_MODE, PATH (tether's shim dir, then containerd's bin dir).
set -u
# The body is one compound command, parsed whole before it runs: editing this file
# while a run is in progress cannot change what that run executes.
{
W=$CRI_WORK
fail() { echo "cri-env (inner): $*" >&2; exit 1; }

# --- network: loopback only (CNI adds the pods' bridge later) -------------------------
ip link set lo up || fail "cannot bring up lo"

# --- private mounts ------------------------------------------------------------------
# /run/containerd: shim sockets (/run/containerd/s) and fifo dirs are hard-coded there.
# /run/netns: the pods' network namespaces (CRI bind-mounts them there).
# /run/nri: containerd 2.x's NRI socket. /var/lib/cni: CNI's result cache.
for d in /run/containerd /run/netns /run/nri /var/lib/cni; do
    mkdir -p "$d"
    mount -t tmpfs -o mode=0711 tether-cri "$d" || fail "cannot mount a tmpfs on $d"
done
# the registries critest pulls from resolve to 127.0.0.1
mount --bind "$W/hosts" /etc/hosts || fail "cannot bind-mount $W/hosts"

# --- local registry --------------------------------------------------------------------
python3 "$CRI_HELPERS/registry.py" --root "$CRI_IMAGES" \
    --cert "$CRI_PKI/server.pem" --key "$CRI_PKI/server.key" \
    --addr 127.0.0.1 --port 443 --ready-file "$W/registry.ready" \
    >>"$W/registry.log" 2>&1 &
for _ in $(seq 1 100); do
    [ -s "$W/registry.ready" ] && break
    sleep 0.1
done
[ -s "$W/registry.ready" ] || fail "registry did not start: $(tail -5 "$W/registry.log")"

# --- containerd ------------------------------------------------------------------------
containerd --config "$W/containerd.toml" >>"$W/containerd.log" 2>&1 &
CTD_PID=$!
for _ in $(seq 1 200); do
    [ -S "$W/containerd.sock" ] && ctr --address "$W/containerd.sock" version >/dev/null 2>&1 && break
    kill -0 "$CTD_PID" 2>/dev/null || fail "containerd exited: $(tail -20 "$W/containerd.log")"
    sleep 0.1
done
ctr --address "$W/containerd.sock" version >/dev/null 2>&1 ||
    fail "containerd did not answer in 20 s: $(tail -20 "$W/containerd.log")"
if ! ctr --address "$W/containerd.sock" plugins ls 2>/dev/null | grep -E 'cri +.*ok' >/dev/null; then
    fail "containerd's CRI plugin is not running: $(grep -i 'cri' "$W/containerd.log" | tail -10)"
fi

cat >"$W/ready" <<EOF
CRI_ENDPOINT=unix://$W/containerd.sock
CRI_WORK=$W
CRI_LOG=$W/containerd.log
CRI_CRICTL_CONFIG=$W/crictl.yaml
CRI_RUNC_ROOT_runc=$W/runc-root/runc
CRI_RUNC_ROOT_tether=$W/runc-root/tether
CRI_RUNC_CALLS_DIR=$W/calls
CRI_CTD_PID=$CTD_PID
EOF

if [ "$CRI_MODE" = serve ]; then
    # PID 1 ignores signals without a handler; env.sh ends the namespace with SIGKILL
    while :; do sleep 3600; done
fi

set -a
# shellcheck disable=SC1091
. "$W/ready"
set +a
cd "$W/tmp" || exit 1
"$@"
rc=$?
cd / || true
# stop containerd first so it does not watch its shims die; the namespace's end kills
# every remaining process (shims, containers, registry) right after
kill "$CTD_PID" 2>/dev/null
for _ in $(seq 1 50); do kill -0 "$CTD_PID" 2>/dev/null || break; sleep 0.1; done
exit "$rc"
exit
}

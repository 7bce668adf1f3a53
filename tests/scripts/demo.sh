#!/usr/bin/env bash
# make demo: a private containerd with tether registered, one busybox container run
# through it (output, an exec, exit codes), then everything it started is removed.
#
# Usage: tests/scripts/demo.sh [SHIM_BINARY]   (default: make build's target/<host>/release/containerd-shim-tether-v2)
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
shim=${1:-$top/target/$(rustc -vV | sed -n 's/^host: //p')/release/containerd-shim-tether-v2}
[ -x "$shim" ] || { echo "demo: $shim not built (make build)"; exit 1; }
[ "$(id -u)" = 0 ] || { echo "demo: containers need root"; exit 1; }

work=$(mktemp -d /tmp/tether-demo.XXXXXX)
ns=demo-$$
sock=$work/c.sock
ctd_pid=
cleanup() {
  set +e
  if [ -n "$ctd_pid" ]; then
    for t in $(ctr -a "$sock" -n "$ns" t ls -q 2>/dev/null); do
      ctr -a "$sock" -n "$ns" t kill -s KILL "$t" >/dev/null 2>&1
      ctr -a "$sock" -n "$ns" t rm -f "$t" >/dev/null 2>&1
    done
    for c in $(ctr -a "$sock" -n "$ns" c ls -q 2>/dev/null); do
      ctr -a "$sock" -n "$ns" c rm "$c" >/dev/null 2>&1
    done
    kill "$ctd_pid" 2>/dev/null; wait "$ctd_pid" 2>/dev/null
  fi
  pkill -KILL -f "containerd-shim-tether-v2 -namespace $ns " 2>/dev/null
  rm -rf "/run/containerd/runc/$ns"
  # v1: one dir per controller; v2 (unified): one dir.
  for d in /sys/fs/cgroup/*/"$ns" "/sys/fs/cgroup/$ns"; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
  grep -o " $work[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

mkdir -p "$work/bin" "$work/rootfs/bin"
ln -s "$shim" "$work/bin/containerd-shim-tether-v2"
cat > "$work/config.toml" <<TOML
version = 2
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
TOML
cp /bin/busybox "$work/rootfs/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$work/rootfs/bin/$a"; done
mkdir -p "$work/rootfs/"{proc,sys,dev,tmp,etc}
echo "root:x:0:0:root:/root:/bin/sh" > "$work/rootfs/etc/passwd"

PATH="$work/bin:$PATH" containerd -c "$work/config.toml" >"$work/containerd.log" 2>&1 &
ctd_pid=$!
for _ in $(seq 50); do ctr -a "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done

c() { ctr -a "$sock" -n "$ns" "$@"; }
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

say "containerd-shim-tether-v2 -v"
"$shim" -v
say "ctr run --rm --runtime io.containerd.tether.v2 … /bin/sh -c 'echo hello from \$(hostname); exit 3'"
set +e
c run --rm --runtime io.containerd.tether.v2 --rootfs "$work/rootfs" hello /bin/sh -c 'echo hello from $(hostname) in a tether container; exit 3'
echo "exit code: $?"
set -e
say "ctr run -d … /bin/sleep 1000   (a long-running container)"
c run -d --runtime io.containerd.tether.v2 --rootfs "$work/rootfs" sleeper /bin/sleep 1000
c t ls
say "ps of the shim (one process, its threads)"
ps -o pid,nlwp,rss,args -C containerd-shim-tether-v2 | grep -E "PID|$ns"
say "containerd-shim-tether-v2 upgrade -n $ns --all --binary <a copy>   (live upgrade: same pid, the container runs on)"
mkdir -p "$work/next" && cp "$shim" "$work/next/containerd-shim-tether-v2"
"$shim" upgrade -n "$ns" --all --binary "$work/next/containerd-shim-tether-v2"
ps -o pid,nlwp,rss,args -C containerd-shim-tether-v2 | grep -E "PID|$ns" | cut -c1-100
ctr -a "$work/c.sock" -n "$ns" task ls
say "ctr task exec --exec-id e1 sleeper /bin/sh -c 'echo exec sees pid 1 = \$(cat /proc/1/cmdline); exit 4'"
set +e
c t exec --exec-id e1 sleeper /bin/sh -c 'echo exec sees pid 1 = $(tr "\0" " " < /proc/1/cmdline); exit 4'
echo "exit code: $?"
set -e
say "ctr task kill -s KILL sleeper; ctr task rm sleeper"
c t kill -s KILL sleeper
for _ in $(seq 50); do c t ls | grep -q STOPPED && break; sleep 0.1; done
c t rm sleeper
c c rm sleeper
echo "done: cleaning up"

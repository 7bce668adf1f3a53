#!/usr/bin/env bash
# Node shape 2 of the kubelet node test: a throwaway QEMU guest booted from the host's
# root (the cgroup v2 leg's kernel and initramfs, tests/scripts/cgroup-v2/) with only
# the unified cgroup hierarchy and **systemd as PID 1** (D-Bus running), in which
# node.py runs the scenario with kubelet's `cgroupDriver: systemd` and containerd's
# `SystemdCgroup = true` for both handlers: pods become systemd scopes under
# kubepods.slice. Exits with the comparison's status; the results are copied out.
#
#   tests/scripts/kubelet/systemd-guest.sh <release shim binary> [OUTDIR]
#
# Environment: KUBELET_CHECKS, KUBELET_SKIP, KUBELET_DENSITY (default 10: the guest runs
# under TCG on a host without VMX/SVM), TETHER_KUBELET_GUEST_TIMEOUT (s, default 2400),
# TETHER_KUBELET_GUEST_MEMORY (MiB, default 4096), KUBELET_GRACE_SECONDS (the graceful
# termination check's grace period, default 30 there: 10 on the host), TETHER_CGV2_ACCEL (see cgroup-v2/run.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../../.." && pwd)
shim=${1:?usage: systemd-guest.sh <release shim binary> [OUTDIR]}
shim=$(cd "$(dirname "$shim")" && pwd)/$(basename "$shim")
out=${2:-/var/tmp/tether-kubelet/results/$(date +%Y%m%d-%H%M%S)-systemd}
say() { echo "kubelet-systemd-guest: $*" >&2; }
[ "$(id -u)" = 0 ] || { say "run as root"; exit 2; }
[ -x "$shim" ] || { say "no shim at $shim (make build)"; exit 2; }
command -v qemu-system-x86_64 >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null; }
[ -x /lib/systemd/systemd ] || { say "no /lib/systemd/systemd on the host root"; exit 2; }
command -v dbus-daemon >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dbus >/dev/null; }
started=$(date +%s)

# What the guest runs, built (and cached) here: it sees the host's root read-only.
kubelet=$("$top/tests/scripts/go-tools.sh" kubelet)/kubelet
crictl=$("$top/tests/scripts/go-tools.sh" cri-tools)/crictl
ctd_bin=$("$top/tests/scripts/go-tools.sh" containerd 2.3)
kernel_initrd=$("$top/tests/scripts/cgroup-v2/guest-kernel.sh")
read -r kernel initrd <<<"$kernel_initrd"
# the CRI bed's images and CA, built once here (env.sh caches them)
"$top/tests/scripts/cri/env.sh" run -- true

run=$(mktemp -d /tmp/tether-kubelet-guest.XXXXXX)
qemu_pid=
cleanup() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill -9 "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  rm -rf "$run"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM HUP
cat >"$run/params" <<PARAMS
TETHER_SHIM=$shim
KUBELET=$kubelet
CRICTL=$crictl
CRI_CONTAINERD_BIN=$ctd_bin
KUBELET_CHECKS=${KUBELET_CHECKS:-}
KUBELET_SKIP=${KUBELET_SKIP:-}
KUBELET_DENSITY=${KUBELET_DENSITY:-10}
KUBELET_GRACE_SECONDS=${KUBELET_GRACE_SECONDS:-30}
PARAMS

accel=${TETHER_CGV2_ACCEL:-}
if [ -z "$accel" ]; then
  if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then accel=kvm; else accel=tcg,thread=multi; fi
fi
cpu=max
[ "${accel%%,*}" = kvm ] && cpu=host
cpus=$(nproc); [ "$cpus" -gt 4 ] && cpus=4
timeout_s=${TETHER_KUBELET_GUEST_TIMEOUT:-2400}
say "booting the guest with systemd ($accel, $cpus CPUs, ${TETHER_KUBELET_GUEST_MEMORY:-4096} MiB, at most ${timeout_s}s)"
fs_opts=security_model=passthrough,multidevs=remap
qemu-system-x86_64 \
  -accel "$accel" -cpu "$cpu" -smp "$cpus" -m "${TETHER_KUBELET_GUEST_MEMORY:-4096}" \
  -nodefaults -no-user-config -display none -no-reboot -nic none \
  -serial stdio -monitor none \
  -kernel "$kernel" -initrd "$initrd" \
  -append "console=ttyS0 quiet panic=-1 cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 random.trust_cpu=on systemd.unit=tether-kubelet.target systemd.show_status=0 tether.init=systemd tether.workspace=$top tether.run=$run" \
  -fsdev "local,id=hostroot,path=/,readonly=on,$fs_opts" -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
  -fsdev "local,id=workspace,path=$top,$fs_opts" -device virtio-9p-pci,fsdev=workspace,mount_tag=workspace \
  -fsdev "local,id=run,path=$run,$fs_opts" -device virtio-9p-pci,fsdev=run,mount_tag=run \
  </dev/null &
qemu_pid=$!
deadline=$((SECONDS + timeout_s))
while kill -0 "$qemu_pid" 2>/dev/null; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    say "the guest did not finish within ${timeout_s}s: stopped"
    kill -9 "$qemu_pid" 2>/dev/null || true
    break
  fi
  sleep 1
done
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=
mkdir -p "$out"
[ -d "$run/out" ] && cp -r "$run/out/." "$out/"
if [ ! -f "$run/status" ]; then
  say "FAILED: the guest recorded no status ($(($(date +%s) - started)) s)"
  exit 1
fi
status=$(cat "$run/status")
say "guest status $status, $(($(date +%s) - started)) s in all; results in $out"
exit "$status"

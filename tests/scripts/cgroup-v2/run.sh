#!/usr/bin/env bash
# The cgroup v2 leg: builds the tests on the host, boots a throwaway QEMU guest whose
# kernel has only the unified hierarchy (cgroup_no_v1=all), runs the cgroup tests in it
# (guest-tests.sh) and exits with the guest's status.
#
#   tests/scripts/cgroup-v2/run.sh <release shim binary>
#
# The guest's root is the host's / (read-only over 9p, a tmpfs overlay for writes); the
# workspace is shared read-write at its own path, so the test binaries built here run
# there. Everything this starts (qemu, the run directory) is gone when it returns, also
# when interrupted.
#
# Environment:
#   TETHER_CGV2_TIMEOUT  seconds the guest may run (default 780)
#   TETHER_CGV2_MEMORY   guest memory in MiB (default 3072)
#   TETHER_CGV2_CPUS     guest CPUs (default: the host's, at most 4)
#   TETHER_CGV2_ACCEL    qemu accelerator (default: kvm on a VMX/SVM host, else TCG)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../../.." && pwd)
shim=${1:?usage: run.sh <release shim binary>}
shim=$(cd "$(dirname "$shim")" && pwd)/$(basename "$shim")
[ -x "$shim" ] || { echo "cgroup-v2: no shim at $shim (make build)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "cgroup-v2: run as root (the tests drive runc and containerd)" >&2; exit 1; }

say() { echo "cgroup-v2: $*" >&2; }
started=$(date +%s)

if ! command -v qemu-system-x86_64 >/dev/null; then
  say "installing qemu-system-x86"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
fi

run=$(mktemp -d /tmp/tether-cgv2.XXXXXX)
qemu_pid=
cleanup() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  rm -rf "$run"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM HUP

kernel_initrd=$("$here/guest-kernel.sh")
read -r kernel initrd <<<"$kernel_initrd"

# The test binaries: built here, run there.
say "building the test binaries"
"$here/build-tests.sh" "$run/tests.list"
echo "$shim" >"$run/shim"

accel=${TETHER_CGV2_ACCEL:-}
if [ -z "$accel" ]; then
  # /dev/kvm alone is not enough: a paravirtual KVM (no vmx/svm in the host's CPU flags)
  # cannot boot a stock kernel.
  if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then accel=kvm; else accel=tcg,thread=multi; fi
fi
cpus=${TETHER_CGV2_CPUS:-$(nproc)}
[ "$cpus" -gt 4 ] && cpus=4
timeout_s=${TETHER_CGV2_TIMEOUT:-780}
cpu=max
[ "${accel%%,*}" = kvm ] && cpu=host

say "booting the guest ($accel, $cpus CPUs, ${TETHER_CGV2_MEMORY:-3072} MiB, at most ${timeout_s}s)"
fs_opts=security_model=passthrough,multidevs=remap
qemu-system-x86_64 \
  -accel "$accel" -cpu "$cpu" -smp "$cpus" -m "${TETHER_CGV2_MEMORY:-3072}" \
  -nodefaults -no-user-config -display none -no-reboot -nic none \
  -serial stdio -monitor none \
  -kernel "$kernel" -initrd "$initrd" \
  -append "console=ttyS0 quiet panic=-1 cgroup_no_v1=all random.trust_cpu=on tether.workspace=$top tether.run=$run" \
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
cleanup_qemu_status=0
wait "$qemu_pid" 2>/dev/null || cleanup_qemu_status=$?
[ -d "$run" ] && cp "$run/summary" "$top/target/cgroup-v2-summary.txt" 2>/dev/null || true

if [ ! -f "$run/status" ]; then
  say "FAILED: the guest recorded no exit status (qemu exit $cleanup_qemu_status)"
  exit 1
fi
status=$(cat "$run/status")
say "guest exit status $status, $(($(date +%s) - started))s in all"
exit "$status"

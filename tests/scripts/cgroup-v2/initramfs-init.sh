#!/bin/sh
# /init of the cgroup v2 guest's initramfs (busybox). Loads the virtio/9p/overlay
# modules, builds the root (the host's / read-only over 9p under a tmpfs overlay, the
# workspace and the run directory read-write at their host paths, tmpfs on /tmp, /run and
# /var/lib/containerd) and switches to it, running the workspace's guest-init.sh.
# Kernel command line: tether.workspace=<path> tether.run=<path>, and tether.init=systemd
# to boot the root's own systemd as PID 1 instead (the kubelet node test's shape 2:
# tests/scripts/kubelet/systemd-guest.sh): its units from tests/scripts/kubelet/guest/
# are installed into the overlay, and systemd starts the target the command line names.
export PATH=/bin
alias mount='busybox mount' mkdir='busybox mkdir' insmod='busybox insmod'

fail() {
  echo "initramfs: $*" >/dev/console
  busybox poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for ko in /modules/*.ko; do
  insmod "$ko" || fail "insmod $ko"
done

workspace= run= init=
for arg in $(busybox cat /proc/cmdline); do
  case "$arg" in
    tether.workspace=*) workspace=${arg#*=} ;;
    tether.run=*) run=${arg#*=} ;;
    tether.init=*) init=${arg#*=} ;;
  esac
done
[ -n "$workspace" ] && [ -n "$run" ] || fail "tether.workspace= and tether.run= are required"

p9="trans=virtio,version=9p2000.L,msize=262144"
mkdir -p /overlay
mount -t tmpfs -o mode=0755 tmpfs /overlay
mkdir -p /overlay/lower /overlay/upper /overlay/work
# The host's / does not change under the guest: cache it.
mount -t 9p -o "$p9,ro,cache=loose" hostroot /overlay/lower || fail "9p hostroot"
mount -t overlay overlay -o lowerdir=/overlay/lower,upperdir=/overlay/upper,workdir=/overlay/work /newroot ||
  fail "overlay"
mkdir -p "/newroot$workspace"
mount -t 9p -o "$p9" workspace "/newroot$workspace" || fail "9p workspace"
for d in /tmp /run /var/lib/containerd; do
  mkdir -p "/newroot$d"
  mount -t tmpfs -o mode=0755 tmpfs "/newroot$d" || fail "tmpfs $d"
done
busybox chmod 1777 /newroot/tmp
mkdir -p "/newroot$run"
mount -t 9p -o "$p9" run "/newroot$run" || fail "9p run"

mount --move /dev /newroot/dev
busybox umount /proc /sys
if [ "$init" = systemd ]; then
  # systemd takes a root with /.dockerenv for a container's; a root without these marks
  # for a first boot after an update (and runs the update units)
  busybox rm -f /newroot/.dockerenv
  busybox touch /newroot/etc/.updated /newroot/var/.updated
  for u in "/newroot$workspace"/tests/scripts/kubelet/guest/*.target \
           "/newroot$workspace"/tests/scripts/kubelet/guest/*.service; do
    busybox sed -e "s|@WORKSPACE@|$workspace|g" -e "s|@RUN@|$run|g" "$u" \
      >"/newroot/etc/systemd/system/$(busybox basename "$u")" || fail "unit $u"
  done
  exec busybox switch_root /newroot /lib/systemd/systemd
fi
exec busybox switch_root /newroot /bin/sh "$workspace/tests/scripts/cgroup-v2/guest-init.sh" "$workspace" "$run"

#!/bin/sh
# PID 1 of the cgroup v2 guest, on the root initramfs-init.sh built. Mounts proc, sys,
# cgroup2 (the only hierarchy: the kernel runs with cgroup_no_v1=all) and /dev's
# filesystems, enables every controller for the children of the root cgroup, then runs
# guest-tests.sh under a reaping PID 1 (orphans are reaped, as on a real host), writes its
# exit status to <run>/status and powers off.
# Arguments: <workspace> <run directory>.
set -u
workspace=$1 run=$2
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /dev/pts
ln -sf pts/ptmx /dev/ptmx 2>/dev/null || true
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t mqueue mqueue /dev/mqueue
hostname cgroup-v2-guest
ip link set lo up

controllers=
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do controllers="$controllers +$c"; done
# shellcheck disable=SC2086
echo $controllers >/sys/fs/cgroup/cgroup.subtree_control
echo "guest: $(uname -r), cgroup2 subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control)" >/dev/console

# perl (perl-base is in every Debian) as the reaper: it runs the tests as its child,
# reaps every orphan meanwhile, and records the tests' exit status.
exec perl -e '
  my ($status_file, @cmd) = @ARGV;
  my $pid = fork // die "fork: $!";
  if ($pid == 0) { exec @cmd or exit 127 }
  my $status = 255;
  while ((my $w = waitpid(-1, 0)) > 0) {
    if ($w == $pid) { $status = $? & 127 ? 128 + ($? & 127) : $? >> 8; last }
  }
  open(my $f, ">", "$status_file.tmp") or die; print $f "$status\n"; close($f);
  rename("$status_file.tmp", $status_file);
  system("sync");
  exec "/bin/busybox", "poweroff", "-f";
' "$run/status" /bin/sh "$workspace/tests/scripts/cgroup-v2/guest-tests.sh" "$run" </dev/console >/dev/console 2>&1

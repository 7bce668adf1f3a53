#!/bin/sh
# The kubelet node test inside the systemd guest (shape 2), run by tether-kubelet.service:
# node.py with the systemd cgroup driver (kubelet's and runc's, SystemdCgroup = true) on
# the guest's pure cgroup v2 hierarchy; what to run comes from <run>/params (written by
# systemd-guest.sh), the results go to <run>/out and the exit status to <run>/status.
# Arguments: <workspace> <run directory>.
set -u
workspace=$1 run=$2
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
echo "guest: $(uname -r), $(systemctl --version | head -n1), system $(systemctl is-system-running 2>&1)," \
  "cgroup $(stat -fc %T /sys/fs/cgroup)"
systemctl --failed --no-legend --plain 2>&1 | sed 's/^/guest: failed unit: /'
set -a
. "$run/params"
set +a
status=0
python3 "$workspace/tests/scripts/kubelet/node.py" run --shape systemd --out "$run/out" \
  ${KUBELET_CHECKS:+--checks "$KUBELET_CHECKS"} ${KUBELET_SKIP:+--skip "$KUBELET_SKIP"} \
  --density "${KUBELET_DENSITY:-10}" || status=$?
echo "$status" >"$run/status.tmp" && mv "$run/status.tmp" "$run/status"
sync
exit 0

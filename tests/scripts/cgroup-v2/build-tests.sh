#!/usr/bin/env bash
# Builds the test binaries the cgroup v2 leg runs and writes the list the guest reads
# (guest-tests.sh): one line per run, `<label>\t<cwd>\t<binary>\t<test filters and flags>`
# (cargo runs a test binary in its package's directory; so does the guest).
#
#   tests/scripts/cgroup-v2/build-tests.sh <list file>
#
# What runs, and why (TCG emulation is 10-30x slower than the host, so the leg runs the
# tests that touch cgroups, not the whole suite):
#   shim unit tests     all but the idmapped-mount ones (cgroup parsing, metrics, the OOM
#                       watchers on a real v2 cgroup)
#   containerd_run      OOM (memory.events, /tasks/oom before /tasks/exit), metrics (v2
#                       fields), pause/resume (cgroup.freeze), exec in the task's cgroup,
#                       cgroups removed on delete
#   shim_cgroups        Update through the Task API (memory.max, pids.max), ShimCgroup
#   runc_lifecycle      the runc driver: pause/resume, update (memory.max), stats, exec
#   standalone_*        the supervisor face: run/exec/kill, delete --force
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../../.." && pwd)
list=${1:?usage: build-tests.sh <list file>}
cd "$top"

# Prints the test executable of one cargo target (`--lib` of a package or `--test name`).
executables() {
  cargo test --locked --no-run --message-format=json "$@" 2>/dev/null |
    grep '"reason":"compiler-artifact"' | grep '"test":true' |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p'
}
build() {
  # Progress and errors on stderr; the JSON is read a second time (a no-op build) for the
  # executable's path.
  cargo test --locked --no-run "$@" >&2
  executables "$@"
}

shim_lib=$(build -p tether-shim --lib)
tests_bins=$(build -p tether-tests --test containerd_run --test runc_lifecycle \
  --test shim_cgroups --test standalone_lifecycle --test standalone_depot --test shim_memory)
bin() { grep "/deps/$1-" <<<"$tests_bins"; }

tab=$'\t'
{
  # The idmapped-mount tests idmap a tmpfs, which the guest's 6.1 kernel cannot (tmpfs
  # supports idmapped mounts from 6.3 on); they run in make test on the host.
  echo "shim-unit${tab}$top/shim${tab}${shim_lib}${tab}--skip idmapped"
  echo "containerd_run${tab}$top/tests${tab}$(bin containerd_run)${tab}pause_and_resume metrics_report_memory_and_pids oom_kill_is_published detached_run_exec_ps_kill_delete repeated_runs_leave_nothing_behind"
  echo "shim_cgroups${tab}$top/tests${tab}$(bin shim_cgroups)${tab}"
  echo "runc_lifecycle${tab}$top/tests${tab}$(bin runc_lifecycle)${tab}"
  echo "standalone_lifecycle${tab}$top/tests${tab}$(bin standalone_lifecycle)${tab}supervisors_outlive_their_manager"
  echo "standalone_depot${tab}$top/tests${tab}$(bin standalone_depot)${tab}delete_force_kills_an_init_runc_forgot"
  echo "shim_memory${tab}$top/tests${tab}$(bin shim_memory)${tab}--ignored lone_shim_memory"
} >"$list"

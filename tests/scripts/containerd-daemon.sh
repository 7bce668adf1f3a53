#!/usr/bin/env bash
# Prints the directory holding `containerd` and `ctr` of one containerd line of the test
# matrix, fetching or building it into a cache outside the clone when it is missing.
#
#   tests/scripts/containerd-daemon.sh 1.6   # Debian 12's system package: /usr/bin
#   tests/scripts/containerd-daemon.sh 1.7   # Debian trixie's 1.7.24 and sid's 2.1.9,
#   tests/scripts/containerd-daemon.sh 2.1   # unpacked by the shared conformance harness
#                                            # (its ctd-versions.sh)
#   tests/scripts/containerd-daemon.sh 2.2   # 2.2 / 2.3 / 2.4: built from the Go module
#                                            # proxy by go-tools.sh (pinned, cached)
#   tests/scripts/containerd-daemon.sh list  # the lines of the matrix, one per line
#
# The integration tests take the printed dir as TETHER_CONTAINERD_DIR.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
LINES="1.6 1.7 2.1 2.2 2.3 2.4"

die() { echo "containerd-daemon: $*" >&2; exit 1; }

# Debian trixie's containerd 1.7 or sid's 2.1 the way the shared conformance harness gets
# them: its own ctd-versions.sh (private apt configuration, `dpkg -x` into its cache),
# without the build of that version's Go test suite, which only the harness needs.
harness_containerd() {
  local harness=${TETHER_CONFORMANCE_DIR:-$top/../shared/conformance}
  [ -f "$harness/ctd-versions.sh" ] ||
    die "no conformance harness at $harness (containerd 2.1 comes from its ctd-versions.sh)"
  # The variables and helper ctd-versions.sh expects from run.sh.
  HERE=$harness
  CACHE=${CONFORMANCE_CACHE:-/var/tmp/containerd-conformance}
  CTD=$1 BIN=
  say() { echo "containerd-daemon: $*" >&2; }
  # shellcheck source=/dev/null
  source "$harness/ctd-versions.sh"
  ctd_build_test_binary() { :; }
  prepare_ctd_version >&2
  echo "$CACHE/ctd/$CTD_VER/usr/bin"
}

case "${1:-}" in
  1.6)
    # Debian 12's system package (make deps installs it).
    [ -x /usr/bin/containerd ] && [ -x /usr/bin/ctr ] ||
      die "/usr/bin/containerd or ctr missing: apt-get install containerd (make deps)"
    /usr/bin/containerd --version | grep -q ' 1\.6\.' ||
      die "/usr/bin/containerd is not 1.6: $(/usr/bin/containerd --version)"
    echo /usr/bin
    ;;
  1.7|2.1) harness_containerd "$1" ;;
  2.2|2.3|2.4) "$here/go-tools.sh" containerd "$1" ;;
  list) tr ' ' '\n' <<<"$LINES" ;;
  *) die "usage: $0 1.6|1.7|2.1|2.2|2.3|2.4|list" ;;
esac

#!/usr/bin/env bash
# Builds the Go programs the tests drive, from the Go module proxy, pinned by version and
# cached outside the clone, and prints the directory that holds each one's binaries.
#
#   tests/scripts/go-tools.sh containerd 2.3        # -> $CACHE/containerd-v2.3.7/bin
#   tests/scripts/go-tools.sh cri-tools             # -> $CACHE/cri-tools-v1.37.0/bin
#   tests/scripts/go-tools.sh nerdctl               # -> $CACHE/nerdctl-v2.4.2/bin
#   tests/scripts/go-tools.sh kubelet               # -> $CACHE/kubelet-v1.34.4/bin
#   tests/scripts/go-tools.sh execprobe             # -> $CACHE/execprobe-<source hash>/bin
#   tests/scripts/go-tools.sh all                   # every pinned tool, one dir per line
#
# containerd's bin dir holds `containerd`, `ctr` and that release's Go shim
# `containerd-shim-runc-v2` (the baseline for the same daemon); cri-tools' holds `critest`
# (a `go test -c` of ./cmd/critest) and `crictl`; nerdctl's holds `nerdctl`; kubelet's
# holds `kubelet`; execprobe's (the exec-probe benchmark's CRI client, whose source is
# this repository's tests/tools/execprobe, pinned by its go.mod/go.sum) holds `execprobe`.
#
# The cache key is the module version and the Go version; a build that fails leaves
# nothing in the cache (it is built in a temp dir and renamed into place). Nothing is
# downloaded but modules through the Go module proxy (`go mod download`); the Go
# toolchain is the machine's own (GOTOOLCHAIN=local: a module that asks for a newer Go
# fails clearly rather than fetching a toolchain).
set -euo pipefail

CACHE=${TETHER_GO_CACHE:-/var/cache/tether/go}
# Pinned versions: the newest patch release of each line on the day they were pinned.
declare -A CONTAINERD=([2.2]=v2.2.9 [2.3]=v2.3.7 [2.4]=v2.4.2)
CRI_TOOLS=v1.37.0
KUBELET=v1.34.4
CONTAINERD_MODULE=github.com/containerd/containerd/v2
CRI_TOOLS_MODULE=sigs.k8s.io/cri-tools
NERDCTL=v2.4.2
NERDCTL_MODULE=github.com/containerd/nerdctl/v2
# nerdctl v2.4.2 requires github.com/moby/moby/v2 v2.0.0-beta.28, which the Go module proxy
# does not serve here; it uses only that module's pkg/sysinfo and pkg/meminfo (`nerdctl
# info`), which the newest served beta, pinned instead, provides with the same API (nerdctl
# builds against it; see build_nerdctl).
NERDCTL_MOBY_MODULE=github.com/moby/moby/v2
NERDCTL_MOBY=v2.0.0-beta.25
KUBERNETES_MODULE=k8s.io/kubernetes
BUILD_TAGS='no_btrfs no_devmapper no_zfs no_aufs'

export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=${CGO_ENABLED:-1}

die() { echo "go-tools: $*" >&2; exit 1; }
note() { echo "go-tools: $*" >&2; }

command -v go >/dev/null 2>&1 || die "go not found (the polyglot machine has Go 1.26; apt-get install golang-go is too old for containerd 2.3)"
GO_VERSION=$(go env GOVERSION)

# module_dir MODULE VERSION: the read-only source dir of MODULE@VERSION in the module cache.
module_dir() {
  local json
  json=$(go mod download -json "$1@$2") || die "cannot download $1@$2 from the Go module proxy"
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json"
}

# build_into NAME VERSION FUNC MODULE: runs FUNC TMPBIN in the source dir of
# MODULE@VERSION unless $CACHE/NAME-VERSION exists.
build_into() {
  build_into_dir "$1" "$2" "$3" "$(module_dir "$4" "$2")"
}

# build_into_dir NAME VERSION FUNC SRCDIR: the same with a source dir of its own.
build_into_dir() {
  local name=$1 version=$2 fn=$3 src=$4
  local dest="$CACHE/$name-$version"
  if [ -f "$dest/.built-with-$GO_VERSION" ]; then
    echo "$dest/bin"
    return 0
  fi
  mkdir -p "$CACHE"
  local tmp
  [ -d "$src" ] || die "no source dir $src for $name $version"
  tmp=$(mktemp -d "$CACHE/.build-$name-XXXXXX")
  mkdir -p "$tmp/bin"
  note "building $name $version with $GO_VERSION (cached in $dest)"
  local started=$SECONDS
  if ! (cd "$src" && "$fn" "$tmp/bin"); then
    rm -rf "$tmp"
    die "building $name $version failed"
  fi
  touch "$tmp/.built-with-$GO_VERSION"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  note "built $name $version in $((SECONDS - started)) s"
  echo "$dest/bin"
}

build_containerd() {
  local out=$1
  go build -tags "$BUILD_TAGS" -o "$out/containerd" ./cmd/containerd
  go build -tags "$BUILD_TAGS" -o "$out/ctr" ./cmd/ctr
  go build -tags "$BUILD_TAGS" -o "$out/containerd-shim-runc-v2" ./cmd/containerd-shim-runc-v2
}

build_cri_tools() {
  local out=$1
  go test -c -o "$out/critest" ./cmd/critest
  go build -o "$out/crictl" ./cmd/crictl
}

# nerdctl's go.mod, rewritten in a copy of its source (the module cache is read-only):
# moby/moby/v2 replaced by the pinned served beta; the test-only nested module `tigron`
# (a `replace` to ./mod/tigron, a directory the module zip leaves out) dropped. `-mod=mod`
# records the new sums in the copy's go.sum, checked against the checksum database as
# any download is. Static (CGO off) with its version stamped, as nerdctl's Makefile does.
build_nerdctl() {
  local out=$1 src rc=0
  src=$(mktemp -d "$out/../src-XXXXXX") || return 1
  # Called where `set -e` does not apply (build_into's `if`): every step is chained.
  cp -r . "$src" && chmod -R u+w "$src" && (
    cd "$src" &&
      go mod edit \
        -droprequire github.com/containerd/nerdctl/mod/tigron \
        -dropreplace github.com/containerd/nerdctl/mod/tigron@v0.0.0 \
        -replace "$NERDCTL_MOBY_MODULE=$NERDCTL_MOBY_MODULE@$NERDCTL_MOBY" &&
      CGO_ENABLED=0 go build -mod=mod \
        -ldflags "-s -w -X $NERDCTL_MODULE/pkg/version.Version=$NERDCTL" \
        -o "$out/nerdctl" ./cmd/nerdctl
  ) || rc=$?
  rm -rf "$src"
  return $rc
}

nerdctl() {
  build_into nerdctl "$NERDCTL" build_nerdctl "$NERDCTL_MODULE"
}

# k8s.io/kubernetes' go.mod requires its staging modules (k8s.io/api, k8s.io/client-go, …)
# as `v0.0.0` and replaces them with ./staging/src/k8s.io/* directories, which the module
# archive does not carry. The build uses a rewritten copy of go.mod (`-modfile`, the
# source dir stays the read-only module dir): the replace block dropped and each
# `k8s.io/X v0.0.0` require set to the published `v0.MINOR.PATCH` of the same release
# (pseudo-versions such as k8s.io/utils are left alone); `-mod=mod` resolves the rest
# through the proxy into the copy's go.sum. GOWORK=off: the archive carries a go.work
# that names the staging dirs too. The version ldflags are those of hack/lib/version.sh,
# so `kubelet --version` says the release.
build_kubelet() {
  local out=$1 modfile staging_version=v0.${KUBELET#v1.}
  modfile=$(dirname "$out")/kubelet.mod
  sed -e '/^replace (/,/^)/d' \
    -e "s#^\(\s*k8s\.io/[a-z0-9-]*\) v0\.0\.0\$#\1 $staging_version#" go.mod >"$modfile"
  cp go.sum "${modfile%.mod}.sum"
  if grep -q ' v0\.0\.0$' "$modfile"; then
    die "kubelet: go.mod still requires v0.0.0 after the rewrite"
  fi
  local minor=${KUBELET#v1.}
  minor=${minor%%.*}
  local ldflags="" key val
  for kv in "gitVersion=$KUBELET" gitMajor=1 "gitMinor=$minor" gitTreeState=clean \
    "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
    key=${kv%%=*} val=${kv#*=}
    ldflags+=" -X k8s.io/client-go/pkg/version.$key=$val -X k8s.io/component-base/version.$key=$val"
  done
  GOWORK=off GOFLAGS="$GOFLAGS -mod=mod" CGO_ENABLED=0 \
    go build -modfile "$modfile" -ldflags "-s -w$ldflags" -o "$out/kubelet" ./cmd/kubelet
  "$out/kubelet" --version >&2
}

kubelet() {
  build_into kubelet "$KUBELET" build_kubelet "$KUBERNETES_MODULE"
}

# execprobe is built from the repository, not from a module: its cache key is a hash of
# its source (go.mod, go.sum, *.go), so an edit gives a new build; other builds of it
# that nobody used for 2 hours are removed (another checkout may be using its own).
build_execprobe() {
  local out=$1
  go build -mod=readonly -o "$out/execprobe" .
}

execprobe() {
  local here src key dir
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  src="$here/../tools/execprobe"
  key=$(cd "$src" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-16)
  dir=$(build_into_dir execprobe "$key" build_execprobe "$src")
  touch "$CACHE/execprobe-$key"
  for old in "$CACHE"/execprobe-*; do
    [ "$old" = "$CACHE/execprobe-$key" ] || [ -n "$(find "$old" -maxdepth 0 -mmin -120)" ] ||
      rm -rf "$old"
  done
  echo "$dir"
}

containerd() {
  local line=$1 version=${CONTAINERD[$1]:-}
  [ -n "$version" ] || die "unknown containerd line '$line' (pinned: ${!CONTAINERD[*]})"
  build_into containerd "$version" build_containerd "$CONTAINERD_MODULE"
}

cri_tools() {
  build_into cri-tools "$CRI_TOOLS" build_cri_tools "$CRI_TOOLS_MODULE"
}

case "${1:-}" in
  containerd) [ -n "${2:-}" ] || die "usage: $0 containerd 2.2|2.3|2.4"; containerd "$2" ;;
  cri-tools) cri_tools ;;
  nerdctl) nerdctl ;;
  kubelet) kubelet ;;
  execprobe) execprobe ;;
  all)
    for line in 2.2 2.3 2.4; do containerd "$line"; done
    cri_tools
    nerdctl
    kubelet
    execprobe
    ;;
  versions)
    for line in 2.2 2.3 2.4; do echo "containerd $line ${CONTAINERD[$line]}"; done
    echo "cri-tools $CRI_TOOLS"
    echo "nerdctl $NERDCTL ($NERDCTL_MOBY_MODULE $NERDCTL_MOBY)"
    echo "kubelet $KUBELET"
    ;;
  *) die "usage: $0 containerd 2.2|2.3|2.4 | cri-tools | nerdctl | kubelet | execprobe | all | versions" ;;
esac

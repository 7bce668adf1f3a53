# tether — build, install, test, lint, bench and demo.
#
# `make demo` is the main job (build, install what is missing, run a container through
# tether); `make test` runs the whole test suite. Both work on a fresh Debian 12 machine
# as root, with a Rust toolchain (rustup) installed.

PREFIX  ?= /usr/local
DESTDIR ?=
CARGO   ?= cargo
SHIM    := containerd-shim-tether-v2
# The shim is linked statically against glibc (a static PIE, so ASLR stays): one shim
# runs per container, and a static binary maps only the libc code it uses instead of all
# of libc.so, and skips the dynamic loader at each of its two execs per container start.
# Measured here: RSS of a lone shim 3.1 -> 2.4 MiB, USS per extra container 270 -> 230 KiB.
# `--target` keeps the flag off build scripts and proc-macros, which must stay dynamic.
HOST_TRIPLE := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
STATIC_RUSTFLAGS := -C target-feature=+crt-static
RELEASE_BIN := target/$(HOST_TRIPLE)/release/$(SHIM)

# Debian packages the tests and the demo drive for real.
DEB_PACKAGES := runc containerd busybox-static criu iproute2 util-linux

PHONY_UPGRADE := upgrade-peer test-upgrade
.PHONY: $(PHONY_UPGRADE) all build install uninstall test unit-test lint fmt bench bench-shim demo deps check-toolchain clean conformance conformance-load test-containerd-matrix \
        test-nerdctl test-cri test-cri-pods critest-cri critest-matrix cri-tools cri-deps fuzz test-faults test-cgroup-v2 \
        test-kubelet test-kubelet-systemd bench-probes

all: build

check-toolchain:
	@command -v $(CARGO) >/dev/null 2>&1 || { \
	  echo "error: cargo not found. tether needs a Rust toolchain (rustup, Rust >= 1.80):"; \
	  echo "       Debian 12's packaged rustc 1.63 is too old."; exit 1; }
	@[ -n "$(HOST_TRIPLE)" ] || { echo "error: rustc not found (needed for the host triple of the static build)"; exit 1; }

## deps: apt-get install the Debian packages that are missing (runc, containerd, busybox-static, criu…)
deps: check-toolchain
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "error: run as root to install$$missing"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "deps: all of $(DEB_PACKAGES) present"; \
	fi

# The revision `-v` and live upgrades report (the commit, when built from a git checkout).
REVISION := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

## build: release build of containerd-shim-tether-v2
build: check-toolchain
	TETHER_REVISION=$${TETHER_REVISION:-$(REVISION)} RUSTFLAGS="$$RUSTFLAGS $(STATIC_RUSTFLAGS)" $(CARGO) build --release --locked -p tether-shim --target $(HOST_TRIPLE)

## upgrade-peer: the same source built again with another revision string (REVISION-peer)
##        into $(UPGRADE_PEER)/bin: the binary the live-upgrade tests move a running shim
##        onto and back from (cached outside the clone; incremental after the first build)
UPGRADE_PEER ?= /var/cache/tether/upgrade-peer
upgrade-peer: check-toolchain
	CARGO_TARGET_DIR=$(UPGRADE_PEER)/target TETHER_REVISION=$(REVISION)-peer RUSTFLAGS="$$RUSTFLAGS $(STATIC_RUSTFLAGS)" $(CARGO) build --release --locked -p tether-shim --target $(HOST_TRIPLE)
	install -D -m 0755 $(UPGRADE_PEER)/target/$(HOST_TRIPLE)/release/$(SHIM) $(UPGRADE_PEER)/bin/$(SHIM)

## test-upgrade: live upgrade under CRI (tests/tests/cri_upgrade.rs): a pod moved between
##        this build and the peer build twenty times, on containerd 1.6 and on 2.3
test-upgrade: deps cri-deps build upgrade-peer cri-tools
	tests/scripts/go-tools.sh containerd 2.3 >/dev/null
	for v in 1.6 2.3; do \
	  CRI_CONTAINERD=$$v TETHER_CRI_REQUIRED=1 TETHER_UPGRADE_PEER=$(UPGRADE_PEER)/bin/$(SHIM) \
	  TETHER_SHIM=$(CURDIR)/$(RELEASE_BIN) $(CARGO) test --locked -p tether-tests --test cri_upgrade || { $(BEDS_LEFT); exit 1; }; \
	done
	$(BEDS_LEFT)

## install: install the shim into $(DESTDIR)$(PREFIX)/bin
install: build
	install -D -m 0755 $(RELEASE_BIN) $(DESTDIR)$(PREFIX)/bin/$(SHIM)

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/$(SHIM)

# Run after the tests that start CRI test beds: fails (and ends them) when a bed of this
# checkout is still running (tests/scripts/cri/beds-left.sh), whatever the tests said.
BEDS_LEFT := tests/scripts/cri/beds-left.sh

## test: unit tests and integration tests against real runc (root); then a check that no
##        CRI test bed of this checkout was left running
test: deps build
	TETHER_SHIM=$(CURDIR)/$(RELEASE_BIN) $(CARGO) test --workspace --locked; \
	rc=$$?; $(BEDS_LEFT) || rc=1; exit $$rc

## unit-test: the unit tests alone (every crate's lib and bin tests): no root, no runc
##        container, no daemon; anyone can run them (a test that needs root prints
##        "SKIPPED <test>: needs root" and passes; each test binary ends with its count
##        of skipped tests: tests/skip)
unit-test: check-toolchain
	$(CARGO) test --workspace --locked --lib --bins

## conformance: containerd's own client suite against tether (needs ../shared/conformance)
conformance: deps build
	tests/scripts/conformance.sh $(CURDIR)/$(dir $(RELEASE_BIN))

## conformance-load: the same suite under CPU load, containerd 2.1's by default
##        (CONFORMANCE_CONTAINERD): a busy loop on every core (CONFORMANCE_LOAD_LOOPS,
##        default nproc) for the whole run, always ended; the same baseline and retry
##        (tests/scripts/conformance-load.sh). The 2.1 suite is built once (cached)
conformance-load: deps build
	tests/scripts/conformance-load.sh $(CURDIR)/$(dir $(RELEASE_BIN))

## test-containerd-matrix: the ctr-driven integration tests against containerd 1.6, 1.7, 2.1,
##        2.2, 2.3 and 2.4, and the upgrade tests 1.7 -> 2.3 and 2.1 -> 2.3, with a table.
##        TETHER_MATRIX="1.6 2.3" picks lines; see tests/scripts/containerd-matrix.sh
test-containerd-matrix: deps build
	tests/scripts/containerd-matrix.sh $(CURDIR)/$(RELEASE_BIN)

## test-nerdctl: nerdctl v2.4.2 as the client of a private containerd 2.3, with tether and (the
##        oracle) the Go shim as the runtime: run -d -t + logs, create -t + start, exec -i,
##        run -it with a resize, attach… (tests/tests/nerdctl.rs). Builds nerdctl and
##        containerd 2.3 from the Go module proxy when missing (cached; tests/scripts/go-tools.sh)
test-nerdctl: deps build
	ctd=$$(tests/scripts/go-tools.sh containerd 2.3) && nerdctl=$$(tests/scripts/go-tools.sh nerdctl) && \
	TETHER_NERDCTL_REQUIRED=1 TETHER_CONTAINERD_DIR=$$ctd TETHER_NERDCTL=$$nerdctl/nerdctl \
	  TETHER_SHIM=$(CURDIR)/$(RELEASE_BIN) $(CARGO) test --locked -p tether-tests --test nerdctl -- --test-threads=1

## test-cgroup-v2: the cgroup v2 leg: the tests that touch cgroups (containerd face, runc
##        driver, standalone face, the shim's unit tests) in a throwaway QEMU guest booted
##        with only the unified hierarchy; see tests/scripts/cgroup-v2/run.sh
test-cgroup-v2: deps build
	tests/scripts/cgroup-v2/run.sh $(CURDIR)/$(RELEASE_BIN)

## test-cri: the Kubernetes path. critest (cri-tools v1.37.0) through containerd 1.6's CRI with
##           the runc and tether handlers side by side (fails when a spec passes for runc and
##           not for tether), then the crictl pod scenarios (tests/tests/cri_pod.rs).
##           CRI_RUNS (1), CRI_SEED (random), CRI_CONTAINERD (1.6 | 2.3),
##           CRI_KILL_DELAY_MS (0; 300 = the delayed `runc kill` mode); see tests/scripts/cri/.
test-cri: critest-cri test-cri-pods

## test-cri-pods: only the crictl pod scenarios of test-cri (tests/tests/cri_pod.rs)
test-cri-pods: deps cri-deps build cri-tools
	TETHER_CRI_REQUIRED=1 TETHER_SHIM=$(CURDIR)/$(RELEASE_BIN) $(CARGO) test --locked -p tether-tests --test cri_pod; \
	rc=$$?; $(BEDS_LEFT) || rc=1; exit $$rc

## critest-cri: only the critest comparison of test-cri
critest-cri: deps cri-deps build cri-tools
	tests/scripts/cri/critest.sh --runs $${CRI_RUNS:-1} $${CRI_SEED:+--seed $$CRI_SEED}

## critest-matrix: issue 10's bar in full: five runs with consecutive seeds (CRI_SEED, default
##           random), each with `runc kill` returning 300 ms late, on containerd 1.6 and then
##           2.3 (~40 + ~40 min on 2 cores; too long for CI, which runs one of each per day)
critest-matrix: deps cri-deps build cri-tools
	tests/scripts/go-tools.sh containerd 2.3 >/dev/null
	seed=$${CRI_SEED:-$$(( $$(date +%s) % 100000 ))}; \
	CRI_KILL_DELAY_MS=300 CRI_CONTAINERD=1.6 tests/scripts/cri/critest.sh --runs 5 --seed $$seed && \
	CRI_KILL_DELAY_MS=300 CRI_CONTAINERD=2.3 tests/scripts/cri/critest.sh --runs 5 --seed $$seed

## test-kubelet: a real Kubernetes node: a standalone kubelet (v1.34, built by go-tools.sh)
##           drives pods through containerd 2.3's CRI, with the Go shim and then tether as the
##           default handler; the same scenario (probes, back-off, OOMKilled, graceful
##           termination, log rotation, /stats/summary, checkpoint, user namespaces, node
##           restart, density, teardown) and a table; fails when tether does worse than the
##           Go shim on any check. Shape 1: this host, cgroup v1, kubelet's cgroupfs driver.
##           KUBELET_CHECKS / KUBELET_SKIP (comma lists), KUBELET_DENSITY (110),
##           CRI_CONTAINERD (2.3 | 1.6); see tests/scripts/kubelet/node.py
test-kubelet: deps cri-deps build
	tests/scripts/go-tools.sh kubelet >/dev/null
	tests/scripts/go-tools.sh cri-tools >/dev/null
	@if [ -x ../shared/criu/install.sh ] && [ ! -x /opt/criu-trixie/bin/criu ]; then ../shared/criu/install.sh || true; fi
	TETHER_SHIM=$(CURDIR)/$(RELEASE_BIN) python3 tests/scripts/kubelet/node.py run \
	  $${KUBELET_CHECKS:+--checks $$KUBELET_CHECKS} $${KUBELET_SKIP:+--skip $$KUBELET_SKIP} \
	  --density $${KUBELET_DENSITY:-110}

## test-kubelet-systemd: node shape 2 of test-kubelet: the same scenario in a throwaway QEMU
##           guest booted from the host's root with systemd as PID 1 on a pure cgroup v2
##           hierarchy, kubelet's and runc's systemd cgroup drivers (pods are systemd scopes
##           under kubepods.slice), containerd 2.3; KUBELET_DENSITY defaults to 10 there;
##           see tests/scripts/kubelet/systemd-guest.sh
test-kubelet-systemd: deps cri-deps build
	@if [ -x ../shared/criu/install.sh ] && [ ! -x /opt/criu-trixie/bin/criu ]; then ../shared/criu/install.sh || true; fi
	tests/scripts/kubelet/systemd-guest.sh $(CURDIR)/$(RELEASE_BIN)

# Debian packages only the CRI test bed needs (Debian's dynamically linked busybox is
# fetched by tests/scripts/cri/env.sh itself: it conflicts with busybox-static)
CRI_DEB_PACKAGES := containernetworking-plugins iptables openssl python3 bsdutils
cri-deps:
	@missing=""; \
	for p in $(CRI_DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "cri-deps: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# critest and crictl, built once from the Go module proxy and cached (tests/scripts/go-tools.sh)
cri-tools:
	tests/scripts/go-tools.sh cri-tools >/dev/null
	@if [ "$${CRI_CONTAINERD:-1.6}" = 2.3 ]; then tests/scripts/go-tools.sh containerd 2.3 >/dev/null; fi

## fuzz: every cargo-fuzz target (fuzz/) for FUZZ_SECONDS (30) each; needs cargo-fuzz.
##        FUZZ_TARGETS="ttrpc_frames winsz_stream" picks targets; see tests/scripts/fuzz.sh
FUZZ_SECONDS ?= 30
fuzz: check-toolchain
	FUZZ_SECONDS=$(FUZZ_SECONDS) tests/scripts/fuzz.sh

## test-faults: the fault suite (root): hostile clients and load on a shim over ttrpc
##        (shim_faults), and crashes, full disks and broken runc under containerd
##        (containerd_faults), against the release build.
test-faults: deps build
	TETHER_SHIM=$(CURDIR)/$(RELEASE_BIN) $(CARGO) test --locked -p tether-tests --test shim_faults --test containerd_faults -- --test-threads=1

## lint: rustfmt check and clippy with warnings as errors
lint: check-toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

## bench: tether vs containerd-shim-runc-v2, side by side, in a private containerd (root).
##        BENCH_ITERATIONS (30), BENCH_CONTAINERS ("1,30"; "1,30,100"), BENCH_OUTPUT
##        (bench-results.json); the table is printed, the results also go to BENCH_OUTPUT.
bench: deps build
	@command -v python3 >/dev/null 2>&1 || { echo "error: make bench needs python3 (apt-get install python3)"; exit 1; }
	python3 tests/scripts/bench.py $(CURDIR)/$(RELEASE_BIN)

## bench-shim: tether vs containerd-shim-runc-v2, each driven directly over ttrpc as containerd
##        drives it, without containerd (root): per call latency, runc's part and the shim's
##        own share (split at the kernel's fork/exec/exit stamps of the runtime for the calls that
##        run runc), the shims' own CPU per lifecycle and per exec, user and system (tests/src/shim_bench/).
##        BENCH_SHIM_ROUNDS (20), BENCH_SHIM_EXECS (3), BENCH_SHIM_STATS (10), BENCH_SHIM_OUTPUT
##        (bench-results-shim.json), BENCH_GO_SHIM (/usr/bin/containerd-shim-runc-v2),
##        BENCH_SHIM_RUNTIME (timer | runc: the shims run runc itself, not runc-timer)
bench-shim: deps build
	$(CARGO) build --locked -p tether-tests --bins
	$${CARGO_TARGET_DIR:-target}/debug/bench_shim $(CURDIR)/$(RELEASE_BIN)

## bench-probes: exec probes at node scale (issue 24): in the CRI test bed, per handler (the Go
##        shim, tether) BENCH_PROBE_PODS (110) pods, each container probed by CRI ExecSync
##        every BENCH_PROBE_INTERVAL (10) s for BENCH_PROBE_SECONDS (120) s: probe latency and
##        the shims' CPU per 1,000 probes side by side (tests/tools/execprobe, built by
##        go-tools.sh). BENCH_PROBE_ROUNDS (1), BENCH_PROBE_CMD (true), CRI_CONTAINERD
##        (1.6 | 2.3), BENCH_PROBE_OUTPUT (bench-results-probes.json)
bench-probes: deps cri-deps build
	tests/scripts/bench-probes.sh $(CURDIR)/$(RELEASE_BIN)

## demo: private containerd + a busybox container through tether, then cleanup
demo: deps build
	tests/scripts/demo.sh $(CURDIR)/$(RELEASE_BIN)

clean:
	$(CARGO) clean

// execprobe measures exec probes at node scale (issue 24): N pods per runtime handler,
// each pod's container probed through CRI's ExecSync at a fixed rate for a fixed time,
// the way kubelet runs exec probes; then the shims' CPU per 1,000 probes, the probes'
// latency and the shims' memory, the handlers side by side.
//
// It runs inside the CRI test bed (tests/scripts/cri/env.sh run -- execprobe ...), which
// provides the private containerd with the `runc` and `tether` handlers, the registry of
// the busybox image, and a PID namespace and /proc of its own; `make bench-probes` is the
// entry point (tests/scripts/bench-probes.sh). One gRPC connection carries every call.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criClient is the one connection to containerd's CRI.
type criClient struct {
	runtime cri.RuntimeServiceClient
	image   cri.ImageServiceClient
}

// config is the command line.
type config struct {
	Endpoint    string        `json:"-"`
	Handlers    []string      `json:"handlers"`
	Pods        int           `json:"pods"`
	Interval    time.Duration `json:"-"`
	Window      time.Duration `json:"-"`
	IntervalS   float64       `json:"interval_s"`
	WindowS     float64       `json:"seconds"`
	Rounds      int           `json:"rounds"`
	Timeout     time.Duration `json:"-"`
	Cmd         []string      `json:"cmd"`
	Image       string        `json:"image"`
	Parallel    int           `json:"setup_parallel"`
	MaxInFlight int           `json:"max_in_flight"`
	Settle      time.Duration `json:"-"`
	Output      string        `json:"-"`
}

// shimBinary is the executable name of each handler's shim in the bed.
var shimBinary = map[string]string{
	"runc":   "containerd-shim-runc-v2",
	"tether": "containerd-shim-tether-v2",
}

func parseFlags() (config, error) {
	var c config
	var handlers, cmd string
	var interval, window, timeout, settle float64
	flag.StringVar(&c.Endpoint, "endpoint", os.Getenv("CRI_ENDPOINT"), "CRI endpoint (unix://PATH)")
	flag.StringVar(&handlers, "handlers", "runc,tether", "runtime handlers, comma separated (round 1's order; later rounds rotate it)")
	flag.IntVar(&c.Pods, "pods", 110, "pods per handler (one container each)")
	flag.Float64Var(&interval, "interval", 10, "seconds between two probes of one container")
	flag.Float64Var(&window, "seconds", 120, "seconds of probing per handler and round")
	flag.IntVar(&c.Rounds, "rounds", 1, "rounds (each runs every handler once)")
	flag.Float64Var(&timeout, "timeout", 10, "ExecSync timeout, seconds (whole)")
	flag.StringVar(&cmd, "cmd", "true", "probe command, words separated by spaces")
	flag.StringVar(&c.Image, "image", "registry.k8s.io/e2e-test-images/busybox:1.29-2", "container image")
	flag.IntVar(&c.Parallel, "parallel", 4, "pods started or stopped at once")
	flag.IntVar(&c.MaxInFlight, "max-in-flight", 0, "probes in flight at once (0: one per container)")
	flag.Float64Var(&settle, "settle", 10, "seconds between the last pod's start and the window (the shims' idle CPU is measured over them)")
	flag.StringVar(&c.Output, "output", "bench-results-probes.json", "JSON results file")
	flag.Parse()
	c.Handlers = strings.Split(handlers, ",")
	for _, h := range c.Handlers {
		if shimBinary[h] == "" {
			return c, fmt.Errorf("unknown handler %q (runc, tether)", h)
		}
	}
	c.Cmd = strings.Fields(cmd)
	c.Interval = time.Duration(interval * float64(time.Second))
	c.Window = time.Duration(window * float64(time.Second))
	c.Timeout = time.Duration(timeout) * time.Second
	c.Settle = time.Duration(settle * float64(time.Second))
	c.IntervalS, c.WindowS = interval, window
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = c.Pods
	}
	switch {
	case c.Endpoint == "":
		return c, fmt.Errorf("no -endpoint and no CRI_ENDPOINT (run inside tests/scripts/cri/env.sh)")
	case c.Pods < 1 || c.Rounds < 1 || c.Parallel < 1 || len(c.Cmd) == 0:
		return c, fmt.Errorf("-pods, -rounds, -parallel must be >= 1 and -cmd not empty")
	case c.Interval < 10*time.Millisecond || c.Window < c.Interval:
		return c, fmt.Errorf("-interval must be >= 0.01 s and -seconds >= -interval")
	case c.Timeout < time.Second:
		return c, fmt.Errorf("-timeout must be >= 1 s")
	}
	return c, nil
}

func dial(endpoint string) (*criClient, *grpc.ClientConn, error) {
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("connect %s: %w", endpoint, err)
	}
	return &criClient{runtime: cri.NewRuntimeServiceClient(conn), image: cri.NewImageServiceClient(conn)}, conn, nil
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// selfCPU is this client's own CPU seconds (all its threads).
func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// roundResult is one handler's run in one round.
type roundResult struct {
	Handler      string       `json:"handler"`
	Round        int          `json:"round"`
	Position     int          `json:"position"` // 1 = ran first in its round
	Shims        int          `json:"shims"`
	ProbesPlan   int          `json:"probes_planned"`
	ProbesDone   int          `json:"probes_done"`
	ProbesFailed int          `json:"probes_failed"`
	Skipped      int          `json:"ticks_skipped"`
	FirstError   string       `json:"first_error,omitempty"`
	WindowS      float64      `json:"window_s"`
	Latency      latencyStats `json:"latency"`
	LatencyEarly latencyStats `json:"latency_first_half"`
	LatencyLate  latencyStats `json:"latency_second_half"`
	Lag          latencyStats `json:"start_lag"`
	ShimCPU      cpuDelta     `json:"shim_cpu"`
	// the shims' own CPU with no probe running (ms per s, all shims; over -settle)
	IdleShimMsPerS float64   `json:"idle_shim_cpu_ms_per_s"`
	ContainerdS    float64   `json:"containerd_cpu_s"`
	ClientS        float64   `json:"client_cpu_s"`
	ShimPSSKiB     int64     `json:"shim_pss_kib_total"`
	LoadStart      string    `json:"load_start"`
	LoadEnd        string    `json:"load_end"`
	LatenciesMs    []float64 `json:"latencies_ms"`
}

// runHandler starts the pods of `handler`, probes them for the window, measures, and
// tears them down (also on error).
func runHandler(rt *criClient, c config, handler string, logRoot string) (res roundResult, err error) {
	res.Handler = handler
	t0 := time.Now()
	pods, err := startPods(rt, handler, c.Pods, c.Parallel, c.Image, logRoot)
	defer func() {
		t1 := time.Now()
		if terr := stopPods(rt, pods, c.Parallel); terr != nil && err == nil {
			err = terr
		}
		if werr := waitShimsGone(handler, 2*time.Minute); werr != nil && err == nil {
			err = werr
		}
		logf("%s: %d pods stopped and removed in %.1f s", handler, len(pods), time.Since(t1).Seconds())
	}()
	if err != nil {
		return res, err
	}
	logf("%s: %d pods started in %.1f s", handler, len(pods), time.Since(t0).Seconds())
	containers := make([]string, len(pods))
	for i, p := range pods {
		containers[i] = p.container
	}
	shims := pidsOf(shimBinary[handler])
	res.Shims = len(shims)
	if len(shims) != len(pods) {
		logf("%s: warning: %d shim processes for %d pods", handler, len(shims), len(pods))
	}
	// the settle period doubles as the measure of what the shims cost with no probe
	idleFrom, idleBefore := time.Now(), snapshot(shims)
	time.Sleep(c.Settle)
	idle := diff(idleBefore, snapshot(shims))
	res.IdleShimMsPerS = idle.Own * 1000 / time.Since(idleFrom).Seconds()
	ctdPid, _ := strconv.Atoi(os.Getenv("CRI_CTD_PID"))
	res.LoadStart = loadavg()
	ctdBefore, _ := readCPU(ctdPid)
	clientBefore := selfCPU()
	before := snapshot(shims)
	out := runProbes(rt, containers, probePlan{
		Interval: c.Interval, Window: c.Window, Timeout: c.Timeout, Cmd: c.Cmd, MaxInFlight: c.MaxInFlight,
	})
	after := snapshot(pidsOf(shimBinary[handler]))
	ctdAfter, _ := readCPU(ctdPid)
	res.ClientS = selfCPU() - clientBefore
	res.LoadEnd = loadavg()
	res.ShimCPU = diff(before, after)
	res.ContainerdS = ctdAfter.Own - ctdBefore.Own
	for pid := range after {
		if k, err := pssKiB(pid); err == nil {
			res.ShimPSSKiB += k
		}
	}
	res.WindowS = out.Elapsed.Seconds()
	res.ProbesPlan = len(containers) * int((c.Window+c.Interval-1)/c.Interval)
	res.Skipped = out.Skipped
	res.FirstError = out.ErrFirst
	var all, early, late, lags []time.Duration
	for _, s := range out.Samples {
		if s.Failed {
			res.ProbesFailed++
			continue
		}
		all = append(all, s.Latency)
		lags = append(lags, s.Lag)
		if s.At < c.Window/2 {
			early = append(early, s.Latency)
		} else {
			late = append(late, s.Latency)
		}
		res.LatenciesMs = append(res.LatenciesMs, float64(s.Latency.Microseconds())/1000)
	}
	res.ProbesDone = len(out.Samples)
	res.Latency, res.LatencyEarly, res.LatencyLate, res.Lag = statsOf(all), statsOf(early), statsOf(late), statsOf(lags)
	logf("%s: %d probes (%d failed, %d ticks skipped) in %.1f s; p50 %.1f ms p99 %.1f ms; shims %.2f s CPU, their children %.2f s, containerd %.2f s; load %s -> %s",
		handler, res.ProbesDone, res.ProbesFailed, res.Skipped, res.WindowS, res.Latency.P50, res.Latency.P99,
		res.ShimCPU.Own, res.ShimCPU.Children, res.ContainerdS, res.LoadStart, res.LoadEnd)
	return res, nil
}

// waitShimsGone waits until no shim process of `handler` is left (containerd reaps a
// shim after the last container of its pod is deleted), so the next handler's window
// does not share the machine with them.
func waitShimsGone(handler string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		left := pidsOf(shimBinary[handler])
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d shim processes still running %v after teardown", handler, len(left), limit)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "execprobe %s: "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}

func main() {
	c, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "execprobe:", err)
		os.Exit(2)
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "execprobe: FAILED:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	rt, conn, err := dial(c.Endpoint)
	if err != nil {
		return err
	}
	defer conn.Close()
	m := machineInfo(rt)
	logf("%d pods per handler, each probed every %.2f s (%.1f probes/s) for %.0f s, %d round(s); machine %s",
		c.Pods, c.IntervalS, float64(c.Pods)/c.IntervalS, c.WindowS, c.Rounds, m.String())
	if err := pullImage(rt, c.Image); err != nil {
		return err
	}
	logRoot, err := os.MkdirTemp("", "execprobe-logs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(logRoot)
	var results []roundResult
	for round := 1; round <= c.Rounds; round++ {
		order := rotate(c.Handlers, round-1)
		for pos, h := range order {
			r, err := runHandler(rt, c, h, filepath.Join(logRoot, fmt.Sprintf("r%d", round)))
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round, h, err)
			}
			r.Round, r.Position = round, pos+1
			results = append(results, r)
		}
	}
	rep := summarize(c, m, results)
	fmt.Print(rep.table())
	data, err := json.MarshalIndent(map[string]any{
		"config": c, "machine": m, "summary": rep.Handlers, "ratios": rep.Ratios, "rounds": results,
	}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(c.Output, append(data, '\n'), 0o644); err != nil {
		return err
	}
	logf("results in %s", c.Output)
	return nil
}

func rotate(s []string, k int) []string {
	out := make([]string, len(s))
	for i := range s {
		out[i] = s[(i+k)%len(s)]
	}
	return out
}

// machine is where the figures were taken.
type machine struct {
	Date       string `json:"date"`
	CPUs       int    `json:"cpus"`
	Kernel     string `json:"kernel"`
	Cgroup     string `json:"cgroup"`
	Containerd string `json:"containerd"`
	Load       string `json:"load_at_start"`
}

func (m machine) String() string {
	return fmt.Sprintf("%d CPUs, kernel %s, cgroup %s, containerd %s, load %s",
		m.CPUs, m.Kernel, m.Cgroup, m.Containerd, m.Load)
}

func machineInfo(rt *criClient) machine {
	m := machine{Date: time.Now().UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(), Load: loadavg()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.Cgroup = "v1"
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		m.Cgroup = "v2"
	} else if _, err := os.Stat("/sys/fs/cgroup/unified"); err == nil {
		m.Cgroup = "v1 (hybrid)"
	}
	ctx, cancel := contextWithTimeout(10 * time.Second)
	defer cancel()
	if v, err := rt.runtime.Version(ctx, &cri.VersionRequest{}); err == nil {
		m.Containerd = v.RuntimeVersion
	}
	return m
}

package main

// The probe schedule: like kubelet's prober, one worker per container, each probing its
// container once per interval and never two probes of one container at once; the workers
// start spread evenly over the first interval. A probe that outlasts the interval makes
// its worker skip the ticks it missed (kubelet's ticker drops them too): skipped ticks,
// and starts later than planned, are what a backlog looks like.

import (
	"context"
	"sort"
	"strconv"
	"sync"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// sample is one probe as the client saw it.
type sample struct {
	At      time.Duration // start, from the window's start
	Latency time.Duration // the ExecSync call, request to reply
	Lag     time.Duration // how much later than planned it started
	Failed  bool          // an RPC error, a timeout or a non-zero exit code
}

// probePlan is what runProbes does.
type probePlan struct {
	Interval    time.Duration // per container
	Window      time.Duration // probes are started while the window lasts
	Timeout     time.Duration // ExecSync's own timeout (kubelet's probe timeoutSeconds)
	Cmd         []string
	MaxInFlight int // probes in flight at once, over all containers
}

// probeOutcome is what the workers did over the window.
type probeOutcome struct {
	Samples  []sample
	Skipped  int           // ticks skipped because the container's previous probe was still running
	Elapsed  time.Duration // window start to the last probe's reply
	ErrFirst string        // the first failure's message, if any
}

// runProbes probes every container in `containers` per `plan` and returns when the last
// probe has replied. Each worker keeps its own samples; they are merged at the end.
func runProbes(rt *criClient, containers []string, plan probePlan) probeOutcome {
	type workerResult struct {
		samples []sample
		skipped int
		errMsg  string
	}
	results := make([]workerResult, len(containers))
	sem := make(chan struct{}, plan.MaxInFlight)
	start := time.Now()
	end := start.Add(plan.Window)
	var wg sync.WaitGroup
	for i, id := range containers {
		phase := time.Duration(int64(plan.Interval) * int64(i) / int64(len(containers)))
		wg.Add(1)
		go func(i int, id string, next time.Time) {
			defer wg.Done()
			r := &results[i]
			r.samples = make([]sample, 0, int(plan.Window/plan.Interval)+1)
			for next.Before(end) {
				time.Sleep(time.Until(next))
				sem <- struct{}{}
				began := time.Now()
				failed, msg := probeOnce(rt, id, plan)
				latency := time.Since(began)
				<-sem
				r.samples = append(r.samples, sample{
					At: began.Sub(start), Latency: latency, Lag: began.Sub(next), Failed: failed,
				})
				if failed && r.errMsg == "" {
					r.errMsg = msg
				}
				next = next.Add(plan.Interval)
				for now := time.Now(); next.Before(now); next = next.Add(plan.Interval) {
					if next.Before(end) {
						r.skipped++
					}
				}
			}
		}(i, id, start.Add(phase))
	}
	wg.Wait()
	out := probeOutcome{Elapsed: time.Since(start)}
	for _, r := range results {
		out.Samples = append(out.Samples, r.samples...)
		out.Skipped += r.skipped
		if out.ErrFirst == "" {
			out.ErrFirst = r.errMsg
		}
	}
	sort.Slice(out.Samples, func(a, b int) bool { return out.Samples[a].At < out.Samples[b].At })
	return out
}

// probeOnce runs the probe command in container `id` through CRI's ExecSync.
func probeOnce(rt *criClient, id string, plan probePlan) (failed bool, msg string) {
	// the RPC deadline leaves containerd time to report its own timeout first
	ctx, cancel := context.WithTimeout(context.Background(), plan.Timeout+10*time.Second)
	defer cancel()
	resp, err := rt.runtime.ExecSync(ctx, &cri.ExecSyncRequest{
		ContainerId: id, Cmd: plan.Cmd, Timeout: int64(plan.Timeout / time.Second),
	})
	if err != nil {
		return true, err.Error()
	}
	if resp.ExitCode != 0 {
		return true, "exit code " + strconv.Itoa(int(resp.ExitCode)) + ": " + string(resp.Stderr)
	}
	return false, ""
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.999999) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(sorted) {
		rank = len(sorted) - 1
	}
	return sorted[rank]
}

// latencyStats are the percentiles of a set of durations, in ms.
type latencyStats struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

func statsOf(d []time.Duration) latencyStats {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	return latencyStats{
		N: len(s), P50: ms(percentile(s, 50)), P90: ms(percentile(s, 90)),
		P99: ms(percentile(s, 99)), Max: ms(percentile(s, 100)),
	}
}

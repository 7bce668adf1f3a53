package main

// The side-by-side summary: every round of a handler pooled (probes and CPU summed,
// latency percentiles over all its probes), and the ratios of the second handler to the
// first (tether / runc with the default -handlers).

import (
	"context"
	"fmt"
	"strings"
	"time"
)

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// handlerSummary is one handler over all rounds. CPU figures are seconds per 1,000
// probes done.
type handlerSummary struct {
	Handler          string       `json:"handler"`
	Rounds           int          `json:"rounds"`
	ProbesDone       int          `json:"probes_done"`
	ProbesFailed     int          `json:"probes_failed"`
	Skipped          int          `json:"ticks_skipped"`
	RatePerS         float64      `json:"probes_per_s"`
	Latency          latencyStats `json:"latency"`
	LagP99Ms         float64      `json:"start_lag_p99_ms"`
	EarlyP50Ms       float64      `json:"latency_p50_first_half_ms"`
	LateP50Ms        float64      `json:"latency_p50_second_half_ms"`
	ShimCPUPer1k     float64      `json:"shim_cpu_s_per_1000"`
	ChildrenCPUPer1k float64      `json:"shim_children_cpu_s_per_1000"`
	CtdCPUPer1k      float64      `json:"containerd_cpu_s_per_1000"`
	ClientCPUPer1k   float64      `json:"client_cpu_s_per_1000"`
	ShimPSSKiB       int64        `json:"shim_pss_kib_total"`
	IdleShimMsPerS   float64      `json:"idle_shim_cpu_ms_per_s"`
	Shims            int          `json:"shims"`
	Loads            []string     `json:"loads"`
}

type report struct {
	Config   config             `json:"-"`
	Machine  machine            `json:"-"`
	Handlers []handlerSummary   `json:"handlers"`
	Ratios   map[string]float64 `json:"ratios"`
}

func summarize(c config, m machine, rounds []roundResult) report {
	rep := report{Config: c, Machine: m, Ratios: map[string]float64{}}
	for _, h := range c.Handlers {
		s := handlerSummary{Handler: h}
		var lat, lag, early, late []time.Duration
		var shim, children, ctd, client, window float64
		for _, r := range rounds {
			if r.Handler != h {
				continue
			}
			s.Rounds++
			s.ProbesDone += r.ProbesDone
			s.ProbesFailed += r.ProbesFailed
			s.Skipped += r.Skipped
			shim += r.ShimCPU.Own
			children += r.ShimCPU.Children
			ctd += r.ContainerdS
			client += r.ClientS
			window += r.WindowS
			s.ShimPSSKiB += r.ShimPSSKiB
			s.IdleShimMsPerS += r.IdleShimMsPerS / float64(countRounds(rounds, h))
			s.Shims = r.Shims
			s.Loads = append(s.Loads, r.LoadStart+" -> "+r.LoadEnd)
			for _, ms := range r.LatenciesMs {
				lat = append(lat, time.Duration(ms*float64(time.Millisecond)))
			}
			lag = append(lag, time.Duration(r.Lag.P99*float64(time.Millisecond)))
			early = append(early, time.Duration(r.LatencyEarly.P50*float64(time.Millisecond)))
			late = append(late, time.Duration(r.LatencyLate.P50*float64(time.Millisecond)))
		}
		if s.Rounds == 0 || s.ProbesDone == 0 {
			rep.Handlers = append(rep.Handlers, s)
			continue
		}
		s.ShimPSSKiB /= int64(s.Rounds)
		per1k := 1000 / float64(s.ProbesDone)
		s.ShimCPUPer1k, s.ChildrenCPUPer1k = shim*per1k, children*per1k
		s.CtdCPUPer1k, s.ClientCPUPer1k = ctd*per1k, client*per1k
		s.RatePerS = float64(s.ProbesDone) / window
		s.Latency = statsOf(lat)
		s.LagP99Ms = statsOf(lag).Max
		// a backlog that grows shows as a second half slower than the first
		s.EarlyP50Ms, s.LateP50Ms = statsOf(early).P50, statsOf(late).P50
		rep.Handlers = append(rep.Handlers, s)
	}
	if len(rep.Handlers) == 2 {
		a, b := rep.Handlers[0], rep.Handlers[1]
		ratio := func(x, y float64) float64 {
			if y == 0 {
				return 0
			}
			return x / y
		}
		rep.Ratios = map[string]float64{
			"shim_cpu_per_1000": ratio(b.ShimCPUPer1k, a.ShimCPUPer1k),
			"latency_p50":       ratio(b.Latency.P50, a.Latency.P50),
			"latency_p99":       ratio(b.Latency.P99, a.Latency.P99),
			"shim_pss":          ratio(float64(b.ShimPSSKiB), float64(a.ShimPSSKiB)),
			"containerd_cpu":    ratio(b.CtdCPUPer1k, a.CtdCPUPer1k),
		}
	}
	return rep
}

// table is the human summary: one column per handler, and their ratio.
func (rep report) table() string {
	var b strings.Builder
	c := rep.Config
	fmt.Fprintf(&b, "\nexec probes at node scale, %s\n", rep.Machine.Date)
	fmt.Fprintf(&b, "machine: %s\n", rep.Machine.String())
	fmt.Fprintf(&b, "run: %d pods per handler (1 container each), each probed every %.2f s (%.1f probes/s planned) with %q for %.0f s, %d round(s), ExecSync timeout %v\n\n",
		c.Pods, c.IntervalS, float64(c.Pods)/c.IntervalS, strings.Join(c.Cmd, " "), c.WindowS, c.Rounds, c.Timeout)
	if len(rep.Handlers) == 0 {
		return b.String()
	}
	head := []string{"measure"}
	for _, h := range rep.Handlers {
		head = append(head, h.Handler)
	}
	two := len(rep.Handlers) == 2
	if two {
		head = append(head, rep.Handlers[1].Handler+"/"+rep.Handlers[0].Handler)
	}
	rows := [][]string{head}
	row := func(name string, f func(h handlerSummary) float64, format string, ratio bool) {
		r := []string{name}
		for _, h := range rep.Handlers {
			r = append(r, fmt.Sprintf(format, f(h)))
		}
		if two {
			if ratio && f(rep.Handlers[0]) != 0 {
				r = append(r, fmt.Sprintf("%.2fx", f(rep.Handlers[1])/f(rep.Handlers[0])))
			} else {
				r = append(r, "")
			}
		}
		rows = append(rows, r)
	}
	row("probes done", func(h handlerSummary) float64 { return float64(h.ProbesDone) }, "%.0f", false)
	row("probes failed", func(h handlerSummary) float64 { return float64(h.ProbesFailed) }, "%.0f", false)
	row("ticks skipped (backlog)", func(h handlerSummary) float64 { return float64(h.Skipped) }, "%.0f", false)
	row("probes/s done", func(h handlerSummary) float64 { return h.RatePerS }, "%.2f", false)
	row("latency p50 (ms)", func(h handlerSummary) float64 { return h.Latency.P50 }, "%.1f", true)
	row("latency p90 (ms)", func(h handlerSummary) float64 { return h.Latency.P90 }, "%.1f", true)
	row("latency p99 (ms)", func(h handlerSummary) float64 { return h.Latency.P99 }, "%.1f", true)
	row("latency max (ms)", func(h handlerSummary) float64 { return h.Latency.Max }, "%.1f", true)
	row("latency p50, window's 1st half (ms)", func(h handlerSummary) float64 { return h.EarlyP50Ms }, "%.1f", false)
	row("latency p50, window's 2nd half (ms)", func(h handlerSummary) float64 { return h.LateP50Ms }, "%.1f", false)
	row("start lag p99, worst round (ms)", func(h handlerSummary) float64 { return h.LagP99Ms }, "%.1f", false)
	row("shim CPU per 1,000 probes (s)", func(h handlerSummary) float64 { return h.ShimCPUPer1k }, "%.2f", true)
	row("idle shims, CPU before the window (ms/s)", func(h handlerSummary) float64 { return h.IdleShimMsPerS }, "%.1f", true)
	row("runc + probe processes per 1,000 (s)", func(h handlerSummary) float64 { return h.ChildrenCPUPer1k }, "%.2f", true)
	row("containerd CPU per 1,000 (s)", func(h handlerSummary) float64 { return h.CtdCPUPer1k }, "%.2f", true)
	row("client CPU per 1,000 (s)", func(h handlerSummary) float64 { return h.ClientCPUPer1k }, "%.2f", false)
	row("shim processes", func(h handlerSummary) float64 { return float64(h.Shims) }, "%.0f", false)
	row("shims' total PSS (KiB)", func(h handlerSummary) float64 { return float64(h.ShimPSSKiB) }, "%.0f", true)
	widths := make([]int, len(head))
	for _, r := range rows {
		for i, cell := range r {
			widths[i] = max(widths[i], len(cell))
		}
	}
	for n, r := range rows {
		for i, cell := range r {
			if i == 0 {
				fmt.Fprintf(&b, "%-*s", widths[i], cell)
			} else {
				fmt.Fprintf(&b, "  %*s", widths[i], cell)
			}
		}
		b.WriteString("\n")
		if n == 0 {
			b.WriteString(strings.Repeat("-", sum(widths)+2*(len(widths)-1)) + "\n")
		}
	}
	for _, h := range rep.Handlers {
		fmt.Fprintf(&b, "load (1/5/15 min) over %s's windows: %s\n", h.Handler, strings.Join(h.Loads, "; "))
	}
	return b.String()
}

func sum(v []int) int {
	t := 0
	for _, x := range v {
		t += x
	}
	return t
}

func countRounds(rounds []roundResult, handler string) int {
	n := 0
	for _, r := range rounds {
		if r.Handler == handler {
			n++
		}
	}
	return n
}

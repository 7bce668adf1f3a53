package main

// CPU and memory of the processes that serve the probes, read from /proc. execprobe runs
// inside the CRI bed's PID namespace (tests/scripts/cri/env.sh mounts its own /proc), so
// every shim it sees is the bed's: other work on the machine is not counted.

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every Linux the
// project runs on (x86_64 and arm64 kernels export 100 whatever CONFIG_HZ is).
const clockTicks = 100

// cpuTimes are one process's CPU seconds: its own (all its threads, also exited ones),
// and those of the children it has waited for (for a shim: runc and the exec'd processes
// it reaped).
type cpuTimes struct {
	Own      float64
	Children float64
}

// readCPU reads /proc/PID/stat's utime+stime and cutime+cstime.
func readCPU(pid int) (cpuTimes, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpuTimes{}, err
	}
	// comm (field 2) may hold spaces and parentheses: the fields after it follow the last ')'
	s := string(data)
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return cpuTimes{}, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(s[end+1:])
	// f[0] is field 3 (state): utime..cstime are fields 14..17
	if len(f) < 15 {
		return cpuTimes{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	var v [4]float64
	for i := range v {
		n, err := strconv.ParseUint(f[11+i], 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("/proc/%d/stat field %d: %w", pid, 14+i, err)
		}
		v[i] = float64(n) / clockTicks
	}
	return cpuTimes{Own: v[0] + v[1], Children: v[2] + v[3]}, nil
}

// pssKiB reads the process's proportional set size from /proc/PID/smaps_rollup.
func pssKiB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "Pss:" {
			return strconv.ParseInt(fields[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/smaps_rollup: no Pss", pid)
}

// pidsOf lists the processes whose executable's file name is `name` (a long-running
// shim re-executes itself, so its exe is the shim binary, never a wrapper).
func pidsOf(name string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			continue
		}
		if filepath.Base(strings.TrimSuffix(exe, " (deleted)")) == name {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cpuSnapshot is the CPU times of a set of processes at one instant, by pid.
type cpuSnapshot map[int]cpuTimes

func snapshot(pids []int) cpuSnapshot {
	s := cpuSnapshot{}
	for _, pid := range pids {
		if t, err := readCPU(pid); err == nil {
			s[pid] = t
		}
	}
	return s
}

// cpuDelta is what a set of processes spent between two snapshots. A process present
// only in the later one counts whole; one gone by then is lost (its CPU went to its
// parent's children times) and is counted in Vanished, so the caller can say so.
type cpuDelta struct {
	Own      float64 `json:"own_s"`
	Children float64 `json:"children_s"`
	Vanished int     `json:"vanished"`
	Appeared int     `json:"appeared"`
}

func diff(before, after cpuSnapshot) cpuDelta {
	var d cpuDelta
	for pid, a := range after {
		b, ok := before[pid]
		if !ok {
			d.Appeared++
		}
		d.Own += a.Own - b.Own
		d.Children += a.Children - b.Children
	}
	for pid := range before {
		if _, ok := after[pid]; !ok {
			d.Vanished++
		}
	}
	return d
}

package kdsbench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// cpuSample is the CPU time (user + system) used so far by this process
// and by each of its live child processes (the plugins), read on Linux from
// getrusage and /proc. Children maps a child's pid to its CPU time; it is
// nil where /proc cannot be read, and then only this process is counted.
type cpuSample struct {
	self     time.Duration
	children map[int]time.Duration
}

// clockTick is the unit of the CPU times in /proc/<pid>/stat (USER_HZ,
// which Linux fixes at 100 for user space on every architecture).
const clockTick = 10 * time.Millisecond

// sampleCPU reads this process's CPU time and that of its live children.
func sampleCPU() cpuSample {
	var ru syscall.Rusage
	var s cpuSample
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	s.children = childCPU("/proc", os.Getpid())
	return s
}

// since is the CPU time used between before and s: this process's, plus
// each child's growth (a child started in between counts in full, one that
// ended in between is missed: sample before stopping the processes).
func (s cpuSample) since(before cpuSample) time.Duration {
	d := s.self - before.self
	for pid, t := range s.children {
		d += t - before.children[pid]
	}
	return d
}

// childrenSince is the part of since used by the child processes.
func (s cpuSample) childrenSince(before cpuSample) time.Duration {
	var d time.Duration
	for pid, t := range s.children {
		d += t - before.children[pid]
	}
	return d
}

// childCPU returns the CPU time of every process under proc whose parent
// is ppid, or nil when proc cannot be listed. A process that exits while
// it is read is skipped.
func childCPU(proc string, ppid int) map[int]time.Duration {
	stats, err := filepath.Glob(filepath.Join(proc, "[0-9]*", "stat"))
	if err != nil || len(stats) == 0 {
		return nil
	}
	out := map[int]time.Duration{}
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, parent, cpu, err := parseStat(b)
		if err != nil || parent != ppid {
			continue
		}
		out[pid] = cpu
	}
	return out
}

// parseStat reads the pid, parent pid and user + system CPU time from the
// contents of /proc/<pid>/stat ("pid (comm) state ppid ... utime stime ...",
// where comm may itself hold spaces and parentheses).
func parseStat(b []byte) (pid, ppid int, cpu time.Duration, err error) {
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return 0, 0, 0, fmt.Errorf("stat %q: no command name", b)
	}
	if pid, err = strconv.Atoi(string(bytes.TrimSpace(b[:open]))); err != nil {
		return 0, 0, 0, fmt.Errorf("stat pid: %w", err)
	}
	// After the command: state(0) ppid(1) ... utime(11) stime(12).
	f := bytes.Fields(b[end+1:])
	if len(f) < 13 {
		return 0, 0, 0, fmt.Errorf("stat of %d: %d fields after the command name, want at least 13", pid, len(f))
	}
	if ppid, err = strconv.Atoi(string(f[1])); err != nil {
		return 0, 0, 0, fmt.Errorf("stat of %d: ppid: %w", pid, err)
	}
	var ticks int64
	for _, x := range f[11:13] {
		n, err := strconv.ParseInt(string(x), 10, 64)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("stat of %d: cpu time: %w", pid, err)
		}
		ticks += n
	}
	return pid, ppid, time.Duration(ticks) * clockTick, nil
}

package kdsbench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kds-engine/kds-engine/engine"
)

// MemoryConfig sizes the memory mode.
type MemoryConfig struct {
	N    int // resources (default 100k)
	Size int // spec bytes (default 1 KiB)
	// ZoneCommand, if set, runs the zone in a child process: it is called
	// with the zone's Config as JSON and returns the command to start (see
	// ZoneProcess). Empty runs the zone in this process, and its heap then
	// counts too.
	ZoneCommand func(configJSON string) *exec.Cmd
}

// Memory measures global's heap (after GC) and RSS per resource with N
// resources loaded in bbolt and synced to one zone. The baseline is the
// same process's heap and RSS before loading.
func Memory(ctx context.Context, o Options, c MemoryConfig) (*Report, error) {
	o = o.withDefaults()
	if c.N <= 0 {
		c.N = 100000
	}
	if c.Size <= 0 {
		c.Size = 1024
	}
	r := newReport("memory", "≤ 3 KiB of global heap per synced resource (1 KiB specs, bbolt)",
		"state", "heap MiB", "RSS MiB", "heap B/resource", "RSS B/resource")
	v, err := newEnv(o.PluginsDir, o.Log)
	if err != nil {
		return nil, err
	}
	defer v.close()
	g, err := v.startGlobal("global", nil)
	if err != nil {
		return nil, err
	}
	defer g.stop()
	h0, rss0 := heapAndRSS()
	r.row("global started, empty (baseline)", mib(h0), mib(rss0), "", "")

	o.Progress.Start("memory: load global", c.N)
	rs := makeResources(policyType, "p", c.N, c.Size)
	if err := g.e.BulkLoad(ctx, rs); err != nil {
		return nil, err
	}
	rs = nil
	o.Progress.Finish()
	h1, rss1 := heapAndRSS()
	r.row(fmt.Sprintf("%d loaded", c.N), mib(h1), mib(rss1), perRes(h1, h0, c.N), perRes(rss1, rss0, c.N))

	zc, err := v.zoneConfig(g, "zone-1", localAddr(g.e.KDSAddr()), "")
	if err != nil {
		return nil, err
	}
	where := "in this process (its heap is included)"
	if c.ZoneCommand != nil {
		where = "in a child process"
		zc.PluginsDir, zc.APIAddress = v.plugins, "127.0.0.1:0"
		b, err := json.Marshal(zc)
		if err != nil {
			return nil, err
		}
		cmd := c.ZoneCommand(string(b))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start zone process: %w", err)
		}
		defer func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}()
	} else {
		z, err := v.start(zc)
		if err != nil {
			return nil, err
		}
		defer z.stop()
	}
	o.Progress.Start("memory: sync to the zone", c.N)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		gc, _ := g.e.Insights().Get("zone-1")
		ts := gc.Types[policyType]
		o.Progress.Set(int(ts.ResourcesSent))
		if gc.Online && ts.ResourcesSent >= uint64(c.N) && ts.ResponsesACKed == ts.ResponsesSent {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("zone did not ACK %d resources within 3 minutes (sent %d)", c.N, ts.ResourcesSent)
		}
		time.Sleep(20 * time.Millisecond)
	}
	o.Progress.Finish()
	h2, rss2 := heapAndRSS()
	r.row(fmt.Sprintf("%d loaded and synced to 1 zone", c.N), mib(h2), mib(rss2), perRes(h2, h0, c.N), perRes(rss2, rss0, c.N))
	r.Figures["n"] = float64(c.N)
	r.Figures["heap_baseline_bytes"] = float64(h0)
	r.Figures["rss_baseline_bytes"] = float64(rss0)
	r.Figures["heap_loaded_bytes"] = float64(h1)
	r.Figures["heap_synced_bytes"] = float64(h2)
	r.Figures["rss_synced_bytes"] = float64(rss2)
	r.Figures["heap_per_resource_bytes"] = float64(int64(h2)-int64(h0)) / float64(c.N)
	r.Figures["rss_per_resource_bytes"] = float64(int64(rss2)-int64(rss0)) / float64(c.N)
	r.Pass = r.Figures["heap_per_resource_bytes"] <= 3*1024
	r.note("the zone runs %s; heap is runtime.MemStats.HeapAlloc after two GCs; RSS is VmRSS and includes bbolt's mapped pages that were touched", where)
	return r, nil
}

// resetPeakRSS resets this process's VmHWM to its current resident set
// (Linux, /proc/self/clear_refs); where that is refused the peak stays the
// process's whole-life peak.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func perRes(now, base uint64, n int) float64 { return float64(int64(now)-int64(base)) / float64(n) }

// heapAndRSS collects garbage, returns memory to the OS and reads the live
// heap and the resident set.
func heapAndRSS() (heap, rss uint64) {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, readRSS()
}

func readRSS() uint64 { return readStatus("self", "VmRSS:") }

// readStatus reads a size field (such as "VmRSS:" or "VmHWM:") of process
// pid ("self" for this one) from /proc, in bytes; 0 if it cannot.
func readStatus(pid, field string) uint64 {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// ZoneProcess runs a zone engine from a JSON engine.Config until ctx ends:
// the body of the child process Memory starts.
func ZoneProcess(ctx context.Context, configJSON string, log hclog.Logger) error {
	var cfg engine.Config
	if err := json.Unmarshal([]byte(configJSON), &cfg); err != nil {
		return fmt.Errorf("zone config: %w", err)
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	e, err := engine.New(cfg, log)
	if err != nil {
		return err
	}
	return e.Run(ctx)
}

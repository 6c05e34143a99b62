package boltstore

import (
	"bufio"
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/storetest"
)

// wchar is the bytes this process has passed to write-like syscalls so
// far (/proc/self/io), or -1 where that file is missing.
func wchar(b *testing.B) int64 {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "wchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	return -1
}

// userSys is the process's user and system CPU time so far.
func userSys(b *testing.B) (user, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// BenchmarkSyncWrites applies 100k resources of about 1 KiB in key order in
// 30 batches, the shape of a zone's initial sync, with fsync, and reports
// what the store wrote: bytes per resource (wchar: bbolt's pages, its meta
// pages), write calls per commit (one per page), the file's size per
// resource, and CPU per resource (all, and user and system separately,
// those two including a GC before each run). owned: the batches are
// Owned, as a sync's are.
func BenchmarkSyncWrites(b *testing.B) {
	b.Run("first", func(b *testing.B) { benchSyncWrites(b, nil, false) })
	b.Run("owned", func(b *testing.B) { benchSyncWrites(b, nil, true) })
	// A second zone's resources sort before the first's: its sync inserts
	// a key range in front of what the bucket holds instead of appending.
	b.Run("before-stored", func(b *testing.B) {
		benchSyncWrites(b, storetest.Batch(100_000, 1024, "zone-b", "1").Put, false)
	})
}

func benchSyncWrites(b *testing.B, stored []*resource.Resource, owned bool) {
	const total, batch = 100_000, 3_334
	all := storetest.Batch(total, 1024, "zone-a", "1")
	var batches []store.Batch
	for i := 0; i < total; i += batch {
		batches = append(batches, store.Batch{Put: all.Put[i:min(i+batch, total)], Owned: owned})
	}
	var m meter
	var bytes, writes, commits int64
	var fileSize int64
	var user, sys time.Duration
	for b.Loop() {
		b.StopTimer()
		s, err := Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		if len(stored) > 0 {
			if _, err := s.Apply(context.Background(), store.Batch{Put: stored}); err != nil {
				b.Fatal(err)
			}
		}
		st0 := s.db.Stats()
		w0 := wchar(b)
		b.StartTimer()
		u0, s0 := userSys(b)
		m.measure(b, func() {
			for _, bt := range batches {
				if _, err := s.Apply(context.Background(), bt); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.StopTimer()
		u1, s1 := userSys(b)
		user += u1 - u0
		sys += s1 - s0
		st := s.db.Stats()
		bytes += wchar(b) - w0
		writes += int64(st.TxStats.GetWrite() - st0.TxStats.GetWrite())
		commits += int64(len(batches))
		fi, err := os.Stat(s.Path())
		if err != nil {
			b.Fatal(err)
		}
		fileSize = fi.Size()
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(float64(bytes)/n/total, "B-written/res")
	b.ReportMetric(float64(writes)/float64(commits), "writes/commit")
	b.ReportMetric(float64(m.cpu.Microseconds())/n/total, "cpu-µs/res")
	b.ReportMetric(float64(fileSize)/total, "file-B/res")
	b.ReportMetric(float64(user.Microseconds())/n/total, "user-µs/res")
	b.ReportMetric(float64(sys.Microseconds())/n/total, "sys-µs/res")
}

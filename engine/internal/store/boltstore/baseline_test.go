package boltstore

import (
	"context"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/storetest"
)

// The benchmarks here compare the store with a baseline of bare bbolt doing
// the same disk work (same options and page size, the same pre-encoded keys
// and values, one transaction per batch, fsync on) without validation,
// copying, encoding or events. Each iteration runs the baseline and the
// store back to back, so both see the same machine load; they report
// wall-clock and CPU milliseconds of each and the ratio store/baseline.

func openRaw(b *testing.B, noSync bool) *bolt.DB {
	db, err := bolt.Open(filepath.Join(b.TempDir(), FileName), 0o600, boltOptions(config{
		lockTimeout: time.Second, noSync: noSync, initialMmap: DefaultInitialMmapSize,
	}))
	if err != nil {
		b.Fatal(err)
	}
	return db
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type meter struct{ wall, cpu time.Duration }

func (m *meter) measure(b *testing.B, fn func()) {
	runtime.GC()
	w0, c0 := time.Now(), cpuTime(b)
	fn()
	m.wall += time.Since(w0)
	m.cpu += cpuTime(b) - c0
}

func report(b *testing.B, n int, unit string, div time.Duration, store, base meter) {
	f := func(d time.Duration) float64 { return float64(d) / float64(div) / float64(n) }
	b.ReportMetric(f(store.wall), "store-"+unit)
	b.ReportMetric(f(base.wall), "bolt-"+unit)
	b.ReportMetric(float64(store.wall)/float64(base.wall), "wall-ratio")
	b.ReportMetric(f(store.cpu), "store-cpu-"+unit)
	b.ReportMetric(f(base.cpu), "bolt-cpu-"+unit)
	b.ReportMetric(float64(store.cpu)/float64(base.cpu), "cpu-ratio")
}

func BenchmarkApplyVsBolt(b *testing.B) {
	for _, c := range storetest.ApplySizes {
		b.Run(c.Name, func(b *testing.B) {
			all := storetest.Batch(c.Total, 1024, "z1", "1")
			keys := make([][]byte, c.Total)
			vals := make([][]byte, c.Total)
			for i, r := range all.Put {
				keys[i], vals[i] = itemKey(r.Key()), encode(r)
			}
			ctx := context.Background()
			var st, base meter
			n := 0
			for b.Loop() {
				n++
				db := openRaw(b, false)
				base.measure(b, func() {
					for i := 0; i < c.Total; i += c.Batch {
						err := db.Update(func(tx *bolt.Tx) error {
							bk, err := tx.CreateBucketIfNotExists([]byte("Dataplane"))
							if err != nil {
								return err
							}
							bk.FillPercent = 0.9 // as the store does for appends
							for j := i; j < min(i+c.Batch, c.Total); j++ {
								if err := bk.Put(keys[j], vals[j]); err != nil {
									return err
								}
							}
							return nil
						})
						if err != nil {
							b.Fatal(err)
						}
					}
				})
				_ = db.Close()

				s, err := Open(b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				st.measure(b, func() {
					for i := 0; i < c.Total; i += c.Batch {
						if _, err := s.Apply(ctx, store.Batch{Put: all.Put[i:min(i+c.Batch, c.Total)]}); err != nil {
							b.Fatal(err)
						}
					}
				})
				_ = s.Close()
			}
			report(b, n, "ms", time.Millisecond, st, base)
		})
	}
}

// BenchmarkUpdateVsBolt: with 100k resources stored, one Update until a
// watcher goroutine has its event, against one bare bbolt put of the same
// value. The difference is the store's own latency on top of the commit.
func BenchmarkUpdateVsBolt(b *testing.B) {
	for _, c := range []struct {
		name   string
		noSync bool
	}{{"fsync", false}, {"nosync", true}} {
		b.Run("stored=100k/"+c.name, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			all := storetest.Batch(100_000, 1024, "", "1")

			db := openRaw(b, c.noSync)
			defer db.Close()
			err := db.Update(func(tx *bolt.Tx) error {
				bk, err := tx.CreateBucketIfNotExists([]byte("Dataplane"))
				if err != nil {
					return err
				}
				for _, r := range all.Put {
					if err := bk.Put(itemKey(r.Key()), encode(r)); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}

			s, err := Open(b.TempDir(), WithNoSync(c.noSync))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Apply(ctx, all); err != nil {
				b.Fatal(err)
			}
			w, err := s.Watch(ctx)
			if err != nil {
				b.Fatal(err)
			}
			seen, done := storetest.Revisions(ctx, w, 0)

			r := all.Put[50_000].Clone()
			r.Version = ""
			var st, base meter
			n := 0
			for i := 0; b.Loop(); i++ {
				n++
				r.Labels = map[string]string{"i": string(rune('a' + i%26))}
				k, v := itemKey(r.Key()), encode(r)
				w0 := time.Now()
				err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("Dataplane")).Put(k, v) })
				base.wall += time.Since(w0)
				if err != nil {
					b.Fatal(err)
				}
				w0 = time.Now()
				upd, err := s.Update(ctx, r)
				if err != nil {
					b.Fatal(err)
				}
				if rev := <-seen; rev != s.Revision() {
					b.Fatalf("watcher saw revision %d, store is at %d (%s)", rev, s.Revision(), upd.Version)
				}
				st.wall += time.Since(w0)
			}
			f := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(n) }
			b.ReportMetric(f(st.wall), "store-µs")
			b.ReportMetric(f(base.wall), "bolt-µs")
			b.ReportMetric(f(st.wall-base.wall), "overhead-µs")
			cancel()
			<-done
		})
	}
}

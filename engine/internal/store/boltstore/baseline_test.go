package boltstore

import (
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kds-engine/kds-engine/engine/internal/store/storetest"
)

// The baselines measure bare bbolt doing the same disk work as the store
// (same options, same pre-encoded keys and values, one transaction per
// batch, fsync on) without cloning, encoding, events or the feed, so that
// docs/benchmarks.md can state the store's overhead as a ratio measured in
// the same run on the same (noisy) machine.

func openRaw(b *testing.B, noSync bool) *bolt.DB {
	db, err := bolt.Open(filepath.Join(b.TempDir(), FileName), 0o600, boltOptions(config{
		lockTimeout: time.Second, noSync: noSync, initialMmap: DefaultInitialMmapSize,
	}))
	if err != nil {
		b.Fatal(err)
	}
	return db
}

func BenchmarkBaselineRawBoltApply(b *testing.B) {
	for _, c := range []struct {
		name         string
		total, batch int
	}{
		{"10k/batch=10k", 10_000, 10_000},
		{"100k/batch=4k", 100_000, 4_000},
		{"100k/batch=25k", 100_000, 25_000},
		{"100k/batch=100k", 100_000, 100_000},
	} {
		b.Run(c.name, func(b *testing.B) {
			all := storetest.Batch(c.total, 1024, "z1", "1")
			keys := make([][]byte, c.total)
			vals := make([][]byte, c.total)
			for i, r := range all.Put {
				keys[i], vals[i] = itemKey(r.Key()), encode(r)
			}
			for b.Loop() {
				b.StopTimer()
				db := openRaw(b, false)
				b.StartTimer()
				for i := 0; i < c.total; i += c.batch {
					err := db.Update(func(tx *bolt.Tx) error {
						bk, err := tx.CreateBucketIfNotExists([]byte("Dataplane"))
						if err != nil {
							return err
						}
						bk.FillPercent = 0.9 // as the store does for appends
						for j := i; j < min(i+c.batch, c.total); j++ {
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
				b.StopTimer()
				_ = db.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(c.total)*float64(b.N)/b.Elapsed().Seconds(), "resources/s")
		})
	}
}

// BenchmarkBaselineRawBoltPut is one small committed put: the floor under
// the store's single-update latency.
func BenchmarkBaselineRawBoltPut(b *testing.B) {
	for _, sync := range []struct {
		name   string
		noSync bool
	}{{"fsync", false}, {"nosync", true}} {
		b.Run("stored=100k/"+sync.name, func(b *testing.B) {
			db := openRaw(b, sync.noSync)
			defer db.Close()
			all := storetest.Batch(100_000, 1024, "", "1")
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
			r := all.Put[50_000]
			k, v := itemKey(r.Key()), encode(r)
			for b.Loop() {
				err := db.Update(func(tx *bolt.Tx) error {
					return tx.Bucket([]byte("Dataplane")).Put(k, v)
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

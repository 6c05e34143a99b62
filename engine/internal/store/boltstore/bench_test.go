package boltstore_test

import (
	"testing"

	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/boltstore"
	"github.com/kds-engine/kds-engine/engine/internal/store/storetest"
)

func openBench(b *testing.B, opts ...boltstore.Option) *boltstore.Store {
	s, err := boltstore.Open(b.TempDir(), opts...)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func BenchmarkApply(b *testing.B) {
	for _, c := range storetest.ApplySizes {
		b.Run(c.Name, func(b *testing.B) {
			storetest.BenchApply(b, func(b *testing.B) store.Store { return openBench(b) }, c.Total, c.Batch)
		})
	}
}

func BenchmarkUpdateLatency(b *testing.B) {
	b.Run("stored=100k/fsync", func(b *testing.B) {
		s := openBench(b)
		defer s.Close()
		storetest.BenchUpdateLatency(b, s, 100_000)
	})
	b.Run("stored=100k/nosync", func(b *testing.B) {
		s := openBench(b, boltstore.WithNoSync(true))
		defer s.Close()
		storetest.BenchUpdateLatency(b, s, 100_000)
	})
}

func BenchmarkList(b *testing.B) {
	b.Run("stored=100k/type", func(b *testing.B) {
		s := openBench(b, boltstore.WithNoSync(true))
		defer s.Close()
		storetest.BenchList(b, s, 100_000, 50, store.Filter{Type: "Dataplane"})
	})
	b.Run("stored=100k/type+zone", func(b *testing.B) {
		s := openBench(b, boltstore.WithNoSync(true))
		defer s.Close()
		storetest.BenchList(b, s, 100_000, 50, store.Filter{Type: "Dataplane", Zone: "zone-07"})
	})
}

// BenchmarkConcurrentApply: 50 writers at once, with group commit and, as
// the baseline, with every write committed alone.
func BenchmarkConcurrentApply(b *testing.B) {
	b.Run("group", func(b *testing.B) {
		s := openBench(b)
		defer s.Close()
		storetest.BenchConcurrentApply(b, s, 50, 10, 50)
	})
	b.Run("serial", func(b *testing.B) {
		s := openBench(b)
		defer s.Close()
		boltstore.DisableGroupCommitForTest(s)
		storetest.BenchConcurrentApply(b, s, 50, 10, 50)
	})
}

// BenchmarkSmallApply: batches of 10 new resources into a zone that holds
// 100k, without and with Batch.Limit. The limit's count is kept in memory,
// so the two cost the same after the first limited Apply.
func BenchmarkSmallApply(b *testing.B) {
	for _, c := range []struct {
		name  string
		limit int
	}{{"stored=100k/nolimit", 0}, {"stored=100k/limit", 1 << 30}} {
		b.Run(c.name, func(b *testing.B) {
			s := openBench(b, boltstore.WithNoSync(true))
			defer s.Close()
			storetest.BenchSmallApply(b, s, 100_000, 10, c.limit)
		})
	}
}

// BenchmarkVersions: what a session start reads for a zone holding 64
// resources of 1 MiB: List copies every spec, Versions reads only keys and
// versions.
func BenchmarkVersions(b *testing.B) {
	for _, useList := range []bool{true, false} {
		name := "Versions"
		if useList {
			name = "List"
		}
		b.Run("1MiB-x64/"+name, func(b *testing.B) {
			s := openBench(b, boltstore.WithNoSync(true))
			defer s.Close()
			storetest.BenchVersions(b, s, 64, 1<<20, useList)
		})
	}
}

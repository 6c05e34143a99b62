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

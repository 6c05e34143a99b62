package pgstore_test

import (
	"context"
	"testing"

	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/pgstore"
	"github.com/kds-engine/kds-engine/engine/internal/store/storetest"
	"github.com/kds-engine/kds-engine/internal/testsupport/pgtest"
)

// The same benchmarks as boltstore's, each on a database of its own on
// the test server (see pgtest). PostgreSQL's own settings (fsync,
// synchronous_commit, shared_buffers) decide much of the result: the
// figures in docs/benchmarks.md name the server they ran on.

func openBench(b *testing.B) *pgstore.Store {
	s, err := pgstore.Open(context.Background(), pgtest.NewDatabase(b))
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
	s := openBench(b)
	defer s.Close()
	storetest.BenchUpdateLatency(b, s, 100_000)
}

func BenchmarkList(b *testing.B) {
	b.Run("stored=100k/type", func(b *testing.B) {
		s := openBench(b)
		defer s.Close()
		storetest.BenchList(b, s, 100_000, 50, store.Filter{Type: "Dataplane"})
	})
	b.Run("stored=100k/type+zone", func(b *testing.B) {
		s := openBench(b)
		defer s.Close()
		storetest.BenchList(b, s, 100_000, 50, store.Filter{Type: "Dataplane", Zone: "zone-07"})
	})
}

// BenchmarkConcurrentApply: 50 writers at once. Commits serialise on the
// counter row, so this measures the commit rate one database sustains.
func BenchmarkConcurrentApply(b *testing.B) {
	s := openBench(b)
	defer s.Close()
	storetest.BenchConcurrentApply(b, s, 50, 10, 50)
}

// BenchmarkSmallApply: batches of 10 new resources into a zone that holds
// 100k, without and with Batch.Limit (counted with count(*) in the
// commit).
func BenchmarkSmallApply(b *testing.B) {
	for _, c := range []struct {
		name  string
		limit int
	}{{"stored=100k/nolimit", 0}, {"stored=100k/limit", 1 << 30}} {
		b.Run(c.name, func(b *testing.B) {
			s := openBench(b)
			defer s.Close()
			storetest.BenchSmallApply(b, s, 100_000, 10, c.limit)
		})
	}
}

func BenchmarkVersions(b *testing.B) {
	for _, useList := range []bool{true, false} {
		name := "Versions"
		if useList {
			name = "List"
		}
		b.Run("1MiB-x64/"+name, func(b *testing.B) {
			s := openBench(b)
			defer s.Close()
			storetest.BenchVersions(b, s, 64, 1<<20, useList)
		})
	}
}

package memory_test

import (
	"testing"

	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/memory"
	"github.com/kds-engine/kds-engine/engine/internal/store/storetest"
)

func BenchmarkApply(b *testing.B) {
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
			storetest.BenchApply(b, func(*testing.B) store.Store { return memory.New() }, c.total, c.batch)
		})
	}
}

func BenchmarkUpdateLatency(b *testing.B) {
	s := memory.New()
	defer s.Close()
	b.Run("stored=100k", func(b *testing.B) { storetest.BenchUpdateLatency(b, s, 100_000) })
}

func BenchmarkList(b *testing.B) {
	b.Run("stored=100k/type", func(b *testing.B) {
		s := memory.New()
		defer s.Close()
		storetest.BenchList(b, s, 100_000, 50, store.Filter{Type: "Dataplane"})
	})
	b.Run("stored=100k/type+zone", func(b *testing.B) {
		s := memory.New()
		defer s.Close()
		storetest.BenchList(b, s, 100_000, 50, store.Filter{Type: "Dataplane", Zone: "zone-07"})
	})
}

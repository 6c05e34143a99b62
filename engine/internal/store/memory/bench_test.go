package memory_test

import (
	"testing"

	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/memory"
	"github.com/kds-engine/kds-engine/engine/internal/store/storetest"
)

func BenchmarkApply(b *testing.B) {
	for _, c := range storetest.ApplySizes {
		b.Run(c.Name, func(b *testing.B) {
			storetest.BenchApply(b, func(*testing.B) store.Store { return memory.New() }, c.Total, c.Batch)
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

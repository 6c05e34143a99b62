package store_test

import (
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/kds-engine/kds-engine/engine/internal/store"
)

func TestVersionerFormat(t *testing.T) {
	v := store.NewVersioner()
	assert.Regexp(t, regexp.MustCompile(`^[a-z2-7]{13}$`), v.Epoch(), "64 bits, lowercase base32, no padding")
	assert.Equal(t, v.Epoch()+"-0", v.Version(0))
	assert.Equal(t, v.Epoch()+"-18446744073709551615", v.Version(1<<64-1))
}

func TestFaultVersionerEpochPerInstance(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		e := store.NewVersioner().Epoch()
		assert.False(t, seen[e], "epoch %s drawn twice", e)
		seen[e] = true
	}
	a, b := store.NewVersioner(), store.NewVersioner()
	assert.NotEqual(t, a.Version(1), b.Version(1), "the same counter under two epochs")
}

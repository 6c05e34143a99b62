package logsafe

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestPeerValueIsBoundedAndEscaped(t *testing.T) {
	assert.Equal(t, "zone-a", Peer("zone-a"), "plain values stay as they are")
	assert.Equal(t, "", Peer(""))
	assert.Equal(t, `"zone a"`, Peer("zone a"))
	assert.Equal(t, `"line\nforged=1"`, Peer("line\nforged=1"), "no new log lines")
	assert.Equal(t, `"\x1b[31mred"`, Peer("\x1b[31mred"))

	huge := strings.Repeat("z", 8<<20)
	got := Peer(huge)
	assert.Less(t, len(got), 2*MaxPeerValue, "an 8 MiB value adds a few dozen bytes")
	assert.True(t, strings.HasPrefix(got, `"`+strings.Repeat("z", MaxPeerValue)+`"`))
	assert.Contains(t, got, "(8388544 more bytes)")

	// A cut never splits a character.
	multi := strings.Repeat("é", MaxPeerValue)
	assert.Contains(t, Peer(multi), "more bytes")
	assert.NotContains(t, Peer(multi), `\xc3"`)
}

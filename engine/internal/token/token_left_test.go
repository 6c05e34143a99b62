package token

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// How long a token has left, as a warning prints it: whole minutes, or
// seconds under a minute (not "0s" for a token that still has 56 s).
func TestLeftText(t *testing.T) {
	assert.Equal(t, "167h59m0s", Left(7*24*time.Hour-30*time.Second))
	assert.Equal(t, "2m0s", Left(2*time.Minute+40*time.Second))
	assert.Equal(t, "56s", Left(56*time.Second+300*time.Millisecond))
	assert.Equal(t, "0s", Left(-5*time.Second))
}

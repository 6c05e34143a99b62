package kdsauth

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/token"
)

// Global tells a refused zone nothing, so the zone says what it sees in its
// own token as of the refusal: a token that was fine at start may have
// expired while the zone ran (the file is read only at start and when it
// changes), and one for another zone never works.
func TestTokenFileCredentialsProblemAsOfNow(t *testing.T) {
	iss := newIssuer(t, now0)
	tok, err := iss.Generate("zone-a", time.Hour)
	require.NoError(t, err)
	info, err := token.Inspect(tok)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "zone-a.token")
	require.NoError(t, os.WriteFile(path, []byte(tok+"\n"), 0o600))

	var adopted []token.Info
	c, err := NewTokenFileCredentials(path, WithCredentialsZone("zone-a"),
		WithTokenAdopted(func(i token.Info) { adopted = append(adopted, i) }))
	require.NoError(t, err)
	require.Len(t, adopted, 1, "the token put to use at start is reported")
	assert.Equal(t, now0.Add(time.Hour), adopted[0].ExpiresAt)

	now := now0.Add(time.Minute)
	c.now = func() time.Time { return now }
	assert.Empty(t, c.Problem(), "nothing wrong that the zone can see")

	now = now0.Add(2 * time.Hour)
	p := c.Problem()
	assert.Contains(t, p, path)
	assert.Contains(t, p, info.ID)
	assert.Contains(t, p, "expired at 2026-05-01T11:00:00Z")
	assert.Contains(t, p, "kds-engine token generate --zone zone-a")

	other, err := NewTokenFileCredentials(path, WithCredentialsZone("zone-b"))
	require.NoError(t, err)
	assert.Contains(t, other.Problem(), `is for zone "zone-a", not this zone "zone-b"`)
	assert.Contains(t, other.Problem(), "kds-engine token generate --zone zone-b")

	require.NoError(t, os.WriteFile(path, []byte("not-a-token\n"), 0o600))
	assert.Contains(t, c.Problem(), "not a zone token")
}

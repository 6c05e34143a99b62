package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A zone token listed in global's --token-revocation-file is cut off while
// both run: the zone's session ends and its new ones are refused; a token
// from `kds-engine token generate` lets it back in.
func TestRevokedZoneTokenIsCutOff(t *testing.T) {
	c := newCluster(t)
	revoked := writeFile(t, c.dir, "revoked.txt", "# nothing revoked yet\n")
	c.global.p.kill9(t)
	c.global.args = append(c.global.args, "--token-revocation-file", revoked)
	c.start(t, c.global, false)
	z := c.addZone(t, "zone-1")
	waitFor(t, "zone-1 online", func() (bool, string) { return zoneOnline(t, c.global, "zone-1") })

	// The operator looks up the token's id with the CLI.
	tokenFile := filepath.Join(c.dir, "zone-1.token")
	var info struct{ Zone, ID string }
	require.NoError(t, json.Unmarshal([]byte(mustCLI(t, "token", "inspect", tokenFile, "-o", "json").stdout), &info))
	require.Equal(t, "zone-1", info.Zone)
	id := info.ID
	require.Len(t, id, 32)
	writeFile(t, c.dir, "revoked.txt", id+"  # zone-1's first token\n")

	waitFor(t, "zone-1 offline on global", func() (bool, string) {
		online, out := zoneOnline(t, c.global, "zone-1")
		return !online, out
	})
	waitFor(t, "global logs the ended session and refuses the next", func() (bool, string) {
		out := c.global.p.stderr.String()
		return strings.Contains(out, "ending the session of a revoked zone token") &&
			strings.Contains(out, "refused zone session") && strings.Contains(out, "reason=revoked"), out
	})
	assert.Contains(t, z.p.stderr.String(), "Unauthenticated", "the zone is told why")
	assert.Contains(t, z.p.stderr.String(), id)

	r := mustCLI(t, "token", "generate", "--zone", "zone-1", "--data-dir", c.global.dataDir, "-o", tokenFile)
	assert.Contains(t, r.stderr, "token id ")
	assert.NotContains(t, r.stderr, id, "a new token has a new id")
	waitFor(t, "zone-1 back online with its new token", func() (bool, string) { return zoneOnline(t, c.global, "zone-1") })
}

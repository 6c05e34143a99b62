package token

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/testsupport/docstest"
)

// docs/security.md describes how the signing and verification key files are reloaded
// and quotes the log messages; keep it in step with the code.
func TestSecurityDocMatchesKeyReloading(t *testing.T) {
	doc := docstest.Read(t, "security.md") // line breaks do not matter
	start := strings.Index(doc, "## Rotating the signing key")
	end := strings.Index(doc, "## Rotating TLS certificates")
	require.True(t, start >= 0 && end > start, "docs/security.md has the section")
	section := doc[start:end]
	assert.Equal(t, time.Second, DefaultKeyCheckInterval, "docs/security.md says a second")
	for _, fragment := range []string{
		"once at least a second has passed since the last look",
		warnKeys + "; still trusting the previous keys, will try again when the files change",
		"`reloaded zone token verification keys`",
		"`key_ids`",
		"`signing_key_id`",
		"Running sessions are not affected.",
	} {
		assert.True(t, strings.Contains(section, fragment), "docs/security.md, Rotating the signing key, lacks %q", fragment)
	}
	for _, step := range []string{"2. **Trust both.**", "3. **Switch the signing key.**", "5. **Drop the old key.**"} {
		i := strings.Index(section, step)
		require.GreaterOrEqual(t, i, 0, "step %q", step)
		text := section[i:]
		if next := strings.Index(text[len(step):], ". **"); next >= 0 {
			text = text[:len(step)+next]
		}
		assert.Contains(t, strings.ToLower(text), "no restart is needed", "step %q", step)
	}
}

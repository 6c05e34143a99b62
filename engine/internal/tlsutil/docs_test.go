package tlsutil

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/kds-engine/kds-engine/engine/internal/testsupport/docstest"
)

// docs/security.md describes the check interval and quotes the log
// messages; keep it in step with the code.
func TestSecurityDocMatchesReloading(t *testing.T) {
	doc := docstest.Read(t, "security.md") // line breaks do not matter
	assert.Equal(t, time.Second, DefaultCheckInterval, "docs/security.md says a second")
	for _, fragment := range []string{
		"once at least a second has passed since the last look",
		warnCert + "; still using the previous certificate, will try again when the files change",
		"`reloaded TLS certificate`",
		"`reloaded CA certificates`",
	} {
		assert.True(t, strings.Contains(doc, fragment), "docs/security.md lacks %q", fragment)
	}
}

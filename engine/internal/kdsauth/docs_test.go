package kdsauth

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/kdsgrpc"
	"github.com/kds-engine/kds-engine/engine/internal/logsafe"
	"github.com/kds-engine/kds-engine/engine/internal/token"
)

// docs/security.md documents every refusal reason and the defaults; keep it
// in step with the code.
func TestSecurityDocMatchesCode(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "security.md"))
	require.NoError(t, err)
	doc := string(data)
	has := func(fragment, why string, args ...any) {
		t.Helper()
		if !strings.Contains(doc, fragment) {
			t.Errorf("docs/security.md lacks %q: %s", fragment, fmt.Sprintf(why, args...))
		}
	}

	for _, r := range Reasons {
		if r == ReasonInvalid {
			continue // a verifier error outside the token's sentinels: not a documented outcome
		}
		has("| `"+r+"` |", "reason %s is missing from the refusals table", r)
	}
	has(RefusedMessage+" (ref ", "the generic refusal is quoted")
	has(fmt.Sprintf("cut to %d bytes", logsafe.MaxPeerValue), "the bound of logged peer values")
	has(fmt.Sprintf("| %d KiB | gRPC refuses larger headers", kdsgrpc.MaxHeaderListSize>>10), "header limit changed?")
	has("`kds-zone://NAME`", "the form of the zone in a client certificate")
	has(fmt.Sprintf("within %d days", int(token.ExpiryWarning.Hours()/24)), "expiry warning changed?")
	has(fmt.Sprintf("| New sessions per minute, per zone | %d |", DefaultSessionsPerMinute), "default changed?")
	has(fmt.Sprintf("at most %d refusals a minute are logged", DefaultRefusalLogsPerMinute), "default changed?")
	has(fmt.Sprintf("exceeded its limit of %d new sessions per minute", DefaultSessionsPerMinute), "default changed?")
	has(fmt.Sprintf("| Token size | %d KiB |", token.MaxTokenSize>>10), "default changed?")
	has(fmt.Sprintf("`%dh`", int(token.DefaultValidity.Hours())), "default changed?")
	has(fmt.Sprintf("%d s of tolerated clock skew", int(token.DefaultLeeway.Seconds())), "default changed?")

	for _, flag := range []string{
		"--tls-cert-file", "--tls-key-file", "--client-ca-file", "--token-signing-key-file",
		"--token-verification-key-files", "--ca-file", "--cert-file", "--key-file", "--token-file",
		"--insecure", "--api-token-file", "--api-tls-cert-file", "--api-tls-key-file", "--valid-for",
		"--cluster-id", "--client-cert-must-name-zone", "--insecure-allow-remote", "--api-allowed-hosts",
		"--api-max-body-size", "--api-max-connections", "--api-read-timeout", "--api-write-timeout", "--api-idle-timeout",
	} {
		has(flag, "flag %s is not documented", flag)
	}
}

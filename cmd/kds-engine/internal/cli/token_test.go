package cli

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func runCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	a := &App{Stdout: &out, Stderr: &errb, LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	return a.Run(args), out.String(), errb.String()
}

// verifyToken checks tok is a JWT signed by the Ed25519 key in keyFile and
// returns its claims.
func verifyToken(t *testing.T, tok, keyFile string) jwt.MapClaims {
	t.Helper()
	parts := strings.Split(tok, ".")
	require.Len(t, parts, 3, "header.payload.signature")
	for _, p := range parts {
		_, err := base64.RawURLEncoding.DecodeString(p)
		require.NoError(t, err, "part %q is base64url", p)
	}
	raw, err := os.ReadFile(keyFile)
	require.NoError(t, err)
	block, _ := pem.Decode(raw)
	require.NotNil(t, block)
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	require.NoError(t, err)
	pub := k.(ed25519.PrivateKey).Public()
	claims := jwt.MapClaims{}
	_, err = jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithExpirationRequired())
	require.NoError(t, err, "token verifies with the signing key")
	return claims
}

func TestTokenGenerateStdout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "global")
	code, out, errOut := runCLI(t, nil, "token", "generate", "--zone", "zone-1", "--data-dir", dir)
	require.Equal(t, ExitOK, code, errOut)
	keyFile := filepath.Join(dir, "zone-token-signing.key")
	st, err := os.Stat(keyFile)
	require.NoError(t, err, "signing key created in the data dir")
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	assert.Contains(t, errOut, "created the signing key "+keyFile)

	tok := strings.TrimSuffix(out, "\n")
	assert.NotContains(t, tok, "\n", "only the token on stdout")
	claims := verifyToken(t, tok, keyFile)
	assert.Equal(t, "zone-1", claims["sub"])
	exp, err := claims.GetExpirationTime()
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now().Add(720*time.Hour), exp.Time, time.Minute, "default validity 30 days")
	idFile := filepath.Join(dir, "cluster-id")
	assert.Contains(t, errOut, "created the cluster id "+idFile)
	id, err := os.ReadFile(idFile)
	require.NoError(t, err)
	aud, err := claims.GetAudience()
	require.NoError(t, err)
	assert.Equal(t, jwt.ClaimStrings{strings.TrimSpace(string(id))}, aud, "the token names global's cluster id")
	assert.Regexp(t, "^[0-9a-f]{32}$", claims["jti"])

	// A second token uses the same key and says nothing about creating it.
	code, out, errOut = runCLI(t, nil, "token", "generate", "--zone", "zone-2", "--data-dir", dir, "--valid-for", "2h")
	require.Equal(t, ExitOK, code, errOut)
	claims = verifyToken(t, strings.TrimSpace(out), keyFile)
	assert.Equal(t, "zone-2", claims["sub"])
	assert.Equal(t, "token id "+claims["jti"].(string)+" (list it in global's --token-revocation-file to revoke the token)\n", errOut,
		"stderr names the token id and nothing else")
	exp, err = claims.GetExpirationTime()
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now().Add(2*time.Hour), exp.Time, time.Minute)
}

func TestTokenGenerateToFileAndEnv(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "global")
	outFile := filepath.Join(tmp, "zone-1.token")
	require.NoError(t, os.WriteFile(outFile, []byte("old"), 0o644))
	// The data dir comes from the environment, like global's.
	code, out, errOut := runCLI(t, map[string]string{"KDS_ENGINE_DATA_DIR": dir}, "token", "generate", "--zone", "zone-1", "-o", outFile)
	require.Equal(t, ExitOK, code, errOut)
	assert.Empty(t, out)
	assert.Contains(t, errOut, "token of zone zone-1 for global ")
	assert.Contains(t, errOut, " written to "+outFile)
	assert.Contains(t, errOut, "token id ")
	st, err := os.Stat(outFile)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "an existing file is replaced with mode 0600")
	raw, err := os.ReadFile(outFile)
	require.NoError(t, err)
	claims := verifyToken(t, strings.TrimSpace(string(raw)), filepath.Join(dir, "zone-token-signing.key"))
	assert.Equal(t, "zone-1", claims["sub"])
	entries, err := os.ReadDir(tmp)
	require.NoError(t, err)
	assert.Len(t, entries, 2, "no temporary file left: %v", entries)

	// The cluster id comes from the flag or the environment, like global's.
	code, _, errOut = runCLI(t, map[string]string{"KDS_ENGINE_DATA_DIR": dir, "KDS_ENGINE_CLUSTER_ID": "prod-eu"},
		"token", "generate", "--zone", "zone-1", "-o", outFile)
	require.Equal(t, ExitOK, code, errOut)
	raw, err = os.ReadFile(outFile)
	require.NoError(t, err)
	claims = verifyToken(t, strings.TrimSpace(string(raw)), filepath.Join(dir, "zone-token-signing.key"))
	aud, err := claims.GetAudience()
	require.NoError(t, err)
	assert.Equal(t, jwt.ClaimStrings{"prod-eu"}, aud)
	code, _, errOut = runCLI(t, nil, "token", "generate", "--zone", "zone-1", "--data-dir", dir, "--cluster-id", "Prod EU")
	assert.Equal(t, ExitUsage, code)
	assert.Contains(t, errOut, `--cluster-id "Prod EU" is not a valid cluster id`)
}

func TestTokenGenerateUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--zone", "Zone_1"}, `token generate: --zone "Zone_1" is not a valid zone name (accepted: a DNS label: lower-case letters, digits and '-', at most 63)`},
		{[]string{"--zone", strings.Repeat("a", 64)}, `is not a valid zone name`},
		{[]string{}, `token generate: --zone is required`},
		{[]string{"--zone", "zone-1", "--valid-for", "0s"}, `token generate: --valid-for 0s must be positive (tokens always expire)`},
		{[]string{"--zone", "zone-1", "--valid-for", "soon"}, `invalid argument "soon" for "--valid-for"`},
		{[]string{"--zone", "zone-1", "extra"}, `unknown command "extra"`},
	} {
		code, out, errOut := runCLI(t, nil, append([]string{"token", "generate", "--data-dir", dir}, tc.args...)...)
		assert.Equal(t, ExitUsage, code, "%v: %s", tc.args, errOut)
		assert.Empty(t, out)
		assert.Contains(t, errOut, tc.want, tc.args)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "no key created on a usage error")
}

func TestTokenGenerateBadSigningKeyFile(t *testing.T) {
	tmp := t.TempDir()
	// Create a valid key, then make it group-readable: refused, file named.
	code, _, errOut := runCLI(t, nil, "token", "generate", "--zone", "zone-1", "--data-dir", tmp)
	require.Equal(t, ExitOK, code, errOut)
	keyFile := filepath.Join(tmp, "zone-token-signing.key")
	require.NoError(t, os.Chmod(keyFile, 0o640))
	code, out, errOut := runCLI(t, nil, "token", "generate", "--zone", "zone-1", "--token-signing-key-file", keyFile)
	assert.Equal(t, ExitFailed, code)
	assert.Empty(t, out)
	assert.Contains(t, errOut, "token generate: ")
	assert.Contains(t, errOut, keyFile+" has mode 0640")

	// The default key in the data dir is checked the same way.
	code, _, errOut = runCLI(t, nil, "token", "generate", "--zone", "zone-1", "--data-dir", tmp)
	assert.Equal(t, ExitFailed, code)
	assert.Contains(t, errOut, keyFile+" has mode 0640")

	// A configured key file must exist: it is never created.
	missing := filepath.Join(tmp, "nope.key")
	code, _, errOut = runCLI(t, map[string]string{"KDS_ENGINE_TOKEN_SIGNING_KEY_FILE": missing}, "token", "generate", "--zone", "zone-1")
	assert.Equal(t, ExitFailed, code)
	assert.Contains(t, errOut, missing)
	_, err := os.Stat(missing)
	assert.ErrorIs(t, err, os.ErrNotExist)

	// Not a key at all.
	junk := filepath.Join(tmp, "junk.key")
	require.NoError(t, os.WriteFile(junk, []byte("hello"), 0o600))
	code, _, errOut = runCLI(t, nil, "token", "generate", "--zone", "zone-1", "--token-signing-key-file", junk)
	assert.Equal(t, ExitFailed, code)
	assert.Contains(t, errOut, junk)
}

func TestTokenInspect(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "global")
	tokenFile := filepath.Join(t.TempDir(), "zone-1.token")
	code, _, errOut := runCLI(t, nil, "token", "generate", "--zone", "zone-1", "--data-dir", dir, "--valid-for", "2h", "-o", tokenFile)
	require.Equal(t, ExitOK, code, errOut)
	raw, err := os.ReadFile(tokenFile)
	require.NoError(t, err)
	claims := verifyToken(t, strings.TrimSpace(string(raw)), filepath.Join(dir, "zone-token-signing.key"))
	id := claims["jti"].(string)
	assert.Contains(t, errOut, "token id "+id, "generate and inspect name the same id")

	code, out, errOut := runCLI(t, nil, "token", "inspect", tokenFile)
	require.Equal(t, ExitOK, code, errOut)
	assert.Contains(t, out, "zone:       zone-1\n")
	assert.Contains(t, out, "id:         "+id+"\n")
	assert.Regexp(t, `key id:     [0-9a-f]{16}\n`, out)
	assert.Regexp(t, `expires at: \S+ \(in 1h5\dm0s\)\n`, out)
	assert.Contains(t, errOut, "not verified")

	code, out, errOut = runCLI(t, nil, "token", "inspect", tokenFile, "-o", "json")
	require.Equal(t, ExitOK, code, errOut)
	var info struct{ Zone, ID, KeyID string }
	require.NoError(t, json.Unmarshal([]byte(out), &info), out)
	assert.Equal(t, "zone-1", info.Zone)
	assert.Equal(t, id, info.ID)
	assert.Len(t, info.KeyID, 16)

	// From stdin, as `kds-engine token inspect < zone-1.token`.
	var stdout, stderr bytes.Buffer
	a := &App{Stdin: bytes.NewReader(raw), Stdout: &stdout, Stderr: &stderr, LookupEnv: func(string) (string, bool) { return "", false }}
	require.Equal(t, ExitOK, a.Run([]string{"token", "inspect"}), stderr.String())
	assert.Contains(t, stdout.String(), "id:         "+id+"\n")

	junk := filepath.Join(t.TempDir(), "junk")
	require.NoError(t, os.WriteFile(junk, []byte("not a token"), 0o600))
	code, _, errOut = runCLI(t, nil, "token", "inspect", junk)
	assert.Equal(t, ExitFailed, code)
	assert.Contains(t, errOut, "token inspect: "+junk+": malformed zone token")
	code, _, errOut = runCLI(t, nil, "token", "inspect", tokenFile, "-o", "yaml")
	assert.Equal(t, ExitUsage, code)
	assert.Contains(t, errOut, `-o "yaml": want text or json`)
}

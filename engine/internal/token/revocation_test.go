package token

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/testsupport/fakeclock"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
	"github.com/kds-engine/kds-engine/engine/internal/trustfile"
)

func tokenID(t *testing.T, tok string) string {
	t.Helper()
	info, err := Inspect(tok)
	require.NoError(t, err)
	require.Len(t, info.ID, IDLength)
	return info.ID
}

func TestParseRevocations(t *testing.T) {
	a, b := strings.Repeat("ab", 16), strings.Repeat("0f", 16)
	ids, err := ParseRevocations([]byte("# leaked on 2026-11-27\n\n" + a + "\n  " + strings.ToUpper(b) + "  # zone-b's old token\n" + a + "\n"))
	require.NoError(t, err)
	assert.Equal(t, map[string]struct{}{a: {}, b: {}}, ids, "comments and blank lines ignored, case folded, duplicates fine")

	ids, err = ParseRevocations(nil)
	require.NoError(t, err)
	assert.Empty(t, ids, "an empty file revokes nothing")

	for _, bad := range []string{"zone-a", a[:31], a + "0", strings.Repeat("zz", 16), a + " " + b} {
		_, err := ParseRevocations([]byte("# x\n" + bad + "\n"))
		require.Error(t, err, bad)
		assert.Contains(t, err.Error(), "2: ", "names the line")
		assert.Contains(t, err.Error(), "is not a token id")
	}
}

func TestVerifyRefusesRevokedToken(t *testing.T) {
	s := newSigner(t)
	id := tokenID(t, s.tok)
	v, err := NewVerifier([]ed25519.PublicKey{s.pub}, testAudience, WithClock(func() time.Time { return t0 }), WithRevoked(func(got string) bool { return got == id }))
	require.NoError(t, err)
	_, err = v.Verify(s.tok, "zone-a")
	require.ErrorIs(t, err, ErrRevoked)
	assert.Contains(t, err.Error(), id, "the refusal names the token")
	assert.Contains(t, err.Error(), "kds-engine token generate --zone zone-a")

	other := newSigner(t)
	v, err = NewVerifier([]ed25519.PublicKey{s.pub, other.pub}, testAudience, WithClock(func() time.Time { return t0 }), WithRevoked(func(got string) bool { return got == id }))
	require.NoError(t, err)
	zone, err := v.Verify(other.tok, "zone-a")
	require.NoError(t, err, "another token of the same zone is not revoked")
	assert.Equal(t, "zone-a", zone)

	// Revocation never hides another refusal: a revoked token for another
	// zone is refused for the zone.
	v, err = NewVerifier([]ed25519.PublicKey{s.pub}, testAudience, WithClock(func() time.Time { return t0 }), WithRevoked(func(string) bool { return true }))
	require.NoError(t, err)
	_, err = v.Verify(s.tok, "zone-b")
	require.ErrorIs(t, err, ErrZoneMismatch)
}

func TestInspectToken(t *testing.T) {
	s := newSigner(t)
	info, err := Inspect(" " + s.tok + "\n")
	require.NoError(t, err)
	assert.Equal(t, "zone-a", info.Zone)
	assert.Len(t, info.ID, IDLength)
	assert.Equal(t, KeyID(s.pub), info.KeyID)
	assert.Equal(t, t0, info.IssuedAt)
	assert.Equal(t, t0.Add(time.Hour), info.ExpiresAt)
	_, err = Inspect("not a token")
	require.ErrorIs(t, err, ErrMalformed)
	_, err = Inspect(strings.Repeat("a", MaxTokenSize+1))
	require.ErrorIs(t, err, ErrMalformed)
}

// revocations is a RevocationList on one file with a fake clock, a log and
// the ids of every change it reported.
type revocations struct {
	l       *RevocationList
	file    string
	clk     *fakeclock.Clock
	logs    *logbuf.Buffer
	mu      sync.Mutex
	changes [][]string
}

func newRevocations(t *testing.T, content string) (*revocations, error) {
	t.Helper()
	r := &revocations{file: filepath.Join(t.TempDir(), "revoked.txt"), clk: fakeclock.New(t0), logs: &logbuf.Buffer{}}
	replaceFile(t, r.file, []byte(content))
	var err error
	r.l, err = NewRevocationList(r.file, hclog.New(&hclog.LoggerOptions{Output: r.logs, Level: hclog.Debug}),
		WithRevocationClock(r.clk.Now),
		WithOnRevocationChange(func(ids []string) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.changes = append(r.changes, ids)
		}))
	return r, err
}

func (r *revocations) reported() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]string(nil), r.changes...)
}

func TestRevocationListReloads(t *testing.T) {
	a, b := strings.Repeat("a", 32), strings.Repeat("b", 32)
	r, err := newRevocations(t, a+"\n")
	require.NoError(t, err)
	assert.True(t, r.l.Revoked(a))
	assert.False(t, r.l.Revoked(b))
	assert.Equal(t, r.file, r.l.File())

	replaceFile(t, r.file, []byte(b+"\n"+a+"\n"))
	r.clk.Advance(DefaultKeyCheckInterval - time.Millisecond)
	r.l.Refresh()
	assert.False(t, r.l.Revoked(b), "the file is looked at once per interval")
	assert.Empty(t, r.reported())
	r.clk.Advance(time.Millisecond)
	r.l.Refresh()
	assert.True(t, r.l.Revoked(b), "revoked without a restart")
	assert.Equal(t, [][]string{{a, b}}, r.reported(), "a reload reports the whole list, sorted")
	require.Len(t, r.logs.Lines("[INFO]", "reloaded zone token revocation file", "revoked=2"), 1, r.logs.String())

	// A broken change keeps the list and warns once.
	replaceFile(t, r.file, []byte(a+"\nzone-a\n"))
	for range 3 {
		r.clk.Advance(DefaultKeyCheckInterval)
		assert.True(t, r.l.Revoked(b), "the previous list stays in force")
	}
	warn := r.logs.Lines("[WARN]", "revocation file changed but cannot be used", r.file+":2:")
	assert.Len(t, warn, 1, r.logs.String())
	assert.Len(t, r.reported(), 1, "nothing reported for a broken change")

	// Fixed: used again. An emptied file revokes nothing.
	replaceFile(t, r.file, []byte("# nothing revoked\n"))
	r.clk.Advance(DefaultKeyCheckInterval)
	assert.False(t, r.l.Revoked(a))
	assert.Equal(t, []string{}, r.reported()[1])
}

// A revocation file others can write could un-revoke a leaked token: a
// change that leaves it writable by group or others is not used.
func TestRevocationListRefusesWorldWritableFile(t *testing.T) {
	a, b := strings.Repeat("a", 32), strings.Repeat("b", 32)
	r, err := newRevocations(t, a+"\n")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(r.file+".tmp", []byte(b+"\n"), 0o600))
	require.NoError(t, os.Chmod(r.file+".tmp", 0o666))
	require.NoError(t, os.Rename(r.file+".tmp", r.file))
	for range 3 {
		r.clk.Advance(DefaultKeyCheckInterval)
		assert.True(t, r.l.Revoked(a), "the previous list stays in force")
		assert.False(t, r.l.Revoked(b))
	}
	warn := r.logs.Lines("[WARN]", "revocation file changed but cannot be used", "mode 0666", "chmod go-w "+r.file)
	assert.Len(t, warn, 1, r.logs.String())

	_, err = NewRevocationList(r.file, nil)
	require.ErrorIs(t, err, trustfile.ErrUnsafe, "refused at start too")
}

func TestRevocationListRefusesUnusableFileAtStart(t *testing.T) {
	_, err := newRevocations(t, "# ok\nnot-an-id\n")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "revoked.txt:2: \"not-an-id\" is not a token id")

	_, err = NewRevocationList(filepath.Join(t.TempDir(), "missing.txt"), nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "missing.txt")
}

// The revocation list plugged into the key file verifier refuses a revoked
// token and accepts it again once it is removed from the file.
func TestKeyFileVerifierWithRevocationList(t *testing.T) {
	s := newSigner(t)
	id := tokenID(t, s.tok)
	r, err := newRevocations(t, "")
	require.NoError(t, err)
	v, err := NewKeyFileVerifier(s.pub, testAudience, nil, nil, WithVerifierOptions(WithClock(r.clk.Now), WithRevoked(r.l.Revoked)))
	require.NoError(t, err)
	_, err = v.Verify(s.tok, "zone-a")
	require.NoError(t, err)

	replaceFile(t, r.file, []byte(id+"\n"))
	r.clk.Advance(DefaultKeyCheckInterval)
	_, err = v.Verify(s.tok, "zone-a")
	require.ErrorIs(t, err, ErrRevoked)
	assert.Equal(t, [][]string{{id}}, r.reported())

	replaceFile(t, r.file, nil)
	r.clk.Advance(DefaultKeyCheckInterval)
	_, err = v.Verify(s.tok, "zone-a")
	require.NoError(t, err)
}

func TestVerifyTokenReturnsIDAndExpiry(t *testing.T) {
	s := newSigner(t)
	v, err := NewVerifier([]ed25519.PublicKey{s.pub}, testAudience, WithClock(func() time.Time { return t0 }))
	require.NoError(t, err)
	got, err := v.VerifyToken(s.tok, "zone-a")
	require.NoError(t, err)
	assert.Equal(t, "zone-a", got.Zone)
	assert.Equal(t, tokenID(t, s.tok), got.ID)
	assert.Equal(t, t0.Add(time.Hour), got.ExpiresAt)
	got, err = v.VerifyToken(s.tok, "zone-b")
	require.ErrorIs(t, err, ErrZoneMismatch)
	assert.Empty(t, got.ID, "no id for a refused token")
}

package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testAudience is the cluster id of the global the tests' tokens are for.
const testAudience = "test-cluster"

// testID is a canonical token id for hand-made tokens.
const testID = "0123456789abcdef0123456789abcdef"

type fixture struct {
	priv     ed25519.PrivateKey
	pub      ed25519.PublicKey
	issuer   *Issuer
	verifier *Verifier
	now      time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	f := &fixture{priv: priv, pub: pub, now: t0}
	f.issuer, err = NewIssuer(priv, testAudience, WithIssuerClock(func() time.Time { return t0 }))
	require.NoError(t, err)
	f.verifier, err = NewVerifier([]ed25519.PublicKey{pub}, testAudience, WithClock(func() time.Time { return f.now }))
	require.NoError(t, err)
	return f
}

// signRaw signs arbitrary claims and header fields with key, bypassing the
// Issuer's checks, to build tokens the Issuer would never produce.
func signRaw(t *testing.T, method jwt.SigningMethod, key any, header map[string]any, c jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	require.NoError(t, err)
	return s
}

func validClaims(zone string) jwt.RegisteredClaims {
	return jwt.RegisteredClaims{
		Issuer:    IssuerName,
		Subject:   zone,
		Audience:  jwt.ClaimStrings{testAudience},
		IssuedAt:  jwt.NewNumericDate(t0),
		NotBefore: jwt.NewNumericDate(t0),
		ExpiresAt: jwt.NewNumericDate(t0.Add(time.Hour)),
		ID:        testID,
	}
}

func TestGenerateAndVerify(t *testing.T) {
	f := newFixture(t)
	tok, err := f.issuer.Generate("zone-a", 24*time.Hour)
	require.NoError(t, err)

	zone, err := f.verifier.Verify(tok, "zone-a")
	require.NoError(t, err)
	assert.Equal(t, "zone-a", zone)

	// Token files end with a newline; that must not matter.
	zone, err = f.verifier.Verify(tok+"\n", "zone-a")
	require.NoError(t, err)
	assert.Equal(t, "zone-a", zone)

	// The token carries what the contract says.
	parts := strings.Split(tok, ".")
	require.Len(t, parts, 3)
	var header map[string]any
	decodeSegment(t, parts[0], &header)
	assert.Equal(t, "EdDSA", header["alg"])
	assert.Equal(t, KeyID(f.pub), header["kid"])
	assert.Equal(t, f.issuer.KeyID(), header["kid"])
	var payload map[string]any
	decodeSegment(t, parts[1], &payload)
	assert.Equal(t, "zone-a", payload["sub"])
	assert.Equal(t, IssuerName, payload["iss"])
	assert.EqualValues(t, t0.Unix(), payload["iat"])
	assert.EqualValues(t, t0.Unix(), payload["nbf"])
	assert.EqualValues(t, t0.Add(24*time.Hour).Unix(), payload["exp"])
	assert.Equal(t, []any{testAudience}, payload["aud"], "the token names its global")
	assert.Regexp(t, "^[0-9a-f]{32}$", payload["jti"])
	_, crit := header["crit"]
	assert.False(t, crit)

	other, err := f.issuer.Generate("zone-a", 24*time.Hour)
	require.NoError(t, err)
	assert.NotEqual(t, tok, other, "each token has its own id")
	assert.True(t, f.pub.Equal(f.issuer.PublicKey()))
}

func TestGenerateRejectsBadInput(t *testing.T) {
	f := newFixture(t)
	for _, validFor := range []time.Duration{0, -time.Hour} {
		_, err := f.issuer.Generate("zone-a", validFor)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "must be positive")
	}
	for _, zone := range []string{"", "has space", "tab\t", "nl\n", "\x00", strings.Repeat("z", MaxZoneNameLength+1), "bad\xffutf8", "Upper", "-lead", "trail-", "a.b", "a_b"} {
		_, err := f.issuer.Generate(zone, time.Hour)
		assert.Error(t, err, "zone %q", zone)
	}
	_, err := f.issuer.Generate(strings.Repeat("z", MaxZoneNameLength), time.Hour)
	assert.NoError(t, err)

	_, err = NewIssuer(ed25519.PrivateKey{1, 2}, testAudience)
	assert.Error(t, err)
	for _, aud := range []string{"", "Upper", "has space", strings.Repeat("a", 64)} {
		_, err = NewIssuer(f.priv, aud)
		assert.Error(t, err, "audience %q", aud)
		_, err = NewVerifier([]ed25519.PublicKey{f.pub}, aud)
		assert.Error(t, err, "audience %q", aud)
	}
}

// A token is valid for 30 days unless told, and warned about a week before.
func TestDefaultValidityIsThirtyDays(t *testing.T) {
	assert.Equal(t, 720*time.Hour, DefaultValidity)
	assert.Equal(t, 7*24*time.Hour, ExpiryWarning)
}

// A token without a canonical id cannot be listed in a revocation file
// (ids are compared lower-case), so it is refused.
func TestVerifyRefusesTokenWithoutCanonicalID(t *testing.T) {
	f := newFixture(t)
	kid := map[string]any{"kid": KeyID(f.pub)}
	for name, id := range map[string]string{
		"no jti":     "",
		"upper case": strings.ToUpper(testID),
		"too short":  testID[:31],
		"not hex":    strings.Repeat("g", 32),
		"uuid":       "01234567-89ab-cdef-0123-456789abcdef",
	} {
		t.Run(name, func(t *testing.T) {
			c := validClaims("zone-a")
			c.ID = id
			_, err := f.verifier.Verify(signRaw(t, jwt.SigningMethodEdDSA, f.priv, kid, c), "zone-a")
			assertOnly(t, err, ErrMalformed, "token id (jti)", "could not be revoked")
		})
	}
	_, err := f.verifier.Verify(signRaw(t, jwt.SigningMethodEdDSA, f.priv, kid, validClaims("zone-a")), "zone-a")
	require.NoError(t, err, "the same token with a canonical id passes")
}

// A header naming critical extensions is refused: the verifier knows none,
// so it cannot honour what they require.
func TestVerifyRefusesCritHeader(t *testing.T) {
	f := newFixture(t)
	for _, crit := range []any{[]string{"exp"}, []string{"b64"}, []string{}, "x"} {
		tok := signRaw(t, jwt.SigningMethodEdDSA, f.priv, map[string]any{"kid": KeyID(f.pub), "crit": crit}, validClaims("zone-a"))
		_, err := f.verifier.Verify(tok, "zone-a")
		assertOnly(t, err, ErrMalformed, `"crit"`)
	}
}

// A token names the global it is for; another global's token (signed with
// the same key, say a copied key) or one naming none is refused.
func TestVerifyRefusesWrongOrMissingAudience(t *testing.T) {
	f := newFixture(t)
	kid := map[string]any{"kid": KeyID(f.pub)}
	other := validClaims("zone-a")
	other.Audience = jwt.ClaimStrings{"other-cluster"}
	_, err := f.verifier.Verify(signRaw(t, jwt.SigningMethodEdDSA, f.priv, kid, other), "zone-a")
	assertOnly(t, err, ErrWrongAudience, "other-cluster", testAudience)

	none := validClaims("zone-a")
	none.Audience = nil
	_, err = f.verifier.Verify(signRaw(t, jwt.SigningMethodEdDSA, f.priv, kid, none), "zone-a")
	assertOnly(t, err, ErrWrongAudience, "names global none")

	iss, err := NewIssuer(f.priv, "other-cluster", WithIssuerClock(func() time.Time { return t0 }))
	require.NoError(t, err)
	tok, err := iss.Generate("zone-a", time.Hour)
	require.NoError(t, err)
	_, err = f.verifier.Verify(tok, "zone-a")
	assertOnly(t, err, ErrWrongAudience)
}

var allSentinels = []error{ErrMissing, ErrExpired, ErrNotYetValid, ErrUnknownKey, ErrBadSignature, ErrZoneMismatch, ErrMalformed, ErrWrongAudience}

// assertOnly checks err wraps want and no other sentinel, and that its text
// contains every fragment.
func assertOnly(t *testing.T, err, want error, fragments ...string) {
	t.Helper()
	require.Error(t, err)
	for _, s := range allSentinels {
		if s == want {
			assert.ErrorIs(t, err, s)
		} else {
			assert.NotErrorIs(t, err, s)
		}
	}
	for _, frag := range fragments {
		assert.Contains(t, err.Error(), frag)
	}
}

func TestVerifyMissing(t *testing.T) {
	f := newFixture(t)
	for _, tok := range []string{"", "  \n"} {
		_, err := f.verifier.Verify(tok, "zone-a")
		assertOnly(t, err, ErrMissing, "--token-file")
	}
}

func TestVerifyExpiredSaysWhen(t *testing.T) {
	f := newFixture(t)
	tok, err := f.issuer.Generate("zone-a", time.Hour)
	require.NoError(t, err)
	expiry := t0.Add(time.Hour)

	f.now = expiry.Add(DefaultLeeway - time.Second)
	_, err = f.verifier.Verify(tok, "zone-a")
	require.NoError(t, err, "within the leeway the token is still accepted")

	f.now = expiry.Add(DefaultLeeway + time.Second)
	_, err = f.verifier.Verify(tok, "zone-a")
	assertOnly(t, err, ErrExpired, expiry.Format(time.RFC3339), "kds-engine token generate")
}

func TestVerifyLeewayIsConfigurable(t *testing.T) {
	f := newFixture(t)
	tok, err := f.issuer.Generate("zone-a", time.Hour)
	require.NoError(t, err)
	strict, err := NewVerifier([]ed25519.PublicKey{f.pub}, testAudience, WithLeeway(0),
		WithClock(func() time.Time { return t0.Add(time.Hour + time.Second) }))
	require.NoError(t, err)
	_, err = strict.Verify(tok, "zone-a")
	assert.ErrorIs(t, err, ErrExpired)
}

func TestVerifyNotYetValid(t *testing.T) {
	f := newFixture(t)
	tok, err := f.issuer.Generate("zone-a", time.Hour)
	require.NoError(t, err)

	f.now = t0.Add(-DefaultLeeway + time.Second)
	_, err = f.verifier.Verify(tok, "zone-a")
	require.NoError(t, err, "small clock skew is tolerated")

	f.now = t0.Add(-time.Hour)
	_, err = f.verifier.Verify(tok, "zone-a")
	assertOnly(t, err, ErrNotYetValid, t0.Format(time.RFC3339), "clocks")
}

func TestVerifyUnknownKey(t *testing.T) {
	f := newFixture(t)
	_, otherPriv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	other, err := NewIssuer(otherPriv, testAudience, WithIssuerClock(func() time.Time { return t0 }))
	require.NoError(t, err)
	tok, err := other.Generate("zone-a", time.Hour)
	require.NoError(t, err)

	_, err = f.verifier.Verify(tok, "zone-a")
	assertOnly(t, err, ErrUnknownKey, "global does not trust", other.KeyID(), KeyID(f.pub), "generate a new token on global")
}

func TestVerifyForgedSignature(t *testing.T) {
	f := newFixture(t)
	_, otherPriv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)

	// Signed by another key but claiming our key id.
	forged := signRaw(t, jwt.SigningMethodEdDSA, otherPriv, map[string]any{"kid": KeyID(f.pub)}, validClaims("zone-a"))
	_, err = f.verifier.Verify(forged, "zone-a")
	assertOnly(t, err, ErrBadSignature, "global does not trust")

	// A genuine token whose payload was swapped to another zone.
	tok, err := f.issuer.Generate("zone-a", time.Hour)
	require.NoError(t, err)
	parts := strings.Split(tok, ".")
	var payload map[string]any
	decodeSegment(t, parts[1], &payload)
	payload["sub"] = "zone-b"
	parts[1] = encodeSegment(t, payload)
	_, err = f.verifier.Verify(strings.Join(parts, "."), "zone-b")
	assertOnly(t, err, ErrBadSignature)

	// A flipped signature bit.
	sig, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[2])
	require.NoError(t, err)
	sig[0] ^= 1
	parts = strings.Split(tok, ".")
	parts[2] = base64.RawURLEncoding.EncodeToString(sig)
	_, err = f.verifier.Verify(strings.Join(parts, "."), "zone-a")
	assertOnly(t, err, ErrBadSignature)
}

func TestVerifyRejectsOtherAlgorithms(t *testing.T) {
	f := newFixture(t)
	header := map[string]any{"kid": KeyID(f.pub)}

	// The classic key-confusion attack: HMAC keyed with the public key.
	hs := signRaw(t, jwt.SigningMethodHS256, []byte(f.pub), header, validClaims("zone-a"))
	_, err := f.verifier.Verify(hs, "zone-a")
	assertOnly(t, err, ErrBadSignature, `algorithm HS256 is not accepted`)

	none := signRaw(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, header, validClaims("zone-a"))
	_, err = f.verifier.Verify(none, "zone-a")
	assertOnly(t, err, ErrBadSignature, `algorithm none is not accepted`)

	// alg=none with a hand-written header, empty signature.
	handmade := encodeSegment(t, map[string]any{"alg": "none", "typ": "JWT", "kid": KeyID(f.pub)}) + "." +
		encodeSegment(t, validClaims("zone-a")) + "."
	_, err = f.verifier.Verify(handmade, "zone-a")
	assertOnly(t, err, ErrBadSignature)

	for _, alg := range []string{"", "NONE", "ES256", "made-up"} {
		tok := encodeSegment(t, map[string]any{"alg": alg, "kid": KeyID(f.pub)}) + "." +
			encodeSegment(t, validClaims("zone-a")) + "." + base64.RawURLEncoding.EncodeToString([]byte("sig"))
		_, err = f.verifier.Verify(tok, "zone-a")
		assertOnly(t, err, ErrBadSignature)
	}
}

func TestVerifyZoneMismatch(t *testing.T) {
	f := newFixture(t)
	tok, err := f.issuer.Generate("zone-a", time.Hour)
	require.NoError(t, err)

	_, err = f.verifier.Verify(tok, "zone-b")
	assertOnly(t, err, ErrZoneMismatch, `token is for zone zone-a, connection claims zone zone-b`)

	_, err = f.verifier.Verify(tok, "")
	assertOnly(t, err, ErrZoneMismatch, "connection claims no zone")
}

func TestVerifyMalformed(t *testing.T) {
	f := newFixture(t)
	kid := map[string]any{"kid": KeyID(f.pub)}

	wrongIssuer := validClaims("zone-a")
	wrongIssuer.Issuer = "someone-else"
	noExpiry := validClaims("zone-a")
	noExpiry.ExpiresAt = nil
	noSubject := validClaims("")
	badSubject := validClaims("two words")

	cases := map[string]string{
		"not a jwt":       "hello",
		"three dots":      "a.b.c",
		"bad base64":      "!!!.???.***",
		"too long":        strings.Repeat("a", MaxTokenSize+1),
		"no kid":          signRaw(t, jwt.SigningMethodEdDSA, f.priv, nil, validClaims("zone-a")),
		"numeric kid":     signRaw(t, jwt.SigningMethodEdDSA, f.priv, map[string]any{"kid": 7}, validClaims("zone-a")),
		"wrong issuer":    signRaw(t, jwt.SigningMethodEdDSA, f.priv, kid, wrongIssuer),
		"no expiry":       signRaw(t, jwt.SigningMethodEdDSA, f.priv, kid, noExpiry),
		"no subject":      signRaw(t, jwt.SigningMethodEdDSA, f.priv, kid, noSubject),
		"invalid subject": signRaw(t, jwt.SigningMethodEdDSA, f.priv, kid, badSubject),
		"exp is a string": signRaw(t, jwt.SigningMethodEdDSA, f.priv, kid, jwt.MapClaims{"iss": IssuerName, "sub": "zone-a", "exp": "tomorrow"}),
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := f.verifier.Verify(tok, "zone-a")
			assertOnly(t, err, ErrMalformed)
		})
	}
}

func TestRotation(t *testing.T) {
	_, oldPriv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	_, newPriv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	oldIss, err := NewIssuer(oldPriv, testAudience)
	require.NoError(t, err)
	newIss, err := NewIssuer(newPriv, testAudience)
	require.NoError(t, err)
	oldTok, err := oldIss.Generate("zone-a", time.Hour)
	require.NoError(t, err)
	newTok, err := newIss.Generate("zone-a", time.Hour)
	require.NoError(t, err)

	// Step 1: both keys trusted — old and new tokens verify.
	both, err := NewVerifier([]ed25519.PublicKey{oldIss.PublicKey(), newIss.PublicKey(), newIss.PublicKey()}, testAudience)
	require.NoError(t, err)
	assert.Len(t, both.KeyIDs(), 2, "duplicates are ignored")
	for _, tok := range []string{oldTok, newTok} {
		zone, err := both.Verify(tok, "zone-a")
		require.NoError(t, err)
		assert.Equal(t, "zone-a", zone)
	}

	// Step 2: old key dropped — old tokens are refused, naming the key.
	onlyNew, err := NewVerifier([]ed25519.PublicKey{newIss.PublicKey()}, testAudience)
	require.NoError(t, err)
	_, err = onlyNew.Verify(newTok, "zone-a")
	require.NoError(t, err)
	_, err = onlyNew.Verify(oldTok, "zone-a")
	assertOnly(t, err, ErrUnknownKey, oldIss.KeyID())
}

func TestNewVerifierValidatesKeys(t *testing.T) {
	_, err := NewVerifier(nil, testAudience)
	assert.Error(t, err)
	_, err = NewVerifier([]ed25519.PublicKey{{1, 2, 3}}, testAudience)
	assert.Error(t, err)
}

func TestVerifierIsSafeForConcurrentUse(t *testing.T) {
	f := newFixture(t)
	tok, err := f.issuer.Generate("zone-a", time.Hour)
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if _, err := f.verifier.Verify(tok, "zone-a"); err != nil {
					errs <- err
					return
				}
				if _, err := f.verifier.Verify(tok, "zone-b"); !errors.Is(err, ErrZoneMismatch) {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func decodeSegment(t *testing.T, seg string, into any) {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, into))
}

func encodeSegment(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	require.NoError(t, err)
	return base64.RawURLEncoding.EncodeToString(raw)
}

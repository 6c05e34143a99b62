package token

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Fixed keys and clock so that the committed seed corpus stays meaningful:
// tokens signed by fuzzTrusted verify at fuzzNow; tokens signed by
// fuzzUntrusted never may.
var (
	fuzzTrusted   = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	fuzzUntrusted = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	fuzzIssued    = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fuzzNow       = fuzzIssued.Add(24 * time.Hour)
)

func fuzzSeeds(tb testing.TB) [][2]string {
	tb.Helper()
	trusted, err := NewIssuer(fuzzTrusted, testAudience, WithIssuerClock(func() time.Time { return fuzzIssued }))
	if err != nil {
		tb.Fatal(err)
	}
	untrusted, err := NewIssuer(fuzzUntrusted, testAudience, WithIssuerClock(func() time.Time { return fuzzIssued }))
	if err != nil {
		tb.Fatal(err)
	}
	good, err := trusted.Generate("zone-a", 10*365*24*time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	short, err := trusted.Generate("zone-a", time.Hour) // expired at fuzzNow
	if err != nil {
		tb.Fatal(err)
	}
	foreign, err := untrusted.Generate("zone-a", 10*365*24*time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": IssuerName, "sub": "zone-a", "exp": fuzzNow.Add(time.Hour).Unix()})
	hs.Header["kid"] = trusted.KeyID()
	hsTok, err := hs.SignedString([]byte(trusted.PublicKey()))
	if err != nil {
		tb.Fatal(err)
	}
	parts := strings.Split(good, ".")
	return [][2]string{
		{good, "zone-a"},
		{good, "zone-b"},
		{short, "zone-a"},
		{foreign, "zone-a"},
		{hsTok, "zone-a"},
		{parts[0] + "." + parts[1] + ".", "zone-a"},
		{`eyJhbGciOiJub25lIn0.eyJzdWIiOiJ6b25lLWEifQ.`, "zone-a"},
		{"", ""},
		{"a.b.c", "zone-a"},
	}
}

// FuzzVerify checks that Verify never panics, that every refusal wraps one
// of the package's sentinels, and that it never accepts a token that is not
// an EdDSA signature by the configured key over the token's own bytes for the
// claimed zone.
func FuzzVerify(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s[0], s[1])
	}
	trustedPub := fuzzTrusted.Public().(ed25519.PublicKey)
	v, err := NewVerifier([]ed25519.PublicKey{trustedPub}, testAudience, WithClock(func() time.Time { return fuzzNow }))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, tok, claimedZone string) {
		zone, err := v.Verify(tok, claimedZone)
		if err != nil {
			matched := 0
			for _, s := range allSentinels {
				if errors.Is(err, s) {
					matched++
				}
			}
			if matched != 1 {
				t.Fatalf("error wraps %d sentinels, want 1: %v", matched, err)
			}
			return
		}
		if zone != claimedZone || zone == "" {
			t.Fatalf("accepted for zone %q while claiming %q", zone, claimedZone)
		}
		parts := strings.Split(strings.TrimSpace(tok), ".")
		if len(parts) != 3 {
			t.Fatalf("accepted a token with %d segments", len(parts))
		}
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil {
			t.Fatalf("accepted a token whose signature does not decode: %v", err)
		}
		if !ed25519.Verify(trustedPub, []byte(parts[0]+"."+parts[1]), sig) {
			t.Fatalf("accepted a token not signed by the configured key: %q", tok)
		}
		var header struct {
			Alg string `json:"alg"`
		}
		raw, err := base64.RawURLEncoding.DecodeString(parts[0])
		if err != nil || json.Unmarshal(raw, &header) != nil || header.Alg != algEdDSA {
			t.Fatalf("accepted a token with header %q", raw)
		}
	})
}

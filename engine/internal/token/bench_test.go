package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"
)

// BenchmarkVerify measures Verify on a valid token and reports its cost as
// a ratio to the bare Ed25519 signature check over the same bytes, measured
// in the same run: the overhead of parsing and claim checks on top of the
// cryptography that has to happen anyway.
func BenchmarkVerify(b *testing.B) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	iss, err := NewIssuer(priv, testAudience)
	if err != nil {
		b.Fatal(err)
	}
	v, err := NewVerifier([]ed25519.PublicKey{pub}, testAudience)
	if err != nil {
		b.Fatal(err)
	}
	tok, err := iss.Generate("zone-a", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	i := strings.LastIndexByte(tok, '.')
	signed := []byte(tok[:i])
	sig := ed25519.Sign(priv, signed)

	const baselineRounds = 2000
	start := time.Now()
	for range baselineRounds {
		if !ed25519.Verify(pub, signed, sig) {
			b.Fatal("baseline verify failed")
		}
	}
	baseline := time.Since(start) / baselineRounds

	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Verify(tok, "zone-a"); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	perOp := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(perOp)/float64(baseline), "x-ed25519-verify")
}

// Package token issues and verifies zone tokens: the credential a zone
// presents to global so that global knows, cryptographically, which zone a
// KDS connection speaks for.
//
// A zone token is a JWT signed with Ed25519 (alg "EdDSA") by global's signing
// key. Its subject ("sub") is the zone name and its audience ("aud") the
// cluster id of the global it is for; it carries "iss" = "kds-engine",
// "iat", "nbf", "exp" and a random "jti" (32 lower-case hex digits: the id
// a revocation file lists), and its header names the signing key with
// "kid" (see KeyID). Global verifies with one or more public keys, which is
// how keys are rotated without downtime.
//
// Verification accepts nothing but EdDSA signed by a configured key: tokens
// using "none", HMAC or any other algorithm are rejected before a key is
// looked up, so a public key can never be misused as an HMAC secret. A
// token must name the verifier's audience and carry a canonical "jti" (a
// token without one could not be revoked), and a header with "crit" is
// refused: no extension is understood, so none may be required. Every
// failure wraps exactly one of the Err… sentinels below, so callers (the
// gRPC interceptor in kdsauth) can branch on the cause and tell the
// operator what to do. The messages are for global's log: values the token
// or the peer chose are bounded with logsafe.Peer, but the messages name
// trusted key ids, so they are not for the peer.
package token

import (
	"cmp"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kds-engine/kds-engine/engine/internal/logsafe"
)

const (
	// IssuerName is the "iss" claim of every zone token.
	IssuerName = "kds-engine"
	// DefaultValidity is the suggested validity of a new token (30 days),
	// used by the CLI when --valid-for is not given: short enough that a
	// token copied off a zone's disk is useless within a month even when
	// nobody notices to revoke it, long enough for a monthly rotation job
	// with a week of slack (see ExpiryWarning).
	DefaultValidity = 30 * 24 * time.Hour
	// ExpiryWarning is how long before its token expires a session that
	// starts is warned about (global logs it; the zone logs its own).
	ExpiryWarning = 7 * 24 * time.Hour
	// DefaultLeeway is the clock skew tolerated on "exp", "nbf" and "iat".
	DefaultLeeway = 30 * time.Second
	// MaxTokenSize bounds the token a verifier parses; longer input is
	// ErrMalformed without being decoded.
	MaxTokenSize = 4096
	// MaxZoneNameLength bounds a zone name (a DNS label).
	MaxZoneNameLength = 63
	// IDLength is the length of a token id ("jti"): 16 random bytes in
	// lower-case hex.
	IDLength = 32

	algEdDSA = "EdDSA"
)

// generateHint tells an operator how to get a fresh token.
const generateHint = "generate a new token on global: kds-engine token generate --zone NAME"

// Sentinel errors returned (wrapped, with details) by Verifier.Verify. Test
// with errors.Is. Each wrapped error says what was wrong and what to do.
var (
	// ErrMissing: no token was presented (empty string). The zone must be
	// started with --token-file.
	ErrMissing = errors.New("no zone token presented")
	// ErrExpired: the token is authentic but past its "exp" (plus leeway).
	// The error includes the expiry time.
	ErrExpired = errors.New("zone token expired")
	// ErrNotYetValid: the token is authentic but its "nbf" or "iat" lies in
	// the future beyond the leeway; the clocks of zone and global disagree
	// or the token was issued with a future start.
	ErrNotYetValid = errors.New("zone token not valid yet")
	// ErrUnknownKey: the token names (kid) a key that is not among the
	// verification keys: it was signed by a key global does not trust, e.g.
	// a retired key or another installation's key.
	ErrUnknownKey = errors.New("token signed by a key global does not trust")
	// ErrBadSignature: the signature does not verify, or the token uses an
	// algorithm other than EdDSA ("none", HS256, ...): it is forged or
	// altered.
	ErrBadSignature = errors.New("token signature is invalid")
	// ErrZoneMismatch: the token is authentic but was issued for another
	// zone than the one the connection claims to be.
	ErrZoneMismatch = errors.New("zone token does not match the connection's zone")
	// ErrMalformed: the input is not a zone token (not a JWT, bad encoding,
	// missing or wrongly typed claims, wrong issuer, no key id).
	ErrMalformed = errors.New("malformed zone token")
	// ErrRevoked: the token is authentic and otherwise valid, but its id
	// is listed in the revocation file (see RevocationList).
	ErrRevoked = errors.New("zone token revoked")
	// ErrWrongAudience: the token is authentic but names another global
	// (its "aud" is not this global's cluster id), or none: a token of
	// another installation signed with a shared key, or one made before
	// tokens named their global.
	ErrWrongAudience = errors.New("zone token is for another global")
)

// claims is the JWT payload of a zone token.
type claims struct {
	jwt.RegisteredClaims
}

// Issuer signs zone tokens for one global with an Ed25519 private key. It
// is safe for concurrent use.
type Issuer struct {
	key ed25519.PrivateKey
	kid string
	aud string
	now func() time.Time
}

// IssuerOption configures an Issuer.
type IssuerOption func(*Issuer)

// WithIssuerClock sets the clock used for "iat"/"nbf"/"exp" (default
// time.Now); for tests.
func WithIssuerClock(now func() time.Time) IssuerOption {
	return func(i *Issuer) { i.now = now }
}

// NewIssuer returns an Issuer signing with key tokens whose audience is
// audience: the cluster id of the global that accepts them (see
// ValidateClusterID). The Issuer keeps key; the caller must not modify it
// afterwards.
func NewIssuer(key ed25519.PrivateKey, audience string, opts ...IssuerOption) (*Issuer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("new issuer: signing key has %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	if err := ValidateClusterID(audience); err != nil {
		return nil, fmt.Errorf("new issuer: audience: %w", err)
	}
	i := &Issuer{key: key, kid: KeyID(key.Public().(ed25519.PublicKey)), aud: audience, now: time.Now}
	for _, o := range opts {
		o(i)
	}
	return i, nil
}

// PublicKey returns the public half of the signing key (to distribute to
// verifiers).
func (i *Issuer) PublicKey() ed25519.PublicKey {
	return i.key.Public().(ed25519.PublicKey)
}

// KeyID returns the "kid" this issuer puts in its tokens.
func (i *Issuer) KeyID() string { return i.kid }

// Generate returns a token for zone, valid from now for validFor. validFor
// must be positive: zone tokens always expire. The zone name must pass
// ValidateZoneName.
func (i *Issuer) Generate(zone string, validFor time.Duration) (string, error) {
	if err := ValidateZoneName(zone); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	if validFor <= 0 {
		return "", fmt.Errorf("generate token: validity %s must be positive (tokens always expire)", validFor)
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", fmt.Errorf("generate token id: %w", err)
	}
	now := i.now().Truncate(time.Second)
	c := claims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer:    IssuerName,
		Subject:   zone,
		Audience:  jwt.ClaimStrings{i.aud},
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(validFor)),
		ID:        hex.EncodeToString(jti[:]),
	}}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = i.kid
	signed, err := t.SignedString(i.key)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return signed, nil
}

// zoneNameRE is the zone name rule shared with the zone's --name: a DNS
// label. Cluster ids follow the same rule.
var zoneNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// idRE is a canonical token id.
var idRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// ValidateClusterID reports whether id can name a global in a token's
// audience: a DNS label, like zone names.
func ValidateClusterID(id string) error {
	if !zoneNameRE.MatchString(id) {
		return fmt.Errorf("cluster id %s is not a DNS label (1-%d of a-z, 0-9 and '-', starting and ending with a letter or digit)",
			logsafe.Peer(id), MaxZoneNameLength)
	}
	return nil
}

// ValidateZoneName reports whether name can be the subject of a zone token.
// The rule is the one zones are named by: a DNS label, 1 to
// MaxZoneNameLength lower-case letters, digits and '-', starting and ending
// with a letter or digit.
func ValidateZoneName(name string) error {
	if !zoneNameRE.MatchString(name) {
		return fmt.Errorf("zone name %s is not a DNS label (1-%d of a-z, 0-9 and '-', starting and ending with a letter or digit)",
			logsafe.Peer(name), MaxZoneNameLength)
	}
	return nil
}

// Verifier checks zone tokens against a fixed set of Ed25519 public keys. It
// is immutable and safe for concurrent use; build a new one to change keys.
type Verifier struct {
	keys    map[string]ed25519.PublicKey // by KeyID
	aud     string
	leeway  time.Duration
	now     func() time.Time
	revoked func(id string) bool // nil: nothing is revoked
}

// VerifierOption configures a Verifier.
type VerifierOption func(*Verifier)

// WithLeeway sets the tolerated clock skew (default DefaultLeeway). Negative
// values are treated as zero.
func WithLeeway(d time.Duration) VerifierOption {
	return func(v *Verifier) { v.leeway = max(d, 0) }
}

// WithRevoked makes Verify refuse, with ErrRevoked, a token whose id
// revoked reports (see RevocationList.Revoked). revoked must be safe for
// concurrent use.
func WithRevoked(revoked func(id string) bool) VerifierOption {
	return func(v *Verifier) { v.revoked = revoked }
}

// WithClock sets the verifier's clock (default time.Now); for tests.
func WithClock(now func() time.Time) VerifierOption {
	return func(v *Verifier) { v.now = now }
}

// NewVerifier returns a Verifier that trusts tokens signed by any of keys
// whose audience is audience (this global's cluster id, see
// ValidateClusterID). At least one key is required; duplicates are
// ignored.
func NewVerifier(keys []ed25519.PublicKey, audience string, opts ...VerifierOption) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, errors.New("new verifier: no verification keys")
	}
	if err := ValidateClusterID(audience); err != nil {
		return nil, fmt.Errorf("new verifier: audience: %w", err)
	}
	v := &Verifier{keys: make(map[string]ed25519.PublicKey, len(keys)), aud: audience, leeway: DefaultLeeway, now: time.Now}
	for n, k := range keys {
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("new verifier: key %d has %d bytes, want %d", n+1, len(k), ed25519.PublicKeySize)
		}
		v.keys[KeyID(k)] = append(ed25519.PublicKey(nil), k...)
	}
	for _, o := range opts {
		o(v)
	}
	return v, nil
}

// KeyIDs returns the ids of the trusted keys, sorted.
func (v *Verifier) KeyIDs() []string {
	ids := make([]string, 0, len(v.keys))
	for id := range v.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Verified is what a token that passed verification says.
type Verified struct {
	// Zone is the token's subject, equal to the claimed zone.
	Zone string
	// ID is the token's id ("jti"), what a revocation file lists.
	ID string
	// ExpiresAt is when the token expires.
	ExpiresAt time.Time
}

// Verify checks tok and returns the zone it was issued for. It succeeds only
// if tok is an EdDSA JWT signed by one of the verifier's keys, issued by
// IssuerName for the verifier's audience, without a "crit" header, with a
// canonical id, within its validity window (± leeway), and its subject
// equals claimedZone. An empty claimedZone never matches. Surrounding
// whitespace in tok is ignored (token files end in a newline).
//
// Every error wraps one of ErrMissing, ErrExpired, ErrNotYetValid,
// ErrUnknownKey, ErrBadSignature, ErrZoneMismatch, ErrWrongAudience,
// ErrRevoked (with WithRevoked) or ErrMalformed, and its text says what to
// do. The text is for global's log, not for the peer.
func (v *Verifier) Verify(tok, claimedZone string) (string, error) {
	got, err := v.VerifyToken(tok, claimedZone)
	return got.Zone, err
}

// VerifyToken is Verify that also returns the token's id and expiry, so
// that a caller that keeps them (to end the session when the token is
// revoked, to warn before it expires) does not parse the token again.
func (v *Verifier) VerifyToken(tok, claimedZone string) (Verified, error) {
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return Verified{}, fmt.Errorf("%w; start the zone with --token-file (create one on global: kds-engine token generate --zone NAME)", ErrMissing)
	}
	if len(tok) > MaxTokenSize {
		return Verified{}, fmt.Errorf("%w: %d bytes, the limit is %d; %s", ErrMalformed, len(tok), MaxTokenSize, generateHint)
	}
	var c claims
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{algEdDSA}),
		jwt.WithIssuer(IssuerName),
		jwt.WithAudience(v.aud),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(v.leeway),
		jwt.WithTimeFunc(v.now),
		jwt.WithStrictDecoding(),
	)
	parsed, err := parser.ParseWithClaims(tok, &c, v.keyFor)
	if err != nil {
		return Verified{}, v.classify(parsed, &c, err)
	}
	zone := c.Subject
	if err := ValidateZoneName(zone); err != nil {
		return Verified{}, fmt.Errorf("%w: subject: %v; %s", ErrMalformed, err, generateHint)
	}
	if !idRE.MatchString(c.ID) {
		return Verified{}, fmt.Errorf("%w: token id (jti) %s is not %d lower-case hexadecimal digits, so the token could not be revoked; %s",
			ErrMalformed, logsafe.Peer(c.ID), IDLength, generateHint)
	}
	if zone != claimedZone {
		claimed := "zone " + logsafe.Peer(claimedZone)
		if claimedZone == "" {
			claimed = "no zone"
		}
		return Verified{}, fmt.Errorf("%w: token is for zone %s, connection claims %s; give this zone a token generated for it (kds-engine token generate --zone %s)",
			ErrZoneMismatch, zone, claimed, cmp.Or(logsafe.Peer(claimedZone), "NAME"))
	}
	if v.revoked != nil && v.revoked(c.ID) {
		return Verified{}, fmt.Errorf("%w: token %s for zone %q is listed in the revocation file; give the zone a new token (kds-engine token generate --zone %s)",
			ErrRevoked, c.ID, zone, zone)
	}
	return Verified{Zone: zone, ID: c.ID, ExpiresAt: c.ExpiresAt.UTC()}, nil
}

// Info is what a zone token says about itself, read without verifying it.
type Info struct {
	Zone string `json:"zone"`
	// Audience is the cluster id of the global the token is for.
	Audience  string    `json:"audience"`
	ID        string    `json:"id"`
	KeyID     string    `json:"keyId"`
	IssuedAt  time.Time `json:"issuedAt"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// Inspect reads tok's claims without verifying its signature: for an
// operator looking up the id of a token to revoke it, and for a token
// verified already. Nothing it returns is to be trusted for access.
func Inspect(tok string) (Info, error) {
	tok = strings.TrimSpace(tok)
	if len(tok) > MaxTokenSize {
		return Info{}, fmt.Errorf("%w: %d bytes, the limit is %d", ErrMalformed, len(tok), MaxTokenSize)
	}
	var c claims
	t, _, err := jwt.NewParser().ParseUnverified(tok, &c)
	if err != nil {
		return Info{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if c.Issuer != IssuerName {
		return Info{}, fmt.Errorf("%w: issuer %q, want %q: not a kds-engine zone token", ErrMalformed, c.Issuer, IssuerName)
	}
	i := Info{Zone: c.Subject, ID: c.ID}
	if len(c.Audience) > 0 {
		i.Audience = strings.Join(c.Audience, ",")
	}
	i.KeyID, _ = t.Header["kid"].(string)
	if c.IssuedAt != nil {
		i.IssuedAt = c.IssuedAt.UTC()
	}
	if c.ExpiresAt != nil {
		i.ExpiresAt = c.ExpiresAt.UTC()
	}
	return i, nil
}

// keyFor selects the verification key named by the token's "kid". It runs
// only after the parser has checked that alg is EdDSA. A token whose header
// lists critical extensions is refused: the verifier understands none.
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	if _, crit := t.Header["crit"]; crit {
		return nil, errCrit
	}
	raw, present := t.Header["kid"]
	if !present {
		return nil, errNoKeyID
	}
	kid, ok := raw.(string)
	if !ok {
		return nil, errNoKeyID
	}
	key, ok := v.keys[kid]
	if !ok {
		return nil, &unknownKeyError{kid: kid}
	}
	return key, nil
}

var (
	errNoKeyID = errors.New(`token has no string "kid" header`)
	errCrit    = errors.New(`token header has "crit": no extension is understood, so none may be required`)
)

type unknownKeyError struct{ kid string }

func (e *unknownKeyError) Error() string { return "key id " + logsafe.Peer(e.kid) }

// classify maps a jwt parse error onto exactly one sentinel.
func (v *Verifier) classify(t *jwt.Token, c *claims, err error) error {
	var unknown *unknownKeyError
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("%w (token names key id %s; trusted key ids: %s); %s",
			ErrUnknownKey, logsafe.Peer(unknown.kid), strings.Join(v.KeyIDs(), ", "), generateHint)
	case errors.Is(err, errNoKeyID):
		return fmt.Errorf("%w: %v; %s", ErrMalformed, errNoKeyID, generateHint)
	case errors.Is(err, errCrit):
		return fmt.Errorf("%w: %v; %s", ErrMalformed, errCrit, generateHint)
	case errors.Is(err, jwt.ErrTokenMalformed):
		return fmt.Errorf("%w: %v; the token file must hold exactly what kds-engine token generate printed", ErrMalformed, err)
	case t != nil && (t.Method == nil || t.Method.Alg() != algEdDSA):
		alg, _ := t.Header["alg"].(string)
		return fmt.Errorf("%w: algorithm %s is not accepted, only %s; the token is forged — %s",
			ErrBadSignature, logsafe.Peer(alg), algEdDSA, generateHint)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return fmt.Errorf("%w: the token was altered or signed by a key global does not trust; %s", ErrBadSignature, generateHint)
	case errors.Is(err, jwt.ErrTokenExpired):
		at := "unknown time"
		if c.ExpiresAt != nil {
			at = c.ExpiresAt.UTC().Format(time.RFC3339)
		}
		return fmt.Errorf("%w at %s (zone %s); generate a new token on global: kds-engine token generate --zone %s",
			ErrExpired, at, logsafe.Peer(c.Subject), cmp.Or(logsafe.Peer(c.Subject), "NAME"))
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		at := "unknown time"
		if c.NotBefore != nil {
			at = c.NotBefore.UTC().Format(time.RFC3339)
		}
		return fmt.Errorf("%w: valid from %s, now is %s; check the clocks of zone and global", ErrNotYetValid, at,
			v.now().UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenInvalidAudience), errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && len(c.Audience) == 0 && c.Subject != "":
		aud := "none"
		if len(c.Audience) > 0 {
			aud = logsafe.Peer(strings.Join(c.Audience, ","))
		}
		return fmt.Errorf("%w: the token names global %s, this global's cluster id is %s; %s",
			ErrWrongAudience, aud, v.aud, generateHint)
	default:
		// Missing exp, wrong issuer, claims of the wrong JSON type, ...
		return fmt.Errorf("%w: %v; %s", ErrMalformed, err, generateHint)
	}
}

// Left is how long a token has left, as warnings print it: in whole
// minutes, or in seconds under a minute; "0s" once it has expired.
func Left(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Minute:
		return d.Round(time.Second).String()
	}
	return d.Truncate(time.Minute).String()
}

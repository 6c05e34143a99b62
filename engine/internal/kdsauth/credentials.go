package kdsauth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/credentials"

	"github.com/kds-engine/kds-engine/engine/internal/filewatch"
	"github.com/kds-engine/kds-engine/engine/internal/token"
	"github.com/kds-engine/kds-engine/engine/internal/trustfile"
)

// MaxTokenFileSize bounds the token file a zone reads.
const MaxTokenFileSize = 16 << 10

// warnTokenFile starts the warning about a token file change that cannot be
// used.
const warnTokenFile = "zone token file changed but cannot be used; still using the previous token, will try again when the file changes"

// TokenFileCredentials is the zone side of zone authentication: a
// credentials.PerRPCCredentials that sends the zone token from a file as
// "authorization: Bearer <token>" on every RPC (in practice: on every new
// KDS session).
//
// The file is read when the credentials are built (so a bad --token-file
// fails at start with a clear error) and looked at again (a stat) for
// every RPC: a token replaced on disk is picked up by the next session
// without a restart. The file must pass trustfile's rule for secrets:
// owned by root or the zone's user and not accessible by group or others
// (whoever reads it can connect as this zone). A changed file that cannot
// be used — unsafe, empty, missing — keeps the previous token, with one
// warning per change.
//
// It is safe for concurrent use.
type TokenFileCredentials struct {
	path     string
	insecure bool
	zone     string
	log      hclog.Logger
	now      func() time.Time
	tok      *filewatch.Watched[string]
	onAdopt  func(token.Info)
}

var _ credentials.PerRPCCredentials = (*TokenFileCredentials)(nil)

// CredentialsOption configures TokenFileCredentials.
type CredentialsOption func(*TokenFileCredentials)

// WithInsecureTransport lets the token travel over a connection without TLS
// (the --insecure mode). Anyone on the network path can then read the token
// and impersonate the zone until the token expires; use it only for local
// development.
func WithInsecureTransport() CredentialsOption {
	return func(c *TokenFileCredentials) { c.insecure = true }
}

// WithCredentialsLogger logs each token the credentials put to use (its
// zone, id and expiry; a warning when it is expired, expires within
// token.ExpiryWarning or names another zone than WithCredentialsZone) and
// each change of the file that cannot be used. Default: discard.
func WithCredentialsLogger(l hclog.Logger) CredentialsOption {
	return func(c *TokenFileCredentials) {
		if l != nil {
			c.log = l
		}
	}
}

// WithCredentialsZone is the zone these credentials speak for; a token for
// another zone is sent anyway (global decides) but logged as a warning.
// Global tells a refused zone nothing about why, so the zone says what it
// can see itself.
func WithCredentialsZone(zone string) CredentialsOption {
	return func(c *TokenFileCredentials) { c.zone = zone }
}

// WithTokenAdopted calls f with what a token says about itself each time the
// credentials put a token to use (at start and after each usable change of
// the file), for example to export its expiry. Tokens that are not zone
// tokens are not passed.
func WithTokenAdopted(f func(token.Info)) CredentialsOption {
	return func(c *TokenFileCredentials) { c.onAdopt = f }
}

// NewTokenFileCredentials returns credentials that send the token stored at
// path. It reads and checks the file once and returns its error, if any.
func NewTokenFileCredentials(path string, opts ...CredentialsOption) (*TokenFileCredentials, error) {
	c := &TokenFileCredentials{path: path, log: hclog.NewNullLogger(), now: time.Now}
	for _, o := range opts {
		o(c)
	}
	w, err := filewatch.New(filewatch.Config[string]{
		Files:   []string{path},
		Load:    c.readToken,
		Adopted: c.adopted,
		Rejected: func(err error) {
			c.log.Warn(warnTokenFile, "file", path, "error", err)
		},
		Interval: 0, // a stat per session: sessions are rare
	})
	if err != nil {
		return nil, err
	}
	c.tok = w
	return c, nil
}

// adopted logs what the zone can tell about a token it is about to use.
func (c *TokenFileCredentials) adopted(tok string, reload bool) {
	msg := "using zone token"
	if reload {
		msg = "zone token file changed; new sessions use the new token"
	}
	info, err := token.Inspect(tok)
	if err != nil {
		c.log.Warn(msg+"; it is not a zone token, global will refuse it", "file", c.path, "error", err)
		return
	}
	if c.onAdopt != nil {
		c.onAdopt(info)
	}
	args := []any{"file", c.path, "zone", info.Zone, "token_id", info.ID, "expires_at", info.ExpiresAt.Format(time.RFC3339)}
	left := info.ExpiresAt.Sub(c.now())
	switch {
	case c.zone != "" && info.Zone != c.zone:
		c.log.Warn(msg+"; the token is for another zone, global will refuse it: generate one for this zone", append(args, "this_zone", c.zone)...)
	case left <= 0:
		c.log.Warn(msg+"; the token has expired, global will refuse it: generate a new one on global", args...)
	case left <= token.ExpiryWarning:
		c.log.Warn(msg+"; the token expires soon: generate a new one on global and replace the file", append(args, "expires_in", token.Left(left))...)
	default:
		c.log.Info(msg, args...)
	}
}

// Info is what the token in use says about itself (not verified).
func (c *TokenFileCredentials) Info() (token.Info, error) { return token.Inspect(c.tok.Current()) }

// Problem says what is wrong with the token in use that the zone can see
// by itself, as of now: it has expired, it is for another zone, or it is
// not a zone token; "" when it sees nothing wrong.
// Global tells a refused zone nothing, so a zone adds this to a refusal:
// a token that was fine when the zone started may have expired since.
func (c *TokenFileCredentials) Problem() string {
	info, err := c.Info()
	if err != nil {
		return fmt.Sprintf("the token in %s is not a zone token (%v): put the output of kds-engine token generate --zone NAME in it", c.path, err)
	}
	now := c.now()
	switch {
	case c.zone != "" && info.Zone != c.zone:
		return fmt.Sprintf("the token in %s (id %s) is for zone %q, not this zone %q: generate one for this zone on global (kds-engine token generate --zone %s) and replace the file",
			c.path, info.ID, info.Zone, c.zone, c.zone)
	case !info.ExpiresAt.IsZero() && !now.Before(info.ExpiresAt):
		return fmt.Sprintf("the token in %s (id %s) expired at %s: generate a new one on global (kds-engine token generate --zone %s) and replace the file; the zone reads it at its next attempt",
			c.path, info.ID, info.ExpiresAt.UTC().Format(time.RFC3339), info.Zone)
	}
	return ""
}

// GetRequestMetadata implements credentials.PerRPCCredentials. Unless built
// with WithInsecureTransport it refuses to hand out the token over a
// connection without privacy and integrity protection.
func (c *TokenFileCredentials) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if !c.insecure {
		ri, _ := credentials.RequestInfoFromContext(ctx)
		if err := credentials.CheckSecurityLevel(ri.AuthInfo, credentials.PrivacyAndIntegrity); err != nil {
			return nil, fmt.Errorf("refusing to send the zone token over an insecure connection (configure TLS or pass --insecure): %w", err)
		}
	}
	return map[string]string{MetadataAuthorization: bearerPrefix + c.tok.Current()}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: true
// unless built with WithInsecureTransport.
func (c *TokenFileCredentials) RequireTransportSecurity() bool { return !c.insecure }

func (c *TokenFileCredentials) readToken() (string, error) {
	data, err := trustfile.ReadFile(c.path, trustfile.Secret, "zone token file", MaxTokenFileSize)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("zone token file %s is empty; put the output of kds-engine token generate --zone NAME in it", c.path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", errors.New("zone token file " + c.path + " holds more than one word; it must hold only the token")
	}
	return tok, nil
}

package kdsauth

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"google.golang.org/grpc/credentials"
)

// MaxTokenFileSize bounds the token file a zone reads.
const MaxTokenFileSize = 16 << 10

// TokenFileCredentials is the zone side of zone authentication: a
// credentials.PerRPCCredentials that sends the zone token from a file as
// "authorization: Bearer <token>" on every RPC (in practice: on every new
// KDS session).
//
// The file is read when the credentials are built (so a bad --token-file
// fails at start with a clear error) and again for every RPC, so a token
// replaced on disk is picked up by the next session without a restart. The
// file must not be accessible by group or others: whoever reads it can
// connect as this zone.
//
// It is safe for concurrent use.
type TokenFileCredentials struct {
	path     string
	insecure bool
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

// NewTokenFileCredentials returns credentials that send the token stored at
// path. It reads and checks the file once and returns its error, if any.
func NewTokenFileCredentials(path string, opts ...CredentialsOption) (*TokenFileCredentials, error) {
	c := &TokenFileCredentials{path: path}
	for _, o := range opts {
		o(c)
	}
	if _, err := c.readToken(); err != nil {
		return nil, err
	}
	return c, nil
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
	tok, err := c.readToken()
	if err != nil {
		return nil, err
	}
	return map[string]string{MetadataAuthorization: bearerPrefix + tok}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: true
// unless built with WithInsecureTransport.
func (c *TokenFileCredentials) RequireTransportSecurity() bool { return !c.insecure }

func (c *TokenFileCredentials) readToken() (string, error) {
	info, err := os.Stat(c.path)
	if err != nil {
		return "", fmt.Errorf("zone token file: %w", err)
	}
	if !info.Mode().IsRegular() {
		return "", fmt.Errorf("zone token file %s is not a regular file", c.path)
	}
	if info.Size() > MaxTokenFileSize {
		return "", fmt.Errorf("zone token file %s is %d bytes, the limit is %d; it must hold only the token", c.path, info.Size(), MaxTokenFileSize)
	}
	if perm := info.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return "", fmt.Errorf("zone token file %s has mode %04o and is accessible by group or others; "+
			"anyone who reads it can connect as this zone: run chmod 600 %s", c.path, perm, c.path)
	}
	data, err := os.ReadFile(c.path)
	if err != nil {
		return "", fmt.Errorf("read zone token file: %w", err)
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

package engine

import (
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/kds-engine/kds-engine/engine/internal/httpauth"
	"github.com/kds-engine/kds-engine/engine/internal/kdsauth"
	"github.com/kds-engine/kds-engine/engine/internal/kdsgrpc"
	"github.com/kds-engine/kds-engine/engine/internal/tlsutil"
	"github.com/kds-engine/kds-engine/engine/internal/token"
)

// DefaultTokenValidity is how long a zone token is valid unless told.
const DefaultTokenValidity = token.DefaultValidity

// TokenExpiryWarning is how long before its token expires a session that
// starts is warned about.
const TokenExpiryWarning = token.ExpiryWarning

// ClusterIDFile is where global keeps its cluster id unless told.
func ClusterIDFile(dataDir string) string { return filepath.Join(dataDir, "cluster-id") }

// ClusterID returns global's cluster id, the audience of its zone tokens:
// configured if set (it must be a DNS label), otherwise the id stored in
// the data dir, created on first use. created reports that it was.
func ClusterID(dataDir, configured string) (id string, created bool, err error) {
	if configured != "" {
		if err := token.ValidateClusterID(configured); err != nil {
			return "", false, err
		}
		return configured, false, nil
	}
	id, created, err = token.LoadOrCreateClusterID(ClusterIDFile(dataDir))
	if err != nil {
		return "", false, fmt.Errorf("cluster id: %w", err)
	}
	return id, created, nil
}

// SigningKeyFile is where global keeps its token signing key unless told.
func SigningKeyFile(dataDir, configured string) string {
	if configured != "" {
		return configured
	}
	return filepath.Join(dataDir, "zone-token-signing.key")
}

// signingKey loads the signing key: a configured file must exist; the
// default one in the data dir is created on first use.
func signingKey(dataDir, configured string) (ed25519.PrivateKey, error) {
	path := SigningKeyFile(dataDir, configured)
	if configured != "" {
		return token.LoadSigningKey(path)
	}
	key, _, err := token.LoadOrCreateSigningKey(path)
	return key, err
}

// GenerateZoneToken signs a token for zone with global's signing key (the
// one in dataDir unless signingKeyFile is set) for the global whose cluster
// id is clusterID (the one in dataDir unless set; see ClusterID), valid for
// validFor.
func GenerateZoneToken(dataDir, signingKeyFile, clusterID, zone string, validFor time.Duration) (string, error) {
	key, err := signingKey(dataDir, signingKeyFile)
	if err != nil {
		return "", err
	}
	aud, _, err := ClusterID(dataDir, clusterID)
	if err != nil {
		return "", err
	}
	iss, err := token.NewIssuer(key, aud)
	if err != nil {
		return "", err
	}
	return iss.Generate(zone, validFor)
}

// ZoneTokenInfo is what a zone token says about itself (not verified). ID
// is the value to list in the revocation file to revoke the token.
type ZoneTokenInfo = token.Info

// InspectZoneToken reads a zone token's zone, id, key id, issue and expiry
// times without verifying it.
func InspectZoneToken(tok string) (ZoneTokenInfo, error) { return token.Inspect(tok) }

// GenerateDemoPKI writes a CA, a server certificate for localhost and client
// certificates for zones (each naming its zone as global's check requires)
// into dir, for demos and tests. It returns the CA, server certificate and
// key file paths, and each client's certificate and key files.
func GenerateDemoPKI(dir string, zones []string) (ca, cert, key string, clients map[string][2]string, err error) {
	pki, err := tlsutil.GeneratePKI(dir, []string{"localhost", "127.0.0.1", "::1"}, zones)
	if err != nil {
		return "", "", "", nil, err
	}
	clients = map[string][2]string{}
	for z, kp := range pki.Clients {
		clients[z] = [2]string{kp.CertFile, kp.KeyFile}
	}
	return pki.CAFile, pki.Server.CertFile, pki.Server.KeyFile, clients, nil
}

// kdsServerOptions returns global's TLS credentials and zone authentication.
func (e *Engine) kdsServerOptions() ([]grpc.ServerOption, error) {
	var opts []grpc.ServerOption
	if e.cfg.Insecure {
		e.log.Warn("KDS port runs WITHOUT TLS (--insecure): zone tokens travel in plaintext; use only on a trusted network",
			"kds_addr", e.cfg.KDSAddress, "insecure_allow_remote", e.cfg.InsecureAllowRemote)
	} else {
		if e.cfg.TLSCertFile == "" || e.cfg.TLSKeyFile == "" {
			return nil, errors.New("KDS TLS: set --tls-cert-file and --tls-key-file (or --insecure to run without TLS)")
		}
		tc, err := tlsutil.ServerConfig(e.cfg.TLSCertFile, e.cfg.TLSKeyFile, e.cfg.ClientCAFile, e.log.Named("kds-tls"),
			tlsutil.WithOnLoad(e.certificateExpiry("tls-cert-file", "client-ca-file")))
		if err != nil {
			return nil, fmt.Errorf("KDS TLS: %w", err)
		}
		opts = append(opts, kdsgrpc.TLSServerOptions(credentials.NewTLS(tc))...)
	}
	if err := e.checkJoiningReplica(); err != nil {
		return nil, err
	}
	key, err := signingKey(e.cfg.DataDir, e.cfg.TokenSigningKeyFile)
	if err != nil {
		return nil, fmt.Errorf("zone token signing key: %w", err)
	}
	clusterID, created, err := ClusterID(e.cfg.DataDir, e.cfg.ClusterID)
	if err != nil {
		return nil, err
	}
	e.log.Info("zone tokens must name this global's cluster id as their audience", "cluster_id", clusterID, "created", created)
	// The signing key file, the verification key files and the revocation
	// file are reloaded when they change; the public half of the signing
	// key in the file is always trusted.
	e.revoked = newRevocations(e.log.Named("token-revocations"))
	var vopts []token.VerifierOption
	if e.cfg.TokenRevocationFile != "" {
		list, err := e.revoked.load(e.cfg.TokenRevocationFile)
		if err != nil {
			return nil, fmt.Errorf("zone token revocation file: %w", err)
		}
		vopts = append(vopts, token.WithRevoked(list.Revoked))
	}
	v, err := token.NewKeyFileVerifier(key.Public().(ed25519.PublicKey), clusterID, e.cfg.TokenVerificationKeyFiles,
		e.log.Named("token-keys"), token.WithVerifierOptions(vopts...),
		token.WithSigningKeyFile(SigningKeyFile(e.cfg.DataDir, e.cfg.TokenSigningKeyFile)))
	if err != nil {
		return nil, fmt.Errorf("zone token verification keys: %w", err)
	}
	aopts := []kdsauth.Option{
		kdsauth.WithSessionsPerMinute(e.cfg.SessionsPerMinute),
		kdsauth.WithOnRefused(func(_, reason string) { e.metrics.AuthRefused(reason) }),
	}
	switch {
	case e.cfg.ClientCAFile == "" || e.cfg.Insecure:
	case e.cfg.ClientCertAnyZone:
		e.log.Warn("zone client certificates are not checked for the zone they name (--client-cert-must-name-zone=false): " +
			"a zone's certificate with another zone's token opens a session for that zone")
	default:
		aopts = append(aopts, kdsauth.WithClientCertZone())
	}
	auth, err := kdsauth.NewAuthenticator(v, e.log, aopts...)
	if err != nil {
		return nil, err
	}
	return append(opts, grpc.StreamInterceptor(auth.StreamInterceptor()), grpc.UnaryInterceptor(auth.UnaryInterceptor())), nil
}

// kdsDialOptions returns the zone's token and, without TLS, its insecure
// transport; with TLS, credsFor returns the TLS credentials that verify
// global's certificate for one server name (each global address's host, or
// TLSServerName), sharing one CA file and client certificate.
func (e *Engine) kdsDialOptions() (opts []grpc.DialOption, credsFor func(serverName string) (credentials.TransportCredentials, error), err error) {
	if e.cfg.TokenFile == "" {
		return nil, nil, errors.New("zone token: set --token-file (generate one on global with `kds-engine token generate --zone " + e.cfg.ZoneName + "`)")
	}
	copts := []kdsauth.CredentialsOption{
		kdsauth.WithCredentialsLogger(e.log.Named("zone-token")),
		kdsauth.WithCredentialsZone(e.cfg.ZoneName),
		// A zone exports its own token's expiry too: it can alert on it
		// before global refuses the token.
		kdsauth.WithTokenAdopted(func(info token.Info) { e.metrics.SetZoneTokenExpiry(e.cfg.ZoneName, info.ExpiresAt) }),
	}
	if e.cfg.Insecure {
		e.log.Warn("connecting to global WITHOUT TLS (--insecure): the zone token travels in plaintext")
		copts = append(copts, kdsauth.WithInsecureTransport())
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	} else {
		if e.cfg.CAFile == "" {
			return nil, nil, errors.New("KDS TLS: set --ca-file to the CA that signed global's certificate (or --insecure to run without TLS)")
		}
		cc, err := tlsutil.NewClientConfigs(e.cfg.CAFile, e.cfg.CertFile, e.cfg.KeyFile, e.log.Named("kds-tls"),
			tlsutil.WithOnLoad(e.certificateExpiry("cert-file", "ca-file")))
		if err != nil {
			return nil, nil, fmt.Errorf("KDS TLS: %w", err)
		}
		credsFor = func(serverName string) (credentials.TransportCredentials, error) {
			tc, err := cc.For(serverName)
			if err != nil {
				return nil, fmt.Errorf("KDS TLS: %w", err)
			}
			return credentials.NewTLS(tc), nil
		}
	}
	creds, err := kdsauth.NewTokenFileCredentials(e.cfg.TokenFile, copts...)
	if err != nil {
		return nil, nil, fmt.Errorf("zone token: %w", err)
	}
	e.zoneToken = creds
	return append(opts, grpc.WithPerRPCCredentials(creds)), credsFor, nil
}

// apiLimits are the admin API server's timeouts and connection limit.
func (e *Engine) apiLimits() httpauth.Limits {
	return httpauth.Limits{
		ReadTimeout:    e.cfg.APIReadTimeout,
		WriteTimeout:   e.cfg.APIWriteTimeout,
		IdleTimeout:    e.cfg.APIIdleTimeout,
		MaxConnections: e.cfg.APIMaxConnections,
	}.WithDefaults()
}

// apiServer wraps the admin API with its request rules (Host, Origin,
// Content-Type, body size), its token and TLS as configured, and refuses a
// network-reachable bind without both. Serve it on
// httpauth.LimitListener(lis, e.apiLimits()).
func (e *Engine) apiServer(h http.Handler) (*httpauth.Server, *tls.Config, error) {
	tok := ""
	if e.cfg.APITokenFile != "" {
		var err error
		if tok, err = httpauth.LoadTokenFile(e.cfg.APITokenFile); err != nil {
			return nil, nil, fmt.Errorf("admin API token: %w", err)
		}
	}
	tlsOn := e.cfg.APITLSCertFile != "" || e.cfg.APITLSKeyFile != ""
	if err := httpauth.CheckBind(e.cfg.APIAddress, tlsOn, tok); err != nil {
		return nil, nil, err
	}
	if tok != "" {
		h = httpauth.Middleware(tok, h)
	}
	h = httpauth.Guard(httpauth.RequestRules{
		BoundAddr:    e.cfg.APIAddress,
		AllowedHosts: e.cfg.APIAllowedHosts,
		MaxBodyBytes: e.cfg.APIMaxBodySize,
	}, h)
	limits := e.apiLimits()
	e.log.Debug("admin API limits", "read_header_timeout", limits.ReadHeaderTimeout, "read_timeout", limits.ReadTimeout,
		"write_timeout", limits.WriteTimeout, "idle_timeout", limits.IdleTimeout, "max_connections", limits.MaxConnections,
		"max_body_size", e.cfg.APIMaxBodySize, "allowed_hosts", e.cfg.APIAllowedHosts)
	srv := httpauth.NewServer(h, limits, e.log.Named("api"))
	if !tlsOn {
		return srv, nil, nil
	}
	tc, err := tlsutil.ServerConfig(e.cfg.APITLSCertFile, e.cfg.APITLSKeyFile, "", e.log.Named("api-tls"),
		tlsutil.WithOnLoad(e.certificateExpiry("api-tls-cert-file", "")))
	if err != nil {
		return nil, nil, fmt.Errorf("admin API TLS: %w", err)
	}
	return srv, tc, nil
}

// certificateExpiry returns a tlsutil.WithOnLoad callback that records the
// expiry of the certificates in use under the setting that names their
// file: certSetting for a certificate and key, caSetting for a CA file.
func (e *Engine) certificateExpiry(certSetting, caSetting string) func(tlsutil.Loaded) {
	return func(l tlsutil.Loaded) {
		setting := certSetting
		if l.CA {
			setting = caSetting
		}
		e.metrics.SetCertificateExpiry(setting, l.NotAfter)
	}
}

// refusalHint is what the zone can tell about its own token when global
// refused a session as unauthenticated: global says nothing about why, and
// a token that was fine at start may have expired since.
func (e *Engine) refusalHint(err error) string {
	if h := e.connectHint(err); h != "" {
		return h
	}
	if e.zoneToken == nil || !unauthenticated(err) {
		return ""
	}
	if p := e.zoneToken.Problem(); p != "" {
		return p
	}
	// A revoked token looks fine from here; global said so only when it
	// ended the session that used it.
	info, ierr := e.zoneToken.Info()
	e.mu.Lock()
	revoked := e.revokedToken
	e.mu.Unlock()
	if ierr == nil && revoked != "" && info.ID == revoked {
		return fmt.Sprintf("global ended this zone's last session because its token (id %s, in %s) is revoked: generate a new one on global (kds-engine token generate --zone %s) and replace the file; the zone reads it at its next attempt",
			info.ID, e.cfg.TokenFile, e.cfg.ZoneName)
	}
	return ""
}

// sessionEndedByAuth remembers, on a zone whose session global ended as
// unauthenticated naming the token in use (a revocation), that token's id,
// so that the refusals of the next attempts can say why.
func (e *Engine) sessionEndedByAuth(err error) {
	if e.zoneToken == nil || !unauthenticated(err) {
		return
	}
	info, ierr := e.zoneToken.Info()
	if ierr != nil || info.ID == "" || !strings.Contains(err.Error(), info.ID) {
		return
	}
	e.mu.Lock()
	e.revokedToken = info.ID
	e.mu.Unlock()
}

// unauthenticated reports whether err is (or carries, as text through the
// layers of a session's end) global's Unauthenticated status.
func unauthenticated(err error) bool {
	if err == nil {
		return false
	}
	return status.Code(err) == codes.Unauthenticated || strings.Contains(err.Error(), "code = Unauthenticated")
}

// connectHint says what to check for the failures of a zone's connection
// to global that name only their symptom: the TLS handshake refused
// global's certificate, global wants a client certificate, or the address
// does not speak KDS with the zone's TLS setting.
func (e *Engine) connectHint(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "x509: certificate signed by unknown authority"):
		return fmt.Sprintf("global's certificate is not signed by a CA in --ca-file %s: give the zone the CA certificate that signed global's --tls-cert-file", e.cfg.CAFile)
	case strings.Contains(msg, "x509: certificate is valid for"):
		return "global's certificate does not name the host the zone dials: put a name the certificate is valid for in --global, or set --tls-server-name to one"
	case strings.Contains(msg, "x509: certificate has expired or is not yet valid"):
		return "global's certificate has expired (or is not valid yet) by this zone's clock: renew global's --tls-cert-file, or fix the clock"
	case strings.Contains(msg, "certificate required"):
		return "global requires a client certificate (mTLS, --client-ca-file on global): start the zone with --cert-file and --key-file"
	case strings.Contains(msg, "error reading server preface"):
		return "the address closed the connection or did not answer as a KDS port; if this persists, check that --global names global's KDS port (--kds-addr, 5685 by default), not its admin API, and that both sides agree on TLS (a global with --tls-cert-file wants the zone's --ca-file, not --insecure)"
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "the address does not answer with TLS: check that --global names global's KDS port (--kds-addr, 5685 by default), not its admin API, and that global runs with TLS (or both sides with --insecure)"
	}
	return ""
}

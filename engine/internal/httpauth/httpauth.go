// Package httpauth protects the admin HTTP API: a bearer-token middleware,
// loading the token from a file, the rule that decides whether an address
// may be bound without TLS and a token, the request rules that keep a web
// page in a browser from using the API (Guard), and the server limits that
// keep clients from holding connections and memory (NewServer,
// LimitListener).
//
// The admin API can change every resource a control plane serves, so it is
// bound to loopback by default; binding it anywhere else requires TLS and a
// token (CheckBind). Loopback alone does not keep browsers out: any page a
// local browser loads can send requests to 127.0.0.1, and a page whose name
// it rebinds to 127.0.0.1 can even read the answers. Guard refuses such
// requests by their Host, Origin and Content-Type. The health endpoints
// /healthz and /readyz stay open even when a token is set: orchestrators
// and load balancers probe them without credentials, and they reveal
// nothing but liveness and readiness. The web UI's static assets under
// /ui/ are open too (GET and HEAD): they are the same in every binary and
// carry no data. Everything else — resources, zones, /metrics — needs the
// token.
package httpauth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path"
	"slices"
	"strings"

	"github.com/kds-engine/kds-engine/engine/apitypes"
	"github.com/kds-engine/kds-engine/engine/internal/trustfile"
)

const (
	// MinTokenLength is the shortest admin API token LoadTokenFile accepts.
	MinTokenLength = 16
	// MaxTokenFileSize bounds the token file.
	MaxTokenFileSize = 4 << 10

	bearerPrefix = "Bearer "
)

// publicPaths are served without a token (exact path match).
var publicPaths = []string{"/healthz", "/readyz"}

// UIPrefix is the path of the web UI. Its static assets (HTML, CSS,
// JavaScript, identical in every kds-engine binary and holding no data) are
// served without a token for GET and HEAD, so that a browser can load the
// page that then asks for the token; every piece of data the page shows
// comes from the API routes, which still require it.
const UIPrefix = "/ui/"

// Public reports whether r may pass without a token: the PublicPaths (any
// method), and GET or HEAD of the web UI's assets (UIPrefix, or the bare
// "/ui" that redirects there).
func Public(r *http.Request) bool {
	p := r.URL.Path
	if slices.Contains(publicPaths, p) {
		return true
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	// Only clean paths: "/ui/../api/v1/zones" is not the UI.
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	return clean == p && (p == "/ui" || strings.HasPrefix(p, UIPrefix))
}

// PublicPaths returns the paths Middleware serves without a token (exact
// match): /healthz and /readyz. The result is a copy.
func PublicPaths() []string { return append([]string(nil), publicPaths...) }

// ErrInsecureBind is returned (wrapped) by CheckBind when a non-loopback
// address lacks TLS or a token.
var ErrInsecureBind = errors.New("admin API would be reachable from the network without protection")

// Middleware returns a handler that passes a request to next only if it
// carries "Authorization: Bearer <token>" with exactly token (compared in
// constant time), except for the PublicPaths, which always pass. Other
// requests get 401 with a JSON body {"code":"unauthenticated","message":...}
// and a WWW-Authenticate header. An empty token refuses every non-public
// request (fail closed). The returned handler is safe for concurrent use.
func Middleware(token string, next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	configured := token != ""
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if Public(r) {
			next.ServeHTTP(w, r)
			return
		}
		if !configured {
			unauthorized(w, "the admin API has no token configured; start the server with --api-token-file")
			return
		}
		values := r.Header.Values("Authorization")
		switch {
		case len(values) == 0:
			unauthorized(w, "missing Authorization header; send Authorization: Bearer <token> with the token from --api-token-file")
			return
		case len(values) > 1:
			unauthorized(w, "more than one Authorization header; send exactly one")
			return
		}
		v := values[0]
		if len(v) < len(bearerPrefix) || !strings.EqualFold(v[:len(bearerPrefix)], bearerPrefix) {
			unauthorized(w, "Authorization header must be \"Bearer <token>\"")
			return
		}
		got := sha256.Sum256([]byte(strings.TrimSpace(v[len(bearerPrefix):])))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			unauthorized(w, "invalid token; use the token from the server's --api-token-file")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("WWW-Authenticate", `Bearer realm="kds-engine"`)
	w.WriteHeader(http.StatusUnauthorized)
	_ = json.NewEncoder(w).Encode(apitypes.Error{Code: apitypes.CodeUnauthenticated, Message: msg}) //nolint:errchkjson // client gone
}

// LoadTokenFile reads the admin API token from path: the file's content
// without surrounding whitespace. The file must pass trustfile's rule for
// secrets (owned by root or the engine's user, not accessible by group or
// others); an empty token, a token with inner whitespace and one shorter
// than MinTokenLength are refused too, each with a message saying how to
// fix it.
func LoadTokenFile(path string) (string, error) {
	data, err := trustfile.ReadFile(path, trustfile.Secret, "admin API token file", MaxTokenFileSize)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(data))
	switch {
	case tok == "":
		return "", fmt.Errorf("admin API token file %s is empty; write a random token into it, e.g. openssl rand -hex 32 > %s", path, path)
	case strings.ContainsAny(tok, " \t\r\n"):
		return "", fmt.Errorf("admin API token file %s holds more than one word; it must hold only the token", path)
	case len(tok) < MinTokenLength:
		return "", fmt.Errorf("admin API token in %s is %d characters, at least %d are required; e.g. openssl rand -hex 32 > %s",
			path, len(tok), MinTokenLength, path)
	}
	return tok, nil
}

// GenerateToken returns a new random admin API token (32 random bytes,
// hex encoded).
func GenerateToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// IsLoopback reports whether the listen address addr (HOST:PORT) binds only
// to the loopback interface: host "localhost" or a loopback IP. An empty
// host or an unspecified IP ("0.0.0.0", "::") binds every interface and is
// not loopback; so is any other host name, since it may resolve to anything.
func IsLoopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("address %q: %w", addr, err)
	}
	if strings.EqualFold(host, "localhost") {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}

// CheckBind decides whether the admin API may listen on addr: always on a
// loopback address; elsewhere only with TLS (tlsEnabled) and a token. The
// error wraps ErrInsecureBind and says which is missing and which flags
// provide it.
func CheckBind(addr string, tlsEnabled bool, token string) error {
	loopback, err := IsLoopback(addr)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if loopback {
		return nil
	}
	var missing []string
	if !tlsEnabled {
		missing = append(missing, "TLS (set --api-tls-cert-file and --api-tls-key-file)")
	}
	if token == "" {
		missing = append(missing, "a token (set --api-token-file)")
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s is not a loopback address, so the admin API requires TLS and a token; missing %s; "+
		"or bind it to 127.0.0.1", ErrInsecureBind, addr, strings.Join(missing, " and "))
}

package httpauth

import (
	"encoding/json"
	"fmt"
	"mime"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/kds-engine/kds-engine/engine/apitypes"
	"github.com/kds-engine/kds-engine/engine/internal/logsafe"
)

// RequestRules configure Guard.
type RequestRules struct {
	// BoundAddr is the address the API listens on (HOST:PORT, as
	// configured). Its host is always an accepted Host header.
	BoundAddr string
	// AllowedHosts are further host names clients may reach the API by
	// (matched case-insensitively, without the port).
	AllowedHosts []string
	// MaxBodyBytes bounds request bodies; zero or less: no bound.
	MaxBodyBytes int64
}

// Guard returns a handler that refuses, before next sees them, requests a
// browser could have been tricked into sending, and bodies over the limit.
// Each refusal is a JSON apitypes.Error whose code and message name the rule:
//
//   - Host: the Host header must name the API's bound host, "localhost",
//     an IP address, or a host in AllowedHosts (any port: port forwards
//     change it, and an attacker's page chooses its own). A web page that
//     rebinds its own name to 127.0.0.1 sends its name, so DNS rebinding
//     is refused: 403 host_not_allowed.
//   - Origin: a request a browser marks as coming from another origin
//     (Sec-Fetch-Site, else an Origin header that does not match Host),
//     whatever its method: 403 cross_origin. The rule is the standard
//     library's http.CrossOriginProtection, applied to reads as well.
//   - Content-Type: a request with a body (POST, PUT, PATCH) must be
//     application/json, which a cross-site HTML form cannot send: 415
//     unsupported_media_type.
//   - Size: a body whose Content-Length is over MaxBodyBytes is refused at
//     once, and every body is read through http.MaxBytesReader, so no
//     more than MaxBodyBytes+1 bytes are ever read: 413 too_large, with
//     the limit.
//
// Responses of the health endpoints (PublicPaths) carry "Connection:
// close", so probes cannot keep connections open.
func Guard(rules RequestRules, next http.Handler) http.Handler {
	boundHost, _, err := net.SplitHostPort(rules.BoundAddr)
	if err != nil {
		boundHost = rules.BoundAddr
	}
	allowed := []string{"localhost"}
	if boundHost != "" {
		allowed = append(allowed, strings.ToLower(boundHost))
	}
	for _, h := range rules.AllowedHosts {
		allowed = append(allowed, strings.ToLower(hostOnly(h)))
	}
	cop := http.NewCrossOriginProtection()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slices.Contains(publicPaths, r.URL.Path) {
			w.Header().Set("Connection", "close")
		}
		if host := hostOnly(r.Host); !hostAllowed(host, allowed) {
			refuse(w, http.StatusForbidden, apitypes.CodeHostNotAllowed, fmt.Sprintf(
				"Host header %s names neither this API's address (%s), localhost, an IP address nor a host in --api-allowed-hosts; "+
					"if clients reach the API by that name, add it to --api-allowed-hosts (rule: allowed hosts, against DNS rebinding)",
				logsafe.Peer(r.Host), rules.BoundAddr))
			return
		}
		// The standard rule, for every method: a copy that looks unsafe.
		probe := *r
		probe.Method = http.MethodPost
		if err := cop.Check(&probe); err != nil {
			refuse(w, http.StatusForbidden, apitypes.CodeCrossOrigin, fmt.Sprintf(
				"%v (Origin %s, Host %s); the admin API serves no other origin (rule: same origin, against cross-site requests)",
				err, logsafe.Peer(r.Header.Get("Origin")), logsafe.Peer(r.Host)))
			return
		}
		if hasBody(r.Method) {
			if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
				refuse(w, http.StatusUnsupportedMediaType, apitypes.CodeUnsupportedMediaType, fmt.Sprintf(
					"%s %s with Content-Type %s: write requests must send Content-Type: application/json (rule: JSON writes, against cross-site form posts)",
					r.Method, r.URL.Path, logsafe.Peer(r.Header.Get("Content-Type"))))
				return
			}
		}
		if limit := rules.MaxBodyBytes; limit > 0 {
			if r.ContentLength > limit {
				refuse(w, http.StatusRequestEntityTooLarge, apitypes.CodeTooLarge, fmt.Sprintf(
					"request body is %d bytes, over the limit of %d bytes (--api-max-body-size)", r.ContentLength, limit))
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
		next.ServeHTTP(w, r)
	})
}

// hasBody reports whether requests of method carry a body the API reads.
func hasBody(method string) bool {
	return method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch
}

// hostOnly strips the port (and IPv6 brackets) from a Host header value.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

func hostAllowed(host string, allowed []string) bool {
	if host == "" || net.ParseIP(host) != nil {
		// No name (HTTP/1.0) or an address: DNS rebinding needs a name.
		return true
	}
	return slices.Contains(allowed, strings.ToLower(strings.TrimSuffix(host, ".")))
}

func refuse(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(apitypes.Error{Code: code, Message: msg}) //nolint:errchkjson // client gone
}

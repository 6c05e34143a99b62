// Package ui is kds-engine's read-only web UI: static HTML, CSS and
// JavaScript embedded in the binary and served under /ui/ on the admin
// API's address. The page holds no data of its own; it reads the admin
// API's JSON routes with the token the user enters (kept in the tab's
// sessionStorage, sent as an Authorization header, never in a URL) and
// polls them at most once a second. docs/ui.md describes the pages.
//
// The assets carry no secrets and are the same in every binary, so they are
// served without a token (see httpauth.Public); every response carries a
// strict Content-Security-Policy (scripts and styles from this origin only,
// no inline script, fetch only to this origin, no framing) and
// X-Content-Type-Options: nosniff.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed assets
var assets embed.FS

// Prefix is the path the UI is served under.
const Prefix = "/ui/"

// ContentSecurityPolicy is sent with every response of Handler.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the UI's assets for requests under Prefix. Unknown paths
// under it get the page itself (index.html), so that a reload of any view
// works; its views are chosen by the URL fragment. The handler is safe for
// concurrent use.
func Handler() http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		name := strings.TrimPrefix(r.URL.Path, Prefix)
		if name == "" || name == "index.html" {
			serveIndex(w, r, sub)
			return
		}
		if _, err := fs.Stat(sub, name); err != nil {
			serveIndex(w, r, sub)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/" + name
		files.ServeHTTP(w, r2)
	})
}

func serveIndex(w http.ResponseWriter, r *http.Request, sub fs.FS) {
	data, err := fs.ReadFile(sub, "index.html")
	if err != nil {
		http.Error(w, "index.html missing from the build", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(data)
}

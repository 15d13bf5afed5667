// Package dashboard serves notifyd's browser dashboard: one page of plain
// HTML, CSS and JavaScript embedded in the binary, with no build step and
// nothing fetched from anywhere but the daemon that serves it.
//
// The page is a client of the WebSocket protocol 1.1 (docs/websocket.md):
// on one connection to api.PathWS it keeps several panes, each a named
// subscription with its own filter (changed in place with update), opens
// each with the recent history and pages further back when a table is
// scrolled to its end; it shows whose session it is, the filter box with
// the daemon's parse errors, per-source rates, loss counters, the
// sources' health and the subscribers from status messages, and resumes
// every pane from its last seq when it reconnects. docs/dashboard.md
// describes it.
//
// Handler serves only static files; authentication is the web server's
// business. The page takes a one-time login code (#login=…, from
// notifyctl dashboard) from the URL fragment and exchanges it for a
// session cookie (api.PathSession), or takes the administrator's token
// (#token=… or ?token=…) and keeps it in sessionStorage; either is removed
// from the address bar at once.
package dashboard

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
)

//go:embed static
var static embed.FS

// ContentSecurityPolicy is sent with every file: scripts, styles and
// images only from the daemon itself, connections only back to it
// (same-origin WebSocket included), no framing.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type file struct {
	body  []byte
	ctype string
	etag  string
}

// Files lists the embedded file names (for tests and docs).
func Files() []string {
	var names []string
	fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, strings.TrimPrefix(p, "static/"))
		}
		return nil
	})
	return names
}

// Handler returns the handler for the dashboard's files. Mount it at "/"
// (or under a prefix with http.StripPrefix); "/" and "/index.html" serve
// the page. Only GET and HEAD are allowed.
func Handler() http.Handler {
	files := map[string]file{}
	for _, name := range Files() {
		b, err := static.ReadFile("static/" + name)
		if err != nil {
			// Embedded files are always readable.
			panic("dashboard: read embedded " + name + ": " + err.Error())
		}
		sum := sha256.Sum256(b)
		ct := mime.TypeByExtension(path.Ext(name))
		switch path.Ext(name) {
		case ".js":
			ct = "text/javascript; charset=utf-8"
		case ".html":
			ct = "text/html; charset=utf-8"
		case ".css":
			ct = "text/css; charset=utf-8"
		case ".svg":
			ct = "image/svg+xml"
		}
		files[name] = file{body: b, ctype: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
		if name == "" {
			name = "index.html"
		}
		f, ok := files[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", f.ctype)
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		if match := r.Header.Get("If-None-Match"); match != "" && match == f.etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if r.Method == http.MethodHead {
			return
		}
		w.Write(f.body)
	})
}

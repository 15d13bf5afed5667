package dashboard_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/web/dashboard"
)

func get(t *testing.T, h http.Handler, method, path string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	resp := rec.Result()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestHandlerFiles(t *testing.T) {
	h := dashboard.Handler()
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/", "text/html; charset=utf-8", `<script type="module" src="app.js">`},
		{"/index.html", "text/html; charset=utf-8", "<title>notifyd</title>"},
		{"/?token=abc", "text/html; charset=utf-8", "<title>notifyd</title>"},
		{"/app.js", "text/javascript; charset=utf-8", "sessionStorage"},
		{"/style.css", "text/css; charset=utf-8", "prefers-color-scheme: dark"},
		{"/favicon.svg", "image/svg+xml", "<svg"},
	} {
		resp, body := get(t, h, "GET", tc.path, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", tc.path, resp.Status)
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != tc.ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", tc.path, got, tc.ctype)
		}
		if !strings.Contains(body, tc.contains) {
			t.Errorf("GET %s: body lacks %q", tc.path, tc.contains)
		}
		for k, want := range map[string]string{
			"Content-Security-Policy": dashboard.ContentSecurityPolicy,
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
			"X-Frame-Options":         "DENY",
		} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("GET %s: %s = %q, want %q", tc.path, k, got, want)
			}
		}
	}
}

func TestHandlerErrors(t *testing.T) {
	h := dashboard.Handler()
	if resp, _ := get(t, h, "GET", "/nope.js", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope.js: %s, want 404", resp.Status)
	}
	if resp, _ := get(t, h, "GET", "/../../etc/passwd", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET traversal: %s, want 404", resp.Status)
	}
	resp, _ := get(t, h, "POST", "/", nil)
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /: %s (Allow %q), want 405 with Allow", resp.Status, resp.Header.Get("Allow"))
	}
	resp, body := get(t, h, "HEAD", "/app.js", nil)
	if resp.StatusCode != http.StatusOK || body != "" {
		t.Errorf("HEAD /app.js: %s with %d bytes", resp.Status, len(body))
	}
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if resp, _ := get(t, h, "GET", "/app.js", map[string]string{"If-None-Match": etag}); resp.StatusCode != http.StatusNotModified {
		t.Errorf("conditional GET: %s, want 304", resp.Status)
	}
}

// TestNoExternalReferences checks that the page loads nothing from
// anywhere but its own origin: no http(s) URLs in src/href/url()/import,
// and every file the page references is embedded.
func TestNoExternalReferences(t *testing.T) {
	h := dashboard.Handler()
	files := dashboard.Files()
	ext := regexp.MustCompile(`(?i)(src|href)\s*=\s*["'](https?:)?//|url\(\s*["']?(https?:)?//|import\s.*["']https?:`)
	ref := regexp.MustCompile(`(?:src|href)="([^"#:]+)"`)
	for _, name := range files {
		_, body := get(t, h, "GET", "/"+name, nil)
		if m := ext.FindString(body); m != "" {
			t.Errorf("%s references another origin: %q", name, m)
		}
		for _, m := range ref.FindAllStringSubmatch(body, -1) {
			if !slices.Contains(files, m[1]) {
				t.Errorf("%s references %q, which is not embedded", name, m[1])
			}
		}
	}
}

// TestProtocolPaths keeps the page's endpoint paths in step with package
// api: the page is plain JavaScript and cannot import the constants.
func TestProtocolPaths(t *testing.T) {
	_, js := get(t, dashboard.Handler(), "GET", "/app.js", nil)
	for _, want := range []string{
		`const PATH_WS = "` + api.PathWS + `"`,
		`const PATH_STATUS = "` + api.PathStatus + `"`,
		`"` + string(api.TypeSubscribe) + `"`, `"` + string(api.TypeHello) + `"`, `"` + string(api.TypeBatch) + `"`,
		`"` + string(api.TypeLoss) + `"`, `"` + string(api.TypeError) + `"`, `"` + string(api.TypeBye) + `"`,
		`"` + string(api.CodeBadFilter) + `"`, `searchParams.set("` + api.ParamToken + `"`,
		// protocol 1.1 and browser sessions
		`const PATH_SESSION = "` + api.PathSession + `"`, `const PATH_SESSION_LOGOUT = "` + api.PathSessionLogout + `"`,
		`"` + string(api.TypeSubscribed) + `"`, `"` + string(api.TypeUpdate) + `"`, `"` + string(api.TypeUpdated) + `"`,
		`"` + string(api.TypeUnsubscribe) + `"`, `"` + string(api.TypeUnsubscribed) + `"`, `"` + string(api.TypeHistory) + `"`,
		`"` + api.AuthSession + `"`, `minor: ` + strconv.Itoa(api.ProtocolMinor),
	} {
		if !strings.Contains(js, want) {
			t.Errorf("app.js lacks %s", want)
		}
	}
}

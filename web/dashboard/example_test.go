package dashboard_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/notifyd/notifyd/web/dashboard"
)

// The daemon mounts the dashboard at "/" of its TCP listener, as a public
// mount: the page holds no data and takes the token from its URL.
func ExampleHandler() {
	mux := http.NewServeMux()
	mux.Handle("/", dashboard.Handler())

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"))
	// Output: 200 text/html; charset=utf-8
}

package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const appOrigin = "https://app.example.com"

// TestCORSPreflight: a browser app's preflight is answered 204 from an
// allowed origin, with the path's methods and the two headers the API
// reads, and refused 403 without any CORS header from any other; verify
// never answers CORS.
func TestCORSPreflight(t *testing.T) {
	t.Parallel()
	h, _, _ := keysServer(t, Config{CORSOrigins: []string{appOrigin, "http://localhost:3000"}})
	preflight := func(path, origin, method string) *httptest.ResponseRecorder {
		return call(h, "OPTIONS", path, "", map[string]string{
			"Origin": origin, "Access-Control-Request-Method": method,
			"Access-Control-Request-Headers": "authorization, content-type",
			"Sec-Fetch-Site":                 "cross-site", "Sec-Fetch-Mode": "cors",
		})
	}
	for _, c := range []struct{ path, method, allow string }{
		{"/v1/keys", "POST", "GET, POST, HEAD"},
		{"/v1/keys/2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA", "DELETE", "DELETE"},
		{"/v1/keys/2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA/rotate", "POST", "POST"},
		{"/v1/keys/2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA/disable", "POST", "POST"},
		{"/v1/keys/2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA/enable", "POST", "POST"},
		{"/v1/keys/reveal", "POST", "POST"},
	} {
		rec := preflight(c.path, appOrigin, c.method)
		hd := rec.Header()
		if rec.Code != 204 || hd.Get("Access-Control-Allow-Origin") != appOrigin || hd.Get("Access-Control-Allow-Methods") != c.allow ||
			hd.Get("Access-Control-Allow-Headers") != "Authorization, Content-Type" || hd.Get("Access-Control-Max-Age") == "" ||
			!hasVary(hd, "Origin") {
			t.Errorf("preflight of %s %s from %s: %d %v", c.method, c.path, appOrigin, rec.Code, hd)
		}
		noCredentials(t, rec)
		rec = preflight(c.path, "https://evil.example", c.method)
		if rec.Code != 403 || errCode(t, rec) != "cors_origin_refused" || rec.Header().Get("Access-Control-Allow-Origin") != "" ||
			!strings.Contains(rec.Body.String(), "origins this server allows") {
			t.Errorf("preflight of %s from a refused origin: %d %v %s", c.path, rec.Code, rec.Header(), rec.Body)
		}
		noCredentials(t, rec)
	}
	if rec := preflight("/v1/keys", "http://localhost:3000", "GET"); rec.Code != 204 || rec.Header().Get("Access-Control-Allow-Origin") != "http://localhost:3000" {
		t.Errorf("the second origin: %d %v", rec.Code, rec.Header())
	}
	if rec := preflight("/v1/keys", "https://app.example.com.evil.example", "GET"); rec.Code != 403 {
		t.Errorf("an origin that starts like an allowed one: %d", rec.Code)
	}
	// Verify is for backends: a preflight gets no CORS answer, only 405.
	rec := preflight("/v1/keys/verify", appOrigin, "POST")
	if rec.Code != 405 || errCode(t, rec) != "method_not_allowed" || rec.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight of verify: %d %v", rec.Code, rec.Header())
	}
}

// TestCORSRequests: an allowed origin's requests pass the cross-origin check
// and carry Access-Control-Allow-Origin, Vary and the exposed headers;
// another origin's writes are refused; verify never carries CORS headers;
// and the dashboard does not trust the API's origins.
func TestCORSRequests(t *testing.T) {
	t.Parallel()
	ui := &mutations{}
	h, f, _ := keysServer(t, Config{CORSOrigins: []string{appOrigin}, Dashboard: ui})
	from := func(origin, token string) map[string]string {
		return map[string]string{"Origin": origin, "Sec-Fetch-Site": "cross-site", "Authorization": "Bearer " + token, "Content-Type": "application/json"}
	}
	rec := call(h, "POST", "/v1/keys", `{"name":"web"}`, from(appOrigin, "good"))
	if rec.Code != 201 || rec.Header().Get("Access-Control-Allow-Origin") != appOrigin || !hasVary(rec.Header(), "Origin") ||
		!strings.Contains(rec.Header().Get("Access-Control-Expose-Headers"), "Retry-After") {
		t.Fatalf("create from the app: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	noCredentials(t, rec)
	created := decode[NewKey](t, rec)
	if rec := call(h, "POST", "/v1/keys/reveal", "", from(appOrigin, "good")); rec.Code != 200 || rec.Header().Get("Access-Control-Allow-Origin") != appOrigin {
		t.Errorf("reveal from the app: %d %v", rec.Code, rec.Header())
	}
	// An error is readable by the app too.
	if rec := call(h, "GET", "/v1/keys", "", from(appOrigin, "expired")); rec.Code != 401 || rec.Header().Get("Access-Control-Allow-Origin") != appOrigin {
		t.Errorf("an error to the app: %d %v", rec.Code, rec.Header())
	}

	before := len(f.calls)
	rec = call(h, "DELETE", "/v1/keys/"+created.ID, "", from("https://evil.example", "good"))
	if rec.Code != 403 || errCode(t, rec) != "cors_origin_refused" || rec.Header().Get("Access-Control-Allow-Origin") != "" || len(f.calls) != before {
		t.Errorf("a write from another origin: %d %v %s (reached the service: %v)", rec.Code, rec.Header(), rec.Body, len(f.calls) != before)
	}
	noCredentials(t, rec)
	// A read from another origin is served, but without ACAO the browser
	// keeps it from the page.
	rec = call(h, "GET", "/v1/keys", "", from("https://evil.example", "good"))
	if rec.Code != 200 || rec.Header().Get("Access-Control-Allow-Origin") != "" || !hasVary(rec.Header(), "Origin") {
		t.Errorf("a read from another origin: %d %v", rec.Code, rec.Header())
	}

	rec = call(h, "POST", "/v1/keys/verify", `{"key":"`+created.Key+`"}`, from(appOrigin, serviceTok))
	if rec.Code != 200 || rec.Header().Get("Access-Control-Allow-Origin") != "" || rec.Header().Get("Access-Control-Expose-Headers") != "" {
		t.Errorf("verify from the app's origin: %d %v", rec.Code, rec.Header())
	}
	noCredentials(t, rec)

	// The dashboard does not trust the API's origins.
	rec = call(h, "POST", "/riverui/api/jobs/cancel", `{"job_ids":[1]}`, map[string]string{"Origin": appOrigin, "Sec-Fetch-Site": "cross-site"})
	if rec.Code != 403 || errCode(t, rec) != "cross_origin" || ui.n.Load() != 0 {
		t.Errorf("a dashboard write from the API's origin: %d %s", rec.Code, rec.Body)
	}
}

// TestCORSOriginsAreValidated: "*" and anything that is not an origin are
// refused with what to write instead; an origin is matched as a browser
// writes it.
func TestCORSOriginsAreValidated(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		origins []string
		want    string
	}{
		{[]string{"*"}, `CORSOrigins: "*" is refused`},
		{[]string{appOrigin, "app.example.com"}, `"app.example.com" is not an origin: want scheme://host[:port]`},
		{[]string{"https://app.example.com/dashboard"}, "has a path, query or fragment, which origins do not: use https://app.example.com"},
		{[]string{"https://app.example.com?x=1"}, "has a path, query or fragment"},
		{[]string{"ftp://app.example.com"}, "is not an origin"},
		{[]string{"null"}, "is not an origin"},
		{[]string{"https://user@app.example.com"}, "is not an origin"},
	} {
		if _, err := New(Config{CORSOrigins: c.origins}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error with %q", c.origins, err, c.want)
		}
	}
	h, _, _ := keysServer(t, Config{CORSOrigins: []string{" HTTPS://App.Example.com:443/ ", "", "http://[::1]:80"}})
	for _, origin := range []string{appOrigin, "http://[::1]"} {
		rec := call(h, "OPTIONS", "/v1/keys", "", map[string]string{"Origin": origin, "Access-Control-Request-Method": "GET"})
		if rec.Code != 204 || rec.Header().Get("Access-Control-Allow-Origin") != origin {
			t.Errorf("%s after normalising: %d %v", origin, rec.Code, rec.Header())
		}
	}
	// None by default: every preflight is refused.
	h, _, _ = keysServer(t, Config{})
	if rec := call(h, "OPTIONS", "/v1/keys", "", map[string]string{"Origin": appOrigin, "Access-Control-Request-Method": "GET"}); rec.Code != 403 {
		t.Errorf("a preflight without CORSOrigins: %d", rec.Code)
	}
}

func hasVary(h http.Header, name string) bool {
	for _, v := range h.Values("Vary") {
		for _, part := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), name) {
				return true
			}
		}
	}
	return false
}

func noCredentials(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if v, ok := rec.Header()["Access-Control-Allow-Credentials"]; ok {
		t.Errorf("Access-Control-Allow-Credentials %q sent", v)
	}
}

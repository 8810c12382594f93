package keyauth_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyworker/keyworker/keyauth"
)

// The answers the contract fixes, written out: a test against the
// package's own constants could not catch a change of them.
const (
	wantRefusal     = `{"error":"a valid API key is required","code":"invalid_api_key"}` + "\n"
	wantUnavailable = `{"error":"the API key could not be checked, try again later","code":"key_check_unavailable"}` + "\n"
)

// echo answers 200 with the user id and key id the middleware put in the
// context, and counts its calls.
type echo struct{ calls atomic.Int64 }

func (e *echo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.calls.Add(1)
	u, uok := keyauth.UserID(r.Context())
	k, kok := keyauth.KeyID(r.Context())
	fmt.Fprintf(w, "user=%s/%v key=%s/%v", u, uok, k, kok)
}

func serve(h http.Handler, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/things", nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// TestMiddlewareRefusesUniformly checks every refused credential, whatever
// the reason (malformed, unknown, wrong secret, revoked, expired, disabled,
// another scheme), gets the same 401: same headers, same body, and the
// handler never runs; no credential at all gets the challenge without an
// error code.
func TestMiddlewareRefusesUniformly(t *testing.T) {
	t.Parallel()
	f := setup(t)
	revoked, revokedID := f.newKey(t)
	f.revoke(t, revokedID, time.Now().Add(-time.Second))
	expired, expiredID := f.newKey(t)
	f.expire(t, expiredID)
	disabled, disabledID := f.newKey(t)

	next := &echo{}
	pg := keyauth.Middleware(keyauth.Postgres(f.db, "keyworker"), keyauth.Options{})(next)

	// Disabled through Remote until migration 006 gives SQL the status.
	var disabledVia http.Handler = pg
	if !f.disableKey(t, disabledID) {
		srv := newVerifyServer(t, f, "")
		srv.answerWith(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]any{"valid": false, "status": "disabled", "user_id": f.user, "key_id": disabledID})
		})
		disabledVia = keyauth.Middleware(mustRemote(t, srv.URL, serviceToken), keyauth.Options{})(next)
	}

	missing := serve(pg)
	if missing.Code != 401 || missing.Header().Get("WWW-Authenticate") != `Bearer realm="api"` || missing.Body.String() != wantRefusal {
		t.Errorf("no credential: %d %q %q", missing.Code, missing.Header().Get("WWW-Authenticate"), missing.Body)
	}

	var first *httptest.ResponseRecorder
	for _, tc := range []struct {
		name   string
		h      http.Handler
		header []string
	}{
		{"malformed", pg, []string{"Authorization", "Bearer not-a-key"}},
		{"empty bearer", pg, []string{"Authorization", "Bearer "}},
		{"unknown", pg, []string{"Authorization", "Bearer " + unknownKey(t)}},
		{"wrong secret", pg, []string{"Authorization", "Bearer " + f.wrongSecretKey(t)}},
		{"revoked", pg, []string{"Authorization", "Bearer " + revoked}},
		{"expired", pg, []string{"Authorization", "Bearer " + expired}},
		{"disabled", disabledVia, []string{"Authorization", "Bearer " + disabled}},
		{"basic scheme", pg, []string{"Authorization", "Basic dXNlcjpwYXNz"}},
		{"two authorization headers", pg, []string{"Authorization", "Bearer " + revoked, "Authorization", "Bearer " + expired}},
		{"X-API-Key not configured", pg, []string{"X-API-Key", revoked, "Authorization", "Token x"}},
	} {
		w := serve(tc.h, tc.header...)
		if w.Code != 401 || w.Body.String() != wantRefusal {
			t.Errorf("%s: %d %q, want 401 %q", tc.name, w.Code, w.Body, wantRefusal)
		}
		if got := w.Header().Get("WWW-Authenticate"); got != `Bearer realm="api", error="invalid_token"` {
			t.Errorf("%s: WWW-Authenticate = %q", tc.name, got)
		}
		if w.Header().Get("Cache-Control") != "no-store" || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s: headers %v", tc.name, w.Header())
		}
		if first == nil {
			first = w
		} else if !maps.EqualFunc(first.Header(), w.Header(), func(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }) {
			t.Errorf("%s: headers %v differ from %v", tc.name, w.Header(), first.Header())
		}
	}
	if n := next.calls.Load(); n != 0 {
		t.Errorf("the handler ran %d times for refused requests", n)
	}
}

// TestMiddlewarePassesValidKeys checks a valid key reaches the handler with
// its user id and key id in the context, however it is presented.
func TestMiddlewarePassesValidKeys(t *testing.T) {
	t.Parallel()
	f := setup(t)
	key, id := f.newKey(t)
	revoked, revokedID := f.newKey(t)
	f.revoke(t, revokedID, time.Now().Add(-time.Second))
	want := fmt.Sprintf("user=%s/true key=%s/true", f.user, id)

	h := keyauth.Middleware(keyauth.Postgres(f.db, "keyworker"), keyauth.Options{APIKeyHeader: "X-API-Key", Realm: "acme"})(&echo{})
	for _, tc := range []struct {
		name   string
		header []string
	}{
		{"Bearer", []string{"Authorization", "Bearer " + key}},
		{"bearer in lower case, extra spaces", []string{"Authorization", "bearer   " + key + " "}},
		{"X-API-Key", []string{"X-API-Key", key}},
		{"X-API-Key next to another scheme", []string{"X-API-Key", key, "Authorization", "Basic dXNlcjpwYXNz"}},
		{"Bearer wins over X-API-Key", []string{"Authorization", "Bearer " + key, "X-API-Key", revoked}},
	} {
		w := serve(h, tc.header...)
		if w.Code != 200 || w.Body.String() != want {
			t.Errorf("%s: %d %q, want 200 %q", tc.name, w.Code, w.Body, want)
		}
	}
	w := serve(h, "X-API-Key", revoked)
	if w.Code != 401 || w.Header().Get("WWW-Authenticate") != `Bearer realm="acme", error="invalid_token"` {
		t.Errorf("revoked X-API-Key: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}

	if u, ok := keyauth.UserID(context.Background()); ok || u != "" {
		t.Errorf("UserID outside the middleware = %q, %v", u, ok)
	}
	if k, ok := keyauth.KeyID(context.Background()); ok || k != "" {
		t.Errorf("KeyID outside the middleware = %q, %v", k, ok)
	}
}

// TestMiddlewareCheckerFailure checks a check that cannot be made answers
// 503 key_check_unavailable (not 401: the key may be fine), logs why, and
// never logs the key.
func TestMiddlewareCheckerFailure(t *testing.T) {
	t.Parallel()
	f := setup(t)
	key, id := f.newKey(t)
	var logs bytes.Buffer
	next := &echo{}
	h := keyauth.Middleware(keyauth.Postgres(f.db, "nosuchschema"), keyauth.Options{
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
	})(next)
	w := serve(h, "Authorization", "Bearer "+key)
	if w.Code != 503 || w.Body.String() != wantUnavailable || w.Header().Get("WWW-Authenticate") != "" {
		t.Errorf("failing checker: %d %q %v", w.Code, w.Body, w.Header())
	}
	if next.calls.Load() != 0 {
		t.Error("the handler ran although the key was not checked")
	}
	if !strings.Contains(logs.String(), `"component":"keyauth"`) || !strings.Contains(logs.String(), "nosuchschema") || !strings.Contains(logs.String(), id) {
		t.Errorf("log = %s, want the failure with the key id", logs.String())
	}
	if strings.Contains(logs.String(), key) {
		t.Errorf("the log holds the key: %s", logs.String())
	}
}

// TestOptionsValidate checks each bad option is refused by name and bound,
// by Validate and by Middleware (a panic at setup).
func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		o    keyauth.Options
		says string
	}{
		{keyauth.Options{CacheTTL: 6 * time.Minute}, "Options.CacheTTL must be between 0 (no cache) and 5m0s, got 6m0s"},
		{keyauth.Options{CacheTTL: -time.Second}, "Options.CacheTTL must be between"},
		{keyauth.Options{CacheSize: -1}, "Options.CacheSize must be between"},
		{keyauth.Options{Realm: `a"b`}, "Options.Realm must not contain quotes"},
		{keyauth.Options{APIKeyHeader: "X API Key"}, "Options.APIKeyHeader must be a header name"},
		{keyauth.Options{APIKeyHeader: "authorization"}, "must not be Authorization"},
	} {
		err := tc.o.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.o, err, tc.says)
		}
		func() {
			defer func() {
				if p := recover(); p == nil || !strings.Contains(fmt.Sprint(p), tc.says) {
					t.Errorf("Middleware(%+v) panic = %v, want %q", tc.o, p, tc.says)
				}
			}()
			keyauth.Middleware(keyauth.Postgres(nil, ""), tc.o)
		}()
	}
	if err := (keyauth.Options{CacheTTL: keyauth.MaxCacheTTL, CacheSize: 5, APIKeyHeader: "X-API-Key", Realm: "my api"}).Validate(); err != nil {
		t.Errorf("valid options refused: %v", err)
	}
}

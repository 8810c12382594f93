package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const secretKey = "sk_2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA_0123456789abcdefghijABCDEFGHIJklmnopqrstu012345"

func testServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	taken := atomic.Bool{}
	if cfg.VerifyToken == nil {
		cfg.VerifyToken = func(ctx context.Context, token string) (string, error) {
			switch token {
			case "good", "good2":
				return "user-" + token, nil
			case "expired":
				return "", fmt.Errorf("checking exp: %w", ErrTokenExpired)
			}
			return "", errors.New("signature does not match")
		}
	}
	if cfg.Reveal == nil {
		cfg.Reveal = func(ctx context.Context, userID, addr string) (Revealed, error) {
			if userID != "user-good" || !taken.CompareAndSwap(false, true) {
				return Revealed{}, ErrNothingToReveal
			}
			return Revealed{Key: secretKey, KeyID: "2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA", Prefix: "sk", Last4: "2345"}, nil
		}
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func do(h http.Handler, method, path string, hdr map[string]string) *httptest.ResponseRecorder {
	return call(h, method, path, "", hdr)
}

func errCode(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var body errorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body is not JSON: %q", rec.Body.String())
	}
	if body.Error == "" {
		t.Fatalf("error body has no message: %q", rec.Body.String())
	}
	return body.Code
}

func TestRevealOnceThenNothing(t *testing.T) {
	t.Parallel()
	h := testServer(t, Config{}).Handler()
	rec := do(h, "POST", "/v1/keys/reveal", map[string]string{"Authorization": "Bearer good"})
	if rec.Code != 200 {
		t.Fatalf("first reveal: %d %s", rec.Code, rec.Body)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control = %q, want no-store", cc)
	}
	var got Revealed
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || got.Key != secretKey {
		t.Fatalf("body %q (%v)", rec.Body, err)
	}
	rec = do(h, "POST", "/v1/keys/reveal", map[string]string{"Authorization": "Bearer good"})
	if rec.Code != 404 || errCode(t, rec) != "nothing_to_reveal" {
		t.Fatalf("second reveal: %d %s", rec.Code, rec.Body)
	}
	if strings.Contains(rec.Body.String(), secretKey) {
		t.Fatal("second answer carries the key")
	}
}

func TestRevealRejections(t *testing.T) {
	t.Parallel()
	h := testServer(t, Config{}).Handler()
	cases := []struct {
		name, method, auth string
		status             int
		code               string
	}{
		{"GET is not allowed", "GET", "Bearer good", 405, "method_not_allowed"},
		{"no token", "POST", "", 401, "missing_token"},
		{"basic instead of bearer", "POST", "Basic Zm9vOmJhcg==", 401, "missing_token"},
		{"forged token", "POST", "Bearer forged", 401, "invalid_token"},
		{"expired token", "POST", "Bearer expired", 401, "token_expired"},
		{"another user's token", "POST", "Bearer good2", 404, "nothing_to_reveal"},
	}
	for _, c := range cases {
		rec := do(h, c.method, "/v1/keys/reveal", map[string]string{"Authorization": c.auth})
		if rec.Code != c.status || errCode(t, rec) != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, rec.Code, rec.Body, c.status, c.code)
		}
		if strings.Contains(rec.Body.String(), "forged") {
			t.Errorf("%s: the token is echoed: %s", c.name, rec.Body)
		}
	}
}

func TestRevealRateLimits(t *testing.T) {
	t.Parallel()
	s := testServer(t, Config{RevealPerUser: 2, RevealPerAddr: 4})
	h := s.Handler()
	statuses := []int{}
	for range 3 {
		statuses = append(statuses, do(h, "POST", "/v1/keys/reveal", map[string]string{"Authorization": "Bearer good2"}).Code)
	}
	if fmt.Sprint(statuses) != "[404 404 429]" {
		t.Fatalf("per-user statuses %v, want [404 404 429]", statuses)
	}
	rec := do(h, "POST", "/v1/keys/reveal", map[string]string{"Authorization": "Bearer forged"})
	if rec.Code != 401 {
		t.Fatalf("4th from address: %d", rec.Code)
	}
	rec = do(h, "POST", "/v1/keys/reveal", map[string]string{"Authorization": "Bearer good"})
	if rec.Code != 429 || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("5th from address: %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
}

// TestLimiterRefillsAndForgets: a key's bucket holds n tokens and refills
// at n per window; a key idle for a window is forgotten (it would be full
// again), so the limiter's memory follows the active clients only.
func TestLimiterRefillsAndForgets(t *testing.T) {
	t.Parallel()
	l := newLimiter(2, time.Minute)
	now := time.Unix(1000, 0)
	for i := range 2 {
		if ok, _ := l.allow("a", now); !ok {
			t.Fatalf("request %d of 2 denied", i+1)
		}
	}
	ok, retry := l.allow("a", now)
	if ok || retry != 30*time.Second {
		t.Fatalf("third: allowed=%v retry=%v, want denied for 30s (2 per minute)", ok, retry)
	}
	if ok, _ := l.allow("b", now); !ok {
		t.Fatal("another key shares a's bucket")
	}
	if ok, _ := l.allow("a", now.Add(30*time.Second)); !ok {
		t.Fatal("denied after a token's refill time")
	}
	if ok, _ := l.allow("a", now.Add(30*time.Second)); ok {
		t.Fatal("allowed twice after one token's refill")
	}
	for i := range 1000 {
		l.allow(fmt.Sprint("k", i), now)
	}
	if n := l.size(); n < 1000 {
		t.Fatalf("limiter holds %d keys, want at least 1000", n)
	}
	// A window later, the next request each shard sees sweeps it: the
	// thousand idle keys go, the fresh ones stay.
	later := now.Add(2 * time.Minute)
	for i := range 2000 { // 2000 keys reach all 64 shards
		l.allow(fmt.Sprint("fresh", i), later)
	}
	if n := l.size(); n != 2000 {
		t.Fatalf("limiter holds %d keys a window later, want the 2000 fresh ones", n)
	}
}

func TestDashboardNeedsCredentials(t *testing.T) {
	t.Parallel()
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("river ui")) })
	h := testServer(t, Config{Dashboard: ui, DashboardUser: "admin", DashboardPassword: "pw", DashboardToken: "tok"}).Handler()
	if rec := do(h, "GET", "/riverui/", nil); rec.Code != 401 || rec.Header().Get("WWW-Authenticate") == "" {
		t.Fatalf("no credentials: %d", rec.Code)
	}
	basic := func(user, pass string) map[string]string {
		return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}
	}
	if rec := do(h, "GET", "/riverui/", basic("admin", "wrong")); rec.Code != 401 {
		t.Fatalf("wrong password: %d", rec.Code)
	}
	rec := do(h, "GET", "/riverui/", basic("admin", "pw"))
	if rec.Code != 200 || rec.Body.String() != "river ui" {
		t.Fatalf("basic auth: %d %s", rec.Code, rec.Body)
	}
	if rec := do(h, "GET", "/riverui/", map[string]string{"Authorization": "Bearer tok"}); rec.Code != 200 {
		t.Fatalf("bearer token: %d", rec.Code)
	}
}

func TestRefusesOpenDashboardOffLoopback(t *testing.T) {
	t.Parallel()
	ui := http.NotFoundHandler()
	_, err := New(Config{Addr: "0.0.0.0:8080", Dashboard: ui})
	if err == nil || !strings.Contains(err.Error(), "DashboardPassword") {
		t.Fatalf("want a refusal naming the settings, got %v", err)
	}
	if _, err := New(Config{Addr: "127.0.0.1:0", Dashboard: ui}); err != nil {
		t.Fatalf("loopback without credentials: %v", err)
	}
	if _, err := New(Config{Addr: "0.0.0.0:0", Dashboard: ui, DashboardUser: "a", DashboardPassword: "b"}); err != nil {
		t.Fatalf("non-loopback with credentials: %v", err)
	}
	if _, err := New(Config{Addr: "nonsense"}); err == nil {
		t.Fatal("bad address accepted")
	}
}

func TestReadyzReportsTheReason(t *testing.T) {
	t.Parallel()
	ready := atomic.Bool{}
	h := testServer(t, Config{Ready: func(ctx context.Context) error {
		if !ready.Load() {
			return errors.New("listener: reconnecting")
		}
		return nil
	}}).Handler()
	if rec := do(h, "GET", "/readyz", nil); rec.Code != 503 || !strings.Contains(rec.Body.String(), "reconnecting") {
		t.Fatalf("not ready: %d %s", rec.Code, rec.Body)
	}
	ready.Store(true)
	if rec := do(h, "GET", "/readyz", nil); rec.Code != 200 {
		t.Fatalf("ready: %d", rec.Code)
	}
	if rec := do(h, "GET", "/healthz", nil); rec.Code != 200 {
		t.Fatalf("healthz: %d", rec.Code)
	}
}

func TestStartStopServesOverTCP(t *testing.T) {
	t.Parallel()
	s := testServer(t, Config{Addr: "127.0.0.1:0"})
	s.Stop() // safe before Start
	s = testServer(t, Config{Addr: "127.0.0.1:0"})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + s.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz over TCP: %d", resp.StatusCode)
	}
	// A second server on the same address fails fast, naming the setting.
	s2 := testServer(t, Config{Addr: s.Addr()})
	if err := s2.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "(Addr)") {
		t.Fatalf("second listener: %v", err)
	}
	s.Stop()
	s.Stop()
	<-s.Done()
}

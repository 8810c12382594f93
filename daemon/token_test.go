package daemon_test

import (
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/keyworker/keyworker/accesstoken"
)

// TestRevealWithoutSigningKeysIs503: when the JWKS endpoint fails, a user's
// RS256 token cannot be judged: reveal answers 503 with Retry-After (not
// 401, which tells a client to sign in again), says nothing of the
// endpoint's failure, and logs it instead; /readyz does not repeat it
// either. A forged token's 401 does not say what was wrong with it.
func TestRevealWithoutSigningKeysIs503(t *testing.T) {
	t.Parallel()
	f := setup(t)
	var hits atomic.Int64
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "upstream exploded", http.StatusInternalServerError)
	}))
	t.Cleanup(jwks.Close)
	cfg := f.config("")
	cfg.Tokens = accesstoken.Config{
		JWTSecret: f.jwtSecret,
		JWKSURL:   jwks.URL + "/auth/v1/.well-known/jwks.json",
	}
	d := f.start(cfg)
	if hits.Load() == 0 {
		t.Fatal("Start did not try to fetch the key set")
	}

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": jwks.URL + "/auth/v1", "sub": f.signUp(false), "role": "authenticated", "aud": "authenticated",
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	})
	tok.Header["kid"] = "key-1"
	signed, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}

	a := reveal(t, d, signed)
	if a.status != http.StatusServiceUnavailable || a.Code != "token_unverifiable" || a.Key != "" {
		t.Fatalf("reveal with the JWKS endpoint failing: %d %q %s, want 503 token_unverifiable", a.status, a.Code, a.body)
	}
	if ra := a.header.Get("Retry-After"); ra == "" {
		t.Error("the 503 has no Retry-After")
	}
	if body := string(a.body); strings.Contains(body, "500") || strings.Contains(body, jwks.URL) || strings.Contains(body, "exploded") {
		t.Errorf("the 503 body carries the fetch failure: %s", body)
	}

	forged := token(t, randomBytes(t, 48), f.signUp(false), time.Now().Add(time.Hour))
	a = reveal(t, d, forged)
	if a.status != http.StatusUnauthorized || a.Code != "invalid_token" {
		t.Fatalf("reveal with a forged token: %d %q, want 401 invalid_token", a.status, a.Code)
	}
	if body := string(a.body); strings.Contains(body, "signature") || strings.Contains(body, "HS256") {
		t.Errorf("the 401 body says why the token was rejected: %s", body)
	}

	// Ready once the source reads signups (it may still be taking its slot).
	var status int
	var body string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if status, body = get(t, "http://"+d.Addr()+"/readyz"); status == http.StatusOK || !strings.Contains(body, "signup source is idle") {
			break
		}
	}
	if status != http.StatusOK {
		t.Errorf("/readyz with the JWKS endpoint failing: %d %s, want 200 (key creation does not need it)", status, body)
	}
	if strings.Contains(body, "500") || strings.Contains(body, jwks.URL) || strings.Contains(body, "signing keys") {
		t.Errorf("/readyz carries the key set's failure: %s", body)
	}

	logs := f.logs.String()
	for _, want := range []string{"access token could not be checked", "signing keys unavailable", "access token rejected", "access token signature invalid"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log does not say %q", want)
		}
	}
	for _, tk := range []string{signed, forged} {
		for _, seg := range strings.Split(tk, ".") {
			if len(seg) >= 16 && strings.Contains(logs, seg) {
				t.Errorf("the log carries a token segment %q", seg)
			}
		}
	}
}

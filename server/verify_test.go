package server

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestVerifyEndpoint: POST /v1/keys/verify takes a service token and
// nothing else (a user's access token is refused), answers every status,
// and answers an unknown key id and a wrong secret with the same bytes.
func TestVerifyEndpoint(t *testing.T) {
	t.Parallel()
	h, f, logs := keysServer(t, Config{})
	mk := func(user string) NewKey {
		t.Helper()
		f.mu.Lock()
		defer f.mu.Unlock()
		nk, err := f.make(user, "", nil, "")
		if err != nil {
			t.Fatal(err)
		}
		return nk
	}
	valid, revoked, expired, disabled, scheduled := mk("u1"), mk("u1"), mk("u2"), mk("u2"), mk("u3")
	past, future := time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	f.mu.Lock()
	f.keys[revoked.ID].info.RevokedAt = &past
	f.keys[expired.ID].info.ExpiresAt = &past
	f.keys[disabled.ID].info.DisabledAt = &past
	f.keys[scheduled.ID].info.RevokedAt = &future
	f.mu.Unlock()
	wrongSecret := valid.Key[:len(valid.Key)-6] + "AAAAAA"
	unknownID := strings.Replace(valid.Key, valid.ID, "2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA", 1)

	answer := func(key string) string {
		t.Helper()
		rec := call(h, "POST", "/v1/keys/verify", fmt.Sprintf(`{"key":%q}`, key), as(serviceTok))
		if rec.Code != 200 || rec.Header().Get("Cache-Control") != "no-store" {
			t.Fatalf("verify: %d %s", rec.Code, rec.Body)
		}
		return strings.TrimSpace(rec.Body.String())
	}
	for _, c := range []struct {
		name, key, want string
	}{
		{"valid", valid.Key, `{"valid":true,"status":"valid","user_id":"u1","key_id":"` + valid.ID + `"}`},
		{"revoked", revoked.Key, `{"valid":false,"status":"revoked","user_id":"u1","key_id":"` + revoked.ID + `"}`},
		{"expired", expired.Key, `{"valid":false,"status":"expired","user_id":"u2","key_id":"` + expired.ID + `"}`},
		{"disabled", disabled.Key, `{"valid":false,"status":"disabled","user_id":"u2","key_id":"` + disabled.ID + `"}`},
		{"revocation scheduled", scheduled.Key, `{"valid":true,"status":"valid","user_id":"u3","key_id":"` + scheduled.ID + `"}`},
		{"wrong secret", wrongSecret, `{"valid":false,"status":"not_found"}`},
		{"unknown id", unknownID, `{"valid":false,"status":"not_found"}`},
		{"not a key", "hello", `{"valid":false,"status":"not_found"}`},
	} {
		if got := answer(c.key); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}

	for _, c := range []struct {
		name, auth, body string
		status           int
		code             string
	}{
		{"no token", "", `{"key":"x"}`, 401, "missing_service_token"},
		{"a user's access token", "Bearer good", `{"key":"x"}`, 401, "invalid_service_token"},
		{"a service token one character short", "Bearer " + serviceTok[:len(serviceTok)-1], `{"key":"x"}`, 401, "invalid_service_token"},
		{"no body", "Bearer " + serviceTok, ``, 400, "bad_request"},
		{"no key", "Bearer " + serviceTok, `{}`, 400, "bad_request"},
		{"an unknown field", "Bearer " + serviceTok, `{"api_key":"x"}`, 400, "bad_request"},
	} {
		rec := call(h, "POST", "/v1/keys/verify", c.body, map[string]string{"Authorization": c.auth})
		if rec.Code != c.status || errCode(t, rec) != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, rec.Code, rec.Body, c.status, c.code)
		}
	}
	for _, k := range []string{valid.Key, wrongSecret} {
		if secret := k[len("sk_"+valid.ID+"_"):]; strings.Contains(logs.String(), secret) {
			t.Errorf("a presented key reached the log:\n%s", logs)
		}
	}
	if strings.Contains(logs.String(), serviceTok[:20]) {
		t.Errorf("a service token reached the log:\n%s", logs)
	}
}

// TestVerifyThrottlesWrongServiceTokens: an address that keeps sending wrong
// service tokens is answered 429, even with the right one, until its
// allowance refills; others are not affected.
func TestVerifyThrottlesWrongServiceTokens(t *testing.T) {
	t.Parallel()
	s := testServer(t, Config{Keys: newFakeKeys(), VerifyTokens: []string{serviceTok}, LoginFailuresPerMinute: 2})
	h := s.Handler()
	for i := range 2 {
		if rec := call(h, "POST", "/v1/keys/verify", `{"key":"x"}`, as(fmt.Sprint("guess-", i))); rec.Code != 401 {
			t.Fatalf("guess %d: %d", i, rec.Code)
		}
	}
	rec := call(h, "POST", "/v1/keys/verify", `{"key":"x"}`, as(serviceTok))
	if rec.Code != 429 || errCode(t, rec) != "rate_limited" || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("after 2 wrong tokens: %d %s", rec.Code, rec.Body)
	}
	now := time.Now().Add(time.Minute)
	s.now = func() time.Time { return now }
	if rec := call(h, "POST", "/v1/keys/verify", `{"key":"x"}`, as(serviceTok)); rec.Code != 200 {
		t.Fatalf("a minute later: %d %s", rec.Code, rec.Body)
	}
}

// TestVerifyUnconfigured: without service tokens (or a KeyService), verify
// answers 503 verify_disabled, naming the setting.
func TestVerifyUnconfigured(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]Config{
		"no tokens":      {Keys: newFakeKeys()},
		"no KeyService":  {VerifyTokens: []string{serviceTok}},
		"a blank entry":  {Keys: newFakeKeys(), VerifyTokens: []string{""}},
		"nothing at all": {},
	} {
		rec := call(testServer(t, cfg).Handler(), "POST", "/v1/keys/verify", `{"key":"x"}`, as(serviceTok))
		if rec.Code != 503 || errCode(t, rec) != "verify_disabled" || !strings.Contains(rec.Body.String(), "not configured on this server") {
			t.Errorf("%s: %d %s", name, rec.Code, rec.Body)
		}
	}
}

// TestVerifyTokensAreValidated: short, spaced or dashboard-shared service
// tokens are refused naming the field, never quoting the token.
func TestVerifyTokensAreValidated(t *testing.T) {
	t.Parallel()
	short := "0123456789abcdef0123456789abcde" // 31
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{VerifyTokens: []string{serviceTok, short}}, "VerifyTokens: token 2 of 2 is 31 characters: use at least 32"},
		{Config{VerifyTokens: []string{short + " x"}}, "has a space"},
		{Config{VerifyTokens: []string{short + "é"}}, "printable ASCII only"},
		{Config{VerifyTokens: []string{serviceTok}, DashboardToken: serviceTok}, "is the dashboard's token"},
	} {
		_, err := New(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v, want an error with %q", err, c.want)
			continue
		}
		if strings.Contains(err.Error(), short[:20]) || strings.Contains(err.Error(), serviceTok[:20]) {
			t.Errorf("the error quotes the token: %v", err)
		}
	}
	if _, err := New(Config{VerifyTokens: []string{serviceTok, strings.Repeat("z", MinVerifyTokenLen)}}); err != nil {
		t.Errorf("valid tokens: %v", err)
	}
}

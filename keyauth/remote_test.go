package keyauth_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyworker/keyworker/keyauth"
	"github.com/keyworker/keyworker/keys"
)

func mustRemote(t *testing.T, base, token string, opts ...keyauth.RemoteOption) keyauth.Checker {
	t.Helper()
	c, err := keyauth.Remote(base, token, opts...)
	if err != nil {
		t.Fatalf("Remote: %v", err)
	}
	return c
}

// TestRemoteStatuses checks Remote reports what keyworker's verify endpoint
// says about each kind of key, behind a path prefix, and sends nothing for
// a string that is not a key.
func TestRemoteStatuses(t *testing.T) {
	t.Parallel()
	f := setup(t)
	srv := newVerifyServer(t, f, "/kw")
	c := mustRemote(t, srv.URL+"/kw/", serviceToken)

	valid, validID := f.newKey(t)
	revoked, revokedID := f.newKey(t)
	f.revoke(t, revokedID, time.Now().Add(-time.Second))
	expired, expiredID := f.newKey(t)
	f.expire(t, expiredID)
	for _, tc := range []struct {
		name  string
		key   string
		want  keys.Status
		keyID string
		sent  bool
	}{
		{"valid", valid, keys.StatusValid, validID, true},
		{"revoked", revoked, keys.StatusRevoked, revokedID, true},
		{"expired", expired, keys.StatusExpired, expiredID, true},
		{"unknown id", unknownKey(t), keys.StatusNotFound, "", true},
		{"wrong secret", f.wrongSecretKey(t), keys.StatusNotFound, "", true},
		{"garbage", "sk_nope", keys.StatusNotFound, "", false},
		{"empty", "", keys.StatusNotFound, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.requests.Load()
			r, err := c.Check(context.Background(), tc.key)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if r.Status != tc.want || r.KeyID != tc.keyID || (tc.keyID != "") != (r.UserID == f.user) {
				t.Fatalf("Check = %+v, want %s with key id %q", r, tc.want, tc.keyID)
			}
			if sent := srv.requests.Load() > before; sent != tc.sent {
				t.Errorf("request sent: %v, want %v", sent, tc.sent)
			}
		})
	}

	t.Run("disabled", func(t *testing.T) {
		key, id := f.newKey(t)
		srv := newVerifyServer(t, f, "")
		srv.answerWith(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]any{"valid": false, "status": "disabled", "user_id": f.user, "key_id": id})
		})
		r, err := mustRemote(t, srv.URL, serviceToken).Check(context.Background(), key)
		if err != nil || r.Status != keys.StatusDisabled || r.Valid() || r.KeyID != id || r.UserID != f.user {
			t.Fatalf("Check = %+v, %v; want disabled with the ids", r, err)
		}
	})
}

// TestRemoteErrors checks each answer that is not a verify result is an
// error that says what keyworker answered and what to do, as a
// *RemoteError, and never contains the key or the service token.
func TestRemoteErrors(t *testing.T) {
	t.Parallel()
	f := setup(t)
	key, id := f.newKey(t)

	var leaked atomic.Int64 // requests that reached the redirect's target
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Add(1)
		writeJSON(w, http.StatusOK, map[string]any{"valid": true, "status": "valid", "user_id": f.user, "key_id": id})
	}))
	t.Cleanup(elsewhere.Close)

	for _, tc := range []struct {
		name   string
		token  string
		answer http.HandlerFunc
		status int
		code   string
		says   string
	}{
		{name: "wrong service token", token: "kwvt_not-the-right-one", status: 401, code: "invalid_service_token",
			says: "refused the service token"},
		{name: "verify disabled", answer: func(w http.ResponseWriter, r *http.Request) {
			apiError(w, 503, "verify_disabled", "key verification is disabled: no verify tokens are configured")
		}, status: 503, code: "verify_disabled", says: "configure a verify token on keyworker"},
		{name: "keyworker fails", answer: func(w http.ResponseWriter, r *http.Request) {
			apiError(w, 500, "internal", "internal error")
		}, status: 500, code: "internal", says: "failed to check the key"},
		{name: "a proxy's page", answer: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(502)
			fmt.Fprint(w, "<html>Bad Gateway</html>")
		}, status: 502, says: "failed to check the key (502)"},
		{name: "an answer echoing the key and token", answer: func(w http.ResponseWriter, r *http.Request) {
			apiError(w, 500, "internal", "boom "+key+" "+r.Header.Get("Authorization"))
		}, status: 500, code: "internal", says: "boom [redacted] Bearer [redacted]"},
		{name: "redirect", answer: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, elsewhere.URL+keyauth.VerifyPath, http.StatusTemporaryRedirect)
		}, status: 307, says: "does not follow: give keyauth.Remote the final address"},
		{name: "not keyworker", answer: func(w http.ResponseWriter, r *http.Request) {
			http.NotFound(w, r)
		}, status: 404, says: "has no verify endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newVerifyServer(t, f, "")
			if tc.answer != nil {
				srv.answerWith(tc.answer)
			}
			token := serviceToken
			if tc.token != "" {
				token = tc.token
			}
			_, err := mustRemote(t, srv.URL, token).Check(context.Background(), key)
			var re *keyauth.RemoteError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v, want a *RemoteError", err)
			}
			if re.StatusCode != tc.status || re.Code != tc.code {
				t.Errorf("RemoteError = %d %q, want %d %q", re.StatusCode, re.Code, tc.status, tc.code)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.says) || !strings.Contains(msg, id) || !strings.Contains(msg, srv.URL) {
				t.Errorf("err = %q, want it to say %q and name the key id and keyworker's URL", msg, tc.says)
			}
			noKey(t, err, key)
			noKey(t, err, token)
		})
	}
	if n := leaked.Load(); n != 0 {
		t.Errorf("the redirect was followed %d times: the key and token went to another server", n)
	}
}

// TestRemoteBadAnswers checks a 200 that does not fit the verify contract
// is an error, not a result.
func TestRemoteBadAnswers(t *testing.T) {
	t.Parallel()
	f := setup(t)
	key, id := f.newKey(t)
	for _, tc := range []struct {
		name   string
		answer any
		says   string
	}{
		{"valid disagrees with status", map[string]any{"valid": true, "status": "revoked", "user_id": f.user, "key_id": id}, `"valid" is missing or disagrees`},
		{"valid missing", map[string]any{"status": "valid", "user_id": f.user, "key_id": id}, `"valid" is missing or disagrees`},
		{"unknown status", map[string]any{"valid": false, "status": "suspended", "user_id": f.user, "key_id": id}, `unknown status "suspended"`},
		{"status carrying the key", map[string]any{"valid": false, "status": key}, "unknown status (not a code)"},
		{"another key's id", map[string]any{"valid": true, "status": "valid", "user_id": f.user, "key_id": "2ZzzzzzzzzzzzzzzzzzzzzzzzzZ"}, "without the key's user id and key id"},
		{"no user id", map[string]any{"valid": true, "status": "valid", "key_id": id}, "without the key's user id and key id"},
		{"not JSON", "nope", "decoding keyworker's answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newVerifyServer(t, f, "")
			srv.answerWith(func(w http.ResponseWriter, r *http.Request) {
				if s, ok := tc.answer.(string); ok {
					fmt.Fprint(w, s)
					return
				}
				writeJSON(w, http.StatusOK, tc.answer)
			})
			r, err := mustRemote(t, srv.URL, serviceToken).Check(context.Background(), key)
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Check = %+v, %v; want an error saying %q", r, err, tc.says)
			}
			noKey(t, err, key)
		})
	}
}

// TestRemoteTimeout checks a keyworker that does not answer costs at most
// the timeout, with an error naming it, and that the caller's own
// cancellation is not reported as a timeout.
func TestRemoteTimeout(t *testing.T) {
	t.Parallel()
	f := setup(t)
	key, _ := f.newKey(t)
	srv := newVerifyServer(t, f, "")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	srv.answerWith(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	c := mustRemote(t, srv.URL, serviceToken, keyauth.WithTimeout(100*time.Millisecond))
	start := time.Now()
	_, err := c.Check(context.Background(), key)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "timed out after 100ms") {
		t.Fatalf("err = %v, want a timeout after 100ms", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Check took %s with a 100ms timeout", d)
	}
	noKey(t, err, key)

	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	c = mustRemote(t, srv.URL, serviceToken, keyauth.WithTimeout(time.Minute))
	_, err = c.Check(ctx, key)
	if !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "timed out") {
		t.Errorf("err = %v, want the caller's cancellation", err)
	}
}

// TestRemoteArguments checks Remote refuses what cannot work, naming it,
// and never repeats a credential in the error.
func TestRemoteArguments(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, base, token string
		opts              []keyauth.RemoteOption
		says              string
	}{
		{"empty base", "", serviceToken, nil, "baseURL must be keyworker's http or https address"},
		{"no scheme", "keys.example.com", serviceToken, nil, "has no scheme: give keyworker's address with it, like http://keys.example.com"},
		{"host and port without a scheme", "127.0.0.1:8080", serviceToken, nil, "like http://127.0.0.1:8080 or https://127.0.0.1:8080"},
		{"ftp", "ftp://keys.example.com", serviceToken, nil, "baseURL must be keyworker's http or https address"},
		{"credentials in URL", "https://admin:hunter2@keys.example.com", serviceToken, nil, "must not carry credentials"},
		{"query", "https://keys.example.com/?token=hunter2", serviceToken, nil, "no query or fragment"},
		{"empty token", "https://keys.example.com", "", nil, "service token is empty"},
		{"token with newline", "https://keys.example.com", "hunter2\n", nil, "spaces or control characters"},
		{"timeout zero", "https://keys.example.com", serviceToken, []keyauth.RemoteOption{keyauth.WithTimeout(0)}, "WithTimeout must be between 10ms and 1m0s, got 0s"},
		{"timeout too long", "https://keys.example.com", serviceToken, []keyauth.RemoteOption{keyauth.WithTimeout(2 * time.Minute)}, "got 2m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := keyauth.Remote(tc.base, tc.token, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Remote = %v, %v; want an error saying %q", c, err, tc.says)
			}
			noKey(t, err, "hunter2")
		})
	}
	if _, err := keyauth.Remote("http://127.0.0.1:8080/prefix", serviceToken, keyauth.WithHTTPClient(&http.Client{})); err != nil {
		t.Errorf("Remote with a path prefix and a client: %v", err)
	}
}

// TestRemoteUnreachable checks a keyworker that is down is an error naming
// its address.
func TestRemoteUnreachable(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	key := unknownKey(t)
	_, err := mustRemote(t, url, serviceToken).Check(context.Background(), key)
	if err == nil || !strings.Contains(err.Error(), "calling keyworker at "+url+keyauth.VerifyPath) {
		t.Fatalf("err = %v, want one naming the endpoint", err)
	}
	noKey(t, err, key)
	noKey(t, err, serviceToken)
}

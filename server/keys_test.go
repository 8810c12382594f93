package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
)

// fakeKeys is an in-memory KeyService with the contract's owner rule:
// another user's key id is keystore.ErrNotFound, as a missing one is.
type fakeKeys struct {
	mu       sync.Mutex
	now      func() time.Time
	limit    int // live keys per user; 0: none
	keys     map[string]*fakeKey
	order    []string
	calls    []string // "op user key addr", for the audit-trail arguments
	failWith error    // every call fails with it, when set
}

type fakeKey struct {
	info      keystore.Info
	plaintext string
}

func newFakeKeys() *fakeKeys {
	return &fakeKeys{now: time.Now, keys: map[string]*fakeKey{}}
}

func (f *fakeKeys) record(op, user, key, addr string) {
	f.calls = append(f.calls, strings.Join([]string{op, user, key, addr}, " "))
}

func (f *fakeKeys) own(userID, keyID string) (*fakeKey, error) {
	k, ok := f.keys[keyID]
	if !ok || k.info.UserID != userID {
		return nil, fmt.Errorf("finding key %s: %w", keyID, keystore.ErrNotFound)
	}
	return k, nil
}

func (f *fakeKeys) live(userID string) int {
	n := 0
	for _, k := range f.keys {
		if s := k.info.Status(f.now()); k.info.UserID == userID && s != keys.StatusRevoked && s != keys.StatusExpired {
			n++
		}
	}
	return n
}

func (f *fakeKeys) make(userID, name string, expires *time.Time, from string) (NewKey, error) {
	k, err := keys.Generate("sk")
	if err != nil {
		return NewKey{}, err
	}
	if name == "" {
		name = keystore.DefaultName
	}
	info := keystore.Info{ID: k.ID, UserID: userID, Name: name, Prefix: k.Prefix, Last4: k.Last4, Source: keystore.SourceManual,
		CreatedAt: f.now().UTC(), ExpiresAt: expires, RotatedFrom: from}
	f.keys[k.ID] = &fakeKey{info: info, plaintext: k.Plaintext()}
	f.order = append(f.order, k.ID)
	return NewKey{KeyInfo: KeyInfo{Info: info}, Key: k.Plaintext()}, nil
}

func (f *fakeKeys) List(ctx context.Context, userID string) ([]keystore.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("list", userID, "", "")
	if f.failWith != nil {
		return nil, f.failWith
	}
	var out []keystore.Info
	for _, id := range slices.Backward(f.order) {
		if k := f.keys[id]; k.info.UserID == userID {
			out = append(out, k.info)
		}
	}
	return out, nil
}

func (f *fakeKeys) Create(ctx context.Context, userID string, r CreateKey, remoteAddr string) (NewKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("create", userID, "", remoteAddr)
	if f.failWith != nil {
		return NewKey{}, f.failWith
	}
	if n := f.live(userID); f.limit > 0 && n >= f.limit {
		return NewKey{}, fmt.Errorf("creating key: user has %d live keys, the limit is %d: revoke one first: %w", n, f.limit, keystore.ErrLimitReached)
	}
	return f.make(userID, r.Name, r.ExpiresAt, "")
}

func (f *fakeKeys) Rotate(ctx context.Context, userID, keyID string, overlap time.Duration, remoteAddr string) (NewKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("rotate "+overlap.String(), userID, keyID, remoteAddr)
	if f.failWith != nil {
		return NewKey{}, f.failWith
	}
	old, err := f.own(userID, keyID)
	if err != nil {
		return NewKey{}, err
	}
	if old.info.Status(f.now()) == keys.StatusRevoked {
		return NewKey{}, fmt.Errorf("rotating key %s: %w", keyID, keystore.ErrRevoked)
	}
	if old.info.RevokedAt != nil {
		return NewKey{}, fmt.Errorf("rotating key %s: %w", keyID, keystore.ErrRevocationScheduled)
	}
	if n := f.live(userID); f.limit > 0 && n > f.limit {
		return NewKey{}, fmt.Errorf("rotating key: user has %d live keys, the limit is %d: revoke one first: %w", n, f.limit, keystore.ErrLimitReached)
	}
	nk, err := f.make(userID, old.info.Name, old.info.ExpiresAt, keyID)
	if err != nil {
		return NewKey{}, err
	}
	at := f.now().Add(overlap).UTC()
	old.info.RevokedAt = &at
	nk.OldKeyRevokedAt = &at
	return nk, nil
}

func (f *fakeKeys) SetDisabled(ctx context.Context, userID, keyID string, disabled bool, remoteAddr string) (keystore.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(fmt.Sprint("disabled=", disabled), userID, keyID, remoteAddr)
	if f.failWith != nil {
		return keystore.Info{}, f.failWith
	}
	k, err := f.own(userID, keyID)
	if err != nil {
		return keystore.Info{}, err
	}
	if k.info.Status(f.now()) == keys.StatusRevoked {
		return keystore.Info{}, fmt.Errorf("disabling key %s: %w", keyID, keystore.ErrRevoked)
	}
	if disabled && k.info.DisabledAt == nil {
		at := f.now().UTC()
		k.info.DisabledAt = &at
	} else if !disabled {
		k.info.DisabledAt = nil
	}
	return k.info, nil
}

func (f *fakeKeys) Revoke(ctx context.Context, userID, keyID, remoteAddr string) (keystore.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("revoke", userID, keyID, remoteAddr)
	if f.failWith != nil {
		return keystore.Info{}, f.failWith
	}
	k, err := f.own(userID, keyID)
	if err != nil {
		return keystore.Info{}, err
	}
	if k.info.Status(f.now()) != keys.StatusRevoked {
		at := f.now().UTC()
		k.info.RevokedAt = &at
	}
	return k.info, nil
}

func (f *fakeKeys) Verify(ctx context.Context, key string) (keystore.Verification, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failWith != nil {
		return keystore.Verification{}, f.failWith
	}
	for _, k := range f.keys {
		if k.plaintext == key {
			st := k.info.Status(f.now())
			return keystore.Verification{Status: st, UserID: k.info.UserID, KeyID: k.info.ID}, nil
		}
	}
	for _, k := range f.keys {
		if strings.Contains(key, "_"+k.info.ID+"_") {
			// A wrong secret for a known id: the ids are returned, as a
			// careless service might, so that the test sees the server
			// leave them out of a not_found answer.
			return keystore.Verification{Status: keys.StatusNotFound, UserID: k.info.UserID, KeyID: k.info.ID}, nil
		}
	}
	return keystore.Verification{Status: keys.StatusNotFound}, nil
}

// serviceTok is a valid service token for VerifyTokens.
const serviceTok = "svc-0123456789abcdef0123456789abcdef"

// keysServer is a server with the fake KeyService, a service token and a
// debug logger into the returned buffer.
func keysServer(t *testing.T, cfg Config) (http.Handler, *fakeKeys, *testenv.LogBuffer) {
	t.Helper()
	f := newFakeKeys()
	if cfg.Keys == nil {
		cfg.Keys = f
	}
	if cfg.VerifyTokens == nil {
		cfg.VerifyTokens = []string{serviceTok}
	}
	logs := &testenv.LogBuffer{}
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return testServer(t, cfg).Handler(), f, logs
}

// call makes a request with a body to h, as do does.
func call(h http.Handler, method, path, body string, hdr map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Host = "localhost:8080"
	req.RemoteAddr = "192.0.2.1:1234"
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func as(token string) map[string]string { return map[string]string{"Authorization": "Bearer " + token} }

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("body is not the JSON expected: %v: %s", err, rec.Body)
	}
	return v
}

// TestKeysAPILifecycle: a user creates, lists, rotates, disables, enables
// and revokes a key through the API, and a backend verifies it at each step;
// every answer is JSON with Cache-Control: no-store, the plaintext is in the
// 201 bodies only (never in another answer or in the log), and each change
// reaches the service with the user and the client address.
func TestKeysAPILifecycle(t *testing.T) {
	t.Parallel()
	h, f, logs := keysServer(t, Config{})
	var bodies []string // every answer but the 201s
	check := func(rec *httptest.ResponseRecorder, status int, what string) {
		t.Helper()
		if rec.Code != status {
			t.Fatalf("%s: %d %s, want %d", what, rec.Code, rec.Body, status)
		}
		if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
			t.Errorf("%s: Cache-Control %q, want no-store", what, cc)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", what, ct)
		}
		if status != http.StatusCreated {
			bodies = append(bodies, rec.Body.String())
		}
	}
	verify := func(key string) verifyAnswer {
		t.Helper()
		rec := call(h, "POST", "/v1/keys/verify", fmt.Sprintf(`{"key":%q}`, key), as(serviceTok))
		check(rec, 200, "verify")
		return decode[verifyAnswer](t, rec)
	}

	rec := call(h, "POST", "/v1/keys", `{"name":"ci","expires_in":"720h"}`, as("good"))
	check(rec, 201, "create")
	created := decode[NewKey](t, rec)
	if created.Key == "" || !strings.HasPrefix(created.Key, "sk_"+created.ID+"_") || created.Name != "ci" || created.Status != keys.StatusValid {
		t.Fatalf("create answered %s", rec.Body)
	}
	if created.ExpiresAt == nil || time.Until(*created.ExpiresAt) < 719*time.Hour {
		t.Errorf("expires_in 720h gave expires_at %v", created.ExpiresAt)
	}
	if v := verify(created.Key); !v.Valid || v.Status != keys.StatusValid || v.UserID != "user-good" || v.KeyID != created.ID {
		t.Errorf("verify after create: %+v", v)
	}

	rec = call(h, "GET", "/v1/keys", "", as("good"))
	check(rec, 200, "list")
	list := decode[struct{ Keys []KeyInfo }](t, rec)
	if len(list.Keys) != 1 || list.Keys[0].ID != created.ID || list.Keys[0].Status != keys.StatusValid {
		t.Fatalf("list: %s", rec.Body)
	}
	for _, field := range []string{`"key"`, "hash", "salt", "secret"} {
		if strings.Contains(rec.Body.String(), field) {
			t.Errorf("the list shows %s: %s", field, rec.Body)
		}
	}

	rec = call(h, "POST", "/v1/keys/"+created.ID+"/rotate", `{"overlap":"1h"}`, as("good"))
	check(rec, 201, "rotate")
	rotated := decode[NewKey](t, rec)
	if rotated.Key == "" || rotated.Key == created.Key || rotated.RotatedFrom != created.ID || rotated.OldKeyRevokedAt == nil ||
		time.Until(*rotated.OldKeyRevokedAt) > time.Hour || time.Until(*rotated.OldKeyRevokedAt) < 59*time.Minute {
		t.Fatalf("rotate answered %s", rec.Body)
	}
	if !strings.Contains(rec.Body.String(), `"rotated_from":"`+created.ID+`"`) || !strings.Contains(rec.Body.String(), `"old_key_revoked_at":`) {
		t.Errorf("rotate's body lacks rotated_from or old_key_revoked_at: %s", rec.Body)
	}
	if v := verify(created.Key); !v.Valid {
		t.Errorf("the old key stopped working within the overlap: %+v", v)
	}

	rec = call(h, "POST", "/v1/keys/"+rotated.ID+"/disable", "", as("good"))
	check(rec, 200, "disable")
	if got := decode[KeyInfo](t, rec); got.ID != rotated.ID || got.Status != keys.StatusDisabled || got.DisabledAt == nil {
		t.Fatalf("disable answered %s", rec.Body)
	}
	if v := verify(rotated.Key); v.Valid || v.Status != keys.StatusDisabled || v.KeyID != rotated.ID {
		t.Errorf("verify of a disabled key: %+v", v)
	}
	rec = call(h, "POST", "/v1/keys/"+rotated.ID+"/enable", "", as("good"))
	check(rec, 200, "enable")
	if v := verify(rotated.Key); !v.Valid {
		t.Errorf("verify of an enabled key: %+v", v)
	}

	rec = call(h, "DELETE", "/v1/keys/"+rotated.ID, "", as("good"))
	check(rec, 200, "revoke")
	if got := decode[KeyInfo](t, rec); got.ID != rotated.ID || got.Status != keys.StatusRevoked || got.RevokedAt == nil {
		t.Fatalf("revoke answered %s", rec.Body)
	}
	rec = call(h, "DELETE", "/v1/keys/"+rotated.ID, "", as("good"))
	check(rec, 200, "revoke again")
	if v := verify(rotated.Key); v.Valid || v.Status != keys.StatusRevoked {
		t.Errorf("verify of a revoked key: %+v", v)
	}

	wantCalls := []string{
		"create user-good  192.0.2.1",
		"list user-good  ",
		"rotate 1h0m0s user-good " + created.ID + " 192.0.2.1",
		"disabled=true user-good " + rotated.ID + " 192.0.2.1",
		"disabled=false user-good " + rotated.ID + " 192.0.2.1",
		"revoke user-good " + rotated.ID + " 192.0.2.1",
		"revoke user-good " + rotated.ID + " 192.0.2.1",
	}
	if !slices.Equal(f.calls, wantCalls) {
		t.Errorf("the service was called\n%s\nwant\n%s", strings.Join(f.calls, "\n"), strings.Join(wantCalls, "\n"))
	}
	log := logs.String()
	for _, k := range []NewKey{created, rotated} {
		secret := k.Key[len("sk_"+k.ID+"_"):]
		for _, b := range bodies {
			if strings.Contains(b, secret) {
				t.Errorf("an answer other than the 201 carries a plaintext: %s", b)
			}
		}
		if strings.Contains(log, secret) || strings.Contains(log, secret[:12]) {
			t.Errorf("the log carries a plaintext:\n%s", log)
		}
		if !strings.Contains(log, k.ID) {
			t.Errorf("the log does not name key %s:\n%s", k.ID, log)
		}
	}
}

// TestKeysAPIOtherUsersKeyIsNotFound: acting on another user's key id gives
// the same 404 key_not_found, byte for byte, as a key that does not exist,
// and changes nothing.
func TestKeysAPIOtherUsersKeyIsNotFound(t *testing.T) {
	t.Parallel()
	h, f, _ := keysServer(t, Config{})
	theirs := decode[NewKey](t, call(h, "POST", "/v1/keys", "", as("good")))
	for _, op := range []struct{ method, path string }{
		{"POST", "/v1/keys/%s/rotate"},
		{"POST", "/v1/keys/%s/disable"},
		{"POST", "/v1/keys/%s/enable"},
		{"DELETE", "/v1/keys/%s"},
	} {
		other := call(h, op.method, fmt.Sprintf(op.path, theirs.ID), "", as("good2"))
		missing := call(h, op.method, fmt.Sprintf(op.path, "2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA"), "", as("good2"))
		if other.Code != 404 || errCode(t, other) != "key_not_found" {
			t.Errorf("%s %s on another user's key: %d %s", op.method, op.path, other.Code, other.Body)
		}
		if other.Body.String() != missing.Body.String() || other.Code != missing.Code {
			t.Errorf("%s %s: another user's key answers %s, a missing one %s", op.method, op.path, other.Body, missing.Body)
		}
	}
	list := call(h, "GET", "/v1/keys", "", as("good2"))
	if list.Code != 200 || strings.TrimSpace(list.Body.String()) != `{"keys":[]}` {
		t.Errorf("another user's list: %d %s, want an empty list", list.Code, list.Body)
	}
	if v, _ := f.Verify(context.Background(), theirs.Key); v.Status != keys.StatusValid {
		t.Errorf("the key changed: %+v", v)
	}
}

// TestKeysAPIErrors: each way a request fails has its status, its stable
// code and a message that says what to do.
func TestKeysAPIErrors(t *testing.T) {
	t.Parallel()
	h, f, logs := keysServer(t, Config{})
	f.limit = 2
	first := decode[NewKey](t, call(h, "POST", "/v1/keys", "", as("good")))
	second := decode[NewKey](t, call(h, "POST", "/v1/keys", "", as("good")))
	revoked := decode[NewKey](t, call(h, "POST", "/v1/keys", "", as("good2")))
	call(h, "DELETE", "/v1/keys/"+revoked.ID, "", as("good2"))
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)

	for _, c := range []struct {
		name, method, path, body, token string
		status                          int
		code, says                      string
	}{
		{"the live-key limit", "POST", "/v1/keys", `{}`, "good", 409, "key_limit_reached", "user has 2 live keys, the limit is 2: revoke one first"},
		{"rotating at the limit is allowed, above it not", "POST", "/v1/keys/" + first.ID + "/rotate", ``, "good", 201, "", ""},
		{"rotating above the limit", "POST", "/v1/keys/" + second.ID + "/rotate", ``, "good", 409, "key_limit_reached", "the limit is 2"},
		{"rotating a rotated key", "POST", "/v1/keys/" + first.ID + "/rotate", ``, "good", 409, "key_rotated", "rotate its successor"},
		{"rotating a revoked key", "POST", "/v1/keys/" + revoked.ID + "/rotate", ``, "good2", 409, "key_revoked", "create a new one"},
		{"disabling a revoked key", "POST", "/v1/keys/" + revoked.ID + "/disable", ``, "good2", 409, "key_revoked", "cannot be"},
		{"malformed JSON", "POST", "/v1/keys", `{"name":`, "good2", 400, "bad_request", "JSON"},
		{"not JSON at all", "POST", "/v1/keys", `name=ci`, "good2", 400, "bad_request", `"name", "expires_at" and "expires_in"`},
		{"an unknown field", "POST", "/v1/keys", `{"name":"ci","expires":"1h"}`, "good2", 400, "bad_request", `unknown field "expires"`},
		{"a field of the wrong type", "POST", "/v1/keys", `{"name":7}`, "good2", 400, "bad_request", `field "name" must be a JSON string`},
		{"two JSON values", "POST", "/v1/keys", `{} {}`, "good2", 400, "bad_request", "more than one"},
		{"an array", "POST", "/v1/keys", `[]`, "good2", 400, "bad_request", "must be a JSON object"},
		{"both expiries", "POST", "/v1/keys", `{"expires_at":"2099-01-01T00:00:00Z","expires_in":"1h"}`, "good2", 422, "invalid_request", "not both"},
		{"an expiry in the past", "POST", "/v1/keys", `{"expires_at":"` + past + `"}`, "good2", 422, "invalid_request", "must be in the future"},
		{"an expiry that is no time", "POST", "/v1/keys", `{"expires_at":"tomorrow"}`, "good2", 422, "invalid_request", "RFC 3339"},
		{"a negative lifetime", "POST", "/v1/keys", `{"expires_in":"-1h"}`, "good2", 422, "invalid_request", "positive duration"},
		{"a lifetime past the maximum", "POST", "/v1/keys", `{"expires_in":"9999999h"}`, "good2", 422, "invalid_request", "at most 876000h"},
		{"an expiry past the maximum", "POST", "/v1/keys", `{"expires_at":"2999-01-01T00:00:00Z"}`, "good2", 422, "invalid_request", "at most 876000h away"},
		{"an overlap past the maximum", "POST", "/v1/keys/" + first.ID + "/rotate", `{"overlap":"721h"}`, "good", 422, "invalid_request", "0s to 720h"},
		{"an overlap that is no duration", "POST", "/v1/keys/" + first.ID + "/rotate", `{"overlap":"1 day"}`, "good", 422, "invalid_request", "0s to 720h"},
		{"an unknown rotate field", "POST", "/v1/keys/" + first.ID + "/rotate", `{"overlap_s":60}`, "good", 400, "bad_request", `unknown field "overlap_s": this endpoint takes the field "overlap"`},
		{"no token", "GET", "/v1/keys", ``, "", 401, "missing_token", "Authorization: Bearer"},
		{"a forged token", "GET", "/v1/keys", ``, "forged", 401, "invalid_token", "sign in again"},
		{"an expired token", "POST", "/v1/keys", `{}`, "expired", 401, "token_expired", "refresh the session"},
		{"a service token is no user", "GET", "/v1/keys", ``, serviceTok, 401, "invalid_token", "sign in again"},
	} {
		hdr := map[string]string{}
		if c.token != "" {
			hdr = as(c.token)
		}
		rec := call(h, c.method, c.path, c.body, hdr)
		if rec.Code != c.status {
			t.Errorf("%s: %d %s, want %d", c.name, rec.Code, rec.Body, c.status)
			continue
		}
		if c.code == "" {
			continue
		}
		var body errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Code != c.code || !strings.Contains(body.Error, c.says) {
			t.Errorf("%s: %s, want code %s and a message with %q", c.name, rec.Body, c.code, c.says)
		}
		if c.status == 401 && rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s: a 401 without WWW-Authenticate", c.name)
		}
	}
	if strings.Contains(logs.String(), "forged") || strings.Contains(logs.String(), serviceTok) {
		t.Errorf("a token reached the log:\n%s", logs)
	}

	// What the service says, answered by kind.
	for _, c := range []struct {
		err          error
		status       int
		code, says   string
		logged       bool
		notInMessage string
	}{
		{fmt.Errorf("creating key: %w: name is 201 characters, at most 200", keystore.ErrInvalid), 422, "invalid_request", "at most 200", false, "invalid argument"},
		{fmt.Errorf("creating key: %w", keystore.ErrNotFound), 404, "key_not_found", "no key", false, ""},
		{errors.New("creating key: connection reset by 10.1.2.3"), 500, "internal", "try again", true, "10.1.2.3"},
	} {
		f.mu.Lock()
		f.failWith = c.err
		f.mu.Unlock()
		rec := call(h, "POST", "/v1/keys", ``, as("good2"))
		var body errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != c.status || body.Code != c.code || !strings.Contains(body.Error, c.says) {
			t.Errorf("service error %q: %d %s, want %d %s with %q", c.err, rec.Code, rec.Body, c.status, c.code, c.says)
		}
		if c.notInMessage != "" && strings.Contains(body.Error, c.notInMessage) {
			t.Errorf("service error %q: the internal detail reaches the client: %s", c.err, rec.Body)
		}
		if c.logged != strings.Contains(logs.String(), c.err.Error()) {
			t.Errorf("service error %q: logged=%v, want %v", c.err, !c.logged, c.logged)
		}
	}
}

// TestKeysAPIUnavailable: without a KeyService (or a token check) the keys
// API answers 503 keys_disabled, and a signing-key outage 503 with
// Retry-After: neither is the caller's fault.
func TestKeysAPIUnavailable(t *testing.T) {
	t.Parallel()
	h := testServer(t, Config{}).Handler() // no Keys
	rec := call(h, "GET", "/v1/keys", "", as("good"))
	if rec.Code != 503 || errCode(t, rec) != "keys_disabled" {
		t.Errorf("no KeyService: %d %s", rec.Code, rec.Body)
	}
	h, _, _ = keysServer(t, Config{VerifyToken: func(ctx context.Context, token string) (string, error) {
		return "", fmt.Errorf("fetching the key set: %w", ErrTokenUnverifiable)
	}})
	rec = call(h, "POST", "/v1/keys", "{}", as("good"))
	if rec.Code != 503 || errCode(t, rec) != "token_unverifiable" || rec.Header().Get("Retry-After") == "" {
		t.Errorf("signing keys unavailable: %d %s, Retry-After %q", rec.Code, rec.Body, rec.Header().Get("Retry-After"))
	}
}

// TestKeysAPIRateLimits: the keys API is limited per user and per address,
// in buckets of its own: reveal's limits neither spend nor are spent by it.
func TestKeysAPIRateLimits(t *testing.T) {
	t.Parallel()
	h, _, _ := keysServer(t, Config{KeysPerUser: 2, KeysPerAddr: 4, RevealPerAddr: 1})
	var statuses []int
	for range 3 {
		statuses = append(statuses, call(h, "GET", "/v1/keys", "", as("good2")).Code)
	}
	if fmt.Sprint(statuses) != "[200 200 429]" {
		t.Fatalf("per-user statuses %v, want [200 200 429]", statuses)
	}
	if rec := call(h, "GET", "/v1/keys", "", as("forged")); rec.Code != 401 {
		t.Fatalf("4th from the address: %d", rec.Code)
	}
	rec := call(h, "POST", "/v1/keys/x/disable", "", as("good"))
	if rec.Code != 429 || errCode(t, rec) != "rate_limited" || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), "keys API") {
		t.Fatalf("5th from the address: %d %s, Retry-After %q", rec.Code, rec.Body, rec.Header().Get("Retry-After"))
	}
	if rec := call(h, "POST", "/v1/keys/reveal", "", as("good")); rec.Code != 200 {
		t.Fatalf("reveal after the keys API's limit: %d %s", rec.Code, rec.Body)
	}
}

// TestKeysSettingsAreValidated: the new limits name their field and
// setting, as the others do.
func TestKeysSettingsAreValidated(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{KeysPerUser: -1}, "KeysPerUser must be between 1 and 1000000 per minute, got -1"},
		{Config{KeysPerAddr: MaxRateLimit + 1}, "KeysPerAddr must"},
	} {
		if _, err := New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v, want an error with %q", err, c.want)
		}
	}
}

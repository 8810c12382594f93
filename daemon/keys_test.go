package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keyworker/keyworker/accesstoken"
	"github.com/keyworker/keyworker/daemon"
	"github.com/keyworker/keyworker/keyauth"
)

// apiAnswer is one answer of the HTTP API, decoded loosely.
type apiAnswer struct {
	status int
	header http.Header
	body   []byte
	m      map[string]any
}

func (a apiAnswer) str(field string) string { s, _ := a.m[field].(string); return s }

// call sends one request to the daemon's HTTP API.
func call(t *testing.T, d *daemon.Daemon, method, path, bearer, body string, header ...string) apiAnswer {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+d.Addr()+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	a := apiAnswer{status: resp.StatusCode, header: resp.Header}
	if a.body, err = io.ReadAll(resp.Body); err != nil {
		t.Fatal(err)
	}
	if len(bytes.TrimSpace(a.body)) > 0 {
		if err := json.Unmarshal(a.body, &a.m); err != nil {
			t.Fatalf("%s %s answered %d with a body that is not a JSON object: %q", method, path, a.status, a.body)
		}
	}
	return a
}

func (a apiAnswer) want(t *testing.T, status int, code string) apiAnswer {
	t.Helper()
	if a.status != status || a.str("code") != code {
		t.Fatalf("answered %d %s, want %d %q", a.status, a.body, status, code)
	}
	return a
}

// sqlVerify is the SQL function's status for key.
func (f *fixture) sqlVerify(key string) string {
	f.t.Helper()
	var status string
	if err := f.db.QueryRow(context.Background(), `SELECT status FROM keyworker.verify_api_key($1)`, key).Scan(&status); err != nil {
		f.t.Fatal(err)
	}
	return status
}

const verifyToken = "svc_0123456789abcdef0123456789abcdef"

// TestKeysAPIEndToEnd drives the end users' keys API of a real daemon on
// real PostgreSQL as an app would: list, create, verify (HTTP and SQL
// agreeing), disable, enable, rotate, revoke, the live-key limit, someone
// else's key, refused tokens, CORS, and the lifecycle notices each change
// sends once; no plaintext reaches a log, a table or a notice.
func TestKeysAPIEndToEnd(t *testing.T) {
	t.Parallel()
	f := setup(t)
	hook := newWebhookReceiver(t)
	cfg := f.config(daemon.ModeListen)
	cfg.Webhook.URL, cfg.Webhook.Secret = hook.srv.URL, hook.secret
	cfg.MaxKeysPerUser = 3
	cfg.HTTP.VerifyTokens = []string{verifyToken}
	cfg.HTTP.CORSOrigins = []string{"https://app.example.com"}
	cfg.PickupURL = "https://app.example.com/keys/{key_id}/pickup"
	d := f.start(cfg)

	alice, bob := f.signUp(false), f.signUp(false)
	f.waitCount(30*time.Second, "signup keys", 2, `SELECT count(*) FROM keyworker.api_keys WHERE source = 'signup'`)
	signupKey := f.keyOf(alice)
	ta, tb := f.token(alice), f.token(bob)

	list := call(t, d, "GET", "/v1/keys", ta, "").want(t, 200, "")
	keysOf := func(a apiAnswer) []map[string]any {
		var out []map[string]any
		for _, k := range a.m["keys"].([]any) {
			out = append(out, k.(map[string]any))
		}
		return out
	}
	if ks := keysOf(list); len(ks) != 1 || ks[0]["id"] != signupKey || ks[0]["status"] != "valid" || ks[0]["source"] != "signup" {
		t.Fatalf("alice's list: %s", list.body)
	}
	for _, secret := range []string{"secret_hash", "salt", "key"} {
		if bytes.Contains(list.body, []byte(`"`+secret+`"`)) {
			t.Errorf("the list shows %s: %s", secret, list.body)
		}
	}

	created := call(t, d, "POST", "/v1/keys", ta, `{"name":"ci","expires_in":"720h"}`).want(t, 201, "")
	ci, ciID := created.str("key"), created.str("id")
	if ci == "" || created.str("name") != "ci" || created.str("source") != "user" || created.m["expires_at"] == nil {
		t.Fatalf("create answered %s", created.body)
	}
	plaintexts := []string{ci}

	verify := func(key string) apiAnswer {
		t.Helper()
		return call(t, d, "POST", "/v1/keys/verify", verifyToken, `{"key":"`+key+`"}`).want(t, 200, "")
	}
	agree := func(key, want string) {
		t.Helper()
		v := verify(key)
		if v.str("status") != want || f.sqlVerify(key) != want || (v.m["valid"] == true) != (want == "valid") {
			t.Fatalf("verify of %s: HTTP %s, SQL %s; want %s", ciID, v.body, f.sqlVerify(key), want)
		}
	}
	agree(ci, "valid")
	if v := verify(ci); v.str("user_id") != alice || v.str("key_id") != ciID {
		t.Fatalf("verify answered %s", v.body)
	}
	unknown := verify(strings.Replace(ci, ciID, "2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA", 1))
	wrong := verify(ci[:len(ci)-8] + "AAAAAAAA")
	if unknown.str("status") != "not_found" || !bytes.Equal(unknown.body, wrong.body) {
		t.Errorf("unknown id and wrong secret answered differently: %s / %s", unknown.body, wrong.body)
	}
	call(t, d, "POST", "/v1/keys/verify", ta, `{"key":"`+ci+`"}`).want(t, 401, "invalid_service_token")

	// An app behind keyauth's middleware, checking keys through this
	// daemon's verify endpoint (and one through SQL) the way README shows.
	remote, err := keyauth.Remote("http://"+d.Addr(), verifyToken)
	if err != nil {
		t.Fatal(err)
	}
	app := func(c keyauth.Checker) http.Handler {
		return keyauth.Middleware(c, keyauth.Options{})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, _ := keyauth.UserID(r.Context())
			_, _ = io.WriteString(w, id)
		}))
	}
	apps := map[string]http.Handler{"remote": app(remote), "postgres": app(keyauth.Postgres(f.db, "keyworker"))}
	through := func(key string) (int, string) {
		t.Helper()
		var answers []string
		code := 0
		for _, name := range []string{"remote", "postgres"} {
			req := httptest.NewRequest("GET", "/api/thing", nil)
			req.Header.Set("Authorization", "Bearer "+key)
			rec := httptest.NewRecorder()
			apps[name].ServeHTTP(rec, req)
			if code != 0 && rec.Code != code {
				t.Fatalf("the remote and postgres checkers disagree: %d / %d", code, rec.Code)
			}
			code = rec.Code
			answers = append(answers, rec.Body.String())
		}
		if answers[0] != answers[1] {
			t.Fatalf("the remote and postgres checkers answered %q / %q", answers[0], answers[1])
		}
		return code, answers[0]
	}
	if code, body := through(ci); code != 200 || body != alice {
		t.Fatalf("the app behind the middleware answered %d %q for a valid key", code, body)
	}

	call(t, d, "POST", "/v1/keys/"+ciID+"/disable", ta, "").want(t, 200, "")
	agree(ci, "disabled")
	_, refusedDisabled := through(ci)
	if code, _ := through(ci); code != 401 {
		t.Fatalf("a disabled key passed the middleware: %d", code)
	}
	if a := call(t, d, "POST", "/v1/keys/"+ciID+"/disable", ta, "").want(t, 200, ""); a.str("status") != "disabled" {
		t.Fatalf("disabling twice answered %s", a.body)
	}
	call(t, d, "POST", "/v1/keys/"+ciID+"/enable", ta, "").want(t, 200, "")
	agree(ci, "valid")
	// Disabled again after an enable: a second disabled notice, its own.
	call(t, d, "POST", "/v1/keys/"+ciID+"/disable", ta, "").want(t, 200, "")
	call(t, d, "POST", "/v1/keys/"+ciID+"/enable", ta, "").want(t, 200, "")
	agree(ci, "valid")

	rotated := call(t, d, "POST", "/v1/keys/"+ciID+"/rotate", ta, `{"overlap":"1h"}`).want(t, 201, "")
	newKey, newID := rotated.str("key"), rotated.str("id")
	plaintexts = append(plaintexts, newKey)
	if newKey == "" || rotated.str("rotated_from") != ciID || rotated.str("name") != "ci" {
		t.Fatalf("rotate answered %s", rotated.body)
	}
	if at, err := time.Parse(time.RFC3339Nano, rotated.str("old_key_revoked_at")); err != nil || time.Until(at) < 59*time.Minute || time.Until(at) > time.Hour {
		t.Fatalf("old_key_revoked_at %q (%v), want about an hour from now", rotated.str("old_key_revoked_at"), err)
	}
	agree(ci, "valid") // within the overlap
	agree(newKey, "valid")
	// ci was rotated: its successor is the one to rotate.
	call(t, d, "POST", "/v1/keys/"+ciID+"/rotate", ta, "").want(t, 409, "key_rotated")

	// The signup key, ci (scheduled) and its successor are live: the limit
	// of 3 is reached.
	call(t, d, "POST", "/v1/keys", ta, `{"name":"one too many"}`).want(t, 409, "key_limit_reached")

	// Bob cannot touch alice's keys, and cannot tell them from keys that
	// do not exist.
	missing := call(t, d, "DELETE", "/v1/keys/2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA", tb, "").want(t, 404, "key_not_found")
	for _, c := range []struct{ method, path string }{
		{"DELETE", "/v1/keys/" + newID},
		{"POST", "/v1/keys/" + newID + "/disable"},
		{"POST", "/v1/keys/" + newID + "/enable"},
		{"POST", "/v1/keys/" + newID + "/rotate"},
	} {
		a := call(t, d, c.method, c.path, tb, "").want(t, 404, "key_not_found")
		if c.method == "DELETE" && !bytes.Equal(a.body, missing.body) {
			t.Errorf("someone else's key answered %s, a missing one %s", a.body, missing.body)
		}
	}
	if ks := keysOf(call(t, d, "GET", "/v1/keys", tb, "").want(t, 200, "")); len(ks) != 1 || ks[0]["id"] != f.keyOf(bob) {
		t.Errorf("bob sees %v", ks)
	}
	agree(newKey, "valid")

	revoked := call(t, d, "DELETE", "/v1/keys/"+newID, ta, "").want(t, 200, "")
	if revoked.str("status") != "revoked" {
		t.Fatalf("revoke answered %s", revoked.body)
	}
	agree(newKey, "revoked")
	if code, body := through(newKey); code != 401 || body != refusedDisabled {
		t.Fatalf("a revoked key through the middleware: %d %q, want 401 with the body a disabled key gets (%q)", code, body, refusedDisabled)
	}
	call(t, d, "POST", "/v1/keys/"+newID+"/enable", ta, "").want(t, 409, "key_revoked")
	call(t, d, "DELETE", "/v1/keys/"+newID, ta, "").want(t, 200, "") // again: not an error

	// Tokens that may not use the API.
	expired := token(t, f.jwtSecret, alice, time.Now().Add(-time.Minute))
	call(t, d, "GET", "/v1/keys", expired, "").want(t, 401, "token_expired")
	call(t, d, "GET", "/v1/keys", "", "").want(t, 401, "missing_token")
	anon := f.signUp(true)
	for name, claims := range map[string]map[string]any{
		"anonymous user": {"sub": anon, "role": "authenticated", "aud": "authenticated", "is_anonymous": true},
		"anon role":      {"role": "anon", "aud": "authenticated"},
		"service role":   {"sub": alice, "role": "service_role", "aud": "authenticated"},
	} {
		claims["iat"], claims["exp"] = time.Now().Unix(), time.Now().Add(time.Hour).Unix()
		tok, err := accesstoken.SignHS256(f.jwtSecret, claims)
		if err != nil {
			t.Fatal(err)
		}
		if a := call(t, d, "POST", "/v1/keys", tok, `{}`); a.status != 401 {
			t.Errorf("%s: POST /v1/keys answered %d %s, want 401", name, a.status, a.body)
		}
	}
	if n := f.count(`SELECT count(*) FROM keyworker.api_keys WHERE user_id = $1`, anon); n != 0 {
		t.Errorf("the anonymous user has %d keys", n)
	}

	// Browsers: a preflight from the app's origin is answered, from
	// another origin refused; verify never answers CORS.
	pre := call(t, d, "OPTIONS", "/v1/keys", "", "", "Origin", "https://app.example.com",
		"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization, content-type")
	if pre.status != 204 || pre.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" || pre.header.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("allowed preflight: %d %v", pre.status, pre.header)
	}
	bad := call(t, d, "OPTIONS", "/v1/keys", "", "", "Origin", "https://evil.example",
		"Access-Control-Request-Method", "POST").want(t, 403, "cors_origin_refused")
	if bad.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("refused preflight carries ACAO: %v", bad.header)
	}
	fromApp := call(t, d, "GET", "/v1/keys", ta, "", "Origin", "https://app.example.com").want(t, 200, "")
	if fromApp.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Errorf("a request from the app's origin lacks ACAO: %v", fromApp.header)
	}
	if v := call(t, d, "POST", "/v1/keys/verify", verifyToken, `{"key":"x"}`, "Origin", "https://app.example.com"); v.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("verify answered CORS: %v", v.header)
	}
	if doc := call(t, d, "GET", "/v1/openapi.json", "", "").want(t, 200, ""); !strings.HasPrefix(doc.str("openapi"), "3.1") {
		t.Errorf("openapi.json: %.200s", doc.body)
	}

	// Notices: created for both signup keys and ci, then disabled twice
	// (each disable its own notice, with its own webhook-id), rotated and
	// revoked once.
	type seen struct{ typ, key string }
	want := map[seen]int{
		{"api_key.created", signupKey}: 1, {"api_key.created", f.keyOf(bob)}: 1, {"api_key.created", ciID}: 1,
		{"api_key.disabled", ciID}: 2, {"api_key.rotated", ciID}: 1, {"api_key.revoked", newID}: 1,
	}
	wantTotal := 0
	for _, n := range want {
		wantTotal += n
	}
	got := map[seen]int{}
	disabledIDs := map[string]int{}
	waitFor(t, 30*time.Second, "the lifecycle notices", func() (bool, error) {
		got = map[seen]int{}
		disabledIDs = map[string]int{}
		total := 0
		for _, dl := range hook.received() {
			var p struct {
				Type string `json:"type"`
				Data struct {
					KeyID     string `json:"key_id"`
					RotatedTo string `json:"rotated_to"`
					PickupURL string `json:"pickup_url"`
				} `json:"data"`
			}
			if err := json.Unmarshal(dl.body, &p); err != nil {
				return false, err
			}
			got[seen{p.Type, p.Data.KeyID}]++
			total++
			if p.Type == "api_key.disabled" {
				disabledIDs[dl.id]++
			}
			if p.Type == "api_key.rotated" && p.Data.RotatedTo != newID {
				t.Errorf("the rotated notice names %q, want %q", p.Data.RotatedTo, newID)
			}
			if p.Data.KeyID == signupKey && p.Data.PickupURL != "https://app.example.com/keys/"+signupKey+"/pickup" {
				t.Errorf("the signup key's notice has pickup_url %q", p.Data.PickupURL)
			}
		}
		return len(got) == len(want) && total >= wantTotal, nil
	})
	f.waitQuiet(10 * time.Second)
	if len(disabledIDs) != 2 {
		t.Errorf("the disabled notices' webhook-ids %v, want two distinct ones", disabledIDs)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s of %s sent %d times, want %d (all: %v)", k.typ, k.key, got[k], n, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("notices sent: %v, want %v", got, want)
	}
	if n := f.count(`SELECT count(*) FROM keyworker.key_events WHERE actor = 'user' AND key_id IN ($1, $2)
		AND event IN ('created', 'disabled', 'enabled', 'rotated', 'revoked')`, ciID, newID); n != 8 {
		t.Errorf("%d user audit events for ci and its successor, want 8 (created x2, disabled x2, enabled x2, rotated, revoked)", n)
	}

	// No plaintext anywhere but the 201 answers.
	var dump string
	if err := f.db.QueryRow(context.Background(), `SELECT
		coalesce((SELECT string_agg(row_to_json(k)::text, ' ') FROM keyworker.api_keys k), '') ||
		coalesce((SELECT string_agg(row_to_json(e)::text, ' ') FROM keyworker.key_events e), '') ||
		coalesce((SELECT string_agg(row_to_json(j)::text, ' ') FROM keyworker.river_job j), '')`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	var notices strings.Builder
	for _, dl := range hook.received() {
		notices.Write(dl.body)
	}
	for _, p := range plaintexts {
		secret := p[len(p)-49 : len(p)-6]
		for where, text := range map[string]string{"the log": f.logs.String(), "the tables": dump, "the notices": notices.String()} {
			if strings.Contains(text, secret) {
				t.Errorf("a key's secret is in %s", where)
			}
		}
	}
}

// TestKeysAPIUnderRepeatableReadDefault: a database whose
// default_transaction_isolation is repeatable read (ALTER DATABASE or
// ALTER ROLE ... SET) still gets the live-key limit right: the API's
// transactions are READ COMMITTED whatever the default (keystore refuses
// to count in any other), so creating and rotating work and the limit
// holds.
func TestKeysAPIUnderRepeatableReadDefault(t *testing.T) {
	t.Parallel()
	f := setup(t)
	var dbName string
	if err := f.db.QueryRow(context.Background(), `SELECT current_database()`).Scan(&dbName); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Exec(context.Background(), `ALTER DATABASE `+dbName+` SET default_transaction_isolation = 'repeatable read'`); err != nil {
		t.Fatal(err)
	}
	cfg := f.config(daemon.ModeListen)
	cfg.MaxKeysPerUser = 2
	d := f.start(cfg)
	alice := f.signUp(false)
	f.waitCount(30*time.Second, "the signup key", 1, `SELECT count(*) FROM keyworker.api_keys WHERE source = 'signup'`)
	ta := f.token(alice)
	created := call(t, d, "POST", "/v1/keys", ta, `{"name":"ci"}`).want(t, 201, "")
	call(t, d, "POST", "/v1/keys/"+created.str("id")+"/rotate", ta, "").want(t, 201, "")
	call(t, d, "POST", "/v1/keys", ta, `{"name":"one too many"}`).want(t, 409, "key_limit_reached")
}

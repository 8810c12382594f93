package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/internal/testenv"
)

// dbEnv returns the environment for commands against a fresh migrated
// database, and a pool on it.
func dbEnv(t *testing.T) (map[string]string, *pgxpool.Pool) {
	t.Helper()
	url := harness.Database(t)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return map[string]string{
		"DATABASE_URL":          url,
		"KEYWORKER_SEALING_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
	}, pool
}

// count is testenv.Count: a SELECT count(*) style query's result.
var count = testenv.Count

func TestDemoRunsEndToEndAndLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, stderr, err := invoke(ctx, nil, "", "demo", "--exit", "--addr", "127.0.0.1:0", "--users", "2")
	if err != nil {
		t.Fatalf("demo failed: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr)
	}
	for _, want := range []string{
		"starting a throwaway PostgreSQL",
		"dashboard: http://127.0.0.1:",
		"key made for user1@example.com: sk_",
		"key made for user2@example.com: sk_",
		"2 notices delivered",
		"200 OK, the full key",
		"verify_api_key(<key>) → valid",
		"a second pick-up answers 404",
		"user1@example.com's access token (as Supabase Auth would sign it, valid 1h): eyJ",
		"POST /v1/keys {\"name\":\"laptop\",\"expires_in\":\"720h\"} → 201, a new key shown once: sk_",
		"the example app, now: GET /api/whoami with the key → 200",
		"the example app, once disabled: GET /api/whoami with the key → 401",
		"the example app, once enabled again: GET /api/whoami with the key → 200",
		"the example app, once revoked: GET /api/whoami with the key → 401",
		"GET /v1/keys → laptop (user) revoked, default (signup) valid",
		"keyworker stopped",
		"removed the throwaway PostgreSQL",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	// The demo prints keys masked: no full key (prefix_id_secret+crc) appears.
	if regexp.MustCompile(`sk_[0-9A-Za-z]{27}_[0-9A-Za-z]{49}`).MatchString(out + stderr) {
		t.Error("the demo printed a full key")
	}
	m := regexp.MustCompile(`data directory (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("demo did not say which directory it removed:\n%s", out)
	}
	if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
		t.Errorf("the demo left %s behind (stat: %v)", m[1], err)
	}
	port := regexp.MustCompile(`on 127\.0\.0\.1:(\d+), database app`).FindStringSubmatch(out)
	if port == nil {
		t.Fatalf("demo did not print its Postgres port:\n%s", out)
	}
	// No server is left listening on the demo's port.
	if b, _ := exec.Command("pgrep", "-f", "port="+port[1]).Output(); len(strings.TrimSpace(string(b))) > 0 {
		t.Errorf("a postgres process for port %s is still running: %s", port[1], b)
	}
}

func TestReplayFiftyThousandUsersEnqueuesEachOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	envv, pool := dbEnv(t)
	// 50,000 eligible users without keys, plus 500 anonymous and 500
	// soft-deleted ones that must not be enqueued, all after installation.
	if _, err := pool.Exec(ctx, `
		INSERT INTO auth.users (id, email, created_at, is_anonymous, deleted_at)
		SELECT gen_random_uuid(), 'u' || i || '@example.com', now(),
		       i > 50000 AND i <= 50500,
		       CASE WHEN i > 50500 THEN now() END
		FROM generate_series(1, 51000) i`); err != nil {
		t.Fatal(err)
	}
	out, _, err := invoke(ctx, envv, "", "replay", "--dry-run", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var dry map[string]any
	if err := json.Unmarshal([]byte(out), &dry); err != nil || dry["found"] != float64(50000) || dry["enqueued"] != float64(0) {
		t.Fatalf("dry run: %s (%v)", out, err)
	}
	if n := count(t, pool, `SELECT count(*) FROM keyworker.river_job`); n != 0 {
		t.Fatalf("dry run enqueued %d jobs", n)
	}
	out, _, err = invoke(ctx, envv, "", "replay", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var first map[string]any
	_ = json.Unmarshal([]byte(out), &first)
	if first["enqueued"] != float64(50000) {
		t.Fatalf("first replay: %s", out)
	}
	out, _, err = invoke(ctx, envv, "", "replay")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "0 users handed to 0 create-keys jobs, 50000 already queued") {
		t.Fatalf("second replay: %s", out)
	}
	if n := count(t, pool, `SELECT count(*) FROM keyworker.river_job WHERE kind = 'keyworker.create_keys'`); n != 50 {
		t.Fatalf("%d create-keys jobs, want 50 (1000 users each)", n)
	}
	if n := count(t, pool, `SELECT count(DISTINCT u) FROM keyworker.river_job j, jsonb_array_elements_text(j.args->'user_ids') u`); n != 50000 {
		t.Fatalf("%d distinct users in jobs, want 50000", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM keyworker.river_job j, jsonb_array_elements_text(j.args->'user_ids') x
		JOIN auth.users u ON u.id = x::uuid WHERE u.is_anonymous OR u.deleted_at IS NOT NULL`); n != 0 {
		t.Fatalf("%d jobs for ineligible users", n)
	}

	// status reports the same numbers as the database.
	out, _, err = invoke(ctx, envv, "", "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st statusReport
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if st.Queue["available"] != int64(count(t, pool, `SELECT count(*) FROM keyworker.river_job WHERE state = 'available'`)) || st.Queue["available"] != 50 {
		t.Fatalf("status queue %v, want 50 available (1000 users each)", st.Queue)
	}
	if st.OldestWaitingAt == nil || st.SignupKeys != 0 || st.SlotExists {
		t.Fatalf("status: %+v", st)
	}
	text, _, err := invoke(ctx, envv, "", "status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "available 50,") || !strings.Contains(text, "auto: no worker has started yet") {
		t.Fatalf("status text:\n%s", text)
	}

	// worker trace finds a replayed user's job, and refuses a non-uuid.
	var user string
	if err := pool.QueryRow(ctx, `SELECT id::text FROM auth.users WHERE NOT is_anonymous AND deleted_at IS NULL LIMIT 1`).Scan(&user); err != nil {
		t.Fatal(err)
	}
	trace, _, err := invoke(ctx, envv, "", "trace", user)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"user " + user, "keyworker.create_keys available", "1000 in batch, source replay", "/riverui/jobs/", "keys (0)"} {
		if !strings.Contains(trace, want) {
			t.Fatalf("trace lacks %q:\n%s", want, trace)
		}
	}
	if _, _, err := invoke(ctx, envv, "", "trace", "not-a-user"); err == nil || !strings.Contains(err.Error(), "is not a user id") {
		t.Fatalf("trace of a non-uuid: %v", err)
	}
	if _, _, err := invoke(ctx, envv, "", "trace", "--schema", "nosuch", user); err == nil || !strings.Contains(err.Error(), "run `worker migrate`") {
		t.Fatalf("trace of a non-uuid: %v", err)
	}
}

func TestKeysCommandsCreateListRotateRevokeVerify(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	envv, pool := dbEnv(t)
	const user = "00000000-0000-0000-0000-0000000000aa"
	if _, err := pool.Exec(ctx, `INSERT INTO auth.users (id, email, created_at) VALUES ($1, 'a@example.com', now())`, user); err != nil {
		t.Fatal(err)
	}
	key, stderr, err := invoke(ctx, envv, "", "keys", "create", "--user", user, "--name", "ci")
	if err != nil {
		t.Fatalf("create: %v %s", err, stderr)
	}
	key = strings.TrimSpace(key)
	if !regexp.MustCompile(`^sk_[0-9A-Za-z]{27}_[0-9A-Za-z]{49}$`).MatchString(key) {
		t.Fatalf("create printed %q", key)
	}
	keyID := key[3:30]
	out, _, err := invoke(ctx, envv, key+"\n", "keys", "verify")
	if err != nil || !strings.Contains(out, "status\tvalid") || !strings.Contains(out, user) {
		t.Fatalf("verify from stdin: %v\n%s", err, out)
	}
	out, _, err = invoke(ctx, envv, "", "keys", "list", "--user", user)
	if err != nil || !strings.Contains(out, keyID) || strings.Contains(out, key) {
		t.Fatalf("list: %v\n%s", err, out)
	}
	newKey, _, err := invoke(ctx, envv, "", "keys", "rotate", keyID, "--overlap", "1h")
	if err != nil {
		t.Fatalf("rotate: %v", err)
	}
	newKey = strings.TrimSpace(newKey)
	// During the overlap both keys work.
	for _, k := range []string{key, newKey} {
		if out, _, err := invoke(ctx, envv, "", "keys", "verify", k); err != nil || !strings.Contains(out, "valid") {
			t.Fatalf("verify during overlap: %v %s", err, out)
		}
	}
	if _, _, err := invoke(ctx, envv, "", "keys", "revoke", keyID); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	out, _, err = invoke(ctx, envv, "", "keys", "verify", key)
	if err != errVerifyFailed || !strings.Contains(out, "status\trevoked") {
		t.Fatalf("verify revoked: %v\n%s", err, out)
	}
	out, _, err = invoke(ctx, envv, "", "keys", "verify", key[:len(key)-1]+"x")
	if err != errVerifyFailed || !strings.Contains(out, "not_found") || strings.Contains(out, key[31:60]) {
		t.Fatalf("verify typo: %v\n%s", err, out)
	}
	if _, _, err := invoke(ctx, envv, "", "keys", "revoke", keyID); err == nil || !strings.Contains(err.Error(), "already revoked") {
		t.Fatalf("second revoke: %v", err)
	}
	_, _, err = invoke(ctx, envv, "", "keys", "create")
	wantUsageError(t, err, "--user")
	_, _, err = invoke(ctx, envv, "", "keys", "explode")
	wantUsageError(t, err, `unknown keys action "explode"`)
	// The audit trail says who did it.
	if n := count(t, pool, `SELECT count(*) FROM keyworker.key_events WHERE actor = 'operator' AND event IN ('created', 'rotated', 'revoked')`); n < 3 {
		t.Fatalf("%d operator events, want at least 3", n)
	}
	if hits, err := scanFor(ctx, pool, key, newKey); err != nil || len(hits) > 0 {
		t.Fatalf("plaintext keys stored in %v (%v)", hits, err)
	}
}

func TestMigrateIsIdempotentFromTheCommandLine(t *testing.T) {
	t.Parallel()
	envv, _ := dbEnv(t)
	out, _, err := invoke(context.Background(), envv, "", "migrate")
	if err != nil || !strings.Contains(out, "is up to date") {
		t.Fatalf("migrate on a migrated database: %v %s", err, out)
	}
}

func TestReplayOnATableWithoutOptionalColumns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	envv, pool := dbEnv(t)
	if _, err := pool.Exec(ctx, `CREATE TABLE public.accounts (id uuid PRIMARY KEY, email text);
		INSERT INTO public.accounts SELECT gen_random_uuid(), 'a' || i || '@example.com' FROM generate_series(1, 7) i`); err != nil {
		t.Fatal(err)
	}
	out, _, err := invoke(ctx, envv, "", "replay", "--dry-run", "--json", "--since", "all",
		"--users-table", "public.accounts",
		"--users-created-at-column", "-", "--users-anonymous-column", "-", "--users-deleted-at-column", "-")
	if err != nil {
		t.Fatalf("replay on a table with only id and email: %v", err)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil || res["found"] != float64(7) {
		t.Fatalf("found %v, want 7 (%s)", res["found"], out)
	}
}

// TestStatusShowsTheChosenModeAndTheOutbox: `worker status` reports the
// capture path the last worker chose (not the configured auto) and, in
// listen mode, the signups waiting in the outbox.
func TestStatusShowsTheChosenModeAndTheOutbox(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	envv, pool := dbEnv(t)
	if _, err := pool.Exec(ctx, `UPDATE keyworker.installation SET capture_mode = 'listen',
		capture_reason = 'not_publishable: listen mode needs nothing more', capture_chosen_at = now()`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO keyworker.signup_outbox (user_id) SELECT gen_random_uuid() FROM generate_series(1, 3)`); err != nil {
		t.Fatal(err)
	}
	text, _, err := invoke(ctx, envv, "", "status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "listen, chosen ") || !strings.Contains(text, "not_publishable: listen mode needs nothing more") ||
		!strings.Contains(text, "3 signups waiting for a worker") {
		t.Fatalf("status text:\n%s", text)
	}
	out, _, err := invoke(ctx, envv, "", "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st statusReport
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Mode != "listen" || st.OutboxSignups == nil || *st.OutboxSignups != 3 || st.OutboxOldestS == nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
}

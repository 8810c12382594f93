// Package demo is `worker demo`: a throwaway PostgreSQL shaped like a
// Supabase project, the daemon running against it with the dashboard, a few
// signups turned into keys and notices (each user's access token printed),
// one key picked up through the reveal endpoint and verified with SQL, a key
// created, disabled, enabled and revoked through the keys API and checked at
// each step by an example app behind keyauth's middleware, and then the whole
// thing kept running for the user to add signups, until Ctrl-C removes
// everything it made.
package demo

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/accesstoken"
	"github.com/keyworker/keyworker/daemon"
	"github.com/keyworker/keyworker/keyauth"
	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/pgtemp"
	"github.com/keyworker/keyworker/server"
)

// Config configures a demo run.
type Config struct {
	// HTTPAddr is where the daemon serves. Defaults to 127.0.0.1:8080, or a
	// free port when that is taken.
	HTTPAddr string
	// Mode is daemon.ModeAuto, daemon.ModeLogical or daemon.ModeListen.
	// Defaults to auto.
	Mode string
	// Users is how many users sign up at the start. Defaults to 3.
	Users int
	// Exit ends the demo after the scripted part instead of waiting for
	// Ctrl-C (tests use it).
	Exit bool
	// Out receives the demo's narration. Required.
	Out io.Writer
	// In, when set, is read line by line: each line is an email to sign up.
	In io.Reader
	// Logger receives the daemon's logs. Defaults to discarding.
	Logger *slog.Logger
	// PG configures the throwaway server.
	PG pgtemp.Config
	// ServerURL, when set, is a superuser connection string to an existing
	// server (`worker demo` takes TEST_DATABASE_URL): the demo then makes a
	// database of its own there instead of starting a throwaway server, and
	// drops it, with its replication slot, at the end. Without
	// wal_level=logical there, auto mode runs listen mode.
	ServerURL string
	// OnReady, when set, is called once the scripted part is done, with
	// what a user would now open; the demo keeps running until ctx ends.
	OnReady func(Ready)
}

// Ready tells where the running demo can be reached.
type Ready struct {
	// URL is the daemon's base URL, e.g. http://127.0.0.1:8080.
	URL string
	// DashboardUser and DashboardPassword open /riverui/.
	DashboardUser, DashboardPassword string
	// DatabaseURL is the demo database's connection string.
	DatabaseURL string
}

// Run runs the demo until ctx ends (or, with Exit, until the script is done)
// and removes everything it made.
func Run(ctx context.Context, cfg Config) (err error) {
	if cfg.Users <= 0 {
		cfg.Users = 3
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Mode = cmp.Or(cfg.Mode, daemon.ModeAuto)
	say := func(format string, args ...any) { fmt.Fprintf(cfg.Out, format+"\n", args...) }

	adminURL, dbName, slot, where := cfg.ServerURL, "app", "", ""
	if adminURL == "" {
		say("▸ starting a throwaway PostgreSQL (wal_level=logical)…")
		pg, err := pgtemp.Start(ctx, cfg.PG)
		if err != nil {
			if errors.Is(err, pgtemp.ErrNoBinaries) {
				return fmt.Errorf("%w; or set TEST_DATABASE_URL to a superuser connection to a server of your own, and the demo runs in a database of its own there", err)
			}
			return err
		}
		defer func() {
			_ = pg.Stop()
			say("▸ removed the throwaway PostgreSQL and its data directory %s", pg.Dir())
		}()
		adminURL = pg.URL("postgres")
		where = fmt.Sprintf("PostgreSQL %d on 127.0.0.1:%d, database app", pg.Version(), pg.Port())
	} else {
		// A server others use: names of our own, for the database and the
		// cluster-wide slot.
		dbName = strings.ReplaceAll(fmt.Sprintf("keyworker_demo_%d_%s", os.Getpid(), strings.ToLower(randomString(6))), "-", "_")
		slot = dbName
		say("▸ using the server of TEST_DATABASE_URL: a database of the demo's own there, dropped at the end…")
	}
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connecting to the demo's server: %w", err)
	}
	if where == "" {
		var version string
		_ = admin.QueryRow(ctx, `SELECT current_setting('server_version')`).Scan(&version)
		where = fmt.Sprintf("PostgreSQL %s on the server of TEST_DATABASE_URL, database %s", version, dbName)
	}
	_, err = admin.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{dbName}.Sanitize())
	admin.Close(context.Background())
	if err != nil {
		return fmt.Errorf("creating the demo database: %w", err)
	}
	if cfg.ServerURL != "" {
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := pgtemp.DropDatabase(dctx, adminURL, dbName); err != nil {
				say("▸ could not drop the demo database %s: %v", dbName, err)
				return
			}
			say("▸ dropped the demo database %s and its replication slot", dbName)
		}()
	}
	dbURL := pgtemp.DatabaseURL(adminURL, dbName)
	if err := pgtemp.SetupSupabase(ctx, dbURL); err != nil {
		return err
	}
	say("  %s, with a Supabase-shaped auth.users", where)

	sealing, err := keys.GenerateSealingKey()
	if err != nil {
		return err
	}
	sealingKey, _ := keys.ParseSealingKey(sealing)
	jwtSecret := randomString(32)
	password := randomString(12)
	serviceToken := randomString(40) // the example app's, for POST /v1/keys/verify
	addr := cfg.HTTPAddr
	if addr == "" {
		addr = "127.0.0.1:8080"
		if !portFree(addr) {
			addr = "127.0.0.1:0"
		}
	}

	d, err := daemon.New(daemon.Config{
		DatabaseURL:       dbURL,
		Mode:              cfg.Mode,
		SlotName:          slot,
		SealingKey:        sealingKey,
		Tokens:            accesstoken.Config{JWTSecret: []byte(jwtSecret)},
		HTTP:              server.Config{Addr: addr, DashboardUser: "admin", DashboardPassword: password, VerifyTokens: []string{serviceToken}},
		NotifyLog:         true,
		ReconcileInterval: time.Minute,
		ShutdownTimeout:   5 * time.Second,
		Logger:            cfg.Logger,
	})
	if err != nil {
		return err
	}
	say("▸ starting keyworker, KEYWORKER_MODE=%s (it migrates its schema, then sets up how it reads signups)…", cfg.Mode)
	if err := d.Start(ctx); err != nil {
		return err
	}
	if c := d.Capture(); c.Mode == daemon.ModeLogical {
		say("  reading signups by logical replication (%s): a publication of auth.users (id, created_at, is_anonymous) and a slot", c.Detail)
	} else {
		say("  reading signups in listen mode: a trigger on auth.users writes each new id to keyworker.signup_outbox in the signup's transaction (%s)", c.Detail)
	}
	defer func() {
		d.Stop()
		say("▸ keyworker stopped")
	}()
	base := "http://" + d.Addr()
	say("  dashboard: %s/riverui/   user admin, password %s", base, password)
	say("  metrics:   %s/metrics   (the dashboard's credentials)", base)
	appURL, stopApp, err := startApp(base, serviceToken)
	if err != nil {
		return err
	}
	defer stopApp()
	say("  an example app: %s, behind keyauth.Middleware, which checks keys with POST %s/v1/keys/verify", appURL, base)

	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()

	say("▸ signing up %d users (plain INSERTs into auth.users, as Supabase Auth does)…", cfg.Users)
	var ids []string
	for i := 1; i <= cfg.Users; i++ {
		id, err := signUp(ctx, pool, fmt.Sprintf("user%d@example.com", i))
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	tokens := map[string]string{}
	for _, id := range ids {
		k, err := waitForKey(ctx, pool, id)
		if err != nil {
			return err
		}
		if tokens[id], err = userToken(jwtSecret, id); err != nil {
			return err
		}
		say("  key made for %s: %s_%s_…%s (only its salted hash is stored)", k.email, k.prefix, k.id, k.last4)
		say("    %s's access token (as Supabase Auth would sign it, valid 1h): %s", k.email, tokens[id])
	}
	for _, id := range ids {
		if err := waitForEvent(ctx, pool, id, "notified"); err != nil {
			return err
		}
	}
	say("  %d notices delivered (log sink; set KEYWORKER_WEBHOOK_URL or KEYWORKER_SMTP_URL for real ones)", len(ids))

	say("▸ user1 picks their key up: POST %s/v1/keys/reveal with their access token", base)
	token := tokens[ids[0]]
	rev, status, err := reveal(ctx, base, token)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("reveal answered %d", status)
	}
	masked := rev.Prefix + "_" + rev.KeyID + "_…" + rev.Last4
	say("  200 OK, the full key (%d characters) came back once: %s", len(rev.Key), masked)
	var vstatus string
	if err := pool.QueryRow(ctx, `SELECT status FROM keyworker.verify_api_key($1)`, rev.Key).Scan(&vstatus); err != nil {
		return fmt.Errorf("verifying with SQL: %w", err)
	}
	say("  select status from keyworker.verify_api_key(<key>) → %s", vstatus)
	if vstatus != "valid" {
		return fmt.Errorf("the revealed key verified as %q", vstatus)
	}
	_, again, err := reveal(ctx, base, token)
	if err != nil {
		return err
	}
	say("  a second pick-up answers %d: the plaintext is gone from the database", again)

	if err := manageKeys(ctx, say, base, appURL, token); err != nil {
		return err
	}

	token2 := tokens[ids[len(ids)-1]]
	if cfg.Exit {
		say("▸ demo done")
		return nil
	}
	say("")
	say("▸ keyworker keeps running. Try:")
	who := fmt.Sprintf("user%d", len(ids))
	say("  export TOKEN='%s'   # %s's access token", token2, who)
	say("  curl -s -X POST -H \"Authorization: Bearer $TOKEN\" %s/v1/keys/reveal   # picks up %s's signup key, once", base, who)
	say("  curl -s -X POST -H \"Authorization: Bearer $TOKEN\" -d '{\"name\":\"laptop\"}' %s/v1/keys   # a new key, shown once", base)
	say("  curl -s -H \"Authorization: Bearer $TOKEN\" %s/v1/keys   # %s's keys (metadata and status, never secrets)", base, who)
	say("  curl -s -H 'Authorization: Bearer <a key>' %s   # the example app, behind keyauth's middleware", appURL)
	say("  curl -s -X POST -H 'Authorization: Bearer %s' -d '{\"key\":\"<a key>\"}' %s/v1/keys/verify   # what your backend does: the demo's service token (KEYWORKER_VERIFY_TOKENS)", serviceToken, base)
	say("  psql '%s' -c \"insert into auth.users (id, email, created_at) values (gen_random_uuid(), 'you@example.com', now())\"", dbURL)
	say("  psql '%s' -c 'select id, user_id, last4, created_at from keyworker.api_keys'", dbURL)
	say("  DATABASE_URL='%s' go run ./cmd/worker trace %s   # user1's history: jobs, key, notices, pick-up", dbURL, ids[0])
	if cfg.In != nil {
		say("  or type an email address and Enter to sign someone up.")
	}
	say("  Ctrl-C stops keyworker and removes everything the demo made.")
	if cfg.OnReady != nil {
		cfg.OnReady(Ready{URL: base, DashboardUser: "admin", DashboardPassword: password, DatabaseURL: dbURL})
	}

	lines := make(chan string)
	if cfg.In != nil {
		go func() {
			sc := bufio.NewScanner(cfg.In)
			for sc.Scan() {
				select {
				case lines <- strings.TrimSpace(sc.Text()):
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	for {
		select {
		case <-ctx.Done():
			say("")
			say("▸ Ctrl-C: shutting down")
			return nil
		case <-d.Done():
			return d.Err()
		case email := <-lines:
			if email == "" {
				continue
			}
			id, err := signUp(ctx, pool, email)
			if err != nil {
				say("  could not sign up %q: %v", email, err)
				continue
			}
			k, err := waitForKey(ctx, pool, id)
			if err != nil {
				if ctx.Err() != nil {
					continue
				}
				return err
			}
			say("  key made for %s: %s_%s_…%s", k.email, k.prefix, k.id, k.last4)
			tok, err := userToken(jwtSecret, id)
			if err != nil {
				return err
			}
			say("    %s's access token: %s", k.email, tok)
			say("    pick the key up: curl -s -X POST -H 'Authorization: Bearer %s' %s/v1/keys/reveal", tok, base)
		}
	}
}

func signUp(ctx context.Context, pool *pgxpool.Pool, email string) (string, error) {
	var id string
	err := pool.QueryRow(ctx, `INSERT INTO auth.users (id, aud, role, email, created_at, updated_at, raw_app_meta_data, raw_user_meta_data)
		VALUES (gen_random_uuid(), 'authenticated', 'authenticated', $1, now(), now(), '{"provider":"email"}', '{}')
		RETURNING id::text`, email).Scan(&id)
	return id, err
}

type madeKey struct{ id, prefix, last4, email string }

func waitForKey(ctx context.Context, pool *pgxpool.Pool, userID string) (madeKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var k madeKey
		err := pool.QueryRow(ctx, `SELECT k.id, k.prefix, k.last4, coalesce(u.email, '') FROM keyworker.api_keys k JOIN auth.users u ON u.id = k.user_id WHERE k.user_id = $1 AND k.source = 'signup'`, userID).Scan(&k.id, &k.prefix, &k.last4, &k.email)
		if err == nil {
			return k, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return k, err
		}
		select {
		case <-ctx.Done():
			return k, fmt.Errorf("waiting for the key of user %s timed out after 30s (see the dashboard)", userID)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func waitForEvent(ctx context.Context, pool *pgxpool.Pool, userID, event string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM keyworker.key_events WHERE user_id = $1 AND event = $2`, userID, event).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s of user %s timed out after 30s", event, userID)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func userToken(secret, userID string) (string, error) {
	now := time.Now()
	return accesstoken.SignHS256([]byte(secret), map[string]any{
		"sub": userID, "aud": "authenticated", "role": "authenticated",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	})
}

func reveal(ctx context.Context, base, token string) (server.Revealed, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/keys/reveal", bytes.NewReader(nil))
	if err != nil {
		return server.Revealed{}, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return server.Revealed{}, 0, fmt.Errorf("calling the reveal endpoint: %w", err)
	}
	defer resp.Body.Close()
	var r server.Revealed
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return r, resp.StatusCode, err
		}
	}
	return r, resp.StatusCode, nil
}

// startApp serves an example application on a free loopback port: its one
// endpoint answers only requests carrying a valid key, checked by keyauth's
// middleware through the daemon's verify endpoint.
func startApp(base, serviceToken string) (url string, stop func(), err error) {
	checker, err := keyauth.Remote(base, serviceToken)
	if err != nil {
		return "", nil, err
	}
	requireKey := keyauth.Middleware(checker, keyauth.Options{Realm: "demo-app"})
	mux := http.NewServeMux()
	mux.Handle("/api/whoami", requireKey(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		userID, _ := keyauth.UserID(r.Context())
		keyID, _ := keyauth.KeyID(r.Context())
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"user_id": userID, "key_id": keyID})
	})))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("starting the example app: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/api/whoami", func() { _ = srv.Close() }, nil
}

// manageKeys is the self-service part: user1 makes a key through the API,
// the example app accepts it, then refuses it while it is disabled, accepts
// it again once enabled, and refuses it for good once revoked.
func manageKeys(ctx context.Context, say func(string, ...any), base, appURL, token string) error {
	say("▸ user1 manages their keys: %s/v1/keys with the same access token", base)
	st, created, err := apiCall(ctx, http.MethodPost, base+"/v1/keys", token, `{"name":"laptop","expires_in":"720h"}`)
	if err != nil {
		return err
	}
	if st != http.StatusCreated {
		return fmt.Errorf("POST /v1/keys answered %d: %v", st, created["error"])
	}
	key, id := created["key"].(string), created["id"].(string)
	masked := fmt.Sprintf("%s_%s_…%s", created["prefix"], id, created["last4"])
	say("  POST /v1/keys {\"name\":\"laptop\",\"expires_in\":\"720h\"} → 201, a new key shown once: %s", masked)
	app := func(when string) error {
		st, body, err := appCall(ctx, appURL, key)
		if err != nil {
			return err
		}
		say("    the example app, %s: GET /api/whoami with the key → %d %s", when, st, body)
		return nil
	}
	if err := app("now"); err != nil {
		return err
	}
	for _, step := range []struct{ method, path, what string }{
		{http.MethodPost, "/disable", "disabled"},
		{http.MethodPost, "/enable", "enabled again"},
		{http.MethodDelete, "", "revoked"},
	} {
		st, info, err := apiCall(ctx, step.method, base+"/v1/keys/"+id+step.path, token, "")
		if err != nil {
			return err
		}
		if st != http.StatusOK {
			return fmt.Errorf("%s /v1/keys/%s%s answered %d: %v", step.method, id, step.path, st, info["error"])
		}
		say("  %s /v1/keys/%s%s → %d, status %v", step.method, id, step.path, st, info["status"])
		if err := app("once " + step.what); err != nil {
			return err
		}
	}
	st, list, err := apiCall(ctx, http.MethodGet, base+"/v1/keys", token, "")
	if err != nil || st != http.StatusOK {
		return fmt.Errorf("GET /v1/keys answered %d: %v", st, err)
	}
	var shown []string
	for _, k := range list["keys"].([]any) {
		m := k.(map[string]any)
		shown = append(shown, fmt.Sprintf("%v (%v) %v", m["name"], m["source"], m["status"]))
	}
	say("  GET /v1/keys → %s; each change is an audit event and a notice (api_key.created, api_key.disabled, api_key.revoked)", strings.Join(shown, ", "))
	return nil
}

// apiCall calls the daemon's keys API with a user's access token and
// decodes its JSON answer.
func apiCall(ctx context.Context, method, url, token, body string) (int, map[string]any, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("calling %s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%s %s answered %d, not JSON: %w", method, url, resp.StatusCode, err)
	}
	return resp.StatusCode, m, nil
}

// appCall calls the example app with a key.
func appCall(ctx context.Context, url, key string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("calling the example app: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

func portFree(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	return true
}

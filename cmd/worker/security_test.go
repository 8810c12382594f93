package main

import (
	"context"
	"strings"
	"testing"

	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
)

// unreachableDB is a database on another machine (TEST-NET-1, never
// routed) that a command gives up on within a second.
const unreachableDB = "postgres://keyworker:hunter2@192.0.2.1:5432/postgres?connect_timeout=1"

// TestSecretFlagsWarn guards the warning for secrets on the command line,
// which `ps` shows to every user of the machine.
func TestSecretFlagsWarn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string // "" for no warning
	}{
		{[]string{"--sealing-key", "x"}, "--sealing-key puts a secret on the command line"},
		{[]string{"--sealing-key-previous", "x"}, "KEYWORKER_SEALING_KEY_PREVIOUS_FILE"},
		{[]string{"--jwt-secret", "x"}, "set KEYWORKER_JWT_SECRET, or KEYWORKER_JWT_SECRET_FILE"},
		{[]string{"--dashboard-password", "x"}, "--dashboard-password"},
		{[]string{"--dashboard-token", "x"}, "--dashboard-token"},
		{[]string{"--webhook-secret", "whsec_x"}, "--webhook-secret"},
		{[]string{"--database-url", "postgres://u:hunter2@db.example.com/postgres"}, "--database-url"},
		{[]string{"--database-url", "postgres://u@db.example.com/postgres?password=hunter2"}, "--database-url"},
		{[]string{"--database-url", "host=db.example.com user=u password=hunter2"}, "--database-url"},
		{[]string{"--database-url", "postgres://u@db.example.com/postgres"}, ""},
		{[]string{"--smtp-url", "smtp://u:hunter2@mail.example.com:587"}, "--smtp-url"},
		{[]string{"--smtp-url", "smtp://mail.example.com:25"}, ""},
		{[]string{"--schema", "keyworker"}, ""},
	} {
		v, err := resolve(t, "run", tc.args, map[string]string{"KEYWORKER_JWT_SECRET": "from-env"})
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(v.flagSecretWarnings(), "\n")
		switch {
		case tc.want == "" && got != "":
			t.Errorf("%v: warned %q", tc.args, got)
		case tc.want != "" && !strings.Contains(got, tc.want):
			t.Errorf("%v: warnings %q, want %q", tc.args, got, tc.want)
		}
		if strings.Contains(got, "hunter2") {
			t.Errorf("%v: the warning shows the secret: %s", tc.args, got)
		}
	}
	// The same secret from the environment or a file is not warned about.
	v, err := resolve(t, "run", nil, map[string]string{"KEYWORKER_SEALING_KEY": "x", "KEYWORKER_JWT_SECRET_FILE": "/s", "file:/s": "y", "DATABASE_URL": "postgres://u:hunter2@h/db"})
	if err != nil {
		t.Fatal(err)
	}
	if w := v.flagSecretWarnings(); len(w) != 0 {
		t.Errorf("warned about secrets from the environment: %v", w)
	}
}

// TestCommandsLogTheWarnings guards that the warnings reach the log of the
// commands that connect (migrate, the keys commands, status, replay) and of
// worker run, before connecting.
func TestCommandsLogTheWarnings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sealing := "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	for _, args := range [][]string{
		{"migrate", "--database-url", unreachableDB},
		{"keys", "list", "--database-url", unreachableDB},
		{"status", "--database-url", unreachableDB},
		{"run", "--database-url", unreachableDB, "--sealing-key", sealing},
	} {
		_, stderr, err := invoke(ctx, map[string]string{}, "", args...)
		if err == nil {
			t.Fatalf("%v connected to %s", args, unreachableDB)
		}
		for _, want := range []string{
			"level=WARN",
			"--database-url puts a secret on the command line",
			"DATABASE_URL connects to 192.0.2.1 with TLS that does not verify the server's certificate, falling back to plaintext",
			"sslmode=verify-full",
		} {
			if !strings.Contains(stderr, want) {
				t.Errorf("%v: log lacks %q:\n%s", args, want, stderr)
			}
		}
		if args[0] == "run" && !strings.Contains(stderr, "--sealing-key puts a secret") {
			t.Errorf("run: log lacks the --sealing-key warning:\n%s", stderr)
		}
		if strings.Contains(stderr, "hunter2") || strings.Contains(stderr, sealing) {
			t.Errorf("%v: log shows a secret:\n%s", args, stderr)
		}
	}
}

// TestWebhookOverHTTPIsRefusedUnlessAllowed guards the refusal of an
// http:// webhook to another machine.
func TestWebhookOverHTTPIsRefusedUnlessAllowed(t *testing.T) {
	t.Parallel()
	base := map[string]string{
		"DATABASE_URL":             unreachableDB,
		"KEYWORKER_SEALING_KEY":    "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
		"KEYWORKER_WEBHOOK_SECRET": "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3",
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	ctx := context.Background()
	_, _, err := invoke(ctx, with("KEYWORKER_WEBHOOK_URL", "http://hooks.example.com/keys"), "", "run")
	wantUsageError(t, err, "KEYWORKER_WEBHOOK_URL is http:// to hooks.example.com, which is not this machine")
	if !strings.Contains(err.Error(), "KEYWORKER_WEBHOOK_ALLOW_HTTP=true") {
		t.Errorf("refusal %q does not say how to allow it", err)
	}
	_, _, err = invoke(ctx, with("KEYWORKER_WEBHOOK_URL", "http://hooks.example.com/keys", "KEYWORKER_WEBHOOK_ALLOW_HTTP", "maybe"), "", "run")
	wantUsageError(t, err, `KEYWORKER_WEBHOOK_ALLOW_HTTP="maybe" is not a boolean`)
	// Allowed, to loopback, or https: the configuration passes and the
	// command gets as far as the database.
	for _, m := range []map[string]string{
		with("KEYWORKER_WEBHOOK_URL", "http://hooks.example.com/keys", "KEYWORKER_WEBHOOK_ALLOW_HTTP", "true"),
		with("KEYWORKER_WEBHOOK_URL", "http://127.0.0.1:9000/keys"),
		with("KEYWORKER_WEBHOOK_URL", "https://hooks.example.com/keys"),
	} {
		_, _, err := invoke(ctx, m, "", "run")
		if err == nil || !strings.Contains(err.Error(), "connecting to the database") {
			t.Errorf("%s: got %v, want the configuration accepted", m["KEYWORKER_WEBHOOK_URL"], err)
		}
	}
}

// TestKeysResealAfterARotation guards `worker keys reseal`: it moves the
// recorded fingerprint, re-seals what waits under the old key so the new
// key alone opens it, and refuses a key the database does not know.
func TestKeysResealAfterARotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	envv, pool := dbEnv(t)
	oldB64, newB64 := envv["KEYWORKER_SEALING_KEY"], mustGenerateKey(t)
	oldKey, newKey := mustParseKey(t, oldB64), mustParseKey(t, newB64)

	// Three keys wait, sealed under the old key, which the database records.
	old := storeFor(t, oldKey)
	if _, err := old.CheckSealingKey(ctx, pool); err != nil {
		t.Fatal(err)
	}
	users := []string{"00000000-0000-0000-0000-0000000000b1", "00000000-0000-0000-0000-0000000000b2", "00000000-0000-0000-0000-0000000000b3"}
	for _, u := range users {
		if _, err := pool.Exec(ctx, `INSERT INTO auth.users (id, email, created_at) VALUES ($1::uuid, $1::text || '@example.com', now())`, u); err != nil {
			t.Fatal(err)
		}
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := old.CreateTx(ctx, tx, keystore.NewKey{UserID: u}, keystore.Audit{}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// The new key alone is refused, naming both fingerprints.
	_, _, err := invoke(ctx, map[string]string{"DATABASE_URL": envv["DATABASE_URL"], "KEYWORKER_SEALING_KEY": newB64}, "", "keys", "reseal")
	if err == nil || !strings.Contains(err.Error(), keys.Fingerprint(oldKey)) || !strings.Contains(err.Error(), keys.Fingerprint(newKey)) || !strings.Contains(err.Error(), "KEYWORKER_SEALING_KEY_PREVIOUS") {
		t.Fatalf("reseal with an unknown key = %v, want a refusal naming both fingerprints", err)
	}

	rotating := map[string]string{"DATABASE_URL": envv["DATABASE_URL"], "KEYWORKER_SEALING_KEY": newB64, "KEYWORKER_SEALING_KEY_PREVIOUS": oldB64}
	out, stderr, err := invoke(ctx, rotating, "", "keys", "reseal", "--batch", "2")
	if err != nil {
		t.Fatalf("reseal: %v\n%s", err, stderr)
	}
	if !strings.Contains(out, "re-sealed 3 waiting keys under the sealing key of fingerprint "+keys.Fingerprint(newKey)) ||
		!strings.Contains(stderr, "sealing key rotated") {
		t.Fatalf("reseal printed:\n%s\n%s", out, stderr)
	}
	if strings.Contains(out+stderr, oldB64) || strings.Contains(out+stderr, newB64) {
		t.Fatal("reseal printed a sealing key")
	}
	out, _, err = invoke(ctx, rotating, "", "keys", "reseal")
	if err != nil || !strings.Contains(out, "re-sealed 0 waiting keys") || !strings.Contains(out, "3 were under it already") {
		t.Fatalf("second reseal: %v\n%s", err, out)
	}
	newOnly := storeFor(t, newKey)
	for _, u := range users {
		if _, err := newOnly.Reveal(ctx, pool, u, keystore.Audit{}); err != nil {
			t.Fatalf("Reveal for %s under the new key alone: %v", u, err)
		}
	}
	_, _, err = invoke(ctx, rotating, "", "keys", "reseal", "--batch", "20000")
	wantUsageError(t, err, "--batch")
}

func storeFor(t *testing.T, key []byte) *keystore.Store {
	t.Helper()
	sealer, err := keys.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := keystore.New(keystore.Config{Sealer: sealer})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustGenerateKey(t *testing.T) string {
	t.Helper()
	k, err := keys.GenerateSealingKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustParseKey(t *testing.T, b64 string) []byte {
	t.Helper()
	k, err := keys.ParseSealingKey(b64)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

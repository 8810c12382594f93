package daemon_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/daemon"
	"github.com/keyworker/keyworker/internal/testenv"
)

// TestAutoModeAsHostedSupabasesRole: on a database shaped like hosted
// Supabase, the first `worker run` as its postgres role (not a superuser,
// not the owner of auth.users) migrates, cannot publish auth.users, and so
// reads signups in listen mode; it says so in the log, the installation
// row (`worker status`) and /metrics, with the statement that would enable
// logical mode.
func TestAutoModeAsHostedSupabasesRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t)
	// A database without keyworker's schema: the hosted role migrates it.
	f.url = harness.SupabaseDatabase(t)
	db, err := pgxpool.New(ctx, f.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	f.db = db
	hosted, err := testenv.SetupHostedRole(ctx, f.url, "kw_hosted_postgres")
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.config(daemon.ModeAuto)
	cfg.DatabaseURL = hosted
	cfg.HTTP.MetricsAddr = "127.0.0.1:0"
	d := f.start(cfg)

	c := d.Capture()
	if c.Mode != daemon.ModeListen || c.Reason != "not_publishable" || !strings.Contains(c.Detail, "CREATE PUBLICATION keyworker_signups FOR TABLE auth.users") {
		t.Fatalf("capture %+v: want listen mode because the role may not publish auth.users, naming the statement", c)
	}
	if !strings.Contains(f.logs.String(), `"msg":"reading signups in listen mode"`) {
		t.Error("the start log does not say which capture path runs")
	}
	var mode, reason string
	if err := db.QueryRow(ctx, `SELECT capture_mode, capture_reason FROM keyworker.installation`).Scan(&mode, &reason); err != nil || mode != "listen" || !strings.HasPrefix(reason, "not_publishable: ") {
		t.Errorf("installation records %q, %q (%v)", mode, reason, err)
	}
	if n := f.count(`SELECT count(*) FROM pg_publication`) + f.count(`SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`); n != 0 {
		t.Errorf("listen mode made %d publications or slots", n)
	}
	if n := f.count(`SELECT count(*) FROM pg_namespace n WHERE n.nspname = 'keyworker' AND pg_get_userbyid(n.nspowner) = 'kw_hosted_postgres'`); n != 1 {
		t.Error("keyworker's schema is not the hosted role's")
	}

	regular := f.signUpMany(25, false)
	f.signUpMany(5, true)
	f.waitCount(30*time.Second, "a signup key per permanent user", len(regular), `SELECT count(*) FROM keyworker.api_keys WHERE source = 'signup'`)
	m := scrapeMetrics(t, d)
	if v, ok := m.value("keyworker_capture_info", "mode", "listen", "reason", "not_publishable"); !ok || v != 1 {
		t.Errorf("keyworker_capture_info{mode=listen,reason=not_publishable} = %v, %v", v, ok)
	}
	if v, ok := m.value("keyworker_outbox_signups"); !ok || v != 0 {
		t.Errorf("keyworker_outbox_signups = %v, %v; want 0 once every key exists", v, ok)
	}
}

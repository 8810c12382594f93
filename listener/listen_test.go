package listener

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func startListen(t *testing.T, cfg Config) *Listen {
	t.Helper()
	l, err := NewListen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatalf("starting: %v", err)
	}
	t.Cleanup(l.Stop)
	waitFor(t, 10*time.Second, "listening and the first catch-up done", func() bool {
		st := l.Status()
		return st.Role == RoleListening && st.CatchUps >= 1
	})
	return l
}

func TestListenModeCatchesUpAfterDowntime(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cfg := e.config("")
	cfg.Enqueuer = testEnqueuer{fakeKeys: true}
	a := startListen(t, cfg)

	// Up: notifications deliver.
	e.insertSeparateTx(100)
	e.insertOneTx(100)
	e.waitAllJobs(30 * time.Second)
	e.assertExactlyOnce()
	waitFor(t, 5*time.Second, "status to count 180 signups", func() bool { return a.Status().Signups == 180 })
	if st := a.Status(); st.Signups != 180 || st.CatchUps != 1 {
		t.Fatalf("status: %d signups, %d catch-ups; want 180 notified, 1 (empty) catch-up", st.Signups, st.CatchUps)
	}
	a.Stop()

	// Down for 1,000 signups: nobody listens, the notifications are gone.
	e.insertSeparateTx(1_000)
	b := startListen(t, cfg)
	e.waitAllJobs(30 * time.Second)
	e.assertExactlyOnce()
	waitFor(t, 5*time.Second, "the catch-up to count 900 signups", func() bool { return b.Status().Signups == 900 })

	// The connection is killed: it comes back and catches up again.
	e.exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'`)
	waitFor(t, 10*time.Second, "a reconnect with its catch-up", func() bool {
		st := b.Status()
		return st.Reconnects >= 1 && st.CatchUps >= 2 && st.Role == RoleListening
	})
	e.insertSeparateTx(100)
	e.waitAllJobs(30 * time.Second)
	e.assertExactlyOnce()
}

func TestListenTriggerNeedsTheTableOwner(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	e.ensureRole("kw_listener", "")
	// As on Supabase: the role that migrated owns keyworker's schema and
	// tables but not auth.users.
	e.exec(`ALTER SCHEMA keyworker OWNER TO kw_listener`)
	e.exec(`ALTER TABLE keyworker.installation OWNER TO kw_listener`)
	e.exec(`ALTER TABLE keyworker.api_keys OWNER TO kw_listener`)
	e.exec(`GRANT USAGE ON SCHEMA auth TO kw_listener`)
	e.exec(`GRANT SELECT ON auth.users TO kw_listener`)
	e.exec(`GRANT ALL ON public.test_jobs TO kw_listener`)
	cfg := e.config("")
	cfg.Pool = nil
	cfg.ConnString = withUser(t, e.url, "kw_listener")

	l, _ := NewListen(cfg)
	err := l.Start(ctx)
	var pf *PreflightError
	if !errors.Is(err, ErrNoTrigger) || !errors.As(err, &pf) {
		t.Fatalf("got %v, want ErrNoTrigger", err)
	}
	t.Logf("the operator reads:\n%v", err)
	want := "CREATE TRIGGER keyworker_notify_signup AFTER INSERT ON auth.users REFERENCING NEW TABLE AS keyworker_new_users FOR EACH STATEMENT EXECUTE FUNCTION keyworker.notify_signup();"
	if len(pf.Statements) != 2 || pf.Statements[0] != want || pf.Statements[1] != "GRANT TRIGGER ON auth.users TO kw_listener;" {
		t.Fatalf("statements %q", pf.Statements)
	}

	// The owner runs the printed statement; the listener then starts, and
	// signups made by the owner (as Supabase Auth makes them) arrive.
	owner, err := pgx.Connect(ctx, withUser(t, e.url, "supabase_auth_admin"))
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	if _, err := owner.Exec(ctx, want); err != nil {
		t.Fatalf("the printed statement fails for the owner: %v", err)
	}
	startListen(t, cfg)
	if _, err := owner.Exec(ctx, `INSERT INTO auth.users (id, created_at, is_anonymous)
		SELECT gen_random_uuid(), now(), i % 10 = 0 FROM generate_series(1, 20) i`); err != nil {
		t.Fatalf("signing up as the owner: %v", err)
	}
	e.waitAllJobs(30 * time.Second)
	e.assertExactlyOnce()
}

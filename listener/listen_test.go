package listener

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// startListen makes and starts a Listen (stopped when the test ends) and
// waits until it listens and has emptied the outbox once.
func startListen(t testing.TB, cfg Config) *Listen {
	t.Helper()
	l := runListen(t, cfg)
	waitFor(t, 10*time.Second, "listening and the first drain done", func() bool {
		st := l.Status()
		return st.Role == RoleListening && st.Drains >= 1
	})
	return l
}

// runListen makes and starts a Listen, stopped when the test ends.
func runListen(t testing.TB, cfg Config) *Listen {
	t.Helper()
	l, err := NewListen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatalf("starting: %v", err)
	}
	t.Cleanup(l.Stop)
	return l
}

func TestListenModeOutboxCarriesSignupsThroughDowntime(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cfg := e.config("")
	a := startListen(t, cfg)
	waitFor(t, 5*time.Second, "the reconcile enqueued at start", func() bool {
		return e.count(`SELECT count(*) FROM public.test_reconciles WHERE reason = 'listen mode started'`) == 1
	})

	// Up: the outbox and its wake-ups deliver.
	e.insertSeparateTx(100)
	e.insertOneTx(100)
	e.waitAllJobs(30 * time.Second)
	e.assertExactlyOnce()
	waitFor(t, 5*time.Second, "status to count 180 signups", func() bool { return a.Status().Signups == 180 })
	a.Stop()

	// Down for 1,000 signups: nobody listens, the outbox keeps them.
	e.insertSeparateTx(1_000)
	if n := e.count(`SELECT count(*) FROM keyworker.signup_outbox`); n != 900 {
		t.Fatalf("the outbox holds %d signups while the worker is down, want the 900 permanent ones", n)
	}
	b := startListen(t, cfg)
	e.waitAllJobs(30 * time.Second)
	e.assertExactlyOnce()
	waitFor(t, 5*time.Second, "the drain to count 900 signups", func() bool { return b.Status().Signups == 900 })
	if n := e.count(`SELECT count(*) FROM keyworker.signup_outbox`); n != 0 {
		t.Fatalf("%d signups left in the outbox after they were enqueued", n)
	}

	// The connection is killed: it comes back and drains again.
	e.exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'`)
	waitFor(t, 10*time.Second, "a reconnect", func() bool {
		st := b.Status()
		return st.Reconnects >= 1 && st.Role == RoleListening
	})
	e.insertSeparateTx(100)
	e.waitAllJobs(30 * time.Second)
	e.assertExactlyOnce()
}

// Concurrent signups mostly skip notifying (another transaction in flight
// holds the wake-up lock); follow-up drains find those that commit after
// the drain their wake-up caused. PollInterval is an hour here, so nothing
// arrives by polling.
func TestListenConcurrentSignupsAllArrive(t *testing.T) {
	t.Parallel()
	e := setup(t)
	startListen(t, e.config(""))
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 40 {
				if _, err := e.pool.Exec(ctx, `INSERT INTO auth.users (id, created_at, is_anonymous) VALUES (gen_random_uuid(), now(), false)`); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("signing up: %v", err)
	}
	e.waitAllJobs(30 * time.Second)
	e.assertExactlyOnce()
	if n := e.count(`SELECT count(*) FROM public.test_jobs`); n != 640 {
		t.Fatalf("%d jobs, want 640", n)
	}
}

// Nothing in the signup's transaction can fail it: with the outbox gone
// the trigger's insert fails, the signup commits anyway, and the
// reconcile at the next start finds the user.
func TestSignupsSucceedWhenTheOutboxIsBroken(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cfg := e.config("")
	cfg.Enqueuer = testEnqueuer{fillOnReconcile: true}
	l := startListen(t, cfg)
	l.Stop()
	e.exec(`ALTER TABLE keyworker.signup_outbox RENAME TO signup_outbox_gone`)
	owner, err := pgx.Connect(context.Background(), withUser(t, e.url, "supabase_auth_admin"))
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(context.Background())
	if _, err := owner.Exec(context.Background(), `INSERT INTO auth.users (id, created_at, is_anonymous)
		SELECT gen_random_uuid(), now(), false FROM generate_series(1, 10)`); err != nil {
		t.Fatalf("a signup failed because the outbox is broken: %v", err)
	}
	e.exec(`ALTER TABLE keyworker.signup_outbox_gone RENAME TO signup_outbox`)
	startListen(t, cfg)
	e.waitAllJobs(30 * time.Second)
	e.assertExactlyOnce()
}

// Switching to logical mode stops the outbox (the trigger stays: only the
// table's owner may drop it) and hands off what it held; switching back
// drops logical mode's idle slot, which would keep WAL forever.
func TestSwitchingModesKeepsEverySignupAndNoLeftovers(t *testing.T) {
	t.Parallel()
	e := setup(t)
	slot := "kw_switch"
	cfg := e.config(slot)
	startListen(t, cfg).Stop()
	e.insertSeparateTx(50) // 45 permanent users wait in the outbox

	lg := start(t, cfg)
	e.waitAllJobs(30 * time.Second)
	e.assertExactlyOnce()
	e.insertSeparateTx(50)
	e.waitAllJobs(30 * time.Second)
	e.assertExactlyOnce()
	if n := e.count(`SELECT count(*) FROM keyworker.signup_outbox`); n != 0 {
		t.Fatalf("the outbox still fills in logical mode: %d rows", n)
	}
	lg.Stop()
	e.waitSlotInactive(slot)

	startListen(t, cfg)
	if n := e.count(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot); n != 0 {
		t.Fatalf("listen mode left logical mode's idle slot %s in place", slot)
	}
	e.insertSeparateTx(50)
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
	e.exec(`ALTER TABLE keyworker.signup_outbox OWNER TO kw_listener`)
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

// A role that may read the outbox but not delete from it is refused at
// start, not left reconnecting while the outbox grows: has_table_privilege
// with a list answers whether any of them is held, so each is checked.
func TestListenNeedsEveryOutboxPrivilege(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.ensureRole("kw_outbox_reader", "BYPASSRLS")
	e.exec(`GRANT USAGE ON SCHEMA keyworker TO kw_outbox_reader`)
	e.exec(`GRANT SELECT ON keyworker.installation, keyworker.api_keys, keyworker.signup_outbox TO kw_outbox_reader`)
	e.exec(`GRANT USAGE ON SCHEMA auth TO kw_outbox_reader`)
	e.exec(`GRANT SELECT ON auth.users TO kw_outbox_reader`)
	cfg := e.config("")
	cfg.Pool = nil
	cfg.ConnString = withUser(t, e.url, "kw_outbox_reader")
	l, _ := NewListen(cfg)
	err := l.Start(context.Background())
	if !errors.Is(err, ErrNoPrivilege) || !strings.Contains(err.Error(), "signup_outbox") {
		l.Stop()
		t.Fatalf("got %v, want ErrNoPrivilege naming the outbox", err)
	}
}

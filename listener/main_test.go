package listener

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/pgtemp"
	kwsql "github.com/keyworker/keyworker/sql"
	"github.com/keyworker/keyworker/users"
)

var harness = testenv.NewHarness(testenv.HarnessConfig{Prepare: prepare})

func TestMain(m *testing.M) { os.Exit(harness.Run(m)) }

// testSQL adds what the tests observe: test_jobs counts how often each user
// was enqueued (a doubled enqueue shows as n = 2), test_reconciles records
// reconcile requests.
const testSQL = `
CREATE TABLE IF NOT EXISTS public.test_jobs (
	user_id uuid PRIMARY KEY,
	n int NOT NULL DEFAULT 1,
	source text NOT NULL
);
CREATE TABLE IF NOT EXISTS public.test_reconciles (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	reason text NOT NULL
);
`

// prepare migrates a Supabase-shaped database and adds the test tables.
func prepare(ctx context.Context, url string) error {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := kwsql.Migrate(ctx, pool, kwsql.Config{}); err != nil {
		return err
	}
	_, err = pool.Exec(ctx, testSQL)
	return err
}

// testEnqueuer stands in for the River enqueuer: it writes one row per user
// into test_jobs inside the hand-off transaction and counts repeats.
type testEnqueuer struct {
	// fakeKeys also writes a signup key row per user, as the CreateKey job
	// would, so reconciles (users.Table.WithoutKey) no longer see the user.
	fakeKeys bool
	// fillOnReconcile makes a reconcile request do at once what the
	// reconciler will: enqueue every permanent user with no job yet.
	fillOnReconcile bool
	// checkFields fails the batch unless every signup carries what logical
	// mode decodes: created_at, the commit's end LSN, and no anonymous user.
	checkFields bool
	// checkOrder fails the batch unless its signups come in user id order,
	// across every call in the transaction too (the jobs' enqueuer relies
	// on it to avoid deadlocks with concurrent replays).
	checkOrder bool
}

func (e testEnqueuer) EnqueueSignupsTx(ctx context.Context, tx pgx.Tx, signups []users.Signup) (int, error) {
	ids := make([]string, len(signups))
	for i, s := range signups {
		ids[i] = s.UserID
		if e.checkFields && (s.CreatedAt.IsZero() || time.Since(s.CreatedAt) > time.Hour || s.EndLSN == 0 || s.Anonymous) {
			return 0, fmt.Errorf("signup %+v lacks a field", s)
		}
	}
	if e.checkOrder {
		if !slices.IsSorted(ids) {
			return 0, errors.New("signups are not in user id order")
		}
		// The largest id this transaction has written so far.
		var prev *string
		if err := tx.QueryRow(ctx, `SELECT max(user_id::text) FROM public.test_jobs
			WHERE xmin::text = pg_current_xact_id()::xid::text`).Scan(&prev); err != nil {
			return 0, err
		}
		if len(ids) > 0 && prev != nil && ids[0] <= *prev {
			return 0, fmt.Errorf("a chunk starts at %s, not after the previous chunk's %s", ids[0], *prev)
		}
	}
	var inserted int
	err := tx.QueryRow(ctx, `WITH ins AS (
		INSERT INTO public.test_jobs AS j (user_id, source) SELECT unnest($1::uuid[]), 'stream'
		ON CONFLICT (user_id) DO UPDATE SET n = j.n + 1
		RETURNING xmax = 0 AS new)
		SELECT count(*) FILTER (WHERE new) FROM ins`, ids).Scan(&inserted)
	if err != nil {
		return 0, err
	}
	if e.fakeKeys {
		_, err = tx.Exec(ctx, `INSERT INTO keyworker.api_keys (id, user_id, prefix, secret_hash, salt, last4, source)
			SELECT left(replace(u::text, '-', ''), 27), u, 'sk', sha256(u::text::bytea),
			       substring(sha256(u::text::bytea) from 1 for 16), 'abcd', 'signup'
			  FROM unnest($1::uuid[]) u
			ON CONFLICT DO NOTHING`, ids)
	}
	return inserted, err
}

func (e testEnqueuer) EnqueueReconcileTx(ctx context.Context, tx pgx.Tx, reason string) error {
	if _, err := tx.Exec(ctx, `INSERT INTO public.test_reconciles (reason) VALUES ($1)`, reason); err != nil {
		return err
	}
	if !e.fillOnReconcile {
		return nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO public.test_jobs AS j (user_id, source)
		SELECT u.id, 'reconcile' FROM auth.users u
		 WHERE NOT u.is_anonymous AND NOT EXISTS (SELECT FROM public.test_jobs t WHERE t.user_id = u.id)
		ON CONFLICT (user_id) DO UPDATE SET n = j.n + 1`)
	return err
}

// env is one test's database.
type env struct {
	t    testing.TB
	url  string
	pool *pgxpool.Pool
	logs *testenv.LogBuffer
}

// setup gives the test its own migrated database on the shared server.
func setup(t *testing.T) *env {
	t.Helper()
	return newEnv(t, harness.Database(t))
}

func newEnv(t testing.TB, url string) *env {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return &env{t: t, url: url, pool: pool, logs: &testenv.LogBuffer{}}
}

// config is a logical/listen config for this test, with short backoffs.
func (e *env) config(slot string) Config {
	return Config{
		ConnString:          e.url,
		Pool:                e.pool,
		Enqueuer:            testEnqueuer{},
		SlotName:            slot,
		BackoffMin:          20 * time.Millisecond,
		BackoffMax:          500 * time.Millisecond,
		StandbyPollInterval: 50 * time.Millisecond,
		PollInterval:        time.Hour,
		Logger:              slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", firstLine(sql), err)
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i > 0 {
		return s[:i]
	}
	return s
}

// count runs a count query, retrying through a restarting server.
func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	var err error
	for range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = e.pool.QueryRow(ctx, sql, args...).Scan(&n)
		cancel()
		if err == nil {
			return n
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("%s: %v", firstLine(sql), err)
	return 0
}

// insertOneTx inserts n users in one transaction; every tenth is anonymous.
func (e *env) insertOneTx(n int) {
	e.t.Helper()
	e.exec(`INSERT INTO auth.users (id, email, created_at, is_anonymous)
		SELECT gen_random_uuid(), 'u' || i || '@example.com', now(), i % 10 = 0 FROM generate_series(1, $1) i`, n)
}

// insertSeparateTx inserts n users, each in its own committed transaction;
// every tenth is anonymous.
func (e *env) insertSeparateTx(n int) {
	e.t.Helper()
	e.exec(fmt.Sprintf(`DO $$
	BEGIN
		FOR i IN 1..%d LOOP
			INSERT INTO auth.users (id, email, created_at, is_anonymous)
			VALUES (gen_random_uuid(), 'u' || i || '@example.com', now(), i %% 10 = 0);
			COMMIT;
		END LOOP;
	END
	$$`, n))
}

func (e *env) permanentUsers() int {
	return e.count(`SELECT count(*) FROM auth.users WHERE NOT is_anonymous`)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitAllJobs waits until every permanent user has a job.
func (e *env) waitAllJobs(timeout time.Duration) {
	e.t.Helper()
	waitFor(e.t, timeout, "a job for every permanent user", func() bool {
		return e.count(`SELECT count(*) FROM auth.users u WHERE NOT u.is_anonymous
			AND NOT EXISTS (SELECT FROM public.test_jobs j WHERE j.user_id = u.id)`) == 0
	})
}

// assertExactlyOnce checks invariant 1 as the listener sees it: every
// permanent user enqueued exactly once, no anonymous user and nobody else
// enqueued at all.
func (e *env) assertExactlyOnce() {
	e.t.Helper()
	missing := e.count(`SELECT count(*) FROM auth.users u WHERE NOT u.is_anonymous
		AND NOT EXISTS (SELECT FROM public.test_jobs j WHERE j.user_id = u.id)`)
	doubled := e.count(`SELECT count(*) FROM public.test_jobs WHERE n <> 1`)
	anon := e.count(`SELECT count(*) FROM public.test_jobs j JOIN auth.users u ON u.id = j.user_id WHERE u.is_anonymous`)
	strays := e.count(`SELECT count(*) FROM public.test_jobs j WHERE NOT EXISTS (SELECT FROM auth.users u WHERE u.id = j.user_id)`)
	if missing != 0 || doubled != 0 || anon != 0 || strays != 0 {
		e.t.Fatalf("exactly once violated: %d users without a job, %d enqueued more than once, %d anonymous enqueued, %d jobs for unknown users",
			missing, doubled, anon, strays)
	}
}

// slotConfirmed returns the slot's confirmed_flush_lsn as text ordered by
// the server.
func (e *env) lsnAtLeast(a, b string) bool {
	var ok bool
	if err := e.pool.QueryRow(context.Background(), `SELECT $1::pg_lsn >= $2::pg_lsn`, a, b).Scan(&ok); err != nil {
		e.t.Fatal(err)
	}
	return ok
}

func (e *env) slotConfirmed(slot string) string {
	e.t.Helper()
	var lsn string
	if err := e.pool.QueryRow(context.Background(), `SELECT coalesce(confirmed_flush_lsn, '0/0')::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&lsn); err != nil {
		e.t.Fatalf("reading slot %s: %v", slot, err)
	}
	return lsn
}

func (e *env) checkpoint(slot string) string {
	e.t.Helper()
	var lsn string
	if err := e.pool.QueryRow(context.Background(), `SELECT lsn::text FROM keyworker.replication_checkpoints WHERE slot_name = $1`, slot).Scan(&lsn); err != nil {
		e.t.Fatalf("reading the checkpoint of %s: %v", slot, err)
	}
	return lsn
}

// start makes and starts a Logical, stopped when the test ends.
func start(t testing.TB, cfg Config) *Logical {
	t.Helper()
	l, err := NewLogical(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatalf("starting: %v", err)
	}
	t.Cleanup(l.Stop)
	return l
}

// withUser returns url with another user (the server trusts every local
// connection).
func withUser(t *testing.T, raw, user string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(user)
	return u.String()
}

// ensureRole creates a login role once per server.
func (e *env) ensureRole(name, attrs string) {
	e.t.Helper()
	e.exec(fmt.Sprintf(`DO $$
	BEGIN
		PERFORM pg_advisory_xact_lock(4242);
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN
			CREATE ROLE %s LOGIN %s;
		END IF;
	END
	$$`, name, name, attrs))
}

// dedicatedServer starts a server of the test's own (for restarts and
// settings the shared one must not have) with one prepared database.
func dedicatedServer(t testing.TB, settings map[string]string, migrate bool) (*pgtemp.Server, string) {
	t.Helper()
	ctx := context.Background()
	srv, err := pgtemp.Start(ctx, pgtemp.Config{Settings: settings})
	if err != nil {
		t.Fatalf("starting a dedicated server: %v", err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	if err := pgtemp.SetupSupabase(ctx, srv.URL("postgres")); err != nil {
		t.Fatal(err)
	}
	if migrate {
		if err := prepare(ctx, srv.URL("postgres")); err != nil {
			t.Fatalf("preparing the dedicated server: %v", err)
		}
	}
	return srv, srv.URL("postgres")
}

// waitSlotInactive waits until no WAL sender holds the slot (a stopped
// listener's WAL sender exits shortly after the connection closes).
func (e *env) waitSlotInactive(slot string) {
	e.t.Helper()
	waitFor(e.t, 10*time.Second, "slot "+slot+" to be released", func() bool {
		return e.count(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active`, slot) == 0
	})
}

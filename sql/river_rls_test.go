package sql_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	kwsql "github.com/keyworker/keyworker/sql"
)

type pingArgs struct{}

func (pingArgs) Kind() string { return "sql_test_ping" }

type pingWorker struct{ river.WorkerDefaults[pingArgs] }

func (pingWorker) Work(context.Context, *river.Job[pingArgs]) error { return nil }

// TestRiverWorksUnderRowLevelSecurity migrates as an ordinary (not
// superuser) role, as on Supabase, where row level security would apply to
// a role that did not own the tables, and runs a River job with it: the
// owner is not subject to row level security, which the migration enables
// but does not FORCE.
func TestRiverWorksUnderRowLevelSecurity(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin := harness.Database(t)
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	db := u.Path[1:]
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DO $$
		BEGIN
			PERFORM pg_advisory_xact_lock(4243);
			IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kw_sql_owner') THEN
				CREATE ROLE kw_sql_owner LOGIN NOSUPERUSER NOBYPASSRLS;
			END IF;
		END $$`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `GRANT CREATE ON DATABASE `+pgx.Identifier{db}.Sanitize()+` TO kw_sql_owner;
		GRANT USAGE ON SCHEMA auth TO kw_sql_owner;
		GRANT SELECT, REFERENCES ON auth.users TO kw_sql_owner`); err != nil {
		t.Fatal(err)
	}
	u.User = url.User("kw_sql_owner")
	p := pool(t, u.String())
	if _, err := kwsql.Migrate(ctx, p, kwsql.Config{}); err != nil {
		t.Fatalf("migrating as an ordinary role: %v", err)
	}
	var unprotected, forced int
	if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE NOT relrowsecurity), count(*) FILTER (WHERE relforcerowsecurity)
		FROM pg_class WHERE relnamespace = 'keyworker'::regnamespace AND relkind IN ('r', 'p')`).Scan(&unprotected, &forced); err != nil {
		t.Fatal(err)
	}
	if unprotected != 0 || forced != 0 {
		t.Fatalf("%d tables of schema keyworker without row level security, %d with it forced; want 0 and 0", unprotected, forced)
	}

	workers := river.NewWorkers()
	river.AddWorker(workers, &pingWorker{})
	client, err := river.NewClient(riverpgxv5.New(p), &river.Config{
		Schema:            kwsql.DefaultSchema,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 1}},
		Workers:           workers,
		FetchCooldown:     10 * time.Millisecond,
		FetchPollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	events, cancel := client.Subscribe(river.EventKindJobCompleted, river.EventKindJobFailed)
	defer cancel()
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Stop(context.WithoutCancel(ctx)) }()
	if _, err := client.Insert(ctx, pingArgs{}, nil); err != nil {
		t.Fatalf("inserting a River job as the owner: %v", err)
	}
	select {
	case e := <-events:
		if e.Kind != river.EventKindJobCompleted {
			t.Fatalf("the job ended %s, want completed", e.Kind)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the River job did not complete within 20s")
	}
}

package sql_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/internal/testenv"
	kwsql "github.com/keyworker/keyworker/sql"
)

// The template is migrated once; tests that test migrating itself use the
// bare Supabase-shaped template and migrate on their own.
var harness = testenv.NewHarness(testenv.HarnessConfig{})

func TestMain(m *testing.M) { os.Exit(harness.Run(m)) }

func pool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func migrated(t *testing.T) *pgxpool.Pool {
	t.Helper()
	p := pool(t, harness.Database(t))
	if _, err := kwsql.Migrate(context.Background(), p, kwsql.Config{}); err != nil {
		t.Fatalf("migrating: %v", err)
	}
	return p
}

func TestMigrateTwiceAppliesNothingNew(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := pool(t, harness.Database(t))
	first, err := kwsql.Migrate(ctx, p, kwsql.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Applied) != len(kwsql.Migrations()) || len(first.RiverApplied) == 0 {
		t.Fatalf("first run applied %v and River %v", first.Applied, first.RiverApplied)
	}
	second, err := kwsql.Migrate(ctx, p, kwsql.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Applied) != 0 || len(second.RiverApplied) != 0 {
		t.Fatalf("second run applied %v and River %v, want nothing", second.Applied, second.RiverApplied)
	}
	v, err := kwsql.Version(ctx, p, kwsql.DefaultSchema)
	if err != nil || v != kwsql.LatestVersion() {
		t.Fatalf("version %d (%v), want %d", v, err, kwsql.LatestVersion())
	}
}

func TestMigrateConcurrentlyFromManyProcesses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := harness.Database(t)
	const n = 6
	var wg sync.WaitGroup
	results := make(chan *kwsql.Result, n)
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A connection each, as separate processes would have.
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(ctx)
			r, err := kwsql.MigrateConn(ctx, conn, kwsql.Config{})
			if err != nil {
				errs <- err
				return
			}
			results <- r
		}()
	}
	wg.Wait()
	close(errs)
	close(results)
	for err := range errs {
		t.Fatalf("concurrent migrate failed: %v", err)
	}
	appliers := 0
	for r := range results {
		if len(r.Applied) > 0 {
			appliers++
		}
	}
	if appliers != 1 {
		t.Fatalf("%d runs applied migrations, want exactly 1", appliers)
	}
}

func TestNothingInPublicOrAuthAndNothingForAnon(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := pool(t, harness.Database(t))
	count := func(q string) int {
		t.Helper()
		var n int
		if err := p.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	const objectsOutside = `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'auth')`
	const funcsOutside = `SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname IN ('public', 'auth')`
	beforeObjects, beforeFuncs := count(objectsOutside), count(funcsOutside)
	if _, err := kwsql.Migrate(ctx, p, kwsql.Config{}); err != nil {
		t.Fatal(err)
	}
	if a, b := count(objectsOutside), count(funcsOutside); a != beforeObjects || b != beforeFuncs {
		t.Fatalf("migrations added %d relations and %d functions to public/auth", a-beforeObjects, b-beforeFuncs)
	}
	if n := count(`SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'keyworker' AND c.relname = 'river_job'`); n != 1 {
		t.Fatalf("River's tables are not in schema keyworker")
	}
	// End users (anon and authenticated) get nothing in the internal schema;
	// anon nothing in the API schema either.
	for _, c := range []struct{ role, schema string }{
		{"anon", "keyworker"}, {"authenticated", "keyworker"}, {"anon", "keyworker_api"},
	} {
		if n := count(`SELECT count(*) FROM pg_namespace WHERE nspname = '` + c.schema + `' AND has_schema_privilege('` + c.role + `', oid, 'USAGE')`); n != 0 {
			t.Errorf("%s has USAGE on schema %s", c.role, c.schema)
		}
		if n := count(`SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '` + c.schema + `' AND c.relkind IN ('r','v','S','p') AND (has_table_privilege('` + c.role + `', c.oid, 'SELECT') OR has_table_privilege('` + c.role + `', c.oid, 'INSERT') OR has_table_privilege('` + c.role + `', c.oid, 'UPDATE') OR has_table_privilege('` + c.role + `', c.oid, 'DELETE'))`); n != 0 {
			t.Errorf("%s has privileges on %d relations of schema %s", c.role, n, c.schema)
		}
		if n := count(`SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = '` + c.schema + `' AND has_function_privilege('` + c.role + `', p.oid, 'EXECUTE')`); n != 0 {
			t.Errorf("%s may execute %d functions of schema %s", c.role, n, c.schema)
		}
	}
	// Every SECURITY DEFINER function pins its search_path, and PUBLIC may
	// not execute it.
	if n := count(`SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname IN ('keyworker', 'keyworker_api') AND p.prosecdef AND NOT coalesce(p.proconfig @> ARRAY['search_path=""'], false)`); n != 0 {
		t.Fatalf("%d SECURITY DEFINER functions without search_path = ''", n)
	}
	if n := count(`SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname IN ('keyworker', 'keyworker_api') AND (p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0))`); n != 0 {
		t.Fatalf("PUBLIC may execute %d functions", n)
	}
	// The API schema holds only the view and the two functions for end users.
	if n := count(`SELECT count(*) FROM pg_class c WHERE c.relnamespace = 'keyworker_api'::regnamespace`); n != 1 {
		t.Fatalf("schema keyworker_api holds %d relations, want only the view api_keys", n)
	}
	if n := count(`SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'keyworker_api'::regnamespace AND p.proname NOT IN ('list_api_keys', 'revoke_api_key')`); n != 0 {
		t.Fatalf("schema keyworker_api holds %d functions beyond list_api_keys and revoke_api_key", n)
	}
	// The audit trail is append-only for everyone but its owner.
	if n := count(`SELECT count(*) FROM pg_roles r WHERE r.rolname IN ('authenticated', 'service_role', 'anon') AND (has_table_privilege(r.oid, 'keyworker.key_events', 'UPDATE') OR has_table_privilege(r.oid, 'keyworker.key_events', 'DELETE'))`); n != 0 {
		t.Fatalf("%d roles may rewrite the audit trail", n)
	}
}

func TestMigrateOnPlainPostgresWithoutSupabaseRoles(t *testing.T) {
	t.Parallel()
	// A users table in another schema, and roles anon etc. exist on the
	// server (cluster-wide), so to prove the DO blocks, the migration must
	// also work with a custom schema and users table. Roles cannot be hidden
	// per database; the grants are checked conditionally in grants.sql.
	ctx := context.Background()
	p := pool(t, harness.Database(t))
	if _, err := p.Exec(ctx, `CREATE SCHEMA app; CREATE TABLE app.accounts (uid uuid PRIMARY KEY, created_at timestamptz DEFAULT now())`); err != nil {
		t.Fatal(err)
	}
	cfg := kwsql.Config{Schema: "kw_custom", UsersTable: "app.accounts", UsersIDColumn: "uid"}
	if _, err := kwsql.Migrate(ctx, p, cfg); err != nil {
		t.Fatalf("migrating with a custom schema and users table: %v", err)
	}
	if _, err := p.Exec(ctx, `INSERT INTO app.accounts (uid) VALUES ('00000000-0000-0000-0000-00000000000a')`); err != nil {
		t.Fatal(err)
	}
	var status string
	if err := p.QueryRow(ctx, `SELECT status FROM kw_custom.verify_api_key('garbage')`).Scan(&status); err != nil || status != "not_found" {
		t.Fatalf("verify in custom schema: %q, %v", status, err)
	}
}

func TestConfigErrorsNameTheSetting(t *testing.T) {
	t.Parallel()
	cases := []struct {
		cfg  kwsql.Config
		want string
	}{
		{kwsql.Config{Schema: "Key Worker"}, `schema "Key Worker" is invalid`},
		{kwsql.Config{Schema: "public"}, `schema "public" is reserved`},
		{kwsql.Config{Schema: "keyworker_api"}, `schema "keyworker_api" ends in "_api"`},
		{kwsql.Config{Schema: strings.Repeat("k", 60)}, `is 60 characters long, at most 59`},
		{kwsql.Config{UsersTable: "users"}, `users table "users" is invalid`},
		{kwsql.Config{UsersIDColumn: "id;drop"}, `users id column "id;drop" is invalid`},
	}
	for _, c := range cases {
		err := c.cfg.WithDefaults().Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want %q", c.cfg, err, c.want)
		}
	}
}

func TestMigrateUnknownUsersTableSaysWhatToSet(t *testing.T) {
	t.Parallel()
	p := pool(t, harness.Database(t))
	_, err := kwsql.Migrate(context.Background(), p, kwsql.Config{UsersTable: "auth.nope"})
	if err == nil || !strings.Contains(err.Error(), "set UsersTable") {
		t.Fatalf("want an error naming UsersTable, got %v", err)
	}
	// Nothing half-applied.
	var n int
	if err := p.QueryRow(context.Background(), `SELECT count(*) FROM pg_namespace WHERE nspname = 'keyworker'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatal("a failed migration left schema keyworker behind")
	}
	_ = errors.New
}

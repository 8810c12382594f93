package pgtemp_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/pgtemp"
)

var harness = testenv.NewHarness(testenv.HarnessConfig{})

func TestMain(m *testing.M) { os.Exit(harness.Run(m)) }

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestServerIsLogicalAndSupabaseShaped(t *testing.T) {
	t.Parallel()
	conn := connect(t, harness.Database(t))
	ctx := context.Background()

	var walLevel string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		t.Fatal(err)
	}
	if walLevel != "logical" {
		t.Fatalf("wal_level = %q, want logical", walLevel)
	}

	var owner string
	if err := conn.QueryRow(ctx, `SELECT tableowner FROM pg_tables WHERE schemaname = 'auth' AND tablename = 'users'`).Scan(&owner); err != nil {
		t.Fatalf("auth.users missing: %v", err)
	}
	if owner != "supabase_auth_admin" {
		t.Fatalf("auth.users owner = %q, want supabase_auth_admin", owner)
	}
	for _, role := range []string{"anon", "authenticated", "service_role", "supabase_auth_admin"} {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)`, role).Scan(&ok); err != nil || !ok {
			t.Fatalf("role %s missing (err %v)", role, err)
		}
	}
	for _, col := range []string{"id", "email", "phone", "raw_user_meta_data", "raw_app_meta_data", "created_at", "deleted_at", "is_anonymous", "is_sso_user"} {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM information_schema.columns WHERE table_schema = 'auth' AND table_name = 'users' AND column_name = $1)`, col).Scan(&ok); err != nil || !ok {
			t.Fatalf("auth.users.%s missing (err %v)", col, err)
		}
	}
	// The id has no default: the auth server sets it.
	var def *string
	if err := conn.QueryRow(ctx, `SELECT column_default FROM information_schema.columns WHERE table_schema = 'auth' AND table_name = 'users' AND column_name = 'id'`).Scan(&def); err != nil {
		t.Fatal(err)
	}
	if def != nil {
		t.Fatalf("auth.users.id has default %q, want none", *def)
	}
}

func TestDatabasesAreIsolated(t *testing.T) {
	t.Parallel()
	a := connect(t, harness.Database(t))
	b := connect(t, harness.Database(t))
	ctx := context.Background()
	if _, err := a.Exec(ctx, `INSERT INTO auth.users (id, email) VALUES (gen_random_uuid(), 'a@example.com')`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.QueryRow(ctx, `SELECT count(*) FROM auth.users`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("second database sees %d users written to the first", n)
	}
}

func TestDropDatabaseRemovesSlots(t *testing.T) {
	t.Parallel()
	url := harness.Database(t)
	conn := connect(t, url)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot('pgtemp_drop_test', 'pgoutput')`); err != nil {
		t.Fatal(err)
	}
	name := conn.Config().Database
	conn.Close(ctx)
	if err := harness.DropDatabase(name); err != nil {
		t.Fatalf("dropping a database with a slot: %v", err)
	}
	admin := connect(t, harness.AdminURL())
	var n int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgtemp_drop_test'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("slot survived its database")
	}
}

func TestRestartKeepsData(t *testing.T) {
	srv := harness.Server()
	if srv == nil {
		t.Skip("TEST_DATABASE_URL in use: cannot restart that server")
	}
	// Not parallel: it takes the server away from the other tests.
	url := harness.Database(t)
	ctx := context.Background()
	conn := connect(t, url)
	if _, err := conn.Exec(ctx, `INSERT INTO auth.users (id) VALUES ('00000000-0000-0000-0000-000000000001')`); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	for _, mode := range []pgtemp.ShutdownMode{pgtemp.ShutdownImmediate, pgtemp.ShutdownFast} {
		if err := srv.Restart(ctx, mode); err != nil {
			t.Fatalf("restart (%s): %v", mode, err)
		}
		c := connect(t, url)
		var n int
		if err := c.QueryRow(ctx, `SELECT count(*) FROM auth.users`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("after %s restart: %d users, want 1", mode, n)
		}
	}
}

func TestFindBinariesNamesTheFix(t *testing.T) {
	t.Parallel()
	_, _, err := pgtemp.FindBinaries(t.TempDir())
	if err == nil {
		t.Fatal("found binaries in an empty directory")
	}
	if !errors.Is(err, pgtemp.ErrNoBinaries) {
		t.Errorf("error does not wrap ErrNoBinaries: %v", err)
	}
	// PostgreSQL 15 or newer where the distribution's default is older
	// (Ubuntu 22.04 has 14), and Homebrew's keg-only formula.
	for _, want := range []string{"15 or newer", "apt-get install -y postgresql;", "Ubuntu 22.04", "apt.postgresql.org.sh", "postgresql-16", "brew install postgresql@16", "opt/postgresql@16/bin"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	// Start cannot use TEST_DATABASE_URL, so its error does not offer it
	// (the test harness, which can, adds it).
	if strings.Contains(err.Error(), "TEST_DATABASE_URL") {
		t.Errorf("FindBinaries offers TEST_DATABASE_URL, which its callers may not honour: %v", err)
	}
}

func TestDeployCopyOfSupabaseShapeIsCurrent(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../deploy/supabase-auth.sql")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(b), pgtemp.SupabaseSQL) {
		t.Fatal("deploy/supabase-auth.sql differs from pgtemp.SupabaseSQL: copy it again")
	}
}

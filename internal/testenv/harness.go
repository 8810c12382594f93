package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/pgtemp"
	kwsql "github.com/keyworker/keyworker/sql"
)

// Migrate is a HarnessConfig.Prepare step that applies keyworker's
// migrations (kwsql.MigrateURL with the default Config), so that each test
// database starts migrated and a daemon's own migration step is a no-op.
func Migrate(ctx context.Context, url string) error {
	_, err := kwsql.MigrateURL(ctx, url, kwsql.Config{})
	return err
}

// HarnessConfig configures a Harness.
type HarnessConfig struct {
	// Prepare runs once against the template database after SetupSupabase,
	// for example to apply migrations. Every database handed to a test is a
	// copy of the template. Optional.
	Prepare func(ctx context.Context, url string) error

	// Server configures the throwaway server. Ignored with TEST_DATABASE_URL.
	Server pgtemp.Config
}

// Harness gives each test its own database, copied from a template that
// already has the Supabase shape (and whatever Prepare adds). One Harness
// serves one test binary; its methods are safe for concurrent use.
type Harness struct {
	cfg      HarnessConfig
	srv      *pgtemp.Server
	adminURL string
	template string

	mu  sync.Mutex
	seq int
}

// NewHarness returns a harness; nothing starts until Run.
func NewHarness(cfg HarnessConfig) *Harness {
	return &Harness{cfg: cfg}
}

// Run is for TestMain: it starts the server (or connects to
// TEST_DATABASE_URL), prepares the template, runs the tests and cleans up. It
// returns the exit code for os.Exit.
func (h *Harness) Run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	err := h.start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		h.stop()
		return 1
	}
	code := m.Run()
	h.stop()
	return code
}

func (h *Harness) start(ctx context.Context) error {
	if u := os.Getenv(pgtemp.EnvTestDatabaseURL); u != "" {
		h.adminURL = u
	} else {
		srv, err := pgtemp.Start(ctx, h.cfg.Server)
		if errors.Is(err, pgtemp.ErrNoBinaries) {
			return fmt.Errorf("%w; or set %s to a superuser connection to a server of your own with wal_level=logical", err, pgtemp.EnvTestDatabaseURL)
		}
		if err != nil {
			return err
		}
		h.srv = srv
		h.adminURL = srv.URL("postgres")
	}
	h.template = fmt.Sprintf("kwtemplate_%d", os.Getpid())
	if err := h.exec(ctx, "CREATE DATABASE "+pgx.Identifier{h.template}.Sanitize()); err != nil {
		return fmt.Errorf("creating template database: %w", err)
	}
	turl := h.URL(h.template)
	if err := pgtemp.SetupSupabase(ctx, turl); err != nil {
		return err
	}
	if h.cfg.Prepare != nil {
		if err := h.cfg.Prepare(ctx, turl); err != nil {
			return fmt.Errorf("preparing template database: %w", err)
		}
	}
	return nil
}

func (h *Harness) stop() {
	if h.srv != nil {
		_ = h.srv.Stop()
		return
	}
	if h.adminURL != "" && h.template != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = h.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{h.template}.Sanitize()+" WITH (FORCE)")
	}
}

// Server is the throwaway server, or nil when TEST_DATABASE_URL is in use
// (tests that restart Postgres skip then).
func (h *Harness) Server() *pgtemp.Server { return h.srv }

// AdminURL is a superuser connection string to the maintenance database.
func (h *Harness) AdminURL() string { return h.adminURL }

// URL returns a connection string for the named database on the harness's
// server, with the admin URL's credentials.
func (h *Harness) URL(database string) string {
	return pgtemp.DatabaseURL(h.adminURL, database)
}

// Database creates a fresh database copied from the template and returns its
// connection string. The database, and any replication slots on it, are
// dropped when the test ends.
func (h *Harness) Database(t testing.TB) string {
	t.Helper()
	h.mu.Lock()
	name := h.nextName()
	// Copies from one template are serialised: CREATE DATABASE fails when
	// another session is connected to the template.
	err := h.exec(context.Background(), fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s",
		pgx.Identifier{name}.Sanitize(), pgx.Identifier{h.template}.Sanitize()))
	h.mu.Unlock()
	return h.handOut(t, name, err)
}

// SupabaseDatabase creates a fresh Supabase-shaped database without the
// harness's Prepare step (for a test that migrates it as another role) and
// returns its connection string. It is dropped, with its slots, when the
// test ends.
func (h *Harness) SupabaseDatabase(t testing.TB) string {
	t.Helper()
	h.mu.Lock()
	name := h.nextName()
	h.mu.Unlock()
	url := h.handOut(t, name, h.exec(context.Background(), "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()))
	if err := pgtemp.SetupSupabase(context.Background(), url); err != nil {
		t.Fatal(err)
	}
	return url
}

// nextName names the next test database; h.mu must be held.
func (h *Harness) nextName() string {
	h.seq++
	return fmt.Sprintf("kwt_%d_%d", os.Getpid(), h.seq)
}

// handOut fails t when creating database name failed (err), and otherwise
// drops the database when t ends and returns its connection string.
func (h *Harness) handOut(t testing.TB, name string, err error) string {
	t.Helper()
	if err != nil {
		t.Fatalf("creating test database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := h.DropDatabase(name); err != nil {
			t.Logf("dropping test database %s: %v", name, err)
		}
	})
	return h.URL(name)
}

// DropDatabase drops a database and the replication slots on it.
func (h *Harness) DropDatabase(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return pgtemp.DropDatabase(ctx, h.adminURL, name)
}

func (h *Harness) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, h.adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

package pgtemp

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvTestDatabaseURL names the environment variable that points tests at an
// existing server instead of a throwaway one. The role must be a superuser
// (it creates roles and databases) and the server must run with
// wal_level=logical.
const EnvTestDatabaseURL = "TEST_DATABASE_URL"

// HarnessConfig configures a Harness.
type HarnessConfig struct {
	// Prepare runs once against the template database after SetupSupabase,
	// for example to apply migrations. Every database handed to a test is a
	// copy of the template. Optional.
	Prepare func(ctx context.Context, url string) error

	// Server configures the throwaway server. Ignored with TEST_DATABASE_URL.
	Server Config
}

// Harness gives each test its own database, copied from a template that
// already has the Supabase shape (and whatever Prepare adds). One Harness
// serves one test binary; its methods are safe for concurrent use.
type Harness struct {
	cfg      HarnessConfig
	srv      *Server
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
		fmt.Fprintf(os.Stderr, "pgtemp: %v\n", err)
		h.stop()
		return 1
	}
	code := m.Run()
	h.stop()
	return code
}

func (h *Harness) start(ctx context.Context) error {
	if u := os.Getenv(EnvTestDatabaseURL); u != "" {
		h.adminURL = u
	} else {
		srv, err := Start(ctx, h.cfg.Server)
		if errors.Is(err, ErrNoBinaries) {
			return fmt.Errorf("%w; or set %s to a superuser connection to a server of your own with wal_level=logical", err, EnvTestDatabaseURL)
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
	if err := SetupSupabase(ctx, turl); err != nil {
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
func (h *Harness) Server() *Server { return h.srv }

// AdminURL is a superuser connection string to the maintenance database.
func (h *Harness) AdminURL() string { return h.adminURL }

// URL returns a connection string for the named database on the harness's
// server, with the admin URL's credentials.
func (h *Harness) URL(database string) string {
	return DatabaseURL(h.adminURL, database)
}

// Database creates a fresh database copied from the template and returns its
// connection string. The database, and any replication slots on it, are
// dropped when the test ends.
func (h *Harness) Database(t testing.TB) string {
	t.Helper()
	h.mu.Lock()
	h.seq++
	name := fmt.Sprintf("kwt_%d_%d", os.Getpid(), h.seq)
	// Copies from one template are serialised: CREATE DATABASE fails when
	// another session is connected to the template.
	err := h.exec(context.Background(), fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s",
		pgx.Identifier{name}.Sanitize(), pgx.Identifier{h.template}.Sanitize()))
	h.mu.Unlock()
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

// SupabaseDatabase creates a fresh Supabase-shaped database without the
// harness's Prepare step (for a test that migrates it as another role) and
// returns its connection string. It is dropped, with its slots, when the
// test ends.
func (h *Harness) SupabaseDatabase(t testing.TB) string {
	t.Helper()
	h.mu.Lock()
	h.seq++
	name := fmt.Sprintf("kwt_%d_%d", os.Getpid(), h.seq)
	h.mu.Unlock()
	if err := h.exec(context.Background(), "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("creating test database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := h.DropDatabase(name); err != nil {
			t.Logf("dropping test database %s: %v", name, err)
		}
	})
	if err := SetupSupabase(context.Background(), h.URL(name)); err != nil {
		t.Fatal(err)
	}
	return h.URL(name)
}

// DropDatabase drops a database and the replication slots on it.
func (h *Harness) DropDatabase(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return DropDatabase(ctx, h.adminURL, name)
}

// DropDatabase drops the named database on adminURL's server (a superuser
// connection), first ending the replication connections on it and dropping
// its replication slots (a database with slots cannot be dropped).
func DropDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for attempt := 0; ; attempt++ {
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, name)
		_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, name)
		if err == nil || attempt == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("dropping replication slots: %w", err)
	}
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
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

// DatabaseURL returns connString pointed at another database. It accepts
// both URL and keyword/value forms.
func DatabaseURL(connString, database string) string {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		u, err := url.Parse(connString)
		if err == nil {
			u.Path = "/" + database
			return u.String()
		}
	}
	return connString + " dbname=" + database
}

package listener

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/users"
)

func TestConfigValidationNamesTheFieldAndBound(t *testing.T) {
	t.Parallel()
	base := Config{ConnString: "postgres://u@localhost:5432/db", Enqueuer: testEnqueuer{}}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no conn string", func(c *Config) { c.ConnString = "" }, "ConnString is required"},
		{"bad conn string", func(c *Config) { c.ConnString = "postgres://u:secret@host:notaport/db" }, "ConnString is invalid"},
		{"no enqueuer", func(c *Config) { c.Enqueuer = nil }, "Enqueuer is required"},
		{"schema", func(c *Config) { c.Schema = "Bad-Schema" }, "Schema must be"},
		{"table", func(c *Config) { c.Table = users.Table{Schema: "auth", Name: "Users"} }, "Table:"},
		{"slot", func(c *Config) { c.SlotName = "keyworker-slot" }, "SlotName must be"},
		{"publication", func(c *Config) { c.PublicationName = "pub name" }, "PublicationName must be"},
		{"channel", func(c *Config) { c.Channel = "a;b" }, "Channel must be"},
		{"rows", func(c *Config) { c.BatchMaxRows = -1 }, "BatchMaxRows must be between 1 and 100000, got -1"},
		{"wait", func(c *Config) { c.BatchMaxWait = time.Minute }, "BatchMaxWait must be between 1ms and 10s, got 1m0s"},
		{"status", func(c *Config) { c.StatusInterval = 11 * time.Second }, "StatusInterval must be between 100ms and 10s, got 11s"},
		{"backoff", func(c *Config) { c.BackoffMin, c.BackoffMax = time.Second, time.Millisecond }, "BackoffMax must be between 1s and 1h0m0s, got 1ms"},
		{"poll", func(c *Config) { c.PollInterval = time.Millisecond }, "PollInterval must be between 10ms and 1h0m0s, got 1ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.mod(&cfg)
			_, err := NewLogical(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("the error leaks the password: %v", err)
			}
			if _, err := NewListen(cfg); err == nil {
				t.Fatal("NewListen accepted it")
			}
		})
	}
	l, err := NewLogical(base)
	if err != nil {
		t.Fatalf("defaults rejected: %v", err)
	}
	if c := l.cfg; c.SlotName != DefaultSlotName || c.PublicationName != DefaultPublicationName || c.BatchMaxRows != DefaultBatchMaxRows ||
		c.StatusInterval != DefaultStatusInterval || c.Table.String() != users.DefaultTable || c.Table.AnonymousColumn != "is_anonymous" {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestPoolersAreToldApart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		dsn  string
		kind poolerKind
	}{
		{"postgres://postgres.ref:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres", transactionPooler},
		{"postgres://postgres.ref:pw@aws-0-eu-central-1.pooler.supabase.com:5432/postgres", sessionPooler},
		{"host=pgbouncer.internal port=6543 user=app dbname=app", transactionPooler},
		{"postgres://postgres:pw@db.abcdefghij.supabase.co:5432/postgres", notPooler},
		{"postgres://app@127.0.0.1:5432/app", notPooler},
	} {
		if got := classifyPooler(tc.dsn).kind; got != tc.kind {
			t.Errorf("%s: pooler kind %d, want %d", tc.dsn, got, tc.kind)
		}
	}
	session := "postgres://postgres.ref:pw@aws-0-eu-central-1.pooler.supabase.com:5432/postgres"
	transaction := "postgres://postgres.ref:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres"
	for _, tc := range []struct {
		dsn, mode string
		refused   bool
		names     string // the alternative the refusal names
	}{
		{session, ModeListen, false, ""},
		{session, ModeLogical, true, "Mode=listen"},
		{transaction, ModeListen, true, "Session pooler"},
		{transaction, ModeLogical, true, "Direct connection"},
	} {
		err := CheckDirect(tc.dsn, tc.mode)
		if tc.refused != (err != nil) || err != nil && (!errors.Is(err, ErrPooler) || !strings.Contains(err.Error(), tc.names)) {
			t.Errorf("%s in %s mode: %v; want refused=%v naming %q", tc.dsn, tc.mode, err, tc.refused, tc.names)
		}
		if err != nil && strings.Contains(err.Error(), "transaction pooler") && tc.dsn == session {
			t.Errorf("the session pooler is called a transaction pooler: %v", err)
		}
	}
	// Start refuses before connecting, and names what works.
	cfg := Config{ConnString: "postgres://postgres.ref:pw@127.0.0.1:6543/postgres?connect_timeout=1", Enqueuer: testEnqueuer{}}
	for _, start := range []func() error{
		func() error { l, _ := NewLogical(cfg); return l.Start(context.Background()) },
		func() error { l, _ := NewListen(cfg); return l.Start(context.Background()) },
	} {
		err := start()
		if !errors.Is(err, ErrPooler) || !strings.Contains(err.Error(), "port 5432") {
			t.Fatalf("Start through a transaction pooler: %v, want ErrPooler naming the session pooler or direct connection", err)
		}
	}
}

func TestPreflightFailsClosedWithTheFix(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	e.ensureRole("kw_norepl", "")
	e.ensureRole("kw_repl", "REPLICATION")
	for _, role := range []string{"kw_norepl", "kw_repl"} {
		e.exec(`GRANT USAGE ON SCHEMA keyworker, auth TO ` + role)
		e.exec(`GRANT SELECT, INSERT, UPDATE ON keyworker.replication_checkpoints TO ` + role)
		e.exec(`GRANT SELECT ON auth.users TO ` + role)
		e.exec(`GRANT ALL ON public.test_jobs, public.test_reconciles TO ` + role)
	}
	startAs := func(role string, mod func(*Config)) error {
		cfg := e.config("kw_pf_" + role)
		cfg.Pool = nil
		if role != "" {
			cfg.ConnString = withUser(t, e.url, role)
		}
		if mod != nil {
			mod(&cfg)
		}
		l, err := NewLogical(cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = l.Start(ctx)
		l.Stop()
		return err
	}

	t.Run("no REPLICATION", func(t *testing.T) {
		err := startAs("kw_norepl", nil)
		var pf *PreflightError
		if !errors.Is(err, ErrNoReplication) || !errors.As(err, &pf) || len(pf.Statements) != 1 || pf.Statements[0] != "ALTER ROLE kw_norepl WITH REPLICATION;" {
			t.Fatalf("got %v, want ErrNoReplication with the ALTER ROLE statement", err)
		}
	})
	t.Run("no table", func(t *testing.T) {
		err := startAs("", func(c *Config) { c.Table = users.Table{Schema: "auth", Name: "customers"} })
		if !errors.Is(err, ErrNoTable) || !strings.Contains(err.Error(), "set Table to") {
			t.Fatalf("got %v, want ErrNoTable naming the setting", err)
		}
	})
	t.Run("not migrated", func(t *testing.T) {
		err := startAs("", func(c *Config) { c.Schema = "kw_never_migrated" })
		if !errors.Is(err, ErrNotMigrated) || !strings.Contains(err.Error(), "worker migrate") {
			t.Fatalf("got %v, want ErrNotMigrated naming `worker migrate`", err)
		}
	})
	t.Run("row level security", func(t *testing.T) {
		// kw_repl has REPLICATION and every grant, but does not own the
		// checkpoint table, whose row level security then hides it.
		err := startAs("kw_repl", nil)
		if !errors.Is(err, ErrNoPrivilege) || !strings.Contains(err.Error(), "row level security") {
			t.Fatalf("got %v, want ErrNoPrivilege naming row level security", err)
		}
	})
	// As on Supabase: the role that migrated (and so owns keyworker's
	// tables) has REPLICATION but does not own auth.users.
	e.exec(`ALTER TABLE keyworker.replication_checkpoints OWNER TO kw_repl`)
	t.Run("may not publish", func(t *testing.T) {
		err := startAs("kw_repl", nil)
		var pf *PreflightError
		if !errors.Is(err, ErrNotPublishable) || !errors.As(err, &pf) {
			t.Fatalf("got %v, want ErrNotPublishable", err)
		}
		t.Logf("the operator reads:\n%v", err)
		want := "CREATE PUBLICATION keyworker_signups FOR TABLE auth.users (id, created_at, is_anonymous) WITH (publish = 'insert');"
		if len(pf.Statements) != 1 || pf.Statements[0] != want || !strings.Contains(err.Error(), "supabase_auth_admin") || !strings.Contains(err.Error(), want) {
			t.Fatalf("the error does not print the owner's statement exactly:\n%v", err)
		}
		if n := e.count(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'kw_pf_kw_repl'`); n != 0 {
			t.Fatal("a failed preflight left a slot behind")
		}

		// The owner runs it; keyworker, without owning the table, then uses
		// the publication as it is and streams.
		e.exec(`GRANT CREATE ON DATABASE ` + pgx.Identifier{e.pool.Config().ConnConfig.Database}.Sanitize() + ` TO supabase_auth_admin`)
		owner, err := pgx.Connect(ctx, withUser(t, e.url, "supabase_auth_admin"))
		if err != nil {
			t.Fatal(err)
		}
		defer owner.Close(ctx)
		if _, err := owner.Exec(ctx, pf.Statements[0]); err != nil {
			t.Fatalf("the printed statement fails for the owner: %v", err)
		}
		cfg := e.config("kw_pf_owner")
		cfg.Pool = nil
		cfg.ConnString = withUser(t, e.url, "kw_repl")
		l := start(t, cfg)
		e.insertSeparateTx(50)
		e.waitAllJobs(30 * time.Second)
		e.assertExactlyOnce()
		l.Stop()
	})
}

func TestPublicationThatIsWrongIsNotUsed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, create, want string
	}{
		{"publishes updates", `CREATE PUBLICATION keyworker_signups FOR TABLE auth.users (id, created_at, is_anonymous) WITH (publish = 'insert, update')`, "also publishes update"},
		{"no column list", `CREATE PUBLICATION keyworker_signups FOR TABLE auth.users WITH (publish = 'insert')`, "no column list"},
		{"extra column", `CREATE PUBLICATION keyworker_signups FOR TABLE auth.users (id, created_at, is_anonymous, email) WITH (publish = 'insert')`, "column list"},
		{"other tables", `CREATE TABLE public.t (id int PRIMARY KEY); CREATE PUBLICATION keyworker_signups FOR TABLE auth.users (id, created_at, is_anonymous), public.t WITH (publish = 'insert')`, "also publishes public.t"},
		{"all tables", `CREATE PUBLICATION keyworker_signups FOR ALL TABLES WITH (publish = 'insert')`, "FOR ALL TABLES"},
		{"row filter", `CREATE PUBLICATION keyworker_signups FOR TABLE auth.users (id, created_at, is_anonymous) WHERE (NOT is_anonymous) WITH (publish = 'insert')`, "row filter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			e.exec(tc.create)
			l, _ := NewLogical(e.config("kw_wrong_pub"))
			err := l.Start(context.Background())
			var pf *PreflightError
			if !errors.Is(err, ErrPublicationMismatch) || !errors.As(err, &pf) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrPublicationMismatch saying %q", err, tc.want)
			}
			if len(pf.Statements) != 2 || pf.Statements[0] != "DROP PUBLICATION keyworker_signups;" {
				t.Fatalf("statements %q", pf.Statements)
			}
		})
	}
}

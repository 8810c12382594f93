package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/pgtemp"
)

// serverSettings are the throwaway server's settings beyond pgtemp's: commits
// that cost what they cost in production (pgtemp turns fsync and
// full_page_writes off for tests), and commit timestamps, from which key
// latency is read. Everything else is PostgreSQL's default.
var serverSettings = map[string]string{
	"fsync":                  "on",
	"full_page_writes":       "on",
	"synchronous_commit":     "on",
	"track_commit_timestamp": "on",
}

// reportedSettings are read from the server and recorded in the report.
var reportedSettings = []string{
	"fsync", "full_page_writes", "synchronous_commit", "track_commit_timestamp", "wal_level",
	"shared_buffers", "max_wal_size", "checkpoint_timeout", "max_connections", "wal_sync_method",
}

// server is where the scenarios' databases live.
type server struct {
	adminURL string
	pg       *pgtemp.Server // nil for a given server
	version  string
	settings map[string]string
	// commitTimestamps is track_commit_timestamp.
	commitTimestamps bool
	prefix           string // of the databases and slots the run creates
}

func startServer(ctx context.Context, cfg Config) (*server, error) {
	s := &server{prefix: "kwbench_" + randomHex(4)}
	if cfg.DatabaseURL == "" {
		pg, err := pgtemp.Start(ctx, pgtemp.Config{Settings: serverSettings})
		if err != nil {
			return nil, err
		}
		s.pg = pg
		s.adminURL = pg.URL("postgres")
	} else {
		if _, err := pgconn.ParseConfig(cfg.DatabaseURL); err != nil {
			// pgx redacts the password in ParseConfigError.
			return nil, fmt.Errorf("--database-url is malformed: %w", err)
		}
		s.adminURL = cfg.DatabaseURL
	}
	if err := s.inspect(ctx, cfg); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// inspect reads the server's version and settings and checks that the role
// may do what the scenarios need.
func (s *server) inspect(ctx context.Context, cfg Config) error {
	conn, err := pgx.Connect(ctx, s.adminURL)
	if err != nil {
		return fmt.Errorf("connecting to the server: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var super, createDB, replication bool
	var user string
	if err := conn.QueryRow(ctx, `SELECT current_user, rolsuper, rolcreatedb, rolreplication FROM pg_catalog.pg_roles WHERE rolname = current_user`).Scan(&user, &super, &createDB, &replication); err != nil {
		return fmt.Errorf("reading the role's attributes: %w", err)
	}
	if !super && !createDB {
		return fmt.Errorf("role %s may not CREATE DATABASE: the bench gives every scenario a fresh database and drops it afterwards, so it needs a role with CREATEDB (in practice a superuser, since it also creates the Supabase roles and the auth schema); or leave --database-url out to use a throwaway server", user)
	}
	s.settings = map[string]string{}
	rows, err := conn.Query(ctx, `SELECT name, current_setting(name) FROM pg_catalog.pg_settings WHERE name = ANY($1)`, reportedSettings)
	if err != nil {
		return fmt.Errorf("reading server settings: %w", err)
	}
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return err
		}
		s.settings[name] = value
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading server settings: %w", err)
	}
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version')`).Scan(&s.version); err != nil {
		return fmt.Errorf("reading the server version: %w", err)
	}
	s.commitTimestamps = s.settings["track_commit_timestamp"] == "on"
	for _, sc := range cfg.Scenarios {
		if sc != ScenarioLogical {
			continue
		}
		if s.settings["wal_level"] != "logical" {
			return fmt.Errorf("wal_level is %s: the logical scenario needs wal_level=logical (set it and restart the server), or leave it out with --scenarios none,trigger,listen", s.settings["wal_level"])
		}
		if !super && !replication {
			return fmt.Errorf("role %s lacks REPLICATION: the logical scenario's worker needs it (ALTER ROLE %s REPLICATION), or leave it out with --scenarios none,trigger,listen", user, user)
		}
	}
	return nil
}

func (s *server) stop() {
	if s.pg != nil {
		_ = s.pg.Stop()
	}
}

func (s *server) describe() string {
	where := "given server"
	if s.pg != nil {
		where = "throwaway server"
	}
	return fmt.Sprintf("PostgreSQL %s (%s: fsync=%s, full_page_writes=%s, synchronous_commit=%s)",
		s.version, where, s.settings["fsync"], s.settings["full_page_writes"], s.settings["synchronous_commit"])
}

// database is one scenario's fresh, Supabase-shaped database.
type database struct {
	srv  *server
	name string
	url  string
	pool *pgxpool.Pool
	// slot is the worker's replication slot name: slots are cluster-wide,
	// so every run and scenario gets its own, never the default "keyworker"
	// an installation on a given server may be using.
	slot string
	// sealingKey is the workers' sealing key (base64): the database records
	// its fingerprint, so every worker on it uses the same one.
	sealingKey string
}

func (s *server) createDatabase(ctx context.Context, scenario string) (*database, error) {
	db := &database{srv: s, name: s.prefix + "_" + scenario, slot: s.prefix + "_" + scenario}
	conn, err := pgx.Connect(ctx, s.adminURL)
	if err != nil {
		return nil, fmt.Errorf("connecting to the server: %w", err)
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db.name}.Sanitize())
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("creating database %s: %w", db.name, err)
	}
	db.url = withDatabase(s.adminURL, db.name)
	if err := pgtemp.SetupSupabase(ctx, db.url); err != nil {
		_ = db.drop()
		return nil, err
	}
	db.pool, err = pgxpool.New(ctx, db.url)
	if err != nil {
		_ = db.drop()
		return nil, fmt.Errorf("connecting to %s: %w", db.name, err)
	}
	return db, nil
}

// drop removes the database and its replication slot. It runs on its own
// deadline, also after the run's context ended.
func (db *database) drop() error {
	if db.pool != nil {
		db.pool.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, db.srv.adminURL)
	if err != nil {
		return fmt.Errorf("dropping database %s: %w", db.name, err)
	}
	defer conn.Close(context.Background())
	for attempt := 0; ; attempt++ {
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_catalog.pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, db.name)
		_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE database = $1`, db.name)
		if err == nil || attempt == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("dropping the replication slots of %s: %w", db.name, err)
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db.name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("dropping database %s: %w", db.name, err)
	}
	return nil
}

// checkpoint flushes dirty buffers before a phase, so no phase inherits
// another's checkpoint. A role without the right skips it.
func (db *database) checkpoint(ctx context.Context) {
	_, _ = db.pool.Exec(ctx, `CHECKPOINT`)
}

// triggerSQL is the seed (seeds/000) as written: pgcrypto,
// generate_secure_token, handle_new_user SECURITY DEFINER, the AFTER INSERT
// trigger on auth.users, its grants and its RLS policies. The seed does not
// define public.profiles; it gets the two columns the trigger writes and
// nothing else (no key, no index), the cheapest table the seed allows, so
// the trigger's numbers are its best case. The seed's ALTER FUNCTION ...
// OWNER TO postgres is left out: the function already belongs to the
// superuser that creates it.
const triggerSQL = `
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TABLE public.profiles (user_id uuid, api_key text);

CREATE OR REPLACE FUNCTION generate_secure_token(length INT DEFAULT 32)
RETURNS TEXT AS $$
DECLARE
  bytes BYTEA;
  token TEXT;
BEGIN
  -- Generate cryptographically strong random bytes
  bytes := gen_random_bytes(length);
  -- Convert to a hexadecimal string
  token := encode(bytes, 'hex');
  -- Return the first 'length' characters
  RETURN LEFT(token, length);
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION handle_new_user()
RETURNS TRIGGER AS $$
DECLARE
  secure_token TEXT;
BEGIN
  -- Generate our secure token
  secure_token := generate_secure_token(32);

  -- Insert the user's ID and token into the profiles table
  INSERT INTO profiles (user_id, api_key)
  VALUES (NEW.id, secure_token);

  RETURN NEW;
END;
$$ LANGUAGE plpgsql SECURITY DEFINER;

GRANT EXECUTE ON FUNCTION handle_new_user() TO authenticated, service_role;

CREATE TRIGGER on_user_signup
AFTER INSERT ON auth.users
FOR EACH ROW
EXECUTE FUNCTION handle_new_user();

GRANT INSERT ON TABLE profiles TO authenticated, service_role;

CREATE POLICY "Allow user insert"
ON profiles
FOR INSERT
WITH CHECK (auth.uid() = user_id);

CREATE POLICY "Allow service role inserts"
ON profiles
FOR INSERT
WITH CHECK (auth.uid() IS NOT NULL);
`

func (db *database) installTrigger(ctx context.Context) error {
	if _, err := db.pool.Exec(ctx, triggerSQL); err != nil {
		return fmt.Errorf("installing the seed trigger (pgcrypto, profiles, handle_new_user): %w", err)
	}
	return nil
}

// keyTable is where a scenario's keys land, or "" when it makes none.
func keyTable(scenario string) string {
	switch scenario {
	case ScenarioTrigger:
		return "public.profiles"
	case ScenarioLogical, ScenarioListen, ScenarioOutbox:
		return "keyworker.api_keys"
	}
	return ""
}

// counts returns how many users there are and how many have their key.
func (db *database) counts(ctx context.Context, scenario string) (users, keys int, err error) {
	q := `SELECT (SELECT count(*) FROM auth.users), 0`
	switch scenario {
	case ScenarioTrigger:
		q = `SELECT (SELECT count(*) FROM auth.users), (SELECT count(DISTINCT user_id) FROM public.profiles)`
	case ScenarioLogical, ScenarioListen, ScenarioOutbox:
		q = `SELECT (SELECT count(*) FROM auth.users), (SELECT count(*) FROM keyworker.api_keys WHERE source = 'signup')`
	}
	err = db.pool.QueryRow(ctx, q).Scan(&users, &keys)
	return users, keys, err
}

// missingKeys counts users without a key: the final check that every signup
// got one.
func (db *database) missingKeys(ctx context.Context, scenario string) (int, error) {
	var q string
	switch scenario {
	case ScenarioTrigger:
		q = `SELECT count(*) FROM auth.users u WHERE NOT EXISTS (SELECT FROM public.profiles p WHERE p.user_id = u.id)`
	case ScenarioLogical, ScenarioListen, ScenarioOutbox:
		q = `SELECT count(*) FROM auth.users u WHERE NOT EXISTS (SELECT FROM keyworker.api_keys k WHERE k.user_id = u.id AND k.source = 'signup')`
	default:
		return 0, nil
	}
	var n int
	err := db.pool.QueryRow(ctx, q).Scan(&n)
	return n, err
}

// keyLatencies returns, for each of the given users that has a key, the
// time in milliseconds from the signup's commit to the key's commit. With
// track_commit_timestamp on, both are the server's commit timestamps of
// the rows' inserting transactions (xmin): the exact moments, on one clock.
// Without it, the rows' created_at: both transactions' start times (now()),
// an approximation that leaves out the key transaction's own duration.
func (db *database) keyLatencies(ctx context.Context, scenario string, ids []string) ([]float64, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	var q string
	switch {
	case scenario == ScenarioTrigger:
		// The key is written in the signup's own transaction.
		q = `SELECT CASE WHEN p.xmin = u.xmin THEN 0 ELSE NULL END::float8
			FROM unnest($1::uuid[]) AS x(id) JOIN auth.users u ON u.id = x.id JOIN public.profiles p ON p.user_id = u.id`
	case db.srv.commitTimestamps:
		q = `SELECT extract(epoch FROM pg_xact_commit_timestamp(k.xmin) - pg_xact_commit_timestamp(u.xmin))::float8 * 1000
			FROM unnest($1::uuid[]) AS x(id) JOIN auth.users u ON u.id = x.id
			JOIN keyworker.api_keys k ON k.user_id = u.id AND k.source = 'signup'`
	default:
		q = `SELECT extract(epoch FROM k.created_at - u.created_at)::float8 * 1000
			FROM unnest($1::uuid[]) AS x(id) JOIN auth.users u ON u.id = x.id
			JOIN keyworker.api_keys k ON k.user_id = u.id AND k.source = 'signup'`
	}
	rows, err := db.pool.Query(ctx, q, ids)
	if err != nil {
		return nil, fmt.Errorf("reading key latencies: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[*float64])
	if err != nil {
		return nil, fmt.Errorf("reading key latencies: %w", err)
	}
	ms := make([]float64, 0, len(out))
	for _, v := range out {
		if v == nil {
			return nil, errors.New("reading key latencies: a profiles row was written by another transaction than its user's")
		}
		ms = append(ms, *v)
	}
	return ms, nil
}

// lastKeyAge is how long ago, on the server's clock, the last signup key
// committed. Subtracting it from the moment a poll saw the work done gives
// when the work was done, free of the poll's interval and of any offset
// between the server's clock and ours.
func (db *database) lastKeyAge(ctx context.Context, scenario string) (time.Duration, error) {
	var q string
	switch {
	case scenario == ScenarioTrigger || keyTable(scenario) == "":
		return 0, nil
	case db.srv.commitTimestamps:
		q = `SELECT extract(epoch FROM clock_timestamp() - max(pg_xact_commit_timestamp(xmin)))::float8 FROM keyworker.api_keys WHERE source = 'signup'`
	default:
		q = `SELECT extract(epoch FROM clock_timestamp() - max(created_at))::float8 FROM keyworker.api_keys WHERE source = 'signup'`
	}
	var sec *float64
	if err := db.pool.QueryRow(ctx, q).Scan(&sec); err != nil {
		return 0, fmt.Errorf("reading the last key's commit time: %w", err)
	}
	if sec == nil || *sec < 0 {
		return 0, nil
	}
	return time.Duration(*sec * float64(time.Second)), nil
}

// pendingJobs counts River jobs waiting or running (notices included).
func (db *database) pendingJobs(ctx context.Context) (int, error) {
	var n int
	err := db.pool.QueryRow(ctx, `SELECT count(*) FROM keyworker.river_job WHERE state IN ('available', 'running')`).Scan(&n)
	return n, err
}

// insertBacklog signs up n users, each in its own transaction, with
// synchronous_commit off to load them quickly: the catch-up reads the same
// WAL and the same n transactions either way.
func (db *database) insertBacklog(ctx context.Context, n int) error {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SET synchronous_commit = off`); err != nil {
		return err
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), `RESET synchronous_commit`) }()
	const chunk = 10_000
	for done := 0; done < n; done += chunk {
		if _, err := conn.Exec(ctx, fmt.Sprintf(backlogSQL, min(chunk, n-done))); err != nil {
			return fmt.Errorf("inserting the backlog: %w", err)
		}
	}
	return nil
}

// waitSlotReleased waits until no WAL sender holds the slot, so the next
// worker does not find it in use and wait as a standby.
func (db *database) waitSlotReleased(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var active bool
		err := db.pool.QueryRow(ctx, `SELECT coalesce(bool_or(active), false) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, db.slot).Scan(&active)
		if err != nil {
			return fmt.Errorf("reading slot %s: %w", db.slot, err)
		}
		if !active {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for slot %s to be released timed out after 30s", db.slot)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// withDatabase returns connString pointed at another database, in URL or
// keyword/value form.
func withDatabase(connString, name string) string {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		if u, err := url.Parse(connString); err == nil {
			u.Path = "/" + name
			return u.String()
		}
	}
	return connString + " dbname=" + name
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

package keyauth_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/keyauth"
	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
)

var harness = testenv.NewHarness(testenv.HarnessConfig{Prepare: testenv.Migrate})

func TestMain(m *testing.M) { os.Exit(harness.Run(m)) }

type fixture struct {
	url   string
	db    *pgxpool.Pool
	store *keystore.Store
	user  string
}

func setup(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{url: harness.Database(t)}
	var err error
	f.db, err = pgxpool.New(context.Background(), f.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.db.Close)
	sealing := make([]byte, keys.SealingKeySize)
	if _, err := rand.Read(sealing); err != nil {
		t.Fatal(err)
	}
	sealer, err := keys.NewSealer(sealing)
	if err != nil {
		t.Fatal(err)
	}
	if f.store, err = keystore.New(keystore.Config{Sealer: sealer}); err != nil {
		t.Fatal(err)
	}
	f.user = f.newUser(t)
	return f
}

var userSeq atomic.Int64

func (f *fixture) newUser(t testing.TB) string {
	t.Helper()
	id := fmt.Sprintf("00000000-0000-4000-8000-%012d", userSeq.Add(1))
	if _, err := f.db.Exec(context.Background(),
		`INSERT INTO auth.users (id, email, created_at) VALUES ($1, $2, now())`, id, "u"+id[len(id)-4:]+"@example.com"); err != nil {
		t.Fatal(err)
	}
	return id
}

// newKey makes a key for f.user through keystore and returns its plaintext
// and id.
func (f *fixture) newKey(t testing.TB) (plaintext, id string) {
	t.Helper()
	c, plain, err := f.store.CreateWithPlaintext(context.Background(), f.db, keystore.NewKey{UserID: f.user},
		keystore.Audit{Actor: keystore.ActorOperator})
	if err != nil {
		t.Fatal(err)
	}
	return plain, c.ID
}

func (f *fixture) revoke(t testing.TB, id string, at time.Time) {
	t.Helper()
	if ok, err := f.store.Revoke(context.Background(), f.db, id, at, keystore.Audit{Actor: keystore.ActorOperator}); err != nil || !ok {
		t.Fatalf("Revoke(%s) = %v, %v", id, ok, err)
	}
}

func (f *fixture) expire(t testing.TB, id string) {
	t.Helper()
	if _, err := f.db.Exec(context.Background(),
		`UPDATE keyworker.api_keys SET expires_at = now() - interval '1 minute' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
}

// unknownKey is a well-formed key that was never stored.
func unknownKey(t testing.TB) string {
	t.Helper()
	k, err := keys.Generate("sk")
	if err != nil {
		t.Fatal(err)
	}
	return k.Plaintext()
}

// wrongSecretKey is a well-formed key whose id is stored, with another
// key's salt and hash: the secret it carries is wrong.
func (f *fixture) wrongSecretKey(t testing.TB) string {
	t.Helper()
	k, err := keys.Generate("sk")
	if err != nil {
		t.Fatal(err)
	}
	other, err := keys.Generate("sk")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Exec(context.Background(), `INSERT INTO keyworker.api_keys (id, user_id, prefix, secret_hash, salt, last4, source)
		VALUES ($1, $2, 'sk', $3, $4, $5, 'manual')`, k.ID, f.user, other.Hash, other.Salt, k.Last4); err != nil {
		t.Fatal(err)
	}
	return k.Plaintext()
}

// disableKey disables the key id in the database and reports whether it
// could: false before migration 006 (api_keys.disabled_at) is applied.
func (f *fixture) disableKey(t testing.TB, id string) bool {
	t.Helper()
	var has bool
	if err := f.db.QueryRow(context.Background(), `SELECT EXISTS (SELECT FROM information_schema.columns
		WHERE table_schema = 'keyworker' AND table_name = 'api_keys' AND column_name = 'disabled_at')`).Scan(&has); err != nil {
		t.Fatal(err)
	}
	if !has {
		return false
	}
	if _, err := f.db.Exec(context.Background(), `UPDATE keyworker.api_keys SET disabled_at = now() WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	return true
}

// servicePool connects as Supabase's service_role, the role an app would
// use: only what migrations grant it.
func (f *fixture) servicePool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(f.url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, `SET ROLE service_role`)
		return err
	}
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// countingQuerier counts the queries that reach the database.
type countingQuerier struct {
	db *pgxpool.Pool
	n  atomic.Int64
}

func (q *countingQuerier) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	q.n.Add(1)
	return q.db.QueryRow(ctx, sql, args...)
}

// countingChecker counts the checks that reach the Checker it wraps.
type countingChecker struct {
	keyauth.Checker
	n atomic.Int64
}

func (c *countingChecker) Check(ctx context.Context, key string) (keyauth.Result, error) {
	c.n.Add(1)
	return c.Checker.Check(ctx, key)
}

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

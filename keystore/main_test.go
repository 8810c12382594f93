package keystore_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
)

var harness = testenv.NewHarness(testenv.HarnessConfig{Prepare: testenv.Migrate})

func TestMain(m *testing.M) { os.Exit(harness.Run(m)) }

// clock is a settable clock for a Store; zero offset is the real time.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time           { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) Advance(d time.Duration)  { c.offset.Add(int64(d)) }
func newSealer(t *testing.T) *keys.Sealer { return mustSealer(t, randomKey(t)) }

func randomKey(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, keys.SealingKeySize)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func mustSealer(t *testing.T, key []byte) *keys.Sealer {
	t.Helper()
	s, err := keys.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type fixture struct {
	db    *pgxpool.Pool
	store *keystore.Store
	clock *clock
	key   []byte // sealing key
}

func setup(t *testing.T) *fixture {
	t.Helper()
	db, err := pgxpool.New(context.Background(), harness.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	f := &fixture{db: db, clock: &clock{}, key: randomKey(t)}
	f.store, err = keystore.New(keystore.Config{Sealer: mustSealer(t, f.key), Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

var userSeq atomic.Int64

// newUser inserts a user into auth.users and returns its id.
func (f *fixture) newUser(t *testing.T) string {
	t.Helper()
	id := fmt.Sprintf("00000000-0000-4000-8000-%012d", userSeq.Add(1))
	if _, err := f.db.Exec(context.Background(),
		`INSERT INTO auth.users (id, email, created_at) VALUES ($1, $2, now())`, id, "u"+id[len(id)-4:]+"@example.com"); err != nil {
		t.Fatal(err)
	}
	return id
}

// createSignup makes a signup key for user in its own committed transaction.
func (f *fixture) createSignup(t *testing.T, user string) keystore.Created {
	t.Helper()
	ctx := context.Background()
	tx, err := f.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	c, err := f.store.CreateTx(ctx, tx, keystore.NewKey{UserID: user}, keystore.Audit{})
	if err != nil {
		t.Fatalf("CreateTx: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// reveal picks up user's key or fails the test.
func (f *fixture) reveal(t *testing.T, user string) *keystore.Revealed {
	t.Helper()
	r, err := f.store.Reveal(context.Background(), f.db, user, keystore.Audit{Actor: keystore.ActorUser})
	if err != nil {
		t.Fatalf("Reveal(%s): %v", user, err)
	}
	return r
}

// sqlVerify calls keyworker.verify_api_key; token nil is SQL NULL.
func (f *fixture) sqlVerify(t *testing.T, token *string) (status, userID, keyID string) {
	t.Helper()
	var u, k *string
	if err := f.db.QueryRow(context.Background(),
		`SELECT status, user_id::text, key_id FROM keyworker.verify_api_key($1)`, token).Scan(&status, &u, &k); err != nil {
		t.Fatalf("verify_api_key: %v", err)
	}
	if u != nil {
		userID = *u
	}
	if k != nil {
		keyID = *k
	}
	return status, userID, keyID
}

// events returns the names of key_events rows for key, oldest first.
func (f *fixture) events(t *testing.T, keyID string) []string {
	t.Helper()
	rows, err := f.db.Query(context.Background(), `SELECT event FROM keyworker.key_events WHERE key_id = $1 ORDER BY id`, keyID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var e string
		if err := rows.Scan(&e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// count is testenv.Count: a SELECT count(*) style query's result.
var count = testenv.Count

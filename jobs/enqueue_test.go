package jobs_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/internal/pgerr"
	"github.com/keyworker/keyworker/jobs"
	"github.com/keyworker/keyworker/keystore"
	"github.com/keyworker/keyworker/listener"
)

// A Client, and an Enqueuer alone, are what the listener hands signups to.
var (
	_ listener.Enqueuer = (*jobs.Client)(nil)
	_ listener.Enqueuer = (*jobs.Enqueuer)(nil)
)

// TestConcurrentBatchesOfTheSameUsersDoNotDeadlock stages the catch-up race
// that once failed with 40P01, now where batches meet, on the unique index
// of signup keys: a listener hand-off's batch and a reconcile page's batch
// hold the same users in different orders while a third transaction holds
// one of them. Every batch inserts keys in user id order, so each waits for
// the other instead of both waiting forever, and each user gets one key.
func TestConcurrentBatchesOfTheSameUsersDoNotDeadlock(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	users := f.newUsers(t, 3)
	a, b, c := users[0], users[1], users[2]

	begin := func() pgx.Tx {
		tx, err := f.db.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
		// The plan of a big users table: a nested loop over the batch in
		// its own order (a hash join over this small table would follow
		// the table's physical order instead, hiding the race).
		if _, err := tx.Exec(ctx, `SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off`); err != nil {
			t.Fatal(err)
		}
		return tx
	}
	pid := func(tx pgx.Tx) uint32 { return tx.Conn().PgConn().PID() }
	waitBlocked := func(tx pgx.Tx) {
		t.Helper()
		eventually(t, 10*time.Second, func() (bool, string) {
			return count(t, f.db, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'`, pid(tx)) == 1,
				"a batch to wait for another transaction's lock"
		})
	}
	batch := func(tx pgx.Tx, ids ...string) ([]keystore.SignupOutcome, error) {
		return f.store.CreateSignupKeysTx(ctx, tx, keystore.SignupBatch{UserIDs: ids, Audit: keystore.Audit{JobID: 1, Attempt: 1}})
	}
	enqueue := func(tx pgx.Tx, ids ...string) chan error {
		done := make(chan error, 1)
		go func() {
			_, err := batch(tx, ids...)
			if err == nil {
				err = tx.Commit(ctx)
			}
			done <- err
		}()
		return done
	}

	// The holder has c's key, uncommitted.
	holder := begin()
	if _, err := batch(holder, c); err != nil {
		t.Fatal(err)
	}
	// The first transaction asks for a, c, b: in that order it would hold a
	// and wait for c; in id order it holds a and b and waits for c.
	tx1 := begin()
	done1 := enqueue(tx1, a, c, b)
	waitBlocked(tx1)
	// The second asks for b, a: in that order it would hold b and wait for
	// a, and the first would then wait for b once c is free: a deadlock.
	tx2 := begin()
	done2 := enqueue(tx2, b, a)
	waitBlocked(tx2)
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for i, done := range []chan error{done1, done2} {
		if err := <-done; err != nil {
			if pgerr.Code(err) == pgerrcode.DeadlockDetected {
				t.Fatalf("batch %d deadlocked: %v", i+1, err)
			}
			t.Fatalf("batch %d: %v", i+1, err)
		}
	}
	if got := count(t, f.db, `SELECT count(*) FROM keyworker.api_keys`); got != 3 {
		t.Fatalf("%d keys, want 3 (one each for a, b, c)", got)
	}
}

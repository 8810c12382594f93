package jobs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyworker/keyworker/jobs"
)

// TestConcurrentEnqueuesOfTheSameUsersDoNotDeadlock stages the catch-up race
// that once failed with 40P01: a listener hand-off and a reconcile page
// enqueue the same users in different orders while a third transaction
// holds one of them. Every enqueue inserts in user id order, so each waits
// for the other instead of both waiting forever.
func TestConcurrentEnqueuesOfTheSameUsersDoNotDeadlock(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b, c := userID(9_000_001), userID(9_000_002), userID(9_000_003)

	begin := func() pgx.Tx {
		tx, err := f.db.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
		return tx
	}
	pid := func(tx pgx.Tx) uint32 { return tx.Conn().PgConn().PID() }
	waitBlocked := func(tx pgx.Tx) {
		t.Helper()
		eventually(t, 10*time.Second, func() (bool, string) {
			return count(t, f.db, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'`, pid(tx)) == 1,
				"an enqueue to wait for another transaction's lock"
		})
	}
	enqueue := func(tx pgx.Tx, ids ...string) chan error {
		done := make(chan error, 1)
		go func() {
			_, err := f.client.EnqueueSignupsTx(ctx, tx, signups(ids...))
			if err == nil {
				err = tx.Commit(ctx)
			}
			done <- err
		}()
		return done
	}

	// The holder has c's job, uncommitted.
	holder := begin()
	if _, err := f.client.EnqueueSignupsTx(ctx, holder, signups(c)); err != nil {
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
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "40P01" {
				t.Fatalf("enqueue %d deadlocked: %v", i+1, err)
			}
			t.Fatalf("enqueue %d: %v", i+1, err)
		}
	}
	if got := count(t, f.db, `SELECT count(*) FROM keyworker.river_job WHERE kind = $1`, jobs.KindCreateKey); got != 3 {
		t.Fatalf("%d create-key jobs, want 3 (one each for a, b, c)", got)
	}
}

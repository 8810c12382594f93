package keystore_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
	"github.com/keyworker/keyworker/users"
)

// TestSignupBatchSurvivesAUserDeletedMidStatement: a user visible when the
// batch looks users up is deleted (by a transaction that commits while the
// batch's insert waits on its row) before the key's foreign key is checked.
// The batch must not fail: the statement runs again, finds the user
// missing, and the others of the batch get their keys, each key revealable.
func TestSignupBatchSurvivesAUserDeletedMidStatement(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, gone, c := f.newUser(t), f.newUser(t), f.newUser(t)

	deleter, err := f.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer deleter.Rollback(ctx) //nolint:errcheck
	if _, err := deleter.Exec(ctx, `DELETE FROM auth.users WHERE id = $1`, gone); err != nil {
		t.Fatal(err)
	}

	batch, err := f.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer batch.Rollback(ctx) //nolint:errcheck
	type result struct {
		out []keystore.SignupOutcome
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := f.store.CreateSignupKeysTx(ctx, batch, keystore.SignupBatch{
			UserIDs: []string{c, gone, a}, Audit: keystore.Audit{JobID: 7, Attempt: 1}})
		done <- result{out, err}
	}()
	// The batch's insert waits for the deleter's row lock (its foreign key
	// check); the deleter then commits.
	pid := batch.Conn().PgConn().PID()
	for {
		var waiting bool
		if err := f.db.QueryRow(ctx, `SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		select {
		case r := <-done:
			t.Fatalf("the batch finished before the deleter committed: %+v, %v", r.out, r.err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := deleter.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("CreateSignupKeysTx: %v", r.err)
	}
	if err := batch.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, o := range r.out {
		got[o.UserID] = o.Outcome
	}
	want := map[string]string{a: keystore.OutcomeCreated, c: keystore.OutcomeCreated, gone: users.ReasonMissing}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("outcomes %v, want %v", got, want)
	}
	for _, u := range []string{a, c} {
		if rv := f.reveal(t, u); rv == nil || rv.UserID != u {
			t.Fatalf("user %s: no revealable key", u)
		}
	}
	var events int
	if err := f.db.QueryRow(ctx, `SELECT count(*) FROM keyworker.key_events WHERE job_id = 7`).Scan(&events); err != nil || events != 3 {
		t.Fatalf("%d events of the batch, want 3 (one per user): %v", events, err)
	}
}

// TestSignupBatchOutcomes: outcomes come back sorted, one per distinct id,
// with the existing key's id for key_exists; events name the job and carry
// the key's public parts; a second run makes nothing.
func TestSignupBatchOutcomes(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	a, b := f.newUser(t), f.newUser(t)
	had := f.createSignup(t, b)
	exp := time.Now().Add(48 * time.Hour)
	run := func() []keystore.SignupOutcome {
		var out []keystore.SignupOutcome
		if err := pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error {
			var err error
			out, err = f.store.CreateSignupKeysTx(ctx, tx, keystore.SignupBatch{
				UserIDs: []string{b, a, a, "nope"}, ExpiresAt: &exp, Audit: keystore.Audit{JobID: 9, Attempt: 2}})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	out := run()
	if len(out) != 3 || out[0].UserID != a || out[0].Outcome != keystore.OutcomeCreated || out[0].KeyID == "" || len(out[0].Last4) != 4 ||
		out[1].UserID != b || out[1].Outcome != keystore.OutcomeKeyExists || out[1].KeyID != had.ID ||
		out[2].Outcome != keystore.OutcomeMalformed || out[2].UserID != "nope" {
		t.Fatalf("outcomes %+v", out)
	}
	info, err := f.store.Get(ctx, f.db, out[0].KeyID)
	if err != nil || info.ExpiresAt == nil || info.ExpiresAt.Sub(exp).Abs() > time.Millisecond || info.Source != keystore.SourceSignup {
		t.Fatalf("new key %+v, %v", info, err)
	}
	var last4, jobText string
	var attempt int
	if err := f.db.QueryRow(ctx, `SELECT detail->>'last4', job_id::text, attempt FROM keyworker.key_events WHERE key_id = $1 AND event = 'created'`,
		out[0].KeyID).Scan(&last4, &jobText, &attempt); err != nil || last4 != out[0].Last4 || jobText != "9" || attempt != 2 {
		t.Fatalf("created event: last4 %q job %s attempt %d, %v", last4, jobText, attempt, err)
	}
	again := run()
	if again[0].Outcome != keystore.OutcomeKeyExists || again[0].KeyID != out[0].KeyID {
		t.Fatalf("second run %+v", again)
	}
	if n := testenv.Count(t, f.db, `SELECT count(*) FROM keyworker.api_keys`); n != 2 {
		t.Fatalf("%d keys, want 2", n)
	}
	if rv := f.reveal(t, a); rv == nil || rv.KeyID != out[0].KeyID {
		t.Fatal("the batch's key cannot be revealed")
	} else if _, err := keys.Parse(rv.Plaintext()); err != nil {
		t.Fatalf("revealed key does not parse: %v", err)
	}
}

// BenchmarkCreateSignupKeys measures one batch of 1000 signup keys on the
// real schema: the Go side (generate, hash, seal) and the statement, in one
// transaction each. Reported: keys/s.
func BenchmarkCreateSignupKeys(b *testing.B) {
	for _, size := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			ctx := context.Background()
			db, err := pgxpool.New(ctx, harness.Database(b))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			key := make([]byte, keys.SealingKeySize)
			sealer, _ := keys.NewSealer(key)
			store, err := keystore.New(keystore.Config{Sealer: sealer})
			if err != nil {
				b.Fatal(err)
			}
			ids := make([]string, size*b.N)
			for i := range ids {
				ids[i] = fmt.Sprintf("00000000-0000-4000-9000-%012d", i)
			}
			if _, err := db.Exec(ctx, `INSERT INTO auth.users (id, created_at) SELECT x::uuid, now() FROM unnest($1::text[]) x`, ids); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			for chunk := range slices.Chunk(ids, size) {
				if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
					_, err := store.CreateSignupKeysTx(ctx, tx, keystore.SignupBatch{UserIDs: chunk, Audit: keystore.Audit{JobID: 1, Attempt: 1}})
					return err
				}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(ids))/time.Since(start).Seconds(), "keys/s")
		})
	}
}

package jobs_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river/rivertype"

	"github.com/keyworker/keyworker/jobs"
	"github.com/keyworker/keyworker/keystore"
)

// reconcileUsers makes the population every reconcile test uses and
// returns the ids of the users that should get a key.
func reconcileUsers(t *testing.T, f *fixture) (eligible []string, old string) {
	t.Helper()
	ctx := context.Background()
	eligible = f.newUsers(t, 5)
	withKey := f.newUser(t, "")
	if err := pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error {
		_, err := f.store.CreateTx(ctx, tx, keystore.NewKey{UserID: withKey}, keystore.Audit{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	f.newUser(t, "anonymous")
	f.newUser(t, "deleted")
	old = f.newUser(t, "")
	// Created before keyworker was installed: only a reconcile with an
	// explicit Since reaches it.
	if _, err := f.db.Exec(ctx, `UPDATE auth.users SET created_at = (SELECT installed_at FROM keyworker.installation) - interval '1 day' WHERE id = $1`, old); err != nil {
		t.Fatal(err)
	}
	return eligible, old
}

func (f *fixture) queuedUsers(t *testing.T) []string {
	t.Helper()
	rows, err := f.db.Query(context.Background(), `SELECT jsonb_array_elements_text(args->'user_ids') FROM keyworker.river_job WHERE kind = $1 ORDER BY 1`, jobs.KindCreateKeys)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestReconcileFindsExactlyTheEligibleUsersOnce: dry run counts, a reconcile
// enqueues exactly the eligible users without a key, a second enqueues
// nothing, and an explicit since reaches users from before installation.
func TestReconcileFindsExactlyTheEligibleUsersOnce(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	ctx := context.Background()
	eligible, old := reconcileUsers(t, f)

	dry, err := jobs.Reconcile(ctx, f.db, jobs.ReconcileOptions{DryRun: true})
	if err != nil || dry.Found != 5 || dry.Enqueued != 0 {
		t.Fatalf("dry run = %+v, %v; want 5 found, none enqueued", dry, err)
	}
	if got := f.queuedUsers(t); len(got) != 0 {
		t.Fatalf("a dry run enqueued %v", got)
	}
	var progress [][3]int
	res, err := jobs.Reconcile(ctx, f.db, jobs.ReconcileOptions{PageSize: 2, Progress: func(found, enqueued, total int) {
		progress = append(progress, [3]int{found, enqueued, total})
	}})
	if err != nil || res.Found != 5 || res.Enqueued != 5 || res.Duplicates != 0 {
		t.Fatalf("reconcile = %+v, %v; want 5 found and enqueued", res, err)
	}
	// The total is counted first, with the same eligibility: the filtered
	// users are not in it.
	if want := [][3]int{{0, 0, 5}, {2, 2, 5}, {4, 4, 5}, {5, 5, 5}}; !slices.Equal(progress, want) {
		t.Fatalf("progress %v, want %v", progress, want)
	}
	if got := f.queuedUsers(t); !slices.Equal(got, eligible) {
		t.Fatalf("enqueued %v, want %v", got, eligible)
	}
	again, err := jobs.Reconcile(ctx, f.db, jobs.ReconcileOptions{Logger: f.logger})
	if err != nil || again.Found != 5 || again.Enqueued != 0 || again.Duplicates != 5 {
		t.Fatalf("second reconcile = %+v, %v; want 5 duplicates, none enqueued", again, err)
	}
	if logs := f.logs.String(); !strings.Contains(logs, `"msg":"replayed"`) || !strings.Contains(logs, `"duplicates":5`) {
		t.Fatalf("reconcile did not log its counts: %s", logs)
	}
	all, err := jobs.Reconcile(ctx, f.db, jobs.ReconcileOptions{Since: &time.Time{}})
	if err != nil || all.Found != 6 || all.Enqueued != 1 {
		t.Fatalf("reconcile since the beginning = %+v, %v; want the old user too", all, err)
	}
	if got := f.queuedUsers(t); !slices.Contains(got, old) || len(got) != 6 {
		t.Fatalf("enqueued %v", got)
	}
}

// TestPeriodicReconcileMakesTheMissingKeys: started, the leader reconciles
// after ReconcileInterval, the eligible users get keys, and the job's output
// holds the counts.
func TestPeriodicReconcileMakesTheMissingKeys(t *testing.T) {
	t.Parallel()
	var found atomic.Int64
	f := setup(t, func(c *jobs.Config) {
		c.ReconcileInterval = time.Second
		c.OnEvent = func(e jobs.Event) {
			if e.Kind == jobs.EventReconcileFound {
				found.Add(int64(e.Count))
			}
		}
	})
	ctx := context.Background()
	eligible, _ := reconcileUsers(t, f)
	f.start(t)
	f.waitJobs(t, jobs.KindReconcile, rivertype.JobStateCompleted, 1, 20*time.Second)
	f.waitJobs(t, jobs.KindCreateKeys, rivertype.JobStateCompleted, 1, 20*time.Second)
	f.waitJobs(t, jobs.KindPurgeReveals, rivertype.JobStateCompleted, 1, 10*time.Second)

	rows, err := f.db.Query(ctx, `SELECT user_id::text FROM keyworker.api_keys ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(have) != 6 { // the five, and the one that had a key already
		t.Fatalf("keys for %v", have)
	}
	for _, id := range eligible {
		if !slices.Contains(have, id) {
			t.Fatalf("eligible user %s has no key", id)
		}
	}
	var out []byte
	if err := f.db.QueryRow(ctx, `SELECT metadata->'output' FROM keyworker.river_job WHERE kind = $1 AND state = 'completed' ORDER BY id LIMIT 1`, jobs.KindReconcile).Scan(&out); err != nil {
		t.Fatal(err)
	}
	var res struct {
		Reason   string `json:"reason"`
		Found    int    `json:"found"`
		Enqueued int    `json:"enqueued"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Reason != "periodic" || res.Found != 5 || res.Enqueued != 5 {
		t.Fatalf("reconcile output %s (%v)", out, err)
	}
	if got := found.Load(); got != 5 {
		t.Fatalf("OnEvent reported %d found, want 5", got)
	}
}

// TestEnqueuerWithoutWorkers: an insert-only Enqueuer inserts in the
// caller's transaction (a rollback leaves nothing) and counts duplicates.
func TestEnqueuerWithoutWorkers(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	ctx := context.Background()
	e, err := jobs.NewEnqueuer(f.db, jobs.EnqueuerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := userID(userSeq.Add(1)), userID(userSeq.Add(1))

	tx, err := f.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := e.EnqueueSignupsTx(ctx, tx, signups(a, b)); err != nil || n != 2 {
		t.Fatalf("EnqueueSignupsTx = %d, %v", n, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.queuedUsers(t); len(got) != 0 {
		t.Fatalf("a rolled-back transaction left jobs for %v", got)
	}

	err = pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error {
		n, err := e.EnqueueSignupsTx(ctx, tx, signups(a, b, a))
		if err != nil || n != 2 {
			t.Errorf("EnqueueSignupsTx = %d, %v; want 2", n, err)
		}
		if n, err := e.EnqueueSignupsTx(ctx, tx, signups(b)); err != nil || n != 1 {
			t.Errorf("second EnqueueSignupsTx = %d, %v; want 1 (duplicates across hand-offs are absorbed by the keys' unique index)", n, err)
		}
		if n, err := e.EnqueueSignupsTx(ctx, tx, nil); err != nil || n != 0 {
			t.Errorf("empty EnqueueSignupsTx = %d, %v", n, err)
		}
		return e.EnqueueReconcileTx(ctx, tx, "slot_recreated")
	})
	if err != nil {
		t.Fatal(err)
	}
	var reason, queue string
	var maxAttempts int
	if err := f.db.QueryRow(ctx, `SELECT args->>'reason', queue FROM keyworker.river_job WHERE kind = $1`, jobs.KindReconcile).Scan(&reason, &queue); err != nil || reason != "slot_recreated" || queue != jobs.QueueMaintenance {
		t.Fatalf("reconcile job: %q in %q, %v", reason, queue, err)
	}
	if err := f.db.QueryRow(ctx, `SELECT max_attempts, queue FROM keyworker.river_job WHERE kind = $1 LIMIT 1`, jobs.KindCreateKeys).Scan(&maxAttempts, &queue); err != nil || maxAttempts != 25 || queue != jobs.QueueKeys {
		t.Fatalf("create-keys job: %d attempts in %q, %v", maxAttempts, queue, err)
	}
}

package listener

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/keyworker/keyworker/users"
)

// The measurements below are not timed tests: they run only with
// KEYWORKER_BENCH=1 and report numbers.
//
//	KEYWORKER_BENCH=1 go test ./listener/ -run 'TestMeasure' -v -count=1
//
// They use a server of their own with durable commits (fsync on), and
// River's InsertManyTx with unique jobs, as the real enqueuer does.

func benchServer(t *testing.T) *env {
	t.Helper()
	if os.Getenv("KEYWORKER_BENCH") == "" {
		t.Skip("set KEYWORKER_BENCH=1 to measure")
	}
	_, url := dedicatedServer(t, map[string]string{
		"fsync":            "on",
		"full_page_writes": "on",
		"shared_buffers":   "256MB",
		"max_wal_size":     "4GB",
	}, true)
	return newEnv(t, url)
}

// createKeyArgs mirrors the CreateKey job's arguments: unique by user.
type createKeyArgs struct {
	UserID string `json:"user_id"`
}

func (createKeyArgs) Kind() string { return "create_key" }

func (createKeyArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// riverEnqueuer enqueues with River's InsertManyTx (not the COPY fast path:
// one unique conflict would fail the batch).
type riverEnqueuer struct {
	client *river.Client[pgx.Tx]
}

func newRiverEnqueuer(t *testing.T, pool *pgxpool.Pool) riverEnqueuer {
	t.Helper()
	c, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Schema: "keyworker"})
	if err != nil {
		t.Fatal(err)
	}
	return riverEnqueuer{client: c}
}

func (e riverEnqueuer) EnqueueSignupsTx(ctx context.Context, tx pgx.Tx, signups []users.Signup) (int, error) {
	params := make([]river.InsertManyParams, len(signups))
	for i, s := range signups {
		params[i] = river.InsertManyParams{Args: createKeyArgs{UserID: s.UserID}}
	}
	res, err := e.client.InsertManyTx(ctx, tx, params)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range res {
		if !r.UniqueSkippedAsDuplicate {
			n++
		}
	}
	return n, nil
}

func (e riverEnqueuer) EnqueueReconcileTx(context.Context, pgx.Tx, string) error { return nil }

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

// TestMeasureLatency: signup commit to job commit, at a steady 500
// signups/s, each signup its own transaction.
func TestMeasureLatency(t *testing.T) {
	e := benchServer(t)
	const rate, duration = 500, 20 * time.Second
	var mu sync.Mutex
	var lat []time.Duration
	cfg := e.config("kw_bench_latency")
	cfg.Enqueuer = newRiverEnqueuer(t, e.pool)
	if v := os.Getenv("KEYWORKER_BENCH_WAIT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		cfg.BatchMaxWait = d
	}
	cfg.OnBatch = func(b Batch) {
		mu.Lock()
		for _, c := range b.SourceCommits {
			lat = append(lat, b.CommittedAt.Sub(c))
		}
		mu.Unlock()
	}
	l := start(t, cfg)

	// Producers: a tick every 2 ms, each a signup in its own transaction, on
	// a few connections so one slow commit does not delay the next.
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	ticks := make(chan struct{}, rate)
	var wg sync.WaitGroup
	var made, failed atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(context.Background(), e.url)
			if err != nil {
				failed.Add(1)
				return
			}
			defer conn.Close(context.Background())
			for range ticks {
				if _, err := conn.Exec(context.Background(), `INSERT INTO auth.users (id, created_at) VALUES (gen_random_uuid(), now())`); err != nil {
					failed.Add(1)
					continue
				}
				made.Add(1)
			}
		}()
	}
	started := time.Now()
	tick := time.NewTicker(time.Second / rate)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			select {
			case ticks <- struct{}{}:
			default: // producers behind: the rate is not being met
				failed.Add(1)
			}
		}
	}
	tick.Stop()
	close(ticks)
	wg.Wait()
	elapsed := time.Since(started)
	waitFor(t, 30*time.Second, "every signup handed off", func() bool { return l.Status().Signups == uint64(made.Load()) })

	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	st := l.Status()
	t.Logf("latency at %.0f signups/s for %s (%d signups, %d not made, %d hand-offs, BatchMaxWait %s): p50 %s, p90 %s, p99 %s, max %s",
		float64(made.Load())/elapsed.Seconds(), elapsed.Round(time.Second), made.Load(), failed.Load(), st.Batches, cfg.withDefaults().BatchMaxWait,
		percentile(lat, .50).Round(10*time.Microsecond), percentile(lat, .90).Round(10*time.Microsecond),
		percentile(lat, .99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
}

// TestMeasureCatchUp: how fast a backlog of 100,000 signups, each its own
// transaction, made while the worker was down, turns into jobs.
func TestMeasureCatchUp(t *testing.T) {
	e := benchServer(t)
	const backlog = 100_000
	cfg := e.config("kw_bench_catchup")
	cfg.Enqueuer = newRiverEnqueuer(t, e.pool)
	start(t, cfg).Stop()
	e.waitSlotInactive("kw_bench_catchup")

	loaded := time.Now()
	// The backlog goes in with synchronous_commit off to load it quickly;
	// it is the same WAL and the same 100,000 transactions to decode.
	e.exec(fmt.Sprintf(`DO $$
	BEGIN
		SET LOCAL synchronous_commit = off;
		FOR i IN 1..%d LOOP
			INSERT INTO auth.users (id, created_at) VALUES (gen_random_uuid(), now());
			COMMIT;
			SET LOCAL synchronous_commit = off;
		END LOOP;
	END
	$$`, backlog))
	t.Logf("backlog of %d single-signup transactions loaded in %s", backlog, time.Since(loaded).Round(time.Millisecond))

	began := time.Now()
	l := start(t, cfg)
	waitFor(t, 5*time.Minute, "the backlog handed off", func() bool { return l.Status().Signups >= backlog })
	elapsed := time.Since(began)
	st := l.Status()
	t.Logf("catch-up: %d signups in %s = %.0f signups/s (%d hand-offs, last %d signups in %s)",
		st.Signups, elapsed.Round(time.Millisecond), float64(st.Signups)/elapsed.Seconds(), st.Batches, st.LastBatch.Signups, st.LastBatch.Duration.Round(time.Microsecond))
	if n := e.count(`SELECT count(*) FROM keyworker.river_job WHERE kind = 'create_key'`); n != backlog {
		t.Fatalf("%d jobs, want %d", n, backlog)
	}
}

// TestMeasureListenCatchUp: how fast listen mode's catch-up scan turns a
// backlog of 100,000 signups made while it was down into jobs.
func TestMeasureListenCatchUp(t *testing.T) {
	e := benchServer(t)
	const backlog = 100_000
	cfg := e.config("")
	cfg.Enqueuer = newRiverEnqueuer(t, e.pool)
	startListen(t, cfg).Stop()
	e.exec(fmt.Sprintf(`INSERT INTO auth.users (id, created_at) SELECT gen_random_uuid(), now() FROM generate_series(1, %d)`, backlog))

	began := time.Now()
	l, err := NewListen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer l.Stop()
	waitFor(t, 5*time.Minute, "the backlog enqueued", func() bool { return l.Status().Signups >= backlog })
	elapsed := time.Since(began)
	t.Logf("listen catch-up: %d signups in %s = %.0f signups/s", l.Status().Signups, elapsed.Round(time.Millisecond), float64(l.Status().Signups)/elapsed.Seconds())
}

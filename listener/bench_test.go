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

// The benchmarks below measure the sources end to end and report what they
// measure as metrics (latency in ms, signups/s). Plain `go test` does not
// run them; one iteration is one whole measurement (20 s of signups, or a
// backlog of 100,000), so run them once each:
//
//	go test ./listener/ -run '^$' -bench . -benchtime 1x
//
// They use a server of their own with durable commits (fsync on), and
// River's InsertManyTx with unique jobs, as the real enqueuer does.
// KEYWORKER_BENCH_WAIT sets BenchmarkLatency's BatchMaxWait (for example
// 5ms).

func benchServer(b *testing.B) *env {
	b.Helper()
	_, url := dedicatedServer(b, map[string]string{
		"fsync":            "on",
		"full_page_writes": "on",
		"shared_buffers":   "256MB",
		"max_wal_size":     "4GB",
	}, true)
	return newEnv(b, url)
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

func newRiverEnqueuer(t testing.TB, pool *pgxpool.Pool) riverEnqueuer {
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

// ms is d in milliseconds, for a metric.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkLatency: signup commit to job commit, at a steady 500 signups/s,
// each signup its own transaction, for 20 s an iteration. It reports the
// p50, p90, p99 and max latency in ms and the signup rate reached.
func BenchmarkLatency(b *testing.B) {
	e := benchServer(b)
	var mu sync.Mutex
	var lat []time.Duration
	cfg := e.config("kw_bench_latency")
	cfg.Enqueuer = newRiverEnqueuer(b, e.pool)
	if v := os.Getenv("KEYWORKER_BENCH_WAIT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("KEYWORKER_BENCH_WAIT=%q: %v", v, err)
		}
		cfg.BatchMaxWait = d
	}
	cfg.OnBatch = func(bt Batch) {
		mu.Lock()
		for _, c := range bt.SourceCommits {
			lat = append(lat, bt.CommittedAt.Sub(c))
		}
		mu.Unlock()
	}
	l := start(b, cfg)

	b.ResetTimer()
	var made, failed int64
	var elapsed time.Duration
	for range b.N {
		m, f, d := produceSignups(e, 500, 20*time.Second)
		made, failed, elapsed = made+m, failed+f, elapsed+d
	}
	waitFor(b, 30*time.Second, "every signup handed off", func() bool { return l.Status().Signups == uint64(made) })
	b.StopTimer()

	mu.Lock()
	defer mu.Unlock()
	if len(lat) == 0 {
		b.Fatal("no latency measured")
	}
	slices.Sort(lat)
	st := l.Status()
	b.Logf("latency at %.0f signups/s for %s (%d signups, %d not made, %d hand-offs, BatchMaxWait %s): p50 %s, p90 %s, p99 %s, max %s",
		float64(made)/elapsed.Seconds(), elapsed.Round(time.Second), made, failed, st.Batches, cfg.withDefaults().BatchMaxWait,
		percentile(lat, .50).Round(10*time.Microsecond), percentile(lat, .90).Round(10*time.Microsecond),
		percentile(lat, .99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
	b.ReportMetric(0, "ns/op") // one op is 20 s of signups: not a useful number
	b.ReportMetric(ms(percentile(lat, .50)), "p50_ms")
	b.ReportMetric(ms(percentile(lat, .90)), "p90_ms")
	b.ReportMetric(ms(percentile(lat, .99)), "p99_ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max_ms")
	b.ReportMetric(float64(made)/elapsed.Seconds(), "signups/s")
	b.ReportMetric(float64(failed), "not_made")
}

// produceSignups inserts users at rate a second for duration, each in its
// own transaction: a tick every 1/rate, on a few connections so one slow
// commit does not delay the next. It returns how many were made, how many
// were not (an error, or producers behind the rate) and how long it took.
func produceSignups(e *env, rate int, duration time.Duration) (made, failed int64, elapsed time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	ticks := make(chan struct{}, rate)
	var wg sync.WaitGroup
	var nMade, nFailed atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(context.Background(), e.url)
			if err != nil {
				nFailed.Add(1)
				return
			}
			defer conn.Close(context.Background())
			for range ticks {
				if _, err := conn.Exec(context.Background(), `INSERT INTO auth.users (id, created_at) VALUES (gen_random_uuid(), now())`); err != nil {
					nFailed.Add(1)
					continue
				}
				nMade.Add(1)
			}
		}()
	}
	started := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(rate))
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			select {
			case ticks <- struct{}{}:
			default: // producers behind: the rate is not being met
				nFailed.Add(1)
			}
		}
	}
	tick.Stop()
	close(ticks)
	wg.Wait()
	return nMade.Load(), nFailed.Load(), time.Since(started)
}

// BenchmarkCatchUp: how fast a backlog of 100,000 signups, each its own
// transaction, made while the worker was down, turns into jobs. Each
// iteration is a new slot and a new backlog; it reports signups/s.
func BenchmarkCatchUp(b *testing.B) {
	e := benchServer(b)
	const backlog = 100_000
	enq := newRiverEnqueuer(b, e.pool)
	var signups, batches uint64
	var elapsed time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		cfg := e.config(fmt.Sprintf("kw_bench_catchup_%d", i))
		cfg.Enqueuer = enq
		start(b, cfg).Stop()
		e.waitSlotInactive(cfg.SlotName)

		loaded := time.Now()
		// The backlog goes in with synchronous_commit off to load it
		// quickly; it is the same WAL and the same 100,000 transactions to
		// decode.
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
		b.Logf("backlog of %d single-signup transactions loaded in %s", backlog, time.Since(loaded).Round(time.Millisecond))

		b.StartTimer()
		began := time.Now()
		l := start(b, cfg)
		waitFor(b, 5*time.Minute, "the backlog handed off", func() bool { return l.Status().Signups >= backlog })
		took := time.Since(began)
		b.StopTimer()
		st := l.Status()
		l.Stop()
		elapsed, signups, batches = elapsed+took, signups+st.Signups, batches+st.Batches
		b.Logf("catch-up: %d signups in %s = %.0f signups/s (%d hand-offs, last %d signups in %s)",
			st.Signups, took.Round(time.Millisecond), float64(st.Signups)/took.Seconds(), st.Batches, st.LastBatch.Signups, st.LastBatch.Duration.Round(time.Microsecond))
	}
	if n := e.count(`SELECT count(*) FROM keyworker.river_job WHERE kind = 'create_key'`); n != backlog*b.N {
		b.Fatalf("%d jobs, want %d", n, backlog*b.N)
	}
	b.ReportMetric(float64(signups)/elapsed.Seconds(), "signups/s")
	b.ReportMetric(float64(batches)/float64(b.N), "hand-offs/op")
}

// BenchmarkListenCatchUp: how fast listen mode turns a backlog of 100,000
// signups made while it was down (waiting in the outbox) into jobs. It
// reports signups/s.
func BenchmarkListenCatchUp(b *testing.B) {
	e := benchServer(b)
	const backlog = 100_000
	cfg := e.config("")
	cfg.Enqueuer = newRiverEnqueuer(b, e.pool)
	startListen(b, cfg).Stop() // installs the outbox
	var signups uint64
	var elapsed time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		e.exec(fmt.Sprintf(`INSERT INTO auth.users (id, created_at) SELECT gen_random_uuid(), now() FROM generate_series(1, %d)`, backlog))
		b.StartTimer()
		began := time.Now()
		l := runListen(b, cfg)
		waitFor(b, 5*time.Minute, "the backlog enqueued", func() bool { return l.Status().Signups >= backlog })
		took := time.Since(began)
		b.StopTimer()
		n := l.Status().Signups
		l.Stop()
		elapsed, signups = elapsed+took, signups+n
		b.Logf("listen catch-up: %d signups in %s = %.0f signups/s", n, took.Round(time.Millisecond), float64(n)/took.Seconds())
	}
	b.ReportMetric(float64(signups)/elapsed.Seconds(), "signups/s")
}

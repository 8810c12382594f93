package daemon_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyworker/keyworker/daemon"
	"github.com/keyworker/keyworker/jobs"
)

// TestDashboardRefusesCrossSiteWrites: River UI's own API, open on loopback
// without credentials, cannot be driven by another site's page: neither by
// a cross-site POST nor by a DNS-rebound one. The dashboard's own page still
// deletes a job.
func TestDashboardRefusesCrossSiteWrites(t *testing.T) {
	t.Parallel()
	f := setup(t)
	d := f.start(f.config(daemon.ModeListen))
	users := f.signUpMany(1, false)
	f.waitJobsFor(users)
	f.waitQuiet(30 * time.Second)
	var id int64
	if err := f.db.QueryRow(context.Background(), `SELECT id FROM keyworker.river_job WHERE state = 'completed' ORDER BY id LIMIT 1`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	exists := func() bool {
		return f.count(`SELECT count(*) FROM keyworker.river_job WHERE id = $1`, id) == 1
	}
	base := "http://" + d.Addr()
	post := func(hdr map[string]string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, base+"/riverui/api/jobs/delete", strings.NewReader(fmt.Sprintf(`{"ids":["%d"]}`, id)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "text/plain") // what a form or a no-cors fetch may send
		for k, v := range hdr {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if status := post(map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}); status != http.StatusForbidden || !exists() {
		t.Fatalf("cross-site delete: %d, job still there: %t", status, exists())
	}
	port := d.Addr()[strings.LastIndexByte(d.Addr(), ':')+1:]
	if status := post(map[string]string{"Host": "rebound.evil.example:" + port, "Origin": "http://rebound.evil.example:" + port, "Sec-Fetch-Site": "same-origin"}); status != http.StatusMisdirectedRequest || !exists() {
		t.Fatalf("DNS-rebound delete: %d, job still there: %t", status, exists())
	}
	if status := post(map[string]string{"Origin": base, "Sec-Fetch-Site": "same-origin"}); status != http.StatusOK || exists() {
		t.Fatalf("the dashboard's own delete: %d, job still there: %t", status, exists())
	}
}

// TestMetricsScrapeCostIsBounded: scrapes reuse the database readings for
// MetricsCacheTTL, concurrent scrapes share one query, and a scrape never
// waits on the database longer than its query timeout (here river_job is
// locked, as a long migration or VACUUM FULL would).
func TestMetricsScrapeCostIsBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t)
	cfg := f.config(daemon.ModeListen)
	cfg.MetricsCacheTTL = time.Second
	d := f.start(cfg)
	users := f.signUpMany(1, false)
	f.waitJobsFor(users)
	f.waitQuiet(30 * time.Second)

	discarded := func() float64 {
		v, ok := scrapeMetrics(t, d).value("keyworker_queue_jobs", "state", "discarded")
		if !ok {
			t.Fatal("keyworker_queue_jobs{state=discarded} is missing")
		}
		return v
	}
	before := discarded()
	if _, err := f.db.Exec(ctx, `UPDATE keyworker.river_job SET state = 'discarded' WHERE id = (SELECT min(id) FROM keyworker.river_job WHERE state = 'completed')`); err != nil {
		t.Fatal(err)
	}
	if got := discarded(); got != before {
		t.Errorf("a scrape right after another read the database again: discarded %v, cached %v", got, before)
	}
	waitFor(t, 10*time.Second, "the scrape to see the change after the TTL", func() (bool, error) {
		return discarded() == before+1, nil
	})

	// Lock river_job; scrapes pile up on one query that gives up after its
	// timeout.
	tx, err := f.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `LOCK TABLE keyworker.river_job IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(cfg.MetricsCacheTTL) // let the cache expire (no condition to wait on: time is the condition)
	began := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			resp, err := http.Get("http://" + d.Addr() + "/metrics")
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs <- fmt.Errorf("/metrics: %d", resp.StatusCode)
			}
		})
	}
	maxWaiting := 0
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
poll:
	for {
		select {
		case <-done:
			break poll
		case <-time.After(100 * time.Millisecond):
			n := f.count(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'SELECT state::text, count(*),%' AND state = 'active'`)
			maxWaiting = max(maxWaiting, n)
		}
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if took := time.Since(began); took > 6*time.Second {
		t.Errorf("8 scrapes of a locked table took %s; each should give up with the one shared query (3s)", took)
	}
	if maxWaiting != 1 {
		t.Errorf("%d queue-depth queries ran at once for 8 concurrent scrapes, want 1", maxWaiting)
	}
	// The gauges kept their last values rather than dropping to 0.
	if got := discarded(); got != before+1 {
		t.Errorf("after a failed reading, discarded = %v, want the last value %v", got, before+1)
	}
}

// TestOldestAvailableJobIsMeasured: with the keys queue paused, a signup's
// create-keys job waits, and keyworker_queue_oldest_available_seconds says
// for how long; once the queue resumes it drops back to 0 and the job's
// wait is in keyworker_job_queue_wait_seconds.
func TestOldestAvailableJobIsMeasured(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.pauseQueue(jobs.QueueKeys)
	d := f.start(f.config(daemon.ModeListen))
	u := f.signUp(false)
	f.waitJobsFor([]string{u})
	waitFor(t, 20*time.Second, "the waiting job to be over 1s old in /metrics", func() (bool, error) {
		v, ok := scrapeMetrics(t, d).value("keyworker_queue_oldest_available_seconds")
		return ok && v >= 1, nil
	})
	f.resumeQueue(jobs.QueueKeys)
	waitFor(t, 20*time.Second, "the key", func() (bool, error) { return f.keyOf(u) != "", nil })
	waitFor(t, 20*time.Second, "the create-keys job's wait of 1s or more to be observed", func() (bool, error) {
		m := scrapeMetrics(t, d)
		n, _ := m.value("keyworker_job_queue_wait_seconds_count", "kind", jobs.KindCreateKeys)
		under1, _ := m.value("keyworker_job_queue_wait_seconds_bucket", "kind", jobs.KindCreateKeys, "le", "1")
		return n >= 1 && n > under1, nil
	})
	waitFor(t, 20*time.Second, "the gauge to drop back to 0", func() (bool, error) {
		v, ok := scrapeMetrics(t, d).value("keyworker_queue_oldest_available_seconds")
		return ok && v == 0, nil
	})
}

package metrics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics answered %d: %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q, want the text format 0.0.4", ct)
	}
	return string(b)
}

// TestExposition: the handler serves the families in the text format with
// their help and type, the Go and process collectors beside them, and runs
// the scrape hooks once per scrape.
func TestExposition(t *testing.T) {
	t.Parallel()
	r := New()
	r.Counter("kw_keys_created_total", "Keys created.").Add(3)
	r.Counter("kw_notices_total", "Notices.", "sink", "webhook", "outcome", "sent").Inc()
	r.Gauge("kw_slot_lag_bytes", "Lag.").Set(1024)
	h := r.Histogram("kw_batch_seconds", "Batch latency.", []float64{0.01, 0.1})
	h.Observe(0.005)
	h.ObserveDuration(50 * time.Millisecond)
	h.Observe(1)
	r.Histogram("kw_default_seconds", "Default buckets.", nil).Observe(0.002)
	var mu sync.Mutex
	scraped := 0
	r.OnScrape(func(ctx context.Context) {
		mu.Lock()
		scraped++
		mu.Unlock()
		if _, ok := ctx.Deadline(); !ok {
			t.Error("the scrape hook's context has no deadline")
		}
		r.Gauge("kw_queue_depth", "Depth.", "state", "available").Set(7)
	})
	out := scrape(t, r.Handler())
	for _, want := range []string{
		"# HELP kw_keys_created_total Keys created.\n# TYPE kw_keys_created_total counter\nkw_keys_created_total 3\n",
		`kw_notices_total{outcome="sent",sink="webhook"} 1`,
		"# TYPE kw_slot_lag_bytes gauge\nkw_slot_lag_bytes 1024\n",
		"# TYPE kw_batch_seconds histogram\n",
		`kw_batch_seconds_bucket{le="0.01"} 1`,
		`kw_batch_seconds_bucket{le="0.1"} 2`,
		`kw_batch_seconds_bucket{le="+Inf"} 3`,
		"kw_batch_seconds_sum 1.055\n",
		"kw_batch_seconds_count 3\n",
		`kw_default_seconds_bucket{le="0.001"} 0`,
		`kw_default_seconds_bucket{le="0.0025"} 1`,
		`kw_default_seconds_bucket{le="60"} 1`,
		`kw_queue_depth{state="available"} 7`,
		"# TYPE go_goroutines gauge\n",
		"# TYPE process_resident_memory_bytes gauge\n",
		"# TYPE promhttp_metric_handler_requests_total counter\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if scraped != 1 {
		t.Fatalf("scrape hook ran %d times for one scrape", scraped)
	}
}

// TestSameSeriesIsShared: concurrent lookups of one name and label pairs
// count into one series.
func TestSameSeriesIsShared(t *testing.T) {
	t.Parallel()
	r := New()
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() { r.Counter("c_total", "h", "a", "b").Inc() })
	}
	wg.Wait()
	if out := scrape(t, r.Handler()); !strings.Contains(out, `c_total{a="b"} 50`+"\n") {
		t.Fatalf("want c_total{a=\"b\"} 50 in:\n%s", out)
	}
}

// TestLabelValuesAreEscaped: quotes, backslashes and newlines in a label
// value are escaped in the exposition.
func TestLabelValuesAreEscaped(t *testing.T) {
	t.Parallel()
	r := New()
	r.Gauge("g", "h", "k", "a\"b\\c\nd").Set(1)
	if out := scrape(t, r.Handler()); !strings.Contains(out, `g{k="a\"b\\c\nd"} 1`) {
		t.Fatalf("escaped label missing in:\n%s", out)
	}
}

// TestMisuseIsRefused: a family used with another type or other label
// names panics with a message naming it, rather than serving a broken
// family.
func TestMisuseIsRefused(t *testing.T) {
	t.Parallel()
	r := New()
	r.Counter("x_total", "h", "sink", "webhook")
	for name, f := range map[string]func(){
		"another type":  func() { r.Gauge("x_total", "h", "sink", "webhook") },
		"other labels":  func() { r.Counter("x_total", "h", "outcome", "sent") },
		"no labels":     func() { r.Counter("x_total", "h") },
		"odd label kvs": func() { r.Counter("y_total", "h", "sink") },
	} {
		func() {
			defer func() {
				p := recover()
				if p == nil {
					t.Errorf("%s: no panic", name)
					return
				}
				if s, _ := p.(string); !strings.Contains(s, "_total") {
					t.Errorf("%s: panic %v does not name the family", name, p)
				}
			}()
			f()
		}()
	}
}

// TestInFlightLimit: past MaxScrapesInFlight concurrent scrapes, more are
// answered 503 at once rather than queued.
func TestInFlightLimit(t *testing.T) {
	t.Parallel()
	r := New()
	release := make(chan struct{})
	entered := make(chan struct{}, MaxScrapesInFlight)
	r.OnScrape(func(ctx context.Context) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
	})
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	var wg sync.WaitGroup
	for range MaxScrapesInFlight {
		wg.Go(func() {
			resp, err := http.Get(srv.URL)
			if err == nil {
				resp.Body.Close()
			}
		})
	}
	for range MaxScrapesInFlight {
		<-entered
	}
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	close(release)
	wg.Wait()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("scrape %d while %d were in flight: %d, want 503", MaxScrapesInFlight+1, MaxScrapesInFlight, resp.StatusCode)
	}
}

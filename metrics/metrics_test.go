package metrics

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
)

func TestExpositionFormat(t *testing.T) {
	t.Parallel()
	r := New()
	r.Counter("kw_keys_created_total", "Keys created.").Add(3)
	r.Counter("kw_notices_total", "Notices.", "sink", "webhook", "outcome", "sent").Inc()
	r.Gauge("kw_slot_lag_bytes", "Lag.").Set(1024)
	h := r.Histogram("kw_batch_seconds", "Batch latency.", []float64{0.01, 0.1})
	h.Observe(0.005)
	h.Observe(0.05)
	h.Observe(1)
	scraped := 0
	r.OnScrape(func(context.Context) { scraped++; r.Gauge("kw_queue_depth", "Depth.", "state", "available").Set(7) })
	var b bytes.Buffer
	r.WriteTo(context.Background(), &b)
	out := b.String()
	for _, want := range []string{
		"# TYPE kw_keys_created_total counter\nkw_keys_created_total 3\n",
		`kw_notices_total{sink="webhook",outcome="sent"} 1`,
		"kw_slot_lag_bytes 1024\n",
		`kw_batch_seconds_bucket{le="0.01"} 1`,
		`kw_batch_seconds_bucket{le="0.1"} 2`,
		`kw_batch_seconds_bucket{le="+Inf"} 3`,
		"kw_batch_seconds_count 3\n",
		`kw_queue_depth{state="available"} 7`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if scraped != 1 {
		t.Fatalf("scrape hook ran %d times", scraped)
	}
}

func TestSameSeriesIsShared(t *testing.T) {
	t.Parallel()
	r := New()
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Counter("c", "h", "a", "b").Inc()
		}()
	}
	wg.Wait()
	if v := r.Counter("c", "h", "a", "b").Value(); v != 50 {
		t.Fatalf("counter = %d, want 50", v)
	}
}

func TestLabelValuesAreEscaped(t *testing.T) {
	t.Parallel()
	if got := Labels("k", "a\"b\\c\nd"); got != `{k="a\"b\\c\nd"}` {
		t.Fatalf("Labels = %s", got)
	}
}
